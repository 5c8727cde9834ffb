package plan

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/ipam"
)

// IPAMFile is where the allocations are kept, in node.state_dir.
const IPAMFile = "ipam.json"

// IPAM is what a plan does with vip_pools: the addresses of the services
// without VIPs, and what changed since the allocations it started from.
type IPAM struct {
	Pools       []ipam.Pool
	Reserved    []netip.Addr
	Allocations ipam.Allocations
	Changes     []ipam.Change
}

// Usage is each pool's used and free count.
func (m IPAM) Usage() []ipam.PoolUsage {
	return ipam.Usage(m.Pools, m.Reserved, m.Allocations)
}

// Changed reports whether the allocations differ from those the plan
// started from, and must be saved before the plan is applied.
func (m IPAM) Changed() bool {
	for _, c := range m.Changes {
		if c.Kind != ipam.Kept {
			return true
		}
	}
	return false
}

// IPAMPath is the allocations file of cfg.
func IPAMPath(cfg *config.Config) string {
	return filepath.Join(cfg.Node.StateDir, IPAMFile)
}

// assignVIPs gives every service that takes its address from a pool one
// (ipam.Assign, from prev) and returns cfg with those addresses written
// in, as if configured: the service's vips, and the top-level vips, so
// that the BGP routes, the keepalived instances and the addresses on
// node.vip_interface follow them as they do configured VIPs. The services
// that listened on every top-level VIP get those written in explicitly,
// so the new addresses do not reach them. cfg itself is not changed.
func assignVIPs(cfg *config.Config, prev ipam.Allocations) (*config.Config, IPAM, error) {
	var m IPAM
	if len(cfg.VIPPools) == 0 {
		return cfg, m, nil
	}
	for _, vp := range cfg.VIPPools {
		pl, err := ipam.ParsePool(vp.Name, vp.Addresses, vp.AvoidBuggyIPs)
		if err != nil {
			return nil, m, err
		}
		m.Pools = append(m.Pools, pl)
	}
	for _, a := range cfg.VIPs {
		m.Reserved = append(m.Reserved, a.Addr.Unmap())
	}
	var want []ipam.Request
	for i := range cfg.Services {
		for _, a := range cfg.Services[i].VIPs {
			m.Reserved = append(m.Reserved, a.Addr.Unmap())
		}
		if len(cfg.Services[i].VIPs) == 0 {
			if pool := cfg.ServiceVIPPool(i); pool != "" {
				want = append(want, ipam.Request{Service: cfg.Services[i].Name, Pool: pool, Index: i})
			}
		}
	}
	slices.SortFunc(m.Reserved, netip.Addr.Compare)
	m.Reserved = slices.Compact(m.Reserved)
	allocs, changes, err := ipam.Assign(m.Pools, m.Reserved, prev, want)
	if err != nil {
		return nil, m, err
	}
	m.Allocations, m.Changes = allocs, changes
	if len(want) == 0 {
		return cfg, m, nil
	}
	eff := *cfg
	eff.Services = slices.Clone(cfg.Services)
	eff.VIPs = slices.Clone(cfg.VIPs)
	for i := range eff.Services {
		s := &eff.Services[i]
		if len(s.VIPs) == 0 && cfg.ServiceVIPPool(i) == "" {
			s.VIPs = slices.Clone(cfg.VIPs)
		}
	}
	for _, r := range want {
		a, ok := allocs[r.Service]
		if !ok {
			return nil, m, fmt.Errorf("services[%d]: no address allocated", r.Index)
		}
		eff.Services[r.Index].VIPs = []config.Addr{{Addr: a}}
		eff.VIPs = append(eff.VIPs, config.Addr{Addr: a})
	}
	return &eff, m, nil
}
