package check

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/doctor"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// serve answers HAProxy's check of /health with Host host with code,
// anything else with 418, on a loopback port, and returns its address.
func serve(t *testing.T, code int, host string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || r.Header.Get("User-Agent") != "ober-test" || r.Host != host {
			http.Error(w, "unexpected request", http.StatusTeapot)
			return
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestBackendCheck(t *testing.T) {
	ctx := context.Background()
	ok := serve(t, http.StatusOK, "s3.test")
	_, port, _ := net.SplitHostPort(serve(t, http.StatusForbidden, "s3.test"))

	c := backendCheck(ctx, config.BackendServer{Name: "a", Address: ok}, "/health", "s3.test")
	require.Equal(t, OK, c.Status, "%+v", c)
	require.True(t, c.OK)
	require.Equal(t, ok, c.Address)
	require.Equal(t, 200, c.HTTPStatus)
	require.Greater(t, c.RTTMillis, 0.0)
	require.Regexp(t, `^`+ok+`: connect \d+\.\d{3} ms, GET /health answered 200 OK$`, c.Detail)

	// A name: resolved, IPv4 first, and both shown.
	c = backendCheck(ctx, config.BackendServer{Name: "b", Address: "localhost:" + port}, "/health", "s3.test")
	require.Equal(t, OK, c.Status, "%+v", c)
	require.Equal(t, "127.0.0.1:"+port, c.Address)
	require.Contains(t, c.Detail, "localhost:"+port+" (127.0.0.1:"+port+"): ")
	require.Contains(t, c.Detail, "answered 403 Forbidden, which HAProxy's check counts as up")

	c = backendCheck(ctx, config.BackendServer{Name: "c", Address: serve(t, http.StatusServiceUnavailable, "s3.test")}, "/health", "s3.test")
	require.Equal(t, Fail, c.Status)
	require.False(t, c.OK)
	require.Equal(t, 503, c.HTTPStatus)
	require.Contains(t, c.Detail, "503 Service Unavailable: HAProxy's check counts it as down")
	require.NotEmpty(t, c.Fix)

	closed := closedPort(t)
	c = backendCheck(ctx, config.BackendServer{Name: "d", Address: closed}, "/health", "s3.test")
	require.Equal(t, Fail, c.Status)
	require.Equal(t, closed+": TCP connect: connection refused", c.Detail)
	require.Zero(t, c.HTTPStatus)

	c = backendCheck(ctx, config.BackendServer{Name: "e", Address: "nosuch.invalid:80"}, "/health", "s3.test")
	require.Equal(t, Fail, c.Status)
	require.Contains(t, c.Detail, "nosuch.invalid:80: does not resolve: ")
	require.Equal(t, "backend e", c.Name)
}

// A server with TLS and a CA file is checked over TLS against that CA;
// one with the PROXY protocol gets a LOCAL header first.
func TestBackendCheckTLSAndProxy(t *testing.T) {
	ctx := context.Background()
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	t.Cleanup(s.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o600))
	addr := s.Listener.Addr().String()

	c := backendCheck(ctx, config.BackendServer{Name: "tls", Address: addr, TLS: true, CAFile: ca}, "/", "s3.test")
	require.Equal(t, OK, c.Status, "%+v", c)
	other := filepath.Join(t.TempDir(), "other.pem")
	require.NoError(t, os.WriteFile(other, nil, 0o600))
	c = backendCheck(ctx, config.BackendServer{Name: "tls", Address: addr, TLS: true, CAFile: other}, "/", "s3.test")
	require.Equal(t, Fail, c.Status, "a certificate of another CA")
	require.Contains(t, c.Detail, addr+": TLS handshake: ")
	require.Contains(t, c.Detail, "unknown authority")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	got := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		hdr := make([]byte, 16)
		if _, err := r.Read(hdr); err != nil {
			got <- err.Error()
			return
		}
		got <- string(hdr)
		if _, err := http.ReadRequest(r); err == nil {
			conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
		}
	}()
	c = backendCheck(ctx, config.BackendServer{Name: "pp", Address: l.Addr().String(), ProxyProtocol: true}, "/", "s3.test")
	require.Equal(t, OK, c.Status, "%+v", c)
	require.Equal(t, "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", <-got, "a PROXY v2 LOCAL header")
}

