package netnstest

import (
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// The kernel behaviour behind the lab's wedged nodes
// (docs/veth-xdp-tx-wedge.md), and the harnesses' cure for it. A's XDP
// program sends every frame from B back to B (XDP_TX), as ober's RSTs
// and drain handoff do. A veth wakes its peer for such frames only when
// the peer has an XDP program: without one, a burst of them fills B's
// ring, and from then on every frame A transmits is dropped. With a pass
// program on B (PassXDP), or a queueing discipline on A (Veth gives one),
// the same burst leaves A's link working.
func TestVethXDPTXWedge(t *testing.T) {
	RequireRoot(t)
	for _, tc := range []struct {
		name   string
		wake   bool // a pass program on B (PassXDP)
		qdisc  bool // a queueing discipline on A (Veth's)
		wedged bool
	}{
		{"peer without XDP, no qdisc", false, false, true},
		{"peer with a pass program", true, false, false},
		{"a qdisc on the sender", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := New(t, "wa"), New(t, "wb")
			Veth(t, a, "eth-a", b, "eth-b", 1)
			if !tc.qdisc {
				// A's end as a veth comes by default: without a
				// queueing discipline, a full ring drops what A sends
				// and wakes nothing.
				Run(t, "ip", "netns", "exec", a.Name, "tc", "qdisc", "del", "dev", "eth-a", "root")
			}
			a.IP(t, "addr", "add", "10.77.0.1/24", "dev", "eth-a")
			b.IP(t, "addr", "add", "10.77.0.2/24", "dev", "eth-b")
			// A's program bounces ARP as well: the neighbours are set.
			a.IP(t, "neigh", "replace", "10.77.0.2", "lladdr", macOf(t, b, "eth-b"), "dev", "eth-a", "nud", "permanent")
			b.IP(t, "neigh", "replace", "10.77.0.1", "lladdr", macOf(t, a, "eth-a"), "dev", "eth-b", "nud", "permanent")
			if tc.wake {
				PassXDP(t, b, "eth-b")
			}
			var sink *net.UDPConn
			if err := b.Do(func() (err error) {
				sink, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 77, 0, 2), Port: 7000})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sink.Close() })
			if got := sendAndCount(t, a, sink, 10); got != 10 {
				t.Fatalf("before any XDP_TX, B got %d of 10 datagrams from A", got)
			}

			BounceXDP(t, a, "eth-a")
			// 2,000 frames from B, each sent back to B by XDP_TX: far more
			// than B's ring (256) holds.
			SendUDP(t, b, "10.77.0.1:9", 2000, 64)
			time.Sleep(200 * time.Millisecond)
			dropped := txDropped(t, a, "eth-a")
			got := sendAndCount(t, a, sink, 10)
			t.Logf("after 2,000 XDP_TX frames: B got %d of 10 datagrams from A; eth-a dropped %d on transmit", got, txDropped(t, a, "eth-a")-dropped)
			switch {
			case tc.wedged && got != 0:
				t.Fatalf("this kernel did not wedge the link (B got %d of 10): docs/veth-xdp-tx-wedge.md should say which kernels are fixed", got)
			case !tc.wedged && got != 10:
				t.Fatalf("B got %d of 10 datagrams: the link wedged", got)
			}
		})
	}
}

// sendAndCount sends n datagrams from a to sink and counts those that
// arrive within a second.
func sendAndCount(t *testing.T, a *NS, sink *net.UDPConn, n int) int {
	t.Helper()
	if err := a.Do(func() error {
		c, err := net.Dial("udp4", sink.LocalAddr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			c.Write([]byte("hello"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := 0
	buf := make([]byte, 64)
	for got < n {
		sink.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := sink.ReadFrom(buf); err != nil {
			break
		}
		got++
	}
	return got
}

func macOf(t *testing.T, ns *NS, iface string) string {
	t.Helper()
	var mac string
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err == nil {
			mac = ifi.HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// txDropped reads iface's transmit drops by netlink: /sys/class/net is
// the namespace of whoever mounted it, not the calling thread's.
func txDropped(t *testing.T, ns *NS, iface string) uint64 {
	t.Helper()
	var n uint64
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		n = l.Attrs().Statistics.TxDropped
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
