// Package packet builds Ethernet frames for tests and benchmarks: IPv4
// with options, IPv6 with extension headers, VLAN tags, fragments, TCP,
// UDP and ICMP. It writes exactly what it is told, so tests can also
// build the malformed frames a parser must survive.
package packet

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// IPv6 extension header types.
const (
	ExtHopOpts  = 0
	ExtRouting  = 43
	ExtFragment = 44
	ExtAH       = 51
	ExtDstOpts  = 60
)

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// VLAN is one 802.1Q (TPID 0x8100) or 802.1ad (0x88a8) tag.
type VLAN struct {
	TPID uint16
	TCI  uint16
}

// ExtHdr is an IPv6 extension header; Data follows the next-header and
// length bytes and is padded to the header's unit (8 bytes, 4 for AH).
type ExtHdr struct {
	Type uint8
	Data []byte
}

// Frag makes the packet an IP fragment. Offset is in 8-byte units.
type Frag struct {
	Offset uint16
	More   bool
	ID     uint32
}

// Spec describes one frame.
type Spec struct {
	SrcMAC, DstMAC [6]byte
	VLANs          []VLAN
	Src, Dst       netip.Addr // IPv4 or IPv6 decides the family
	TTL            uint8
	IPOptions      []byte // IPv4 only, padded with EOL to 4 bytes
	ExtHdrs        []ExtHdr
	Frag           *Frag
	Proto          uint8
	SrcPort        uint16
	DstPort        uint16
	Flags          uint8 // TCP
	Seq, Ack       uint32
	TCPOptions     []byte // padded with NOP to 4 bytes
	Payload        []byte
}

// TCP4 is a shorthand for a TCP segment between two addresses.
func TCP(src, dst netip.AddrPort, flags uint8) Spec {
	return Spec{Src: src.Addr(), Dst: dst.Addr(), Proto: ProtoTCP, SrcPort: src.Port(), DstPort: dst.Port(),
		Flags: flags, Seq: 1000, Ack: 2000}
}

// UDP is a shorthand for a UDP datagram.
func UDP(src, dst netip.AddrPort, payload []byte) Spec {
	return Spec{Src: src.Addr(), Dst: dst.Addr(), Proto: ProtoUDP, SrcPort: src.Port(), DstPort: dst.Port(),
		Payload: payload}
}

// Bytes serialises the frame with correct lengths and checksums.
func (s Spec) Bytes() []byte {
	b := make([]byte, 0, 128+len(s.Payload))
	b = append(b, s.DstMAC[:]...)
	b = append(b, s.SrcMAC[:]...)
	for _, v := range s.VLANs {
		b = binary.BigEndian.AppendUint16(b, v.TPID)
		b = binary.BigEndian.AppendUint16(b, v.TCI)
	}
	// IPv4 only when both ends are plain IPv4: IPv4-mapped addresses make
	// an IPv6 packet, as tests of that case need.
	v6 := !(s.Src.Is4() && s.Dst.Is4())
	if v6 {
		b = binary.BigEndian.AppendUint16(b, 0x86dd)
	} else {
		b = binary.BigEndian.AppendUint16(b, 0x0800)
	}
	l4 := s.l4()
	ttl := s.TTL
	if ttl == 0 {
		ttl = 64
	}
	if !v6 {
		opts := pad(s.IPOptions, 4, 0)
		hlen := 20 + len(opts)
		ip := make([]byte, hlen)
		ip[0] = 0x40 | byte(hlen/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hlen+len(l4)))
		var fo uint16
		if s.Frag != nil {
			binary.BigEndian.PutUint16(ip[4:], uint16(s.Frag.ID))
			fo = s.Frag.Offset & 0x1fff
			if s.Frag.More {
				fo |= 0x2000
			}
		}
		binary.BigEndian.PutUint16(ip[6:], fo)
		ip[8] = ttl
		ip[9] = s.Proto
		src, dst := s.Src.As4(), s.Dst.As4()
		copy(ip[12:], src[:])
		copy(ip[16:], dst[:])
		copy(ip[20:], opts)
		binary.BigEndian.PutUint16(ip[10:], Checksum(ip, 0))
		if s.fullL4() {
			s.l4Checksum(l4, pseudo4(src, dst, s.Proto, len(l4)))
		}
		b = append(b, ip...)
		return append(b, l4...)
	}

	var ext []byte
	next := s.Proto
	hdrs := s.ExtHdrs
	if s.Frag != nil {
		hdrs = append(append([]ExtHdr{}, hdrs...), ExtHdr{Type: ExtFragment})
	}
	// Headers are chained front to back; each names the one after it.
	for i, h := range hdrs {
		nh := s.Proto
		if i+1 < len(hdrs) {
			nh = hdrs[i+1].Type
		}
		var raw []byte
		switch h.Type {
		case ExtFragment:
			raw = make([]byte, 8)
			raw[0] = nh
			fo := s.Frag.Offset << 3
			if s.Frag.More {
				fo |= 1
			}
			binary.BigEndian.PutUint16(raw[2:], fo)
			binary.BigEndian.PutUint32(raw[4:], s.Frag.ID)
		case ExtAH:
			// AH counts 4-byte units minus 2; IPv6 wants 8-byte alignment.
			body := append([]byte{}, h.Data...)
			if len(body) < 10 {
				body = append(body, make([]byte, 10-len(body))...)
			}
			for (len(body)+2)%8 != 0 {
				body = append(body, 0)
			}
			raw = append([]byte{nh, byte((len(body)+2)/4 - 2)}, body...)
		default:
			body := h.Data
			if len(body) < 6 {
				body = append(append([]byte{}, body...), make([]byte, 6-len(body))...)
			}
			for (len(body)+2)%8 != 0 {
				body = append(body, 0)
			}
			raw = append([]byte{nh, byte((len(body)+2)/8 - 1)}, body...)
		}
		ext = append(ext, raw...)
	}
	if len(hdrs) > 0 {
		next = hdrs[0].Type
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(l4)))
	ip[6] = next
	ip[7] = ttl
	src, dst := s.Src.As16(), s.Dst.As16()
	copy(ip[8:], src[:])
	copy(ip[24:], dst[:])
	if s.fullL4() {
		s.l4Checksum(l4, pseudo6(src, dst, s.Proto, len(l4)))
	}
	b = append(b, ip...)
	b = append(b, ext...)
	return append(b, l4...)
}