func TestHealthHost(t *testing.T) {
	require.Equal(t, "localhost", healthHost([]config.BackendServer{{Address: "10.0.0.1:80"}}))
	require.Equal(t, "s3.b", healthHost([]config.BackendServer{{Address: "10.0.0.1:80"}, {SNI: "s3.b"}, {SNI: "s3.c"}}))
}

func TestICMPChecksum(t *testing.T) {
	// RFC 1071's example: the sum of these words is 0xddf2.
	require.Equal(t, uint16(^uint16(0xddf2)), icmpChecksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}))
	// A message with its checksum in place sums to zero; odd length pads.
	msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'o', 'b', 'e'}
	sum := icmpChecksum(msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	require.Equal(t, uint16(0), icmpChecksum(msg))
}

// pingFrom reaches a peer over the interface it is bound to, and names
// what went wrong when the peer does not answer.
func TestPingFrom(t *testing.T) {
	a, b := netnstest.New(t, "ping-a"), netnstest.New(t, "ping-b")
	netnstest.Veth(t, a, "eth-a", b, "eth-b", 1)
	a.IP(t, "addr", "add", "10.77.0.1/24", "dev", "eth-a")
	b.IP(t, "addr", "add", "10.77.0.2/24", "dev", "eth-b")
	a.IP(t, "-6", "addr", "add", "fd00:77::1/64", "dev", "eth-a", "nodad")
	b.IP(t, "-6", "addr", "add", "fd00:77::2/64", "dev", "eth-b", "nodad")
	self, peer := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
	self6, peer6 := netip.MustParseAddr("fd00:77::1"), netip.MustParseAddr("fd00:77::2")
	ctx := context.Background()
	type ping struct {
		rtt  time.Duration
		err  error
		took time.Duration
	}
	var v4, v6, gone, wrongIface ping
	require.NoError(t, a.Do(func() error {
		run := func(iface string, self, peer netip.Addr, wait time.Duration) ping {
			start := time.Now()
			rtt, err := pingFrom(ctx, iface, self, peer, wait)
			return ping{rtt, err, time.Since(start)}
		}
		v4 = run("eth-a", self, peer, 2*time.Second)
		v6 = run("eth-a", self6, peer6, 2*time.Second)
		gone = run("eth-a", self, netip.MustParseAddr("10.77.0.3"), 400*time.Millisecond)
		// Bound to lo, the echo cannot take the path to the peer.
		wrongIface = run("lo", self, peer, 400*time.Millisecond)
		return nil
	}))
	require.NoError(t, v4.err)
	require.Greater(t, v4.rtt, time.Duration(0))
	require.NoError(t, v6.err)
	require.Greater(t, v6.rtt, time.Duration(0))
	require.ErrorContains(t, gone.err, "in 400ms")
	require.Less(t, gone.took, 2*time.Second)
	require.Error(t, wrongIface.err)
}

// With a daemon answering on api.listen, its sessions are reported and
// no session of its own is opened: a router would refuse the second one.
func TestBGPChecksReportTheRunningDaemon(t *testing.T) {
	st := api.Status{DataplaneStatus: &api.DataplaneStatus{}, Daemon: &api.DaemonStatus{PID: 42, BGP: &api.BGPStatus{
		Status: bgp.Status{Peers: []bgp.PeerStatus{
			{Address: "10.0.0.1", ASN: 65000, State: "established"},
			{Address: "10.0.0.2", ASN: 65001, State: "active", LastError: "hold timer expired"},
		}},
	}}}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(st)
	}))
	t.Cleanup(s.Close)
	cfg := &config.Config{HA: config.HA{Mode: config.HAModeBGP, BGP: &config.BGP{ASN: 65010}}}
	cfg.Node.Interfaces = []string{"nope0"} // no router ID to be had: a probe would fail
	cfg.API.Listen = s.Listener.Addr().String()
	got := bgpChecks(context.Background(), Options{}, cfg)
	require.Equal(t, []Result{
		{Name: "bgp 10.0.0.1", OK: true, Status: OK, Detail: "AS65000 established in the running daemon (pid 42)"},
		{Name: "bgp 10.0.0.2", Status: Fail, Detail: "AS65001 active in the running daemon (pid 42): hold timer expired"},
	}, got)

	// No daemon: the speaker's configuration is needed, and why it
	// cannot be had is the check's detail.
	cfg.API.Listen = closedPort(t)
	got = bgpChecks(context.Background(), Options{}, cfg)
	require.Len(t, got, 1)
	require.Equal(t, "bgp", got[0].Name)
	require.Equal(t, Fail, got[0].Status)
	require.Contains(t, got[0].Detail, `node.interfaces: "nope0": `)
}

