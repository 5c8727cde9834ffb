package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/whitelist"
	"github.com/ober-ingress/ober/loader"
)

// syncLists are the whitelists `ober sync` can set, one flag each, in the
// order they are asked for and reported. Adding a list is one more row.
var syncLists = []struct {
	flag string // also the list's name in config and the dataplane
	help string
}{
	{config.WhitelistRouters, "routers allowed to open BGP sessions (TCP 179) and send BFD (UDP 3784/4784) to the node"},
	{config.WhitelistFrontendHTTP, "clients allowed on plain-HTTP services with whitelist frontend-http"},
	{config.WhitelistBackendHTTP, "clients allowed on plain-HTTP services with whitelist backend-http"},
}

type syncFlags struct {
	lists           map[string]*string
	allowUnresolved bool
	allowEmpty      bool
	dryRun          bool
	timeout         time.Duration
	hostsFile       string
}

func newSyncCmd(a *app) *cobra.Command {
	f := &syncFlags{lists: make(map[string]*string)}
	cmd := &cobra.Command{
		Use:   "sync [--routers LIST] [--frontend-http LIST] [--backend-http LIST] [--allow-unresolved] [--allow-empty] [--dry-run]",
		Short: "Set the whitelists: in the configuration file and in the live dataplane",
		Long: `sync makes each whitelist given hold exactly what its LIST names, in the
configuration file (whitelists.routers, .frontend_http, .backend_http) and,
when a dataplane is pinned, in the live dataplane too. LIST is a Slurm
hostlist ("client[01-40],gw,10.8.0.0/16") of host names, IP addresses and
CIDR prefixes; the file keeps its items as written, the dataplane gets the
addresses they resolve to.

It prints "+ prefix" for each entry added and "- prefix" for each entry
removed, with the names the address came from, then a line per list.

Nothing is half-applied: sync parses and resolves every list and checks
that the edited configuration loads before it touches anything; then it
swaps each live list in one atomic step (no packet sees half a list) and
replaces the file (a new file renamed over the old one, comments and other
keys kept as they were). If the file cannot be replaced, the live lists are
put back. A list identical to the live one and the file is left alone.

Without a pinned dataplane only the file changes; the daemon applies it
when it starts (or on 'kill -HUP'). The dataplane is the one at
--bpffs-root when given, else node.bpffs_root of the configuration.

A name that does not resolve fails the sync unless --allow-unresolved:
then it is left out of the live list and of the file (a range such as
client[01-40] is written without it), since the daemon refuses names that
do not resolve. An empty list admits nobody; it needs --allow-empty.

With no list given, on a terminal, sync asks for each list (Enter keeps
it, "-" empties it), shows the change and asks before applying it.`,
		Example: `  ober sync --frontend-http 'client[01-40],10.8.0.0/16,2001:db8:c::/48'
  ober sync --routers 'tor[1-2].rack7,10.0.7.1' --dry-run
  ober sync --backend-http 'rgw[01-08].internal' --allow-unresolved
  ober sync --frontend-http '' --allow-empty
  ober sync        # asks for each list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := runSync(cmd, a, f); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			return nil
		},
	}
	for _, l := range syncLists {
		f.lists[l.flag] = cmd.Flags().String(l.flag, "", l.help+" (a `LIST` of host names, IPs and CIDRs)")
	}
	cmd.Flags().BoolVar(&f.allowUnresolved, "allow-unresolved", false, "leave out host names that do not resolve instead of failing")
	cmd.Flags().BoolVar(&f.allowEmpty, "allow-empty", false, "allow a list that leaves a whitelist empty (admitting nobody)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "show the change without applying it")
	cmd.Flags().DurationVar(&f.timeout, "resolve-timeout", whitelist.DefaultResolveTimeout, "bound on resolving the host names")
	// Names resolved from a file instead of the system's resolver: the
	// tests' way to control resolution without touching /etc/hosts. Hidden
	// because the daemon resolves with the system's resolver, so a name
	// only this file knows would fail its next reload.
	cmd.Flags().StringVar(&f.hostsFile, "hosts-file", "", "resolve names from this hosts(5) file only")
	_ = cmd.Flags().MarkHidden("hosts-file")
	return cmd
}

// syncRun is the state of one sync: what the flags and the answers say,
// and the transaction.
type syncRun struct {
	a  *app
	f  *syncFlags
	in *bufio.Reader

	cfgPath string
	file    *whitelist.File // nil without a configuration file
	root    string
	d       *loader.Dataplane // nil without a pinned dataplane
	tx      *whitelist.Tx
}

func runSync(cmd *cobra.Command, a *app, f *syncFlags) error {
	s := &syncRun{a: a, f: f, cfgPath: a.configPath}
	opts := whitelist.Options{Timeout: f.timeout, AllowUnresolved: f.allowUnresolved, AllowEmpty: f.allowEmpty, Logger: a.log}
	given := map[string]string{}
	for _, l := range syncLists {
		if cmd.Flags().Changed(l.flag) {
			given[l.flag] = *f.lists[l.flag]
		}
	}
	interactive := len(given) == 0
	if interactive && !isTerminal(cmd.InOrStdin()) {
		return fmt.Errorf("give the lists to set: %s (or run sync on a terminal to be asked for them)", syncListFlags())
	}
	if f.hostsFile != "" {
		r, err := addrlist.ReadHosts(f.hostsFile)
		if err != nil {
			return fmt.Errorf("--hosts-file %w", err)
		}
		opts.Resolver = r
	}
	if err := s.loadConfig(cmd.Flags().Changed("config")); err != nil {
		return err
	}
	s.root = a.root
	if s.file != nil && !cmd.Flags().Changed("bpffs-root") {
		s.root = s.file.Config.Node.BPFFSRoot
	}
	if err := s.openDataplane(); err != nil {
		return err
	}
	defer func() {
		if s.d != nil {
			s.d.Close()
		}
	}()

	if interactive {
		s.in = bufio.NewReader(cmd.InOrStdin())
		var err error
		if given, err = s.ask(cmd.Context()); err != nil {
			return err
		}
		if len(given) == 0 {
			fmt.Fprintln(a.out, "no list changed; nothing to do")
			return nil
		}
	}
	var reqs []whitelist.Request
	for _, l := range syncLists {
		if text, ok := given[l.flag]; ok {
			reqs = append(reqs, whitelist.Request{List: l.flag, Text: text})
		}
	}
	tx, err := whitelist.Plan(cmd.Context(), s.file, s.d, reqs, opts)
	if err != nil {
		return syncListErr(err)
	}
	s.tx = tx
	if s.f.dryRun || interactive {
		s.printPlan()
		if s.f.dryRun {
			s.printFileLine()
			return nil
		}
		if !tx.Changed() {
			return nil
		}
		ok, err := s.confirm(cmd.Context())
		if err != nil || !ok {
			return err
		}
		if err := tx.Apply(cmd.Context()); err != nil {
			return err
		}
		s.printSummaries()
		s.printFileLine()
		return nil
	}
	if err := tx.Apply(cmd.Context()); err != nil {
		return err
	}
	s.printPlan()
	s.printFileLine()
	return nil
}

// syncListErr words an error about one list in the flag's terms, with
// the flag that would let it through.
func syncListErr(err error) error {
	le, ok := errors.AsType[*whitelist.ListError](err)
	if !ok {
		return err
	}
	msg := fmt.Sprintf("--%s %q: %v", le.List, le.Text, le.Err)
	switch {
	case errors.Is(le.Err, whitelist.ErrUnresolved):
		msg += " (pass --allow-unresolved to leave such names out)"
	case errors.Is(le.Err, whitelist.ErrEmpty):
		msg += " (pass --allow-empty to empty it on purpose)"
	}
	return errors.New(msg)
}

func syncListFlags() string {
	flags := make([]string, len(syncLists))
	for i, l := range syncLists {
		flags[i] = "--" + l.flag + " LIST"
	}
	return strings.Join(flags, ", ")
}

// loadConfig reads the configuration file. A missing file is fine only
// at the default path, for a dataplane attached by hand with no daemon:
// a path the operator gave must exist.
func (s *syncRun) loadConfig(pathGiven bool) error {
	f, err := whitelist.ReadFile(s.cfgPath)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !pathGiven:
		return nil
	case errors.Is(err, whitelist.ErrInvalidConfig):
		return err
	case err != nil:
		return fmt.Errorf("--config %w", err) // it starts with the path
	}
	s.file = f
	return nil
}

func (s *syncRun) openDataplane() error {
	d, err := loader.Open(loader.Options{Root: s.root, Logger: s.a.log, MapsOnly: true})
	switch {
	case errors.Is(err, loader.ErrNotPinned) && s.file != nil:
		return nil
	case errors.Is(err, loader.ErrNotPinned):
		return fmt.Errorf("no configuration file at %s and no dataplane pinned at %s: nothing to change (give --config FILE, or attach first)", s.cfgPath, s.root)
	case err != nil:
		return err
	}
	s.d = d
	return nil
}

// ask reads a new LIST for each whitelist. Enter keeps a list as the
// file has it; "-" empties it.
func (s *syncRun) ask(ctx context.Context) (map[string]string, error) {
	w := s.a.out
	fmt.Fprintln(w, `Enter a list for each whitelist: a Slurm hostlist of names, IPs and CIDRs. Enter keeps it, "-" empties it.`)
	given := map[string]string{}
	for _, l := range syncLists {
		current := "(no configuration file)"
		if s.file != nil {
			current = strings.Join(s.file.Config.WhitelistEntries(l.flag), ",")
			if current == "" {
				current = "(empty)"
			}
		}
		fmt.Fprintf(w, "%s [%s]: ", l.flag, current)
		line, err := s.readLine(ctx)
		if err != nil {
			return nil, err
		}
		switch line {
		case "":
		case "-":
			given[l.flag] = ""
		default:
			given[l.flag] = line
		}
	}
	return given, nil
}

// readLine reads one answer. It gives up when ctx ends: main catches
// Ctrl-C to cancel ctx, so a blocked read would otherwise ignore it.
func (s *syncRun) readLine(ctx context.Context) (string, error) {
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := s.in.ReadString('\n')
		ch <- answer{line, err}
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(s.a.out)
		return "", errors.New("interrupted; nothing changed")
	case a := <-ch:
		switch {
		case a.err == nil, errors.Is(a.err, io.EOF) && a.line != "":
			return strings.TrimSpace(a.line), nil
		case errors.Is(a.err, io.EOF):
			return "", errors.New("no answer (input closed); nothing changed")
		default:
			return "", a.err
		}
	}
}

func (s *syncRun) confirm(ctx context.Context) (bool, error) {
	fmt.Fprint(s.a.out, "Apply? [y/N] ")
	line, err := s.readLine(ctx)
	if err != nil {
		return false, err
	}
	if a := strings.ToLower(line); a == "y" || a == "yes" {
		return true, nil
	}
	fmt.Fprintln(s.a.out, "nothing applied")
	return false, nil
}

// printPlan writes each list's change and, once applied, its summary.
func (s *syncRun) printPlan() {
	w := s.a.out
	if s.file == nil {
		fmt.Fprintf(w, "no configuration file at %s: setting the live dataplane only\n", s.cfgPath)
	}
	for _, c := range s.tx.Changes {
		for _, pr := range c.Added {
			fmt.Fprintf(w, "+ %s%s\n", pr, syncSources(c.Next, pr))
		}
		for _, pr := range c.Removed {
			fmt.Fprintf(w, "- %s%s\n", pr, syncSources(c.Old, pr))
		}
		for _, u := range c.Next.Unresolved {
			fmt.Fprintf(w, "? %s left out: %s\n", u.Host, u.Error)
		}
		if s.f.dryRun || s.in != nil && !s.tx.Applied() {
			s.printPreview(c)
		} else {
			s.printSummary(c)
		}
	}
}

// syncSources names where a prefix came from: " (client07)".
func syncSources(l *whitelist.ResolvedList, p netip.Prefix) string {
	if l == nil || len(l.Sources[p]) == 0 {
		return ""
	}
	return " (" + strings.Join(l.Sources[p], ", ") + ")"
}

// printPreview is the summary line of a change not applied yet.
func (s *syncRun) printPreview(c *whitelist.Change) {
	w := s.a.out
	n, gen := entries(len(c.Effective)), c.LiveInfo.Generation
	switch {
	case s.d == nil:
		fmt.Fprintf(w, "%s: %s\n", c.List, n)
	case !c.Swap:
		fmt.Fprintf(w, "%s: no change in the dataplane (%s, generation %d)\n", c.List, n, gen)
	case s.f.dryRun:
		fmt.Fprintf(w, "%s: %s, generation %d (dry run: nothing applied)\n", c.List, n, gen)
	default:
		fmt.Fprintf(w, "%s: %s, generation %d -> %d once applied\n", c.List, n, gen, gen+1)
	}
}

// printSummary is the summary line of an applied change.
func (s *syncRun) printSummary(c *whitelist.Change) {
	w := s.a.out
	n, gen := entries(len(c.Effective)), c.LiveInfo.Generation
	switch {
	case s.d == nil:
		fmt.Fprintf(w, "%s: %s; no dataplane pinned at %s: the daemon applies it when it starts\n", c.List, n, s.root)
	case c.Swapped.Applied:
		fmt.Fprintf(w, "%s: %s, generation %d -> %d\n", c.List, entries(c.Swapped.After.Entries), c.Swapped.Before.Generation, c.Swapped.After.Generation)
	case c.FileChange:
		fmt.Fprintf(w, "%s: %s, generation %d (the live list already matched)\n", c.List, n, gen)
	default:
		fmt.Fprintf(w, "%s: no change (%s, generation %d)\n", c.List, n, gen)
	}
}

func (s *syncRun) printSummaries() {
	for _, c := range s.tx.Changes {
		s.printSummary(c)
	}
}

// printFileLine says what became of the configuration file.
func (s *syncRun) printFileLine() {
	var keys []string
	for _, c := range s.tx.Changes {
		if c.FileChange {
			key, _ := config.WhitelistKey(c.List)
			keys = append(keys, "whitelists."+key)
		}
	}
	if len(keys) == 0 {
		return
	}
	if s.f.dryRun {
		fmt.Fprintf(s.a.out, "dry run: %s not changed (would set %s)\n", s.cfgPath, strings.Join(keys, ", "))
		return
	}
	fmt.Fprintf(s.a.out, "saved %s in %s\n", strings.Join(keys, ", "), s.cfgPath)
}

func entries(n int) string {
	if n == 1 {
		return "1 entry"
	}
	return fmt.Sprintf("%d entries", n)
}
