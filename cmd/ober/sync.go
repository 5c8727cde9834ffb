package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/hostlist"
	"github.com/ober-ingress/ober/control/ops/dataplane"
	"github.com/ober-ingress/ober/loader"
)

// syncLists are the whitelists `ober sync` can set, one flag each, in the
// order they are asked for and reported. Adding a list is one more row.
var syncLists = []struct {
	flag string // also the list's name in config and the dataplane
	id   loader.WhitelistID
	help string
}{
	{config.WhitelistRouters, loader.WhitelistRouters, "routers allowed to open BGP sessions (TCP 179) and send BFD (UDP 3784/4784) to the node"},
	{config.WhitelistFrontendHTTP, loader.WhitelistFrontendHTTP, "clients allowed on plain-HTTP services with whitelist frontend-http"},
	{config.WhitelistBackendHTTP, loader.WhitelistBackendHTTP, "clients allowed on plain-HTTP services with whitelist backend-http"},
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
	cmd.Flags().DurationVar(&f.timeout, "resolve-timeout", dataplane.DefaultResolveTimeout, "bound on resolving the host names")
	// Names resolved from a file instead of the system's resolver: the
	// tests' way to control resolution without touching /etc/hosts. Hidden
	// because the daemon resolves with the system's resolver, so a name
	// only this file knows would fail its next reload.
	cmd.Flags().StringVar(&f.hostsFile, "hosts-file", "", "resolve names from this hosts(5) file only")
	_ = cmd.Flags().MarkHidden("hosts-file")
	return cmd
}

// syncListPlan is one whitelist's change.
type syncListPlan struct {
	flag string
	id   loader.WhitelistID
	text string // LIST as given

	// items are the config entries to write: LIST's items as written,
	// less the names left out under --allow-unresolved.
	items, oldItems []string
	next            *dataplane.ResolvedList
	old             *dataplane.ResolvedList // the file's list, for names of removed entries; nil if it does not resolve
	effective       []netip.Prefix          // what the dataplane gets
	// live is the dataplane's list and its generation; nil without one.
	live             []netip.Prefix
	liveInfo         loader.WhitelistInfo
	added, removed   []netip.Prefix
	swap, fileChange bool
	swapped          dataplane.Swapped
}

// syncRun is the state of one sync.
type syncRun struct {
	a        *app
	f        *syncFlags
	resolver addrlist.Resolver
	in       *bufio.Reader

	cfgPath string
	// filePath is cfgPath with symbolic links followed: the file that is
	// replaced, so that a link stays a link.
	filePath string
	cfgData  []byte
	cfgMode  fs.FileMode
	cfg      *config.Config // nil without a configuration file
	newData  []byte         // the edited file, when it changes
	root     string
	d        *loader.Dataplane // nil without a pinned dataplane
	plans    []*syncListPlan
}

func runSync(cmd *cobra.Command, a *app, f *syncFlags) error {
	s := &syncRun{a: a, f: f, cfgPath: a.configPath}
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
		r, err := syncLoadHosts(f.hostsFile)
		if err != nil {
			return fmt.Errorf("--hosts-file %s: %w", f.hostsFile, err)
		}
		s.resolver = r
	}
	if err := s.loadConfig(cmd.Flags().Changed("config")); err != nil {
		return err
	}
	s.root = a.root
	if s.cfg != nil && !cmd.Flags().Changed("bpffs-root") {
		s.root = s.cfg.Node.BPFFSRoot
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
	if err := s.plan(cmd.Context(), given); err != nil {
		return err
	}
	if s.f.dryRun || interactive {
		s.printPlan()
		if s.f.dryRun {
			s.printFileLine()
			return nil
		}
		if !s.changes() {
			return nil
		}
		ok, err := s.confirm(cmd.Context())
		if err != nil || !ok {
			return err
		}
		if err := s.apply(); err != nil {
			return err
		}
		s.printSummaries()
		s.printFileLine()
		return nil
	}
	if err := s.apply(); err != nil {
		return err
	}
	s.printPlan()
	s.printFileLine()
	return nil
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
	st, err := os.Stat(s.cfgPath)
	if errors.Is(err, fs.ErrNotExist) && !pathGiven {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--config %s: %w", s.cfgPath, syncPathErr(err))
	}
	s.cfgMode = st.Mode()
	if s.filePath, err = filepath.EvalSymlinks(s.cfgPath); err != nil {
		return fmt.Errorf("--config %s: %w", s.cfgPath, syncPathErr(err))
	}
	if s.cfgData, err = os.ReadFile(s.cfgPath); err != nil {
		return fmt.Errorf("--config %s: %w", s.cfgPath, syncPathErr(err))
	}
	cfg, err := config.Load(s.cfgPath)
	if err != nil {
		return fmt.Errorf("the configuration does not load; fix it first: %s", syncOneLine(err))
	}
	s.cfg = cfg
	return nil
}

