package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/dataplane"
	"github.com/ober-ingress/ober/loader"
)

// syncLists are the whitelists `ober sync` can set, one flag each. Adding
// a list to the CLI is one more row.
var syncLists = []struct {
	flag string
	id   loader.WhitelistID
	help string
}{
	{"frontend-http", loader.WhitelistFrontendHTTP, "clients allowed on plain-HTTP services"},
	{"routers", loader.WhitelistRouters, "routers allowed to open BGP sessions (TCP 179) and send BFD (UDP 3784/4784) to the node"},
}

type syncFlags struct {
	lists           map[string]*string
	allowUnresolved bool
	allowEmpty      bool
	dryRun          bool
	timeout         time.Duration
}

func newSyncCmd(a *app) *cobra.Command {
	f := &syncFlags{lists: make(map[string]*string)}
	cmd := &cobra.Command{
		Use:   "sync [--frontend-http LIST] [--routers LIST] [--allow-unresolved] [--allow-empty] [--dry-run]",
		Short: "Replace a whitelist with the addresses a hostlist names",
		Long: `sync makes a whitelist hold exactly the addresses LIST names, and prints the
change: "+ prefix" for each entry added, "- prefix" for each removed, then a
summary. LIST is a Slurm hostlist ("client[01-40],gw") whose items are host
names, IP addresses or CIDR prefixes. Host names are resolved first; the new
list is applied in one atomic swap, so no packet sees half of it. On any
error (a bad entry, a name that does not resolve) the live list is left as it
was. A list identical to the live one is not swapped again.

The routers list guards the node's own addresses in ha.mode bgp: BGP and
BFD packets from anyone else are dropped in XDP.

The running daemon keeps a synced list until its next reload, which applies
the lists of the configuration file again.

An empty LIST would admit nobody; it is refused unless --allow-empty is given.
sync needs a dataplane (see 'ober attach').`,
		Example: `  ober sync --frontend-http 'client[01-40],10.8.0.0/16,2001:db8:c::/48'
  ober sync --routers 'tor[1-2].rack7,10.0.7.1'
  ober sync --frontend-http 'client[01-40]' --allow-unresolved --dry-run
  ober sync --frontend-http '' --allow-empty`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSync(cmd, a, f)
		},
	}
	for _, l := range syncLists {
		f.lists[l.flag] = cmd.Flags().String(l.flag, "", l.help+" (a `LIST` of host names, IPs and CIDRs)")
	}
	cmd.Flags().BoolVar(&f.allowUnresolved, "allow-unresolved", false, "leave out host names that do not resolve instead of failing")
	cmd.Flags().BoolVar(&f.allowEmpty, "allow-empty", false, "allow a list that leaves the whitelist empty (admitting nobody)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "show the change without applying it")
	cmd.Flags().DurationVar(&f.timeout, "resolve-timeout", dataplane.DefaultResolveTimeout, "bound on resolving the host names")
	return cmd
}

func runSync(cmd *cobra.Command, a *app, f *syncFlags) error {
	var given []int
	for i, l := range syncLists {
		if cmd.Flags().Changed(l.flag) {
			given = append(given, i)
		}
	}
	if len(given) == 0 {
		return fmt.Errorf("sync: give a list to set: %s (an interactive mode comes in a later version)", listFlags())
	}
	d, err := loader.Open(a.tableOptions())
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	defer d.Close()
	opts := dataplane.SyncOptions{
		Timeout: f.timeout, AllowUnresolved: f.allowUnresolved, AllowEmpty: f.allowEmpty,
		DryRun: f.dryRun, Logger: a.log,
	}
	// Each list is swapped on its own; lists are independent tables.
	for _, i := range given {
		l := syncLists[i]
		res, err := dataplane.Sync(cmd.Context(), d, l.id, *f.lists[l.flag], opts)
		if err != nil {
			return withSyncHint(err)
		}
		printSync(a.out, res)
	}
	return nil
}

func listFlags() string {
	flags := make([]string, len(syncLists))
	for i, l := range syncLists {
		flags[i] = "--" + l.flag + " LIST"
	}
	return strings.Join(flags, ", ")
}

// withSyncHint names the flag that would have let the sync through.
func withSyncHint(err error) error {
	switch {
	case errors.Is(err, dataplane.ErrEmpty):
		return fmt.Errorf("%w (pass --allow-empty to empty it on purpose)", err)
	case errors.Is(err, dataplane.ErrUnresolved):
		return fmt.Errorf("%w (pass --allow-unresolved to leave such names out)", err)
	}
	return err
}

// printSync writes one line per changed entry, then a summary:
//
//   - 10.0.0.3/32
//   - 10.0.0.9/32
//     frontend-http: 3 entries, generation 4 -> 5
func printSync(w io.Writer, res *dataplane.SyncResult) {
	for _, p := range res.Added {
		fmt.Fprintf(w, "+ %s\n", p)
	}
	for _, p := range res.Removed {
		fmt.Fprintf(w, "- %s\n", p)
	}
	for _, u := range res.Unresolved {
		fmt.Fprintf(w, "? %s left out: %s\n", u.Host, u.Error)
	}
	if !res.Changed() {
		fmt.Fprintln(w, "no change")
	}
	switch {
	case res.Applied:
		fmt.Fprintf(w, "%s: %s, generation %d -> %d\n", res.List, entries(res.Entries), res.GenerationBefore, res.GenerationAfter)
	case res.Changed():
		fmt.Fprintf(w, "%s: %s, generation %d (dry run: nothing applied)\n", res.List, entries(res.Entries), res.GenerationBefore)
	default:
		fmt.Fprintf(w, "%s: %s, generation %d\n", res.List, entries(res.Entries), res.GenerationBefore)
	}
}

func entries(n int) string {
	if n == 1 {
		return "1 entry"
	}
	return fmt.Sprintf("%d entries", n)
}
