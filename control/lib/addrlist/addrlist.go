// Package addrlist turns an operator-supplied client whitelist into the
// address prefixes the data plane matches on.
//
// It works in two explicit steps. Parse expands the hostlist (package
// hostlist) and classifies every item as either a literal prefix or a host
// name, validating each without any I/O. Resolve then looks the names up.
// The split exists because the two steps fail for different reasons and at
// different times: a malformed list is an operator typo that should be
// rejected immediately and precisely, while a name that does not resolve may
// be a transient DNS problem that the caller can choose to tolerate
// (allowUnresolved). Keeping parsing free of I/O also lets configuration be
// validated offline.
//
// Normalize and Diff exist so that callers can compare one whitelist
// generation with the next and update the kernel maps with the minimal set
// of changes. Hosts is a Resolver that answers from a hosts(5) file alone.
package addrlist

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/ober-ingress/ober/control/lib/hostlist"
)

// Resolver looks up the addresses of a host. *net.Resolver satisfies it;
// tests substitute a fake.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Entry is one expanded item: either a literal prefix or a host name to
// resolve. If both are set, Prefix takes precedence.
type Entry struct {
	Text   string       // the item as it appeared after expansion
	Prefix netip.Prefix // valid when the item is a literal address or CIDR
	Host   string       // set when the item is a host name
}

// Unresolved records a host name that produced no addresses, and why.
type Unresolved struct {
	Host string
	Err  error
}

// ErrNoAddresses is the Unresolved.Err of a name whose lookup succeeded but
// returned no usable address.
var ErrNoAddresses = errors.New("no addresses")

// maxConcurrentLookups bounds parallel DNS queries: enough that a 100-host
// list resolves in a few round trips, few enough not to flood a resolver.
const maxConcurrentLookups = 16

// Parse expands the hostlist and classifies each item.
//
// Literal IPs become /32 or /128 prefixes and IPv4-mapped IPv6 is unmapped
// to IPv4, because the data plane sees IPv4 clients as IPv4 and a mapped
// entry would silently never match. CIDRs with host bits set are rejected
// rather than masked, since "10.0.0.5/24" usually means the operator meant
// either a single host or a different network. Zones are rejected because
// packets carry no zone. Names must follow RFC 1123.
func Parse(list string) ([]Entry, error) {
	items, err := hostlist.Expand(list)
	if err != nil {
		// A *hostlist.SyntaxError already names the list and the offset;
		// more wrapping would only bury that.
		return nil, err
	}
	entries := make([]Entry, 0, len(items))
	for _, it := range items {
		e, err := parseEntry(it)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func parseEntry(s string) (Entry, error) {
	if i := strings.IndexByte(s, '%'); i >= 0 && strings.Contains(s, ":") {
		zone, _, _ := strings.Cut(s[i+1:], "/")
		return Entry{}, fmt.Errorf("%q: IPv6 zone %q is not allowed (packets carry no zone, so it could never match)", s, zone)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Entry{}, fmt.Errorf("%q: invalid CIDR: %w", s, err)
		}
		if m := p.Masked(); m != p {
			return Entry{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, m)
		}
		return Entry{Text: s, Prefix: unmapPrefix(p)}, nil
	}
	a, err := ParseHost(s)
	if err != nil {
		return Entry{}, fmt.Errorf("%q: %w", s, err)
	}
	if a.IsValid() {
		a = a.Unmap()
		return Entry{Text: s, Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	return Entry{Text: s, Host: s}, nil
}

// ParseHost checks the syntax of a host written as an IP address or a
// name, without I/O. It returns the address, or the zero Addr for a valid
// name. Text that looks like an address but is not one is reported as a
// broken address: RFC 1123 alone would accept "10.0.0.256" as a name.
func ParseHost(s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	} else if strings.Contains(s, ":") || lastLabelNumeric(s) {
		return netip.Addr{}, fmt.Errorf("invalid IP address: %w", err)
	}
	if err := CheckHostname(s); err != nil {
		return netip.Addr{}, fmt.Errorf("invalid host name: %w", err)
	}
	return netip.Addr{}, nil
}

// unmapPrefix converts ::ffff:a.b.c.d/n (n >= 96) to a.b.c.d/(n-96). A masked
// prefix shorter than /96 cannot have a mapped address, but the guard keeps
// such a prefix, which would cover non-mapped IPv6 space, from being mangled.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if !p.Addr().Is4In6() || p.Bits() < 96 {
		return p
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
}

// lastLabelNumeric reports whether the final dot-separated label is all
// digits; no top-level domain is, so such text is meant as an address.
func lastLabelNumeric(s string) bool {
	s = strings.TrimSuffix(s, ".")
	label := s[strings.LastIndexByte(s, '.')+1:]
	if label == "" {
		return false
	}
	for i := 0; i < len(label); i++ {
		if label[i] < '0' || label[i] > '9' {
			return false
		}
	}
	return true
}

// CheckHostname applies RFC 1123 host name syntax. One trailing dot (a fully
// qualified name) is accepted.
func CheckHostname(s string) error {
	name := strings.TrimSuffix(s, ".")
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 253 {
		return fmt.Errorf("name is %d characters long (max 253)", len(name))
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return errors.New("empty label")
		case len(label) > 63:
			return fmt.Errorf("label %q is %d characters long (max 63)", label, len(label))
		case label[0] == '-':
			return fmt.Errorf("label %q starts with a hyphen", label)
		case label[len(label)-1] == '-':
			return fmt.Errorf("label %q ends with a hyphen", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("label %q contains invalid character %q", label, rune(c))
			}
		}
	}
	return nil
}