// fullL4 is whether the L4 header is in this packet (not a later fragment).
func (s Spec) fullL4() bool { return s.Frag == nil || s.Frag.Offset == 0 }

func (s Spec) l4() []byte {
	if !s.fullL4() {
		return append([]byte{}, s.Payload...)
	}
	switch s.Proto {
	case ProtoTCP:
		opts := pad(s.TCPOptions, 4, 1)
		h := make([]byte, 20+len(opts))
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		binary.BigEndian.PutUint32(h[4:], s.Seq)
		binary.BigEndian.PutUint32(h[8:], s.Ack)
		h[12] = byte(len(h)/4) << 4
		h[13] = s.Flags
		binary.BigEndian.PutUint16(h[14:], 65535)
		copy(h[20:], opts)
		return append(h, s.Payload...)
	case ProtoUDP:
		h := make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(s.Payload)))
		return append(h, s.Payload...)
	case ProtoICMP, ProtoICMPv6:
		h := []byte{8, 0, 0, 0, 0, 1, 0, 1} // echo request
		if s.Proto == ProtoICMPv6 {
			h[0] = 128
		}
		return append(h, s.Payload...)
	}
	return append([]byte{}, s.Payload...)
}

func (s Spec) l4Checksum(l4 []byte, pseudo uint32) {
	var off int
	switch s.Proto {
	case ProtoTCP:
		off = 16
	case ProtoUDP:
		off = 6
	case ProtoICMP:
		binary.BigEndian.PutUint16(l4[2:], Checksum(l4, 0))
		return
	case ProtoICMPv6:
		off = 2
	default:
		return
	}
	if len(l4) < off+2 {
		return
	}
	binary.BigEndian.PutUint16(l4[off:], Checksum(l4, pseudo))
}

func pseudo4(src, dst [4]byte, proto uint8, n int) uint32 {
	var s uint32
	s += uint32(binary.BigEndian.Uint16(src[0:])) + uint32(binary.BigEndian.Uint16(src[2:]))
	s += uint32(binary.BigEndian.Uint16(dst[0:])) + uint32(binary.BigEndian.Uint16(dst[2:]))
	return s + uint32(proto) + uint32(n)
}

func pseudo6(src, dst [16]byte, proto uint8, n int) uint32 {
	var s uint32
	for i := 0; i < 16; i += 2 {
		s += uint32(binary.BigEndian.Uint16(src[i:])) + uint32(binary.BigEndian.Uint16(dst[i:]))
	}
	return s + uint32(proto) + uint32(n)
}

// Checksum is the Internet checksum of b, starting from a partial sum.
func Checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func pad(b []byte, unit int, fill byte) []byte {
	out := append([]byte{}, b...)
	for len(out)%unit != 0 {
		out = append(out, fill)
	}
	return out
}
