package loader

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// Snapshot is everything the programs read, as plain Go values. The
// dataplane produces one from its maps (Dataplane.Snapshot); tests also
// build them by hand to drive the model.
type Snapshot struct {
	Steering bool      `json:"steering"`
	VIPs     []VIP     `json:"vips"`
	Services []Service `json:"services"`
	// Whitelists holds the lists that were ever set; a missing one admits
	// nobody, as an empty one does.
	Whitelists map[WhitelistID][]netip.Prefix `json:"-"`
	// AccessLists holds the access lists that are set; a missing one
	// admits nobody.
	AccessLists map[AccessID][]AccessEntry `json:"-"`
	// Maglev is nil when no table was ever set.
	MaglevSeed uint32      `json:"maglev_seed"`
	Maglev     []uint32    `json:"-"`
	Instances  []Instance  `json:"instances"`
	CPUMap     []int       `json:"cpumap"`
	Sockets    []SocketRef `json:"sockets"`
	// Handoff is the drain-handoff set, the empty one when off.
	Handoff Handoff `json:"handoff"`
	// Owners are the other nodes' flows recorded for the handoff.
	Owners map[Flow]netip.Addr `json:"-"`
}

// Snapshot reads every table the programs consult.
func (d *Dataplane) Snapshot() (*Snapshot, error) {
	s := &Snapshot{Whitelists: map[WhitelistID][]netip.Prefix{}, AccessLists: map[AccessID][]AccessEntry{}}
	var err error
	if s.Steering, err = d.Steering(); err != nil {
		return nil, err
	}
	if s.VIPs, s.Services, err = d.Services(); err != nil {
		return nil, err
	}
	for id := WhitelistID(0); id < MaxWhitelists; id++ {
		ps, info, err := d.Whitelist(id)
		if err != nil {
			return nil, err
		}
		if info.Generation > 0 {
			s.Whitelists[id] = ps
		}
	}
	ids, err := d.AccessListIDs()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		es, set, err := d.AccessList(id)
		if err != nil {
			return nil, err
		}
		if set {
			s.AccessLists[id] = es
		}
	}
	if s.MaglevSeed, s.Maglev, err = d.Maglev(); err != nil {
		return nil, err
	}
	if s.Instances, err = d.Instances(); err != nil {
		return nil, err
	}
	if s.CPUMap, err = d.CPUMap(); err != nil {
		return nil, err
	}
	if s.Sockets, err = d.Sockets(); err != nil {
		return nil, err
	}
	if s.Handoff, err = d.Handoff(); err != nil {
		return nil, err
	}
	if s.Owners, err = d.Owners(); err != nil {
		return nil, err
	}
	return s, nil
}

// Model is the Go reference model of the XDP and sk_lookup programs: given
// the same tables it predicts the same verdict, reason, instance and
// output bytes. It mirrors bpf/ober.c rule by rule; the differential
// tests hold the two together.
//
// The drain handoff also asks the kernel two things the tables do not
// hold: whether a flow has a socket, and how to reach a node, and it
// keeps time for its rate limit. The model is told the answers the kernel
// would give in the network namespace the program runs in (Sockets, FIB,
// Ifindex) and what the rate limit allows (Allow); left unset, no flow
// has a socket, no node has a route and every forward is allowed.
type Model struct {
	vips       map[[16]byte]VIP
	svcs       map[svcKey]Service
	whitelists [MaxWhitelists][]netip.Prefix
	access     map[AccessID][]AccessEntry
	steering   bool
	seed       uint32
	maglev     []uint32
	instCPU    map[uint32]int
	cpumap     map[int]bool
	// sockets holds listener*MaxInstances+instance of each registered
	// socket: the key the program looks up, in ober_sockets below
	// lowListeners and ober_sockets_hi from there on.
	sockets map[uint32]bool
	handoff Handoff
	owners  map[flowKey]netip.Addr

	// Sockets reports whether the kernel owns a TCP segment's flow
	// (Remote is the segment's source): its socket lookup finds a socket
	// other than a listener, or a listener that takes the segment as the
	// last ACK of a SYN-cookie handshake.
	Sockets func(SkTuple) bool
	// TimeWait reports whether the socket Sockets finds for a tuple is in
	// TIME_WAIT: an earlier connection of the tuple, which yields to a
	// record that names another node.
	TimeWait func(SkTuple) bool
	// FIB is bpf_fib_lookup of a node's address; ok is false when the
	// lookup fails before its MTU check (no route; IPv4 forwarding off
	// on the ingress interface).
	FIB func(dst netip.Addr) (r FIBResult, ok bool)
	// Ifindex is the interface the packets arrive on: a forward that
	// leaves by it is an XDP_TX, by any other a redirect.
	Ifindex int
	// Allow says whether the rate limit lets one more forward through.
	Allow func() bool
}

