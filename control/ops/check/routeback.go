package check

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/config"
)

// routeBackWait bounds each route-back probe: an answer on a LAN comes
// in well under a millisecond, and a lost first echo (ARP) is resent.
const routeBackWait = 2 * time.Second

// Documentation addresses (RFC 5737, RFC 3849) stand for a client when
// the service's access list names none: a backend whose default route
// points at the node sends their answers to the node.
var (
	docClient4 = netip.MustParseAddr("198.51.100.1")
	docClient6 = netip.MustParseAddr("2001:db8::1")
)

// routeBackChecks checks, for every backend of every service with
// forward: dnat, that the backend's answers to a client come back
// through this node: dnat keeps the client's address, so an answer that
// takes another way never reaches the client.
func routeBackChecks(ctx context.Context, cfg *config.Config) []Result {
	type job struct {
		svc config.Service
		b   config.BackendServer
	}
	var jobs []job
	for _, s := range cfg.Services {
		if !config.IsKernelMode(s.Mode) || s.Forward != config.ForwardDNAT {
			continue
		}
		for _, b := range s.Backends {
			jobs = append(jobs, job{s, b})
		}
	}
	out := make([]Result, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() { out[i] = routeBackCheck(ctx, j.svc, j.b) })
	}
	wg.Wait()
	return out
}

// routeBackCheck sends ICMP echo requests to the backend from a client's
// address and watches for the replies on this node. To tell a missing
// route from a backend that answers no ICMP at all, it pings the backend
// from the node's own address first.
func routeBackCheck(ctx context.Context, s config.Service, b config.BackendServer) Result {
	name := "routeback " + s.Name + "/" + b.Name
	ctx, cancel := context.WithTimeout(ctx, 2*routeBackWait+backendWait)
	defer cancel()
	ap, err := resolveBackend(ctx, b.Address)
	if err != nil {
		c := fail(name, fmt.Sprintf("%s: %v", b.Address, err))
		c.Fix = "check the backend's address and this node's DNS"
		return c
	}
	backend := ap.Addr()
	client := clientAddr(s, backend.Is4())
	var c Result
	c.Name, c.Address = name, backend.String()
	self := netip.IPv4Unspecified()
	if backend.Is6() {
		self = netip.IPv6Unspecified()
	}
	if _, err := pingFrom(ctx, "", self, backend, routeBackWait); err != nil {
		c.OK, c.Status = true, Warn
		c.Detail = fmt.Sprintf("%s answers no ICMP echo from this node (%v), so its route back to the clients could not be checked", backend, err)
		c.Fix = "allow ICMP echo on the backend, or check by hand that its route to the clients points at this node"
		return c
	}
	rtt, err := echoFrom(ctx, client, backend, routeBackWait)
	switch {
	case errors.Is(err, os.ErrPermission):
		c.OK, c.Status = true, Warn
		c.Detail = fmt.Sprintf("cannot send from a client's address without CAP_NET_RAW: %v", err)
		c.Fix = "run ober test as root"
	case err != nil:
		c.Status = Fail
		c.Detail = fmt.Sprintf("service %s forwards with dnat, but %s's answers to a client (%s) do not come back through this node (%v): the client would never get them",
			s.Name, backend, client, err)
		c.Fix = fmt.Sprintf("on %s, route the clients (or the default route) via this node's address on its network; or set services[%s].forward: fullnat", backend, s.Name)
	default:
		c.OK, c.Status, c.RTTMillis = true, OK, toMillis(rtt)
		c.Detail = fmt.Sprintf("%s answers a client (%s) through this node in %s", backend, client, fmtRTT(rtt))
	}
	return c
}

// clientAddr is an address of the family that the service's access list
// admits, else a documentation address: the backends route the former
// as they route real clients.
func clientAddr(s config.Service, v4 bool) netip.Addr {
	if s.Access != nil {
		for _, rule := range s.Access.Rules {
			r, err := config.ParseAccessRule(rule)
			if err != nil || !r.Allow || !r.Prefix.IsValid() || r.Prefix.Addr().Is4() != v4 {
				continue
			}
			a := r.Prefix.Masked().Addr()
			if r.Prefix.Bits() < a.BitLen()-1 {
				a = a.Next() // not the network's own address
			}
			return a
		}
	}
	if v4 {
		return docClient4
	}
	return docClient6
}

