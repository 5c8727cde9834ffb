package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// tcpSvcHealth is a quick connect check, so that a test's backends are
// judged within a second.
func tcpSvcHealth() *config.ServiceHealth {
	return &config.ServiceHealth{Kind: config.CheckTCP, Interval: config.Duration{Duration: 200 * time.Millisecond}}
}

// tcpSvcSite starts a node whose configuration is the site's with edit
// applied (edit also starts the backends, so that they are up from the
// first check), and waits until the tcp services' backends are up.
func tcpSvcSite(t *testing.T, edit func(s *nodetest.Site, c *config.Config)) *nodetest.Site {
	t.Helper()
	s := nodetest.New(t, oberBin, 2)
	c := s.Config(nodetest.Params{})
	edit(s, c)
	s.WriteConfig(c)
	s.Start()
	tcpSvcBackendsUp(t, s)
	return s
}

// tcpSvcBackendsUp waits until every backend of every tcp service is up
// and ready in HAProxy.
func tcpSvcBackendsUp(t *testing.T, s *nodetest.Site) {
	t.Helper()
	tcpSvcEventually(t, 10*time.Second, "every tcp service's backends are up", func() (bool, string) {
		for _, svc := range s.Status().Daemon.Services {
			if svc.Mode != config.ModeTCP {
				continue
			}
			for _, b := range svc.Backends {
				if !b.Up || b.State != "ready" {
					return false, fmt.Sprintf("%s/%s: up %v, state %s", svc.Name, b.Name, b.Up, b.State)
				}
			}
		}
		return true, ""
	})
}

// tcpSvcListen listens on addr inside ns and hands every connection to
// serve (which need not close it) until the test ends.
func tcpSvcListen(t *testing.T, ns *netnstest.NS, addr string, serve func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	require.NoError(t, ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}), "listen on %s in %s", addr, ns.Name)
	var wg sync.WaitGroup
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-stopped
		wg.Wait()
	})
}

// tcpSvcAnswer serves a line-based backend: it reads the client's line
// (ober's connect checks send none and are not counted) and answers
// reply. got counts the lines, when not nil.
func tcpSvcAnswer(reply string, got *tcpSvcCount) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return
		}
		if got != nil {
			got.add()
		}
		io.WriteString(c, reply)
	}
}

// tcpSvcCount is a counter shared with a backend's goroutines.
type tcpSvcCount struct {
	mu sync.Mutex
	n  int
}

func (c *tcpSvcCount) add() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *tcpSvcCount) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// tcpSvcDial connects to addr from the client namespace, from the
// address from (the client's own when not valid).
func tcpSvcDial(ctx context.Context, s *nodetest.Site, from netip.Addr, addr string) (net.Conn, error) {
	var local *net.TCPAddr
	if from.IsValid() {
		local = &net.TCPAddr{IP: from.AsSlice()}
	}
	return s.ClientDialer().DialFrom(ctx, "tcp4", addr, local)
}

