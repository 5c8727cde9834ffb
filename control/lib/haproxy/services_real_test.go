package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/haproxytest"

	"github.com/ober-ingress/ober/control/lib/certs"
)

// proxyHeader is what a PROXY protocol header told a server.
type proxyHeader struct {
	Version  int
	Src, Dst netip.AddrPort
}

// proxyV2Sig starts every PROXY protocol v2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// readProxyHeader reads a PROXY protocol header of either version.
func readProxyHeader(r *bufio.Reader) (proxyHeader, error) {
	first, err := r.Peek(len(proxyV2Sig))
	if err != nil {
		return proxyHeader{}, err
	}
	if !bytes.Equal(first, proxyV2Sig) {
		// v1: "PROXY TCP4 <src> <dst> <sport> <dport>\r\n"
		line, err := r.ReadString('\n')
		if err != nil {
			return proxyHeader{}, err
		}
		f := strings.Fields(line)
		if len(f) != 6 || f[0] != "PROXY" || !strings.HasSuffix(line, "\r\n") {
			return proxyHeader{}, fmt.Errorf("not a PROXY v1 header: %q", line)
		}
		h := proxyHeader{Version: 1}
		for _, x := range []struct {
			ap         *netip.AddrPort
			addr, port string
		}{{&h.Src, f[2], f[4]}, {&h.Dst, f[3], f[5]}} {
			a, err1 := netip.ParseAddr(x.addr)
			p, err2 := strconv.ParseUint(x.port, 10, 16)
			if err1 != nil || err2 != nil {
				return proxyHeader{}, fmt.Errorf("PROXY v1 header %q: bad address", line)
			}
			*x.ap = netip.AddrPortFrom(a, uint16(p))
		}
		return h, nil
	}
	fixed := make([]byte, 16)
	if _, err := io.ReadFull(r, fixed); err != nil {
		return proxyHeader{}, err
	}
	if fixed[12] != 0x21 {
		return proxyHeader{}, fmt.Errorf("PROXY v2: version/command %#x, want 0x21 (v2 PROXY)", fixed[12])
	}
	body := make([]byte, binary.BigEndian.Uint16(fixed[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return proxyHeader{}, err
	}
	h := proxyHeader{Version: 2}
	var n int
	switch fixed[13] {
	case 0x11: // TCP over IPv4
		n = 4
	case 0x21: // TCP over IPv6
		n = 16
	default:
		return proxyHeader{}, fmt.Errorf("PROXY v2: family %#x, want TCP4 or TCP6", fixed[13])
	}
	if len(body) < 2*n+4 {
		return proxyHeader{}, fmt.Errorf("PROXY v2: %d address bytes", len(body))
	}
	src, _ := netip.AddrFromSlice(body[:n])
	dst, _ := netip.AddrFromSlice(body[n : 2*n])
	h.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[2*n:]))
	h.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[2*n+2:]))
	return h, nil
}

// tcpServer is a backend that names itself to every connection, then
// echoes lines. With proxy set it first reads a PROXY header.
type tcpServer struct {
	name  string
	proxy bool
	ln    net.Listener

	mu      sync.Mutex
	headers []proxyHeader
	errs    []error
}

func newTCPServer(t *testing.T, name, addr string, proxy bool) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	s := &tcpServer{name: name, proxy: proxy, ln: ln}
	t.Cleanup(func() { ln.Close() })
	go s.serve(ln, func(c net.Conn) net.Conn { return c })
	return s
}

// newTLSServer is a tcpServer behind TLS with cert.
func newTLSServer(t *testing.T, name string, cert tls.Certificate) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &tcpServer{name: name, ln: ln}
	t.Cleanup(func() { ln.Close() })
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	go s.serve(ln, func(c net.Conn) net.Conn { return tls.Server(c, cfg) })
	return s
}

