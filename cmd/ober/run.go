package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/daemon"
	"github.com/ober-ingress/ober/control/runtime/sdnotify"
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
reason is logged and shown in 'ober status'. SIGTERM and SIGINT withdraw
the routes (BGP) or give the VIPs to the backups (VRRP), drain the
instances for timeouts.drain and stop them; the dataplane stays attached.

SIGUSR2 is a restart handover (what 'ober restart' and an upgrade use): ober
exits with status 75 at once, without withdrawing or draining, and the next
'ober run' (systemd starts it again: RestartForceExitStatus=75) takes over.
The HAProxy instances keep serving throughout and the XDP and sk_lookup
programs stay attached; the next ober starts its own instances, swaps them
into the sockmap and lets the old ones finish their connections (up to
timeouts.drain). Per ha.mode:
  none  the VIPs stay on node.vip_interface; clients see nothing.
  bgp   with ha.bgp.graceful_restart.enabled the sessions close without a
        NOTIFICATION, the routers keep the routes as stale, and the next ober
        reconnects as a restarting speaker: the node never leaves the
        routers' tables. Without it the routers drop the routes when the
        sessions close and take them back when the next ober announces, and
        connections the routers move meanwhile are reset.
  vrrp  keepalived cannot outlive ober: it is stopped, the backups take the
        VIPs (connections open on this node are reset once packets reach the
        backup), and the VIPs come back after ha.vrrp.preempt_delay once
        the next ober is healthy.

Under systemd (Type=notify) ober reports READY=1 once /health is OK (at most
10s after the instances serve), RELOADING=1 and READY=1 around a reload,
STOPPING=1 on SIGTERM and SIGUSR2, a STATUS= line for 'systemctl status',
and WATCHDOG=1 every half WatchdogSec while its main loop answers.

--check validates and renders the configuration, has HAProxy check it, and
prints instance 0's HAProxy configuration, changing nothing.

Logs go to stderr: text on a terminal, JSON otherwise (systemd's journal).`,
		Example: `  ober run
  ober run --config /etc/ober/ober.yaml --check
  kill -HUP $(pidof ober)    # reload
  kill -USR2 $(pidof ober)   # restart handover: exits 75, start it again`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := a.configPath
			if check {
				res, err := plan.Check(cmd.Context(), path, nil)
				if err != nil {
					return err
				}
				c := res.Plan.Config
				fmt.Fprintf(a.out, "# %s is valid: %d VIPs, %d services, %d backends, %d instances on CPUs %v, HAProxy %s\n",
					path, len(c.VIPs), len(c.Services), len(res.Plan.Servers),
					len(res.Plan.Slots), c.CPUs(), res.Plan.HAProxy)
				for _, n := range c.BalanceNotes() {
					fmt.Fprintf(a.out, "# %s\n", n)
				}
				fmt.Fprintf(a.out, "# HAProxy configuration of instance 0:\n%s", res.Rendered)
				return nil
			}
			log := a.daemonLogger(cmd.Flags().Changed("log-level"))
			notifier, err := sdnotify.FromEnv()
			if err != nil {
				return err
			}
			watchdog, err := sdnotify.WatchdogFromEnv()
			if err != nil {
				return err
			}
			// HAProxy and keepalived must not inherit them: they would
			// report to systemd in ober's name.
			if err := sdnotify.UnsetEnv(); err != nil {
				return err
			}
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2)
			defer signal.Stop(sigs)
			reload, restart := make(chan struct{}, 1), make(chan struct{}, 1)
			go func() {
				for sig := range sigs {
					ch := reload
					if sig == syscall.SIGUSR2 {
						ch = restart
					}
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}()
			err = daemon.Run(cmd.Context(), daemon.Options{
				ConfigPath: path, Logger: log, Reload: reload, Restart: restart, Version: version,
				Notifier: notifier, Watchdog: watchdog,
			})
			if errors.Is(err, daemon.ErrRestart) {
				// The one exit status that is not 0 or 1: whoever runs
				// ober starts it again at once (ober.service's
				// RestartForceExitStatus, `ober restart`).
				log.Info("exiting for the restart handover", "status", api.ExitRestart)
				return exitStatus(api.ExitRestart)
			}
			return err
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
