package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/service"
	"github.com/ober-ingress/ober/control/plan"
)

// serviceFlags are the flags start, stop and restart share.
type serviceFlags struct {
	direct     bool
	logFile    string
	timeout    time.Duration
	systemdDir string
}

func (f *serviceFlags) add(cmd *cobra.Command, launches bool, timeout time.Duration, timeoutHelp string) {
	fl := cmd.Flags()
	fl.BoolVar(&f.direct, "direct", false, "run ober run directly even where systemd manages the ober unit")
	f.logFile = service.DefaultLogFile
	if launches {
		fl.StringVar(&f.logFile, "log-file", service.DefaultLogFile, "direct mode: where ober run's output is appended")
	}
	fl.DurationVar(&f.timeout, "timeout", timeout, timeoutHelp)
	// Tests point the systemd detection at a directory of their own.
	fl.StringVar(&f.systemdDir, "systemd-dir", service.DefaultSystemdDir, "systemd's runtime directory")
	_ = fl.MarkHidden("systemd-dir")
}

// manager picks systemd or the direct mode for this machine.
func (a *app) manager(ctx context.Context, f *serviceFlags, start, stop time.Duration) (service.Manager, error) {
	return service.New(ctx, service.Options{
		ConfigPath:   a.configPath,
		LogFile:      f.logFile,
		StartTimeout: start,
		StopTimeout:  stop,
		SystemdDir:   f.systemdDir,
		Direct:       f.direct,
		Check: func(ctx context.Context, path string) error {
			_, err := plan.Check(ctx, path, nil)
			return err
		},
	})
}

// where says where the daemon runs, for the messages.
func where(rep *service.Report) string {
	if rep.Mode == service.ModeSystemd {
		return "systemd unit " + rep.Where
	}
	return "log " + rep.Where
}

func (a *app) notes(rep *service.Report) {
	for _, n := range rep.Notes {
		fmt.Fprintf(a.out, "note: %s\n", n)
	}
}

func newStartCmd(a *app) *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "start [--config FILE] [--direct] [--log-file FILE] [--timeout D]",
		Short: "Start the daemon (ober run) through systemd or directly, and wait until it serves",
		Long: `start starts the daemon and waits until it serves.

Where systemd runs and knows the ober unit, start is 'systemctl start ober'
and waits until the unit is active. Otherwise (or with --direct) ober runs
'ober run --config FILE' itself, detached in a session of its own, with its
output appended to --log-file and its PID in node.runtime_dir/ober.pid, and
waits until GET /health on api.listen answers 200.

When the daemon exits before it serves, start prints the reason it logged,
removes the PID file and exits 1. A daemon that runs already is left alone:
start says so and exits 0. A PID file naming a process that is not
'ober run' is stale: it is removed and that process left alone.`,
		Example: `  ober start
  ober start --config /etc/ober/ober.yaml --timeout 2m
  ober start --direct --log-file /var/log/ober/ober.log`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.manager(cmd.Context(), &f, f.timeout, 0)
			if err != nil {
				return fmt.Errorf("start: %w", err)
			}
			rep, err := m.Start(cmd.Context())
			if err != nil {
				return fmt.Errorf("start: %w", err)
			}
			a.notes(rep)
			if rep.Already {
				fmt.Fprintf(a.out, "already running: pid %d (%s)\n", rep.PID, where(rep))
				return nil
			}
			fmt.Fprintf(a.out, "started: pid %d, serving after %s (%s)\n", rep.PID, rep.Took.Round(time.Millisecond), where(rep))
			return nil
		},
	}
	f.add(cmd, true, service.DefaultStartTimeout, "how long to wait for the daemon to serve")
	return cmd
}

func newStopCmd(a *app) *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "stop [--config FILE] [--direct] [--timeout D]",
		Short: "Stop the daemon gracefully: withdraw the VIPs, drain, stop the HAProxy instances",
		Long: `stop stops the daemon gracefully and waits until it has exited: it withdraws
its BGP routes or releases its VRRP VIPs, drains the HAProxy instances for
timeouts.drain and stops them. The XDP and sk_lookup programs stay attached;
'ober detach --all' removes them.

Under systemd, stop is 'systemctl stop ober'. Otherwise ober sends SIGTERM
to the PID in node.runtime_dir/ober.pid, after checking that the process is
'ober run' (a stale PID file never gets a stranger killed), waits, and
removes the PID file. --timeout bounds the wait; by default it is
timeouts.drain plus 30s. When nothing runs, stop says so and exits 0.`,
		Example: `  ober stop
  ober stop --timeout 5m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.manager(cmd.Context(), &f, 0, f.timeout)
			if err != nil {
				return fmt.Errorf("stop: %w", err)
			}
			rep, err := m.Stop(cmd.Context())
			if err != nil {
				return fmt.Errorf("stop: %w", err)
			}
			a.notes(rep)
			if rep.Already {
				fmt.Fprintln(a.out, "not running")
				return nil
			}
			fmt.Fprintf(a.out, "stopped: pid %d in %s\n", rep.PID, rep.Took.Round(time.Millisecond))
			return nil
		},
	}
	f.add(cmd, false, 0, "how long to wait for the daemon to exit (default timeouts.drain + 30s)")
	return cmd
}

func newRestartCmd(a *app) *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "restart [--config FILE] [--direct] [--timeout D]",
		Short: "Replace the daemon by a new process while the HAProxy instances keep serving",
		Long: `restart replaces the ober process without interrupting traffic: the running
daemon gets SIGUSR2, hands over (it exits leaving its HAProxy instances
serving and the dataplane attached) and a new 'ober run' takes the
instances over. Use it to run a new ober binary or to pick up what a reload
(SIGHUP) cannot change.

The configuration is checked first, as 'ober run --check' does; when it
fails, the running daemon is left alone and restart exits 1.

Under systemd it is 'systemctl kill --kill-whom=main --signal=SIGUSR2 ober':
the unit's RestartForceExitStatus starts the new process; restart waits for
a new main PID with the unit active. Otherwise ober signals the PID in
node.runtime_dir/ober.pid, waits for it to exit and starts the new daemon
as 'ober start' does. It reports whether the old instances were still
serving when the old process had gone. When nothing runs, restart starts.`,
		Example: `  ober restart
  ober restart --config /etc/ober/ober.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.manager(cmd.Context(), &f, f.timeout, f.timeout)
			if err != nil {
				return fmt.Errorf("restart: %w", err)
			}
			rep, err := m.Restart(cmd.Context())
			if err != nil {
				return fmt.Errorf("restart: %w", err)
			}
			a.notes(rep)
			took := rep.Took.Round(time.Millisecond)
			if rep.Already {
				fmt.Fprintf(a.out, "not running; started: pid %d, serving after %s (%s)\n", rep.PID, took, where(rep))
				return nil
			}
			var kept string
			switch {
			case rep.Instances < 0:
				kept = " (instances not checked: the daemon's /status did not answer)"
			case rep.Kept == rep.Instances:
				kept = fmt.Sprintf(", instances kept serving (%d of %d)", rep.Kept, rep.Instances)
			default:
				kept = fmt.Sprintf("; %d of %d HAProxy instances had exited with pid %d", rep.Instances-rep.Kept, rep.Instances, rep.OldPID)
			}
			fmt.Fprintf(a.out, "restarted: pid %d -> %d in %s%s\n", rep.OldPID, rep.PID, took, kept)
			return nil
		},
	}
	f.add(cmd, true, 0, "how long to wait for each step (default timeouts.drain + 30s for the exit, 60s to serve)")
	return cmd
}
