package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/loader"
)

// DefaultResolveTimeout bounds name resolution in one Sync: long enough
// for a slow resolver and a few retries, short enough that a dead one
// fails the command instead of hanging it.
const DefaultResolveTimeout = 10 * time.Second

// ErrEmpty is returned by Sync when the new whitelist would hold no
// prefix and SyncOptions.AllowEmpty is not set. An empty whitelist
// admits nobody, so it is only ever applied on purpose.
var ErrEmpty = errors.New("the new list is empty and would admit nobody")

// ErrUnresolved matches (errors.Is) a Sync error caused by host names
// that did not resolve while SyncOptions.AllowUnresolved was off.
var ErrUnresolved = errors.New("host names did not resolve")

// SyncOptions tune Sync.
type SyncOptions struct {
	// Resolver looks up host names; nil means net.DefaultResolver.
	Resolver addrlist.Resolver
	// Timeout bounds name resolution; 0 means DefaultResolveTimeout.
	Timeout time.Duration
	// AllowUnresolved drops names that do not resolve instead of failing;
	// they are reported in SyncResult.Unresolved.
	AllowUnresolved bool
	// AllowEmpty permits a sync that leaves the whitelist empty.
	AllowEmpty bool
	// DryRun computes and reports the change without applying it.
	DryRun bool
	// Logger receives a line per applied change; nil means slog.Default().
	Logger *slog.Logger
}

// UnresolvedName is a host name that was left out of the list.
type UnresolvedName struct {
	Host  string `json:"host"`
	Error string `json:"error"`
}

// SyncResult reports what one Sync found and did.
type SyncResult struct {
	// List is the whitelist's name, such as "frontend-http".
	List string `json:"list"`
	// Added and Removed are the prefixes that enter and leave the list,
	// in address order (IPv4 first).
	Added   []netip.Prefix `json:"added"`
	Removed []netip.Prefix `json:"removed"`
	// Unresolved lists the names skipped under AllowUnresolved.
	Unresolved []UnresolvedName `json:"unresolved"`
	// Entries is the number of prefixes in the list after the sync (for a
	// dry run: the number it would hold).
	Entries int `json:"entries"`
	// GenerationBefore and GenerationAfter count the list's swaps; they
	// are equal when nothing was applied.
	GenerationBefore uint64 `json:"generation_before"`
	GenerationAfter  uint64 `json:"generation_after"`
	// Applied is true when the live list was swapped.
	Applied bool `json:"applied"`
}

// Changed reports whether the sync found any difference to the live list.
func (r *SyncResult) Changed() bool { return len(r.Added)+len(r.Removed) > 0 }

// Sync makes whitelist id hold exactly the addresses list names. list is
// a Slurm hostlist whose items are host names, IP addresses or CIDR
// prefixes. Names are resolved first, outside any lock; then the new list
// is compared with the live one and swapped in atomically, with other
// writers (the daemon, another sync) held off between the read and the
// swap so the reported difference is the one applied. On any error the
// live list is untouched.
//
// A list that is already live is not swapped again, so its generation
// only moves when its contents do.
func Sync(ctx context.Context, d *loader.Dataplane, id loader.WhitelistID, list string, opts SyncOptions) (*SyncResult, error) {
	res, next, err := plan(ctx, id, list, opts)
	if err != nil {
		return nil, fmt.Errorf("sync %s: %w", id, err)
	}
	compare := func(live []netip.Prefix, info loader.WhitelistInfo) {
		res.Added, res.Removed = addrlist.Diff(live, next)
		res.GenerationBefore = info.Generation
		res.GenerationAfter = info.Generation
	}
	if opts.DryRun {
		live, info, err := d.Whitelist(id)
		if err != nil {
			return nil, fmt.Errorf("sync %s: %w", id, err)
		}
		compare(live, info)
		return res, nil
	}
	info, err := d.UpdateWhitelist(id, func(live []netip.Prefix, info loader.WhitelistInfo) ([]netip.Prefix, error) {
		compare(live, info)
		// The lists themselves are compared, not the diff: a live list that
		// differs only in form (a covered prefix, set through the API) is
		// rewritten in normal form, which changes no verdict.
		if info.Generation > 0 && slices.Equal(live, next) {
			return live, nil
		}
		return next, nil
	})
	if err != nil {
		return nil, fmt.Errorf("sync %s: %w", id, err)
	}
	res.Entries = info.Entries
	res.GenerationAfter = info.Generation
	res.Applied = info.Generation != res.GenerationBefore
	if res.Applied {
		logger(opts).Info("whitelist synced", "list", id.String(), "added", len(res.Added),
			"removed", len(res.Removed), "entries", info.Entries, "generation", info.Generation)
	}
	return res, nil
}

