package config

import (
	"cmp"
	"context"
	"errors"
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
	// Pools has every pool of every service (Config.ServicePools) under
	// its PoolRef: the servers in the file's order, each with an address.
	// A service on the top-level pool has its DefaultPool here too, a
	// copy of Backends.
	Pools map[PoolRef][]ResolvedServer
	// Whitelists maps WhitelistFrontendHTTP, WhitelistRouters and
	// WhitelistBackendHTTP to their prefixes, normalized with
	// addrlist.Normalize. All three keys are present; an empty list
	// admits nobody.
	Whitelists map[string][]netip.Prefix
	// Access has, by service name, the access list of every service
	// that has one, its whitelist names expanded.
	Access map[string]ResolvedAccess
}

// ResolvedServer is a backend server and the address ober connects to.
type ResolvedServer struct {
	BackendServer
	// Addr is the address as written, or else the first address the
	// name resolves to, IPv4 before IPv6 and in ascending order, so that
	// DNS answer rotation does not change the result. Its port is 0 for
	// a server without one (a service with a port range): the client's
	// destination port is used.
	Addr netip.AddrPort
}

// ResolvedAccess is a service's access list with its prefixes: the first
// rule whose prefixes hold the client decides, else DefaultAllow.
type ResolvedAccess struct {
	DefaultAllow bool
	Rules        []ResolvedAccessRule
}

// ResolvedAccessRule is one rule of an access list.
type ResolvedAccessRule struct {
	Allow bool
	// Prefixes are the rule's address or CIDR, or its whitelist's
	// prefixes (those of Resolved.Whitelists): none for an empty
	// whitelist, which matches nobody.
	Prefixes []netip.Prefix
	// Rule is the rule as written.
	Rule string
}

// maxLookups bounds parallel backend name lookups.
const maxLookups = 16

