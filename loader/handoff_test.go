package loader

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/loader/packet"
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
		{"nobody in transition", Handoff{Self: self, Nodes: nodes}, ""},
		{"active", Handoff{Self: self, Nodes: nodes, Active: true}, ""},
		{"rate limited", Handoff{Self: self, Nodes: nodes, Active: true, Rate: 1000, Burst: 100}, ""},
		{"max nodes", Handoff{Self: many[0], Nodes: many[:MaxNodes]}, ""},
		{"no self", Handoff{Nodes: nodes}, "handoff.self: address is missing"},
		{"active without nodes", Handoff{Active: true}, "handoff.self: address is missing"},
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
		{"rate without burst", Handoff{Self: self, Nodes: nodes, Rate: 10}, "handoff.burst: 0: a rate needs a burst of at least 1"},
		{"rate too high", Handoff{Self: self, Nodes: nodes, Rate: 2e9, Burst: 1},
			"handoff.rate: 2000000000 per second exceeds the limit of 1000000000"},
		{"burst too high", Handoff{Self: self, Nodes: nodes, Rate: 10, Burst: 1 << 40},
			"handoff.burst: 1099511627776 exceeds the limit of 4294967295"},
	} {
		err := ValidateHandoff(c.h)
		if c.err == "" {
			require.NoError(t, err, c.name)
			continue
		}
		require.EqualError(t, err, c.err, c.name)
	}
}

