package loader

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Handoff is the cluster of nodes sharing the VIPs and which of them are
// draining.
//
// Several nodes announce the same VIPs; when one drains it withdraws its
// routes and the routers move its established connections to the others,
// whose kernels would answer them with RST. With a handoff set, a node
// that receives a TCP segment for a dispatched service that is not a SYN
// (nor a RST) and that no local connection owns (an orphan) sends it, in
// an outer IPv4 header from Self (protocol 4 for IPv4 inside, 41 for
// IPv6), to a draining node. A node decapsulates such packets when they
// come from another of Nodes to Self, and judges what was inside as if it
// had arrived itself (it must be well-formed and for a VIP or one of the
// node's host addresses, or it is dropped); what it delivers goes to its
// own sockets.
//
// Where an orphan goes: walking Nodes cyclically from the node after Self
// (after the last node comes the first), to the first draining node other
// than Self; with none, it passes to the kernel (and is counted). A
// decapsulated packet that is an orphan here too goes on, keeping the
// outer source O it came with, by the same walk, which stops when it
// reaches O: only a draining node strictly between Self and O in the
// cyclic order Self+1, Self+2, ..., O-1 will do; with none it passes to
// the kernel. So a chain started at O goes round Nodes at most once: it
// visits each node at most once, O never again, and ends within
// len(Nodes)-1 hops, even while the nodes disagree about who drains (see
// planHandoff). That is why Nodes must be in the same order on every
// node. Going round, not only forward, matters because the routers may
// move a flow to a node either side of its owner in Nodes order; while
// any node drains, the control plane may mark every node draining, so
// that an orphan tries the others in turn until one owns it.
//
// The path between nodes must carry the client's packets plus the 20
// bytes of the outer header without fragmenting them (the outer header
// has DF set): an MTU of at least the client MTU + 20, in practice jumbo
// frames between the nodes. A packet that would not fit passes to the
// kernel (handoff_too_big). The FIB lookup also needs IPv4 forwarding
// enabled on the interface the XDP program runs on, and a resolved
// neighbour entry for the next hop (XDP cannot resolve one): a node
// without them counts its orphans as handoff_no_route.
type Handoff struct {
	// Self is this node's IPv4 address: the outer source of what it
	// forwards; outer packets to it are decapsulated.
	Self netip.Addr `json:"self,omitzero"`
	// Nodes is every node of the cluster (IPv4), Self included, in the
	// same order on every node (at most MaxNodes).
	Nodes []netip.Addr `json:"nodes,omitempty"`
	// Draining is the nodes (a subset of Nodes, Self possibly among them)
	// now draining. Handoff reads them back in Nodes order.
	Draining []netip.Addr `json:"draining,omitempty"`
}

// ValidateHandoff checks a handoff set the way SetHandoff does, with
// errors naming the field and the value. The empty Handoff is valid: off.
func ValidateHandoff(h Handoff) error {
	if !h.Self.IsValid() && len(h.Nodes) == 0 && len(h.Draining) == 0 {
		return nil
	}
	if err := checkNodeAddr("handoff.self", h.Self); err != nil {
		return err
	}
	if len(h.Nodes) > MaxNodes {
		return fmt.Errorf("handoff.nodes: %d nodes exceed the limit of %d", len(h.Nodes), MaxNodes)
	}
	index := make(map[netip.Addr]int, len(h.Nodes))
	for i, n := range h.Nodes {
		if err := checkNodeAddr(fmt.Sprintf("handoff.nodes[%d]", i), n); err != nil {
			return err
		}
		if j, dup := index[n]; dup {
			return fmt.Errorf("handoff.nodes[%d]: %s repeats nodes[%d]", i, n, j)
		}
		index[n] = i
	}
	if _, ok := index[h.Self]; !ok {
		return fmt.Errorf("handoff.self: %s not in nodes", h.Self)
	}
	seen := make(map[netip.Addr]int, len(h.Draining))
	for i, n := range h.Draining {
		if _, ok := index[n]; !ok {
			return fmt.Errorf("handoff.draining[%d]: %s not in nodes", i, n)
		}
		if j, dup := seen[n]; dup {
			return fmt.Errorf("handoff.draining[%d]: %s repeats draining[%d]", i, n, j)
		}
		seen[n] = i
	}
	return nil
}

// checkNodeAddr refuses what cannot be a node's unicast IPv4 address.
func checkNodeAddr(field string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s: address is missing", field)
	case a.Is4In6():
		return fmt.Errorf("%s: %s is IPv4-mapped; write it as %s", field, a, a.Unmap())
	case a.Is6():
		return fmt.Errorf("%s: %s is IPv6; nodes hand off over IPv4 (IPv6 clients are carried inside it)", field, a)
	case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s: %s is not a node's unicast address", field, a)
	}
	return nil
}

// handoffPlan is a valid Handoff worked out for the program: the forward
// targets are the rule of the Handoff doc, applied once here.
type handoffPlan struct {
	self     netip.Addr
	nodes    []netip.Addr
	draining []bool // by index in nodes
	// target is where an orphan that arrived directly goes; rxTargets[o]
	// where one decapsulated from nodes[o] goes (none for self). Invalid:
	// nowhere.
	target    netip.Addr
	rxTargets []netip.Addr
}

