package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/client"
	"github.com/ober-ingress/ober/control/ops/backends"
	"github.com/ober-ingress/ober/control/ops/service"
)

func newBackendCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Add, remove, drain and weigh backends, list the backends of each service",
		Long: `backend works on the backends the configuration file gives each service:
its own backends, its pools[], or the top-level backends.servers that tls and
http services without backends of their own share.

add, remove, drain, enable, disable and weight speak to the running
daemon's management API (see 'ober service --help'): the change is written
into ober.yaml and live when the command returns, and the command says
whether it went through HAProxy's runtime API or needed a reload. 'backend
set' does the same when the daemon's API answers, and edits the file
itself when no daemon runs; 'backend list' prints what the file says.

A backend is named by its service and its name; a name that is in two
pools of the service needs --pool ("default" is the service's own).`,
		Example: `  ober backend add web b3 --address 10.1.0.3:80 --weight 50
  ober backend drain web b1
  ober backend weight web b2 200
  ober backend remove web b1
  ober backend list
  ober backend set https rgw2 --state drain`,
	}
	cmd.AddCommand(newBackendSetCmd(a), newBackendListCmd(a), newBackendAddCmd(a), newBackendRemoveCmd(a),
		newBackendStateCmd(a, mgmt.Drain), newBackendStateCmd(a, mgmt.Enable), newBackendStateCmd(a, mgmt.Disable),
		newBackendWeightCmd(a))
	return cmd
}

type backendSetFlags struct {
	serviceFlags
	api      apiFlags
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

When the daemon's management API answers on its socket (api.socket, or
--socket), set is a change through it: the API edits the file as above,
validates it and applies it, through HAProxy's runtime API for a weight or
a state, and set prints how. Otherwise set edits the file itself and has
the daemon reload it (but not when --socket or --url named the API: then
its error is set's). --no-reload only edits the file; 'ober reload'
applies it later. When no daemon answers on api.listen, set says so and
leaves the file edited: the daemon applies it when it starts. When the
daemon refuses the reload, the file stays edited, set prints why and
exits 1.`,
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
	f.api.add(cmd, true, false, false)
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
	if !f.noReload {
		done, err := a.backendSetAPI(cmd, f, req)
		if done || err != nil {
			return err
		}
	}
	if cmd.Flags().Changed("if-match") {
		if f.noReload {
			return errors.New("--if-match is the management API's: it does not go with --no-reload")
		}
		return errors.New("--if-match needs the management API, and no daemon answers on it")
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

// backendSetAPI makes set's change through the management API; done is
// false when no daemon answers there, and set edits the file itself.
func (a *app) backendSetAPI(cmd *cobra.Command, f *backendSetFlags, req backends.Request) (done bool, err error) {
	f.api.timeout = f.timeout
	c, err := a.mgmtClient(&f.api)
	if errors.Is(err, errSocketOff) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var patch object
	var what []string
	if req.Weight != nil {
		patch.set("weight", *req.Weight)
		what = append(what, "weight "+strconv.Itoa(*req.Weight))
	}
	if req.State != "" {
		patch.set("state", req.State)
		what = append(what, "state "+req.State)
	}
	js, err := json.Marshal(patch)
	if err != nil {
		return false, err
	}
	res, err := c.PatchBackend(cmd.Context(), req.Service, req.Backend, js, f.api.options(cmd, req.Pool)...)
	// The API named on the command line is the one wanted: no falling
	// back to the file behind the operator's back.
	if errors.Is(err, client.ErrNoDaemon) && f.api.socket == "" && f.api.url == "" {
		return false, nil
	}
	if err != nil {
		return true, apiErr(err)
	}
	fmt.Fprintf(a.out, "%s %s: %s: %s\n", req.Service, req.Backend, strings.Join(what, ", "), applied(res))
	a.sharedNote(res)
	return true, nil
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

// backendRef are the flags naming a backend: its pool.
type backendRef struct {
	api  apiFlags
	pool string
}

func (f *backendRef) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.pool, "pool", "", `the pool the backend is in, when its name is in several ("default": the service's own)`)
	f.api.add(cmd, true, true, true)
}

// what names a backend in messages: its pool too when --pool gave one.
func (f *backendRef) what(svc, backend string) string {
	if f.pool != "" && f.pool != config.DefaultPool {
		return svc + " " + f.pool + "/" + backend
	}
	return svc + " " + backend
}

type backendAddFlags struct {
	backendRef
	address  string
	weight   int
	priority int
	state    string
}

func newBackendAddCmd(a *app) *cobra.Command {
	var f backendAddFlags
	cmd := &cobra.Command{
		Use:   "add SERVICE NAME --address HOST:PORT [--weight N] [--priority N] [--state S] [--pool P]",
		Short: "Add a backend to a service",
		Long: `add puts a backend into SERVICE's own backends, or into its pool --pool
(PUT /api/v1/services/SERVICE/backends/NAME), and prints how it came into
force: a new backend needs a reload of the instances.

Adding what is there already (the same address) is not an error: the
weight, priority and state given replace the backend's, and nothing
changes when they are the same, so that a script can run add again. A
backend of that name with another address is an error: remove it first.`,
		Example: `  ober backend add web b3 --address 10.1.0.3:80
  ober backend add web b4 --address 10.1.0.4:80 --weight 50 --priority 2
  ober backend add sni eu1 --address 10.2.0.1:443 --pool eu --state drain`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, name := args[0], args[1]
			body := object{{"name", name}, {"address", f.address}}
			if cmd.Flags().Changed("weight") {
				body.set("weight", f.weight)
			}
			if cmd.Flags().Changed("priority") {
				body.set("priority", f.priority)
			}
			if f.state != "" {
				body.set("state", f.state)
			}
			js, err := json.Marshal(body)
			if err != nil {
				return err
			}
			c, err := a.mgmtClient(&f.api)
			if err != nil {
				return err
			}
			opts := f.api.options(cmd, f.pool)
			// PUT replaces: make sure that it replaces only this backend.
			old, err := c.Backend(cmd.Context(), svc, name, client.InPool(f.pool))
			switch {
			case err == nil:
				var b backendForm
				if json.Unmarshal(old, &b) == nil && b.Address != f.address {
					return fmt.Errorf("%s is there already, with address %s: 'ober backend remove' it first, or give it another name", f.what(svc, name), b.Address)
				}
			case mgmt.StatusOf(err) != http.StatusNotFound:
				return apiErr(err)
			}
			res, err := c.PutBackend(cmd.Context(), svc, name, js, opts...)
			if err != nil {
				return apiErr(err)
			}
			return a.report(&f.api, res, "%s (%s) added", f.what(svc, name), f.address)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.address, "address", "", "HOST:PORT, or a host alone on a service with a port range")
	fl.IntVar(&f.weight, "weight", 0, "its weight, 0-256 (default 100)")
	fl.IntVar(&f.priority, "priority", 0, "its priority: traffic goes to the lowest number that is up (default 1)")
	fl.StringVar(&f.state, "state", "", "its admin state: enabled (default), drain or disabled")
	completeWords(cmd, "state", config.StateEnabled, config.StateDrain, config.StateDisabled)
	_ = cmd.MarkFlagRequired("address")
	f.backendRef.add(cmd)
	return cmd
}

func newBackendRemoveCmd(a *app) *cobra.Command {
	var f backendRef
	cmd := &cobra.Command{
		Use:   "remove SERVICE NAME [--pool P] [--if-match GEN]",
		Short: "Remove a backend from a service",
		Long: `remove takes the backend out of the service (DELETE
/api/v1/services/SERVICE/backends/NAME), which needs a reload. To let its
open connections finish, drain it first ('ober backend drain') and remove
it once they have.`,
		Example: `  ober backend drain web b1 && sleep 60 && ober backend remove web b1
  ober backend remove sni eu1 --pool eu`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.mgmtClient(&f.api)
			if err != nil {
				return err
			}
			res, err := c.DeleteBackend(cmd.Context(), args[0], args[1], f.api.options(cmd, f.pool)...)
			if err != nil {
				return apiErr(err)
			}
			return a.report(&f.api, res, "%s removed", f.what(args[0], args[1]))
		},
	}
	f.add(cmd)
	return cmd
}