// plan resolves list into the new whitelist, in the loader's order.
func plan(ctx context.Context, id loader.WhitelistID, list string, opts SyncOptions) (*SyncResult, []netip.Prefix, error) {
	res := &SyncResult{List: id.String()}
	var next []netip.Prefix
	if strings.TrimSpace(list) != "" {
		prefixes, unresolved, err := resolve(ctx, list, opts)
		if err != nil {
			return nil, nil, err
		}
		next = addrlist.Normalize(prefixes)
		res.Unresolved = unresolved
	}
	if len(next) == 0 && !opts.AllowEmpty {
		if len(res.Unresolved) > 0 {
			return nil, nil, fmt.Errorf("%w: none of its %d names resolved", ErrEmpty, len(res.Unresolved))
		}
		return nil, nil, ErrEmpty
	}
	res.Entries = len(next)
	return res, next, nil
}

// resolve parses list and looks its names up within the sync's timeout.
func resolve(ctx context.Context, list string, opts SyncOptions) ([]netip.Prefix, []UnresolvedName, error) {
	l, err := ResolveList(ctx, list, opts)
	if err != nil {
		return nil, nil, err
	}
	return l.Prefixes, l.Unresolved, nil
}

// ResolvedList is a whitelist's text turned into prefixes.
type ResolvedList struct {
	// Prefixes are what the list names, in the order of its items; not
	// normalized.
	Prefixes []netip.Prefix
	// Unresolved lists the names left out under AllowUnresolved.
	Unresolved []UnresolvedName
	// Sources maps the address of each resolved name to the names that
	// gave it, so that a change can be shown with where it came from.
	Sources map[netip.Prefix][]string
}

// ResolveList parses list, a Slurm hostlist of names, addresses and
// CIDRs, and resolves its names within opts.Timeout. A name that does
// not resolve fails it (an error matching ErrUnresolved that names every
// such name) unless opts.AllowUnresolved; running out of time always
// fails it. An empty or blank list is an empty ResolvedList.
func ResolveList(ctx context.Context, list string, opts SyncOptions) (*ResolvedList, error) {
	out := &ResolvedList{Sources: map[netip.Prefix][]string{}}
	if strings.TrimSpace(list) == "" {
		return out, nil
	}
	entries, err := addrlist.Parse(list)
	if err != nil {
		return nil, err
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultResolveTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := &recorder{r: opts.Resolver, answers: map[string][]netip.Addr{}}
	if r.r == nil {
		r.r = net.DefaultResolver
	}
	prefixes, unresolved, err := addrlist.Resolve(ctx, r, entries, opts.AllowUnresolved)
	if err != nil {
		if len(unresolved) > 0 {
			return nil, resolveError{err}
		}
		return nil, err
	}
	out.Prefixes = prefixes
	for _, u := range unresolved {
		out.Unresolved = append(out.Unresolved, UnresolvedName{Host: u.Host, Error: u.Err.Error()})
	}
	failed := make(map[string]bool, len(unresolved))
	for _, u := range unresolved {
		failed[u.Host] = true
	}
	for _, e := range entries {
		if e.Host == "" || failed[e.Host] {
			continue
		}
		for _, a := range r.answer(e.Host) {
			a = a.Unmap().WithZone("")
			p := netip.PrefixFrom(a, a.BitLen())
			if !slices.Contains(out.Sources[p], e.Host) {
				out.Sources[p] = append(out.Sources[p], e.Host)
			}
		}
	}
	return out, nil
}

// recorder remembers what each name resolved to; addrlist.Resolve only
// returns the union.
type recorder struct {
	r       addrlist.Resolver
	mu      sync.Mutex
	answers map[string][]netip.Addr
}

func (r *recorder) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	addrs, err := r.r.LookupNetIP(ctx, network, host)
	if err == nil {
		r.mu.Lock()
		r.answers[host] = addrs
		r.mu.Unlock()
	}
	return addrs, err
}