func (s *tcpServer) serve(ln net.Listener, wrap func(net.Conn) net.Conn) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			r := bufio.NewReader(c)
			if s.proxy {
				h, err := readProxyHeader(r)
				s.mu.Lock()
				s.headers = append(s.headers, h)
				if err != nil {
					s.errs = append(s.errs, err)
				}
				s.mu.Unlock()
				if err != nil {
					return
				}
			}
			conn := wrap(&bufConn{Conn: c, r: r})
			if _, err := io.WriteString(conn, s.name+"\n"); err != nil {
				return
			}
			rd := bufio.NewReader(conn)
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := io.WriteString(conn, line); err != nil {
					return
				}
			}
		}()
	}
}

func (s *tcpServer) addr() string { return s.ln.Addr().String() }

func (s *tcpServer) addrPort() netip.AddrPort { return netip.MustParseAddrPort(s.addr()) }

func (s *tcpServer) seen() ([]proxyHeader, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]proxyHeader(nil), s.headers...), append([]error(nil), s.errs...)
}

// bufConn reads through the reader that parsed the PROXY header.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// session is a client connection through HAProxy to a tcpServer.
type session struct {
	c net.Conn
	r *bufio.Reader
}

// dialServer connects to addr (wrapping the connection, for TLS) and
// returns the name of the server that answered.
func dialServer(addr string, wrap func(net.Conn) net.Conn) (*session, string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, "", err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	conn := c
	if wrap != nil {
		conn = wrap(c)
	}
	s := &session{c: conn, r: bufio.NewReader(conn)}
	name, err := s.r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return s, strings.TrimSuffix(name, "\n"), nil
}

// whoAnswers is the name of the server a new connection to addr reaches.
func whoAnswers(t *testing.T, addr string) string {
	t.Helper()
	s, name, err := dialServer(addr, nil)
	require.NoError(t, err)
	s.c.Close()
	return name
}

// echo checks that the session still carries data both ways.
func (s *session) echo(t *testing.T, msg string) {
	t.Helper()
	_ = s.c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(s.c, msg+"\n")
	require.NoError(t, err)
	got, err := s.r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, msg+"\n", got)
}

// refused reports whether a connection to addr is closed without a byte
// from any server.
func refused(addr string, wrap func(net.Conn) net.Conn) error {
	s, name, err := dialServer(addr, wrap)
	if err == nil {
		s.c.Close()
		return fmt.Errorf("answered by %s", name)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no answer and no close: %w", err)
	}
	return nil
}

// serviceInstance is an instance of the HAProxy at hand with the given
// frontends and pools, run unprivileged as ober runs it.
func serviceInstance(t *testing.T, bin, dir string, fes []Frontend, pools []Pool) Instance {
	t.Helper()
	in := baseInstance()
	in.Version = haproxyVersion(t, bin)
	in.CPU = lastCPU(t)
	in.StatsSocket = filepath.Join(dir, "s.sock")
	in.ServedByHeader = false
	in.MaxConn = 1000 // within the test process's descriptor limit
	in.Frontends, in.Pools = fes, pools
	unprivileged(t, &in, dir)
	return in
}

// runInstance checks and starts in with files as fd 3, 4, ... and waits
// for its runtime API.
func runInstance(t *testing.T, bin, dir string, in Instance, files ...*os.File) Runtime {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := writeConfig(t, dir, in)
	require.NoError(t, Check(ctx, bin, cfg, nil))
	_, _, done := startHAProxy(t, bin, cfg, files...)
	rt := Runtime{Path: in.StatsSocket, Timeout: 2 * time.Second}
	waitReady(t, ctx, rt, done)
	return rt
}

// TestRealTCPProxyProtocol: a tcp service forwards to two servers, each
// told the client's and the VIP's addresses in a PROXY v2 header, and
// another to a server told them in v1; data flows both ways.
func TestRealTCPProxyProtocol(t *testing.T) { haproxytest.Each(t, testRealTCPProxyProtocol) }

