package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/service"
)

// newReloadCmd is `ober reload`.
func newReloadCmd(a *app) *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "reload [--config FILE] [--direct] [--timeout D]",
		Short: "Have the running daemon apply its configuration file again",
		Long: `reload has the running daemon read its configuration file again and apply
it, and waits until it did: it prints the configuration generation the
daemon runs then. A change of backend weights or admin states only is
applied through HAProxy's runtime API; other changes renew the HAProxy
instances, connections in flight finishing on the old ones.

When the daemon refuses the configuration, its running configuration stays
in force: reload prints why and exits 1.

Under systemd it is 'systemctl reload ober'; otherwise (or with --direct)
ober sends SIGHUP to the PID in node.runtime_dir/ober.pid. Either way it
waits for the daemon's answer on api.listen, at most --timeout.`,
		Example: `  ober reload
  ober reload --config /etc/ober/ober.yaml --timeout 2m
  ober reload --direct`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.manager(cmd.Context(), &f, f.timeout, 0)
			if err != nil {
				return fmt.Errorf("reload: %w", err)
			}
			rep, err := m.Reload(cmd.Context())
			switch {
			case errors.Is(err, service.ErrReloadRefused):
				return err // "reload refused: why; the running configuration (generation N) stays"
			case err != nil:
				return fmt.Errorf("reload: %w", err)
			}
			a.notes(rep)
			fmt.Fprintf(a.out, "reloaded: generation %d after %s (pid %d)\n", rep.Generation, rep.Took.Round(time.Millisecond), rep.PID)
			return nil
		},
	}
	f.add(cmd, false, service.DefaultStartTimeout, "how long to wait for the daemon to apply the configuration")
	cmd.Flags().Lookup("direct").Usage = directReloadUsage
	return cmd
}