// The config and haproxy lines: the configuration planned and checked
// by HAProxy, as `ober run --check` does.
func TestConfigChecks(t *testing.T) {
	netnstest.RequireTool(t, "haproxy", "haproxy")
	path := filepath.Join(t.TempDir(), "ober.yaml")
	text := `node:
  name: t1
  interfaces: [lo]
vips: [10.98.0.100, 10.98.0.101]
services:
  - port: 80
    mode: http
backends:
  servers:
    - address: 127.0.0.1:9000
instances:
  count: 1
  cpus: [0]
`
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	got := configChecks(context.Background(), path, cfg)
	require.Len(t, got, 2, "%+v", got)
	require.Equal(t, pass("config", path+": 2 VIPs, 1 services, 1 backends"), got[0])
	require.Equal(t, "haproxy", got[1].Name)
	require.True(t, got[1].OK, "%+v", got[1])
	require.Regexp(t, `^HAProxy \d+\.\d+\S* accepts the configuration of 1 instances$`, got[1].Detail)

	// HAProxy refuses its binary: one config line, no haproxy line.
	require.NoError(t, os.WriteFile(path, []byte(text+"haproxy:\n  binary: /bin/false\n"), 0o600))
	cfg, err = config.Load(path)
	require.NoError(t, err)
	got = configChecks(context.Background(), path, cfg)
	require.Len(t, got, 1, "%+v", got)
	require.Equal(t, "config", got[0].Name)
	require.Equal(t, Fail, got[0].Status)
	require.Contains(t, got[0].Detail, "haproxy.binary: ")
	require.NotContains(t, got[0].Detail, "\n")
}

func TestFromDoctor(t *testing.T) {
	require.Equal(t, Result{Name: "tls https", OK: true, Status: OK, Detail: "d"},
		fromDoctor(doctor.Result{Name: "cert https", Status: doctor.Pass, Detail: "d"}))
	require.Equal(t, Result{Name: "iface eth0", OK: true, Status: Warn, Detail: "d", Fix: "f"},
		fromDoctor(doctor.Result{Name: "iface eth0", Status: doctor.Warn, Detail: "d", Fix: "f"}))
	require.Equal(t, Result{Name: "vrrp", Status: Fail, Detail: "d", Fix: "f"},
		fromDoctor(doctor.Result{Name: "vrrp", Status: doctor.Fail, Detail: "d", Fix: "f"}))
	require.Equal(t, 1, Failed([]Result{pass("a", ""), fail("b", ""), {Name: "c", OK: true, Status: Warn}}))
}

// A configuration that does not load still gets the checks that need
// only part of it, in their order, and never reaches the compile step.
func TestRunOnAConfigThatDoesNotLoad(t *testing.T) {
	addr := serve(t, http.StatusOK, "localhost")
	path := filepath.Join(t.TempDir(), "ober.yaml")
	text := `node:
  name: t1
  interfaces: [nope0]
vips: [10.98.0.100]
services:
  - port: 80
    mode: http
    unknown_key: 1
backends:
  servers:
    - name: s3a
      address: ` + addr + `
  health:
    path: /health
`
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	o := Options{}
	got := Run(context.Background(), path, o)
	names := make([]string, len(got))
	for i, c := range got {
		names[i] = c.Name
	}
	require.Equal(t, []string{"config", "backend s3a", "iface nope0"}, names, "%+v", got)
	require.Equal(t, Fail, got[0].Status)
	require.Contains(t, got[0].Detail, "unknown_key")
	require.False(t, strings.Contains(got[0].Detail, "\n"))
	require.Equal(t, Fail, got[2].Status)

	got = Run(context.Background(), filepath.Join(t.TempDir(), "none.yaml"), o)
	require.Len(t, got, 1)
	require.Equal(t, "config", got[0].Name)
	require.Contains(t, got[0].Detail, "no such file")
}

