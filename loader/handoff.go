package loader

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// Handoff is the cluster of nodes sharing the VIPs, and whether one of
// them is in transition (draining or joining).
//
// Several nodes announce the same VIPs; when one withdraws or announces,
// the routers move established connections between the nodes (a
// draining node's to the others, and with hash-threshold ECMP some of
// the others' between them too), and the kernel of the node a
// connection lands on would answer it with RST. While Active, a node
// looks up every TCP segment for a dispatched service that is neither SYN
// nor RST and that no local connection owns (an orphan) among the flows
// the other nodes recorded (SetOwners): found, the segment goes once, in
// an outer IPv4 header from Self (protocol 4 for IPv4 inside, 41 for
// IPv6), to its owner; not found, it is dropped, and the client's
// retransmission finds the record its owner sends a moment later. A node
// decapsulates such packets when they come from another of Nodes to Self
// and judges what was inside as if it had arrived itself (it must be
// well-formed and for a VIP or one of the node's host addresses, or it is
// dropped); what it delivers goes to its own sockets, and what it cannot
// deliver goes to its kernel: a segment is forwarded at most once.
//
// Forwards are limited to Rate per second per CPU, in bursts of up to
// Burst: more are dropped and counted (handoff_limited). While Active,
// the sk_lookup program records each new connection it dispatches
// (NewFlows), for the daemon to send the other nodes.
//
// The path between nodes must carry the client's packets plus the 20
// bytes of the outer header without fragmenting them (the outer header
// has DF set). A packet that would not fit passes to the kernel
// (handoff_too_big). The FIB lookup also needs IPv4 forwarding enabled on
// the interface the XDP program runs on, and a resolved neighbour entry
// for the next hop (XDP cannot resolve one): a node without them counts
// its orphans as handoff_no_route.
type Handoff struct {
	// Self is this node's IPv4 address: the outer source of what it
	// forwards; outer packets to it are decapsulated.
	Self netip.Addr `json:"self,omitzero"`
	// Nodes is every node of the cluster (IPv4), Self included (at most
	// MaxNodes): the only outer sources decapsulated.
	Nodes []netip.Addr `json:"nodes,omitempty"`
	// Active says a node is in transition: orphans are handed to their
	// owners and new flows recorded.
	Active bool `json:"active,omitempty"`
	// Rate is the forwards per second each CPU may make; 0 is no limit.
	// Burst is how many it may make at once (at least 1 with a Rate).
	Rate  uint64 `json:"rate,omitempty"`
	Burst uint64 `json:"burst,omitempty"`
}