// tcpSvcTimedOut reports whether a dial failed for want of an answer.
func tcpSvcTimedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// tcpSvcAsk sends req to addr from the client namespace and returns all
// the answer, within 5 seconds.
func tcpSvcAsk(s *nodetest.Site, from netip.Addr, addr, req string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := tcpSvcDial(ctx, s, from, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// tcpSvcService finds a service in the daemon's status.
func tcpSvcService(t *testing.T, st *api.Status, name string) api.DaemonServiceStatus {
	t.Helper()
	require.NotNil(t, st.Daemon)
	i := slices.IndexFunc(st.Daemon.Services, func(v api.DaemonServiceStatus) bool { return v.Name == name })
	require.GreaterOrEqual(t, i, 0, "service %q in daemon.services", name)
	return st.Daemon.Services[i]
}

// tcpSvcPackets is the dataplane's packet count for reason and action.
func tcpSvcPackets(st *api.Status, reason, action string) uint64 {
	if st.DataplaneStatus == nil {
		return 0
	}
	for _, r := range st.Counters.Reasons {
		if r.Reason == reason {
			return r.Packets[action]
		}
	}
	return 0
}

// tcpSvcEventually polls cond every 50ms for up to timeout and fails the
// test with what the last try said.
func tcpSvcEventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %s)", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tcpSvcReload writes c, sends SIGHUP and waits until the daemon took a
// new generation (ok) or refused it; it returns the status then.
func tcpSvcReload(t *testing.T, s *nodetest.Site, c *config.Config, wantOK bool) *api.Status {
	t.Helper()
	before := s.Status().Daemon.Config
	s.WriteConfig(c)
	s.Signal(syscall.SIGHUP)
	var st *api.Status
	tcpSvcEventually(t, 30*time.Second, "reload", func() (bool, string) {
		st = s.Status()
		cs := st.Daemon.Config
		switch {
		case cs.Generation > before.Generation:
			return true, ""
		case cs.ReloadFailures > before.ReloadFailures:
			return true, ""
		}
		return false, fmt.Sprintf("%+v", cs)
	})
	cs := st.Daemon.Config
	if wantOK {
		require.Equal(t, api.ReloadOK, cs.LastReload, "reload refused: %s", cs.LastReloadError)
		require.Equal(t, before.Generation+1, cs.Generation)
	} else {
		require.Equal(t, api.ReloadRefused, cs.LastReload)
		require.Equal(t, before.Generation, cs.Generation, "a refused reload keeps the running generation")
	}
	return st
}

// tcpSvcProxyHeader is what a PROXY protocol header said.
type tcpSvcProxyHeader struct {
	version  int
	src, dst netip.AddrPort
}

// tcpSvcProxySig opens every PROXY v2 header.
const tcpSvcProxySig = "\r\n\r\n\x00\r\nQUIT\n"

// tcpSvcReadProxy reads a PROXY header (v1 or v2, TCP over IPv4) from r.
func tcpSvcReadProxy(r *bufio.Reader) (tcpSvcProxyHeader, error) {
	var h tcpSvcProxyHeader
	head, err := r.Peek(12)
	if err != nil {
		return h, err
	}
	if string(head) == tcpSvcProxySig {
		var fixed [16]byte
		if _, err := io.ReadFull(r, fixed[:]); err != nil {
			return h, err
		}
		if fixed[12] != 0x21 || fixed[13] != 0x11 {
			return h, fmt.Errorf("v2 header: version/command %#x, family %#x; want 0x21 (v2 PROXY), 0x11 (TCP over IPv4)", fixed[12], fixed[13])
		}
		body := make([]byte, binary.BigEndian.Uint16(fixed[14:]))
		if _, err := io.ReadFull(r, body); err != nil {
			return h, err
		}
		if len(body) < 12 {
			return h, fmt.Errorf("v2 header: %d bytes of addresses", len(body))
		}
		h.version = 2
		h.src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:]))
		h.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:]))
		return h, nil
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return h, err
	}
	f := strings.Fields(strings.TrimSuffix(line, "\r\n"))
	if len(f) != 6 || f[0] != "PROXY" || f[1] != "TCP4" || !strings.HasSuffix(line, "\r\n") {
		return h, fmt.Errorf("not a PROXY v1 TCP4 line: %q", line)
	}
	src, err1 := netip.ParseAddrPort(f[2] + ":" + f[4])
	dst, err2 := netip.ParseAddrPort(f[3] + ":" + f[5])
	if err := errors.Join(err1, err2); err != nil {
		return h, fmt.Errorf("PROXY v1 line %q: %w", line, err)
	}
	return tcpSvcProxyHeader{version: 1, src: src, dst: dst}, nil
}

// tcpSvcProxyReceiver is a backend that parses the PROXY header itself
// and answers an HTTP request with "go <version> <src> <dst>". A
// connection without a header (ober's connect check) gets nothing.
func tcpSvcProxyReceiver(c net.Conn) {
	r := bufio.NewReader(c)
	h, err := tcpSvcReadProxy(r)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			fmt.Fprintf(c, "HTTP/1.0 400 Bad Request\r\n\r\n%v", err)
		}
		return
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if l == "\r\n" {
			break
		}
	}
	fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\ngo v%d %s %s", h.version, h.src, h.dst)
}

// tcpSvcHAProxyReceiver runs a real HAProxy in ns that takes the PROXY
// header (accept-proxy: v1 or v2) on addr and answers each HTTP request
// with "haproxy - <src> <dst>", the addresses it took from the header.
func tcpSvcHAProxyReceiver(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) {
	t.Helper()
	netnstest.RequireTool(t, "haproxy", "haproxy")
	cfg := fmt.Sprintf(`global
    maxconn 100
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend pp
    bind %s accept-proxy
    http-request return status 200 content-type text/plain lf-string "haproxy - %%[src]:%%[src_port] %%[dst]:%%[dst_port]"
`, addr)
	path := filepath.Join(t.TempDir(), "receiver.cfg")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Exec(ctx, "haproxy", "-db", "-f", path)
	log := &nodetest.LogBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("the receiving HAProxy's log:\n%s", log.String())
		}
	})
	tcpSvcEventually(t, 10*time.Second, "the receiving HAProxy listens", func() (bool, string) {
		select {
		case <-done:
			t.Fatalf("the receiving HAProxy exited: %s", log.String())
		default:
		}
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", addr.String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		return err == nil, fmt.Sprint(err)
	})
}