// A dnat service's backend passes the route-back check only when its
// answers to a client come back through the node: with its default
// route (or a route to the clients the access list admits) via the node
// it passes, without one it fails naming the fix, and a backend that
// answers no ICMP at all is a warning, not a verdict.
func TestRouteBack(t *testing.T) {
	node, be := netnstest.New(t, "rb-node"), netnstest.New(t, "rb-be")
	netnstest.Veth(t, node, "eth-n", be, "eth-b", 1)
	node.IP(t, "addr", "add", "10.78.0.1/24", "dev", "eth-n")
	be.IP(t, "addr", "add", "10.78.0.2/24", "dev", "eth-b")
	node.IP(t, "-6", "addr", "add", "fd00:78::1/64", "dev", "eth-n", "nodad")
	be.IP(t, "-6", "addr", "add", "fd00:78::2/64", "dev", "eth-b", "nodad")
	svc := func(access ...string) config.Service {
		s := config.Service{Name: "pg", Mode: config.ModeNAT, Forward: config.ForwardDNAT}
		if len(access) > 0 {
			s.Access = &config.Access{Default: config.AccessDeny, Rules: access}
		}
		return s
	}
	check := func(s config.Service, addr string) Result {
		var r Result
		require.NoError(t, node.Do(func() error {
			r = routeBackCheck(context.Background(), s, config.BackendServer{Name: "b", Address: addr})
			return nil
		}))
		return r
	}
	const v4, v6 = "10.78.0.2:5432", "[fd00:78::2]:5432"

	// No route back: the backend cannot answer 198.51.100.1 at all.
	r := check(svc(), v4)
	require.Equal(t, Fail, r.Status, "%+v", r)
	require.Contains(t, r.Detail, "do not come back through this node")
	require.Contains(t, r.Detail, "198.51.100.1")
	require.Contains(t, r.Fix, "forward: fullnat")
	r = check(svc(), v6)
	require.Equal(t, Fail, r.Status, "%+v", r)
	require.Contains(t, r.Detail, "2001:db8::1")

	be.IP(t, "route", "add", "default", "via", "10.78.0.1")
	be.IP(t, "-6", "route", "add", "default", "via", "fd00:78::1")
	r = check(svc(), v4)
	require.Equal(t, OK, r.Status, "%+v", r)
	require.Greater(t, r.RTTMillis, 0.0)
	r = check(svc(), v6)
	require.Equal(t, OK, r.Status, "%+v", r)

	// The access list's clients are what the backend must route: a
	// route to them alone is enough, and the check uses one of them.
	be.IP(t, "route", "del", "default")
	be.IP(t, "route", "add", "10.200.0.0/16", "via", "10.78.0.1")
	r = check(svc("deny 10.200.9.0/24", "allow 10.200.0.0/16"), v4)
	require.Equal(t, OK, r.Status, "%+v", r)
	require.Contains(t, r.Detail, "10.200.0.1")
	r = check(svc(), v4)
	require.Equal(t, Fail, r.Status, "a documentation address has no route: %+v", r)

	// A backend that ignores ICMP echo cannot be judged.
	out, err := be.Exec(context.Background(), "sysctl", "-w", "net.ipv4.icmp_echo_ignore_all=1").CombinedOutput()
	require.NoError(t, err, "%s", out)
	r = check(svc(), v4)
	require.Equal(t, Warn, r.Status, "%+v", r)
	require.True(t, r.OK)
	require.Contains(t, r.Detail, "answers no ICMP echo")
}

// The filter and the parser agree on what a reply is: the echo request
// itself (the other direction) and another id are not.
func TestEchoPacketAndReply(t *testing.T) {
	for _, pair := range [][2]string{{"198.51.100.1", "10.0.0.2"}, {"2001:db8::1", "fd00::2"}} {
		client, backend := netip.MustParseAddr(pair[0]), netip.MustParseAddr(pair[1])
		req := echoPacket(client, backend, 7, 3)
		_, ok := echoReplySeq(req, client, backend, 7)
		require.False(t, ok, "a request is no reply")
		// The backend's reply: addresses swapped, type reply.
		rep := echoPacket(backend, client, 7, 3)
		if client.Is4() {
			rep[20] = 0
		} else {
			rep[40] = 129
		}
		seq, ok := echoReplySeq(rep, client, backend, 7)
		require.True(t, ok)
		require.Equal(t, uint16(3), seq)
		_, ok = echoReplySeq(rep, client, backend, 8)
		require.False(t, ok, "another id")
		_, ok = echoReplySeq(rep[:10], client, backend, 7)
		require.False(t, ok, "truncated")
	}
}