// echoFrom sends ICMP echo requests from client, an address that is not
// this node's, to backend, and waits for a reply on any interface of the
// node. The node's stack would not deliver that reply (the address is
// not local), so a packet socket sees it as it arrives.
func echoFrom(ctx context.Context, client, backend netip.Addr, wait time.Duration) (time.Duration, error) {
	capture, err := openCapture(client, backend)
	if err != nil {
		return 0, err
	}
	defer capture.Close()
	family, proto := unix.AF_INET, unix.IPPROTO_RAW
	if backend.Is6() {
		family = unix.AF_INET6
	}
	// IPPROTO_RAW means the header is ours (IP_HDRINCL), so the source
	// can be the client's.
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return 0, fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	var to unix.Sockaddr
	if backend.Is4() {
		to = &unix.SockaddrInet4{Addr: backend.As4()}
	} else {
		to = &unix.SockaddrInet6{Addr: backend.As16()}
	}
	id := uint16(rand.Uint32())
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	sent := map[uint16]time.Time{}
	buf := make([]byte, 2048)
	var seq uint16
	for time.Now().Before(deadline) {
		seq++
		if err := unix.Sendto(fd, echoPacket(client, backend, id, seq), 0, to); err != nil {
			return 0, fmt.Errorf("send from %s: %w", client, err)
		}
		sent[seq] = time.Now()
		next := time.Now().Add(wait / 8)
		if next.After(deadline) {
			next = deadline
		}
		for {
			_ = capture.SetReadDeadline(next)
			n, err := capture.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				return 0, fmt.Errorf("capture: %w", err)
			}
			if s, ok := echoReplySeq(buf[:n], client, backend, id); ok {
				if at, ok := sent[s]; ok {
					return time.Since(at), nil
				}
			}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("no reply to %d echo requests in %s", len(sent), wait)
}

// openCapture is a packet socket on every interface that keeps only ICMP
// from backend to client, filtered in the kernel so that a busy node's
// traffic is not copied to it.
func openCapture(client, backend netip.Addr) (*os.File, error) {
	ethType := uint16(unix.ETH_P_IP)
	var cmp []bpfCmp
	if backend.Is4() {
		b, c := backend.As4(), client.As4()
		cmp = []bpfCmp{
			{9, unix.BPF_B, unix.IPPROTO_ICMP},
			{12, unix.BPF_W, binary.BigEndian.Uint32(b[:])},
			{16, unix.BPF_W, binary.BigEndian.Uint32(c[:])},
		}
	} else {
		ethType = unix.ETH_P_IPV6
		b, c := backend.As16(), client.As16()
		cmp = []bpfCmp{{6, unix.BPF_B, unix.IPPROTO_ICMPV6}}
		for i := 0; i < 16; i += 4 {
			cmp = append(cmp, bpfCmp{uint32(8 + i), unix.BPF_W, binary.BigEndian.Uint32(b[i:])})
			cmp = append(cmp, bpfCmp{uint32(24 + i), unix.BPF_W, binary.BigEndian.Uint32(c[i:])})
		}
	}
	proto := int(ethType>>8 | ethType<<8) // network byte order
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	prog := bpfFilter(cmp)
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("packet socket filter: %w", err)
	}
	return os.NewFile(uintptr(fd), "capture"), nil
}

// bpfCmp is one comparison of a classic BPF filter: the field of size
// (BPF_B or BPF_W) at off in the IP header equals val.
type bpfCmp struct {
	off  uint32
	size uint16
	val  uint32
}

// bpfFilter accepts a packet when every comparison holds.
func bpfFilter(cmp []bpfCmp) []unix.SockFilter {
	n := len(cmp)
	var prog []unix.SockFilter
	for i, c := range cmp {
		prog = append(prog,
			unix.SockFilter{Code: unix.BPF_LD | c.size | unix.BPF_ABS, K: c.off},
			// On a mismatch jump to the last instruction, the drop.
			unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: uint8(2*(n-i) - 1), K: c.val})
	}
	return append(prog,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0})
}

// echoPacket is an IP packet carrying an ICMP echo request from src to
// dst. The kernel fills in the IPv4 header's length, id and checksum.
func echoPacket(src, dst netip.Addr, id, seq uint16) []byte {
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
	msg = append(msg, "ober test route back"...)
	if src.Is4() {
		binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		h := make([]byte, 20, 20+len(msg))
		h[0], h[8], h[9] = 0x45, 64, unix.IPPROTO_ICMP
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		return append(h, msg...)
	}
	msg[0] = 128
	h := make([]byte, 40, 40+len(msg))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(msg)))
	h[6], h[7] = unix.IPPROTO_ICMPV6, 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	// ICMPv6's checksum covers a pseudo-header: the addresses, the
	// length and the next header.
	pseudo := make([]byte, 0, 40+len(msg))
	pseudo = append(pseudo, h[8:40]...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(msg)))
	pseudo = append(pseudo, 0, 0, 0, unix.IPPROTO_ICMPV6)
	pseudo = append(pseudo, msg...)
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(pseudo))
	return append(h, msg...)
}

// echoReplySeq reads an echo reply from backend to client with our id
// out of an IP packet, and returns its sequence number.
func echoReplySeq(p []byte, client, backend netip.Addr, id uint16) (uint16, bool) {
	var src, dst netip.Addr
	var icmp []byte
	var reply byte
	switch {
	case backend.Is4() && len(p) >= 20 && p[0]>>4 == 4:
		hl := int(p[0]&0x0f) * 4
		if len(p) < hl+8 || p[9] != unix.IPPROTO_ICMP {
			return 0, false
		}
		src, dst, icmp, reply = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), p[hl:], 0
	case backend.Is6() && len(p) >= 48 && p[0]>>4 == 6:
		if p[6] != unix.IPPROTO_ICMPV6 {
			return 0, false
		}
		src, dst, icmp, reply = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), p[40:], 129
	default:
		return 0, false
	}
	if src != backend || dst != client || icmp[0] != reply || binary.BigEndian.Uint16(icmp[4:]) != id {
		return 0, false
	}
	return binary.BigEndian.Uint16(icmp[6:]), true
}
