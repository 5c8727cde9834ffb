package udpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var families = []string{"127.0.0.1", "::1"}

// echo is a UDP backend that answers "name:query" and remembers which
// source addresses spoke to it.
type echo struct {
	name  string
	addr  netip.AddrPort
	mu    sync.Mutex
	peers map[netip.AddrPort]int
}

func startEcho(tb testing.TB, ip, name string) *echo {
	tb.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	require.NoError(tb, err, "listen for backend %s on %s", name, ip)
	e := &echo{name: name, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), peers: map[netip.AddrPort]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		prefix := []byte(name + ":")
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf[len(prefix):])
			if err != nil {
				return
			}
			e.mu.Lock()
			e.peers[from]++
			e.mu.Unlock()
			copy(buf, prefix)
			_, _ = conn.WriteToUDPAddrPort(buf[:len(prefix)+n], from)
		}
	}()
	tb.Cleanup(func() { conn.Close(); <-done })
	return e
}

func (e *echo) peerCount() (peers, datagrams int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.peers {
		datagrams += n
	}
	return len(e.peers), datagrams
}

func listenAddr(ip string) string { return netip.AddrPortFrom(netip.MustParseAddr(ip), 0).String() }

// startProxy runs p.Serve until the test ends, then checks that Serve
// returned nil, closed every session and left no goroutine behind.
func startProxy(tb testing.TB, cfg Config) *Proxy {
	tb.Helper()
	p, err := New(cfg)
	require.NoError(tb, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			require.NoError(tb, err, "Serve")
		case <-time.After(5 * time.Second):
			tb.Fatalf("Serve on %s did not return within 5s of its context ending", p.Addr())
		}
		st := p.Stats()
		require.Equal(tb, st.SessionsOpened, st.SessionsClosed, "sessions left open after Serve: %+v", st)
		waitFor(tb, func() bool { return proxyGoroutines() == "" }, "the proxy's goroutines to end")
	})
	return p
}

// proxyGoroutines returns the stacks of goroutines running the proxy's
// own methods, the hand-made version of a goroutine-leak check.
func proxyGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "udpproxy.(*Proxy).") && !strings.Contains(g, "udpproxy.proxyGoroutines") {
			leaked = append(leaked, g)
		}
	}
	return strings.Join(leaked, "\n\n")
}

func waitFor(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up after 5s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newClient(tb testing.TB, ip string) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	require.NoError(tb, err)
	tb.Cleanup(func() { c.Close() })
	return c
}

// query sends msg to the proxy and returns the reply, which must come
// from the proxy's own address.
func query(c *net.UDPConn, proxy netip.AddrPort, msg string) (string, error) {
	if _, err := c.WriteToUDPAddrPort([]byte(msg), proxy); err != nil {
		return "", err
	}
	if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return "", err
	}
	buf := make([]byte, maxDatagram)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", fmt.Errorf("reply to %q: %w", msg, err)
	}
	if from != proxy {
		return "", fmt.Errorf("reply to %q came from %s, not the proxy %s", msg, from, proxy)
	}
	return string(buf[:n]), nil
}

// backendOf returns the name of the backend that answered msg.
func backendOf(reply, msg string) (string, error) {
	name, echoed, ok := strings.Cut(reply, ":")
	if !ok || echoed != msg {
		return "", fmt.Errorf("reply %q does not echo %q", reply, msg)
	}
	return name, nil
}

func TestStickyRoundRobin(t *testing.T) {
	for _, ip := range families {
		t.Run(ip, func(t *testing.T) {
			a, b := startEcho(t, ip, "a"), startEcho(t, ip, "b")
			p := startProxy(t, Config{Listen: listenAddr(ip), Backends: []netip.AddrPort{a.addr, b.addr}})

			const clients, queries = 100, 10
			conns := make([]*net.UDPConn, clients)
			for i := range conns {
				conns[i] = newClient(t, ip)
			}
			chosen := make([]string, clients)
			errs := make([]error, clients)
			var wg sync.WaitGroup
			for i, c := range conns {
				wg.Go(func() {
					for q := range queries {
						msg := fmt.Sprintf("client %d query %d", i, q)
						reply, err := query(c, p.Addr(), msg)
						if err == nil {
							var name string
							name, err = backendOf(reply, msg)
							if err == nil && chosen[i] != "" && name != chosen[i] {
								err = fmt.Errorf("query %d answered by %s, earlier ones by %s", q, name, chosen[i])
							}
							chosen[i] = name
						}
						if err != nil {
							errs[i] = fmt.Errorf("client %d: %w", i, err)
							return
						}
					}
				})
			}
			wg.Wait()
			require.NoError(t, errors.Join(errs...))

			per := map[string]int{}
			for _, name := range chosen {
				per[name]++
			}
			require.Equal(t, map[string]int{"a": 50, "b": 50}, per, "clients per backend")
			for _, e := range []*echo{a, b} {
				peers, datagrams := e.peerCount()
				require.Equal(t, 50, peers, "backend %s: one upstream socket per session", e.name)
				require.Equal(t, 500, datagrams, "backend %s: datagrams", e.name)
			}
			// The proxy counts a reply just after sending it.
			want := Stats{SessionsOpened: clients, DatagramsIn: clients * queries, DatagramsOut: clients * queries}
			waitFor(t, func() bool { return p.Stats() == want }, fmt.Sprintf("stats %+v", want))
		})
	}
}

