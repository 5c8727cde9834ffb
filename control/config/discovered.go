package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// DiscoveryPool is a pool whose backends a source finds.
type DiscoveryPool struct {
	// Key names the pool: "backends" (the top-level pool),
	// "services[s3]" (a service's own) or "services[s3].pools[eu]".
	Key       string
	Discovery *Discovery
}

// DiscoveryPools lists the pools with a discovery that finds backends
// (kind static finds none), in the file's order.
func (c *Config) DiscoveryPools() []DiscoveryPool {
	var out []DiscoveryPool
	if discovers(c.Backends.Discovery) {
		out = append(out, DiscoveryPool{Key: "backends", Discovery: c.Backends.Discovery})
	}
	for i := range c.Services {
		s := &c.Services[i]
		name := c.serviceName(i)
		if discovers(s.Discovery) {
			out = append(out, DiscoveryPool{Key: "services[" + name + "]", Discovery: s.Discovery})
		}
		for j := range s.Pools {
			if discovers(s.Pools[j].Discovery) {
				out = append(out, DiscoveryPool{Key: fmt.Sprintf("services[%s].pools[%s]", name, s.Pools[j].Name), Discovery: s.Pools[j].Discovery})
			}
		}
	}
	return out
}

// Found is what discovery has for one pool.
type Found struct {
	// Backends are those the source names now.
	Backends []discovery.Backend
	// Draining are those it no longer names whose connections may still
	// run: they stay, drained, until the runner lets them go.
	Draining []discovery.Backend
}

// WithDiscovered returns a copy of c in which each discovering pool
// holds the backends found for its key as servers: named after their
// address, with the source's weight and priority and the pool's
// overrides on top. A pool missing from found has no backends (nothing
// fetched yet). c is not changed.
func (c *Config) WithDiscovered(found map[string]Found) *Config {
	out := *c
	if discovers(c.Backends.Discovery) {
		out.Backends.Servers = discoveredServers(c.Backends.Discovery, found["backends"], true)
	}
	out.Services = slices.Clone(c.Services)
	for i := range out.Services {
		s := &out.Services[i]
		name := c.serviceName(i)
		if discovers(s.Discovery) {
			s.Backends = discoveredServers(s.Discovery, found["services["+name+"]"], isL7(s.Mode))
		}
		if len(s.Pools) == 0 {
			continue
		}
		s.Pools = slices.Clone(s.Pools)
		for j := range s.Pools {
			p := &s.Pools[j]
			if discovers(p.Discovery) {
				p.Backends = discoveredServers(p.Discovery, found[fmt.Sprintf("services[%s].pools[%s]", name, p.Name)], isL7(s.Mode))
			}
		}
	}
	return &out
}

// discoveredServers turns one pool's found backends into servers.
func discoveredServers(d *Discovery, f Found, l7 bool) []BackendServer {
	over := map[string]DiscoveryOverride{}
	for _, o := range d.Overrides {
		over[o.Address] = o
	}
	out := make([]BackendServer, 0, len(f.Backends)+len(f.Draining))
	add := func(b discovery.Backend, draining bool) {
		s := BackendServer{Name: DiscoveredName(b), Address: b.ID(), Priority: b.Priority}
		if b.Weight >= 0 {
			w := b.Weight
			s.Weight = &w
		}
		if o, ok := over[b.ID()]; ok {
			s.State = o.State
			if o.Weight != nil {
				w := *o.Weight
				s.Weight = &w
			}
		}
		if draining && s.State != StateDisabled {
			s.State = StateDrain
		}
		out = append(out, s)
	}
	seen := map[string]bool{}
	for _, b := range f.Backends {
		seen[b.ID()] = true
		add(b, false)
	}
	for _, b := range f.Draining {
		if !seen[b.ID()] {
			add(b, true)
		}
	}
	applyServerDefaults(out, l7)
	return out
}

// DiscoveredName is the server name of a discovered backend: its host
// (an IPv6 address's colons as dots, which no host name has in a row)
// and port, such as 10.1.0.1_7480 or fd00..1_53, unique per address.
func DiscoveredName(b discovery.Backend) string {
	return strings.ReplaceAll(b.Host, ":", ".") + "_" + strconv.Itoa(int(b.Port))
}

// DiscoveredAddress is the host:port a DiscoveredName stands for; false
// when name is not one.
func DiscoveredAddress(name string) (string, bool) {
	i := strings.LastIndexByte(name, '_')
	if i <= 0 {
		return "", false
	}
	port, err := strconv.ParseUint(name[i+1:], 10, 16)
	if err != nil || port == 0 {
		return "", false
	}
	host := name[:i]
	if a, err := netip.ParseAddr(strings.ReplaceAll(host, ".", ":")); err == nil && a.Is6() && strings.Contains(host, "..") || err == nil && a.Is6() && strings.Count(host, ".") == 7 {
		host = a.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port))), true
}