func (r *recorder) answer(host string) []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []netip.Addr
	for _, a := range r.answers[host] {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// Swap is one whitelist's new contents for SwapWhitelists.
type Swap struct {
	ID loader.WhitelistID
	// Prefixes is the new list.
	Prefixes []netip.Prefix
	// Expect is the live list the change was planned and shown against;
	// when the live list is no longer that, nothing is swapped, so that
	// what was shown is what gets applied.
	Expect []netip.Prefix
}

// Swapped is what SwapWhitelists did to one list.
type Swapped struct {
	ID            loader.WhitelistID
	Before, After loader.WhitelistInfo
	// Applied is true when the list was swapped; a list equal to the
	// live one is not.
	Applied bool
	prev    []netip.Prefix
}

// ErrChanged matches a SwapWhitelists error caused by another writer
// changing a list after it was read.
var ErrChanged = errors.New("the live list changed meanwhile")

// SwapWhitelists swaps each list in turn, each in one atomic step. If a
// swap fails, the lists already swapped are put back before it returns,
// so either every list changes or none. On success it returns undo, which
// puts every swapped list back: for a caller whose next step (such as
// saving the configuration) fails.
func SwapWhitelists(d *loader.Dataplane, swaps []Swap, log *slog.Logger) ([]Swapped, func() error, error) {
	if log == nil {
		log = slog.Default()
	}
	done := make([]Swapped, 0, len(swaps))
	undo := func() error {
		var errs []error
		for i := len(done) - 1; i >= 0; i-- {
			s := done[i]
			if !s.Applied {
				continue
			}
			info, err := d.SetWhitelist(s.ID, s.prev)
			if err != nil {
				errs = append(errs, fmt.Errorf("put back %s: %w", s.ID, err))
				continue
			}
			log.Info("whitelist put back", "list", s.ID.String(), "entries", info.Entries, "generation", info.Generation)
		}
		return errors.Join(errs...)
	}
	for _, sw := range swaps {
		s := Swapped{ID: sw.ID}
		info, err := d.UpdateWhitelist(sw.ID, func(live []netip.Prefix, info loader.WhitelistInfo) ([]netip.Prefix, error) {
			s.Before, s.prev = info, live
			if !slices.Equal(addrlist.Normalize(live), addrlist.Normalize(sw.Expect)) {
				return nil, fmt.Errorf("%s: %w (another sync or a daemon reload); run sync again", sw.ID, ErrChanged)
			}
			return sw.Prefixes, nil
		})
		if err != nil {
			if uerr := undo(); uerr != nil {
				return nil, nil, fmt.Errorf("%w; and putting back the lists already swapped failed: %v", err, uerr)
			}
			return nil, nil, err
		}
		s.After = info
		s.Applied = info.Generation != s.Before.Generation
		if s.Applied {
			log.Info("whitelist swapped", "list", sw.ID.String(), "entries", info.Entries, "generation", info.Generation)
		}
		done = append(done, s)
	}
	return done, undo, nil
}

// resolveError marks a failure caused by names that did not resolve, so
// that callers can suggest AllowUnresolved; its text is addrlist's, which
// already names every failed host.
type resolveError struct{ err error }

func (e resolveError) Error() string        { return e.err.Error() }
func (e resolveError) Unwrap() error        { return e.err }
func (e resolveError) Is(target error) bool { return target == ErrUnresolved }

func logger(opts SyncOptions) *slog.Logger {
	if opts.Logger != nil {
		return opts.Logger
	}
	return slog.Default()
}
