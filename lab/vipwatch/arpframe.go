package vipwatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ARP over Ethernet (RFC 826): a 14-byte Ethernet header, then the 28-byte
// ARP body for IPv4.
const (
	ethHeaderLen = 14
	arpBodyLen   = 28
	arpFrameLen  = ethHeaderLen + arpBodyLen
	// minFrameLen is Ethernet's minimum frame without the FCS; short
	// frames are padded so that they leave a real NIC unchanged.
	minFrameLen = 60

	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	arpHTypeEther = 1
	arpOpRequest  = 1
	arpOpReply    = 2
)

// tagPrefix starts the sender hardware address of every request the
// observer sends (locally administered, unicast); the four bytes after it
// are the request's sequence number. A Linux host answers a request to its
// sender hardware address, so the answer names the request it answers:
// no reply can be mistaken for the answer to a neighbouring request.
var tagPrefix = [2]byte{0x02, 0x0b}

// tagMAC is the sender hardware address of request seq.
func tagMAC(seq uint32) [6]byte {
	var m [6]byte
	copy(m[:2], tagPrefix[:])
	binary.BigEndian.PutUint32(m[2:], seq)
	return m
}

// tagSeq returns the sequence number a tag MAC carries; ok is false for
// any other address (a gratuitous ARP's, a real host's).
func tagSeq(mac []byte) (uint32, bool) {
	if len(mac) != 6 || mac[0] != tagPrefix[0] || mac[1] != tagPrefix[1] {
		return 0, false
	}
	return binary.BigEndian.Uint32(mac[2:]), true
}

// arpRequest builds the broadcast frame asking who has vip, from the
// observer's interface src, tagged with seq.
//
// It is an ARP probe (sender protocol address 0.0.0.0, RFC 5227): Linux
// answers a probe like any request for a local address, but learns no
// neighbour entry from it, so thousands of tags leave the nodes'
// neighbour tables as they were.
func arpRequest(src net.HardwareAddr, seq uint32, vip netip.Addr) ([]byte, error) {
	if len(src) != 6 {
		return nil, fmt.Errorf("source %s is not an Ethernet address", src)
	}
	if !vip.Is4() {
		return nil, fmt.Errorf("%s is not an IPv4 address", vip)
	}
	f := make([]byte, minFrameLen)
	for i := range 6 {
		f[i] = 0xff
	}
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	a := f[ethHeaderLen:]
	binary.BigEndian.PutUint16(a[0:2], arpHTypeEther)
	binary.BigEndian.PutUint16(a[2:4], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], arpOpRequest)
	tag := tagMAC(seq)
	copy(a[8:14], tag[:])
	// a[14:18], the sender protocol address, stays 0.0.0.0; a[18:24], the
	// target hardware address, stays zero as in any request.
	ip := vip.As4()
	copy(a[24:28], ip[:])
	return f, nil
}

// arpAnswer is an ARP reply to one of the observer's requests.
type arpAnswer struct {
	seq uint32           // the request it answers
	vip netip.Addr       // the address it claims
	mac net.HardwareAddr // who claims it: the sender hardware address
}

var errNotOurs = errors.New("not a reply to an observer request")

// parseARPAnswer decodes frame, an Ethernet frame as read from a packet
// socket. It returns errNotOurs for ARP traffic that is not a reply to a
// tagged request (other hosts' requests, gratuitous ARP), and another
// error for a frame that is not well-formed IPv4-over-Ethernet ARP.
func parseARPAnswer(frame []byte) (arpAnswer, error) {
	if len(frame) < arpFrameLen {
		return arpAnswer{}, fmt.Errorf("frame of %d bytes, want at least %d", len(frame), arpFrameLen)
	}
	if et := binary.BigEndian.Uint16(frame[12:14]); et != etherTypeARP {
		return arpAnswer{}, fmt.Errorf("ethertype %#04x is not ARP", et)
	}
	a := frame[ethHeaderLen:]
	if binary.BigEndian.Uint16(a[0:2]) != arpHTypeEther || binary.BigEndian.Uint16(a[2:4]) != etherTypeIPv4 || a[4] != 6 || a[5] != 4 {
		return arpAnswer{}, fmt.Errorf("ARP for hardware %d protocol %#04x, want Ethernet and IPv4",
			binary.BigEndian.Uint16(a[0:2]), binary.BigEndian.Uint16(a[2:4]))
	}
	if binary.BigEndian.Uint16(a[6:8]) != arpOpReply {
		return arpAnswer{}, errNotOurs
	}
	seq, ok := tagSeq(a[18:24])
	if !ok {
		return arpAnswer{}, errNotOurs
	}
	return arpAnswer{
		seq: seq,
		vip: netip.AddrFrom4([4]byte(a[14:18])),
		mac: net.HardwareAddr(append([]byte(nil), a[8:14]...)),
	}, nil
}
