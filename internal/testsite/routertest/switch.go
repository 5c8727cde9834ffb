package routertest

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// Switch is a namespace holding a Linux bridge with one port per
// attached host. Unlike a direct veth between router and node, a node's
// link going down leaves the router's own link, and its carrier, up, as
// with a real switch.
type Switch struct {
	NS     *netnstest.NS
	Bridge string
}

// NewSwitch makes the switch namespace and its bridge, removed at
// cleanup.
func NewSwitch(t testing.TB) *Switch {
	t.Helper()
	s := &Switch{NS: netnstest.New(t, "sw"), Bridge: "br0"}
	// Multicast snooping without a querier can stop neighbour
	// solicitations, and STP would hold new ports in listening and
	// learning; a dumb switch forwards at once.
	s.NS.IP(t, "link", "add", s.Bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	s.NS.IP(t, "link", "set", s.Bridge, "up")
	return s
}

// Attach links interface iface in ns to a new bridge port named port
// (unique per switch, at most 15 bytes) and gives iface addrs. Both ends
// are up when it returns.
//
// IPv6 addresses on ns's interfaces made from now on skip duplicate
// address detection, which would otherwise keep them, and the link-local
// address BGP daemons need for IPv6 next hops, tentative for a second or
// two. They also survive the link going down: by default the kernel
// flushes them then, and a node whose link comes back would be left
// without its address.
func (s *Switch) Attach(t testing.TB, ns *netnstest.NS, iface, port string, addrs ...netip.Prefix) {
	t.Helper()
	err := ns.Do(func() error {
		for _, set := range []struct{ name, value string }{{"accept_dad", "0"}, {"keep_addr_on_down", "1"}} {
			for _, scope := range []string{"all", "default"} {
				p := fmt.Sprintf("/proc/sys/net/ipv6/conf/%s/%s", scope, set.name)
				if err := os.WriteFile(p, []byte(set.value), 0); err != nil {
					return fmt.Errorf("set %s: %w", p, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("routertest: prepare %s for attaching: %v", ns.Name, err)
	}
	netnstest.Veth(t, ns, iface, s.NS, port, 1)
	// Every port, as any host on the segment may run ober's XDP, which
	// sends with XDP_TX.
	netnstest.PassXDP(t, s.NS, port)
	s.NS.IP(t, "link", "set", port, "master", s.Bridge)
	for _, a := range addrs {
		args := []string{"addr", "add", a.String(), "dev", iface}
		if a.Addr().Is6() {
			args = append(args, "nodad")
		}
		ns.IP(t, args...)
	}
}