// backendStates are what drain, enable and disable do, for their help.
var backendStates = map[mgmt.Verb]struct{ short, long, state string }{
	mgmt.Drain: {"Drain a backend: no new connections, the open ones finish",
		"drain stops sending new connections to the backend; the open ones finish.\nHealth checks go on.", config.StateDrain},
	mgmt.Enable: {"Put a drained or disabled backend back in service",
		"enable puts the backend back in service: it takes new connections again\n(once its health checks find it up).", config.StateEnabled},
	mgmt.Disable: {"Take a backend out at once, its open connections cut",
		"disable takes the backend out at once: no new connections, and the open\nones are cut.", config.StateDisabled},
}

func newBackendStateCmd(a *app, verb mgmt.Verb) *cobra.Command {
	var f backendRef
	h := backendStates[verb]
	cmd := &cobra.Command{
		Use:   string(verb) + " SERVICE NAME [--pool P] [--if-match GEN]",
		Short: h.short,
		Long: h.long + `

The state is written into ober.yaml (state: ` + h.state + `), so that it survives a
restart, and applied through HAProxy's runtime API, without a reload.`,
		Example: "  ober backend " + string(verb) + " web b1\n  ober backend " + string(verb) + " sni eu1 --pool eu",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.mgmtClient(&f.api)
			if err != nil {
				return err
			}
			do := map[mgmt.Verb]func(context.Context, string, string, ...client.Option) (*client.Result, error){
				mgmt.Drain: c.Drain, mgmt.Enable: c.Enable, mgmt.Disable: c.Disable,
			}[verb]
			res, err := do(cmd.Context(), args[0], args[1], f.api.options(cmd, f.pool)...)
			if err != nil {
				return apiErr(err)
			}
			return a.report(&f.api, res, "%s: state %s", f.what(args[0], args[1]), h.state)
		},
	}
	f.add(cmd)
	return cmd
}

func newBackendWeightCmd(a *app) *cobra.Command {
	var f backendRef
	cmd := &cobra.Command{
		Use:   "weight SERVICE NAME WEIGHT [--pool P] [--if-match GEN]",
		Short: "Change a backend's weight",
		Long: `weight sets the backend's weight, 0-256: the balance methods that use
weights share new connections in proportion to them, and 0 takes the
backend out of rotation. It is written into ober.yaml and applied through
HAProxy's runtime API, without a reload.`,
		Example: `  ober backend weight web b2 200
  ober backend weight web b1 0
  ober backend weight sni eu1 50 --pool eu --if-match 3`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			w, err := strconv.Atoi(args[2])
			if err != nil {
				return fmt.Errorf("weight %q: not a number (0-256)", args[2])
			}
			js, err := json.Marshal(object{{"weight", w}})
			if err != nil {
				return err
			}
			c, err := a.mgmtClient(&f.api)
			if err != nil {
				return err
			}
			res, err := c.PatchBackend(cmd.Context(), args[0], args[1], js, f.api.options(cmd, f.pool)...)
			if err != nil {
				return apiErr(err)
			}
			return a.report(&f.api, res, "%s: weight %d", f.what(args[0], args[1]), w)
		},
	}
	f.add(cmd)
	return cmd
}
