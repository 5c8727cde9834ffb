package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/backends"
	"github.com/ober-ingress/ober/control/ops/service"
)

func newBackendCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Change a backend's weight or admin state, list the backends of each service",
		Long: `backend works on the backends the configuration file gives each service:
its own backends, its pools[], or the top-level backends.servers that tls and
http services without backends of their own share.

'backend set' edits the file and has the running daemon reload it; 'backend
list' prints what the file says.`,
		Example: `  ober backend list
  ober backend set https rgw2 --state drain
  ober backend set db pg1 --weight 50`,
	}
	cmd.AddCommand(newBackendSetCmd(a), newBackendListCmd(a))
	return cmd
}

type backendSetFlags struct {
	serviceFlags
	weight   int
	state    string
	pool     string
	noReload bool
}

func newBackendSetCmd(a *app) *cobra.Command {
	var f backendSetFlags
	cmd := &cobra.Command{
		Use:   "set SERVICE BACKEND [--weight N] [--state enabled|drain|disabled] [--pool P] [--config FILE] [--no-reload] [--direct] [--timeout D]",
		Short: "Set a backend's weight or admin state in the configuration and reload the daemon",
		Long: `set changes the weight (0-256) or the admin state of one backend of SERVICE
in the configuration file (--config), then has the running daemon reload it
and prints the configuration generation the daemon runs.

The states:
  enabled    the backend takes new connections (the default)
  drain      no new connections; the open ones finish
  disabled   out at once
A weight of 0 takes the backend out of rotation too; the balance methods
that use weights share new connections in proportion to them.

SERVICE is the service's name (by default "<mode>-<port>", such as tls-443);
BACKEND the backend's name (by default s<index> in its pool: s0 is the
first). A tls or http service without backends of its own uses the
top-level backends.servers: a change there applies to every such service,
and set says so. A name that is in two pools of the service needs --pool
("default" is the service's own backends).

Only the lines of the changed values change: every other line, comment and
blank line of the file stays as it was. A backend without a name in the file
gets its name written, so that it keeps it when the list changes. The edited
file must load as the daemon would load it, or nothing is written; the file
is replaced in one step. Setting what the file says already writes nothing
and reloads nothing.

--no-reload only edits the file; 'ober reload' applies it later. When no
daemon answers on api.listen, set says so and leaves the file edited: the
daemon applies it when it starts. When the daemon refuses the reload, the
file stays edited, set prints why and exits 1.`,
		Example: `  ober backend set https rgw2 --state drain
  ober backend set https rgw2 --state enabled --weight 100
  ober backend set db pg1 --weight 0 --no-reload
  ober backend set sni common --pool eu --state disabled
  ober backend set tls-443 s1 --weight 50 --config /etc/ober/ober.yaml`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := runBackendSet(cmd, a, &f, args[0], args[1]); err != nil {
				return fmt.Errorf("backend set: %w", err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.weight, "weight", 0, "the backend's new weight, 0-256")
	fl.StringVar(&f.state, "state", "", "the backend's new admin state: enabled, drain or disabled")
	fl.StringVar(&f.pool, "pool", "", `the pool the backend is in, when its name is in several ("default": the service's own)`)
	fl.BoolVar(&f.noReload, "no-reload", false, "only edit the file; do not ask the daemon to reload")
	completeWords(cmd, "state", config.StateEnabled, config.StateDrain, config.StateDisabled)
	f.add(cmd, false, service.DefaultStartTimeout, "how long to wait for the daemon to apply the configuration")
	fl.Lookup("direct").Usage = directReloadUsage
	return cmd
}

// directReloadUsage is --direct's help where it reloads.
const directReloadUsage = "signal the daemon of node.runtime_dir/ober.pid even where systemd manages the ober unit"

func runBackendSet(cmd *cobra.Command, a *app, f *backendSetFlags, svc, backend string) error {
	req := backends.Request{Service: svc, Backend: backend, Pool: f.pool, State: f.state}
	if cmd.Flags().Changed("weight") {
		req.Weight = &f.weight
	}
	if req.Weight == nil && req.State == "" {
		return errors.New("give --weight N or --state enabled|drain|disabled")
	}
	res, err := backends.Set(a.configPath, req)
	if err != nil {
		return err
	}
	what := res.Backend
	if res.Pool != config.DefaultPool {
		what = res.Pool + "/" + res.Backend
	}
	if !res.Changed {
		var has []string
		if req.Weight != nil {
			has = append(has, "weight "+strconv.Itoa(*req.Weight))
		}
		if req.State != "" {
			has = append(has, "state "+req.State)
		}
		fmt.Fprintf(a.out, "%s %s (%s) has %s already: nothing to change\n", res.Service, what, res.Path, strings.Join(has, ", "))
		return nil
	}
	changes := make([]string, len(res.Changes))
	for i, c := range res.Changes {
		changes[i] = c.String()
	}
	fmt.Fprintf(a.out, "%s %s (%s): %s\n", res.Service, what, res.Path, strings.Join(changes, ", "))
	saved := "saved in " + a.configPath
	if res.Named {
		saved += fmt.Sprintf(" (with its name, %s, written into it)", res.Backend)
	}
	fmt.Fprintln(a.out, saved)
	if len(res.SharedBy) > 1 {
		fmt.Fprintf(a.out, "note: backends.servers is the pool of services %s: the change applies to each\n", strings.Join(res.SharedBy, ", "))
	}
	if f.noReload {
		fmt.Fprintln(a.out, "not reloaded (--no-reload): 'ober reload' applies it")
		return nil
	}
	rep, err := a.reloadIfRunning(cmd.Context(), &f.serviceFlags)
	switch {
	case errors.Is(err, errNoDaemon):
		fmt.Fprintf(a.out, "note: %v: the daemon applies the file when it starts\n", err)
		return nil
	case err != nil:
		return fmt.Errorf("saved in %s, but %w", a.configPath, err)
	}
	fmt.Fprintf(a.out, "reloaded: generation %d\n", rep.Generation)
	return nil
}

// errNoDaemon matches reloadIfRunning's error when no daemon answers.
var errNoDaemon = errors.New("no daemon answers")

// reloadIfRunning has the daemon reload its configuration when one
// answers on api.listen; the error matches errNoDaemon when none does.
func (a *app) reloadIfRunning(ctx context.Context, f *serviceFlags) (*service.Report, error) {
	addr := a.apiAddr()
	if _, err := fetchStatus(ctx, addr); err != nil {
		return nil, fmt.Errorf("%w on %s", errNoDaemon, addr)
	}
	m, err := a.manager(ctx, f, f.timeout, 0)
	if err != nil {
		return nil, err
	}
	return m.Reload(ctx)
}

func newBackendListCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [SERVICE] [--config FILE]",
		Short: "List each service's backends as the configuration file gives them",
		Long: `list prints the backends of SERVICE, or of every service, as the
configuration file (--config) gives them, defaults filled in: the service,
the pool ("default" is the service's own backends; "default (shared)" the
top-level backends.servers, which every tls and http service without
backends of its own uses), the backend's name, address, weight, priority
and admin state.

It shows what the file says, which the daemon runs once it has reloaded
it; 'ober status' shows what the daemon runs, with each backend's health.`,
		Example: `  ober backend list
  ober backend list https
  ober backend list --config /etc/ober/ober.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var svc string
			if len(args) == 1 {
				svc = args[0]
			}
			rows, err := backends.List(a.configPath, svc)
			if err != nil {
				return fmt.Errorf("backend list: %w", err)
			}
			if len(rows) == 0 {
				fmt.Fprintln(a.out, "no backends")
				return nil
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tPOOL\tBACKEND\tADDRESS\tWEIGHT\tPRIORITY\tSTATE")
			for _, r := range rows {
				pool := r.Pool
				if r.Shared {
					pool += " (shared)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Service, pool, r.Name, r.Address, r.Weight, r.Priority, r.State)
			}
			return tw.Flush()
		},
	}
	return cmd
}