// TestServicesTCPProxyProtocol: a tcp service sends the client's own
// address and port, and the VIP:port it connected to, to its backends in
// a PROXY header, v2 or v1 as configured. One backend is a real HAProxy
// (accept-proxy) and the other parses the header itself, which also
// tells the version.
func TestServicesTCPProxyProtocol(t *testing.T) {
	var hap, gop netip.AddrPort
	s := tcpSvcSite(t, func(s *nodetest.Site, c *config.Config) {
		hap = netip.AddrPortFrom(s.BackendIP(0), 8000)
		gop = netip.AddrPortFrom(s.BackendIP(1), 8000)
		tcpSvcHAProxyReceiver(t, s.Backend(), hap)
		tcpSvcListen(t, s.Backend(), gop.String(), tcpSvcProxyReceiver)
		backends := []config.BackendServer{{Name: "haproxy", Address: hap.String()}, {Name: "go", Address: gop.String()}}
		for _, v := range []struct {
			name string
			port uint16
			pp   string
		}{{"pp2", 7000, "v2"}, {"pp1", 7001, "v1"}} {
			c.Services = append(c.Services, config.Service{
				Name: v.name, Port: v.port, Mode: config.ModeTCP, Balance: config.BalanceRoundRobin,
				ProxyProtocol: v.pp, Backends: backends, Health: tcpSvcHealth(),
			})
		}
	})
	other := s.ClientIP(0)

	for _, svc := range []struct {
		port    uint16
		version string
	}{{7000, "v2"}, {7001, "v1"}} {
		vip := netip.AddrPortFrom(nodetest.VIP, svc.port)
		for _, from := range []netip.Addr{nodetest.ClientAddr, other} {
			seen := map[string]bool{}
			for i := 0; i < 40 && len(seen) < 2; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err := tcpSvcDial(ctx, s, from, vip.String())
				cancel()
				require.NoError(t, err, "connect to %s from %s", vip, from)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				local := c.LocalAddr().(*net.TCPAddr).AddrPort()
				_, err = io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
				require.NoError(t, err)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				require.NoError(t, err, "answer to %s from %s", vip, from)
				body, err := io.ReadAll(resp.Body)
				c.Close()
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
				f := strings.Fields(string(body))
				require.Len(t, f, 4, "%q", body)
				who, version, src, dst := f[0], f[1], f[2], f[3]
				seen[who] = true
				require.Equal(t, netip.AddrPortFrom(from, local.Port()).String(), src,
					"%s saw the client as %s, not the client's own address and port (%s)", who, src, local)
				require.Equal(t, vip.String(), dst, "%s saw the connection's destination as %s", who, dst)
				if who == "go" {
					require.Equal(t, svc.version, version, "the PROXY header's version on %s", vip)
				}
			}
			require.Len(t, seen, 2, "both backends of %s answered (roundrobin)", vip)
		}
	}
	st := s.Status()
	for _, name := range []string{"pp2", "pp1"} {
		svc := tcpSvcService(t, st, name)
		require.Equal(t, config.ModeTCP, svc.Mode)
		require.Len(t, svc.Backends, 2)
		for _, b := range svc.Backends {
			require.True(t, b.Up, "%s/%s is up", name, b.Name)
		}
	}
}

// tcpSvcCert is a self-signed certificate for cn.
func tcpSvcCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{cn},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tcpSvcTLSServer serves TLS with a certificate for cn and answers
// "<cn> <the SNI it got>". hellos counts the ClientHellos that reached
// it (a connect check sends none).
func tcpSvcTLSServer(t *testing.T, ns *netnstest.NS, addr, cn string, hellos *tcpSvcCount) {
	t.Helper()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{tcpSvcCert(t, cn)},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			hellos.add()
			return nil, nil
		},
	}
	tcpSvcListen(t, ns, addr, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		fmt.Fprintf(tc, "%s %s", cn, tc.ConnectionState().ServerName)
		tc.Close()
	})
}