// planHandoff works out the targets. Why a chain ends: number the nodes
// by their cyclic distance from the chain's origin O, d(i) = (i-o) mod N
// for N nodes, so O is 0 and every other node is in 1..N-1. The first hop
// goes from O to some node X1, d(X1) >= 1. A node X that sends the packet
// on picks a node strictly between X and O in the walk X+1, ..., O-1:
// exactly the nodes i with d(X) < d(i) <= N-1. So d grows strictly along
// the chain and stays within 1..N-1, whatever each node thinks drains
// (each choice depends only on the node's own index, O and Nodes, which
// is the same everywhere): no node is visited twice, O is never visited
// again, and there are at most N-1 hops.
func planHandoff(h Handoff) handoffPlan {
	p := handoffPlan{self: h.Self, nodes: h.Nodes, draining: make([]bool, len(h.Nodes))}
	self := -1
	for i, n := range h.Nodes {
		if n == h.Self {
			self = i
		}
		for _, d := range h.Draining {
			if d == n {
				p.draining[i] = true
			}
		}
	}
	if self < 0 {
		return p // off
	}
	// An orphan that arrived here starts its chain here: the walk goes
	// round to self.
	p.target = p.nextDraining(self, self)
	p.rxTargets = make([]netip.Addr, len(h.Nodes))
	for o := range h.Nodes {
		if o != self {
			p.rxTargets[o] = p.nextDraining(self, o)
		}
	}
	return p
}

// nextDraining is the first draining node walking the nodes cyclically
// from the one after index self, stopping at index stop (not taken);
// invalid when there is none.
func (p handoffPlan) nextDraining(self, stop int) netip.Addr {
	n := len(p.nodes)
	for k := 1; k < n; k++ {
		i := (self + k) % n
		if i == stop {
			break
		}
		if p.draining[i] {
			return p.nodes[i]
		}
	}
	return netip.Addr{}
}

// rxTarget is where an orphan decapsulated from src goes; invalid when
// nowhere (or src is no node).
func (p handoffPlan) rxTarget(src netip.Addr) netip.Addr {
	for i, n := range p.nodes {
		if n == src && i < len(p.rxTargets) {
			return p.rxTargets[i]
		}
	}
	return netip.Addr{}
}

func (p handoffPlan) on() bool {
	for _, d := range p.draining {
		if d {
			return true
		}
	}
	return false
}

func (p handoffPlan) isNode(a netip.Addr) bool {
	for _, n := range p.nodes {
		if n == a {
			return true
		}
	}
	return false
}

func as4(a netip.Addr) [4]byte {
	if !a.IsValid() {
		return [4]byte{}
	}
	return a.As4()
}

func (p handoffPlan) value() handoffVal {
	v := handoffVal{Self: as4(p.self), Target: as4(p.target), NNodes: uint8(len(p.nodes))}
	for i, n := range p.nodes {
		v.Nodes[i] = n.As4()
		if i < len(p.rxTargets) {
			v.RxTargets[i] = as4(p.rxTargets[i])
		}
		if p.draining[i] {
			v.Draining |= 1 << i
		}
	}
	return v
}

// SetHandoff replaces the handoff set. The set is filled off to the side
// and swapped in whole, so a packet sees either the old set or the new
// one. The empty Handoff switches handoff off.
func (d *Dataplane) SetHandoff(h Handoff) error {
	if err := ValidateHandoff(h); err != nil {
		return fmt.Errorf("set handoff: %w", err)
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("set handoff: %w", err)
	}
	defer unlock()

	inner, err := d.newInner("ober_handoff", "ober_handoff", 0)
	if err != nil {
		return fmt.Errorf("set handoff: %w", err)
	}
	defer inner.Close()
	if err := inner.Update(uint32(0), planHandoff(h).value(), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set handoff: fill: %w", err)
	}
	// The config flag spares every packet the set's lookup while nobody
	// drains; a packet that sees it set still goes by the set it finds.
	// So the flag goes up after the swap and down before it: a packet
	// that sees it down sees no draining node, as the set on that side of
	// the change says.
	// The program looks for orphans only while some node drains; it
	// decapsulates whenever Self is set.
	on := len(h.Draining) > 0
	if !on {
		if err := d.setConfigFlag(cfgHandoff, false); err != nil {
			return fmt.Errorf("set handoff: %w", err)
		}
	}
	if err := d.maps.OberHandoff.Update(uint32(0), inner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set handoff: swap: %w", err)
	}
	if on {
		if err := d.setConfigFlag(cfgHandoff, true); err != nil {
			return fmt.Errorf("set handoff: %w", err)
		}
	}
	return nil
}

// Handoff reads back the live handoff set, Draining in Nodes order. It is
// the empty Handoff when handoff is off.
func (d *Dataplane) Handoff() (Handoff, error) {
	inner, err := d.liveInner(d.maps.OberHandoff, 0)
	if err != nil || inner == nil {
		return Handoff{}, wrapErr("read handoff", err)
	}
	defer inner.Close()
	var v handoffVal
	if err := inner.Lookup(uint32(0), &v); err != nil {
		return Handoff{}, fmt.Errorf("read handoff: %w", err)
	}
	if v.Self == ([4]byte{}) {
		return Handoff{}, nil
	}
	if int(v.NNodes) > MaxNodes {
		return Handoff{}, fmt.Errorf("read handoff: %d nodes exceed the limit of %d", v.NNodes, MaxNodes)
	}
	h := Handoff{Self: netip.AddrFrom4(v.Self)}
	for i := 0; i < int(v.NNodes); i++ {
		n := netip.AddrFrom4(v.Nodes[i])
		h.Nodes = append(h.Nodes, n)
		if v.Draining&(1<<i) != 0 {
			h.Draining = append(h.Draining, n)
		}
	}
	return h, nil
}