// ValidateHandoff checks a handoff set the way SetHandoff does, with
// errors naming the field and the value. The empty Handoff is valid: off.
func ValidateHandoff(h Handoff) error {
	if !h.Self.IsValid() && len(h.Nodes) == 0 && !h.Active {
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
	switch {
	case h.Rate > uint64(time.Second):
		return fmt.Errorf("handoff.rate: %d per second exceeds the limit of %d", h.Rate, uint64(time.Second))
	case h.Rate > 0 && h.Burst == 0:
		return fmt.Errorf("handoff.burst: 0: a rate needs a burst of at least 1")
	case h.Burst > math.MaxUint32:
		return fmt.Errorf("handoff.burst: %d exceeds the limit of %d", h.Burst, uint64(math.MaxUint32))
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

// gcra turns a rate and burst into the program's token bucket: one
// forward per interval, up to burst at once.
func gcra(rate, burst uint64) (interval, tolerance uint64) {
	if rate == 0 {
		return 0, 0
	}
	interval = max(uint64(time.Second)/rate, 1)
	return interval, interval * (max(burst, 1) - 1)
}

func as4(a netip.Addr) [4]byte {
	if !a.IsValid() {
		return [4]byte{}
	}
	return a.As4()
}

func handoffValue(h Handoff) handoffVal {
	v := handoffVal{Self: as4(h.Self), NNodes: uint8(len(h.Nodes))}
	for i, n := range h.Nodes {
		v.Nodes[i] = n.As4()
	}
	v.IntervalNS, v.BurstNS = gcra(h.Rate, h.Burst)
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

	inner, err := d.newInner("ober_handoff_set", "ober_handoff", 0)
	if err != nil {
		return fmt.Errorf("set handoff: %w", err)
	}
	defer inner.Close()
	if err := inner.Update(uint32(0), handoffValue(h), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set handoff: fill: %w", err)
	}
	// The config flag spares every packet the set's lookup while nobody
	// is in transition; a packet that sees it set still goes by the set
	// it finds. So the flag goes up after the swap and down before it. It
	// also has sk_lookup record new flows.
	on := h.Active && h.Self.IsValid()
	if !on {
		if err := d.setConfigFlag(cfgHandoff, false); err != nil {
			return fmt.Errorf("set handoff: %w", err)
		}
	}
	if err := d.maps.OberHandoffSet.Update(uint32(0), inner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set handoff: swap: %w", err)
	}
	if on {
		if err := d.setConfigFlag(cfgHandoff, true); err != nil {
			return fmt.Errorf("set handoff: %w", err)
		}
	}
	return nil
}

// Handoff reads back the live handoff set. It is the empty Handoff when
// handoff is off.
func (d *Dataplane) Handoff() (Handoff, error) {
	inner, err := d.liveInner(d.maps.OberHandoffSet, 0)
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
		h.Nodes = append(h.Nodes, netip.AddrFrom4(v.Nodes[i]))
	}
	if v.IntervalNS > 0 {
		h.Rate = uint64(time.Second) / v.IntervalNS
		h.Burst = v.BurstNS/v.IntervalNS + 1
	}
	flags, err := d.configFlags()
	if err != nil {
		return Handoff{}, fmt.Errorf("read handoff: %w", err)
	}
	h.Active = flags&cfgHandoff != 0
	return h, nil
}

// Flow is one TCP connection to a VIP as the client's segments carry it.
type Flow struct {
	Client netip.AddrPort `json:"client"`
	VIP    netip.AddrPort `json:"vip"`
}

func (f Flow) String() string { return f.Client.String() + "->" + f.VIP.String() }

func (f Flow) key() flowKey {
	return flowKey{
		Saddr: addr16(f.Client.Addr()), Daddr: addr16(f.VIP.Addr()),
		Sport: [2]byte{byte(f.Client.Port() >> 8), byte(f.Client.Port())},
		Dport: [2]byte{byte(f.VIP.Port() >> 8), byte(f.VIP.Port())},
	}
}

func (k flowKey) flow() Flow {
	return Flow{
		Client: netip.AddrPortFrom(netip.AddrFrom16(k.Saddr).Unmap(), uint16(k.Sport[0])<<8|uint16(k.Sport[1])),
		VIP:    netip.AddrPortFrom(netip.AddrFrom16(k.Daddr).Unmap(), uint16(k.Dport[0])<<8|uint16(k.Dport[1])),
	}
}

// AddOwners records that owner, another node's IPv4 address, holds the
// connections of flows; a flow recorded before moves to owner. While the
// handoff set is Active, orphans of these flows go to owner. Past
// MaxOwnedFlows the kernel refuses more, and the error says how many
// were recorded.
func (d *Dataplane) AddOwners(owner netip.Addr, flows []Flow) error {
	if err := checkNodeAddr("owner", owner); err != nil {
		return fmt.Errorf("record flows: %w", err)
	}
	if len(flows) == 0 {
		return nil
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("record flows: %w", err)
	}
	defer unlock()
	inner, err := d.liveInner(d.maps.OberOwners, 0)
	if err != nil {
		return fmt.Errorf("record flows: %w", err)
	}
	if inner == nil {
		if inner, err = d.swapOwners(); err != nil {
			return fmt.Errorf("record flows: %w", err)
		}
	}
	defer inner.Close()
	keys := make([]flowKey, len(flows))
	vals := make([][4]byte, len(flows))
	o := owner.As4()
	for i, f := range flows {
		keys[i], vals[i] = f.key(), o
	}
	n, err := inner.BatchUpdate(keys, vals, nil)
	if err != nil {
		return fmt.Errorf("record flows of %s: %d of %d recorded: %w", owner, n, len(flows), err)
	}
	return nil
}

// ClearOwners forgets every recorded flow in one swap, when no node is
// in transition any more.
func (d *Dataplane) ClearOwners() error {
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("clear flows: %w", err)
	}
	defer unlock()
	inner, err := d.swapOwners()
	if err != nil {
		return fmt.Errorf("clear flows: %w", err)
	}
	return inner.Close()
}

// swapOwners puts an empty flow table in place and returns it open.
func (d *Dataplane) swapOwners() (*ebpf.Map, error) {
	inner, err := d.newInner("ober_owners", "ober_owners", 0)
	if err != nil {
		return nil, err
	}
	if err := d.maps.OberOwners.Update(uint32(0), inner, ebpf.UpdateAny); err != nil {
		inner.Close()
		return nil, fmt.Errorf("swap: %w", err)
	}
	return inner, nil
}

// Owners reads the recorded flows and their owners.
func (d *Dataplane) Owners() (map[Flow]netip.Addr, error) {
	out := map[Flow]netip.Addr{}
	inner, err := d.liveInner(d.maps.OberOwners, 0)
	if err != nil || inner == nil {
		return out, wrapErr("read flows", err)
	}
	defer inner.Close()
	var k flowKey
	var v [4]byte
	it := inner.Iterate()
	for it.Next(&k, &v) {
		out[k.flow()] = netip.AddrFrom4(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read flows: %w", err)
	}
	return out, nil
}

// FlowReader reads the new connections sk_lookup records while the
// handoff set is Active.
type FlowReader struct {
	rd *ringbuf.Reader
}

// NewFlows opens the record of new connections. Only one reader should
// read it: each record is read once.
func (d *Dataplane) NewFlows() (*FlowReader, error) {
	rd, err := ringbuf.NewReader(d.maps.OberNewFlows)
	if err != nil {
		return nil, fmt.Errorf("read new flows: %w", err)
	}
	return &FlowReader{rd: rd}, nil
}

// Read returns the flows recorded so far, waiting at most wait for the
// first one; none, and a nil error, when wait passed without one.
func (r *FlowReader) Read(wait time.Duration, max int) ([]Flow, error) {
	var out []Flow
	r.rd.SetDeadline(time.Now().Add(wait))
	for len(out) < max {
		rec, err := r.rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("read new flows: %w", err)
		}
		var k flowKey
		if len(rec.RawSample) < len(k.Saddr)+len(k.Daddr)+4 {
			continue
		}
		copy(k.Saddr[:], rec.RawSample[0:16])
		copy(k.Daddr[:], rec.RawSample[16:32])
		copy(k.Sport[:], rec.RawSample[32:34])
		copy(k.Dport[:], rec.RawSample[34:36])
		out = append(out, k.flow())
		// The rest that is there already, without waiting again.
		r.rd.SetDeadline(time.Now())
	}
	return out, nil
}

// Close stops reading; a Read under way returns.
func (r *FlowReader) Close() error { return r.rd.Close() }