func testRealTCPProxyProtocol(t *testing.T, bin string) {
	dir := shortTempDir(t)
	a := newTCPServer(t, "A", "127.0.0.1:0", true)
	b := newTCPServer(t, "B", "127.0.0.1:0", true)
	c := newTCPServer(t, "C", "127.0.0.1:0", true)
	f2, addr2 := listenerFile(t)
	f1, addr1 := listenerFile(t)
	in := serviceInstance(t, bin, dir, []Frontend{
		{Name: "tcp-v2", Mode: ModeTCP, Port: 9000, Binds: []Bind{{FD: 3, Family: 4}}, Pool: "v2",
			VIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
		{Name: "tcp-v1", Mode: ModeTCP, Port: 9001, Binds: []Bind{{FD: 4, Family: 4}}, Pool: "v1"},
	}, []Pool{
		{Name: "v2", Balance: BalanceRoundRobin, Servers: []Server{
			{Name: "a", Addr: a.addrPort(), Weight: 100, ProxyProtocol: ProxyV2},
			{Name: "b", Addr: b.addrPort(), Weight: 100, ProxyProtocol: ProxyV2},
		}},
		{Name: "v1", Balance: BalanceLeastConn, Servers: []Server{{Name: "c", Addr: c.addrPort(), Weight: 100, ProxyProtocol: ProxyV1}}},
	})
	runInstance(t, bin, dir, in, f2, f1)

	names := map[string]int{}
	var clients []netip.AddrPort
	for range 10 {
		s, name, err := dialServer(addr2, nil)
		require.NoError(t, err)
		s.echo(t, "hello "+name)
		clients = append(clients, netip.MustParseAddrPort(s.c.LocalAddr().String()))
		s.c.Close()
		names[name]++
	}
	require.Equal(t, map[string]int{"A": 5, "B": 5}, names, "round robin over both servers")
	var got []netip.AddrPort
	for _, srv := range []*tcpServer{a, b} {
		hs, errs := srv.seen()
		require.Empty(t, errs)
		for _, h := range hs {
			require.Equal(t, 2, h.Version)
			require.Equal(t, netip.MustParseAddrPort(addr2), h.Dst, "the address the client connected to")
			got = append(got, h.Src)
		}
	}
	require.ElementsMatch(t, clients, got, "each client's own address and port")

	s, name, err := dialServer(addr1, nil)
	require.NoError(t, err)
	require.Equal(t, "C", name)
	s.echo(t, "v1")
	hs, errs := c.seen()
	require.Empty(t, errs)
	require.Equal(t, []proxyHeader{{Version: 1, Src: netip.MustParseAddrPort(s.c.LocalAddr().String()), Dst: netip.MustParseAddrPort(addr1)}}, hs)
	s.c.Close()
}

// TestRealServerWithoutPort: a server without a port is connected to on
// the port the client connected to. Here that is the listener's own
// port; on a node, sk_lookup hands a port range's listener connections
// to every port of the range, and each reaches the server on its own.
func TestRealServerWithoutPort(t *testing.T) { haproxytest.Each(t, testRealServerWithoutPort) }

func testRealServerWithoutPort(t *testing.T, bin string) {
	dir := shortTempDir(t)
	f, addr := listenerFile(t)
	port := netip.MustParseAddrPort(addr).Port()
	// Another loopback address, same port: only the destination port
	// can bring a connection there.
	srv := newTCPServer(t, "P", fmt.Sprintf("127.0.0.2:%d", port), true)
	in := serviceInstance(t, bin, dir, []Frontend{{Name: "range", Mode: ModeTCP, Port: port, LastPort: port + 10,
		Binds: []Bind{{FD: 3, Family: 4}}, Pool: "range"}}, []Pool{{Name: "range", Balance: BalanceRoundRobin,
		Servers: []Server{{Name: "p", Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), 0), Weight: 100, ProxyProtocol: ProxyV2}}}})
	require.Contains(t, string(mustRender(t, in)), "server p 127.0.0.2 weight 100 send-proxy-v2\n")
	runInstance(t, bin, dir, in, f)

	s, name, err := dialServer(addr, nil)
	require.NoError(t, err)
	defer s.c.Close()
	require.Equal(t, "P", name)
	s.echo(t, "through")
	hs, _ := srv.seen()
	require.Len(t, hs, 1)
	require.Equal(t, port, hs[0].Dst.Port())
}