// Resolve turns entries into prefixes: literals as they are, names through
// r (network "ip", so both A and AAAA), each address as a /32 or /128.
//
// Output follows entry order, and each name's addresses are sorted, so the
// result does not depend on lookup timing or DNS answer rotation. A name
// that appears more than once is looked up once and contributes once.
//
// Names that fail or return nothing are reported in the Unresolved result.
// If any failed and allowUnresolved is false, the error lists all of them.
// If ctx ends before the lookups finish, Resolve returns ctx's error even
// when allowUnresolved is true: a cancelled run must not be mistaken for a
// whitelist from which every name legitimately vanished. Resolve returns
// promptly on cancellation even if r ignores ctx; such lookups finish in the
// background. A nil r means net.DefaultResolver.
func Resolve(ctx context.Context, r Resolver, entries []Entry, allowUnresolved bool) ([]netip.Prefix, []Unresolved, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	var hosts []string
	seen := make(map[string]bool)
	for _, e := range entries {
		switch {
		case e.Prefix.IsValid():
		case e.Host != "":
			if !seen[e.Host] {
				seen[e.Host] = true
				hosts = append(hosts, e.Host)
			}
		default:
			return nil, nil, fmt.Errorf("entry %q has neither a prefix nor a host name", e.Text)
		}
	}

	results, err := lookupAll(ctx, r, hosts)
	if err != nil {
		return nil, nil, err
	}
	byHost := make(map[string]lookupResult, len(hosts))
	for i, h := range hosts {
		byHost[h] = results[i]
	}

	var (
		out        []netip.Prefix
		unresolved []Unresolved
	)
	for _, e := range entries {
		if e.Prefix.IsValid() {
			out = append(out, e.Prefix)
			continue
		}
		res, first := byHost[e.Host]
		if !first {
			continue
		}
		delete(byHost, e.Host)
		if res.err != nil {
			unresolved = append(unresolved, Unresolved{Host: e.Host, Err: res.err})
			continue
		}
		out = append(out, res.prefixes...)
	}
	if len(unresolved) > 0 && !allowUnresolved {
		return nil, unresolved, &unresolvedError{list: unresolved, total: len(hosts)}
	}
	return out, unresolved, nil
}

type lookupResult struct {
	prefixes []netip.Prefix
	err      error
}

