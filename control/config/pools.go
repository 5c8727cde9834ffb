package config

import (
	"fmt"
	"net/netip"
	"slices"
)

// PoolRef names one pool of one service: Service is the service's name,
// Pool DefaultPool or the name of one of its pools[].
type PoolRef struct{ Service, Pool string }

// String writes "service/pool".
func (r PoolRef) String() string { return r.Service + "/" + r.Pool }

// PoolSpec is one pool of a service, as the configuration gives it.
type PoolSpec struct {
	Ref PoolRef
	// Path is where the pool's servers are written, for messages:
	// "backends.servers", "services[2].backends" or
	// "services[2].pools[0].backends".
	Path string
	// Shared marks the top-level backends.servers, which every tls and
	// http service without backends of its own uses.
	Shared bool
	// Servers are the pool's backends in the file's order; the slice is
	// the Config's own.
	Servers []BackendServer
}

// ServicePools returns services[i]'s pools: first DefaultPool (its own
// backends, or the top-level backends.servers for a tls or http service
// without any; a tcp service that has only pools[] has no DefaultPool,
// one with neither has an empty DefaultPool),
// then its pools[] in order. It returns nil when i is out of range.
// Resolved.Pools has the servers of each with their addresses, under the
// same PoolRef.
func (c *Config) ServicePools(i int) []PoolSpec {
	if i < 0 || i >= len(c.Services) {
		return nil
	}
	s := &c.Services[i]
	name := c.serviceName(i)
	base := fmt.Sprintf("services[%d]", i)
	var out []PoolSpec
	switch {
	case len(s.Backends) > 0:
		out = append(out, PoolSpec{Ref: PoolRef{name, DefaultPool}, Path: base + ".backends", Servers: s.Backends})
	case c.usesSharedPool(i):
		out = append(out, PoolSpec{Ref: PoolRef{name, DefaultPool}, Path: "backends.servers", Shared: true, Servers: c.Backends.Servers})
	case s.Discovery != nil || (s.Mode == ModeTCP || IsKernelMode(s.Mode)) && len(s.Pools) == 0:
		// Kept while it has no backend yet (one created through the
		// API before its backends): it closes every connection.
		out = append(out, PoolSpec{Ref: PoolRef{name, DefaultPool}, Path: base + ".backends"})
	}
	for j := range s.Pools {
		out = append(out, PoolSpec{
			Ref:     PoolRef{name, s.Pools[j].Name},
			Path:    fmt.Sprintf("%s.pools[%d].backends", base, j),
			Servers: s.Pools[j].Backends,
		})
	}
	return out
}

// ServiceVIPs returns the VIPs services[i] listens on: its own vips list;
// else, when it takes its address from a pool (ServiceVIPPool), nil: the
// address is IPAM's to give; else every top-level VIP. It returns nil when
// i is out of range. The slice is a copy.
func (c *Config) ServiceVIPs(i int) []netip.Addr {
	if i < 0 || i >= len(c.Services) {
		return nil
	}
	src := c.Services[i].VIPs
	if len(src) == 0 {
		if c.ServiceVIPPool(i) != "" {
			return nil
		}
		src = c.VIPs
	}
	out := make([]netip.Addr, len(src))
	for j, a := range src {
		out[j] = a.Addr
	}
	return out
}

// ServiceVIPPool returns the vip_pools entry services[i]'s addresses come
// from: its vip_pool; else, for a service without vips when the top-level
// vips are empty, the first pool with auto_assign; else "" (the service
// uses configured VIPs). A service with both vips and vip_pool listens on
// those vips, which lie in the pool and are reserved there; one with
// vip_pool alone gets an address allocated. It returns "" when i is out
// of range or no pool fits (Validate reports that).
func (c *Config) ServiceVIPPool(i int) string {
	if i < 0 || i >= len(c.Services) {
		return ""
	}
	s := &c.Services[i]
	if s.VIPPool != "" {
		return s.VIPPool
	}
	if len(s.VIPs) > 0 || len(c.VIPs) > 0 {
		return ""
	}
	if j := slices.IndexFunc(c.VIPPools, func(p VIPPool) bool { return p.AutoAssign == nil || *p.AutoAssign }); j >= 0 {
		return c.VIPPools[j].Name
	}
	return ""
}

// ServicePorts returns the first and last port of services[i]: its port
// twice, or its range. It returns zeros when i is out of range.
func (c *Config) ServicePorts(i int) (from, to uint16) {
	if i < 0 || i >= len(c.Services) {
		return 0, 0
	}
	s := &c.Services[i]
	if s.Port != 0 || s.Ports.IsZero() {
		return s.Port, s.Port
	}
	return s.Ports.From, s.Ports.To
}