func mustRender(t *testing.T, in Instance) []byte {
	t.Helper()
	b, err := Render(in)
	require.NoError(t, err)
	return b
}

// TestRealPassthrough: TLS connections reach the pool their SNI names,
// by exact name or regexp, without HAProxy terminating them (the client
// verifies the server's own certificate); others are refused or go to
// the default pool, and RejectWhenDown refuses what would go to a pool
// without a usable server.
func TestRealPassthrough(t *testing.T) { haproxytest.Each(t, testRealPassthrough) }

func testRealPassthrough(t *testing.T, bin string) {
	dir := shortTempDir(t)
	certPath, keyPath, err := certs.SelfSigned(dir, []string{"a.test", "b.test", "api7.b.test", "c.test"}, nil)
	require.NoError(t, err)
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	require.NoError(t, err)
	roots.AddCert(leaf)
	a := newTLSServer(t, "A", kp)
	b := newTLSServer(t, "B", kp)

	fStrict, strict := listenerFile(t)
	fDefault, withDefault := listenerFile(t)
	routes := []SNIRoute{
		{Names: []string{"a.test"}, Pool: "pa"},
		{Regexp: `^(b|api[0-9]+\.b)\.test$`, Pool: "pb"},
	}
	in := serviceInstance(t, bin, dir, []Frontend{
		{Name: "strict", Mode: ModeTCP, Port: 443, Binds: []Bind{{FD: 3, Family: 4}},
			Passthrough: &Passthrough{InspectDelay: 2 * time.Second, Routes: routes}},
		{Name: "default", Mode: ModeTCP, Port: 8443, Binds: []Bind{{FD: 4, Family: 4}}, Pool: "pa", RejectWhenDown: true,
			Passthrough: &Passthrough{InspectDelay: 2 * time.Second, Routes: routes}},
	}, []Pool{
		{Name: "pa", Balance: BalanceLeastConn, Servers: []Server{{Name: "a", Addr: a.addrPort(), Weight: 100}}},
		{Name: "pb", Balance: BalanceLeastConn, Servers: []Server{{Name: "b", Addr: b.addrPort(), Weight: 100}}},
	})
	rt := runInstance(t, bin, dir, in, fStrict, fDefault)

	tlsTo := func(sni string) func(net.Conn) net.Conn {
		return func(c net.Conn) net.Conn {
			return tls.Client(c, &tls.Config{ServerName: sni, RootCAs: roots, MinVersion: tls.VersionTLS12})
		}
	}
	reach := func(addr, sni string) (string, error) {
		s, name, err := dialServer(addr, tlsTo(sni))
		if err != nil {
			return "", err
		}
		defer s.c.Close()
		// The certificate the client verified is the server's: HAProxy
		// did not terminate TLS.
		if !s.c.(*tls.Conn).ConnectionState().PeerCertificates[0].Equal(leaf) {
			return "", errors.New("another certificate")
		}
		s.echo(t, "over tls")
		return name, nil
	}
	for _, addr := range []string{strict, withDefault} {
		for sni, want := range map[string]string{"a.test": "A", "A.TEST": "A", "b.test": "B", "api7.b.test": "B"} {
			got, err := reach(addr, sni)
			require.NoError(t, err, "%s via %s", sni, addr)
			require.Equal(t, want, got, "%s via %s", sni, addr)
		}
	}
	// No route matches: refused without a default pool, else the
	// default pool.
	require.NoError(t, refused(strict, tlsTo("c.test")))
	got, err := reach(withDefault, "c.test")
	require.NoError(t, err)
	require.Equal(t, "A", got)
	// Not TLS: refused either way.
	for _, addr := range []string{strict, withDefault} {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		n, err := c.Read(make([]byte, 1))
		require.Zero(t, n)
		require.True(t, errors.Is(err, io.EOF) || isReset(err), "%v", err)
		c.Close()
	}

	// Pool pa without a usable server: the frontend that rejects then
	// closes a.test and c.test at once; b.test still goes through.
	ctx := context.Background()
	require.NoError(t, rt.SetServerState(ctx, "pa", "a", StateMaint))
	require.NoError(t, refused(withDefault, tlsTo("a.test")))
	require.NoError(t, refused(withDefault, tlsTo("c.test")))
	got, err = reach(withDefault, "b.test")
	require.NoError(t, err)
	require.Equal(t, "B", got)
	require.NoError(t, rt.SetServerState(ctx, "pa", "a", StateReady))
	got, err = reach(withDefault, "a.test")
	require.NoError(t, err)
	require.Equal(t, "A", got)
}

