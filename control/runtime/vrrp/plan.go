package vrrp

import (
	"fmt"
	"net/netip"
)

// State of one VRRP instance as keepalived reports it.
type State string

// The states keepalived writes to its notify FIFO. Unknown is ours: no
// report yet, or keepalived is not running.
const (
	Unknown State = ""
	Master  State = "MASTER"
	Backup  State = "BACKUP"
	Fault   State = "FAULT"
	Stopped State = "STOP"
)

// Instance is one VIP's VRRP instance on this node.
type Instance struct {
	Name     string // keepalived instance name, "ober_<VRID>"
	VIP      netip.Addr
	VRID     int          // virtual_router_id, unique per VIP, 1..255
	Priority int          // this node's priority for this VIP (1..254)
	Owner    netip.Addr   // the node that owns the VIP
	Order    []netip.Addr // owner first, then the backups in takeover order
}

// Priorities: the owner gets TopPriority, each backup PriorityStep less
// along the takeover order. The gap leaves room between nodes so that an
// operator could wedge a manual priority in without renumbering, and
// keeps every priority well clear of 255 (address owner, which keepalived
// never lets fall, so a faulty owner could not hand its VIP over).
const (
	TopPriority  = 200
	PriorityStep = 10
	// MaxNodes keeps the lowest backup's priority at 50.
	MaxNodes = 16
)

// InstanceName is the keepalived instance name of a VRID; stable across
// reloads as long as the VRID is.
func InstanceName(vrid int) string { return fmt.Sprintf("ober_%d", vrid) }

// Plan computes this node's instances from the ordered node list, the same
// on every node: VIP i is owned by nodes[i % len(nodes)], its backups follow
// in list order after the owner (wrapping), priorities descend along that
// order, and VRIDs are firstVRID+i.
func Plan(nodes []netip.Addr, self netip.Addr, vips []netip.Addr, firstVRID int) ([]Instance, error) {
	if len(nodes) < 1 {
		return nil, fmt.Errorf("ha.vrrp.nodes: empty: at least 1 node is needed")
	}
	if len(nodes) > MaxNodes {
		return nil, fmt.Errorf("ha.vrrp.nodes: %d nodes: at most %d, so that every node gets a distinct priority (%d down to %d in steps of %d)",
			len(nodes), MaxNodes, TopPriority, TopPriority-(MaxNodes-1)*PriorityStep, PriorityStep)
	}
	norm := make([]netip.Addr, len(nodes))
	seen := make(map[netip.Addr]int, len(nodes))
	for i, n := range nodes {
		if !n.IsValid() {
			return nil, fmt.Errorf("ha.vrrp.nodes[%d]: not a valid address", i)
		}
		n = n.Unmap()
		if j, dup := seen[n]; dup {
			return nil, fmt.Errorf("ha.vrrp.nodes[%d]: %s: duplicate of ha.vrrp.nodes[%d]", i, n, j)
		}
		if i > 0 && n.Is4() != norm[0].Is4() {
			return nil, fmt.Errorf("ha.vrrp.nodes[%d]: %s: %s, but ha.vrrp.nodes[0] %s is %s: all nodes must be of one address family",
				i, n, family(n), norm[0], family(norm[0]))
		}
		seen[n] = i
		norm[i] = n
	}
	if !self.IsValid() {
		return nil, fmt.Errorf("ha.vrrp.self: not a valid address")
	}
	self = self.Unmap()
	selfIdx, ok := seen[self]
	if !ok {
		return nil, fmt.Errorf("ha.vrrp.self: %s is not in ha.vrrp.nodes", self)
	}
	if firstVRID < 1 || firstVRID > 255 {
		return nil, fmt.Errorf("ha.vrrp.first_vrid: %d: must be 1-255", firstVRID)
	}
	if last := firstVRID + len(vips) - 1; last > 255 {
		return nil, fmt.Errorf("ha.vrrp.first_vrid: %d: %d VIPs need virtual_router_ids %d-%d, beyond 255",
			firstVRID, len(vips), firstVRID, last)
	}
	seenVIP := make(map[netip.Addr]int, len(vips))
	out := make([]Instance, 0, len(vips))
	for i, v := range vips {
		if !v.IsValid() {
			return nil, fmt.Errorf("vips[%d]: not a valid address", i)
		}
		v = v.Unmap()
		if j, dup := seenVIP[v]; dup {
			return nil, fmt.Errorf("vips[%d]: %s: duplicate of vips[%d]", i, v, j)
		}
		seenVIP[v] = i
		if v.Is4() != norm[0].Is4() {
			return nil, fmt.Errorf("vips[%d]: %s: %s, but ha.vrrp.nodes are %s: a VRRP instance and its peers are of one address family",
				i, v, family(v), family(norm[0]))
		}
		owner := i % len(norm)
		order := make([]netip.Addr, len(norm))
		prio := 0
		for k := range norm {
			idx := (owner + k) % len(norm)
			order[k] = norm[idx]
			if idx == selfIdx {
				prio = TopPriority - k*PriorityStep
			}
		}
		out = append(out, Instance{
			Name:     InstanceName(firstVRID + i),
			VIP:      v,
			VRID:     firstVRID + i,
			Priority: prio,
			Owner:    norm[owner],
			Order:    order,
		})
	}
	return out, nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