// syncPathErr drops the path *fs.PathError repeats; the message names it.
func syncPathErr(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// syncOneLine joins a multi-line error (one line per problem) into one.
func syncOneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func (s *syncRun) openDataplane() error {
	d, err := loader.Open(loader.Options{Root: s.root, Logger: s.a.log, MapsOnly: true})
	switch {
	case errors.Is(err, loader.ErrNotPinned) && s.cfg != nil:
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
		if s.cfg != nil {
			current = strings.Join(s.cfg.WhitelistEntries(l.flag), ",")
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

// plan parses and resolves every given list, edits the configuration and
// checks that it loads, and works out each list's change against the
// live one. It changes nothing.
func (s *syncRun) plan(ctx context.Context, given map[string]string) error {
	for _, l := range syncLists {
		text, ok := given[l.flag]
		if !ok {
			continue
		}
		p := &syncListPlan{flag: l.flag, id: l.id, text: text}
		if s.cfg != nil {
			p.oldItems = s.cfg.WhitelistEntries(l.flag)
		}
		s.plans = append(s.plans, p)
	}
	if err := s.resolve(ctx); err != nil {
		return err
	}

	edits := map[string][]string{}
	for _, p := range s.plans {
		p.fileChange = s.cfg != nil && !config.EqualEntries(p.oldItems, p.items)
		if p.fileChange {
			edits[p.flag] = p.items
		}
	}
	settle := s.cfg
	if len(edits) > 0 {
		data, err := config.EditWhitelists(s.cfgData, edits)
		if err != nil {
			return fmt.Errorf("edit %s: %w", s.cfgPath, err)
		}
		if settle, err = config.Parse(data); err != nil {
			return fmt.Errorf("with these lists the configuration would not load (nothing changed): config %s: %s", s.cfgPath, syncOneLine(err))
		}
		s.newData = data
	}

	for _, p := range s.plans {
		p.effective = addrlist.Normalize(p.next.Prefixes)
		if settle != nil {
			var err error
			if p.effective, err = settle.SettleWhitelist(p.flag, p.next.Prefixes); err != nil {
				return fmt.Errorf("--%s %q: the daemon would refuse it: %s", p.flag, p.text, syncOneLine(err))
			}
		}
		if len(p.effective) == 0 && !s.f.allowEmpty {
			msg := dataplane.ErrEmpty.Error()
			if len(p.next.Unresolved) > 0 {
				msg += fmt.Sprintf(": none of its %d names resolved", len(p.next.Unresolved))
			}
			return fmt.Errorf("--%s %q: %s (pass --allow-empty to empty it on purpose)", p.flag, p.text, msg)
		}
		var before []netip.Prefix
		if s.d != nil {
			live, info, err := s.d.Whitelist(p.id)
			if err != nil {
				return err
			}
			p.live, p.liveInfo = live, info
			before = live
			// A list never set (generation 0) is swapped even when empty,
			// so that status shows it as set.
			p.swap = info.Generation == 0 || !slices.Equal(addrlist.Normalize(live), p.effective)
		} else if p.old != nil && s.cfg != nil {
			before, _ = s.cfg.SettleWhitelist(p.flag, p.old.Prefixes)
		}
		p.added, p.removed = addrlist.Diff(before, p.effective)
	}
	return nil
}

// resolve resolves every given list and the file's version of it, all at
// once and within one --resolve-timeout.
func (s *syncRun) resolve(ctx context.Context) error {
	opts := dataplane.SyncOptions{Resolver: s.resolver, Timeout: s.f.timeout, AllowUnresolved: s.f.allowUnresolved}
	oldOpts := opts
	oldOpts.AllowUnresolved = true
	// Every list is parsed before any lookup starts: a typo is reported
	// at once, not after a slow resolver.
	for _, p := range s.plans {
		if _, err := addrlist.Parse(p.text); err != nil && strings.TrimSpace(p.text) != "" {
			return fmt.Errorf("--%s %q: %w", p.flag, p.text, err)
		}
	}
	errs := make([]error, len(s.plans))
	var wg sync.WaitGroup
	for i, p := range s.plans {
		wg.Go(func() {
			p.next, errs[i] = dataplane.ResolveList(ctx, p.text, opts)
		})
		if len(p.oldItems) > 0 {
			wg.Go(func() {
				// Best effort: only used to name what removed entries were.
				p.old, _ = dataplane.ResolveList(ctx, strings.Join(p.oldItems, ","), oldOpts)
			})
		}
	}
	wg.Wait()
	for i, p := range s.plans {
		if err := errs[i]; err != nil {
			if errors.Is(err, dataplane.ErrUnresolved) {
				return fmt.Errorf("--%s %q: %w (pass --allow-unresolved to leave such names out)", p.flag, p.text, err)
			}
			return fmt.Errorf("--%s %q: %w", p.flag, p.text, err)
		}
		items, err := syncKeptItems(p.text, p.next.Unresolved)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", p.flag, p.text, err)
		}
		p.items = items
	}
	return nil
}

// changes reports whether applying would change anything.
func (s *syncRun) changes() bool {
	for _, p := range s.plans {
		if p.swap || p.fileChange {
			return true
		}
	}
	return false
}

// apply writes the new file aside, swaps the live lists, then renames the
// file into place; if the rename fails, the lists are put back. Writing
// first leaves the rename as the only step after the swap that can fail.
func (s *syncRun) apply() error {
	var tmp string
	if s.newData != nil {
		var err error
		if tmp, err = syncWriteTemp(s.filePath, s.newData, s.cfgMode); err != nil {
			return fmt.Errorf("write %s: %w; nothing changed", s.cfgPath, err)
		}
		defer os.Remove(tmp) // a no-op once renamed
	}
	undo := func() error { return nil }
	if s.d != nil {
		var swaps []dataplane.Swap
		var lists []dataplane.HAProxyList
		for _, p := range s.plans {
			if p.swap {
				swaps = append(swaps, dataplane.Swap{ID: p.id, Prefixes: p.effective, Expect: p.live})
				lists = append(lists, dataplane.HAProxyList{Name: p.id.String(), Prefixes: p.effective, Prev: p.live})
			}
		}
		// HAProxy's copy first: a client added is let in by HAProxy
		// before XDP passes it, and one removed is stopped by XDP as
		// HAProxy already refuses it. Neither check ever admits a client
		// the other refuses on the way in.
		hx, err := s.haproxySwap(lists)
		if err != nil {
			return fmt.Errorf("%w; nothing changed", err)
		}
		done, u, err := dataplane.SwapWhitelists(s.d, swaps, s.a.log)
		if err != nil {
			if herr := hx.Undo(context.Background()); herr != nil {
				return fmt.Errorf("%w; putting HAProxy's lists back failed: %v", err, herr)
			}
			return fmt.Errorf("%w; nothing changed", err)
		}
		undo = func() error {
			return errors.Join(u(), hx.Undo(context.Background()))
		}
		if err := hx.Commit(); err != nil {
			if uerr := undo(); uerr != nil {
				return fmt.Errorf("%v; putting the live lists back failed too: %v", err, uerr)
			}
			return fmt.Errorf("%v; the live lists were put back, nothing changed", err)
		}
		for _, sw := range done {
			for _, p := range s.plans {
				if p.id == sw.ID {
					p.swapped = sw
				}
			}
		}
	}
	if tmp != "" {
		if err := syncReplaceFile(tmp, s.filePath); err != nil {
			if uerr := undo(); uerr != nil {
				return fmt.Errorf("replace %s: %v; putting the live lists back failed too: %v", s.cfgPath, err, uerr)
			}
			return fmt.Errorf("replace %s: %v; the live lists were put back, nothing changed", s.cfgPath, err)
		}
	}
	return nil
}

// haproxySwap changes HAProxy's copy of the lists in the running
// instances of the configuration's runtime directory (none without a
// configuration file).
func (s *syncRun) haproxySwap(lists []dataplane.HAProxyList) (*dataplane.HAProxySwap, error) {
	dir := config.DefaultRuntimeDir
	if s.cfg != nil {
		dir = s.cfg.Node.RuntimeDir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return dataplane.SwapHAProxyWhitelists(ctx, dir, lists, s.a.log)
}

// syncWriteTemp writes data to a new file beside path, with path's mode and
// owner, and syncs it, so that a rename makes it path in one step.
func syncWriteTemp(path string, data []byte, mode fs.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".sync-*")
	if err != nil {
		return "", syncPathErr(err)
	}
	name := f.Name()
	err = f.Chmod(mode.Perm())
	if st, serr := os.Stat(path); err == nil && serr == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			err = f.Chown(int(sys.Uid), int(sys.Gid))
		}
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", syncPathErr(err)
	}
	return name, nil
}

// syncReplaceFile renames tmp over path and syncs the directory, so that the
// new file survives a crash.
func syncReplaceFile(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		if le, ok := errors.AsType[*os.LinkError](err); ok {
			return le.Err
		}
		return err
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

// syncKeptItems cuts LIST into its top-level items as written, leaving out
// the names in unresolved: a plain name goes, a range is written again
// without them ("client[01-03]" without client02 is "client[01,03]").
func syncKeptItems(list string, unresolved []dataplane.UnresolvedName) ([]string, error) {
	items := syncSplitItems(list)
	if len(unresolved) == 0 {
		return items, nil
	}
	gone := map[string]bool{}
	for _, u := range unresolved {
		gone[u.Host] = true
	}
	var out []string
	for _, it := range items {
		names, err := hostlist.Expand(it)
		if err != nil {
			return nil, err
		}
		kept := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return gone[n] })
		switch {
		case len(kept) == len(names):
			out = append(out, it)
		case len(kept) > 0:
			out = append(out, syncSplitItems(collapseHosts(kept))...)
		}
	}
	return out, nil
}

