// Package sockdiag lists the TCP connections of the calling thread's
// network namespace, with what the kernel counts of each, and destroys
// one, through the kernel's sock_diag netlink interface (the one `ss -K`
// uses). ober uses it to end TLS handshakes that never finish on HAProxy
// releases without a handshake timeout of their own.
//
// Destroying needs CAP_NET_ADMIN and a kernel built with
// CONFIG_INET_DIAG_DESTROY.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is one TCP connection as the kernel reports it.
type Conn struct {
	Local, Remote netip.AddrPort
	// DataSegsOut counts the segments with data this side sent.
	DataSegsOut uint32
	// BytesReceived counts the bytes of data the peer sent;
	// BytesAcked the bytes this side sent that the peer acknowledged.
	BytesReceived, BytesAcked uint64
	// Cookie is the kernel's identity of the socket, unique while the
	// machine runs: a connection that closes and a new one of the same
	// addresses differ by it.
	Cookie uint64
	// SinceSend is how long ago this side last sent data, or, when it
	// never did, how long ago the connection was established (the kernel
	// starts the clock then).
	SinceSend time.Duration
}

// Kernel constants (linux/sock_diag.h, linux/inet_diag.h, tcp_states.h).
const (
	sockDiagByFamily = 20
	sockDestroy      = 21
	inetDiagInfo     = 2
	tcpEstablished   = 1
	noCookie         = ^uint32(0)
	reqLen           = 56 // struct inet_diag_req_v2
	msgLen           = 72 // struct inet_diag_msg
	// Offsets into struct tcp_info.
	tiLastDataSent = 44
	tiBytesAcked   = 120
	tiBytesRecv    = 128
	tiDataSegsOut  = 156
)

// request is struct inet_diag_req_v2 for one family: a dump (zero id) or
// one socket.
func request(family uint8, states uint32, ext uint8, local, remote netip.AddrPort) []byte {
	b := make([]byte, reqLen)
	b[0] = family
	b[1] = unix.IPPROTO_TCP
	b[2] = ext
	binary.NativeEndian.PutUint32(b[4:], states)
	id := b[8:]
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], remote.Port())
	if local.IsValid() {
		copy(id[4:20], addrBytes(local.Addr(), family))
		copy(id[20:36], addrBytes(remote.Addr(), family))
	}
	binary.NativeEndian.PutUint32(id[40:], noCookie)
	binary.NativeEndian.PutUint32(id[44:], noCookie)
	return b
}

func addrBytes(a netip.Addr, family uint8) []byte {
	if family == unix.AF_INET {
		b := a.Unmap().As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}

func familyOf(a netip.Addr) uint8 {
	if a.Unmap().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// Established lists the established TCP connections of both families.
func Established() ([]Conn, error) {
	var out []Conn
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		cs, err := dump(fam)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

func dump(family uint8) ([]Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	req := request(family, 1<<tcpEstablished, 1<<(inetDiagInfo-1), netip.AddrPort{}, netip.AddrPort{})
	if err := send(fd, sockDiagByFamily, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, req); err != nil {
		return nil, err
	}
	var out []Conn
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag: dump: %w", nlError(m.Data))
			}
			if c, ok := parseConn(family, m.Data); ok {
				out = append(out, c)
			}
		}
	}
}

func parseConn(family uint8, b []byte) (Conn, bool) {
	if len(b) < msgLen || b[0] != family {
		return Conn{}, false
	}
	id := b[4:]
	addr := func(p []byte, port []byte) netip.AddrPort {
		var a netip.Addr
		if family == unix.AF_INET {
			a = netip.AddrFrom4([4]byte(p[:4]))
		} else {
			a = netip.AddrFrom16([16]byte(p[:16])).Unmap()
		}
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(port))
	}
	c := Conn{Local: addr(id[4:20], id[0:2]), Remote: addr(id[20:36], id[2:4]),
		Cookie: uint64(binary.NativeEndian.Uint32(id[40:])) | uint64(binary.NativeEndian.Uint32(id[44:]))<<32}
	for attrs := b[msgLen:]; len(attrs) >= 4; {
		l := int(binary.NativeEndian.Uint16(attrs))
		typ := binary.NativeEndian.Uint16(attrs[2:])
		if l < 4 || l > len(attrs) {
			break
		}
		if typ == inetDiagInfo {
			ti := attrs[4:l]
			if len(ti) >= tiDataSegsOut+4 {
				c.SinceSend = time.Duration(binary.NativeEndian.Uint32(ti[tiLastDataSent:])) * time.Millisecond
				c.BytesReceived = binary.NativeEndian.Uint64(ti[tiBytesRecv:])
				c.BytesAcked = binary.NativeEndian.Uint64(ti[tiBytesAcked:])
				c.DataSegsOut = binary.NativeEndian.Uint32(ti[tiDataSegsOut:])
			}
		}
		attrs = attrs[(l+3)&^3:]
	}
	return c, true
}

// Destroy ends a TCP connection: the kernel sends the peer a RST, and the
// process holding the socket sees it aborted.
func Destroy(local, remote netip.AddrPort) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	fam := familyOf(local.Addr())
	req := request(fam, ^uint32(0), 0, local, remote)
	if err := send(fd, sockDestroy, unix.NLM_F_REQUEST|unix.NLM_F_ACK, req); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("sock_diag: destroy %s-%s: %w", local, remote, err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR {
			if err := nlError(m.Data); err != nil {
				return fmt.Errorf("sock_diag: destroy %s-%s: %w", local, remote, err)
			}
		}
	}
	return nil
}

func send(fd int, typ uint16, flags uint16, body []byte) error {
	b := make([]byte, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], 1)
	copy(b[unix.NLMSG_HDRLEN:], body)
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: send: %w", err)
	}
	return nil
}

// nlError reads an NLMSG_ERROR's errno; nil for an acknowledgement.
func nlError(b []byte) error {
	if len(b) < 4 {
		return errors.New("short netlink error")
	}
	if e := int32(binary.NativeEndian.Uint32(b)); e != 0 {
		return unix.Errno(-e)
	}
	return nil
}