// FIBResult is what bpf_fib_lookup finds for a route.
type FIBResult struct {
	// Ifindex is the egress interface.
	Ifindex int
	// MTU is the route's: a longer outer packet is too big. The kernel
	// checks it before the neighbour.
	MTU int
	// Neighbour says the next hop's link address is known; SrcMAC and
	// DstMAC are then the egress interface's and the next hop's.
	Neighbour      bool
	SrcMAC, DstMAC [6]byte
}

// NewModel builds a model over a snapshot.
func NewModel(s *Snapshot) *Model {
	m := &Model{
		vips:     map[[16]byte]VIP{},
		svcs:     map[svcKey]Service{},
		access:   map[AccessID][]AccessEntry{},
		steering: s.Steering,
		seed:     s.MaglevSeed,
		maglev:   s.Maglev,
		instCPU:  map[uint32]int{},
		cpumap:   map[int]bool{},
		sockets:  map[uint32]bool{},
		handoff:  s.Handoff,
		owners:   map[flowKey]netip.Addr{},
	}
	for f, o := range s.Owners {
		m.owners[f.key()] = o
	}
	for _, v := range s.VIPs {
		m.vips[addr16(v.Addr)] = v
	}
	for _, sv := range s.Services {
		m.svcs[sv.key()] = sv
	}
	for id, ps := range s.Whitelists {
		if id < MaxWhitelists {
			m.whitelists[id] = ps
		}
	}
	for id, es := range s.AccessLists {
		if id != 0 && id < MaxAccessLists {
			m.access[id] = es
		}
	}
	for _, in := range s.Instances {
		m.instCPU[in.Index] = in.CPU
	}
	for _, c := range s.CPUMap {
		m.cpumap[c] = true
	}
	for _, sk := range s.Sockets {
		m.sockets[sk.Listener*MaxInstances+sk.Instance] = true
	}
	return m
}

// Decision is what the XDP program does with one packet.
type Decision struct {
	Action Action
	Reason Reason
	// Instance is the instance a steered packet went to, else NoInstance.
	Instance uint32
	// Out is the packet as the program leaves it: the RST for a reject,
	// otherwise the input unchanged.
	Out []byte
}

func (d Decision) String() string {
	s := fmt.Sprintf("%s/%s", d.Reason, d.Action)
	if d.Instance != NoInstance {
		s += fmt.Sprintf(" instance %d", d.Instance)
	}
	return s
}

// IP protocol numbers and extension headers the programs know.
const (
	ipprotoHopOpts  = 0
	ipprotoICMP     = 1
	ipprotoIPIP     = 4
	ipprotoTCP      = 6
	ipprotoUDP      = 17
	ipprotoIPv6     = 41
	ipprotoRouting  = 43
	ipprotoFragment = 44
	ipprotoAH       = 51
	ipprotoICMPv6   = 58
	ipprotoDstOpts  = 60
)

type fragKind uint8

const (
	fragNone fragKind = iota
	fragFirst
	fragLater
)

// parsed is what ober_xdp hands ober_decide.
type parsed struct {
	l3off, l3hlen, l4len int
	proto                uint8
	v6, exthdrs          bool
	badL3, v4mapped      bool
	frag                 fragKind
}

