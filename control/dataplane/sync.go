package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/addrlist"
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
	entries, err := addrlist.Parse(list)
	if err != nil {
		return nil, nil, err
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultResolveTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	prefixes, unresolved, err := addrlist.Resolve(ctx, opts.Resolver, entries, opts.AllowUnresolved)
	if err != nil {
		if len(unresolved) > 0 {
			return nil, nil, resolveError{err}
		}
		return nil, nil, err
	}
	var out []UnresolvedName
	for _, u := range unresolved {
		out = append(out, UnresolvedName{Host: u.Host, Error: u.Err.Error()})
	}
	return prefixes, out, nil
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
