package whitelist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/lib/hostlist"
	"github.com/ober-ingress/ober/loader"
)

// applyWait bounds Apply's wait for the lock and HAProxy's part of it.
// Apply does not stop at its caller's cancel once it has changed
// something: putting things back must not be cut short either.
const applyWait = 30 * time.Second

// Options tune a transaction.
type Options struct {
	// Resolver looks up host names; nil means net.DefaultResolver.
	Resolver addrlist.Resolver
	// Timeout bounds name resolution; 0 means DefaultResolveTimeout.
	Timeout time.Duration
	// AllowUnresolved leaves out names that do not resolve instead of
	// failing: out of the live list and out of the file (a range is
	// written again without them), since the daemon refuses such names.
	AllowUnresolved bool
	// AllowEmpty permits a list that admits nobody.
	AllowEmpty bool
	// Logger receives a line per change applied or put back; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Request is one list to set: its name (config.WhitelistRouters, ...)
// and the Slurm hostlist of names, addresses and CIDRs it is to hold.
type Request struct {
	List string
	Text string
}

// ListError is a problem with one list of a transaction: its text does
// not parse or resolve, or the list it gives would be refused. It matches
// ErrUnresolved or ErrEmpty when one of those is the cause.
type ListError struct {
	List string // the list's name
	Text string // as requested
	Err  error
}

func (e *ListError) Error() string { return fmt.Sprintf("%s %q: %v", e.List, e.Text, e.Err) }
func (e *ListError) Unwrap() error { return e.Err }

// Change is one list's part of a transaction.
type Change struct {
	List string
	ID   loader.WhitelistID
	Text string // as requested
	// Items are the entries written to the file: the request's items as
	// written, less the names left out under AllowUnresolved.
	Items []string
	// Next is the request resolved; Old is the file's list resolved, for
	// the names of removed entries (nil without one or if it does not
	// resolve).
	Next, Old *ResolvedList
	// Effective is what the dataplane gets: Next as the daemon settles
	// it (in ha.mode bgp an empty routers list means the peers).
	Effective []netip.Prefix
	// LiveInfo is the live list's generation and size; zero without a
	// dataplane.
	LiveInfo loader.WhitelistInfo
	// Added and Removed are the prefixes that enter and leave the list:
	// against the live one, or the file's without a dataplane.
	Added, Removed []netip.Prefix
	// Swap says the live list changes, FileChange that the file does.
	Swap, FileChange bool
	// Swapped is what Apply did to the live list.
	Swapped Swapped

	oldItems []string
	live     []netip.Prefix
}

// Tx is a planned transaction.
type Tx struct {
	// Changes are the requested lists' changes, in the order requested.
	Changes []*Change

	file    *File
	newData []byte // the edited file, when it changes
	d       *loader.Dataplane
	log     *slog.Logger
}

// Plan parses and resolves every request, edits the configuration in
// memory and checks that it loads and that the daemon would take each
// list, and works out each list's change against the live one. It
// changes nothing. f is the configuration file (nil: none, only the
// dataplane changes) and d the dataplane (nil: none pinned, only the
// file changes).
//
// An error about one list is a *ListError. Every list is parsed before
// any name is looked up, so that a typo is reported at once and not
// after a slow resolver; then all are resolved at once, within one
// Options.Timeout.
func Plan(ctx context.Context, f *File, d *loader.Dataplane, reqs []Request, opts Options) (*Tx, error) {
	t := &Tx{file: f, d: d, log: opts.Logger}
	if t.log == nil {
		t.log = slog.Default()
	}
	for _, r := range reqs {
		id, err := loader.ParseWhitelistID(r.List)
		if err != nil {
			return nil, err
		}
		c := &Change{List: r.List, ID: id, Text: r.Text}
		if f != nil {
			c.oldItems = f.Config.WhitelistEntries(r.List)
		}
		t.Changes = append(t.Changes, c)
	}
	if err := t.resolve(ctx, opts); err != nil {
		return nil, err
	}

	edits := map[string][]string{}
	for _, c := range t.Changes {
		c.FileChange = f != nil && !config.EqualEntries(c.oldItems, c.Items)
		if c.FileChange {
			edits[c.List] = c.Items
		}
	}
	var settle *config.Config
	if f != nil {
		settle = f.Config
	}
	if len(edits) > 0 {
		data, err := config.EditWhitelists(f.data, edits)
		if err != nil {
			return nil, fmt.Errorf("edit %s: %w", f.Path, err)
		}
		if settle, err = config.Parse(data); err != nil {
			return nil, fmt.Errorf("with these lists the configuration would not load (nothing changed): config %s: %s", f.Path, config.OneLine(err))
		}
		t.newData = data
	}

	for _, c := range t.Changes {
		c.Effective = addrlist.Normalize(c.Next.Prefixes)
		if settle != nil {
			var err error
			if c.Effective, err = settle.SettleWhitelist(c.List, c.Next.Prefixes); err != nil {
				return nil, &ListError{c.List, c.Text, fmt.Errorf("the daemon would refuse it: %s", config.OneLine(err))}
			}
		}
		if len(c.Effective) == 0 && !opts.AllowEmpty {
			err := ErrEmpty
			if len(c.Next.Unresolved) > 0 {
				err = fmt.Errorf("%w: none of its %d names resolved", ErrEmpty, len(c.Next.Unresolved))
			}
			return nil, &ListError{c.List, c.Text, err}
		}
		var before []netip.Prefix
		if d != nil {
			live, info, err := d.Whitelist(c.ID)
			if err != nil {
				return nil, err
			}
			c.live, c.LiveInfo = live, info
			before = live
			// A list never set (generation 0) is swapped even when empty,
			// so that status shows it as set.
			c.Swap = info.Generation == 0 || !slices.Equal(addrlist.Normalize(live), c.Effective)
		} else if c.Old != nil && f != nil {
			before, _ = f.Config.SettleWhitelist(c.List, c.Old.Prefixes)
		}
		c.Added, c.Removed = addrlist.Diff(before, c.Effective)
	}
	return t, nil
}

// resolve resolves every request and the file's version of it.
func (t *Tx) resolve(ctx context.Context, opts Options) error {
	ro := resolveOptions{resolver: opts.Resolver, timeout: opts.Timeout, allowUnresolved: opts.AllowUnresolved}
	oldRO := ro
	oldRO.allowUnresolved = true
	for _, c := range t.Changes {
		if _, err := addrlist.Parse(c.Text); err != nil && strings.TrimSpace(c.Text) != "" {
			return &ListError{c.List, c.Text, err}
		}
	}
	errs := make([]error, len(t.Changes))
	var wg sync.WaitGroup
	for i, c := range t.Changes {
		wg.Go(func() {
			c.Next, errs[i] = resolveList(ctx, c.Text, ro)
		})
		if len(c.oldItems) > 0 {
			wg.Go(func() {
				// Best effort: only used to name what removed entries were.
				c.Old, _ = resolveList(ctx, strings.Join(c.oldItems, ","), oldRO)
			})
		}
	}
	wg.Wait()
	for i, c := range t.Changes {
		if err := errs[i]; err != nil {
			return &ListError{c.List, c.Text, err}
		}
		items, err := keptItems(c.Text, c.Next.Unresolved)
		if err != nil {
			return &ListError{c.List, c.Text, err}
		}
		c.Items = items
	}
	return nil
}

// Changed reports whether applying would change anything.
func (t *Tx) Changed() bool {
	for _, c := range t.Changes {
		if c.Swap || c.FileChange {
			return true
		}
	}
	return false
}

// Applied reports whether Apply swapped a live list.
func (t *Tx) Applied() bool {
	for _, c := range t.Changes {
		if c.Swapped.Applied {
			return true
		}
	}
	return false
}

// Apply applies the transaction, all or nothing. It writes the new file
// aside first, so that the rename is the only step after the swaps that
// can fail; then, holding Lock, it swaps HAProxy's copies, then the
// tries, each only if it is still the list Plan read (else the error
// matches ErrChanged), then renames the file into place. When a step
// fails, what the steps before it changed is put back, and the error
// says whether that worked. ctx bounds the wait for the lock only.
func (t *Tx) Apply(ctx context.Context) error {
	var tmp string
	if t.newData != nil {
		var err error
		if tmp, err = atomicfile.WriteTemp(t.file.real, t.newData, t.file.mode); err != nil {
			return fmt.Errorf("write %s: %w; nothing changed", t.file.Path, cause(err))
		}
		defer os.Remove(tmp) // a no-op once renamed
	}

	lctx, cancel := context.WithTimeout(ctx, applyWait)
	defer cancel()
	unlock, err := t.lock(lctx)
	if err != nil {
		return fmt.Errorf("%w; nothing changed", err)
	}
	defer unlock()

	undo := func() error { return nil }
	if t.d != nil {
		var swaps []trieSwap
		var lists []haproxyList
		for _, c := range t.Changes {
			if c.Swap {
				swaps = append(swaps, trieSwap{id: c.ID, prefixes: c.Effective, expect: c.live})
				lists = append(lists, haproxyList{name: c.ID.String(), prefixes: c.Effective, prev: c.live})
			}
		}
		// HAProxy's copy first: a client added is let in by HAProxy
		// before XDP passes it, and one removed is stopped by XDP as
		// HAProxy already refuses it. Neither check ever admits a client
		// the other refuses on the way in.
		hctx, hcancel := context.WithTimeout(context.Background(), applyWait)
		defer hcancel()
		hx, err := swapHAProxy(hctx, t.file.runtimeDir(), lists, t.log)
		if err != nil {
			return fmt.Errorf("%w; nothing changed", err)
		}
		done, u, err := swapTries(t.d, swaps, t.log)
		if err != nil {
			if herr := hx.undo(context.Background()); herr != nil {
				return fmt.Errorf("%w; putting HAProxy's lists back failed: %v", err, herr)
			}
			return fmt.Errorf("%w; nothing changed", err)
		}
		undo = func() error {
			return errors.Join(u(), hx.undo(context.Background()))
		}
		if err := hx.commit(); err != nil {
			if uerr := undo(); uerr != nil {
				return fmt.Errorf("%v; putting the live lists back failed too: %v", err, uerr)
			}
			return fmt.Errorf("%v; the live lists were put back, nothing changed", err)
		}
		for _, sw := range done {
			for _, c := range t.Changes {
				if c.ID == sw.ID {
					c.Swapped = sw
				}
			}
		}
	}
	if tmp != "" {
		if err := atomicfile.Commit(tmp, t.file.real); err != nil {
			if uerr := undo(); uerr != nil {
				return fmt.Errorf("replace %s: %v; putting the live lists back failed too: %v", t.file.Path, cause(err), uerr)
			}
			return fmt.Errorf("replace %s: %v; the live lists were put back, nothing changed", t.file.Path, cause(err))
		}
	}
	return nil
}

// lock takes Lock in the runtime directory. Without that directory no
// daemon of this configuration has started, so there is no reload to
// keep out.
func (t *Tx) lock(ctx context.Context) (func(), error) {
	unlock, err := Lock(ctx, t.file.runtimeDir())
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, nil
	}
	return unlock, err
}

// cause is the error atomicfile wrapped: its message names the file
// written, with links followed, where ours names the one given.
func cause(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// keptItems cuts list into its top-level items as written, leaving out
// the names in unresolved: a plain name goes, a range is written again
// without them ("client[01-03]" without client02 is "client[01,03]").
func keptItems(list string, unresolved []UnresolvedName) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	items, err := hostlist.Split(list)
	if err != nil || len(unresolved) == 0 {
		return items, err
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
			split, err := hostlist.Split(hostlist.Collapse(kept))
			if err != nil {
				return nil, err
			}
			out = append(out, split...)
		}
	}
	return out, nil
}
