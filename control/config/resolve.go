package config

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/ober-ingress/ober/control/lib/addrlist"
)

// Resolved holds the addresses behind the names of a configuration.
type Resolved struct {
	// Backends are c.Backends.Servers in the same order, each with an
	// address.
	Backends []ResolvedServer
	// Whitelists maps WhitelistFrontendHTTP, WhitelistRouters and
	// WhitelistBackendHTTP to their prefixes, normalized with
	// addrlist.Normalize. All three keys are present; an empty list
	// admits nobody.
	Whitelists map[string][]netip.Prefix
}

// ResolvedServer is a backend server and the address ober connects to.
type ResolvedServer struct {
	BackendServer
	// Addr is the address as written, or else the first address the
	// name resolves to, IPv4 before IPv6 and in ascending order, so that
	// DNS answer rotation does not change the result.
	Addr netip.AddrPort
}

// maxLookups bounds parallel backend name lookups.
const maxLookups = 16

// Resolve looks up the backend host names and the names in the whitelists,
// all at once. A nil r means net.DefaultResolver; a ctx without deadline
// gets DefaultResolveTimeout.
//
// Every name that does not resolve is a *FieldError, such as
// `backends.servers[1].address: "rgw9.invalid:7480": does not resolve:
// lookup rgw9.invalid: no such host`; all of them are joined. If ctx ends
// first the error wraps ctx's error instead.
func (c *Config) Resolve(ctx context.Context, r addrlist.Resolver) (*Resolved, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultResolveTimeout)
		defer cancel()
	}

	lists := c.whitelistLists()
	var (
		wg       sync.WaitGroup
		backends []ResolvedServer
		backErr  problems
		wlOut    = make([][]netip.Prefix, len(lists))
		wlErr    = make([]problems, len(lists))
		ctxErrs  = make([]error, len(lists)+1)
	)
	wg.Go(func() {
		backends, ctxErrs[0] = c.resolveBackends(ctx, r, &backErr)
	})
	for i, l := range lists {
		wg.Go(func() {
			wlOut[i], ctxErrs[i+1] = resolveWhitelist(ctx, r, l.key, l.entries, &wlErr[i])
		})
	}
	wg.Wait()
	for _, err := range ctxErrs {
		if err != nil {
			return nil, err
		}
	}

	var all problems
	all.errs = append(all.errs, backErr.errs...)
	for _, p := range wlErr {
		all.errs = append(all.errs, p.errs...)
	}
	if err := all.err(); err != nil {
		return nil, err
	}
	res := &Resolved{Backends: backends, Whitelists: make(map[string][]netip.Prefix, len(lists))}
	for i, l := range lists {
		res.Whitelists[l.name] = addrlist.Normalize(wlOut[i])
	}
	if err := c.routersWhitelist(res); err != nil {
		return nil, err
	}
	return res, nil
}

// resolveBackends gives every server an address. Problems with single
// servers go to p; the error is for ctx ending.
func (c *Config) resolveBackends(ctx context.Context, r addrlist.Resolver, p *problems) ([]ResolvedServer, error) {
	servers := c.Backends.Servers
	out := make([]ResolvedServer, len(servers))
	errs := make([]error, len(servers))
	sem := make(chan struct{}, maxLookups)
	var wg sync.WaitGroup
	for i, s := range servers {
		out[i].BackendServer = s
		host, port, msg := splitHostPort(s.Address)
		if msg == "" {
			msg = addressProblem(s.Address)
		}
		if msg != "" {
			errs[i] = fmt.Errorf("%s", msg)
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil {
			out[i].Addr = netip.AddrPortFrom(a.Unmap(), port)
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			addrs, err := r.LookupNetIP(ctx, "ip", host)
			a, ok := pickAddr(addrs)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("does not resolve: %w", err)
			case !ok:
				errs[i] = fmt.Errorf("does not resolve: %w", addrlist.ErrNoAddresses)
			default:
				out[i].Addr = netip.AddrPortFrom(a, port)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("resolving backend host names: %w", err)
	}
	for i, err := range errs {
		if err != nil {
			p.add(fmt.Sprintf("backends.servers[%d].address", i), quote(servers[i].Address), "%v", err)
		}
	}
	return out, nil
}

// pickAddr returns the smallest valid address, IPv4 before IPv6.
func pickAddr(addrs []netip.Addr) (netip.Addr, bool) {
	var valid []netip.Addr
	for _, a := range addrs {
		if a.IsValid() {
			valid = append(valid, a.Unmap().WithZone(""))
		}
	}
	if len(valid) == 0 {
		return netip.Addr{}, false
	}
	return slices.MinFunc(valid, func(a, b netip.Addr) int {
		if c := cmp.Compare(a.BitLen(), b.BitLen()); c != 0 {
			return c
		}
		return a.Compare(b)
	}), true
}

// resolveWhitelist parses and resolves one list. Problems with single
// entries go to p; the error is for ctx ending.
func resolveWhitelist(ctx context.Context, r addrlist.Resolver, key string, list []string, p *problems) ([]netip.Prefix, error) {
	var all []addrlist.Entry
	from := make(map[string]int) // host name -> index of the first entry naming it
	for i, e := range list {
		entries, err := parseWhitelistEntry(e)
		if err != nil {
			p.add(fmt.Sprintf("%s[%d]", key, i), quote(e), "%v", err)
			continue
		}
		for _, en := range entries {
			if _, ok := from[en.Host]; en.Host != "" && !ok {
				from[en.Host] = i
			}
		}
		all = append(all, entries...)
	}
	prefixes, unresolved, err := addrlist.Resolve(ctx, r, all, true)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", key, err)
	}
	for _, u := range unresolved {
		i := from[u.Host]
		if list[i] == u.Host {
			p.add(fmt.Sprintf("%s[%d]", key, i), quote(list[i]), "does not resolve: %v", u.Err)
		} else {
			p.add(fmt.Sprintf("%s[%d]", key, i), quote(list[i]), "%q does not resolve: %v", u.Host, u.Err)
		}
	}
	return prefixes, nil
}
