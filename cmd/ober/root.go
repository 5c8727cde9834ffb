package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/loader"
)

// app is the state one command line shares between its commands: the
// output streams and the persistent flags.
type app struct {
	out, errOut io.Writer
	root        string
	configPath  string
	logLevel    string
	log         *slog.Logger
}

// loaderOptions are the loader.Options every command opens the dataplane with.
func (a *app) loaderOptions(mustExist bool) loader.Options {
	return loader.Options{Root: a.root, Logger: a.log, MustExist: mustExist}
}

// tableOptions open an existing dataplane's maps only: commands that read
// or change tables must not load, or replace, the programs in the packet
// path (this binary may be older or newer than the one that attached).
func (a *app) tableOptions() loader.Options {
	return loader.Options{Root: a.root, Logger: a.log, MapsOnly: true}
}

func newRootCmd(version string, out, errOut io.Writer) *cobra.Command {
	a := &app{out: out, errOut: errOut}
	cmd := &cobra.Command{
		Use:   "ober",
		Short: "ober: eBPF-accelerated S3 ingress controller",
		Long: `ober runs a node's S3 ingress: XDP polices and steers packets for the node's
VIPs, sk_lookup hands each connection to a per-CPU HAProxy instance.

'ober run' is the daemon: it owns the dataplane and the HAProxy instances
and serves /health, /status and /metrics. The other commands act on the
dataplane pinned in bpffs (--bpffs-root) or ask the daemon. Interfaces and
sk_lookup belong to a network namespace: run the commands in the namespace
that holds the interfaces (for example with ip netns exec).`,
		Example: `  ober run --config /etc/ober/ober.yaml
  ober attach --iface eth1
  ober sync --frontend-http 'client[01-40],10.8.0.0/16'
  ober status`,
		// main prints errors once, as "ober: <message>"; usage would bury it.
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: func(*cobra.Command, []string) error { return a.setup() },
	}
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		if c.HasParent() {
			err = fmt.Errorf("%s: %w", c.Name(), err)
		}
		return fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())
	})
	// newCompletionCmd replaces cobra's generated one, which has no examples.
	cmd.CompletionOptions.DisableDefaultCmd = true
	pf := cmd.PersistentFlags()
	pf.StringVar(&a.root, "bpffs-root", loader.DefaultRoot, "directory in bpffs where the dataplane is pinned")
	pf.StringVar(&a.configPath, "config", config.DefaultPath, "ober's configuration file")
	pf.StringVar(&a.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn or error")
	completeWords(cmd, "log-level", "debug", "info", "warn", "error")
	_ = cmd.MarkPersistentFlagFilename("config", "yaml", "yml")
	_ = cmd.MarkPersistentFlagDirname("bpffs-root")
	cmd.AddCommand(
		newRunCmd(a, version),
		newAttachCmd(a),
		newDetachCmd(a),
		newSyncCmd(a),
		newStatusCmd(a),
		newTestCmd(a),
		newVersionCmd(a, version),
		newUpgradeCmd(a, version),
		newLabCmd(a),
		newBenchCmd(a, version),
		newCompletionCmd(a),
		newDoctorCmd(a),
		newBootstrapCmd(a),
		newUninstallCmd(a),
		newConfigCmd(a),
		newStartCmd(a),
		newStopCmd(a),
		newRestartCmd(a),
		newLogsCmd(a),
		newReloadCmd(a),
		newBackendCmd(a),
		newSvcCmd(a),
		newVIPCmd(a),
	)
	return cmd
}

// setup checks the persistent flags and builds the logger.
func (a *app) setup() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", a.logLevel)
	}
	if a.root == "" {
		return fmt.Errorf("--bpffs-root must not be empty")
	}
	a.log = slog.New(slog.NewTextHandler(a.errOut, &slog.HandlerOptions{Level: lvl}))
	return nil
}
