package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ober-ingress/ober/control/daemon"
)

func newRunCmd(a *app, version string) *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "run [--config FILE] [--check]",
		Short: "Run the node: dataplane, HAProxy instances and the health/status/metrics server",
		Long: `run is the ober daemon. It reads the configuration, attaches the XDP and
sk_lookup programs, starts one HAProxy instance per configured CPU on sockets
it registers in the dataplane, and serves /health, /status and /metrics on
api.listen (127.0.0.1:8404 by default).

SIGHUP reloads the configuration: the new one is validated, resolved,
rendered and checked by HAProxy, and its instances must start before they
replace the running ones; otherwise the running configuration stays and the
reason is logged and shown in 'ober status'. SIGTERM and SIGINT drain the
instances for timeouts.drain and stop them; the dataplane stays attached.

--check validates and renders the configuration, has HAProxy check it, and
prints instance 0's HAProxy configuration, changing nothing.

Logs go to stderr: text on a terminal, JSON otherwise (systemd's journal).`,
		Example: `  ober run
  ober run --config /etc/ober/ober.yaml --check
  kill -HUP $(pidof ober)   # reload`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := a.configPath
			if check {
				res, err := daemon.Check(cmd.Context(), path, nil)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "# %s is valid: %d VIPs, %d services, %d backends, %d instances on CPUs %v, HAProxy %s\n",
					path, len(res.Config.VIPs), len(res.Config.Services), len(res.Config.Backends.Servers),
					res.Instances, res.Config.CPUs(), res.HAProxy)
				fmt.Fprintf(a.out, "# HAProxy configuration of instance 0:\n%s", res.Rendered)
				return nil
			}
			log := a.daemonLogger(cmd.Flags().Changed("log-level"))
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{}, 1)
			go func() {
				for range hup {
					select {
					case reload <- struct{}{}:
					default:
					}
				}
			}()
			return daemon.Run(cmd.Context(), daemon.Options{
				ConfigPath: path, Logger: log, Reload: reload, Version: version,
			})
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "validate and render the configuration, change nothing")
	return cmd
}

// daemonLogger logs at info unless --log-level was given: a daemon's
// start, reloads and instance restarts are what its log is for.
func (a *app) daemonLogger(levelGiven bool) *slog.Logger {
	lvl := slog.LevelInfo
	if levelGiven {
		_ = lvl.UnmarshalText([]byte(a.logLevel))
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if f, ok := a.errOut.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return slog.New(slog.NewTextHandler(a.errOut, opts))
	}
	return slog.New(slog.NewJSONHandler(a.errOut, opts))
}