// TestServicesTCPTLSPassthrough: a tcp service routes TLS connections by
// the name in their ClientHello, without terminating them: a.example
// (any case) to pool a, names matching ^b[0-9]+\.example$ to pool b;
// another name, or none, is closed before any backend sees a byte.
func TestServicesTCPTLSPassthrough(t *testing.T) {
	var a, b netip.AddrPort
	var hellosA, hellosB tcpSvcCount
	s := tcpSvcSite(t, func(s *nodetest.Site, c *config.Config) {
		a = netip.AddrPortFrom(s.BackendIP(0), 8443)
		b = netip.AddrPortFrom(s.BackendIP(1), 8443)
		tcpSvcTLSServer(t, s.Backend(), a.String(), "server-a", &hellosA)
		tcpSvcTLSServer(t, s.Backend(), b.String(), "server-b", &hellosB)
		c.Services = append(c.Services, config.Service{
			Name: "sni", Port: 7443, Mode: config.ModeTCP, Health: tcpSvcHealth(),
			Pools: []config.Pool{
				{Name: "a", Backends: []config.BackendServer{{Name: "a1", Address: a.String()}}},
				{Name: "b", Backends: []config.BackendServer{{Name: "b1", Address: b.String()}}},
			},
			TLSPassthrough: &config.TLSPassthrough{
				Routes: []config.SNIRoute{
					{Names: []string{"a.example"}, Pool: "a"},
					{Regexp: `^b[0-9]+\.example$`, Pool: "b"},
				},
				Default:     config.PassthroughReject,
				ReadTimeout: config.Duration{Duration: 3 * time.Second},
			},
		})
	})
	vip := netip.AddrPortFrom(nodetest.VIP, 7443).String()

	// handshake connects with sni (none when empty) and returns the
	// certificate's CN and the answer.
	handshake := func(sni string) (cn, answer string, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := tcpSvcDial(ctx, s, netip.Addr{}, vip)
		if err != nil {
			return "", "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err := tc.HandshakeContext(ctx); err != nil {
			return "", "", err
		}
		body, err := io.ReadAll(tc)
		return tc.ConnectionState().PeerCertificates[0].Subject.CommonName, string(body), err
	}

	for _, c := range []struct{ sni, cn string }{
		{"a.example", "server-a"},
		{"A.Example", "server-a"},
		{"b7.example", "server-b"},
		{"b1234.example", "server-b"},
	} {
		beforeA, beforeB := hellosA.get(), hellosB.get()
		cn, answer, err := handshake(c.sni)
		require.NoError(t, err, "TLS with SNI %q", c.sni)
		require.Equal(t, c.cn, cn, "SNI %q reached the wrong backend", c.sni)
		// The backend got the ClientHello as the client sent it.
		require.Equal(t, c.cn+" "+c.sni, answer)
		if c.cn == "server-a" {
			require.Equal(t, beforeA+1, hellosA.get())
			require.Equal(t, beforeB, hellosB.get())
		} else {
			require.Equal(t, beforeB+1, hellosB.get())
			require.Equal(t, beforeA, hellosA.get())
		}
	}

	for _, sni := range []string{"c.example", "", "b7.example.evil", "xb7.example"} {
		beforeA, beforeB := hellosA.get(), hellosB.get()
		start := time.Now()
		_, _, err := handshake(sni)
		took := time.Since(start)
		require.Error(t, err, "TLS with SNI %q is refused (default reject)", sni)
		t.Logf("SNI %q: refused after %v: %v", sni, took.Round(time.Millisecond), err)
		require.Less(t, took, 2*time.Second, "SNI %q: closed as soon as the ClientHello is read, not at read_timeout", sni)
		require.Equal(t, beforeA, hellosA.get(), "SNI %q reached pool a", sni)
		require.Equal(t, beforeB, hellosB.get(), "SNI %q reached pool b", sni)
	}
	// Not TLS at all: closed too.
	beforeA, beforeB := hellosA.get(), hellosB.get()
	answer, _ := tcpSvcAsk(s, netip.Addr{}, vip, "GET / HTTP/1.0\r\n\r\n")
	require.Empty(t, answer)
	require.Equal(t, beforeA, hellosA.get())
	require.Equal(t, beforeB, hellosB.get())

	svc := tcpSvcService(t, s.Status(), "sni")
	pools := map[string]string{}
	for _, be := range svc.Backends {
		pools[be.Name] = be.Pool
	}
	require.Equal(t, map[string]string{"a1": "a", "b1": "b"}, pools)
}

// TestServicesTCPPortRange: a tcp service on ports 7100-7104 with a
// backend given without a port sends each connection to the backend's
// port the client connected to; 7105 is no service and gets nothing.
func TestServicesTCPPortRange(t *testing.T) {
	var be netip.Addr
	var past tcpSvcCount
	s := tcpSvcSite(t, func(s *nodetest.Site, c *config.Config) {
		be = s.BackendIP(0)
		for p := 7100; p <= 7104; p++ {
			tcpSvcListen(t, s.Backend(), netip.AddrPortFrom(be, uint16(p)).String(), tcpSvcAnswer(fmt.Sprintf("port %d\n", p), nil))
		}
		// Were 7105 forwarded, this would answer.
		tcpSvcListen(t, s.Backend(), netip.AddrPortFrom(be, 7105).String(), tcpSvcAnswer("port 7105\n", &past))
		h := tcpSvcHealth()
		h.Port = 7100
		c.Services = append(c.Services, config.Service{
			Name: "range", Ports: config.PortRange{From: 7100, To: 7104}, Mode: config.ModeTCP,
			Backends: []config.BackendServer{{Name: "r", Address: be.String()}}, Health: h,
		})
	})

	for _, p := range []int{7103, 7100, 7101, 7102, 7104} {
		addr := netip.AddrPortFrom(nodetest.VIP, uint16(p)).String()
		got, err := tcpSvcAsk(s, netip.Addr{}, addr, "hello\n")
		require.NoError(t, err, addr)
		require.Equal(t, fmt.Sprintf("port %d\n", p), got, "a connection to %s reached the backend's port %d", addr, p)
	}

	st := s.Status()
	var ports []uint16
	listeners := map[uint32]bool{}
	for _, row := range st.Services {
		if row.VIP == nodetest.VIP && row.Port >= 7100 && row.Port <= 7105 {
			ports = append(ports, row.Port)
			listeners[row.Listener] = true
		}
	}
	slices.Sort(ports)
	require.Equal(t, []uint16{7100, 7101, 7102, 7103, 7104}, ports, "one services-table row per port of the range")
	require.Len(t, listeners, 1, "every port of the range is one listener")
	svc := tcpSvcService(t, st, "range")
	require.EqualValues(t, 7100, svc.Port)
	require.EqualValues(t, 7104, svc.LastPort)

	drops := tcpSvcPackets(st, "no_service", "drop")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c, err := tcpSvcDial(ctx, s, netip.Addr{}, netip.AddrPortFrom(nodetest.VIP, 7105).String())
	cancel()
	if err == nil {
		c.Close()
	}
	require.True(t, tcpSvcTimedOut(err), "VIP:7105 is not a service: its SYN is dropped, so the connection times out; got %v", err)
	require.Greater(t, tcpSvcPackets(s.Status(), "no_service", "drop"), drops, "the dataplane counts the SYN to 7105 as no_service")
	require.Zero(t, past.get(), "nothing reached the backend's port 7105")
}

