package handoff

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/loader"
)

// Services says which local address and port pairs are VIP services whose
// connections the dataplane dispatches: the connections worth recording.
type Services func() map[netip.AddrPort]bool

// LocalFlows is the FlowSource of a node: its established connections
// from the kernel's socket table (sock_diag), its new ones from the
// dataplane's record (loader.FlowReader).
type LocalFlows struct {
	services Services
	reader   *loader.FlowReader
}

// NewLocalFlows lists the connections to services, reading new ones from
// reader.
func NewLocalFlows(services Services, reader *loader.FlowReader) *LocalFlows {
	return &LocalFlows{services: services, reader: reader}
}

// tcpListen and tcpClose are the states that own no flow (linux/tcp_states.h).
const (
	tcpClose  = 7
	tcpListen = 10
)

// Established lists the connections to a service in every state that
// still has segments to receive (established, closing, fin-wait-2), the
// records the other nodes hand segments off by. A connection in
// time-wait is left out: it expects at most a retransmitted FIN, and its
// client reuses the port within the minute it lasts, for a connection
// another node may take. Advertised every second, the old record
// overwrote the live one on the other nodes (last writer wins), which
// then sent the live connection's segments here, and this kernel reset
// it (TestVRRPHandoff/vip_move, after the clients had reused ports of
// graceful_stop).
func (l *LocalFlows) Established() ([]loader.Flow, error) {
	svcs := l.services()
	var out []loader.Flow
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := netlink.SocketDiagTCP(fam)
		if err != nil {
			return nil, fmt.Errorf("list connections: %w", err)
		}
		for _, s := range socks {
			if s.State == tcpListen || s.State == tcpClose || s.State == tcpTimeWait {
				continue
			}
			local, ok1 := netip.AddrFromSlice(s.ID.Source)
			remote, ok2 := netip.AddrFromSlice(s.ID.Destination)
			if !ok1 || !ok2 {
				continue
			}
			vip := netip.AddrPortFrom(local.Unmap(), s.ID.SourcePort)
			if !svcs[vip] {
				continue
			}
			out = append(out, loader.Flow{Client: netip.AddrPortFrom(remote.Unmap(), s.ID.DestinationPort), VIP: vip})
		}
	}
	return out, nil
}

// New returns the connections the dataplane recorded since the last call.
func (l *LocalFlows) New(wait time.Duration) ([]loader.Flow, error) {
	return l.reader.Read(wait, 4096)
}

// tcpFinWait2 is a connection this end closed, its data and FIN
// acknowledged, waiting for the peer's FIN (for up to tcp_fin_timeout
// once its process is gone); tcpTimeWait one waiting out its last
// segments. Neither has anything left to deliver.
const (
	tcpFinWait2 = 5
	tcpTimeWait = 6
)

// OpenByVIP counts the connections to a service that still have data or
// a FIN of theirs to deliver (every state that Established lists but
// fin-wait-2), by VIP address.
func (l *LocalFlows) OpenByVIP() (map[netip.Addr]int, error) {
	svcs := l.services()
	out := map[netip.Addr]int{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := netlink.SocketDiagTCP(fam)
		if err != nil {
			return nil, fmt.Errorf("list connections: %w", err)
		}
		for _, s := range socks {
			if s.State == tcpListen || s.State == tcpClose || s.State == tcpTimeWait || s.State == tcpFinWait2 {
				continue
			}
			local, ok := netip.AddrFromSlice(s.ID.Source)
			if !ok || !svcs[netip.AddrPortFrom(local.Unmap(), s.ID.SourcePort)] {
				continue
			}
			out[local.Unmap()]++
		}
	}
	return out, nil
}
