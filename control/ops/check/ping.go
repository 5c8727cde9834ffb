package check

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pingFrom sends ICMP echo requests to peer from iface ("": any) and
// self, the way keepalived's unicast adverts leave, and returns the round trip of the
// first answer. An echo goes out every eighth of wait, so one lost
// packet (or the first one waiting for ARP) does not fail the check.
func pingFrom(ctx context.Context, iface string, self, peer netip.Addr, wait time.Duration) (time.Duration, error) {
	network, reqType, replyType := "ip4:icmp", byte(8), byte(0)
	if self.Is6() {
		network, reqType, replyType = "ip6:ipv6-icmp", 128, 129
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		if iface == "" {
			return nil // the route to peer picks the interface
		}
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
		})
		return cmp.Or(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, network, self.String())
	if err != nil {
		return 0, fmt.Errorf("ICMP socket on %s: %w", iface, err)
	}
	defer pc.Close()
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = pc.SetDeadline(deadline)
	id := uint16(rand.Uint32())
	sent := map[uint16]time.Time{}
	dst := &net.IPAddr{IP: peer.AsSlice()}
	send := func(seq uint16) error {
		msg := []byte{reqType, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
		msg = append(msg, "ober test"...)
		if self.Is4() {
			binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		} // the kernel fills in ICMPv6's checksum, which covers the IPv6 header
		sent[seq] = time.Now()
		_, err := pc.WriteTo(msg, dst)
		return err
	}
	// The reader gets every ICMP packet of the namespace; the sender
	// ticks in the same loop through short read deadlines.
	var seq uint16
	next := time.Now()
	var lastErr error
	buf := make([]byte, 1500)
	for {
		now := time.Now()
		if !now.Before(deadline) {
			if lastErr != nil {
				return 0, fmt.Errorf("no answer in %s (last error: %v)", wait, lastErr)
			}
			return 0, fmt.Errorf("no answer to %d ICMP echo requests in %s", len(sent), wait)
		}
		if !now.Before(next) {
			seq++
			if err := send(seq); err != nil {
				lastErr = err
			}
			next = now.Add(wait / 8)
		}
		rd := next
		if deadline.Before(rd) {
			rd = deadline
		}
		_ = pc.SetReadDeadline(rd)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			lastErr = err
			continue
		}
		src, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if !ok || src.Unmap() != peer.Unmap() || n < 8 {
			continue
		}
		p := buf[:n]
		if p[0] != replyType || binary.BigEndian.Uint16(p[4:]) != id {
			continue
		}
		if at, ok := sent[binary.BigEndian.Uint16(p[6:])]; ok {
			return time.Since(at), nil
		}
	}
}

// icmpChecksum is the Internet checksum (RFC 1071) of an ICMPv4 message.
func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func toMillis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

func fmtRTT(d time.Duration) string {
	return strconv.FormatFloat(toMillis(d), 'f', 3, 64) + " ms"
}