// syncSplitItems cuts a hostlist at the commas outside brackets.
func syncSplitItems(list string) []string {
	var items []string
	depth, start := 0, 0
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			items = append(items, s)
		}
	}
	for i := 0; i < len(list); i++ {
		switch list[i] {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				add(list[start:i])
				start = i + 1
			}
		}
	}
	add(list[start:])
	return items
}

// collapseHosts writes names as a short hostlist: names that differ only in
// one run of digits share a bracket group. Of the runs to group by, the
// one giving the shortest text wins. The result is checked by expanding
// it; should it not give back the names, they are listed one by one.
func collapseHosts(names []string) string {
	best := strings.Join(names, ",")
	runs := 0
	for _, n := range names {
		runs = max(runs, len(syncDigitRuns(n)))
	}
	for r := 0; r < runs; r++ {
		if s := collapseHostsOn(names, r); len(s) < len(best) {
			best = s
		}
	}
	if got, err := hostlist.Expand(best); err != nil || !slices.Equal(got, names) {
		return strings.Join(names, ",")
	}
	return best
}

// syncDigitRuns returns the [start, end) of each run of digits in s.
func syncDigitRuns(s string) [][2]int {
	var runs [][2]int
	for i := 0; i < len(s); {
		if s[i] < '0' || s[i] > '9' {
			i++
			continue
		}
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		runs = append(runs, [2]int{i, j})
		i = j
	}
	return runs
}