// TestServicesTCPAccess: a tcp service's access list is enforced in XDP,
// first match wins: a client allowed by an earlier, narrower rule gets
// through although a later rule denies its /24; a denied client's SYN is
// dropped before HAProxy (it times out) or, with reject, answered with a
// RST (connection refused at once).
func TestServicesTCPAccess(t *testing.T) {
	var allowed netip.Addr
	var be netip.AddrPort
	var cfg *config.Config
	var lines tcpSvcCount
	s := tcpSvcSite(t, func(s *nodetest.Site, c *config.Config) {
		allowed = s.ClientIP(0)
		be = netip.AddrPortFrom(s.BackendIP(0), 8200)
		tcpSvcListen(t, s.Backend(), be.String(), tcpSvcAnswer("welcome\n", &lines))
		c.Services = append(c.Services, config.Service{
			Name: "acl", Port: 7200, Mode: config.ModeTCP,
			Backends: []config.BackendServer{{Name: "a", Address: be.String()}}, Health: tcpSvcHealth(),
			Access: &config.Access{Default: config.AccessAllow, Rules: []string{
				"allow " + allowed.String() + "/32", "deny 10.98.1.0/24",
			}},
		})
		cfg = c
	})
	vip := netip.AddrPortFrom(nodetest.VIP, 7200).String()
	denied := nodetest.ClientAddr

	// connections waits until the service's connection count is n.
	connections := func(n int64) {
		t.Helper()
		tcpSvcEventually(t, 10*time.Second, fmt.Sprintf("service acl counts %d connections", n), func() (bool, string) {
			got := tcpSvcService(t, s.Status(), "acl").TotalConnections
			return got == n, strconv.FormatInt(got, 10)
		})
	}
	ask := func() {
		t.Helper()
		got, err := tcpSvcAsk(s, allowed, vip, "hi\n")
		require.NoError(t, err, "the allowed client %s", allowed)
		require.Equal(t, "welcome\n", got)
	}
	ask()
	connections(1)
	require.Equal(t, 1, lines.get())

	st := s.Status()
	drops := tcpSvcPackets(st, "access_denied", "drop")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	c, err := tcpSvcDial(ctx, s, denied, vip)
	cancel()
	if err == nil {
		c.Close()
	}
	require.True(t, tcpSvcTimedOut(err), "the denied client %s gets no answer (dropped), so it times out; got %v", denied, err)
	require.Greater(t, tcpSvcPackets(s.Status(), "access_denied", "drop"), drops, "the dataplane counts the denied SYN as access_denied")
	// One more allowed connection: had the denied one reached HAProxy,
	// the count would now be 3.
	ask()
	connections(2)
	require.Equal(t, 2, lines.get(), "only the allowed client's connections reached the backend")
	// The other services are not behind this list.
	got, err := tcpSvcAsk(s, denied, netip.AddrPortFrom(nodetest.VIP, 80).String(), "GET / HTTP/1.0\r\n\r\n")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(got, "HTTP/1."), "%q", got)

	// Default deny, and reject: the refused client learns at once.
	svc := &cfg.Services[len(cfg.Services)-1]
	svc.Reject = true
	svc.Access = &config.Access{Default: config.AccessDeny, Rules: []string{"allow " + allowed.String()}}
	st = tcpSvcReload(t, s, cfg, true)
	rsts := tcpSvcPackets(st, "access_denied", "tx")
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	start := time.Now()
	c, err = tcpSvcDial(ctx, s, denied, vip)
	took := time.Since(start)
	cancel()
	if err == nil {
		c.Close()
	}
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "with reject the denied client %s is refused", denied)
	require.Less(t, took, time.Second, "the RST comes at once")
	require.Greater(t, tcpSvcPackets(s.Status(), "access_denied", "tx"), rsts, "the RST is counted as access_denied, tx")
	// A RST from HAProxy's socket is impossible: it listens, so the
	// refusal came from XDP. The allowed client still gets through.
	ask()
	require.Equal(t, 3, lines.get(), "only the allowed client's connections reached the backend")
}