// XDP predicts the XDP program's decision for pkt processed on cpu.
func (m *Model) XDP(pkt []byte, cpu int) Decision {
	dec := func(r Reason, a Action) Decision {
		return Decision{Action: a, Reason: r, Instance: NoInstance, Out: pkt}
	}
	if len(pkt) < 14 {
		return dec(ReasonMalformed, ActionPass)
	}
	proto := be16(pkt[12:])
	l3off := 14
	for i := 0; i < maxVLANs; i++ {
		if proto != 0x8100 && proto != 0x88a8 {
			break
		}
		if len(pkt) < l3off+4 {
			return dec(ReasonMalformed, ActionPass)
		}
		proto = be16(pkt[l3off+2:])
		l3off += 4
	}
	if proto == 0x8100 || proto == 0x88a8 {
		return m.deepVLAN(pkt, proto)
	}
	var p parsed
	switch proto {
	case 0x0800:
		if len(pkt) < l3off+20 {
			return dec(ReasonMalformed, ActionPass)
		}
		if ipp := pkt[l3off+9]; ipp == ipprotoIPIP || ipp == ipprotoIPv6 {
			if d, ok := m.receive(pkt, l3off, cpu); ok {
				return d
			}
		}
		p = parseV4(pkt, l3off)
	case 0x86dd:
		if len(pkt) < l3off+40 {
			return dec(ReasonMalformed, ActionPass)
		}
		p = parseV6(pkt, l3off)
	default:
		return dec(ReasonNotVIP, ActionPass)
	}
	return m.decide(pkt, p, cpu, nil)
}

// deepVLAN mirrors ober_deep_vlan: a frame with more VLAN tags than the
// parser takes, looked through for its destination.
func (m *Model) deepVLAN(pkt []byte, proto uint16) Decision {
	dec := func(r Reason, a Action) Decision {
		return Decision{Action: a, Reason: r, Instance: NoInstance, Out: pkt}
	}
	off := 14 + 4*maxVLANs
	for i := maxVLANs; i < maxVLANPeek; i++ {
		if proto != 0x8100 && proto != 0x88a8 {
			break
		}
		if len(pkt) < off+4 {
			return dec(ReasonMalformed, ActionPass)
		}
		proto = be16(pkt[off+2:])
		off += 4
	}
	var daddr [16]byte
	switch proto {
	case 0x8100, 0x88a8:
		return dec(ReasonMalformed, ActionDrop)
	case 0x0800:
		if len(pkt) < off+20 {
			return dec(ReasonMalformed, ActionPass)
		}
		daddr = netip.AddrFrom4([4]byte(pkt[off+16 : off+20])).As16()
	case 0x86dd:
		if len(pkt) < off+40 {
			return dec(ReasonMalformed, ActionPass)
		}
		daddr = [16]byte(pkt[off+24 : off+40])
	default:
		return dec(ReasonNotVIP, ActionPass)
	}
	if _, ok := m.vips[daddr]; ok {
		return dec(ReasonMalformed, ActionDrop)
	}
	return dec(ReasonNotVIP, ActionPass)
}

// received is what ober_rx learns of a packet it decapsulates: the outer
// source it came from.
type received struct {
	src netip.Addr
}

// receive mirrors ober_rx and the parse of the inner packet after it. ok
// is false for a packet that is not handoff traffic for this node.
func (m *Model) receive(pkt []byte, l3off, cpu int) (Decision, bool) {
	h := m.handoff
	ip := pkt[l3off:]
	hlen := int(ip[0]&0xf) * 4
	tot := int(be16(ip[2:]))
	proto := ip[9]
	if ip[0]>>4 != 4 || hlen < 20 || tot < hlen || tot > len(ip) || be16(ip[6:])&0x3fff != 0 ||
		(proto != ipprotoIPIP && proto != ipprotoIPv6) {
		return Decision{}, false
	}
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	if !h.Self.IsValid() || dst != h.Self || src == h.Self || !slices.Contains(h.Nodes, src) {
		return Decision{}, false
	}
	inner := slices.Concat(pkt[:l3off], pkt[l3off+hlen:])
	rx := &received{src: src}
	malformed := Decision{Action: ActionDrop, Reason: ReasonMalformed, Instance: NoInstance, Out: inner}
	if proto == ipprotoIPIP {
		putBE16(inner[l3off-2:], 0x0800)
		if len(inner) < l3off+20 {
			return malformed, true
		}
		return m.decide(inner, parseV4(inner, l3off), cpu, rx), true
	}
	putBE16(inner[l3off-2:], 0x86dd)
	if len(inner) < l3off+40 {
		return malformed, true
	}
	return m.decide(inner, parseV6(inner, l3off), cpu, rx), true
}

