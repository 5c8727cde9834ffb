package loader

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/loader/packet"
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func tcp(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, flags uint8) packet.Spec {
	return packet.TCP(ap(src, sport), ap(dst, dport), flags)
}

func with(s packet.Spec, f func(*packet.Spec)) packet.Spec { f(&s); return s }

// truncate cuts a frame to n bytes.
func truncate(b []byte, n int) []byte { return b[:n] }

// poke overwrites bytes at off.
func poke(b []byte, off int, v ...byte) []byte {
	out := append([]byte{}, b...)
	copy(out[off:], v)
	return out
}

type fixture struct {
	name   string
	pkt    []byte
	reason Reason
	action Action // for steered flows: the action on CPU 0
}

func fixtures() []fixture {
	syn4 := tcp(client4, 40000, vip4, portHTTPS, packet.SYN)
	syn6 := tcp(client6, 40000, vip6, portHTTPS, packet.SYN)
	hopByHop := packet.ExtHdr{Type: packet.ExtHopOpts, Data: []byte{1, 4, 0, 0, 0, 0}}
	dstOpts := packet.ExtHdr{Type: packet.ExtDstOpts}
	routing := packet.ExtHdr{Type: packet.ExtRouting, Data: []byte{0, 0}}
	ah := packet.ExtHdr{Type: packet.ExtAH, Data: make([]byte, 10)}
	seven := []packet.ExtHdr{hopByHop, dstOpts, dstOpts, dstOpts, dstOpts, dstOpts, dstOpts}
	six := seven[:6]
	vlan := []packet.VLAN{{TPID: 0x8100, TCI: 100}}
	qinq := []packet.VLAN{{TPID: 0x88a8, TCI: 10}, {TPID: 0x8100, TCI: 100}}
	three := append(append([]packet.VLAN{}, qinq...), packet.VLAN{TPID: 0x8100, TCI: 7})
	tags := func(n int) []packet.VLAN {
		var vs []packet.VLAN
		for i := range n {
			vs = append(vs, packet.VLAN{TPID: []uint16{0x88a8, 0x8100}[i%2], TCI: uint16(i + 1)})
		}
		return vs
	}
	arp := make([]byte, 42)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)

	fs := []fixture{
		// Not ours.
		{"arp", arp, ReasonNotVIP, ActionPass},
		{"v4 to other address", tcp(client4, 1, other4, portHTTPS, packet.SYN).Bytes(), ReasonNotVIP, ActionPass},
		{"v6 to other address", tcp(client6, 1, other6, portHTTPS, packet.SYN).Bytes(), ReasonNotVIP, ActionPass},
		{"three vlan tags to other address", with(tcp(client4, 1, other4, portHTTPS, packet.SYN), func(s *packet.Spec) { s.VLANs = three }).Bytes(), ReasonNotVIP, ActionPass},
		{"three vlan tags, arp inside", append(append(append([]byte{}, arp[:12]...), 0x81, 0, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x08, 0x06), arp[14:]...), ReasonNotVIP, ActionPass},
		{"v4 truncated before dst", truncate(syn4.Bytes(), 14+16), ReasonMalformed, ActionPass},
		{"v6 truncated before dst", truncate(syn6.Bytes(), 14+30), ReasonMalformed, ActionPass},
		{"vlan truncated", truncate(with(syn4, func(s *packet.Spec) { s.VLANs = vlan }).Bytes(), 16), ReasonMalformed, ActionPass},
		{"truncated tcp to other address", truncate(tcp(client4, 1, other4, 443, packet.SYN).Bytes(), 14+20+4), ReasonNotVIP, ActionPass},

		// Served and steered (instance checked against the model).
		{"v4 syn https", syn4.Bytes(), ReasonSteered, 0},
		{"v6 syn https", syn6.Bytes(), ReasonSteered, 0},
		{"v4 ack with payload", with(syn4, func(s *packet.Spec) { s.Flags = packet.ACK; s.Payload = make([]byte, 1000) }).Bytes(), ReasonSteered, 0},
		{"v4 udp dns", packet.UDP(ap(stranger4, 5353), ap(vip4, portDNS), []byte("q")).Bytes(), ReasonSteered, 0},
		{"v4 vlan", with(syn4, func(s *packet.Spec) { s.VLANs = vlan }).Bytes(), ReasonSteered, 0},
		{"v6 qinq", with(syn6, func(s *packet.Spec) { s.VLANs = qinq }).Bytes(), ReasonSteered, 0},
		{"v4 ip options", with(syn4, func(s *packet.Spec) { s.IPOptions = []byte{7, 7, 4, 0, 0, 0, 0} }).Bytes(), ReasonSteered, 0},
		{"v4 max ip options", with(syn4, func(s *packet.Spec) { s.IPOptions = make([]byte, 40) }).Bytes(), ReasonSteered, 0},
		{"v4 tcp options", with(syn4, func(s *packet.Spec) { s.TCPOptions = []byte{2, 4, 5, 0xb4, 4, 2} }).Bytes(), ReasonSteered, 0},
		{"v6 ext headers", with(syn6, func(s *packet.Spec) { s.ExtHdrs = []packet.ExtHdr{hopByHop, routing, ah, dstOpts} }).Bytes(), ReasonSteered, 0},
		{"v6 six ext headers", with(syn6, func(s *packet.Spec) { s.ExtHdrs = six }).Bytes(), ReasonSteered, 0},
		{"v6 atomic fragment", with(syn6, func(s *packet.Spec) { s.Frag = &packet.Frag{ID: 9} }).Bytes(), ReasonSteered, 0},
		{"whitelisted http", tcp(client4, 40001, vip4, portHTTP, packet.SYN).Bytes(), ReasonSteered, 0},
		{"whitelisted http v6", tcp(client6, 40001, vip6, portHTTP, packet.SYN).Bytes(), ReasonSteered, 0},

		// ICMP passes (PMTU discovery, NDP).
		{"icmp echo", packet.Spec{Src: stranger4, Dst: vip4, Proto: packet.ProtoICMP}.Bytes(), ReasonPass, ActionPass},
		{"icmpv6", packet.Spec{Src: stranger6, Dst: vip6, Proto: packet.ProtoICMPv6}.Bytes(), ReasonPass, ActionPass},
		{"icmp later fragment", packet.Spec{Src: stranger4, Dst: vip4, Proto: packet.ProtoICMP, Frag: &packet.Frag{Offset: 185}, Payload: make([]byte, 100)}.Bytes(), ReasonPass, ActionPass},

		// No service.
		{"v4 ssh to vip", tcp(client4, 1, vip4, 22, packet.SYN).Bytes(), ReasonNoService, ActionDrop},
		{"v6 ssh to vip", tcp(client6, 1, vip6, 22, packet.SYN).Bytes(), ReasonNoService, ActionDrop},
		{"udp to tcp port", packet.UDP(ap(client4, 1), ap(vip4, portHTTPS), nil).Bytes(), ReasonNoService, ActionDrop},
		{"gre to vip", packet.Spec{Src: client4, Dst: vip4, Proto: 47, Payload: make([]byte, 20)}.Bytes(), ReasonNoService, ActionDrop},
		{"v6 ext header ends the packet", packet.Spec{Src: client6, Dst: vip6, Proto: 59, ExtHdrs: []packet.ExtHdr{{Type: packet.ExtDstOpts}}}.Bytes(), ReasonNoService, ActionDrop},
		{"v6 esp to vip", packet.Spec{Src: client6, Dst: vip6, Proto: 50, Payload: make([]byte, 20)}.Bytes(), ReasonNoService, ActionDrop},

		// Whitelist.
		{"stranger http drop", tcp(stranger4, 1, vip4, portHTTP, packet.SYN).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"stranger http drop v6", tcp(stranger6, 1, vip6, portHTTP, packet.SYN).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"stranger syn reject", tcp(stranger4, 40002, vip4, portReject, packet.SYN).Bytes(), ReasonWhitelistReject, ActionTX},
		{"stranger syn reject v6", tcp(stranger6, 40002, vip6, portReject, packet.SYN).Bytes(), ReasonWhitelistReject, ActionTX},
		{"stranger ack reject", with(tcp(stranger4, 40003, vip4, portReject, packet.ACK|packet.PSH), func(s *packet.Spec) { s.Payload = []byte("GET / HTTP/1.1\r\n\r\n") }).Bytes(), ReasonWhitelistReject, ActionTX},
		{"stranger fin reject", tcp(stranger4, 40004, vip4, portReject, packet.FIN).Bytes(), ReasonWhitelistReject, ActionTX},
		{"stranger reject with options", with(tcp(stranger4, 40005, vip4, portReject, packet.SYN), func(s *packet.Spec) {
			s.VLANs = qinq
			s.IPOptions = []byte{7, 7, 4, 0, 0, 0, 0}
			s.TCPOptions = []byte{2, 4, 5, 0xb4}
			s.Payload = []byte("early data")
		}).Bytes(), ReasonWhitelistReject, ActionTX},
		{"stranger rst is not answered", tcp(stranger4, 40006, vip4, portReject, packet.RST).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"stranger v6 ext headers not answered", with(tcp(stranger6, 40007, vip6, portReject, packet.SYN), func(s *packet.Spec) { s.ExtHdrs = []packet.ExtHdr{dstOpts} }).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"stranger fragment not answered", with(tcp(stranger4, 40008, vip4, portReject, packet.SYN), func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"https needs no whitelist", tcp(stranger4, 40009, vip4, portHTTPS, packet.SYN).Bytes(), ReasonSteered, 0},

		// Access lists, for every service they are set on.
		{"access admits a listed client", tcp(client4, 40010, vip4, portACL, packet.SYN).Bytes(), ReasonSteered, 0},
		{"access admits a listed client v6", tcp(client6, 40010, vip6, portACL, packet.SYN).Bytes(), ReasonSteered, 0},
		{"access denies a carved-out half", tcp(client4b, 40011, vip4, portACL, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access denies a stranger", tcp(stranger4, 40012, vip4, portACL, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access rule inside an earlier one never decides", tcp(router4, 40013, vip4, portACL, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access default deny v6", tcp(stranger6, 40014, vip6, portACL, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access ack of a denied source", with(tcp(stranger4, 40015, vip4, portACL, packet.ACK), func(s *packet.Spec) { s.Payload = []byte("data") }).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access reject syn", tcp(stranger4, 40016, vip4, portACLReject, packet.SYN).Bytes(), ReasonAccessDenied, ActionTX},
		{"access reject syn v6", tcp(stranger6, 40016, vip6, portACLReject, packet.SYN).Bytes(), ReasonAccessDenied, ActionTX},
		{"access reject ack with options", with(tcp(client4b, 40017, vip4, portACLReject, packet.ACK|packet.PSH), func(s *packet.Spec) {
			s.VLANs = qinq
			s.IPOptions = []byte{7, 7, 4, 0, 0, 0, 0}
			s.Payload = []byte("GET / HTTP/1.1\r\n\r\n")
		}).Bytes(), ReasonAccessDenied, ActionTX},
		{"access reject admits a listed client", tcp(client4, 40018, vip4, portACLReject, packet.SYN).Bytes(), ReasonSteered, 0},
		{"access reject rst not answered", tcp(stranger4, 40019, vip4, portACLReject, packet.RST).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access reject fragment not answered", with(tcp(stranger4, 40020, vip4, portACLReject, packet.SYN), func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access reject v6 ext headers not answered", with(tcp(stranger6, 40021, vip6, portACLReject, packet.SYN), func(s *packet.Spec) { s.ExtHdrs = []packet.ExtHdr{dstOpts} }).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access default allow", tcp(netip.MustParseAddr("198.18.0.1"), 40022, vip4, portACLOpen, packet.SYN).Bytes(), ReasonSteered, 0},
		{"access default allow v6", tcp(netip.MustParseAddr("2001:db8:5::1"), 40022, vip6, portACLOpen, packet.SYN).Bytes(), ReasonSteered, 0},
		{"access default allow denies a listed network", tcp(stranger4, 40023, vip4, portACLOpen, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access default allow denies a listed network v6", tcp(stranger6, 40023, vip6, portACLOpen, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access list never set denies everyone", tcp(client4, 40024, vip4, portACLUnset, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access list never set denies everyone v6", tcp(client6, 40024, vip6, portACLUnset, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"whitelist and access: the whitelist first", tcp(stranger4, 40025, vip4, portACLWL, packet.SYN).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"whitelist and access: the access list too", tcp(client4b, 40026, vip4, portACLWL, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"whitelist and access: both admit", tcp(client4, 40027, vip4, portACLWL, packet.SYN).Bytes(), ReasonSteered, 0},
		{"access udp admits", packet.UDP(ap(client4, 5000), ap(vip4, portACLUDP), []byte("q")).Bytes(), ReasonSteered, 0},
		{"access udp denies", packet.UDP(ap(stranger4, 5000), ap(vip4, portACLUDP), []byte("q")).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access udp denies v6", packet.UDP(ap(stranger6, 5000), ap(vip6, portACLUDP), []byte("q")).Bytes(), ReasonAccessDenied, ActionDrop},
		{"kernel udp admitted passes to the stack", packet.UDP(ap(client4, 5000), ap(vip4, portKernelUDP), []byte("q")).Bytes(), ReasonPass, ActionPass},
		{"kernel udp admitted passes to the stack v6", packet.UDP(ap(client6, 5000), ap(vip6, portKernelUDP), []byte("q")).Bytes(), ReasonPass, ActionPass},
		{"kernel udp denied", packet.UDP(ap(stranger4, 5000), ap(vip4, portKernelUDP), []byte("q")).Bytes(), ReasonAccessDenied, ActionDrop},
		{"kernel udp denied v6", packet.UDP(ap(stranger6, 5000), ap(vip6, portKernelUDP), []byte("q")).Bytes(), ReasonAccessDenied, ActionDrop},
		{"kernel udp first fragment admitted", with(packet.UDP(ap(client4, 5000), ap(vip4, portKernelUDP), make([]byte, 64)), func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }).Bytes(), ReasonFragment, ActionPass},
		{"kernel udp first fragment denied", with(packet.UDP(ap(stranger4, 5000), ap(vip4, portKernelUDP), make([]byte, 64)), func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }).Bytes(), ReasonAccessDenied, ActionDrop},
		{"kernel tcp syn passes, not steered", tcp(stranger4, 40060, vip4, portKernelTCP, packet.SYN).Bytes(), ReasonPass, ActionPass},
		{"kernel tcp on udp's port is no service", tcp(client4, 40061, vip4, portKernelUDP, packet.SYN).Bytes(), ReasonNoService, ActionDrop},
		{"access first fragment denied", with(tcp(stranger4, 40028, vip4, portACL, packet.SYN), func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }).Bytes(), ReasonAccessDenied, ActionDrop},
		{"access first fragment admitted", with(tcp(client4, 40029, vip4, portACL, packet.SYN), func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }).Bytes(), ReasonFragment, ActionPass},
		{"access icmp passes", packet.Spec{Src: stranger4, Dst: vip4, Proto: packet.ProtoICMP}.Bytes(), ReasonPass, ActionPass},

		// A port range: every port of it is served, none beside it.
		{"range first port", tcp(client4, 40030, vip4, portRangeFirst, packet.SYN).Bytes(), ReasonSteered, 0},
		{"range middle port", tcp(client4, 40031, vip4, portRangeFirst+3, packet.SYN).Bytes(), ReasonSteered, 0},
		{"range last port v6", tcp(client6, 40032, vip6, portRangeLast, packet.SYN).Bytes(), ReasonSteered, 0},
		{"range access list", tcp(stranger4, 40033, vip4, portRangeFirst+5, packet.SYN).Bytes(), ReasonAccessDenied, ActionDrop},
		{"past the range", tcp(client4, 40034, vip4, portRangeLast+1, packet.SYN).Bytes(), ReasonNoService, ActionDrop},
		{"before the range", tcp(client4, 40035, vip4, portRangeFirst-1, packet.SYN).Bytes(), ReasonNoService, ActionDrop},

		// Fragments.
		{"v4 first fragment", with(syn4, func(s *packet.Spec) { s.Frag = &packet.Frag{More: true, ID: 1}; s.Payload = make([]byte, 64) }).Bytes(), ReasonFragment, ActionPass},
		{"v4 later fragment", with(syn4, func(s *packet.Spec) { s.Frag = &packet.Frag{Offset: 10, ID: 1}; s.Payload = make([]byte, 64) }).Bytes(), ReasonFragment, ActionDrop},
		{"v4 later fragment, offset 1", with(syn4, func(s *packet.Spec) { s.Frag = &packet.Frag{Offset: 1, More: true}; s.Payload = make([]byte, 16) }).Bytes(), ReasonFragment, ActionDrop},
		{"v4 tiny first fragment", poke(truncate(with(syn4, func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }).Bytes(), 14+20+8), 14+2, 0, 28), ReasonFragment, ActionDrop},
		{"v6 first fragment", with(syn6, func(s *packet.Spec) { s.Frag = &packet.Frag{More: true, ID: 2}; s.Payload = make([]byte, 64) }).Bytes(), ReasonFragment, ActionPass},
		{"v6 later fragment", with(syn6, func(s *packet.Spec) { s.Frag = &packet.Frag{Offset: 10, ID: 2}; s.Payload = make([]byte, 64) }).Bytes(), ReasonFragment, ActionDrop},
		{"v6 later fragment after ext", with(syn6, func(s *packet.Spec) {
			s.ExtHdrs = []packet.ExtHdr{hopByHop}
			s.Frag = &packet.Frag{Offset: 10, ID: 2}
			s.Payload = make([]byte, 64)
		}).Bytes(), ReasonFragment, ActionDrop},
		{"stranger first fragment http", with(tcp(stranger4, 1, vip4, portHTTP, packet.SYN), func(s *packet.Spec) { s.Frag = &packet.Frag{More: true} }).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"fragment to other address", with(tcp(client4, 1, other4, 443, 0), func(s *packet.Spec) { s.Frag = &packet.Frag{Offset: 3} }).Bytes(), ReasonNotVIP, ActionPass},

		// Malformed, for a VIP.
		{"v4 ihl 4", poke(syn4.Bytes(), 14, 0x44), ReasonMalformed, ActionDrop},
		{"v4 version 5", poke(syn4.Bytes(), 14, 0x55), ReasonMalformed, ActionDrop},
		{"v4 tot_len beyond frame", poke(syn4.Bytes(), 14+2, 0x05, 0xdc), ReasonMalformed, ActionDrop},
		{"v4 tot_len below header", poke(syn4.Bytes(), 14+2, 0, 19), ReasonMalformed, ActionDrop},
		{"v4 options beyond frame", poke(truncate(syn4.Bytes(), 14+20), 14, 0x4f), ReasonMalformed, ActionDrop},
		{"v4 tcp truncated", poke(truncate(syn4.Bytes(), 14+20+12), 14+2, 0, 32), ReasonMalformed, ActionDrop},
		{"v4 tcp doff 4", poke(syn4.Bytes(), 14+20+12, 0x40), ReasonMalformed, ActionDrop},
		{"v4 tcp doff past end", poke(syn4.Bytes(), 14+20+12, 0xf0), ReasonMalformed, ActionDrop},
		{"v4 udp truncated", poke(truncate(packet.UDP(ap(client4, 1), ap(vip4, portDNS), nil).Bytes(), 14+20+4), 14+2, 0, 24), ReasonMalformed, ActionDrop},
		{"v6 version 4", poke(syn6.Bytes(), 14, 0x40), ReasonMalformed, ActionDrop},
		{"v6 payload beyond frame", poke(syn6.Bytes(), 14+4, 0x05, 0xdc), ReasonMalformed, ActionDrop},
		{"v6 seven ext headers", with(syn6, func(s *packet.Spec) { s.ExtHdrs = seven }).Bytes(), ReasonMalformed, ActionDrop},
		{"v6 ext header past payload", poke(with(syn6, func(s *packet.Spec) { s.ExtHdrs = []packet.ExtHdr{dstOpts} }).Bytes(), 14+40+1, 200), ReasonMalformed, ActionDrop},
		{"v6 mapped source", tcp(netip.MustParseAddr("::ffff:198.51.100.7"), 1, vip6, portHTTP, packet.SYN).Bytes(), ReasonMalformed, ActionDrop},
		{"v6 mapped destination aliasing a v4 vip", with(syn6, func(s *packet.Spec) { s.Dst = netip.MustParseAddr("::ffff:192.0.2.10") }).Bytes(), ReasonMalformed, ActionDrop},
		// More VLAN tags than parsed: looked through for the destination,
		// never passed to a VIP unpoliced.
		{"three vlan tags to a vip", with(syn4, func(s *packet.Spec) { s.VLANs = three }).Bytes(), ReasonMalformed, ActionDrop},
		{"three vlan tags to a v6 vip", with(syn6, func(s *packet.Spec) { s.VLANs = three }).Bytes(), ReasonMalformed, ActionDrop},
		{"three vlan tags, stranger to plain http", with(tcp(stranger4, 1, vip4, portHTTP, packet.SYN), func(s *packet.Spec) { s.VLANs = three }).Bytes(), ReasonMalformed, ActionDrop},
		{"three vlan tags to a host address", with(tcp(stranger4, 1, host4, portBGP, packet.SYN), func(s *packet.Spec) { s.VLANs = three }).Bytes(), ReasonMalformed, ActionDrop},
		{"eight vlan tags to a vip", with(syn4, func(s *packet.Spec) { s.VLANs = tags(8) }).Bytes(), ReasonMalformed, ActionDrop},
		{"eight vlan tags to other address", with(tcp(client6, 1, other6, portHTTPS, packet.SYN), func(s *packet.Spec) { s.VLANs = tags(8) }).Bytes(), ReasonNotVIP, ActionPass},
		{"nine vlan tags cannot be checked", with(tcp(client4, 1, other4, portHTTPS, packet.SYN), func(s *packet.Spec) { s.VLANs = tags(9) }).Bytes(), ReasonMalformed, ActionDrop},
		{"three vlan tags, ip truncated", truncate(with(syn4, func(s *packet.Spec) { s.VLANs = three }).Bytes(), 14+12+16), ReasonMalformed, ActionPass},
		{"three vlan tags, tag truncated", truncate(with(syn4, func(s *packet.Spec) { s.VLANs = three }).Bytes(), 14+8+2), ReasonMalformed, ActionPass},
		// An IPv6 later fragment's label proves nothing (reassembly keys
		// ignore it): dropped at a VIP whatever it says.
		{"v6 later fragment labelled icmpv6", packet.Spec{Src: stranger6, Dst: vip6, Proto: packet.ProtoICMPv6, Frag: &packet.Frag{Offset: 185, ID: 7}, Payload: make([]byte, 100)}.Bytes(), ReasonFragment, ActionDrop},
		{"v6 later fragment labelled udp", packet.Spec{Src: stranger6, Dst: vip6, Proto: packet.ProtoUDP, Frag: &packet.Frag{Offset: 185, ID: 7}, Payload: make([]byte, 100)}.Bytes(), ReasonFragment, ActionDrop},
		{"v6 later fragment labelled no next header", packet.Spec{Src: stranger6, Dst: vip6, Proto: 59, Frag: &packet.Frag{Offset: 185, ID: 7}, Payload: make([]byte, 100)}.Bytes(), ReasonFragment, ActionDrop},
		{"v6 first fragment labelled icmpv6", packet.Spec{Src: stranger6, Dst: vip6, Proto: packet.ProtoICMPv6, Frag: &packet.Frag{More: true, ID: 7}, Payload: make([]byte, 100)}.Bytes(), ReasonPass, ActionPass},

		// The node's own addresses: only listed services are policed.
		{"host ssh", tcp(stranger4, 1, host4, 22, packet.SYN).Bytes(), ReasonPass, ActionPass},
		{"host bgp from router", tcp(router4, 1, host4, portBGP, packet.SYN).Bytes(), ReasonPass, ActionPass},
		{"host bgp from stranger", tcp(stranger4, 1, host4, portBGP, packet.SYN).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"host bfd from stranger", packet.UDP(ap(stranger4, 49152), ap(host4, portBFD), make([]byte, 24)).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"host v6 bgp from stranger", tcp(stranger6, 1, host6, portBGP, packet.SYN).Bytes(), ReasonWhitelistDrop, ActionDrop},
		{"host gre", packet.Spec{Src: stranger4, Dst: host4, Proto: 47, Payload: make([]byte, 8)}.Bytes(), ReasonPass, ActionPass},
		{"host later fragment", with(tcp(stranger4, 1, host4, 22, 0), func(s *packet.Spec) { s.Frag = &packet.Frag{Offset: 3} }).Bytes(), ReasonFragment, ActionPass},
		{"host v6 later fragment labelled icmpv6", packet.Spec{Src: stranger6, Dst: host6, Proto: packet.ProtoICMPv6, Frag: &packet.Frag{Offset: 185, ID: 7}, Payload: make([]byte, 100)}.Bytes(), ReasonFragment, ActionPass},
		{"host malformed", poke(tcp(stranger4, 1, host4, 22, 0).Bytes(), 14, 0x44), ReasonMalformed, ActionPass},
	}
	return fs
}

// TestXDPFixtures runs each fixture through BPF_PROG_TEST_RUN and checks the
// verdict, the counted reason and instance, and the output bytes against
// both the expectation and the Go model.
func TestXDPFixtures(t *testing.T) {
	d := openTestDataplane(t)
	snap, err := d.Snapshot()
	require.NoError(t, err)
	model := NewModel(snap)

	onCPU(t, 0, func() {
		r := newXDPRunner(t, d)
		for _, f := range fixtures() {
			got, err := r.run(f.pkt)
			require.NoError(t, err, f.name)
			want := model.XDP(f.pkt, 0)
			require.Equal(t, f.reason, got.Reason, "%s: reason", f.name)
			require.Equal(t, want.Reason, got.Reason, "%s: model reason", f.name)
			require.Equal(t, want.Action, got.Action, "%s: model action (%s)", f.name, want)
			require.Equal(t, want.Instance, got.Instance, "%s: instance", f.name)
			require.Equal(t, want.Out, got.Out, "%s: output bytes", f.name)
			if f.reason == ReasonSteered {
				// CPU 0 passes locally when the instance lives here.
				require.NotEqual(t, NoInstance, got.Instance, f.name)
				wantAction := ActionRedirect
				if testInstances()[got.Instance].CPU == 0 {
					wantAction = ActionPass
				}
				require.Equal(t, wantAction, got.Action, f.name)
			} else {
				require.Equal(t, f.action, got.Action, "%s: action", f.name)
				require.Equal(t, NoInstance, got.Instance, "%s: no steering", f.name)
			}
			if got.Action != ActionTX {
				require.Equal(t, f.pkt, got.Out, "%s: packet must leave untouched", f.name)
			}
		}
	})
}

// TestXDPRejectBuildsValidRST checks the RST with an independent parser:
// addresses and ports swapped, RFC 9293 sequence numbers, checksums that
// verify, and VLAN tags kept.
func TestXDPRejectBuildsValidRST(t *testing.T) {
	d := openTestDataplane(t)
	cases := []struct {
		name       string
		in         packet.Spec
		wantSeq    uint32
		wantAck    uint32
		wantFlags  uint8
		wantL3Off  int
		wantIPHLen int
	}{
		{"syn", tcp(stranger4, 40002, vip4, portReject, packet.SYN), 0, 1001, packet.RST | packet.ACK, 14, 20},
		{"syn v6", tcp(stranger6, 40002, vip6, portReject, packet.SYN), 0, 1001, packet.RST | packet.ACK, 14, 40},
		{"ack with data", with(tcp(stranger4, 40003, vip4, portReject, packet.ACK|packet.PSH), func(s *packet.Spec) { s.Payload = make([]byte, 100) }), 2000, 0, packet.RST, 14, 20},
		{"fin with data", with(tcp(stranger4, 40004, vip4, portReject, packet.FIN), func(s *packet.Spec) { s.Payload = make([]byte, 10) }), 0, 1011, packet.RST | packet.ACK, 14, 20},
		{"qinq and options", with(tcp(stranger4, 40005, vip4, portReject, packet.SYN), func(s *packet.Spec) {
			s.VLANs = []packet.VLAN{{TPID: 0x88a8, TCI: 10}, {TPID: 0x8100, TCI: 100}}
			s.IPOptions = []byte{7, 7, 4, 0, 0, 0, 0}
			s.TCPOptions = []byte{2, 4, 5, 0xb4}
		}), 0, 1001, packet.RST | packet.ACK, 22, 28},
	}
	onCPU(t, 0, func() {
		r := newXDPRunner(t, d)
		for _, c := range cases {
			c.in.SrcMAC = [6]byte{2, 0, 0, 0, 0, 1}
			c.in.DstMAC = [6]byte{2, 0, 0, 0, 0, 2}
			in := c.in.Bytes()
			got, err := r.run(in)
			require.NoError(t, err, c.name)
			require.Equal(t, ActionTX, got.Action, c.name)
			out := got.Out
			require.Len(t, out, c.wantL3Off+c.wantIPHLen+20, c.name)
			require.Equal(t, in[6:12], out[0:6], "%s: dst mac", c.name)
			require.Equal(t, in[0:6], out[6:12], "%s: src mac", c.name)
			require.Equal(t, in[12:c.wantL3Off], out[12:c.wantL3Off], "%s: vlan tags", c.name)
			ip := out[c.wantL3Off:]
			var pseudo uint32
			if c.in.Dst.Is4() {
				require.Equal(t, uint8(0x40|c.wantIPHLen/4), ip[0], c.name)
				require.Equal(t, c.in.Dst.AsSlice(), ip[12:16], "%s: src is the vip", c.name)
				require.Equal(t, c.in.Src.AsSlice(), ip[16:20], "%s: dst is the client", c.name)
				require.Equal(t, uint16(c.wantIPHLen+20), binary.BigEndian.Uint16(ip[2:]), c.name)
				require.Zero(t, packet.Checksum(ip[:c.wantIPHLen], 0), "%s: ip checksum", c.name)
				for _, b := range ip[20:c.wantIPHLen] {
					require.Equal(t, byte(1), b, "%s: options become NOPs", c.name)
				}
				for i := 12; i < 20; i += 2 {
					pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
				}
			} else {
				require.Equal(t, c.in.Dst.AsSlice(), ip[8:24], c.name)
				require.Equal(t, c.in.Src.AsSlice(), ip[24:40], c.name)
				require.Equal(t, uint16(20), binary.BigEndian.Uint16(ip[4:]), c.name)
				for i := 8; i < 40; i += 2 {
					pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
				}
			}
			th := ip[c.wantIPHLen:]
			pseudo += packet.ProtoTCP + 20
			require.Zero(t, packet.Checksum(th, pseudo), "%s: tcp checksum", c.name)
			require.Equal(t, c.in.DstPort, binary.BigEndian.Uint16(th[0:]), c.name)
			require.Equal(t, c.in.SrcPort, binary.BigEndian.Uint16(th[2:]), c.name)
			require.Equal(t, c.wantSeq, binary.BigEndian.Uint32(th[4:]), "%s: seq", c.name)
			require.Equal(t, c.wantAck, binary.BigEndian.Uint32(th[8:]), "%s: ack", c.name)
			require.Equal(t, c.wantFlags, th[13], "%s: flags", c.name)
			require.Equal(t, byte(0x50), th[12], c.name)
		}
	})
}

// TestXDPSteeringSwitches covers the ways a served flow is not steered.
func TestXDPSteeringSwitches(t *testing.T) {
	d := openTestDataplane(t)
	pkt := tcp(client4, 40000, vip4, portHTTPS, packet.SYN).Bytes()
	check := func(name string, want Reason, wantAction Action) {
		t.Helper()
		snap, err := d.Snapshot()
		require.NoError(t, err)
		m := NewModel(snap)
		onCPU(t, 0, func() {
			r := newXDPRunner(t, d)
			got, err := r.run(pkt)
			require.NoError(t, err)
			require.Equal(t, want, got.Reason, name)
			require.Equal(t, wantAction, got.Action, name)
			exp := m.XDP(pkt, 0)
			require.Equal(t, exp.Reason, got.Reason, "%s: model", name)
			require.Equal(t, exp.Action, got.Action, "%s: model", name)
		})
	}
	inst := NewModel(mustSnapshot(t, d)).XDP(pkt, 0).Instance
	require.NotEqual(t, NoInstance, inst)

	// The flow's instance lives on CPU 1: a redirect through the cpumap.
	var insts []Instance
	for i := uint32(0); i < testInsts; i++ {
		insts = append(insts, Instance{Index: i, CPU: 1})
	}
	require.NoError(t, d.SetInstances(insts))
	check("redirect", ReasonSteered, ActionRedirect)

	require.NoError(t, d.SetSteering(false))
	check("steering off", ReasonPass, ActionPass)
	require.NoError(t, d.SetSteering(true))

	// The instance has no CPU (it died): the stack's own RSS decides.
	var rest []Instance
	for _, in := range insts {
		if in.Index != inst {
			rest = append(rest, in)
		}
	}
	require.NoError(t, d.SetInstances(rest))
	check("instance without cpu", ReasonPass, ActionPass)

	// An empty table: no instance is live.
	empty := make([]uint32, testMSize)
	for i := range empty {
		empty[i] = NoInstance
	}
	require.NoError(t, d.SetMaglev(testSeed, empty))
	check("no live instance", ReasonPass, ActionPass)
}

func mustSnapshot(t testing.TB, d *Dataplane) *Snapshot {
	t.Helper()
	s, err := d.Snapshot()
	require.NoError(t, err)
	return s
}