// collapseHostsOn groups names by everything but their r-th run of digits
// counted from the end, keeping the order in which groups first appear.
func collapseHostsOn(names []string, r int) string {
	type group struct {
		pre, post string
		nums      []string
	}
	var groups []*group
	byKey := map[[2]string]*group{}
	for _, n := range names {
		runs := syncDigitRuns(n)
		if r >= len(runs) {
			groups = append(groups, &group{pre: n})
			continue
		}
		run := runs[len(runs)-1-r]
		k := [2]string{n[:run[0]], n[run[1]:]}
		g, ok := byKey[k]
		// Only consecutive names join a group: the expansion must give
		// them back in the same order.
		if !ok || g != groups[len(groups)-1] {
			g = &group{pre: k[0], post: k[1]}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.nums = append(g.nums, n[run[0]:run[1]])
	}
	parts := make([]string, len(groups))
	for i, g := range groups {
		if len(g.nums) <= 1 {
			parts[i] = g.pre + strings.Join(g.nums, "") + g.post
			continue
		}
		parts[i] = g.pre + "[" + syncRanges(g.nums) + "]" + g.post
	}
	return strings.Join(parts, ",")
}

// syncRanges writes numbers as hostlist range elements: "01-03,07".
func syncRanges(nums []string) string {
	var elems []string
	for i := 0; i < len(nums); {
		lo := nums[i]
		v, _ := strconv.ParseUint(lo, 10, 64)
		j := i + 1
		for j < len(nums) {
			next := strconv.FormatUint(v+uint64(j-i), 10)
			if len(next) < len(lo) {
				next = strings.Repeat("0", len(lo)-len(next)) + next
			}
			if nums[j] != next {
				break
			}
			j++
		}
		if j-i == 1 {
			elems = append(elems, lo)
		} else {
			elems = append(elems, lo+"-"+nums[j-1])
		}
		i = j
	}
	return strings.Join(elems, ",")
}

// printPlan writes each list's change and, once applied, its summary.
func (s *syncRun) printPlan() {
	w := s.a.out
	if s.cfg == nil {
		fmt.Fprintf(w, "no configuration file at %s: setting the live dataplane only\n", s.cfgPath)
	}
	for _, p := range s.plans {
		for _, pr := range p.added {
			fmt.Fprintf(w, "+ %s%s\n", pr, syncSources(p.next, pr))
		}
		for _, pr := range p.removed {
			fmt.Fprintf(w, "- %s%s\n", pr, syncSources(p.old, pr))
		}
		for _, u := range p.next.Unresolved {
			fmt.Fprintf(w, "? %s left out: %s\n", u.Host, u.Error)
		}
		if s.f.dryRun || s.in != nil && !s.applied() {
			s.printPreview(p)
		} else {
			s.printSummary(p)
		}
	}
}

func (s *syncRun) applied() bool {
	for _, p := range s.plans {
		if p.swapped.Applied {
			return true
		}
	}
	return false
}

// syncSources names where a prefix came from: " (client07)".
func syncSources(l *dataplane.ResolvedList, p netip.Prefix) string {
	if l == nil || len(l.Sources[p]) == 0 {
		return ""
	}
	return " (" + strings.Join(l.Sources[p], ", ") + ")"
}

// printPreview is the summary line of a change not applied yet.
func (s *syncRun) printPreview(p *syncListPlan) {
	w := s.a.out
	switch {
	case s.d == nil:
		fmt.Fprintf(w, "%s: %s\n", p.flag, entries(len(p.effective)))
	case !p.swap:
		fmt.Fprintf(w, "%s: no change in the dataplane (%s, generation %d)\n", p.flag, entries(len(p.effective)), p.liveInfo.Generation)
	case s.f.dryRun:
		fmt.Fprintf(w, "%s: %s, generation %d (dry run: nothing applied)\n", p.flag, entries(len(p.effective)), p.liveInfo.Generation)
	default:
		fmt.Fprintf(w, "%s: %s, generation %d -> %d once applied\n", p.flag, entries(len(p.effective)), p.liveInfo.Generation, p.liveInfo.Generation+1)
	}
}

// printSummary is the summary line of an applied change.
func (s *syncRun) printSummary(p *syncListPlan) {
	w := s.a.out
	switch {
	case s.d == nil:
		fmt.Fprintf(w, "%s: %s; no dataplane pinned at %s: the daemon applies it when it starts\n", p.flag, entries(len(p.effective)), s.root)
	case p.swapped.Applied:
		fmt.Fprintf(w, "%s: %s, generation %d -> %d\n", p.flag, entries(p.swapped.After.Entries), p.swapped.Before.Generation, p.swapped.After.Generation)
	case p.fileChange:
		fmt.Fprintf(w, "%s: %s, generation %d (the live list already matched)\n", p.flag, entries(len(p.effective)), p.liveInfo.Generation)
	default:
		fmt.Fprintf(w, "%s: no change (%s, generation %d)\n", p.flag, entries(len(p.effective)), p.liveInfo.Generation)
	}
}

func (s *syncRun) printSummaries() {
	for _, p := range s.plans {
		s.printSummary(p)
	}
}

// printFileLine says what became of the configuration file.
func (s *syncRun) printFileLine() {
	var keys []string
	for _, p := range s.plans {
		if p.fileChange {
			key, _ := config.WhitelistKey(p.flag)
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

// syncHostsResolver answers from a hosts(5) file and nothing else.
type syncHostsResolver map[string][]netip.Addr

func syncLoadHosts(path string) (syncHostsResolver, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, syncPathErr(err)
	}
	h := syncHostsResolver{}
	for i, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil || len(fields) < 2 {
			return nil, fmt.Errorf("line %d: want an address and names", i+1)
		}
		for _, n := range fields[1:] {
			n = strings.ToLower(n)
			h[n] = append(h[n], a)
		}
	}
	return h, nil
}

func (h syncHostsResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range h[strings.ToLower(strings.TrimSuffix(host, "."))] {
		if network == "ip" || network == "ip4" && a.Is4() || network == "ip6" && a.Is6() {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}