// TestRealPriorityTiers: a pool's lower tier serves only while the
// higher has no usable server (maintenance, weight 0), and takes over
// and gives back at once through the runtime API.
func TestRealPriorityTiers(t *testing.T) { haproxytest.Each(t, testRealPriorityTiers) }

func testRealPriorityTiers(t *testing.T, bin string) {
	dir := shortTempDir(t)
	a := newTCPServer(t, "A", "127.0.0.1:0", false)
	b := newTCPServer(t, "B", "127.0.0.1:0", false)
	c := newTCPServer(t, "C", "127.0.0.1:0", false)
	f, addr := listenerFile(t)
	fr, addrReject := listenerFile(t)
	in := serviceInstance(t, bin, dir, []Frontend{
		{Name: "tiers", Mode: ModeTCP, Port: 9000, Binds: []Bind{{FD: 3, Family: 4}}, Pool: "p"},
		{Name: "tiers-reject", Mode: ModeTCP, Port: 9001, Binds: []Bind{{FD: 4, Family: 4}}, Pool: "p", RejectWhenDown: true},
	}, []Pool{{Name: "p", Balance: BalanceWeighted, Servers: []Server{
		{Name: "a", Addr: a.addrPort(), Weight: 100, Priority: 1},
		{Name: "b", Addr: b.addrPort(), Weight: 100, Priority: 2},
		// Starts in maintenance, as the checks found it.
		{Name: "c", Addr: c.addrPort(), Weight: 100, Priority: 3, State: StateMaint},
	}}})
	rt := runInstance(t, bin, dir, in, f, fr)
	ctx := context.Background()

	require.Equal(t, "A", whoAnswers(t, addr))
	require.NoError(t, rt.SetServerState(ctx, "p", "a", StateMaint))
	require.Equal(t, "B", whoAnswers(t, addr), "tier 1 in maintenance: tier 2")
	require.NoError(t, rt.SetServerState(ctx, "p:p2", "b", StateMaint))
	// The last tier is the fallback, whatever its state: HAProxy finds
	// no server there and closes the connection.
	require.NoError(t, refused(addr, nil))
	require.NoError(t, rt.SetServerState(ctx, "p:p3", "c", StateReady))
	require.Equal(t, "C", whoAnswers(t, addr))
	require.NoError(t, rt.SetServerState(ctx, "p", "a", StateReady))
	require.Equal(t, "A", whoAnswers(t, addr), "back to tier 1 at once")
	require.NoError(t, rt.SetServerState(ctx, "p:p2", "b", StateReady))
	require.NoError(t, rt.SetWeight(ctx, "p", "a", 0))
	require.Equal(t, "B", whoAnswers(t, addr), "weight 0 is no usable server either")
	require.NoError(t, rt.SetWeight(ctx, "p", "a", 100))
	require.Equal(t, "A", whoAnswers(t, addrReject))

	// Every tier empty: both close, the rejecting frontend at accept,
	// counted as a denied connection.
	for _, ref := range [][2]string{{"p", "a"}, {"p:p2", "b"}, {"p:p3", "c"}} {
		require.NoError(t, rt.SetServerState(ctx, ref[0], ref[1], StateMaint))
	}
	require.NoError(t, refused(addr, nil))
	require.NoError(t, refused(addrReject, nil))
	rows, err := rt.Stat(ctx)
	require.NoError(t, err)
	denied := map[string]string{}
	for _, r := range rows {
		if r.Type == TypeFrontend {
			denied[r.Proxy] = r.Raw.Get("dcon")
		}
	}
	require.Equal(t, map[string]string{"tiers": "0", "tiers-reject": "1"}, denied)

	states, err := rt.Servers(ctx)
	require.NoError(t, err)
	byRef := map[string]ServerState{}
	for _, s := range states {
		byRef[s.Backend+"/"+s.Name] = s
	}
	require.Len(t, byRef, 3)
	require.Equal(t, "MAINT", byRef["p/a"].Status)
	require.False(t, byRef["p/a"].Up)
	require.EqualValues(t, 3, byRef["p/a"].TotalConns)
	require.Equal(t, "MAINT", byRef["p:p2/b"].Status)
	require.EqualValues(t, 2, byRef["p:p2/b"].TotalConns)
	require.EqualValues(t, 1, byRef["p:p3/c"].TotalConns)
	require.Greater(t, byRef["p/a"].BytesOut, int64(0), "the servers' names went to the clients")

	// A server rendered disabled (drain or maint at start) can be
	// drained from there.
	require.NoError(t, rt.SetServerState(ctx, "p:p3", "c", StateDrain))
	states, err = rt.Servers(ctx)
	require.NoError(t, err)
	for _, s := range states {
		if s.Name == "c" {
			require.Equal(t, "DRAIN", s.Status)
		}
	}
}