// lookupAll resolves hosts with bounded concurrency; results[i] belongs to
// hosts[i], which is what makes the caller's output order deterministic.
func lookupAll(ctx context.Context, r Resolver, hosts []string) ([]lookupResult, error) {
	results := make([]lookupResult, len(hosts))
	if len(hosts) == 0 {
		return results, nil
	}
	// Cancelling lctx on return stops lookups we are no longer waiting for.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sem := make(chan struct{}, maxConcurrentLookups)
	var wg sync.WaitGroup
launch:
	for i, h := range hosts {
		select {
		case sem <- struct{}{}:
		case <-lctx.Done():
			break launch
		}
		wg.Go(func() {
			defer func() { <-sem }()
			addrs, err := r.LookupNetIP(lctx, "ip", h)
			results[i] = toResult(addrs, err)
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	// Checked even when done won the race: lookups cut short by
	// cancellation would otherwise masquerade as unresolved names.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("resolving %d host names: %w", len(hosts), err)
	}
	return results, nil
}

func toResult(addrs []netip.Addr, err error) lookupResult {
	if err != nil {
		return lookupResult{err: err}
	}
	var ps []netip.Prefix
	for _, a := range addrs {
		if !a.IsValid() {
			continue
		}
		// net.Resolver returns A records as IPv4-mapped IPv6, and a zone
		// cannot be expressed in a prefix.
		a = a.Unmap().WithZone("")
		ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
	}
	if len(ps) == 0 {
		return lookupResult{err: ErrNoAddresses}
	}
	slices.SortFunc(ps, comparePrefix)
	return lookupResult{prefixes: slices.Compact(ps)}
}

// unresolvedError lists every failed name so one run shows all problems.
type unresolvedError struct {
	list  []Unresolved
	total int
}

func (e *unresolvedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d host names did not resolve: ", len(e.list), e.total)
	for i, u := range e.list {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%q: %v", u.Host, u.Err)
	}
	return b.String()
}

// Unwrap exposes the per-name errors to errors.Is and errors.As.
func (e *unresolvedError) Unwrap() []error {
	errs := make([]error, len(e.list))
	for i, u := range e.list {
		errs[i] = u.Err
	}
	return errs
}

// comparePrefix orders IPv4 before IPv6, then by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	if c := cmp.Compare(a.Addr().BitLen(), b.Addr().BitLen()); c != 0 {
		return c
	}
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// Normalize sorts (IPv4 before IPv6, then by address, then by prefix
// length), removes duplicates and drops prefixes covered by another prefix
// in the list. Host bits are masked and invalid prefixes dropped so that
// two lists naming the same prefixes normalize to identical slices, which
// is what Diff relies on. The input is not modified.
func Normalize(ps []netip.Prefix) []netip.Prefix {
	sorted := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			sorted = append(sorted, p.Masked())
		}
	}
	slices.SortFunc(sorted, comparePrefix)
	// After sorting, a covering prefix precedes everything it covers, and
	// kept prefixes are disjoint, so only the last kept one can cover p.
	out := sorted[:0]
	for _, p := range sorted {
		if n := len(out); n > 0 {
			last := out[n-1]
			if last.Bits() <= p.Bits() && last.Contains(p.Addr()) {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// Diff returns the prefixes in next but not in prev (added) and those in
// prev but not in next (removed), both in Normalize order. Inputs are
// normalized first, so the result is exactly the set of map entries to
// insert and delete when moving from prev to next.
func Diff(prev, next []netip.Prefix) (added, removed []netip.Prefix) {
	p, n := Normalize(prev), Normalize(next)
	i, j := 0, 0
	for i < len(p) || j < len(n) {
		switch {
		case i == len(p):
			added = append(added, n[j])
			j++
		case j == len(n):
			removed = append(removed, p[i])
			i++
		default:
			switch c := comparePrefix(p[i], n[j]); {
			case c < 0:
				removed = append(removed, p[i])
				i++
			case c > 0:
				added = append(added, n[j])
				j++
			default:
				i++
				j++
			}
		}
	}
	return added, removed
}
