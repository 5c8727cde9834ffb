package txwatch

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// A real wedged veth (docs/veth-xdp-tx-wedge.md): A's XDP sends B's
// frames back with XDP_TX into B's ring, which B, without an XDP program,
// never drains. While A keeps trying to send, the watch calls eth-a
// stalled within its window; restarting B's NAPI (GRO off and on) lets
// A send again, and the watch says ok at the next sample.
func TestWedgedVeth(t *testing.T) {
	netnstest.RequireRoot(t)
	a, b := netnstest.New(t, "txa"), netnstest.New(t, "txb")
	netnstest.Veth(t, a, "eth-a", b, "eth-b", 1)
	// A's end as a veth comes by default, without a queueing
	// discipline: then a full ring drops what A sends and wakes nothing.
	netnstest.Run(t, "ip", "netns", "exec", a.Name, "tc", "qdisc", "del", "dev", "eth-a", "root")
	a.IP(t, "addr", "add", "10.77.1.1/24", "dev", "eth-a")
	b.IP(t, "addr", "add", "10.77.1.2/24", "dev", "eth-b")
	a.IP(t, "neigh", "replace", "10.77.1.2", "lladdr", "02:00:00:00:00:02", "dev", "eth-a", "nud", "permanent")
	var macA string
	require.NoError(t, a.Do(func() error {
		ifi, err := net.InterfaceByName("eth-a")
		if err == nil {
			macA = ifi.HardwareAddr.String()
		}
		return err
	}))
	b.IP(t, "neigh", "replace", "10.77.1.1", "lladdr", macA, "dev", "eth-b", "nud", "permanent")

	netnstest.BounceXDP(t, a, "eth-a")

	w := New(time.Second)
	observe := func() State {
		var st State
		require.NoError(t, a.Do(func() error {
			c, err := Read("eth-a")
			st, _ = w.Observe("eth-a", time.Now(), c)
			return err
		}))
		return st
	}
	// A sends all along, as a node's BGP, BFD and health checks do.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = a.Do(func() error {
			c, err := net.Dial("udp4", "10.77.1.2:9")
			if err != nil {
				return err
			}
			defer c.Close()
			for ctx.Err() == nil {
				c.Write([]byte("keepalive"))
				time.Sleep(20 * time.Millisecond)
			}
			return nil
		})
	}()
	for range 3 {
		require.Equal(t, OK, observe().Transmit)
		time.Sleep(400 * time.Millisecond)
	}

	netnstest.SendUDP(t, b, "10.77.1.1:9", 2000, 64)
	start := time.Now()
	var st State
	for st.Transmit != Stalled {
		require.Less(t, time.Since(start), 5*time.Second, "not called stalled: %+v", st)
		time.Sleep(200 * time.Millisecond)
		st = observe()
	}
	t.Logf("stalled after %v: %s", time.Since(start).Round(10*time.Millisecond), st.Reason)
	require.Contains(t, st.Reason, "sent no packet")

	netnstest.Run(t, "ip", "netns", "exec", b.Name, "ethtool", "-K", "eth-b", "gro", "off")
	netnstest.Run(t, "ip", "netns", "exec", b.Name, "ethtool", "-K", "eth-b", "gro", "on")
	require.Eventually(t, func() bool { return observe().Transmit == OK }, 3*time.Second, 100*time.Millisecond,
		"A sends again once B's NAPI runs")
}
