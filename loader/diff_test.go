package loader

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/loader/packet"
)

// packetGen makes frames aimed at the interesting parts of the test site:
// mostly well-formed and addressed to its VIPs, services and whitelists,
// then often mutated (bytes flipped, cut short, padded with junk). Given
// a handoff lab it also makes segments of the lab's flows, which have a
// socket, and packets from (or as if from) the lab's nodes to it.
type packetGen struct {
	rng *rand.Rand
	lab *handoffLab
}

func (g packetGen) pick(n int) int { return g.rng.IntN(n) }

func (g packetGen) addr(v6 bool, pool ...netip.Addr) netip.Addr {
	if g.pick(5) == 0 {
		var b [16]byte
		for i := range b {
			b[i] = byte(g.rng.Uint32())
		}
		if v6 {
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return pool[g.pick(len(pool))]
}

func (g packetGen) bytes(max int) []byte {
	b := make([]byte, g.pick(max+1))
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	return b
}

func (g packetGen) spec() packet.Spec {
	v6 := g.pick(2) == 0
	var s packet.Spec
	if v6 {
		s.Src = g.addr(true, client6, stranger6, netip.MustParseAddr("::ffff:198.51.100.7"))
		s.Dst = g.addr(true, vip6, vip6, host6, other6)
		if g.pick(20) == 0 {
			s.Dst = netip.MustParseAddr("::ffff:192.0.2.10")
		}
	} else {
		s.Src = g.addr(false, client4, client4b, stranger4, router4)
		s.Dst = g.addr(false, vip4, vip4, host4, other4)
	}
	switch r := g.pick(10); {
	case r < 5:
		s.Proto = packet.ProtoTCP
	case r < 7:
		s.Proto = packet.ProtoUDP
	case r < 8:
		s.Proto = packet.ProtoICMP
		if v6 {
			s.Proto = packet.ProtoICMPv6
		}
	default:
		s.Proto = uint8(g.pick(256))
	}
	ports := []uint16{portHTTPS, portHTTP, portReject, portReject, portDNS, portBGP, portBFD, 22}
	if g.pick(2) == 0 {
		// Services with access lists, and a port range and its edges. The
		// reject ports are weighted: a RST is only answered to a segment
		// without RST, fragment or extension headers.
		ports = []uint16{portACL, portACLReject, portACLReject, portACLReject, portACLReject, portACLOpen,
			portACLUnset, portACLWL, portACLUDP, portRangeFirst, portRangeFirst + 4, portRangeLast, portRangeLast + 1}
	}
	s.DstPort = ports[g.pick(len(ports))]
	if g.pick(8) == 0 {
		s.DstPort = uint16(g.rng.Uint32())
	}
	s.SrcPort = uint16(g.rng.Uint32())
	if g.lab != nil && s.Proto == packet.ProtoTCP && g.pick(6) == 0 {
		fs := append(slices.Clone(g.lab.flows), g.lab.timeWait...)
		f := fs[g.pick(len(fs))]
		s.Src, s.SrcPort, s.Dst, s.DstPort = f.Remote.Addr(), f.Remote.Port(), f.Local.Addr(), f.Local.Port()
	} else if g.lab != nil && s.Proto == packet.ProtoTCP && g.pick(3) == 0 {
		// A flow recorded for one of the nodes: an orphan goes there.
		owned := slices.SortedFunc(maps.Keys(labOwners()), func(a, b Flow) int { return strings.Compare(a.String(), b.String()) })
		f := owned[g.pick(len(owned))]
		s.Src, s.SrcPort, s.Dst, s.DstPort = f.Client.Addr(), f.Client.Port(), f.VIP.Addr(), f.VIP.Port()
	}
	s.Flags = byte(g.rng.Uint32())
	if g.lab != nil && g.pick(2) == 0 {
		s.DstPort = portHTTPS // dispatched, for everyone
	}
	if g.lab != nil && g.pick(2) == 0 {
		// Segments in the middle of a flow: orphans, where no socket has them.
		s.Flags = []byte{packet.ACK, packet.ACK | packet.PSH, packet.FIN | packet.ACK, packet.ACK | 0x20}[g.pick(4)]
	}
	s.Seq, s.Ack = g.rng.Uint32(), g.rng.Uint32()
	for n := []int{0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 5, maxVLANPeek + 1}[g.pick(12)]; n > 0; n-- {
		tpid := []uint16{0x8100, 0x88a8}[g.pick(2)]
		s.VLANs = append(s.VLANs, packet.VLAN{TPID: tpid, TCI: uint16(g.pick(4096))})
	}
	if !v6 && g.pick(5) == 0 {
		s.IPOptions = g.bytes(40)
	}
	if v6 && g.pick(4) == 0 {
		types := []uint8{packet.ExtHopOpts, packet.ExtRouting, packet.ExtDstOpts, packet.ExtAH}
		for n := 1 + g.pick(7); n > 0; n-- {
			s.ExtHdrs = append(s.ExtHdrs, packet.ExtHdr{Type: types[g.pick(len(types))], Data: g.bytes(20)})
		}
	}
	if g.pick(7) == 0 {
		s.Frag = &packet.Frag{More: g.pick(2) == 0, ID: g.rng.Uint32()}
		if g.pick(2) == 0 {
			s.Frag.Offset = uint16(g.pick(200))
		}
	}
	if g.pick(5) == 0 {
		s.TCPOptions = g.bytes(40)
	}
	s.Payload = g.bytes(200)
	if g.lab != nil && g.pick(3) == 0 {
		s.Payload = append(g.bytes(800), g.bytes(500)...) // too big, or not, behind a small MTU
	}
	if len(s.ExtHdrs) > 0 && g.pick(4) == 0 {
		s.Proto = 59 // no next header: the chain ends the packet
		s.Payload = nil
	}
	return s
}

// outer puts s in an outer IPv4 header as a node would, or nearly so: from
// a node or not, to the lab or not, the protocol matching or not.
func (g packetGen) outer(s packet.Spec) packet.Spec {
	inner := ipPacket(s)
	proto := uint8(ipprotoIPIP)
	if inner[0]>>4 == 6 {
		proto = ipprotoIPv6
	}
	switch g.pick(12) {
	case 0:
		proto ^= ipprotoIPIP ^ ipprotoIPv6
	case 1:
		proto = uint8(g.pick(256))
	}
	o := packet.Spec{
		Src:     g.addr(false, append(slices.Clone(labNodes), labStranger, labSelf)...),
		Dst:     g.addr(false, labSelf, labSelf, labSelf, labTX, vip4),
		Proto:   proto,
		Payload: inner,
		VLANs:   s.VLANs,
	}
	if g.pick(8) == 0 {
		o.IPOptions = g.bytes(16)
	}
	if g.pick(12) == 0 {
		o.Frag = &packet.Frag{More: g.pick(2) == 0, Offset: uint16(g.pick(2) * g.pick(100))}
	}
	if g.pick(10) == 0 {
		o.Payload = inner[:g.pick(len(inner)+1)]
	}
	return o
}

func (g packetGen) frame() []byte {
	s := g.spec()
	if g.lab != nil && g.pick(4) == 0 {
		s = g.outer(s)
	}
	b := s.Bytes()
	if len(b) > 1400 {
		b = b[:1400]
	}
	switch g.pick(8) {
	case 0, 1: // flip bytes in the headers
		for n := 1 + g.pick(4); n > 0; n-- {
			i := g.pick(min(len(b), 120))
			b[i] ^= byte(1 + g.pick(255))
		}
	case 2: // cut short
		b = b[:14+g.pick(len(b)-13)]
	case 3: // junk after the packet
		b = append(b, g.bytes(64)...)
	case 4: // one header byte set to an edge value
		b[g.pick(min(len(b), 90))] = []byte{0, 0xff, 0x40, 0x45, 0x60, 5, 6, 17}[g.pick(8)]
	}
	return b
}

// diffState varies the tables between runs so the differential covers
// steering, dead instances and empty Maglev slots.
func diffState(t testing.TB, d *Dataplane, variant int) {
	t.Helper()
	switch variant {
	case 1: // instance 3 has no CPU, a stretch of the table is empty
		insts := testInstances()[:3]
		require.NoError(t, d.SetInstances(insts))
		tab := roundRobinTable(testMSize, testInsts)
		for i := 0; i < 40; i++ {
			tab[i] = NoInstance
		}
		require.NoError(t, d.SetMaglev(testSeed+1, tab))
	case 2: // steering off
		require.NoError(t, d.SetSteering(false))
	}
}

// diffVariant is one state of the tables the differential runs under.
type diffVariant struct {
	name    string
	state   int // diffState's variant
	handoff Handoff
	owners  bool // the lab's flows are recorded (labOwners)
	// access replaces the site's access lists with random ones.
	access bool
}

// randomSiteAccess sets each of the site's access list ids to random
// rules, compiled, over prefixes of the generator's source addresses (so
// that they decide its packets), or leaves it unset.
func randomSiteAccess(t testing.TB, d *Dataplane, rng *rand.Rand) {
	t.Helper()
	pool := []netip.Addr{client4, client4b, stranger4, router4, client6, stranger6,
		netip.MustParseAddr("198.51.100.0"), netip.MustParseAddr("2001:db8::")}
	for _, id := range []AccessID{aclStrict, aclOpen, aclUnset} {
		if rng.IntN(5) == 0 {
			require.NoError(t, d.ClearAccessList(id))
			continue
		}
		var rs []AccessRule
		for n := rng.IntN(30); n > 0; n-- {
			a := pool[rng.IntN(len(pool))]
			if rng.IntN(6) == 0 {
				b := a.AsSlice()
				b[rng.IntN(len(b))] = byte(rng.Uint32())
				a, _ = netip.AddrFromSlice(b)
			}
			rs = append(rs, AccessRule{Prefix: netip.PrefixFrom(a, rng.IntN(a.BitLen()+1)), Allow: rng.IntN(2) == 0})
		}
		es, err := CompileAccess(rs, rng.IntN(2) == 0)
		require.NoError(t, err)
		require.NoError(t, d.SetAccessList(id, es))
	}
}

// diffVariants cover each way the steering and the handoff can be set up,
// the handoff's reaching every answer the lab's FIB gives (the recorded
// flows' owners are reached in each of them).
func diffVariants() []diffVariant {
	active := Handoff{Self: labSelf, Nodes: labNodes, Active: true}
	return []diffVariant{
		{"steering, handoff off, the site's access lists", 0, Handoff{}, true, false},
		{"dead instance, active: orphans to their owners", 1, active, true, true},
		{"steering off, active", 2, active, true, true},
		{"active, nothing recorded: orphans dropped", 0, active, false, true},
		{"active, another cluster", 0, Handoff{Self: labSelf, Nodes: []netip.Addr{labSelf, labTX}, Active: true}, true, true},
		{"nobody in transition: decapsulation only", 0, Handoff{Self: labSelf, Nodes: labNodes}, true, true},
	}
}

func diffPackets() int {
	if n, err := strconv.Atoi(os.Getenv("OBER_DIFF_PACKETS")); err == nil && n > 0 {
		return n
	}
	return 120000
}

// TestXDPDifferential runs random and mutated frames through the XDP
// program and the Go model and requires identical verdicts, reasons,
// instances and output bytes. OBER_DIFF_PACKETS overrides the count.
//
// It runs in the handoff lab, so that the handoff's socket and FIB lookups
// have answers the model is told; with handoff off they are never made.
func TestXDPDifferential(t *testing.T) {
	total := diffPackets()
	lab := newHandoffLab(t)
	variants := diffVariants()
	seed := uint64(0x0be7)
	seen := map[string]int{}
	for v, dv := range variants {
		// Each variant runs well within the minute a TIME_WAIT lasts.
		lab.refreshTimeWait(t)
		d := openTestDataplane(t)
		diffState(t, d, dv.state)
		require.NoError(t, d.SetHandoff(dv.handoff))
		if dv.owners {
			setOwners(t, d, labOwners())
			setOwners(t, d, labTimeWaitOwners())
		}
		rng := rand.New(rand.NewPCG(seed, uint64(v)))
		if dv.access {
			randomSiteAccess(t, d, rng)
		}
		model := lab.model(t, d)
		g := packetGen{rng: rng, lab: lab}
		r := lab.runner(t, d)
		for i := 0; i < total/len(variants); i++ {
			pkt := g.frame()
			want := model.XDP(pkt, 0)
			got, err := lab.run(r, pkt)
			require.NoError(t, err, "variant %d packet %d: %x", v, i, pkt)
			if got.Action != want.Action || got.Reason != want.Reason || got.Instance != want.Instance ||
				string(got.Out) != string(want.Out) {
				t.Fatalf("variant %d (%s) packet %d differs:\n  bpf   %s/%s instance %d\n  model %s\n  packet %x\n  bpf out   %x\n  model out %x",
					v, dv.name, i, got.Reason, got.Action, int32(got.Instance), want, pkt, got.Out, want.Out)
			}
			seen[fmt.Sprintf("%s/%s", want.Reason, want.Action)]++
		}
	}
	t.Logf("%d packets, verdicts: %v", total, seen)
	// A generator that never reached a verdict would make agreement cheap.
	for _, k := range []string{"not_vip/pass", "passed/pass", "steered/redirect", "steered/pass", "no_service/drop",
		"whitelist_drop/drop", "whitelist_reject/tx", "fragment/drop", "fragment/pass", "malformed/drop", "malformed/pass",
		"not_vip/drop", "handoff_forwarded/tx", "handoff_forwarded/redirect", "handoff_received/pass",
		"handoff_received/redirect", "handoff_no_target/pass", "handoff_no_route/pass", "handoff_too_big/pass",
		"handoff_unknown/drop", "access_denied/drop", "access_denied/tx"} {
		require.Greater(t, seen[k], 50, "verdict %s barely exercised", k)
	}
}

// FuzzXDP holds the program and the model together on arbitrary input,
// with handoff on: a node is in transition and the lab's flows are
// recorded. It runs in a handoff lab
// of its own thread (a fuzz worker's cleanups never run). Seeded with the
// fixtures and frames of the handoff generator; `make fuzz` runs it for
// longer.
func FuzzXDP(f *testing.F) {
	for _, fx := range fixtures() {
		f.Add(fx.pkt)
	}
	d := openUnpinnedDataplane(f)
	lab := newPrivateHandoffLab(f)
	require.NoError(f, d.SetHandoff(Handoff{Self: labSelf, Nodes: labNodes, Active: true}))
	setOwners(f, d, labOwners())
	setOwners(f, d, labTimeWaitOwners())
	g := packetGen{rng: rand.New(rand.NewPCG(0xf0, 0x22)), lab: lab}
	for i := 0; i < 64; i++ {
		f.Add(g.frame())
	}
	model := lab.model(f, d)
	r := lab.runner(f, d)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < 14 || len(pkt) > 1500 {
			return // BPF_PROG_TEST_RUN takes a whole Ethernet header, within a page
		}
		want := model.XDP(pkt, 0)
		got, err := lab.run(r, pkt)
		require.NoError(t, err)
		require.Equal(t, want.Action, got.Action, "action for %x", pkt)
		require.Equal(t, want.Reason, got.Reason, "reason for %x", pkt)
		require.Equal(t, want.Instance, got.Instance, "instance for %x", pkt)
		require.Equal(t, want.Out, got.Out, "output for %x", pkt)
	})
}