func parseV4(pkt []byte, l3off int) parsed {
	ip := pkt[l3off:]
	p := parsed{l3off: l3off}
	hlen := int(ip[0]&0xf) * 4
	tot := int(be16(ip[2:]))
	if ip[0]>>4 != 4 || hlen < 20 || tot < hlen || tot > len(ip) {
		p.badL3 = true
		return p
	}
	fo := be16(ip[6:])
	switch {
	case fo&0x1fff != 0:
		p.frag = fragLater
	case fo&0x2000 != 0:
		p.frag = fragFirst
	}
	p.proto = ip[9]
	p.l3hlen = hlen
	p.l4len = tot - hlen
	return p
}

func isExtHdr(nh uint8) bool {
	switch nh {
	case ipprotoHopOpts, ipprotoRouting, ipprotoDstOpts, ipprotoFragment, ipprotoAH:
		return true
	}
	return false
}

func parseV6(pkt []byte, l3off int) parsed {
	ip := pkt[l3off:]
	p := parsed{l3off: l3off, v6: true}
	mapped := func(a []byte) bool {
		return netip.AddrFrom16([16]byte(a)).Is4In6()
	}
	p.v4mapped = mapped(ip[24:40]) || mapped(ip[8:24])
	end := 40 + int(be16(ip[4:]))
	if ip[0]>>4 != 6 || end > len(ip) {
		p.badL3 = true
		return p
	}
	off := 40
	nh := ip[6]
	done := false
	for i := 0; i < maxExtHdrs && !done; i++ {
		if !isExtHdr(nh) {
			break
		}
		if off > 1024 || off+8 > end {
			p.badL3 = true
			return p
		}
		h := ip[off:]
		p.exthdrs = true
		var n int
		switch nh {
		case ipprotoFragment:
			fo := be16(h[2:])
			n = 8
			if fo&0xfff8 != 0 {
				p.frag = fragLater
				done = true
			} else if fo&1 != 0 {
				p.frag = fragFirst
			}
		case ipprotoAH:
			n = (int(h[1]) + 2) * 4
		default:
			n = (int(h[1]) + 1) * 8
		}
		nh = h[0]
		off += n
	}
	if !done && isExtHdr(nh) {
		p.badL3 = true // chain too long
		return p
	}
	if off > end {
		p.badL3 = true
		return p
	}
	p.proto = nh
	p.l3hlen = off
	p.l4len = end - off
	return p
}

