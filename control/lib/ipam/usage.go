package ipam

import "net/netip"

// PoolUsage is how much of a pool is handed out.
type PoolUsage struct {
	Name string `json:"name"`
	// Size is the number of addresses the pool hands out, saturating at
	// math.MaxUint64 for IPv6 pools of a /64 or more (Pool.Size); Free
	// is then Size less the rest, as good as endless.
	Size uint64 `json:"size"`
	// Used counts the services' addresses in the pool.
	Used uint64 `json:"used"`
	// Reserved counts the configured VIPs in the pool that no service
	// holds: they are not handed out either.
	Reserved uint64 `json:"reserved"`
	Free     uint64 `json:"free"`
}

// Usage reports each pool's usage, in pools' order, from the
// allocations and the configured VIPs (Assign's reserved).
func Usage(pools []Pool, reserved []netip.Addr, allocs Allocations) []PoolUsage {
	held := make(map[netip.Addr]bool, len(allocs))
	for _, a := range allocs {
		held[a] = true
	}
	out := make([]PoolUsage, len(pools))
	for i, p := range pools {
		u := PoolUsage{Name: p.Name, Size: p.Size()}
		for a := range held {
			if p.Contains(a) {
				u.Used++
			}
		}
		for _, a := range dedup(reserved) {
			if p.Contains(a) && !held[a] {
				u.Reserved++
			}
		}
		if n := u.Used + u.Reserved; n < u.Size {
			u.Free = u.Size - n
		}
		out[i] = u
	}
	return out
}
