package tickets

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/sysuser"
)

// clock is a settable time for the rotator.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// realSite is two HAProxy instances, as ober renders them, loading one
// keys file, in front of one HTTP server.
type realSite struct {
	dir     string
	addrs   []string
	sockets []string
	pool    *x509.CertPool
}

func haproxyBinary(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	p, err := exec.LookPath("haproxy")
	require.NoError(t, err, "install haproxy (apt-get install haproxy)")
	return p
}

func newRealSite(t *testing.T, keys string, n int) *realSite {
	t.Helper()
	bin := haproxyBinary(t)
	dir, err := os.MkdirTemp("", "ober-tk") // short: stats socket paths
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	certPath, keyPath, err := certs.SelfSigned(dir, []string{"localhost"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	require.NoError(t, err)
	bundle, err := certs.Bundle(certPath, keyPath)
	require.NoError(t, err)
	pemPath := filepath.Join(dir, "fe.pem")
	require.NoError(t, os.WriteFile(pemPath, bundle, 0o600))
	caPEM, err := os.ReadFile(certPath)
	require.NoError(t, err)
	s := &realSite{dir: dir, pool: x509.NewCertPool()}
	require.True(t, s.pool.AppendCertsFromPEM(caPEM))

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(backend.Close)
	_, err = sysuser.Ensure(context.Background(), sysuser.HAProxyUser)
	require.NoError(t, err)
	chroot := filepath.Join(dir, "empty")
	require.NoError(t, os.Mkdir(chroot, 0o555))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := haproxy.DetectVersion(ctx, bin)
	require.NoError(t, err)
	for i := range n {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		require.NoError(t, err)
		f, err := l.(*net.TCPListener).File()
		require.NoError(t, err)
		l.Close()
		t.Cleanup(func() { f.Close() })
		in := haproxy.Instance{
			Index: i, StatsSocket: filepath.Join(dir, fmt.Sprintf("s%d.sock", i)),
			Frontends: []haproxy.Frontend{{Name: "tls-443", Mode: haproxy.ModeTLS, Port: 443, PEM: pemPath,
				Binds: []haproxy.Bind{{FD: 3, Family: 4}}, Pool: haproxy.DefaultPool}},
			Pools: []haproxy.Pool{{Name: haproxy.DefaultPool, Balance: haproxy.BalanceRoundRobin, Servers: []haproxy.Server{
				{Name: "s0", Addr: netip.MustParseAddrPort(backend.Listener.Addr().String()), Weight: 100}}}},
			Timeouts: haproxy.Timeouts{Connect: 5 * time.Second, Client: 30 * time.Second, Server: 30 * time.Second,
				HTTPRequest: 10 * time.Second, HTTPKeepAlive: 10 * time.Second},
			MaxConn: 100, Version: v,
			User: sysuser.HAProxyUser, Group: sysuser.HAProxyUser, Chroot: chroot,
			TicketKeys: keys,
		}
		text, err := haproxy.Render(in)
		require.NoError(t, err)
		cfg := filepath.Join(dir, fmt.Sprintf("h%d.cfg", i))
		require.NoError(t, os.WriteFile(cfg, text, 0o600))
		var out strings.Builder
		var mu sync.Mutex
		cmd := exec.Command(bin, "-f", cfg, "-db")
		cmd.ExtraFiles = []*os.File{f}
		w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
		cmd.Stdout, cmd.Stderr = w, w
		require.NoError(t, cmd.Start())
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
			if t.Failed() {
				mu.Lock()
				t.Logf("haproxy %d:\n%s", i, out.String())
				mu.Unlock()
			}
		})
		rt := haproxy.Runtime{Path: in.StatsSocket, Timeout: 2 * time.Second}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := rt.Info(ctx); err == nil {
				break
			}
			select {
			case <-exited:
				t.Fatalf("haproxy %d exited at start", i)
			default:
			}
			require.True(t, time.Now().Before(deadline), "haproxy %d's runtime API never answered", i)
			time.Sleep(50 * time.Millisecond)
		}
		s.addrs = append(s.addrs, l.Addr().String())
		s.sockets = append(s.sockets, in.StatsSocket)
	}
	return s
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// client is one TLS client with its own session cache, as a reconnecting
// S3 client has.
type client struct {
	cfg *tls.Config
}

