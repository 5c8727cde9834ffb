package loader

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/packet"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestValidateHandoff(t *testing.T) {
	nodes := addrs("10.0.0.1", "10.0.0.2", "10.0.0.5")
	self := nodes[0]
	var many []netip.Addr
	for i := 1; i <= MaxNodes+1; i++ {
		many = append(many, netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}))
	}
	for _, c := range []struct {
		name string
		h    Handoff
		err  string
	}{
		{"off", Handoff{}, ""},
		{"nobody drains", Handoff{Self: self, Nodes: nodes}, ""},
		{"self drains", Handoff{Self: self, Nodes: nodes, Draining: nodes[:1]}, ""},
		{"all drain", Handoff{Self: self, Nodes: nodes, Draining: nodes}, ""},
		{"max nodes", Handoff{Self: many[0], Nodes: many[:MaxNodes]}, ""},
		{"no self", Handoff{Nodes: nodes}, "handoff.self: address is missing"},
		{"draining without nodes", Handoff{Draining: nodes[:1]}, "handoff.self: address is missing"},
		{"self not a node", Handoff{Self: netip.MustParseAddr("10.0.0.9"), Nodes: nodes}, "handoff.self: 10.0.0.9 not in nodes"},
		{"self ipv6", Handoff{Self: netip.MustParseAddr("2001:db8::1"), Nodes: nodes},
			"handoff.self: 2001:db8::1 is IPv6; nodes hand off over IPv4 (IPv6 clients are carried inside it)"},
		{"self mapped", Handoff{Self: netip.MustParseAddr("::ffff:10.0.0.1"), Nodes: nodes},
			"handoff.self: ::ffff:10.0.0.1 is IPv4-mapped; write it as 10.0.0.1"},
		{"node ipv6", Handoff{Self: self, Nodes: append(slices.Clone(nodes), netip.MustParseAddr("2001:db8::2"))},
			"handoff.nodes[3]: 2001:db8::2 is IPv6; nodes hand off over IPv4 (IPv6 clients are carried inside it)"},
		{"node repeats", Handoff{Self: self, Nodes: addrs("10.0.0.1", "10.0.0.5", "10.0.0.5")},
			"handoff.nodes[2]: 10.0.0.5 repeats nodes[1]"},
		{"node unspecified", Handoff{Self: self, Nodes: addrs("10.0.0.1", "0.0.0.0")},
			"handoff.nodes[1]: 0.0.0.0 is not a node's unicast address"},
		{"node broadcast", Handoff{Self: self, Nodes: addrs("10.0.0.1", "255.255.255.255")},
			"handoff.nodes[1]: 255.255.255.255 is not a node's unicast address"},
		{"node missing", Handoff{Self: self, Nodes: []netip.Addr{self, {}}}, "handoff.nodes[1]: address is missing"},
		{"too many", Handoff{Self: many[0], Nodes: many}, "handoff.nodes: 17 nodes exceed the limit of 16"},
		{"draining stranger", Handoff{Self: self, Nodes: nodes, Draining: addrs("10.0.0.2", "10.0.0.7")},
			"handoff.draining[1]: 10.0.0.7 not in nodes"},
		{"draining repeats", Handoff{Self: self, Nodes: nodes, Draining: addrs("10.0.0.2", "10.0.0.2")},
			"handoff.draining[1]: 10.0.0.2 repeats draining[0]"},
	} {
		err := ValidateHandoff(c.h)
		if c.err == "" {
			require.NoError(t, err, c.name)
			continue
		}
		require.EqualError(t, err, c.err, c.name)
	}
}