func TestMaxRepliesOneClosesSession(t *testing.T) {
	for _, ip := range families {
		t.Run(ip, func(t *testing.T) {
			a, b := startEcho(t, ip, "a"), startEcho(t, ip, "b")
			p := startProxy(t, Config{Listen: listenAddr(ip), Backends: []netip.AddrPort{a.addr, b.addr}, MaxReplies: 1})
			c := newClient(t, ip)

			reply, err := query(c, p.Addr(), "first")
			require.NoError(t, err)
			first, err := backendOf(reply, "first")
			require.NoError(t, err)
			waitFor(t, func() bool { return p.Stats().SessionsClosed == 1 }, "the session to close after its one reply")

			// The same client address now opens a fresh session, which
			// round robin sends to the other backend.
			reply, err = query(c, p.Addr(), "second")
			require.NoError(t, err)
			second, err := backendOf(reply, "second")
			require.NoError(t, err)
			require.NotEqual(t, first, second, "the second query should open a new session on the next backend")
			waitFor(t, func() bool { return p.Stats().SessionsClosed == 2 }, "the second session to close")
			require.EqualValues(t, 2, p.Stats().SessionsOpened)
		})
	}
}

// A client that asks again on the same port as soon as it has its one
// reply, as a stub resolver reusing its port does, gets every answer:
// the next query opens a new session rather than going into the one
// that is closing.
func TestMaxRepliesOneAskAgainAtOnce(t *testing.T) {
	for _, ip := range families {
		t.Run(ip, func(t *testing.T) {
			a, b := startEcho(t, ip, "a"), startEcho(t, ip, "b")
			p := startProxy(t, Config{Listen: listenAddr(ip), Backends: []netip.AddrPort{a.addr, b.addr}, MaxReplies: 1})
			c := newClient(t, ip)
			const queries = 500
			for i := range queries {
				msg := fmt.Sprintf("q%d", i)
				reply, err := query(c, p.Addr(), msg)
				require.NoError(t, err, "query %d of %d: %+v", i+1, queries, p.Stats())
				_, err = backendOf(reply, msg)
				require.NoError(t, err)
			}
			require.EqualValues(t, queries, p.Stats().SessionsOpened, "one session per query")
		})
	}
}

func TestIdleTimeoutClosesSession(t *testing.T) {
	for _, ip := range families {
		t.Run(ip, func(t *testing.T) {
			a := startEcho(t, ip, "a")
			const idle = 200 * time.Millisecond
			p := startProxy(t, Config{Listen: listenAddr(ip), Backends: []netip.AddrPort{a.addr}, Idle: idle})
			c := newClient(t, ip)

			// Traffic every idle/5 for two and a half idle periods keeps one
			// session alive throughout.
			for i := range 12 {
				msg := fmt.Sprint("keep ", i)
				reply, err := query(c, p.Addr(), msg)
				require.NoError(t, err)
				_, err = backendOf(reply, msg)
				require.NoError(t, err)
				time.Sleep(idle / 5)
			}
			st := p.Stats()
			require.EqualValues(t, 1, st.SessionsOpened, "a busy session must not be closed as idle")
			require.Zero(t, st.SessionsClosed, "a busy session must not be closed as idle")

			waitFor(t, func() bool { return p.Stats().SessionsClosed == 1 }, "the quiet session to close")
			_, err := query(c, p.Addr(), "again")
			require.NoError(t, err)
			require.EqualValues(t, 2, p.Stats().SessionsOpened, "the client's next datagram opens a new session")
		})
	}
}