// TestRealDrainAndWeight: a drained server keeps its open connection
// working while new ones go to the other; weights set at run time take
// effect on the next connection.
func TestRealDrainAndWeight(t *testing.T) { haproxytest.Each(t, testRealDrainAndWeight) }

func testRealDrainAndWeight(t *testing.T, bin string) {
	dir := shortTempDir(t)
	a := newTCPServer(t, "A", "127.0.0.1:0", false)
	b := newTCPServer(t, "B", "127.0.0.1:0", false)
	f, addr := listenerFile(t)
	fs, addrSource := listenerFile(t)
	in := serviceInstance(t, bin, dir, []Frontend{
		{Name: "rr", Mode: ModeTCP, Port: 9000, Binds: []Bind{{FD: 3, Family: 4}}, Pool: "rr"},
		{Name: "src", Mode: ModeTCP, Port: 9001, Binds: []Bind{{FD: 4, Family: 4}}, Pool: "src"},
	}, []Pool{
		{Name: "rr", Balance: BalanceWeighted, Servers: []Server{
			{Name: "a", Addr: a.addrPort(), Weight: 100}, {Name: "b", Addr: b.addrPort(), Weight: 100}}},
		{Name: "src", Balance: BalanceSource, Servers: []Server{
			{Name: "a", Addr: a.addrPort(), Weight: 100}, {Name: "b", Addr: b.addrPort(), Weight: 100}}},
	})
	rt := runInstance(t, bin, dir, in, f, fs)
	ctx := context.Background()

	var held *session
	for range 4 {
		s, name, err := dialServer(addr, nil)
		require.NoError(t, err)
		if name == "A" && held == nil {
			held = s
			continue
		}
		s.c.Close()
	}
	require.NotNil(t, held, "round robin reached A")
	defer held.c.Close()

	require.NoError(t, rt.SetServerState(ctx, "rr", "a", StateDrain))
	for range 6 {
		require.Equal(t, "B", whoAnswers(t, addr), "a draining server takes no new connection")
	}
	held.echo(t, "still here")
	states, err := rt.Servers(ctx)
	require.NoError(t, err)
	for _, s := range states {
		if s.Backend == "rr" && s.Name == "a" {
			require.Equal(t, "DRAIN", s.Status)
			require.EqualValues(t, 1, s.CurConns)
			require.False(t, s.Up)
		}
	}
	require.NoError(t, rt.SetServerState(ctx, "rr", "a", StateReady))
	seen := map[string]int{}
	for range 4 {
		seen[whoAnswers(t, addr)]++
	}
	require.Equal(t, map[string]int{"A": 2, "B": 2}, seen)

	// Weight 3:1.
	require.NoError(t, rt.SetWeight(ctx, "rr", "a", 75))
	require.NoError(t, rt.SetWeight(ctx, "rr", "b", 25))
	seen = map[string]int{}
	for range 40 {
		seen[whoAnswers(t, addr)]++
	}
	require.Equal(t, map[string]int{"A": 30, "B": 10}, seen)
	held.echo(t, "and still")

	// balance source is static: only 0 and the rendered weight.
	err = rt.SetWeight(ctx, "src", "a", 50)
	require.ErrorContains(t, err, "static")
	require.NoError(t, rt.SetWeight(ctx, "src", "a", 0))
	for range 5 {
		require.Equal(t, "B", whoAnswers(t, addrSource))
	}

	// Refusals are errors naming the command.
	require.ErrorContains(t, rt.SetWeight(ctx, "rr", "nope", 1), `"set weight rr/nope 1": No such server.`)
	require.ErrorContains(t, rt.SetServerState(ctx, "nope", "a", StateReady), "No such backend.")
}