// TestHandoffTargets pins the forward rule: walking Nodes cyclically
// from the node after self, to the first draining one; a decapsulated
// orphan the same, but only to a node strictly between self and its
// origin.
func TestHandoffTargets(t *testing.T) {
	n := addrs("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5")
	const x = -1 // none
	for _, c := range []struct {
		name     string
		self     int
		draining []int
		target   int
		rx       [5]int // by origin; self's is never used and stays none
	}{
		{"nobody drains", 0, nil, x, [5]int{x, x, x, x, x}},
		{"one drains", 0, []int{3}, 3, [5]int{x, x, x, x, 3}},
		{"the last node wraps to the first", 4, []int{1, 3}, 1, [5]int{x, x, 1, 1, x}},
		{"serving, the next after self", 2, []int{1, 3}, 3, [5]int{3, 3, x, x, 3}},
		{"draining, the next after self", 1, []int{1, 3}, 3, [5]int{3, x, x, x, 3}},
		{"the last draining node wraps", 3, []int{1, 3}, 1, [5]int{x, x, 1, x, x}},
		{"back to an earlier node, round the end", 1, []int{0, 1}, 0, [5]int{x, x, x, x, x}},
		{"self the only draining node", 2, []int{2}, x, [5]int{x, x, x, x, x}},
		{"never to the origin or beyond", 3, []int{0, 1, 4}, 4, [5]int{4, 4, 4, x, x}},
		{"origin bound, wrapped", 4, []int{0, 1, 2}, 0, [5]int{x, 0, 0, 0, x}},
		{"all drain", 0, []int{0, 1, 2, 3, 4}, 1, [5]int{x, x, 1, 1, 1}},
		{"all drain, from the last", 4, []int{0, 1, 2, 3, 4}, 0, [5]int{x, 0, 0, 0, x}},
	} {
		h := Handoff{Self: n[c.self], Nodes: n}
		for _, i := range c.draining {
			h.Draining = append(h.Draining, n[i])
		}
		require.NoError(t, ValidateHandoff(h))
		p := planHandoff(h)
		at := func(i int) netip.Addr {
			if i == x {
				return netip.Addr{}
			}
			return n[i]
		}
		require.Equal(t, at(c.target), p.target, "%s: target", c.name)
		for o, want := range c.rx {
			require.Equal(t, at(want), p.rxTarget(n[o]), "%s: decapsulated from node %d", c.name, o)
		}
		// What the program gets: the same, by index.
		v := p.value()
		require.Equal(t, as4(at(c.target)), v.Target, c.name)
		for o, want := range c.rx {
			require.Equal(t, as4(at(want)), v.RxTargets[o], "%s: rx_targets[%d]", c.name, o)
		}
	}

	// Rings where every node drains, as the control plane marks them
	// while any one does: each node sends on to the next, round the end,
	// and a decapsulated orphan stops before its origin.
	for _, size := range []int{2, 3, MaxNodes} {
		var ring []netip.Addr
		for i := 0; i < size; i++ {
			ring = append(ring, netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)}))
		}
		for s := range ring {
			p := planHandoff(Handoff{Self: ring[s], Nodes: ring, Draining: ring})
			next := ring[(s+1)%size]
			require.Equal(t, next, p.target, "ring of %d, self %d: target", size, s)
			for o := range ring {
				want := next
				if o == s || o == (s+1)%size {
					want = netip.Addr{}
				}
				require.Equal(t, want, p.rxTarget(ring[o]), "ring of %d, self %d: from %d", size, s, o)
			}
		}
	}

	off := planHandoff(Handoff{})
	require.False(t, off.target.IsValid())
	require.Equal(t, handoffVal{}, off.value())
	require.False(t, off.rxTarget(n[0]).IsValid())
}

// TestHandoffChainEnds follows an orphan from node to node while every
// node has its own idea of who drains, as during a change: the chain
// always ends, within len(Nodes)-1 hops, and never visits a node twice
// (its origin included).
func TestHandoffChainEnds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	longest := 0
	for round := 0; round < 4000; round++ {
		size := 2 + rng.IntN(MaxNodes-1)
		if round%2 == 0 {
			size = MaxNodes
		}
		var nodes []netip.Addr
		for i := 0; i < size; i++ {
			nodes = append(nodes, netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}))
		}
		// Every node its own view; some rounds lean to all draining, as
		// the control plane marks them.
		odds := 1 + rng.IntN(4)
		plans := map[netip.Addr]handoffPlan{}
		for _, self := range nodes {
			h := Handoff{Self: self, Nodes: nodes}
			for _, n := range nodes {
				if rng.IntN(odds+1) != 0 {
					h.Draining = append(h.Draining, n)
				}
			}
			plans[self] = planHandoff(h)
		}
		origin := nodes[rng.IntN(len(nodes))]
		seen := map[netip.Addr]bool{origin: true}
		next := plans[origin].target // it arrived directly at its first node
		hops := 0
		for next.IsValid() {
			hops++
			require.LessOrEqual(t, hops, len(nodes)-1, "round %d: the chain goes on too long", round)
			require.False(t, seen[next], "round %d: hop %d visits %s again", round, hops, next)
			seen[next] = true
			// The outer source stays the origin's.
			next = plans[next].rxTarget(origin)
		}
		longest = max(longest, hops)
	}
	t.Logf("longest chain: %d hops", longest)
	require.Equal(t, MaxNodes-1, longest, "the rounds should have made chains round the whole ring")
}