// TestGCRA pins how a rate and a burst become the program's bucket: one
// forward per interval, and burst of them at once.
func TestGCRA(t *testing.T) {
	for _, c := range []struct {
		rate, burst, interval, tolerance uint64
	}{
		{0, 0, 0, 0},
		{1000, 1, 1_000_000, 0},
		{1000, 100, 1_000_000, 99_000_000},
		{3, 2, 333_333_333, 333_333_333},
		{1_000_000_000, 5, 1, 4},
	} {
		i, tol := gcra(c.rate, c.burst)
		require.Equal(t, c.interval, i, "rate %d", c.rate)
		require.Equal(t, c.tolerance, tol, "rate %d burst %d", c.rate, c.burst)
	}
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
	set := Handoff{Self: nodes[1], Nodes: nodes, Active: true, Rate: 5000, Burst: 50}
	require.NoError(t, d.SetHandoff(set))
	got, err := d.Handoff()
	require.NoError(t, err)
	require.Equal(t, set, got, "read back")
	require.Equal(t, uint32(cfgSteer|cfgHandoff), flags(), "a node in transition: the program looks for orphans")
	snap := mustSnapshot(t, d)
	require.Equal(t, got, snap.Handoff)

	// Steering and handoff share the config word: neither clobbers the other.
	require.NoError(t, d.SetSteering(false))
	require.Equal(t, uint32(cfgHandoff), flags())
	require.NoError(t, d.SetSteering(true))
	require.Equal(t, uint32(cfgSteer|cfgHandoff), flags())

	require.NoError(t, d.SetHandoff(Handoff{Self: nodes[1], Nodes: nodes}))
	require.Equal(t, uint32(cfgSteer), flags(), "nobody in transition: no orphan checks")
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

// TestOwners: recorded flows read back with their owners, a flow recorded
// again moves to its new owner, and a clear forgets them all at once.
func TestOwners(t *testing.T) {
	d := openTestDataplane(t)
	got, err := d.Owners()
	require.NoError(t, err)
	require.Empty(t, got)
	a, b := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	f4 := Flow{Client: ap(client4, 40000), VIP: ap(vip4, portHTTPS)}
	f6 := Flow{Client: ap(client6, 40001), VIP: ap(vip6, portHTTPS)}
	require.NoError(t, d.AddOwners(a, []Flow{f4, f6}))
	require.NoError(t, d.AddOwners(b, []Flow{f6}))
	got, err = d.Owners()
	require.NoError(t, err)
	require.Equal(t, map[Flow]netip.Addr{f4: a, f6: b}, got)
	require.Equal(t, got, mustSnapshot(t, d).Owners)

	require.NoError(t, d.ClearOwners())
	got, err = d.Owners()
	require.NoError(t, err)
	require.Empty(t, got)
	require.EqualError(t, d.AddOwners(netip.MustParseAddr("2001:db8::1"), []Flow{f4}),
		"record flows: owner: 2001:db8::1 is IPv6; nodes hand off over IPv4 (IPv6 clients are carried inside it)")
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
	// Orphans by the node their flow is recorded for: the client port
	// says which (labOwners).
	ack := func(src netip.Addr, sport uint16, dst netip.Addr) packet.Spec {
		s := tcp(src, sport, dst, portHTTPS, packet.ACK|packet.PSH)
		s.Payload = []byte("GET /bucket/key HTTP/1.1\r\n\r\n")
		s.SrcMAC, s.DstMAC = [6]byte{2, 0, 0, 0, 0, 0xaa}, [6]byte{2, 0, 0, 0, 0, 0xbb}
		return s
	}
	orphanOf := func(owner netip.Addr, v6 bool) packet.Spec {
		for f, o := range labOwners() {
			if o == owner && f.Client.Addr().Is6() == v6 {
				return ack(f.Client.Addr(), f.Client.Port(), f.VIP.Addr())
			}
		}
		panic("no flow recorded for " + owner.String())
	}
	orphan4, orphan6 := orphanOf(labTX, false), orphanOf(labTX, true)
	unknown4, unknown6 := ack(client4, 40199, vip4), ack(client6, 40199, vip6)
	onFlow := func(f SkTuple) packet.Spec { return ack(f.Remote.Addr(), f.Remote.Port(), f.Local.Addr()) }
	vlan := []packet.VLAN{{TPID: 0x8100, TCI: 100}}
	qinq := []packet.VLAN{{TPID: 0x88a8, TCI: 10}, {TPID: 0x8100, TCI: 100}}
	sized := func(s packet.Spec, n int) packet.Spec {
		return with(s, func(s *packet.Spec) { s.Payload = make([]byte, n) })
	}
	fwdTo := func(dst netip.Addr, inL3off int) func(*testing.T, string, []byte, []byte) {
		return func(t *testing.T, name string, pkt, out []byte) {
			checkEncap(t, name, pkt, inL3off, out, labSelf, dst, lab.fib[dst])
		}
	}
	decapped := func(l3off int) func(*testing.T, string, []byte, []byte) {
		return func(t *testing.T, name string, pkt, out []byte) { checkDecap(t, name, pkt, l3off, out) }
	}
	fx := func(name string, s packet.Spec, r Reason, a Action, check func(*testing.T, string, []byte, []byte)) handoffFixture {
		return handoffFixture{name, s.Bytes(), r, a, check}
	}
	padded := append(orphan4.Bytes(), make([]byte, 10)...) // Ethernet padding
	small := orphanOf(labSmall, false)
	groups := []struct {
		name     string
		inactive bool
		nodes    []netip.Addr // labNodes if nil
		off      bool
		fixtures []handoffFixture
	}{
		{name: "active", fixtures: []handoffFixture{
			fx("v4 orphan to its owner", orphan4, ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 14)),
			fx("v6 orphan to its owner", orphan6, ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 14)),
			fx("fin orphan", with(orphan4, func(s *packet.Spec) { s.Flags = packet.FIN | packet.ACK }), ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 14)),
			fx("bare ack orphan", with(orphan4, func(s *packet.Spec) { s.Flags = packet.ACK; s.Payload = nil }), ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 14)),
			fx("orphan with ip options", with(orphan4, func(s *packet.Spec) { s.IPOptions = []byte{7, 7, 4, 0, 0, 0, 0} }), ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 14)),
			fx("orphan with dscp and ecn", with(orphan4, func(s *packet.Spec) { s.Payload = nil; s.Flags = packet.ACK }), ReasonHandoffForwarded, ActionTX, nil),
			fx("tagged orphan leaves untagged", with(orphan4, func(s *packet.Spec) { s.VLANs = vlan }), ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 18)),
			fx("qinq v6 orphan", with(orphan6, func(s *packet.Spec) { s.VLANs = qinq }), ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 22)),
			fx("v6 orphan with ext headers", with(orphan6, func(s *packet.Spec) { s.ExtHdrs = []packet.ExtHdr{{Type: packet.ExtDstOpts}} }), ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 14)),
			{"padded orphan is trimmed", padded, ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 14)},
			fx("v4 orphan, owner on another link", orphanOf(labRedirect, false), ReasonHandoffForwarded, ActionRedirect, fwdTo(labRedirect, 14)),
			fx("v6 orphan, owner on another link", orphanOf(labRedirect, true), ReasonHandoffForwarded, ActionRedirect, fwdTo(labRedirect, 14)),
			fx("owner unroutable", orphanOf(labNoRoute, false), ReasonHandoffNoRoute, ActionPass, nil),
			fx("owner unresolved", orphanOf(labUnresolved, true), ReasonHandoffNoRoute, ActionPass, nil),
			fx("recorded for this node itself", orphanOf(labSelf, false), ReasonHandoffNoTarget, ActionPass, nil),
			fx("v6 recorded for this node itself", orphanOf(labSelf, true), ReasonHandoffNoTarget, ActionPass, nil),
			// 1488 bytes from a client with MTU 1500 make 1508 with the outer
			// header: more than hx0's link carries.
			fx("full-size orphan over a 1500-byte link", sized(orphan4, 1460-12), ReasonHandoffTooBig, ActionPass, nil),
			fx("fits behind a small mtu", sized(small, labSmallMTU-20-20-20), ReasonHandoffForwarded, ActionRedirect, fwdTo(labSmall, 14)),
			fx("one byte too big behind a small mtu", sized(small, labSmallMTU-20-20-20+1), ReasonHandoffTooBig, ActionPass, nil),
			// A flow nobody recorded: dropped, for the client to resend.
			fx("v4 orphan of no recorded flow", unknown4, ReasonHandoffUnknown, ActionDrop, nil),
			fx("v6 orphan of no recorded flow", unknown6, ReasonHandoffUnknown, ActionDrop, nil),
			// Never an orphan.
			fx("syn", with(unknown4, func(s *packet.Spec) { s.Flags = packet.SYN }), ReasonSteered, 0, nil),
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
			// Orphaned here too: never forwarded a second time, whoever
			// the records name; the kernel answers it.
			fx("orphan inside is not sent on", encap(labNoRoute, labSelf, orphanOf(labRedirect, false)), ReasonHandoffReceived, 0, decapped(14)),
			fx("v6 orphan inside is not sent on", encap(labRedirect, labSelf, orphan6), ReasonHandoffReceived, 0, decapped(14)),
			fx("unknown orphan inside is not dropped", encap(labTX, labSelf, unknown4), ReasonHandoffReceived, 0, decapped(14)),
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
		{name: "nobody in transition", inactive: true, fixtures: []handoffFixture{
			fx("orphan", orphan4, ReasonSteered, 0, nil),
			fx("unknown orphan", unknown6, ReasonSteered, 0, nil),
			fx("from a node", encap(labTX, labSelf, orphan4), ReasonHandoffReceived, 0, decapped(14)),
		}},
		{name: "off", off: true, fixtures: []handoffFixture{
			fx("orphan", orphan4, ReasonSteered, 0, nil),
			fx("v6 orphan", orphan6, ReasonSteered, 0, nil),
			fx("ipip from a node", encap(labTX, labSelf, orphan4), ReasonNotVIP, ActionPass, nil),
		}},
		{name: "another cluster", nodes: []netip.Addr{labTX, labSelf}, fixtures: []handoffFixture{
			fx("ipip from a former node", encap(labRedirect, labSelf, onFlow(local4)), ReasonNotVIP, ActionPass, nil),
			fx("orphan", orphan4, ReasonHandoffForwarded, ActionTX, fwdTo(labTX, 14)),
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
	setOwners(t, d, labOwners())
	for _, g := range groups {
		h := Handoff{Self: labSelf, Nodes: labNodes, Active: !g.inactive}
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

// setOwners records each flow for its owner.
func setOwners(t testing.TB, d *Dataplane, owners map[Flow]netip.Addr) {
	t.Helper()
	byOwner := map[netip.Addr][]Flow{}
	for f, o := range owners {
		byOwner[o] = append(byOwner[o], f)
	}
	for o, fs := range byOwner {
		require.NoError(t, d.AddOwners(o, fs))
	}
}

// TestXDPHandoffOffMatchesFixtures: with handoff off, and with nodes set
// but nobody in transition, every fixture of the plain program gets what it
// always got, in the lab as at the root.
func TestXDPHandoffOffMatchesFixtures(t *testing.T) {
	lab := newHandoffLab(t)
	d := openTestDataplane(t)
	setOwners(t, d, labOwners())
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
// instance's listener as for a new connection. It must not count one nor
// record one for the other nodes: the assignment counters and the record
// of new flows move for real connections only.
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
	require.NoError(t, d.SetHandoff(Handoff{Self: labSelf, Nodes: labNodes, Active: true}))
	recorded, err := d.NewFlows()
	require.NoError(t, err)
	t.Cleanup(func() { recorded.Close() })
	segment := func(i int) packet.Spec {
		if i%2 == 1 {
			return tcp(client6, uint16(41000+i), vip6, portHTTPS, packet.ACK)
		}
		return tcp(client4, uint16(41000+i), vip4, portHTTPS, packet.ACK)
	}
	var probed []Flow
	for i := 0; i < 100; i++ {
		s := segment(i)
		probed = append(probed, Flow{Client: ap(s.Src, s.SrcPort), VIP: ap(s.Dst, s.DstPort)})
	}
	require.NoError(t, d.AddOwners(labTX, probed))

	assigned := func() (flows, none uint64) {
		c, err := d.Counters()
		require.NoError(t, err)
		return totalAssigned(c), c.Unassigned
	}
	flows0, none0 := assigned()
	r := lab.runner(t, d)
	for i := 0; i < 100; i++ {
		got, err := lab.run(r, segment(i).Bytes())
		require.NoError(t, err)
		require.Equal(t, ReasonHandoffForwarded, got.Reason, "segment %d", i)
	}
	flows, none := assigned()
	require.Equal(t, flows0, flows, "orphan checks are no connections")
	require.Equal(t, none0, none)
	fs, err := recorded.Read(50*time.Millisecond, 1000)
	require.NoError(t, err)
	require.Empty(t, fs, "orphan checks record no new flow")

	// A real connection in the lab is counted: the program runs there.
	dial := func() (from netip.AddrPort) {
		lab.do(func() {
			var c net.Conn
			nd := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(ap(client4, 0)), Timeout: 5 * time.Second}
			nd.SetMultipathTCP(false)
			if c, err = nd.Dial("tcp", ap(vip4, portHTTPS).String()); err == nil {
				from = c.LocalAddr().(*net.TCPAddr).AddrPort()
				c.Close()
			}
		})
		require.NoError(t, err)
		return netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	}
	from := dial()
	flows, _ = assigned()
	require.Equal(t, flows0+1, flows, "a connection is counted")
	fs, err = recorded.Read(time.Second, 1000)
	require.NoError(t, err)
	require.Equal(t, []Flow{{Client: from, VIP: ap(vip4, portHTTPS)}}, fs, "a connection is recorded while active")

	// Nobody in transition: nothing is recorded.
	require.NoError(t, d.SetHandoff(Handoff{Self: labSelf, Nodes: labNodes}))
	dial()
	fs, err = recorded.Read(50*time.Millisecond, 1000)
	require.NoError(t, err)
	require.Empty(t, fs, "no flow is recorded while nobody is in transition")
}