func (s *realSite) client(maxVersion uint16) *client {
	return &client{cfg: &tls.Config{
		// One name for every instance: Go keys its cache by it.
		ServerName: "localhost", RootCAs: s.pool,
		ClientSessionCache: tls.NewLRUClientSessionCache(8),
		MaxVersion:         maxVersion,
	}}
}

// get makes one request to addr on a new connection and reads the
// answer (a TLS 1.3 ticket arrives after the handshake: reading is what
// stores it), and reports whether the session was resumed.
func (c *client) get(t *testing.T, addr string) bool {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c.cfg)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	body, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, io.EOF) {
		require.NoError(t, err)
	}
	require.Contains(t, string(body), "200", "the request went through")
	return conn.ConnectionState().DidResume
}

// A session begun on one instance resumes on another that loaded the
// same keys; after a rotation pushed through the runtime API, a ticket
// of the previous epoch still resumes and one of three epochs ago does
// not.
func TestRealResumeAcrossInstancesAndRotations(t *testing.T) {
	const period = time.Hour
	clk := &clock{t: Start(700_000, period).Add(time.Minute)}
	e0 := Epoch(clk.now(), period)
	keys := filepath.Join(t.TempDir(), "tls", "ticket-keys")
	var socks []string
	r := New(Options{File: keys, Instances: func() []string { return socks }, Now: clk.now})
	require.NoError(t, r.Set(seedA, period, true))
	st, err := os.Stat(keys)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), st.Mode().Perm(), "the keys are root's alone")

	s := newRealSite(t, keys, 2)
	socks = s.sockets
	a, b := s.addrs[0], s.addrs[1]
	ctx := context.Background()
	require.NoError(t, r.Sync(ctx))

	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS 1.3", tls.VersionTLS13}, {"TLS 1.2", tls.VersionTLS12}} {
		t.Run(v.name+" across instances", func(t *testing.T) {
			c := s.client(v.max)
			require.False(t, c.get(t, a), "the first connection is a full handshake")
			require.True(t, c.get(t, b), "a session from instance A resumes on B")
			require.True(t, c.get(t, a), "and back on A")
		})
	}

	prev, old := s.client(0), s.client(0)
	require.False(t, prev.get(t, a))
	require.False(t, old.get(t, a))

	clk.set(Start(e0+1, period).Add(time.Second))
	require.NoError(t, r.Sync(ctx))
	want, err := Keys(seedA, period, e0+1)
	require.NoError(t, err)
	for _, sock := range s.sockets {
		have, err := haproxy.Runtime{Path: sock}.TLSKeys(ctx, keys)
		require.NoError(t, err)
		require.Equal(t, want, have, "instance %s holds epoch %d's keys after the push", sock, e0+1)
	}
	file, err := File(seedA, period, e0+1)
	require.NoError(t, err)
	got, err := os.ReadFile(keys)
	require.NoError(t, err)
	require.Equal(t, string(file), string(got), "the file new instances load is the new epoch's")
	require.Equal(t, e0+1, r.Status().Epoch)
	require.True(t, prev.get(t, b), "a ticket of the previous epoch still resumes")

	// The next ober (a restart) finds the instances on the current keys
	// and pushes nothing: a push would shift them one epoch too far.
	r2 := New(Options{File: keys, Instances: func() []string { return socks }, Now: clk.now})
	require.NoError(t, r2.Set(seedA, period, true))
	require.NoError(t, r2.Sync(ctx))
	for _, sock := range s.sockets {
		have, err := haproxy.Runtime{Path: sock}.TLSKeys(ctx, keys)
		require.NoError(t, err)
		require.Equal(t, want, have, "instance %s after a second rotator's sync", sock)
	}

	clk.set(Start(e0+3, period).Add(time.Second))
	require.NoError(t, r.Sync(ctx))
	require.False(t, old.get(t, b), "a ticket of three epochs ago no longer resumes")
	fresh := s.client(0)
	require.False(t, fresh.get(t, a))
	require.True(t, fresh.get(t, b), "after the rotations both instances still agree")
	require.Zero(t, r.Status().Failures)
}
