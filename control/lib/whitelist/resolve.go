package whitelist

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/lib/addrlist"
)

// DefaultResolveTimeout bounds name resolution in one transaction: long
// enough for a slow resolver and a few retries, short enough that a dead
// one fails the command instead of hanging it.
const DefaultResolveTimeout = 10 * time.Second

// ErrEmpty matches a list that would hold no prefix while
// Options.AllowEmpty is not set. An empty whitelist admits nobody, so it
// is only ever applied on purpose.
var ErrEmpty = errors.New("the new list is empty and would admit nobody")

// ErrUnresolved matches a failure caused by host names that did not
// resolve while Options.AllowUnresolved was off.
var ErrUnresolved = errors.New("host names did not resolve")

// UnresolvedName is a host name that was left out of the list.
type UnresolvedName struct {
	Host  string `json:"host"`
	Error string `json:"error"`
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

// resolveOptions are the options of one resolution.
type resolveOptions struct {
	resolver        addrlist.Resolver
	timeout         time.Duration
	allowUnresolved bool
}

// resolveList parses list, a Slurm hostlist of names, addresses and
// CIDRs, and resolves its names within o.timeout. A name that does not
// resolve fails it (an error matching ErrUnresolved that names every such
// name) unless o.allowUnresolved; running out of time always fails it.
// An empty or blank list is an empty ResolvedList.
func resolveList(ctx context.Context, list string, o resolveOptions) (*ResolvedList, error) {
	out := &ResolvedList{Sources: map[netip.Prefix][]string{}}
	if strings.TrimSpace(list) == "" {
		return out, nil
	}
	entries, err := addrlist.Parse(list)
	if err != nil {
		return nil, err
	}
	timeout := o.timeout
	if timeout <= 0 {
		timeout = DefaultResolveTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := &recorder{r: o.resolver, answers: map[string][]netip.Addr{}}
	if r.r == nil {
		r.r = net.DefaultResolver
	}
	prefixes, unresolved, err := addrlist.Resolve(ctx, r, entries, o.allowUnresolved)
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

// resolveError marks a failure caused by names that did not resolve, so
// that callers can suggest AllowUnresolved; its text is addrlist's, which
// already names every failed host.
type resolveError struct{ err error }

func (e resolveError) Error() string        { return e.err.Error() }
func (e resolveError) Unwrap() error        { return e.err }
func (e resolveError) Is(target error) bool { return target == ErrUnresolved }