func TestMaxSessionsDropsNewClient(t *testing.T) {
	for _, ip := range families {
		t.Run(ip, func(t *testing.T) {
			a := startEcho(t, ip, "a")
			p := startProxy(t, Config{Listen: listenAddr(ip), Backends: []netip.AddrPort{a.addr}, MaxSessions: 2, Idle: 200 * time.Millisecond})
			c1, c2, c3 := newClient(t, ip), newClient(t, ip), newClient(t, ip)
			for _, c := range []*net.UDPConn{c1, c2} {
				_, err := query(c, p.Addr(), "hello")
				require.NoError(t, err)
			}

			_, err := c3.WriteToUDPAddrPort([]byte("third"), p.Addr())
			require.NoError(t, err)
			waitFor(t, func() bool { return p.Stats().Dropped == 1 }, "the third client's datagram to be dropped")
			st := p.Stats()
			require.EqualValues(t, 3, st.DatagramsIn)
			require.EqualValues(t, 2, st.SessionsOpened, "the third client is over MaxSessions")
			require.NoError(t, c3.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
			_, _, err = c3.ReadFromUDPAddrPort(make([]byte, 64))
			require.ErrorIs(t, err, os.ErrDeadlineExceeded, "the dropped client got an answer")

			// Once the two sessions idle out there is room again.
			waitFor(t, func() bool { return p.Stats().SessionsClosed == 2 }, "the two sessions to idle out")
			reply, err := query(c3, p.Addr(), "third again")
			require.NoError(t, err)
			_, err = backendOf(reply, "third again")
			require.NoError(t, err)
		})
	}
}

func TestLargestDatagram(t *testing.T) {
	a := startEcho(t, "127.0.0.1", "a")
	p := startProxy(t, Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{a.addr}})
	c := newClient(t, "127.0.0.1")
	const maxIPv4Payload = 65507
	msg := strings.Repeat("x", maxIPv4Payload-len("a:"))
	reply, err := query(c, p.Addr(), msg)
	require.NoError(t, err)
	require.Len(t, reply, maxIPv4Payload)
	_, err = backendOf(reply, msg)
	require.NoError(t, err)
}

func TestServeEndsEverything(t *testing.T) {
	a := startEcho(t, "127.0.0.1", "a")
	before := runtime.NumGoroutine()
	p, err := New(Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{a.addr}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()

	for i := range 20 {
		c := newClient(t, "127.0.0.1")
		_, err := query(c, p.Addr(), fmt.Sprint("q", i))
		require.NoError(t, err)
	}
	require.EqualValues(t, 20, p.Stats().SessionsOpened)
	require.ErrorContains(t, p.Serve(ctx), "called twice")

	cancel()
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s of its context ending")
	}
	require.EqualValues(t, 20, p.Stats().SessionsClosed)
	// A goroutine that has signalled its end may still be on its way
	// out, hence the short poll.
	waitFor(t, func() bool { return proxyGoroutines() == "" }, "the proxy's goroutines to end")
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before }, fmt.Sprintf("goroutines back to %d", before))

	// The listening port is free again.
	again, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(p.Addr()))
	require.NoError(t, err, "rebind the proxy's port after Serve")
	again.Close()
}

func TestConfigErrors(t *testing.T) {
	good := netip.MustParseAddrPort("127.0.0.1:5353")
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer busy.Close()
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"empty listen", Config{Backends: []netip.AddrPort{good}}, []string{"Listen", `""`}},
		{"host name", Config{Listen: "localhost:53", Backends: []netip.AddrPort{good}}, []string{"Listen", `"localhost:53"`}},
		{"no backends", Config{Listen: "127.0.0.1:0"}, []string{"Backends", "empty"}},
		{"zero backend", Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{good, {}}}, []string{"Backends[1]", "invalid AddrPort"}},
		{"port zero", Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}}, []string{"Backends[0]", "127.0.0.1:0"}},
		{"unspecified", Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{netip.MustParseAddrPort("[::]:53")}}, []string{"Backends[0]", "[::]:53"}},
		{"negative idle", Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{good}, Idle: -time.Second}, []string{"Idle", "-1s"}},
		{"negative max sessions", Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{good}, MaxSessions: -1}, []string{"MaxSessions", "-1"}},
		{"negative max replies", Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{good}, MaxReplies: -2}, []string{"MaxReplies", "-2"}},
		{"port in use", Config{Listen: busy.LocalAddr().String(), Backends: []netip.AddrPort{good}}, []string{"listen on " + busy.LocalAddr().String(), "address already in use"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.cfg)
			require.Error(t, err)
			require.Nil(t, p)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// The two benchmarks below share one file so that a single
// `go test -bench . ./bench/udpproxy/` run shows what the user-space hop
// adds to a round trip: compare their ns/op.

const benchPayload = 64

func benchRoundTrip(b *testing.B, to netip.AddrPort) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	require.NoError(b, err)
	defer c.Close()
	req := make([]byte, benchPayload)
	resp := make([]byte, maxDatagram)
	require.NoError(b, c.SetReadDeadline(time.Now().Add(time.Minute)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n, err := c.Read(resp)
		if err != nil {
			b.Fatal(err)
		}
		if n != benchPayload+len("a:") {
			b.Fatalf("reply of %d bytes, want %d", n, benchPayload+len("a:"))
		}
	}
}

// BenchmarkProxyRoundTrip: client -> proxy -> echo backend -> proxy ->
// client, one request in flight.
func BenchmarkProxyRoundTrip(b *testing.B) {
	a := startEcho(b, "127.0.0.1", "a")
	p := startProxy(b, Config{Listen: "127.0.0.1:0", Backends: []netip.AddrPort{a.addr}})
	benchRoundTrip(b, p.Addr())
}

// BenchmarkDirectRoundTrip: client -> echo backend -> client.
func BenchmarkDirectRoundTrip(b *testing.B) {
	a := startEcho(b, "127.0.0.1", "a")
	benchRoundTrip(b, a.addr)
}
