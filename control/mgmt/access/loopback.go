package access

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// loopbackUID is the uid that owns the local socket client, connected to
// server: the kernel's TCP table (/proc/net/tcp, tcp6) says, the way
// identd did. It answers for connections from this host only, which is
// all the GORB listener (loopback addresses only) accepts.
func loopbackUID(client, server netip.AddrPort) (int, error) {
	// A v4 client of a dual-stack listener is in the v4 table; look in
	// both, the likelier first.
	tables := []string{"/proc/net/tcp", "/proc/net/tcp6"}
	if !client.Addr().Unmap().Is4() {
		tables[0], tables[1] = tables[1], tables[0]
	}
	var err error
	for _, name := range tables {
		var f *os.File
		if f, err = os.Open(name); err != nil {
			continue
		}
		var uid int
		uid, err = findUID(f, client, server)
		f.Close()
		if err == nil {
			return uid, nil
		}
	}
	return 0, err
}

// findUID finds the line of a /proc/net/tcp table whose local address is
// local and remote address remote, and returns its uid.
func findUID(r io.Reader, local, remote netip.AddrPort) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Scan() // the header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		l, err1 := parseProcAddr(f[1])
		r, err2 := parseProcAddr(f[2])
		if err1 != nil || err2 != nil || !sameAddrPort(l, local) || !sameAddrPort(r, remote) {
			continue
		}
		uid, err := strconv.Atoi(f[7])
		if err != nil {
			return 0, fmt.Errorf("uid %q: %w", f[7], err)
		}
		return uid, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no such connection")
}

func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// parseProcAddr reads "0100007F:1F90": the address as the kernel holds it,
// in 32-bit words of host byte order, then the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q: no port", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %w", s, err)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("%q: not an address", s)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
