package loader

import (
	"encoding/binary"
	"fmt"
	"net/netip"
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
	// Maglev is nil when no table was ever set.
	MaglevSeed uint32      `json:"maglev_seed"`
	Maglev     []uint32    `json:"-"`
	Instances  []Instance  `json:"instances"`
	CPUMap     []int       `json:"cpumap"`
	Sockets    []SocketRef `json:"sockets"`
}

// Snapshot reads every table the programs consult.
func (d *Dataplane) Snapshot() (*Snapshot, error) {
	s := &Snapshot{Whitelists: map[WhitelistID][]netip.Prefix{}}
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
	return s, nil
}

// Model is the Go reference model of the XDP and sk_lookup programs: given
// the same tables it predicts the same verdict, reason, instance and
// output bytes. It mirrors bpf/ober.c rule by rule; the differential
// tests hold the two together.
type Model struct {
	vips       map[[16]byte]VIP
	svcs       map[svcKey]Service
	whitelists [MaxWhitelists][]netip.Prefix
	steering   bool
	seed       uint32
	maglev     []uint32
	instCPU    map[uint32]int
	cpumap     map[int]bool
	sockets    map[uint32]bool
}

// NewModel builds a model over a snapshot.
func NewModel(s *Snapshot) *Model {
	m := &Model{
		vips:     map[[16]byte]VIP{},
		svcs:     map[svcKey]Service{},
		steering: s.Steering,
		seed:     s.MaglevSeed,
		maglev:   s.Maglev,
		instCPU:  map[uint32]int{},
		cpumap:   map[int]bool{},
		sockets:  map[uint32]bool{},
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
	ipprotoTCP      = 6
	ipprotoUDP      = 17
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
	var p parsed
	switch proto {
	case 0x0800:
		if len(pkt) < l3off+20 {
			return dec(ReasonMalformed, ActionPass)
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
	return m.decide(pkt, p, cpu)
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

func (m *Model) decide(pkt []byte, p parsed, cpu int) Decision {
	dec := func(r Reason, a Action) Decision {
		return Decision{Action: a, Reason: r, Instance: NoInstance, Out: pkt}
	}
	ip := pkt[p.l3off:]
	var saddr, daddr [16]byte
	if p.v6 {
		saddr, daddr = [16]byte(ip[8:24]), [16]byte(ip[24:40])
	} else {
		saddr = netip.AddrFrom4([4]byte(ip[12:16])).As16()
		daddr = netip.AddrFrom4([4]byte(ip[16:20])).As16()
	}
	vip, ok := m.vips[daddr]
	if !ok {
		return dec(ReasonNotVIP, ActionPass)
	}
	fail := ActionDrop
	if vip.Host {
		fail = ActionPass
	}
	if p.v4mapped {
		return dec(ReasonMalformed, ActionDrop)
	}
	if p.badL3 {
		return dec(ReasonMalformed, fail)
	}
	icmp := uint8(ipprotoICMP)
	if p.v6 {
		icmp = ipprotoICMPv6
	}
	if p.proto == icmp {
		return dec(ReasonPass, ActionPass)
	}
	if p.frag == fragLater {
		return dec(ReasonFragment, fail)
	}
	if p.proto != ipprotoTCP && p.proto != ipprotoUDP {
		if vip.Host {
			return dec(ReasonPass, fail)
		}
		return dec(ReasonNoService, fail)
	}
	l4off := p.l3off + p.l3hlen
	if l4off > 0xfff {
		return dec(ReasonMalformed, fail)
	}
	shortL4 := func() Decision {
		if p.frag == fragFirst {
			return dec(ReasonFragment, fail)
		}
		return dec(ReasonMalformed, fail)
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
			return dec(ReasonMalformed, fail)
		}
		tcpflags = l4[13]
	}
	key := svcKey{Addr: daddr, Port: [2]byte{l4[2], l4[3]}, Proto: p.proto}
	svc, ok := m.svcs[key]
	if !ok {
		if vip.Host {
			return dec(ReasonPass, fail)
		}
		return dec(ReasonNoService, fail)
	}
	if svc.Enforce && !m.whitelisted(svc.Whitelist, saddr, p.v6) {
		if svc.Reject && p.proto == ipprotoTCP && p.frag == fragNone && !p.exthdrs && tcpflags&0x04 == 0 {
			d := dec(ReasonWhitelistReject, ActionTX)
			d.Out = buildRST(pkt, p, tcpflags)
			return d
		}
		return dec(ReasonWhitelistDrop, ActionDrop)
	}
	if p.frag == fragFirst {
		return dec(ReasonFragment, ActionPass)
	}
	if !svc.Dispatch || !m.steering || m.maglev == nil {
		return dec(ReasonPass, ActionPass)
	}
	ports := binary.NativeEndian.Uint32(l4[:4])
	inst := m.pick(m.flowHash(saddr, daddr, ports, p.v6))
	icpu, ok := m.instCPU[inst]
	if !ok {
		return dec(ReasonPass, ActionPass)
	}
	d := dec(ReasonSteered, ActionRedirect)
	if icpu == cpu {
		d.Action = ActionPass
	} else if !m.cpumap[icpu] {
		return dec(ReasonPass, ActionPass)
	}
	d.Instance = inst
	return d
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