// tcpSvcIPAMFile reads the node's allocations file.
func tcpSvcIPAMFile(t *testing.T, s *nodetest.Site) map[string]netip.Addr {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, "state", "ipam.json"))
	require.NoError(t, err)
	var f struct {
		Allocations map[string]netip.Addr `json:"allocations"`
	}
	require.NoError(t, json.Unmarshal(b, &f), "%s", b)
	return f.Allocations
}

// tcpSvcPool is the status of vip_pools entry name.
func tcpSvcPool(t *testing.T, st *api.Status, name string) api.VIPPoolStatus {
	t.Helper()
	i := slices.IndexFunc(st.Daemon.VIPPools, func(p api.VIPPoolStatus) bool { return p.Name == name })
	require.GreaterOrEqual(t, i, 0, "vip_pools %q in status: %+v", name, st.Daemon.VIPPools)
	return st.Daemon.VIPPools[i]
}

// TestServicesTCPIPAM: services without VIPs take the first free
// addresses of their pool, keep them across a restart (whatever their
// order in the file), a deleted service's address goes to the next
// service, and a service the full pool cannot serve makes the reload
// refused, the running services untouched.
func TestServicesTCPIPAM(t *testing.T) {
	var cfg *config.Config
	var be netip.Addr
	// pooled is a service on port 7300 of an address of pool p, whose
	// backend answers its name.
	pooled := func(name string) config.Service {
		return config.Service{
			Name: name, Port: 7300, Mode: config.ModeTCP, VIPPool: "p", Health: tcpSvcHealth(),
			Backends: []config.BackendServer{{Name: "b", Address: netip.AddrPortFrom(be, 8300+uint16(name[2]-'a')).String()}},
		}
	}
	s := tcpSvcSite(t, func(s *nodetest.Site, c *config.Config) {
		be = s.BackendIP(0)
		for _, name := range []string{"ipa", "ipb", "ipc", "ipd", "ipe"} {
			tcpSvcListen(t, s.Backend(), netip.AddrPortFrom(be, 8300+uint16(name[2]-'a')).String(), tcpSvcAnswer(name+"\n", nil))
		}
		c.VIPPools = []config.VIPPool{{Name: "p", Addresses: []string{"10.98.0.200-10.98.0.202"}}}
		c.Services = append(c.Services, pooled("ipa"), pooled("ipb"))
		cfg = c
	})
	s.Client.IP(t, "route", "add", "10.98.0.200/30", "via", "10.98.1.254")
	addr := func(last byte) netip.Addr { return netip.AddrFrom4([4]byte{10, 98, 0, last}) }

	// serves checks that each service answers on its address, and that
	// status and the allocations file say so.
	serves := func(want map[string]netip.Addr) {
		t.Helper()
		for name, a := range want {
			got, err := tcpSvcAsk(s, netip.Addr{}, netip.AddrPortFrom(a, 7300).String(), "hi\n")
			if err != nil {
				t.Logf("daemon.vips: %+v", s.Status().Daemon.VIPs)
			}
			require.NoError(t, err, "%s at %s", name, a)
			require.Equal(t, name+"\n", got, "%s answers on its address", a)
		}
		st := s.Status()
		for name, a := range want {
			require.Equal(t, []netip.Addr{a}, tcpSvcService(t, st, name).VIPs, "service %s's VIPs", name)
		}
		pool := tcpSvcPool(t, st, "p")
		require.Equal(t, want, pool.Allocations)
		require.EqualValues(t, 3, pool.Size)
		require.EqualValues(t, len(want), pool.Used)
		require.EqualValues(t, 3-len(want), pool.Free)
		require.Equal(t, want, tcpSvcIPAMFile(t, s), "<state_dir>/ipam.json")
	}
	serves(map[string]netip.Addr{"ipa": addr(200), "ipb": addr(201)})
	// A reload that changes no service keeps them where they are.
	cfg.Timeouts.Connect = config.Duration{Duration: 4 * time.Second}
	tcpSvcReload(t, s, cfg, true)
	serves(map[string]netip.Addr{"ipa": addr(200), "ipb": addr(201)})

	// A restart, the services listed the other way round: without the
	// kept allocations, ipb would take .200.
	s.Signal(syscall.SIGTERM)
	code, err := s.Wait(time.Minute)
	require.NoError(t, err)
	require.Zero(t, code, "ober's exit status on SIGTERM")
	n := len(cfg.Services)
	cfg.Services[n-2], cfg.Services[n-1] = cfg.Services[n-1], cfg.Services[n-2]
	s.WriteConfig(cfg)
	s.Start()
	serves(map[string]netip.Addr{"ipa": addr(200), "ipb": addr(201)})

	// ipa goes, ipc comes: it gets the address ipa freed.
	cfg.Services = slices.DeleteFunc(cfg.Services, func(v config.Service) bool { return v.Name == "ipa" })
	cfg.Services = append(cfg.Services, pooled("ipc"))
	tcpSvcReload(t, s, cfg, true)
	serves(map[string]netip.Addr{"ipc": addr(200), "ipb": addr(201)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err = tcpSvcDial(ctx, s, netip.Addr{}, netip.AddrPortFrom(addr(202), 7300).String())
	cancel()
	require.Error(t, err, "no service on the pool's free address")

	cfg.Services = append(cfg.Services, pooled("ipd"))
	tcpSvcReload(t, s, cfg, true)
	full := map[string]netip.Addr{"ipc": addr(200), "ipb": addr(201), "ipd": addr(202)}
	serves(full)

	// The pool is full: ipe cannot have an address, and nothing changes.
	cfg.Services = append(cfg.Services, pooled("ipe"))
	st := tcpSvcReload(t, s, cfg, false)
	require.Equal(t, fmt.Sprintf(`config %s: vip_pools[p]: no free address for services[%d] ("ipe"): all 3 addresses are in use`,
		s.ConfigPath, len(cfg.Services)-1), st.Daemon.Config.LastReloadError)
	require.False(t, slices.ContainsFunc(st.Daemon.Services, func(v api.DaemonServiceStatus) bool { return v.Name == "ipe" }))
	serves(full)
}

// tcpSvcCheckBase is a valid configuration with a tcp service, t1 on
// port 7000, and a vip_pools entry; each bad case adds services[2].
const tcpSvcCheckBase = `node:
  name: node1
  interfaces: [veth-n]
vips: [10.98.0.100]
vip_pools:
  - name: p
    addresses: [10.98.0.200-10.98.0.202]
services:
  - name: https
    port: 443
    mode: tls
    tls:
      self_signed: true
  - name: t1
    port: 7000
    mode: tcp
    backends:
      - address: 10.98.2.10:8000
backends:
  servers:
    - name: s3a
      address: 10.98.2.1:9000
instances:
  count: 2
  cpus: [0, 1]
`

// tcpSvcBadServices are services[2] of tcpSvcCheckBase that ober
// refuses, each with the one line that says why.
var tcpSvcBadServices = []struct{ name, service, want string }{
	{"duplicate-port", `
  - name: t2
    port: 7000
    mode: tcp
    backends: [{address: "10.98.2.11:8000"}]`,
		`services[2].port: 7000: already used by services[1] ("t1") on VIP 10.98.0.100`},
	{"range-overlap", `
  - name: t2
    ports: 6990-7010
    mode: tcp
    backends: [{address: "10.98.2.11:8000"}]`,
		`services[2].ports: 6990-7010: overlaps port 7000 of services[1] ("t1") on VIP 10.98.0.100`},
	{"unknown-balance", `
  - name: t2
    port: 7001
    mode: tcp
    balance: leastcon
    backends: [{address: "10.98.2.11:8000"}]`,
		`services[2].balance: "leastcon": unknown balance method; did you mean "leastconn"?`},
	{"weight", `
  - name: t2
    port: 7001
    mode: tcp
    backends: [{address: "10.98.2.11:8000", weight: 300}]`,
		`services[2].backends[0].weight: 300: must be 0-256`},
	{"vip-outside-pool", `
  - name: t2
    port: 7001
    mode: tcp
    vips: [10.98.0.150]
    vip_pool: p
    backends: [{address: "10.98.2.11:8000"}]`,
		`services[2].vips[0]: 10.98.0.150: not in vip_pool "p" (10.98.0.200-10.98.0.202)`},
	{"exec-missing", `
  - name: t2
    port: 7001
    mode: tcp
    health: {kind: exec, command: [/nonexistent/ober-check, --quick]}
    backends: [{address: "10.98.2.11:8000"}]`,
		`services[2].health.command[0]: "/nonexistent/ober-check": no such file`},
	{"udp with a tcp check", `
  - name: t2
    port: 7001
    mode: udp
    health: {kind: tcp}
    backends: [{address: "10.98.2.11:8000"}]`,
		`services[2].health.kind: "tcp": a UDP backend answers no TCP check: use probe with protocol: udp, exec or none`},
	{"udp with tls", `
  - name: t2
    port: 53
    mode: udp
    tls: {self_signed: true}
    backends: [{address: "10.98.2.11:53"}]`,
		`services[2].tls: not allowed for mode udp (the kernel forwards its packets as they are)`},
	{"udp with proxy_protocol", `
  - name: t2
    port: 53
    mode: udp
    proxy_protocol: v2
    backends: [{address: "10.98.2.11:53"}]`,
		`services[2].proxy_protocol: "v2": not for mode udp, which the kernel forwards without a proxy; use forward: dnat to show the client's address to the backends`},
	{"discovery srv name", `
  - name: t2
    port: 7001
    mode: tcp
    discovery: {kind: srv, name: rgw.example}`,
		`services[2].discovery.name: "rgw.example": must be an SRV name _service._proto.domain, _proto _tcp or _udp (such as _s3._tcp.rgw.example)`},
	{"discovery beside a list", `
  - name: t2
    port: 7001
    mode: tcp
    discovery: {kind: file, path: /etc/ober/t2.txt}
    backends: [{address: "10.98.2.11:8000"}]`,
		`services[2].backends: the pool's backends come from discovery kind file: remove the list (an operator's state or weight for a found backend goes in services[2].discovery.overrides)`},
	{"discovery override weight", `
  - name: t2
    port: 7001
    mode: tcp
    discovery: {kind: file, path: /etc/ober/t2.txt, overrides: [{address: "10.98.2.11:8000", weight: 70000}]}`,
		`services[2].discovery.overrides[0].weight: 70000: must be 0-256`},
	{"udp port range too large", `
  - name: t2
    ports: 20000-24096
    mode: udp
    backends: [{address: "10.98.2.11"}]`,
		`services[2].ports: 20000-24096: 4097 ports; at most 1024, since each port of each VIP is a row of the dataplane's services table`},
}

// tcpSvcWithService is tcpSvcCheckBase with service added to its
// services.
func tcpSvcWithService(service string) string {
	return strings.Replace(tcpSvcCheckBase, "\nbackends:\n", service+"\nbackends:\n", 1)
}

// TestServicesTCPBadInput: `ober run --check` refuses each mistake in a
// service with one line naming the field, the value and why, and exit
// status 1; a running node sent the same file keeps serving its
// generation and says why it refused.
func TestServicesTCPBadInput(t *testing.T) {
	// An empty namespace: nothing a check resolves can leave it.
	ns := netnstest.New(t, "tchk")
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	res := ober(t, ns, 0, "run", "--check", "--config", write("ok.yaml", tcpSvcCheckBase))
	require.Contains(t, res.stdout, "is valid: 1 VIPs, 2 services")
	res = ober(t, ns, 0, "run", "--check", "--config", write("ok2.yaml", tcpSvcWithService(`
  - name: t2
    port: 7001
    mode: tcp
    balance: wlc
    backends: [{address: "10.98.2.11:8000", weight: 256}]`)))
	require.Contains(t, res.stdout, "is valid: 1 VIPs, 3 services", "the cases below differ from a valid file in one mistake")

	for _, c := range tcpSvcBadServices {
		t.Run(c.name, func(t *testing.T) {
			path := write(c.name+".yaml", tcpSvcWithService(c.service))
			res := ober(t, ns, 1, "run", "--check", "--config", path)
			require.Equal(t, "ober: config "+path+": "+c.want+"\n", res.stderr)
			require.Empty(t, res.stdout)
		})
	}

	// A running node: the same mistakes in a reload are refused, and the
	// generation it runs keeps serving.
	var cfg *config.Config
	var be netip.AddrPort
	s := tcpSvcSite(t, func(s *nodetest.Site, c *config.Config) {
		be = netip.AddrPortFrom(s.BackendIP(0), 8000)
		tcpSvcListen(t, s.Backend(), be.String(), tcpSvcAnswer("t1\n", nil))
		c.Services = append(c.Services, config.Service{
			Name: "t1", Port: 7000, Mode: config.ModeTCP, Health: tcpSvcHealth(),
			Backends: []config.BackendServer{{Name: "b", Address: be.String()}},
		})
		cfg = c
	})
	vip := netip.AddrPortFrom(nodetest.VIP, 7000).String()
	got, err := tcpSvcAsk(s, netip.Addr{}, vip, "hi\n")
	require.NoError(t, err)
	require.Equal(t, "t1\n", got)
	gen := s.Status().Daemon.HAProxy.Generation

	weight := 300
	cfg.Services[2].Backends[0].Weight = &weight
	st := tcpSvcReload(t, s, cfg, false)
	require.Equal(t, "config "+s.ConfigPath+": services[2].backends[0].weight: 300: must be 0-256", st.Daemon.Config.LastReloadError)
	require.Equal(t, gen, st.Daemon.HAProxy.Generation, "no instance was renewed")

	cfg.Services[2].Backends[0].Weight = nil
	cfg.Services[2].Mode = "sctp"
	st = tcpSvcReload(t, s, cfg, false)
	require.Equal(t, "config "+s.ConfigPath+`: services[2].mode: "sctp": must be tls, http, tcp, udp or nat`,
		st.Daemon.Config.LastReloadError)
	require.EqualValues(t, 2, st.Daemon.Config.ReloadFailures)
	got, err = tcpSvcAsk(s, netip.Addr{}, vip, "hi\n")
	require.NoError(t, err, "the running generation serves on")
	require.Equal(t, "t1\n", got)
	require.Equal(t, config.ModeTCP, tcpSvcService(t, s.Status(), "t1").Mode)
}