// TestRealRejectHTTP: an http service whose pool has no usable server
// answers 503, or with RejectWhenDown closes the connection unanswered,
// also for a request on a connection opened while the pool had one.
func TestRealRejectHTTP(t *testing.T) { haproxytest.Each(t, testRealRejectHTTP) }

func testRealRejectHTTP(t *testing.T, bin string) {
	dir := shortTempDir(t)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(be.Close)
	f503, addr503 := listenerFile(t)
	fRej, addrRej := listenerFile(t)
	in := serviceInstance(t, bin, dir, []Frontend{
		{Name: "h503", Mode: ModeHTTP, Port: 80, Binds: []Bind{{FD: 3, Family: 4}}, Pool: DefaultPool},
		{Name: "hreject", Mode: ModeHTTP, Port: 81, Binds: []Bind{{FD: 4, Family: 4}}, Pool: DefaultPool, RejectWhenDown: true},
	}, []Pool{{Name: DefaultPool, Balance: BalanceLeastConn, Servers: []Server{
		{Name: "s0", Addr: netip.MustParseAddrPort(be.Listener.Addr().String()), Weight: 100}}}})
	rt := runInstance(t, bin, dir, in, f503, fRej)
	ctx := context.Background()

	get := func(c net.Conn, r *bufio.Reader) (int, error) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	open := func(addr string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	kc, kr := open(addrRej)
	code, err := get(kc, kr)
	require.NoError(t, err)
	require.Equal(t, 200, code)

	require.NoError(t, rt.SetServerState(ctx, DefaultPool, "s0", StateMaint))
	c, r := open(addr503)
	code, err = get(c, r)
	require.NoError(t, err)
	require.Equal(t, 503, code, "HAProxy's own answer")
	// Closed unanswered: HAProxy resets it at accept, which the dial
	// itself may already see.
	if rc, err := net.Dial("tcp", addrRej); err == nil {
		t.Cleanup(func() { rc.Close() })
		_, err = get(rc, bufio.NewReader(rc))
		require.Error(t, err, "closed unanswered")
	} else {
		require.ErrorIs(t, err, syscall.ECONNRESET, "closed unanswered")
	}
	_, err = get(kc, kr)
	require.Error(t, err, "a request on the open connection too")

	require.NoError(t, rt.SetServerState(ctx, DefaultPool, "s0", StateReady))
	c, r = open(addrRej)
	code, err = get(c, r)
	require.NoError(t, err)
	require.Equal(t, 200, code)
}
