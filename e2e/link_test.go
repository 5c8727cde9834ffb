package e2e

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/txwatch"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// A node whose link is up but cannot transmit says so. The harness's two
// cures are taken away: the client's end of the node's link runs no XDP
// program, and the node's end has no queueing discipline. The
// whitelist's RSTs, sent with XDP_TX, then fill the client's ring, and
// the node's later transmits are all dropped: the wedge the lab's users
// met (docs/veth-xdp-tx-wedge.md). Status and metrics call veth-n
// stalled within seconds, and ok again once the client's NAPI runs.
func TestLinkTransmitStalled(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	require.NoError(t, s.ClientWake.Close())
	netnstest.Run(t, "ip", "netns", "exec", s.Node.Name, "tc", "qdisc", "del", "dev", "veth-n", "root")
	c := s.Config(nodetest.Params{})
	for i := range c.Services {
		if c.Services[i].Mode == config.ModeHTTP {
			c.Services[i].Reject = true
		}
	}
	s.WriteConfig(c)
	s.Start()
	link := func() txwatch.State {
		for _, l := range s.Status().Daemon.Links {
			if l.Iface == "veth-n" {
				return l
			}
		}
		return txwatch.State{}
	}
	require.Equal(t, txwatch.OK, link().Transmit)

	// A client that is not on port 80's whitelist: each SYN is answered
	// with an RST by XDP_TX, 512 of them within a second or two.
	stranger := s.ClientIP(0)
	dial := nodetest.NewDialer(t, s.Client, 64)
	vip80 := netip.AddrPortFrom(nodetest.VIP, 80).String()
	rsts := func() {
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				for range 8 {
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					if c, err := dial.DialFrom(ctx, "tcp", vip80, &net.TCPAddr{IP: stranger.AsSlice()}); err == nil {
						c.Close()
					}
					cancel()
				}
			})
		}
		wg.Wait()
	}

	// The listed client keeps asking, so the node keeps trying to answer;
	// it asks only after a burst, whose XDP_TX frames must fill the
	// client's ring with no ordinary transmit in between.
	listed := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				dctx, dcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				if c, err := s.ClientDialer().DialContext(dctx, "tcp", netip.AddrPortFrom(nodetest.VIP, 443).String()); err == nil {
					c.Close()
				}
				dcancel()
			}
		}()
		return func() { cancel(); <-done }
	}
	// The ring fills only when the RSTs outrun the client's NAPI, which a
	// busy machine may run in between: up to three bursts (one fresh
	// clone's CI run met a burst that did not wedge the link).
	stalled := func() bool { return link().Transmit == txwatch.Stalled }
	var start time.Time
	for burst := range 3 {
		rsts()
		stop := listed()
		t.Cleanup(stop)
		start = time.Now()
		if burst == 2 {
			require.Eventually(t, stalled, 10*time.Second, 100*time.Millisecond, "veth-n never called stalled after 3 bursts of RSTs")
			break
		}
		deadline := time.Now().Add(6 * time.Second)
		for !stalled() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if stalled() {
			break
		}
		stop()
		t.Logf("burst %d of RSTs: veth-n not stalled within 6s, another burst", burst+1)
	}
	t.Logf("called stalled %v after the RSTs: %s", time.Since(start).Round(10*time.Millisecond), link().Reason)
	require.Contains(t, s.Metrics(), `ober_link_transmit_stalled{iface="veth-n"} 1`)

	netnstest.Run(t, "ip", "netns", "exec", s.Client.Name, "ethtool", "-K", "veth-c", "gro", "off")
	netnstest.Run(t, "ip", "netns", "exec", s.Client.Name, "ethtool", "-K", "veth-c", "gro", "on")
	require.Eventually(t, func() bool { return link().Transmit == txwatch.OK }, 5*time.Second, 100*time.Millisecond,
		"ok again once the client's end drains its ring")
	m := s.Metrics()
	require.Contains(t, m, `ober_link_transmit_stalled{iface="veth-n"} 0`)
	require.Contains(t, m, `ober_link_transmit_stalls_total{iface="veth-n"} 1`)
}