// decide mirrors ober_decide; rx is nil but for a decapsulated packet.
// The program skips lookups this order makes (ober_vip_absent answers for
// a destination no VIP hashes to; a well-formed TCP or UDP packet finds
// its service's row before its VIP's), which only miss or agree: the
// verdicts are these.
func (m *Model) decide(pkt []byte, p parsed, cpu int, rx *received) Decision {
	dec := func(r Reason, a Action) Decision {
		return Decision{Action: a, Reason: r, Instance: NoInstance, Out: pkt}
	}
	passed, steered, notVIP := ReasonPass, ReasonSteered, ActionPass
	if rx != nil {
		passed, steered, notVIP = ReasonHandoffReceived, ReasonHandoffReceived, ActionDrop
	}
	ip := pkt[p.l3off:]
	var saddr, daddr [16]byte
	if p.v6 {
		saddr, daddr = [16]byte(ip[8:24]), [16]byte(ip[24:40])
	} else {
		saddr = netip.AddrFrom4([4]byte(ip[12:16])).As16()
		daddr = netip.AddrFrom4([4]byte(ip[16:20])).As16()
	}
	if rx != nil && (p.badL3 || p.v4mapped) {
		return dec(ReasonMalformed, ActionDrop)
	}
	vip, ok := m.vips[daddr]
	if !ok {
		return dec(ReasonNotVIP, notVIP)
	}
	fail := ActionDrop
	if vip.Host {
		fail = ActionPass
	}
	bad := fail
	if rx != nil {
		bad = ActionDrop
	}
	if p.v4mapped {
		return dec(ReasonMalformed, ActionDrop)
	}
	if p.badL3 {
		return dec(ReasonMalformed, bad)
	}
	icmp := uint8(ipprotoICMP)
	if p.v6 {
		icmp = ipprotoICMPv6
	}
	if p.v6 && p.frag == fragLater {
		return dec(ReasonFragment, fail)
	}
	if p.proto == icmp {
		return dec(passed, ActionPass)
	}
	if p.frag == fragLater {
		return dec(ReasonFragment, fail)
	}
	if p.proto != ipprotoTCP && p.proto != ipprotoUDP {
		if vip.Host {
			return dec(passed, fail)
		}
		return dec(ReasonNoService, fail)
	}
	l4off := p.l3off + p.l3hlen
	if l4off > 0xfff {
		return dec(ReasonMalformed, bad)
	}
	shortL4 := func() Decision {
		if p.frag == fragFirst {
			return dec(ReasonFragment, fail)
		}
		return dec(ReasonMalformed, bad)
	}
	if l4off+8 > len(pkt) || p.l4len < 8 {
		return shortL4()
	}
	l4 := pkt[l4off:]
	var tcpflags uint8
	if p.proto == ipprotoTCP {
		if l4off+20 > len(pkt) || p.l4len < 20 {
			return shortL4()
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 || doff > p.l4len {
			return dec(ReasonMalformed, bad)
		}
		tcpflags = l4[13]
	}
	key := svcKey{Addr: daddr, Port: [2]byte{l4[2], l4[3]}, Proto: p.proto}
	svc, ok := m.svcs[key]
	if !ok {
		if vip.Host {
			return dec(passed, fail)
		}
		return dec(ReasonNoService, fail)
	}
	refuse := func(drop, reject Reason) Decision {
		if svc.Reject && p.proto == ipprotoTCP && p.frag == fragNone && !p.exthdrs && tcpflags&tcpRST == 0 {
			d := dec(reject, ActionTX)
			d.Out = buildRST(pkt, p, tcpflags)
			return d
		}
		return dec(drop, ActionDrop)
	}
	if svc.Enforce && !m.whitelisted(svc.Whitelist, saddr, p.v6) {
		return refuse(ReasonWhitelistDrop, ReasonWhitelistReject)
	}
	if svc.Access != 0 && !m.accessAllows(svc.Access, saddr, p.v6) {
		return refuse(ReasonAccessDenied, ReasonAccessDenied)
	}
	if p.frag == fragFirst {
		return dec(ReasonFragment, ActionPass)
	}
	if !svc.Dispatch {
		return dec(passed, ActionPass)
	}
	// The program's config flag is on exactly when the set is active;
	// a decapsulated segment was forwarded once already.
	if rx == nil && p.proto == ipprotoTCP && tcpflags&(tcpSYN|tcpRST) == 0 && m.handoff.Active {
		if d, ok := m.orphan(pkt, p); ok {
			return d
		}
	}
	if !m.steering || m.maglev == nil {
		return dec(passed, ActionPass)
	}
	ports := binary.NativeEndian.Uint32(l4[:4])
	inst := m.pick(m.flowHash(saddr, daddr, ports, p.v6))
	icpu, ok := m.instCPU[inst]
	if !ok {
		return dec(passed, ActionPass)
	}
	d := dec(steered, ActionRedirect)
	if icpu == cpu {
		d.Action = ActionPass
	} else if !m.cpumap[icpu] {
		return dec(passed, ActionPass)
	}
	d.Instance = inst
	return d
}

// TCP flags the handoff looks at.
const (
	tcpSYN = 0x02
	tcpRST = 0x04
)

// orphan mirrors ober_orphan. ok is false when the segment is no orphan
// (or handoff is off) and the packet goes on as before.
func (m *Model) orphan(pkt []byte, p parsed) (Decision, bool) {
	src := m.handoff.Self
	if !src.IsValid() {
		return Decision{}, false
	}
	ip := pkt[p.l3off:]
	l4 := pkt[p.l3off+p.l3hlen:]
	var local, remote netip.Addr
	var tos byte
	if p.v6 {
		remote, local = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		tos = ip[0]<<4 | ip[1]>>4
	} else {
		remote, local = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		tos = ip[1]
	}
	t := SkTuple{Proto: ProtoTCP, Remote: netip.AddrPortFrom(remote, be16(l4)), Local: netip.AddrPortFrom(local, be16(l4[2:]))}
	owned := m.Sockets != nil && m.Sockets(t)
	tw := owned && m.TimeWait != nil && m.TimeWait(t)
	if owned && !tw {
		return Decision{}, false
	}
	dec := func(r Reason, a Action) (Decision, bool) {
		return Decision{Action: a, Reason: r, Instance: NoInstance, Out: pkt}, true
	}
	target, ok := m.owners[Flow{Client: t.Remote, VIP: t.Local}.key()]
	switch {
	case (!ok || target == src) && tw:
		return Decision{}, false
	case !ok:
		return dec(ReasonHandoffUnknown, ActionDrop)
	case target == src:
		return dec(ReasonHandoffNoTarget, ActionPass)
	case m.Allow != nil && !m.Allow():
		return dec(ReasonHandoffLimited, ActionDrop)
	}
	ilen := p.l3hlen + p.l4len
	var fib FIBResult
	ok = false
	if m.FIB != nil {
		fib, ok = m.FIB(target)
	}
	switch {
	case !ok:
		return dec(ReasonHandoffNoRoute, ActionPass)
	case ilen+20 > fib.MTU:
		return dec(ReasonHandoffTooBig, ActionPass)
	case !fib.Neighbour:
		return dec(ReasonHandoffNoRoute, ActionPass)
	}
	out := make([]byte, 14+20+ilen)
	copy(out[0:6], fib.DstMAC[:])
	copy(out[6:12], fib.SrcMAC[:])
	putBE16(out[12:], 0x0800)
	oh := out[14:34]
	oh[0] = 0x45
	oh[1] = tos & 0xfc
	putBE16(oh[2:], uint16(ilen+20))
	putBE16(oh[6:], 0x4000)
	oh[8] = 64
	oh[9] = ipprotoIPIP
	if p.v6 {
		oh[9] = ipprotoIPv6
	}
	s4, t4 := src.As4(), target.As4()
	copy(oh[12:16], s4[:])
	copy(oh[16:20], t4[:])
	putBE16(oh[10:], ^fold(onesSum(oh)))
	copy(out[34:], pkt[p.l3off:p.l3off+ilen])
	d := Decision{Action: ActionRedirect, Reason: ReasonHandoffForwarded, Instance: NoInstance, Out: out}
	if fib.Ifindex == m.Ifindex {
		d.Action = ActionTX
	}
	return d, true
}

func (m *Model) whitelisted(id WhitelistID, saddr [16]byte, v6 bool) bool {
	if id >= MaxWhitelists {
		return false
	}
	a := netip.AddrFrom16(saddr)
	if !v6 {
		a = a.Unmap()
	}
	for _, p := range m.whitelists[id] {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// accessAllows is the verdict of access list id's longest entry holding
// the source; no list, or no entry holding it, denies.
func (m *Model) accessAllows(id AccessID, saddr [16]byte, v6 bool) bool {
	a := netip.AddrFrom16(saddr)
	if !v6 {
		a = a.Unmap()
	}
	best, allow := -1, false
	for _, e := range m.access[id] {
		if e.Prefix.Bits() > best && e.Prefix.Contains(a) {
			best, allow = e.Prefix.Bits(), e.Allow
		}
	}
	return allow
}

func (m *Model) flowHash(saddr, daddr [16]byte, ports uint32, v6 bool) uint32 {
	w := func(b [16]byte, i int) uint32 { return binary.NativeEndian.Uint32(b[i*4:]) }
	if !v6 {
		return jhash2([]uint32{w(saddr, 3), w(daddr, 3), ports}, m.seed)
	}
	return jhash2([]uint32{w(saddr, 0), w(saddr, 1), w(saddr, 2), w(saddr, 3),
		w(daddr, 0), w(daddr, 1), w(daddr, 2), w(daddr, 3), ports}, m.seed)
}

func (m *Model) pick(hash uint32) uint32 {
	if len(m.maglev) == 0 {
		return NoInstance
	}
	return m.maglev[hash%uint32(len(m.maglev))]
}

// buildRST mirrors reply_rst: the RST answering a refused TCP segment.
func buildRST(pkt []byte, p parsed, flags uint8) []byte {
	l4off := p.l3off + p.l3hlen
	in := pkt[l4off:]
	seq := be32(in[4:])
	ack := binary.NativeEndian.Uint32(in[8:12]) // copied as is
	paylen := uint32(p.l4len) - uint32(in[12]>>4)*4

	out := make([]byte, l4off+20)
	copy(out, pkt)
	copy(out[0:6], pkt[6:12])
	copy(out[6:12], pkt[0:6])
	ip := out[p.l3off:]
	var sum uint64
	if !p.v6 {
		copy(ip[12:16], pkt[p.l3off+16:p.l3off+20])
		copy(ip[16:20], pkt[p.l3off+12:p.l3off+16])
		ip[1] = 0
		putBE16(ip[2:], uint16(p.l3hlen+20))
		putBE16(ip[4:], 0)
		putBE16(ip[6:], 0x4000)
		ip[8] = 64
		putBE16(ip[10:], 0)
		for i := 20; i < p.l3hlen; i++ {
			ip[i] = 1
		}
		sum = onesSum(ip[:p.l3hlen])
		putBE16(ip[10:], ^fold(sum))
		sum = onesSum(ip[12:20])
	} else {
		copy(ip[8:24], pkt[p.l3off+24:p.l3off+40])
		copy(ip[24:40], pkt[p.l3off+8:p.l3off+24])
		putBE32(ip[0:], 0x60000000)
		putBE16(ip[4:], 20)
		ip[7] = 64
		sum = onesSum(ip[8:40])
	}
	sum += uint64(ipprotoTCP) + 20
	t := out[l4off:]
	copy(t[0:2], in[2:4])
	copy(t[2:4], in[0:2])
	if flags&0x10 != 0 {
		binary.NativeEndian.PutUint32(t[4:], ack)
		putBE32(t[8:], 0)
		t[13] = 0x04
	} else {
		n := seq + paylen
		if flags&0x02 != 0 {
			n++
		}
		if flags&0x01 != 0 {
			n++
		}
		putBE32(t[4:], 0)
		putBE32(t[8:], n)
		t[13] = 0x14
	}
	t[12] = 5 << 4
	putBE16(t[14:], 0)
	putBE16(t[16:], 0)
	putBE16(t[18:], 0)
	sum += onesSum(t[:20])
	putBE16(t[16:], ^fold(sum))
	return out
}

// onesSum adds big-endian 16-bit words; the checksum is byte-order
// independent, so this matches the program's native-order 32-bit sums.
func onesSum(b []byte) uint64 {
	var s uint64
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(be16(b[i:]))
	}
	return s
}

func fold(s uint64) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func be16(b []byte) uint16       { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32       { return binary.BigEndian.Uint32(b) }
func putBE16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func putBE32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }

// SkTuple is what sk_lookup sees of a new connection.
type SkTuple struct {
	Proto  Proto
	Remote netip.AddrPort
	Local  netip.AddrPort
}

// SkLookup predicts which instance's socket sk_lookup assigns, and
// whether it got there by falling back from the preferred one. ok is
// false when the program lets the kernel's own lookup continue.
func (m *Model) SkLookup(t SkTuple) (inst uint32, fallback, ok bool) {
	local, remote := t.Local.Addr(), t.Remote.Addr()
	v6 := local.Is6() && !local.Is4In6()
	key := makeSvcKey(local, uint8(t.Proto), t.Local.Port())
	svc, found := m.svcs[key]
	if !found || !svc.Dispatch || svc.Listener >= MaxListeners {
		return 0, false, false
	}
	pref := NoInstance
	if m.maglev != nil {
		var pb [4]byte
		binary.BigEndian.PutUint16(pb[0:], t.Remote.Port())
		binary.BigEndian.PutUint16(pb[2:], t.Local.Port())
		ports := binary.NativeEndian.Uint32(pb[:])
		pref = m.pick(m.flowHash(addr16(remote), addr16(local), ports, v6))
	}
	start := uint32(0)
	if pref < MaxInstances {
		start = pref
	}
	for i := uint32(0); i < MaxInstances; i++ {
		idx := (start + i) & (MaxInstances - 1)
		if m.sockets[svc.Listener*MaxInstances+idx] {
			return idx, idx != pref, true
		}
	}
	return 0, false, false
}

// PreferredInstance is the Maglev choice for a flow, ignoring sockets:
// the instance the XDP program steers the flow's packets towards.
func (m *Model) PreferredInstance(t SkTuple) uint32 {
	local := t.Local.Addr()
	var pb [4]byte
	binary.BigEndian.PutUint16(pb[0:], t.Remote.Port())
	binary.BigEndian.PutUint16(pb[2:], t.Local.Port())
	v6 := local.Is6() && !local.Is4In6()
	return m.pick(m.flowHash(addr16(t.Remote.Addr()), addr16(local), binary.NativeEndian.Uint32(pb[:]), v6))
}
