package e2e

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// TestServeSlowloris: one client address opens 2,000 TLS connections and
// sends nothing. Past limits.connections_per_source (1,000 by default,
// 500 per instance) they are closed at once; the rest are ended when
// timeouts.tls_handshake (3 s here) passes without a ClientHello; all
// the while, another client is served.
func TestServeSlowloris(t *testing.T) {
	const attackers, bound = 2000, 3 * time.Second
	s := nodetest.New(t, oberBin, 2)
	s.Client.IP(t, "addr", "add", "10.98.1.2/24", "dev", "veth-c")
	s.WriteConfig(s.Config(nodetest.Params{Timeouts: config.Timeouts{TLSHandshake: config.Duration{Duration: bound}}}))
	s.Start()
	ctx := context.Background()
	vip := netip.AddrPortFrom(nodetest.VIP, 443).String()

	// The other client, served throughout.
	stop := make(chan struct{})
	var served, failed int
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		other := &net.TCPAddr{IP: net.IPv4(10, 98, 1, 2)}
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c, err := s.ClientDialer().DialFrom(ctx, "tcp", vip, other)
			if err == nil {
				_, err = answer(c, true, s.TLSConfig())
			}
			mu.Lock()
			if err != nil {
				failed++
				t.Logf("the other client: %v", err)
			} else {
				served++
			}
			mu.Unlock()
		}
	})

	start := time.Now()
	conns := make([]net.Conn, 0, attackers)
	for len(conns) < attackers {
		c, err := s.ClientDialer().DialContext(ctx, "tcp", vip)
		if err != nil {
			continue // reset before the dial returned: refused
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	opened := time.Since(start)
	// closed reports which connections the node has ended by now.
	closed := func() int {
		n := 0
		for _, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
			_, err := c.Read(make([]byte, 1))
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				n++
			}
		}
		return n
	}
	time.Sleep(500 * time.Millisecond)
	early := closed()
	t.Logf("%d idle connections from one address opened in %v; %d closed at once (over the per-source limit)",
		attackers, opened.Round(time.Millisecond), early)
	require.GreaterOrEqual(t, early, attackers-1000-100, "connections over the per-source limit stay open")
	require.Less(t, early, attackers, "every connection was closed at once: the handshake bound was not what ended them")

	var all time.Duration
	require.Eventually(t, func() bool {
		all = time.Since(start)
		return closed() == attackers
	}, bound+5*time.Second, 100*time.Millisecond, "idle handshakes outlived timeouts.tls_handshake (%v)", bound)
	t.Logf("every idle handshake ended %v after the first connection (bound %v, looked at every %v)", all.Round(time.Millisecond), bound, bound/4)
	require.GreaterOrEqual(t, all, bound, "ended before the bound")

	close(stop)
	wg.Wait()
	require.Zero(t, failed, "the other client was refused during the attack")
	require.Greater(t, served, 10)
	require.Contains(t, s.Metrics(), "ober_tls_handshake_timeouts_total")
}