func TestSetHandoff(t *testing.T) {
	d := openTestDataplane(t)
	flags := func() uint32 {
		var cfg oberOberConfig
		require.NoError(t, d.maps.OberConfig.Lookup(uint32(0), &cfg))
		return cfg.Flags
	}
	h, err := d.Handoff()
	require.NoError(t, err)
	require.Equal(t, Handoff{}, h, "a new dataplane has handoff off")

	nodes := addrs("10.0.0.1", "10.0.0.2", "10.0.0.3")
	set := Handoff{Self: nodes[1], Nodes: nodes, Draining: addrs("10.0.0.3", "10.0.0.1")}
	require.NoError(t, d.SetHandoff(set))
	got, err := d.Handoff()
	require.NoError(t, err)
	require.Equal(t, Handoff{Self: nodes[1], Nodes: nodes, Draining: addrs("10.0.0.1", "10.0.0.3")}, got,
		"read back, draining in nodes order")
	require.Equal(t, uint32(cfgSteer|cfgHandoff), flags(), "someone drains: the program looks for orphans")
	snap := mustSnapshot(t, d)
	require.Equal(t, got, snap.Handoff)

	// Steering and handoff share the config word: neither clobbers the other.
	require.NoError(t, d.SetSteering(false))
	require.Equal(t, uint32(cfgHandoff), flags())
	require.NoError(t, d.SetSteering(true))
	require.Equal(t, uint32(cfgSteer|cfgHandoff), flags())

	require.NoError(t, d.SetHandoff(Handoff{Self: nodes[1], Nodes: nodes}))
	require.Equal(t, uint32(cfgSteer), flags(), "nobody drains: no orphan checks")
	got, err = d.Handoff()
	require.NoError(t, err)
	require.Equal(t, Handoff{Self: nodes[1], Nodes: nodes}, got)

	require.NoError(t, d.SetHandoff(Handoff{}))
	got, err = d.Handoff()
	require.NoError(t, err)
	require.Equal(t, Handoff{}, got)

	err = d.SetHandoff(Handoff{Self: nodes[0], Nodes: append(nodes, nodes[0])})
	require.EqualError(t, err, "set handoff: handoff.nodes[3]: 10.0.0.1 repeats nodes[0]")
}

// ipPacket is the IP packet of a frame built from s: what handoff carries.
func ipPacket(s packet.Spec) []byte {
	s.VLANs = nil
	return s.Bytes()[14:]
}

// encap is s inside an outer IPv4 header from src to dst, as a node sends it.
func encap(src, dst netip.Addr, s packet.Spec) packet.Spec {
	proto := uint8(ipprotoIPIP)
	if s.Dst.Is6() {
		proto = ipprotoIPv6
	}
	return packet.Spec{Src: src, Dst: dst, Proto: proto, Payload: ipPacket(s), VLANs: s.VLANs}
}

// checkEncap checks a forwarded frame field by field, independently of the
// model: a new Ethernet header from the FIB, an outer IPv4 header, and
// the IP packet that came in at inL3off, byte for byte.
func checkEncap(t *testing.T, name string, in []byte, inL3off int, out []byte, src, dst netip.Addr, fib FIBResult) {
	t.Helper()
	inner := in[inL3off:]
	ilen := int(binary.BigEndian.Uint16(inner[2:]))
	proto, tos := byte(ipprotoIPIP), inner[1]
	if inner[0]>>4 == 6 {
		ilen = 40 + int(binary.BigEndian.Uint16(inner[4:]))
		proto, tos = ipprotoIPv6, inner[0]<<4|inner[1]>>4
	}
	require.Len(t, out, 14+20+ilen, "%s: frame length", name)
	require.Equal(t, fib.DstMAC[:], out[0:6], "%s: destination MAC", name)
	require.Equal(t, fib.SrcMAC[:], out[6:12], "%s: source MAC", name)
	require.Equal(t, []byte{0x08, 0x00}, out[12:14], "%s: ethertype", name)
	oh := out[14:34]
	require.Equal(t, byte(0x45), oh[0], "%s: version and header length", name)
	require.Equal(t, tos&0xfc, oh[1], "%s: DSCP kept, ECN not-ECT", name)
	require.Equal(t, uint16(20+ilen), binary.BigEndian.Uint16(oh[2:]), "%s: total length", name)
	require.Equal(t, uint16(0), binary.BigEndian.Uint16(oh[4:]), "%s: id", name)
	require.Equal(t, uint16(0x4000), binary.BigEndian.Uint16(oh[6:]), "%s: DF, not a fragment", name)
	require.Equal(t, byte(64), oh[8], "%s: ttl", name)
	require.Equal(t, proto, oh[9], "%s: protocol", name)
	require.Zero(t, packet.Checksum(oh, 0), "%s: header checksum", name)
	require.Equal(t, src.AsSlice(), oh[12:16], "%s: outer source", name)
	require.Equal(t, dst.AsSlice(), oh[16:20], "%s: outer destination", name)
	require.Equal(t, inner[:ilen], out[34:], "%s: the inner packet, untouched", name)
}

// checkDecap checks a decapsulated frame: the outer header gone, the
// Ethernet header and tags kept, the last type naming the inner packet.
func checkDecap(t *testing.T, name string, in []byte, l3off int, out []byte) {
	t.Helper()
	hlen := int(in[l3off]&0xf) * 4
	want := slices.Concat(in[:l3off], in[l3off+hlen:])
	binary.BigEndian.PutUint16(want[l3off-2:], 0x0800)
	if in[l3off+9] == ipprotoIPv6 {
		binary.BigEndian.PutUint16(want[l3off-2:], 0x86dd)
	}
	require.Equal(t, want, out, "%s: decapsulated frame", name)
}

