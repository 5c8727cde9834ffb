package vipwatch

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	vipA  = netip.MustParseAddr("10.0.0.1")
	vipB  = netip.MustParseAddr("10.0.0.2")
	macN1 = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	macN2 = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	macX  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
)

// replyFrame is the reply Linux sends to a request whose sender hardware
// address was tha: from mac, claiming ip, written out byte by byte.
func replyFrame(mac net.HardwareAddr, ip netip.Addr, tha [6]byte) []byte {
	f := append([]byte{}, tha[:]...)      // Ethernet destination
	f = append(f, mac...)                 // Ethernet source
	f = append(f, 0x08, 0x06)             // ARP
	f = append(f, 0, 1, 0x08, 0x00, 6, 4) // Ethernet, IPv4
	f = append(f, 0, 2)                   // reply
	f = append(f, mac...)                 // sender hardware address
	f = append(f, ip.AsSlice()...)        // sender protocol address
	f = append(f, tha[:]...)              // target hardware address
	return append(f, 0, 0, 0, 0)          // target protocol address 0.0.0.0 (a probe's)
}

// A request asks who has the VIP, from 0.0.0.0, broadcast, and carries
// its sequence number in its sender hardware address.
func TestARPRequestFrame(t *testing.T) {
	src := net.HardwareAddr{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	f, err := arpRequest(src, 0x01020304, vipB)
	require.NoError(t, err)
	require.Len(t, f, 60)
	require.Equal(t, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, f[0:6])
	require.Equal(t, []byte(src), f[6:12])
	require.Equal(t, []byte{0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1}, f[12:22])
	require.Equal(t, []byte{0x02, 0x0b, 1, 2, 3, 4}, f[22:28], "sender hardware address: the tag")
	require.Equal(t, []byte{0, 0, 0, 0}, f[28:32], "sender protocol address: a probe's")
	require.Equal(t, []byte{10, 0, 0, 2}, f[38:42], "target: the VIP")

	_, err = arpRequest(src, 1, netip.MustParseAddr("fd00::1"))
	require.Error(t, err)
	_, err = arpRequest(net.HardwareAddr{1, 2}, 1, vipA)
	require.Error(t, err)
}

// A reply to a tagged request names the request, the VIP and who
// answered; other ARP traffic is not taken for an answer.
func TestParseARPAnswer(t *testing.T) {
	a, err := parseARPAnswer(replyFrame(macN1, vipA, tagMAC(77)))
	require.NoError(t, err)
	require.Equal(t, uint32(77), a.seq)
	require.Equal(t, vipA, a.vip)
	require.Equal(t, macN1, a.mac)

	padded := append(replyFrame(macN2, vipB, tagMAC(1<<31)), make([]byte, 18)...)
	a, err = parseARPAnswer(padded)
	require.NoError(t, err)
	require.Equal(t, uint32(1<<31), a.seq)
	require.Equal(t, macN2, a.mac)

	// A gratuitous ARP reply (target: broadcast) and another host's
	// request are no answer to the observer.
	garp := replyFrame(macN1, vipA, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	_, err = parseARPAnswer(garp)
	require.ErrorIs(t, err, errNotOurs)
	req, err := arpRequest(macN1, 5, vipA)
	require.NoError(t, err)
	_, err = parseARPAnswer(req)
	require.ErrorIs(t, err, errNotOurs)

	bad := replyFrame(macN1, vipA, tagMAC(1))
	_, err = parseARPAnswer(bad[:41])
	require.Error(t, err)
	bad[12], bad[13] = 0x08, 0x00
	_, err = parseARPAnswer(bad)
	require.Error(t, err)
	bad = replyFrame(macN1, vipA, tagMAC(1))
	bad[17] = 6 // hardware length
	_, err = parseARPAnswer(bad)
	require.Error(t, err)
	require.NotErrorIs(t, err, errNotOurs)
}

// Each answer is filed under the request it names; a MAC counts once per
// request; answers after the window and answers to no request are kept
// apart; two MACs on one request make a double, named by node.
func TestARPBook(t *testing.T) {
	b := newBook(10*time.Millisecond, map[string]net.HardwareAddr{"node1": macN1, "node2": macN2})
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	b.sent(1, vipA, ms(0))
	b.sent(2, vipB, ms(0))
	b.sent(3, vipA, ms(5))
	b.sent(4, vipA, ms(10))
	b.sent(5, vipA, ms(15)) // never answered

	b.answered(arpAnswer{seq: 1, vip: vipA, mac: macN1}, ms(1))
	b.answered(arpAnswer{seq: 1, vip: vipA, mac: macN1}, ms(2)) // the same host again
	b.answered(arpAnswer{seq: 2, vip: vipB, mac: macN2}, ms(3))
	// Request 3: node1 answers in time, node2 only after the window.
	b.answered(arpAnswer{seq: 3, vip: vipA, mac: macN1}, ms(6))
	b.answered(arpAnswer{seq: 3, vip: vipA, mac: macN2}, ms(16))
	// Request 4: node2 and a host that is no node both answer.
	b.answered(arpAnswer{seq: 4, vip: vipA, mac: macN2}, ms(11))
	b.answered(arpAnswer{seq: 4, vip: vipA, mac: macX}, ms(12))
	// Strays: a request never sent, and the right request but another VIP.
	b.answered(arpAnswer{seq: 99, vip: vipA, mac: macN1}, ms(12))
	b.answered(arpAnswer{seq: 2, vip: vipA, mac: macN1}, ms(12))

	s := b.summary()
	require.Equal(t, 5, s.Sent)
	require.Equal(t, 4, s.Answered)
	require.Equal(t, 1, s.Late)
	require.Equal(t, 2, s.Stray)
	require.Equal(t, 3*time.Millisecond, s.Slowest)
	require.Equal(t, []ARPDouble{{VIP: vipA, At: ms(10), Nodes: []string{"node2", macX.String()},
		After: []time.Duration{time.Millisecond, 2 * time.Millisecond}}}, s.Doubles)
	require.Equal(t, "10.0.0.1 answered by node2 (+1ms) and 02:00:00:00:00:99 (+2ms) for the request at 12:00:00.010000", s.Doubles[0].String())

	ps := b.copyProbes()
	require.Len(t, ps, 5)
	require.Len(t, ps[0].Answers, 1)
	require.Equal(t, "node1", ps[0].Answers[0].Node)
	require.Equal(t, time.Millisecond, ps[0].Answers[0].After)
	require.Len(t, ps[2].Late, 1)
	require.Equal(t, "node2", ps[2].Late[0].Node)
	require.Empty(t, ps[4].Answers)
	// The copy does not change with the book.
	b.answered(arpAnswer{seq: 5, vip: vipA, mac: macN1}, ms(16))
	require.Empty(t, ps[4].Answers)
}