// Resolve looks up the backend host names of every pool and the names in
// the whitelists, all at once, and expands the access lists. A nil r means
// net.DefaultResolver; a ctx without deadline gets DefaultResolveTimeout.
//
// Every name that does not resolve is a *FieldError, such as
// `services[2].backends[1].address: "rgw9.invalid:7480": does not
// resolve: lookup rgw9.invalid: no such host`; all of them are joined. If
// ctx ends first the error wraps ctx's error instead.
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
	items := c.serverItems()
	var (
		wg      sync.WaitGroup
		servers []ResolvedServer
		backErr problems
		wlOut   = make([][]netip.Prefix, len(lists))
		wlErr   = make([]problems, len(lists))
		ctxErrs = make([]error, len(lists)+1)
	)
	wg.Go(func() {
		servers, ctxErrs[0] = resolveServers(ctx, r, items, &backErr)
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
	res := &Resolved{Whitelists: make(map[string][]netip.Prefix, len(lists))}
	c.assignPools(res, items, servers)
	for i, l := range lists {
		res.Whitelists[l.name] = addrlist.Normalize(wlOut[i])
	}
	if err := c.routersWhitelist(res); err != nil {
		return nil, err
	}
	if err := c.resolveAccess(res); err != nil {
		return nil, err
	}
	return res, nil
}

// serverItem is one backend server of one pool to give an address.
type serverItem struct {
	path     string // of its address, for messages
	server   BackendServer
	hostOnly bool // a port range's server, which may have no port
	// pool is the pool it belongs to; shared marks the top-level one.
	pool   PoolRef
	shared bool
}

// serverItems lists the servers of the top-level pool, then of every
// service's own pools, in the file's order.
func (c *Config) serverItems() []serverItem {
	var items []serverItem
	for i, s := range c.Backends.Servers {
		items = append(items, serverItem{path: fmt.Sprintf("backends.servers[%d].address", i), server: s, shared: true})
	}
	for i := range c.Services {
		for _, ps := range c.ServicePools(i) {
			if ps.Shared {
				continue
			}
			for j, s := range ps.Servers {
				items = append(items, serverItem{
					path:     fmt.Sprintf("%s[%d].address", ps.Path, j),
					server:   s,
					hostOnly: !c.Services[i].Ports.IsZero(),
					pool:     ps.Ref,
				})
			}
		}
	}
	return items
}

// assignPools sorts the resolved servers (in the order of items) into
// res.Backends and res.Pools.
func (c *Config) assignPools(res *Resolved, items []serverItem, servers []ResolvedServer) {
	res.Pools = make(map[PoolRef][]ResolvedServer)
	for k, it := range items {
		if it.shared {
			res.Backends = append(res.Backends, servers[k])
		} else {
			res.Pools[it.pool] = append(res.Pools[it.pool], servers[k])
		}
	}
	if res.Backends == nil {
		res.Backends = []ResolvedServer{}
	}
	for i := range c.Services {
		for _, ps := range c.ServicePools(i) {
			if ps.Shared {
				res.Pools[ps.Ref] = slices.Clone(res.Backends)
			}
		}
	}
}

// resolveServers gives every server an address, looking each host name up
// once. Problems with single servers go to p; the error is for ctx ending.
func resolveServers(ctx context.Context, r addrlist.Resolver, items []serverItem, p *problems) ([]ResolvedServer, error) {
	out := make([]ResolvedServer, len(items))
	errs := make([]error, len(items))
	type lookup struct {
		addr netip.Addr
		err  error
	}
	hosts := make(map[string]*lookup)
	ports := make([]uint16, len(items))
	for i, it := range items {
		out[i].BackendServer = it.server
		host, port, msg := splitBackendAddr(it.server.Address, it.hostOnly)
		if msg != "" {
			errs[i] = errors.New(msg)
			continue
		}
		ports[i] = port
		if a, err := netip.ParseAddr(host); err == nil {
			out[i].Addr = netip.AddrPortFrom(a.Unmap(), port)
			continue
		}
		if hosts[host] == nil {
			hosts[host] = &lookup{}
		}
	}
	sem := make(chan struct{}, maxLookups)
	var wg sync.WaitGroup
	for host, l := range hosts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			addrs, err := r.LookupNetIP(ctx, "ip", host)
			a, ok := pickAddr(addrs)
			switch {
			case err != nil:
				l.err = fmt.Errorf("does not resolve: %w", err)
			case !ok:
				l.err = fmt.Errorf("does not resolve: %w", addrlist.ErrNoAddresses)
			default:
				l.addr = a
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("resolving backend host names: %w", err)
	}
	for i, it := range items {
		if errs[i] != nil || out[i].Addr.IsValid() {
			continue
		}
		host, _, _ := splitBackendAddr(it.server.Address, it.hostOnly)
		if l := hosts[host]; l.err != nil {
			errs[i] = l.err
		} else {
			out[i].Addr = netip.AddrPortFrom(l.addr, ports[i])
		}
	}
	for i, err := range errs {
		if err != nil {
			p.add(items[i].path, quote(items[i].server.Address), "%v", err)
		}
	}
	return out, nil
}

// resolveAccess expands the access lists into res.Access, after
// res.Whitelists is settled.
func (c *Config) resolveAccess(res *Resolved) error {
	var p problems
	for i := range c.Services {
		a := c.Services[i].Access
		if a == nil {
			continue
		}
		ra := ResolvedAccess{DefaultAllow: a.Default != AccessDeny}
		for j, text := range a.Rules {
			rule, err := ParseAccessRule(text)
			if err != nil {
				p.add(fmt.Sprintf("services[%d].access.rules[%d]", i, j), quote(text), "%v", err)
				continue
			}
			rr := ResolvedAccessRule{Allow: rule.Allow, Rule: text}
			if rule.Whitelist != "" {
				rr.Prefixes = slices.Clone(res.Whitelists[rule.Whitelist])
			} else {
				rr.Prefixes = []netip.Prefix{rule.Prefix}
			}
			ra.Rules = append(ra.Rules, rr)
		}
		if res.Access == nil {
			res.Access = make(map[string]ResolvedAccess)
		}
		res.Access[c.serviceName(i)] = ra
	}
	return p.err()
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