// handoffFixture is one packet through the program in the lab.
type handoffFixture struct {
	name   string
	pkt    []byte
	reason Reason
	action Action // for handoff_received and steered: any the model agrees on
	check  func(t *testing.T, name string, pkt, out []byte)
}

// TestXDPHandoffFixtures runs packets through BPF_PROG_TEST_RUN in the
// lab, arriving on hx0, under several handoff sets, and checks the
// verdict, the counted reason and the output bytes against the
// expectation and the model.
func TestXDPHandoffFixtures(t *testing.T) {
	lab := newHandoffLab(t)
	local4, local6 := lab.flows[0], lab.flows[1]
	ack := func(src netip.Addr, sport uint16, dst netip.Addr) packet.Spec {
		s := tcp(src, sport, dst, portHTTPS, packet.ACK|packet.PSH)
		s.Payload = []byte("GET /bucket/key HTTP/1.1\r\n\r\n")
		s.SrcMAC, s.DstMAC = [6]byte{2, 0, 0, 0, 0, 0xaa}, [6]byte{2, 0, 0, 0, 0, 0xbb}
		return s
	}
	orphan4, orphan6 := ack(client4, 40100, vip4), ack(client6, 40100, vip6)
	onFlow := func(f SkTuple) packet.Spec { return ack(f.Remote.Addr(), f.Remote.Port(), f.Local.Addr()) }
	vlan := []packet.VLAN{{TPID: 0x8100, TCI: 100}}
	qinq := []packet.VLAN{{TPID: 0x88a8, TCI: 10}, {TPID: 0x8100, TCI: 100}}
	big := func(n int) packet.Spec { return with(orphan4, func(s *packet.Spec) { s.Payload = make([]byte, n) }) }
	fwdTo := func(src, dst netip.Addr, inL3off int) func(*testing.T, string, []byte, []byte) {
		return func(t *testing.T, name string, pkt, out []byte) {
			checkEncap(t, name, pkt, inL3off, out, src, dst, lab.fib[dst])
		}
	}
	decapped := func(l3off int) func(*testing.T, string, []byte, []byte) {
		return func(t *testing.T, name string, pkt, out []byte) { checkDecap(t, name, pkt, l3off, out) }
	}
	// An orphan sent on after decapsulation: the outer header it came in
	// is replaced by one keeping its source.
	refwd := func(src, dst netip.Addr) func(*testing.T, string, []byte, []byte) {
		return func(t *testing.T, name string, pkt, out []byte) {
			checkEncap(t, name, pkt, 14+20, out, src, dst, lab.fib[dst])
		}
	}
	fx := func(name string, s packet.Spec, r Reason, a Action, check func(*testing.T, string, []byte, []byte)) handoffFixture {
		return handoffFixture{name, s.Bytes(), r, a, check}
	}
	padded := append(orphan4.Bytes(), make([]byte, 10)...) // Ethernet padding
	serving := []netip.Addr{labTX}                         // self serves; labTX drains
	groups := []struct {
		name     string
		draining []netip.Addr
		nodes    []netip.Addr // labNodes if nil
		off      bool
		fixtures []handoffFixture
	}{
		{name: "serving, a node drains", draining: serving, fixtures: []handoffFixture{
			fx("v4 orphan", orphan4, ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			fx("v6 orphan", orphan6, ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			fx("fin orphan", with(orphan4, func(s *packet.Spec) { s.Flags = packet.FIN | packet.ACK }), ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			fx("bare ack orphan", with(orphan4, func(s *packet.Spec) { s.Flags = packet.ACK; s.Payload = nil }), ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			fx("orphan with ip options", with(orphan4, func(s *packet.Spec) { s.IPOptions = []byte{7, 7, 4, 0, 0, 0, 0} }), ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			fx("orphan with dscp and ecn", with(orphan4, func(s *packet.Spec) { s.Payload = nil; s.Flags = packet.ACK }), ReasonHandoffForwarded, ActionTX, nil),
			fx("tagged orphan leaves untagged", with(orphan4, func(s *packet.Spec) { s.VLANs = vlan }), ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 18)),
			fx("qinq v6 orphan", with(orphan6, func(s *packet.Spec) { s.VLANs = qinq }), ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 22)),
			fx("v6 orphan with ext headers", with(orphan6, func(s *packet.Spec) { s.ExtHdrs = []packet.ExtHdr{{Type: packet.ExtDstOpts}} }), ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			{"padded orphan is trimmed", padded, ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)},
			// 1488 bytes from a client with MTU 1500 make 1508 with the outer
			// header: more than hx0's link carries.
			fx("full-size orphan over a 1500-byte link", big(1460-12), ReasonHandoffTooBig, ActionPass, nil),
			// Never an orphan.
			fx("syn", with(orphan4, func(s *packet.Spec) { s.Flags = packet.SYN }), ReasonSteered, 0, nil),
			fx("syn-ack", with(orphan4, func(s *packet.Spec) { s.Flags = packet.SYN | packet.ACK }), ReasonSteered, 0, nil),
			fx("rst", with(orphan4, func(s *packet.Spec) { s.Flags = packet.RST }), ReasonSteered, 0, nil),
			fx("rst-ack", with(orphan6, func(s *packet.Spec) { s.Flags = packet.RST | packet.ACK }), ReasonSteered, 0, nil),
			fx("syn-fin", with(orphan4, func(s *packet.Spec) { s.Flags = packet.SYN | packet.FIN }), ReasonSteered, 0, nil),
			fx("v4 flow with a socket", onFlow(local4), ReasonSteered, 0, nil),
			fx("v6 flow with a socket", onFlow(local6), ReasonSteered, 0, nil),
			fx("udp", packet.UDP(ap(client4, 5353), ap(vip4, portDNS), []byte("q")), ReasonSteered, 0, nil),
			fx("first fragment", with(orphan4, func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }), ReasonFragment, ActionPass, nil),
			fx("later fragment", with(orphan4, func(s *packet.Spec) { s.Frag = &packet.Frag{Offset: 10} }), ReasonFragment, ActionDrop, nil),
			fx("not dispatched", tcp(router4, 40000, host4, portBGP, packet.ACK), ReasonPass, ActionPass, nil),
			fx("policed first", tcp(stranger4, 40000, vip4, portHTTP, packet.ACK), ReasonWhitelistDrop, ActionDrop, nil),
			fx("not a vip", tcp(client4, 40000, other4, portHTTPS, packet.ACK), ReasonNotVIP, ActionPass, nil),

			// Decapsulation.
			fx("from a node, for a local flow", encap(labTX, labSelf, onFlow(local4)), ReasonHandoffReceived, 0, decapped(14)),
			fx("v6 inside, for a local flow", encap(labTX, labSelf, onFlow(local6)), ReasonHandoffReceived, 0, decapped(14)),
			fx("tagged, for a local flow", encap(labRedirect, labSelf, with(onFlow(local4), func(s *packet.Spec) { s.VLANs = qinq })), ReasonHandoffReceived, 0, decapped(22)),
			fx("syn inside", encap(labTX, labSelf, with(orphan4, func(s *packet.Spec) { s.Flags = packet.SYN })), ReasonHandoffReceived, 0, decapped(14)),
			fx("outer options", with(encap(labTX, labSelf, onFlow(local4)), func(s *packet.Spec) { s.IPOptions = []byte{1, 1, 1, 1} }), ReasonHandoffReceived, 0, decapped(14)),
			fx("icmp inside", encap(labTX, labSelf, packet.Spec{Src: client4, Dst: vip4, Proto: packet.ProtoICMP}), ReasonHandoffReceived, ActionPass, decapped(14)),
			fx("host address inside", encap(labTX, labSelf, tcp(stranger4, 1, host4, 22, packet.ACK)), ReasonHandoffReceived, ActionPass, decapped(14)),
			// Orphaned here too: on, keeping the outer source, to the first
			// draining node after self and before the origin, round the end.
			fx("orphan inside", encap(labNoRoute, labSelf, orphan4), ReasonHandoffForwarded, ActionTX, refwd(labNoRoute, labTX)),
			fx("v6 orphan inside", encap(labNoRoute, labSelf, orphan6), ReasonHandoffForwarded, ActionTX, refwd(labNoRoute, labTX)),
			// Bad inside: dropped.
			fx("inside not for a vip", encap(labTX, labSelf, tcp(client4, 1, other4, portHTTPS, packet.ACK)), ReasonNotVIP, ActionDrop, decapped(14)),
			fx("inside v6 not for a vip", encap(labTX, labSelf, tcp(client6, 1, other6, portHTTPS, packet.ACK)), ReasonNotVIP, ActionDrop, decapped(14)),
			fx("inside truncated", with(encap(labTX, labSelf, orphan4), func(s *packet.Spec) { s.Payload = s.Payload[:12] }), ReasonMalformed, ActionDrop, decapped(14)),
			fx("inside empty", with(encap(labTX, labSelf, orphan4), func(s *packet.Spec) { s.Payload = nil }), ReasonMalformed, ActionDrop, decapped(14)),
			fx("v6 inside proto 4", with(encap(labTX, labSelf, orphan6), func(s *packet.Spec) { s.Proto = ipprotoIPIP }), ReasonMalformed, ActionDrop, decapped(14)),
			fx("v4 inside proto 41", with(encap(labTX, labSelf, orphan4), func(s *packet.Spec) { s.Proto = ipprotoIPv6 }), ReasonMalformed, ActionDrop, decapped(14)),
			fx("inside a vip on a host port", encap(labTX, labSelf, tcp(client4, 1, vip4, 22, packet.ACK)), ReasonNoService, ActionDrop, decapped(14)),
			fx("inside from a stranger", encap(labTX, labSelf, tcp(stranger4, 1, vip4, portHTTP, packet.ACK)), ReasonWhitelistDrop, ActionDrop, decapped(14)),
			// Not handoff traffic: as before handoff existed.
			fx("spoofed outer source", encap(labStranger, labSelf, onFlow(local4)), ReasonNotVIP, ActionPass, nil),
			fx("outer to another node", encap(labTX, labRedirect, onFlow(local4)), ReasonNotVIP, ActionPass, nil),
			fx("outer from self", encap(labSelf, labSelf, onFlow(local4)), ReasonNotVIP, ActionPass, nil),
			fx("outer fragment", with(encap(labTX, labSelf, onFlow(local4)), func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }), ReasonNotVIP, ActionPass, nil),
			fx("outer gre", with(encap(labTX, labSelf, onFlow(local4)), func(s *packet.Spec) { s.Proto = 47 }), ReasonNotVIP, ActionPass, nil),
			fx("ipip to a vip", encap(labTX, vip4, orphan4), ReasonNoService, ActionDrop, nil),
		}},
		{name: "self drains", draining: []netip.Addr{labSelf, labRedirect}, fixtures: []handoffFixture{
			fx("orphan to the next draining node", orphan4, ReasonHandoffForwarded, ActionRedirect, fwdTo(labSelf, labRedirect, 14)),
			fx("v6 orphan", orphan6, ReasonHandoffForwarded, ActionRedirect, fwdTo(labSelf, labRedirect, 14)),
			fx("local flow", onFlow(local4), ReasonSteered, 0, nil),
			fx("from a node, for a local flow", encap(labTX, labSelf, onFlow(local4)), ReasonHandoffReceived, 0, decapped(14)),
			fx("orphan inside goes on", encap(labSmall, labSelf, orphan4), ReasonHandoffForwarded, ActionRedirect, refwd(labSmall, labRedirect)),
			// From the node right after self: nothing lies between them.
			fx("orphan inside from the next node stops", encap(labTX, labSelf, orphan4), ReasonHandoffNoTarget, ActionPass, decapped(14)),
		}},
		{name: "self drains alone", draining: []netip.Addr{labSelf}, fixtures: []handoffFixture{
			fx("orphan", orphan4, ReasonHandoffNoTarget, ActionPass, nil),
			fx("orphan inside", encap(labTX, labSelf, orphan4), ReasonHandoffNoTarget, ActionPass, decapped(14)),
			fx("from a node, for a local flow", encap(labTX, labSelf, onFlow(local6)), ReasonHandoffReceived, 0, decapped(14)),
		}},
		{name: "self drains, the other draining node before it", draining: []netip.Addr{labNoRoute, labSelf}, fixtures: []handoffFixture{
			// Round the end to labNoRoute, which the FIB cannot reach.
			fx("orphan", orphan4, ReasonHandoffNoRoute, ActionPass, nil),
			// The walk from self to the origin: labNoRoute lies beyond it.
			fx("orphan inside from after self", encap(labSmall, labSelf, orphan4), ReasonHandoffNoTarget, ActionPass, decapped(14)),
			// Never back to the origin, draining though it is.
			fx("orphan inside from that node", encap(labNoRoute, labSelf, orphan6), ReasonHandoffNoTarget, ActionPass, decapped(14)),
		}},
		// Self third of four, the only draining node first: round the end.
		{name: "round the end", nodes: []netip.Addr{labTX, labRedirect, labSelf, labSmall}, draining: []netip.Addr{labTX}, fixtures: []handoffFixture{
			fx("v4 orphan wraps to the first node", orphan4, ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			fx("v6 orphan wraps to the first node", orphan6, ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			fx("orphan inside from before self wraps", encap(labRedirect, labSelf, orphan4), ReasonHandoffForwarded, ActionTX, refwd(labRedirect, labTX)),
			fx("tagged v6 orphan inside wraps", encap(labRedirect, labSelf, with(orphan6, func(s *packet.Spec) { s.VLANs = vlan })), ReasonHandoffForwarded, ActionTX, func(t *testing.T, name string, pkt, out []byte) {
				checkEncap(t, name, pkt, 18+20, out, labRedirect, labTX, lab.fib[labTX])
			}),
			// The origin bound: from the node after self, the walk stops at
			// once; from labTX, it stops before coming back to it.
			fx("orphan inside from the next node stops", encap(labSmall, labSelf, orphan4), ReasonHandoffNoTarget, ActionPass, decapped(14)),
			fx("orphan inside from the draining node stops", encap(labTX, labSelf, orphan4), ReasonHandoffNoTarget, ActionPass, decapped(14)),
			fx("from a node, for a local flow", encap(labSmall, labSelf, onFlow(local4)), ReasonHandoffReceived, 0, decapped(14)),
		}},
		// Every node marked draining, as the control plane does while any
		// one drains: each sends on to the next.
		{name: "all drain", draining: labNodes, fixtures: []handoffFixture{
			fx("orphan to the next node", orphan4, ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
			fx("orphan inside from before self", encap(labNoRoute, labSelf, orphan4), ReasonHandoffForwarded, ActionTX, refwd(labNoRoute, labTX)),
			fx("orphan inside from after the next", encap(labUnresolved, labSelf, orphan6), ReasonHandoffForwarded, ActionTX, refwd(labUnresolved, labTX)),
			fx("orphan inside from the next node stops", encap(labTX, labSelf, orphan4), ReasonHandoffNoTarget, ActionPass, decapped(14)),
			fx("local flow", onFlow(local4), ReasonSteered, 0, nil),
		}},
		{name: "draining node unroutable", draining: []netip.Addr{labNoRoute}, fixtures: []handoffFixture{
			fx("orphan", orphan4, ReasonHandoffNoRoute, ActionPass, nil),
			fx("orphan inside has nowhere to go", encap(labTX, labSelf, orphan4), ReasonHandoffNoTarget, ActionPass, decapped(14)),
		}},
		{name: "draining node unresolved", draining: []netip.Addr{labUnresolved}, fixtures: []handoffFixture{
			fx("orphan", orphan6, ReasonHandoffNoRoute, ActionPass, nil),
			fx("orphan inside", encap(labRedirect, labSelf, orphan6), ReasonHandoffNoRoute, ActionPass, decapped(14)),
			fx("orphan inside from the next node", encap(labTX, labSelf, orphan6), ReasonHandoffNoTarget, ActionPass, decapped(14)),
		}},
		{name: "draining node behind a small mtu", draining: []netip.Addr{labSmall}, fixtures: []handoffFixture{
			fx("fits", big(labSmallMTU-20-20-20), ReasonHandoffForwarded, ActionRedirect, fwdTo(labSelf, labSmall, 14)),
			fx("one byte too big", big(labSmallMTU-20-20-20+1), ReasonHandoffTooBig, ActionPass, nil),
			fx("full size", big(1460-12), ReasonHandoffTooBig, ActionPass, nil),
		}},
		{name: "nobody drains", fixtures: []handoffFixture{
			fx("orphan", orphan4, ReasonSteered, 0, nil),
			fx("from a node", encap(labTX, labSelf, orphan4), ReasonHandoffReceived, 0, decapped(14)),
		}},
		{name: "off", off: true, fixtures: []handoffFixture{
			fx("orphan", orphan4, ReasonSteered, 0, nil),
			fx("v6 orphan", orphan6, ReasonSteered, 0, nil),
			fx("ipip from a node", encap(labTX, labSelf, orphan4), ReasonNotVIP, ActionPass, nil),
		}},
		{name: "another cluster", nodes: []netip.Addr{labTX, labSelf}, draining: []netip.Addr{labTX}, fixtures: []handoffFixture{
			fx("ipip from a former node", encap(labRedirect, labSelf, onFlow(local4)), ReasonNotVIP, ActionPass, nil),
			fx("orphan", orphan4, ReasonHandoffForwarded, ActionTX, fwdTo(labSelf, labTX, 14)),
		}},
	}
	// DSCP and ECN: tos 0xb9 is DSCP 46 (EF) with ECT(1).
	for i, f := range groups[0].fixtures {
		if f.name == "orphan with dscp and ecn" {
			f.pkt[14+1] = 0xb9
			binary.BigEndian.PutUint16(f.pkt[14+10:], 0)
			binary.BigEndian.PutUint16(f.pkt[14+10:], packet.Checksum(f.pkt[14:34], 0))
			groups[0].fixtures[i].check = func(t *testing.T, name string, pkt, out []byte) {
				checkEncap(t, name, pkt, 14, out, labSelf, labTX, lab.fib[labTX])
				require.Equal(t, byte(0xb8), out[14+1], "%s: outer tos", name)
			}
		}
	}

	d := openTestDataplane(t)
	for _, g := range groups {
		h := Handoff{Self: labSelf, Nodes: labNodes, Draining: g.draining}
		if g.nodes != nil {
			h.Nodes = g.nodes
		}
		if g.off {
			h = Handoff{}
		}
		require.NoError(t, d.SetHandoff(h), g.name)
		model := lab.model(t, d)
		r := lab.runner(t, d)
		for _, f := range g.fixtures {
			name := g.name + ": " + f.name
			got, err := lab.run(r, f.pkt)
			require.NoError(t, err, name)
			want := model.XDP(f.pkt, 0)
			require.Equal(t, f.reason, got.Reason, "%s: reason (%s/%s)", name, got.Reason, got.Action)
			require.Equal(t, want.Reason, got.Reason, "%s: model reason", name)
			require.Equal(t, want.Action, got.Action, "%s: model action (%s)", name, want)
			require.Equal(t, want.Instance, got.Instance, "%s: instance", name)
			require.Equal(t, want.Out, got.Out, "%s: output bytes, model", name)
			switch {
			case f.reason == ReasonSteered || f.reason == ReasonHandoffReceived && f.action == 0:
				require.Contains(t, []Action{ActionPass, ActionRedirect}, got.Action, name)
			default:
				require.Equal(t, f.action, got.Action, "%s: action", name)
			}
			if f.check != nil {
				f.check(t, name, f.pkt, got.Out)
			} else if got.Reason != ReasonHandoffForwarded {
				require.Equal(t, f.pkt, got.Out, "%s: packet must leave untouched", name)
			}
		}
	}
}

// TestXDPHandoffOffMatchesFixtures: with handoff off, and with nodes set
// but nobody draining, every fixture of the plain program gets what it
// always got, in the lab as at the root.
func TestXDPHandoffOffMatchesFixtures(t *testing.T) {
	lab := newHandoffLab(t)
	d := openTestDataplane(t)
	for _, h := range []Handoff{{}, {Self: labSelf, Nodes: labNodes}} {
		require.NoError(t, d.SetHandoff(h))
		model := lab.model(t, d)
		plain := NewModel(mustSnapshot(t, d)) // knows no sockets, no routes
		r := lab.runner(t, d)
		for _, f := range fixtures() {
			got, err := lab.run(r, f.pkt)
			require.NoError(t, err, f.name)
			want := plain.XDP(f.pkt, 0)
			require.Equal(t, want, model.XDP(f.pkt, 0), "%s: the lab's answers change nothing", f.name)
			require.Equal(t, f.reason, got.Reason, "%s (%+v)", f.name, h)
			require.Equal(t, want.Action, got.Action, f.name)
			require.Equal(t, want.Instance, got.Instance, f.name)
			require.Equal(t, want.Out, got.Out, f.name)
		}
	}
}

// TestHandoffProbeIsNoConnection: the orphan check's socket lookup runs
// ober's sk_lookup program when it reaches the listeners, which picks an
// instance's listener as for a new connection. It must not count one: the
// assignment counters move for real connections only.
func TestHandoffProbeIsNoConnection(t *testing.T) {
	lab := newHandoffLab(t)
	d := openTestDataplane(t)
	var err error
	var lns []net.Listener
	lab.do(func() {
		if err = d.AttachSkLookup(); err != nil {
			return
		}
		for _, v6 := range []bool{false, true} {
			for i := uint32(0); i < testInsts; i++ {
				lc := ListenConfig()
				addr := "127.0.0.1:0"
				if v6 {
					addr = "[::1]:0"
				}
				var ln net.Listener
				if ln, err = lc.Listen(context.Background(), "tcp", addr); err != nil {
					return
				}
				lns = append(lns, ln)
				if err = d.SetSocket(lis(listenHTTPS, v6), i, ln.(*net.TCPListener)); err != nil {
					return
				}
			}
		}
	})
	t.Cleanup(func() {
		lab.do(func() { d.DetachSkLookup() })
		for _, ln := range lns {
			ln.Close()
		}
	})
	require.NoError(t, err)
	require.NoError(t, d.SetHandoff(Handoff{Self: labSelf, Nodes: labNodes, Draining: []netip.Addr{labTX}}))

	assigned := func() (flows, none uint64) {
		c, err := d.Counters()
		require.NoError(t, err)
		return totalAssigned(c), c.Unassigned
	}
	flows0, none0 := assigned()
	r := lab.runner(t, d)
	for i := 0; i < 100; i++ {
		src, dst := client4, vip4
		if i%2 == 1 {
			src, dst = client6, vip6
		}
		got, err := lab.run(r, tcp(src, uint16(41000+i), dst, portHTTPS, packet.ACK).Bytes())
		require.NoError(t, err)
		require.Equal(t, ReasonHandoffForwarded, got.Reason, "segment %d", i)
	}
	flows, none := assigned()
	require.Equal(t, flows0, flows, "orphan checks are no connections")
	require.Equal(t, none0, none)

	// A real connection in the lab is counted: the program runs there.
	lab.do(func() {
		var c net.Conn
		nd := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(ap(client4, 0)), Timeout: 5 * time.Second}
		nd.SetMultipathTCP(false)
		if c, err = nd.Dial("tcp", ap(vip4, portHTTPS).String()); err == nil {
			c.Close()
		}
	})
	require.NoError(t, err)
	flows, _ = assigned()
	require.Equal(t, flows0+1, flows, "a connection is counted")
}
