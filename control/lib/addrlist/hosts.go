package addrlist

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
)

// Hosts is a Resolver that answers from a hosts(5) file and nothing else:
// no DNS, no /etc/hosts. `ober sync --hosts-file` resolves with it, so
// that its tests control resolution without touching the system's.
type Hosts map[string][]netip.Addr

// ReadHosts reads a hosts(5) file: an address and its names per line,
// "#" starting a comment. Names match case-insensitively. Its errors
// start with path.
func ReadHosts(path string) (Hosts, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	h := Hosts{}
	for i, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil || len(fields) < 2 {
			return nil, fmt.Errorf("%s: line %d: want an address and names", path, i+1)
		}
		for _, n := range fields[1:] {
			n = strings.ToLower(n)
			h[n] = append(h[n], a)
		}
	}
	return h, nil
}

// LookupNetIP returns host's addresses of network ("ip", "ip4" or "ip6"),
// or a not-found *net.DNSError as the system's resolver would.
func (h Hosts) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range h[strings.ToLower(strings.TrimSuffix(host, "."))] {
		if network == "ip" || network == "ip4" && a.Is4() || network == "ip6" && a.Is6() {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}
