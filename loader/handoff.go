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
// Where an orphan goes: from a node that is not draining, to the first
// draining node in Nodes order; from a draining node, to the next draining
// node after itself; with none, it passes to the kernel (and is counted).
// A decapsulated packet that is an orphan here too goes on, keeping the
// outer source it came with, to the next draining node after Self, which
// on a draining node is the same rule; with none it passes to the kernel.
// Every such hop moves forward in Nodes, so a chain ends within
// len(Nodes) hops even while the nodes disagree about who drains. That is
// why Nodes must be in the same order on every node.
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
	// target is where an orphan that arrived directly goes; rxTarget where
	// a decapsulated one goes (a node after self). Invalid: nowhere.
	target, rxTarget netip.Addr
}

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
	// From a draining node onwards, never back; from any other, to the
	// first draining node.
	start := 0
	if p.draining[self] {
		start = self + 1
	}
	p.target = p.firstDraining(start, self)
	// A decapsulated orphan goes forward only. Here, where self drains,
	// that is the same node; where it does not (another node thinks it
	// does), that is the only way the chain is sure to end.
	p.rxTarget = p.firstDraining(self+1, self)
	return p
}

// firstDraining is the first draining node from index i on, other than
// index self; invalid when there is none.
func (p handoffPlan) firstDraining(i, self int) netip.Addr {
	for ; i < len(p.nodes); i++ {
		if p.draining[i] && i != self {
			return p.nodes[i]
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
	v := handoffVal{Self: as4(p.self), Target: as4(p.target), RxTarget: as4(p.rxTarget), NNodes: uint8(len(p.nodes))}
	for i, n := range p.nodes {
		v.Nodes[i] = n.As4()
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
