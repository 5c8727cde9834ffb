package pulse_test

import (
	"bufio"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/runtime/pulse"
)

// change is one OnChange call.
type change struct {
	Key string
	Up  bool
}

// recorder collects a pulse's OnChange calls.
type recorder struct {
	mu  sync.Mutex
	evs []change
}

func (r *recorder) onChange(key string, up bool) {
	r.mu.Lock()
	r.evs = append(r.evs, change{key, up})
	r.mu.Unlock()
}

func (r *recorder) changes() []change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]change(nil), r.evs...)
}

// waitChanges waits until exactly want has been recorded.
func (r *recorder) waitChanges(t *testing.T, want ...change) {
	t.Helper()
	require.Eventually(t, func() bool { return len(r.changes()) >= len(want) }, 2*time.Second, time.Millisecond)
	require.Equal(t, want, r.changes())
}

// newPulse makes a pulse closed at the end of the test; stepped ones run
// a check only on pulse.Step.
func newPulse(t *testing.T, stepped bool, opts pulse.Options) (*pulse.Pulse, *recorder) {
	t.Helper()
	rec := &recorder{}
	if opts.OnChange == nil {
		opts.OnChange = rec.onChange
	}
	p := pulse.New(opts)
	t.Cleanup(p.Close)
	if stepped {
		pulse.Stepped(p)
	}
	return p, rec
}

// step runs one check of key and returns its status.
func step(t *testing.T, p *pulse.Pulse, key string) pulse.Status {
	t.Helper()
	require.True(t, pulse.Step(p, key), "no checker for %s", key)
	st, ok := p.State(key)
	require.True(t, ok)
	return st
}

func state(t *testing.T, p *pulse.Pulse, key string) pulse.Status {
	t.Helper()
	st, ok := p.State(key)
	require.True(t, ok, "no state for %s", key)
	return st
}

// backend is something a check can be pointed at and made to fail.
type backend struct {
	target pulse.Target
	set    func(up bool)
	// seen counts the checks that reached it (the ones it can see).
	seen func() int64
}

// tcpBackend is a listener that can be stopped and started again on the
// same port. It is one socket, bound to its port for the test's life:
// shutdown(2) stops a listener without unbinding a port given
// explicitly, and listen(2) starts it again. No other socket can take
// the port meanwhile. (With a placeholder socket holding the port and
// listeners sharing it by SO_REUSEPORT, a check of a closed backend
// connected about one run in 60 under load.)
type tcpBackend struct {
	t       *testing.T
	addr    netip.AddrPort
	fd      int
	mu      sync.Mutex
	ln      net.Listener // a duplicate of fd, while it listens
	accepts atomic.Int64
	times   []time.Time // of the accepts
}

func (b *tcpBackend) acceptTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.times...)
}

func newTCPBackend(t *testing.T) *tcpBackend {
	// An address of its own too, so that no other test's socket holds
	// its port.
	loopback := [4]byte{127, byte(1 + rand.IntN(254)), byte(rand.IntN(256)), byte(1 + rand.IntN(254))}
	var fd, port int
	for try := 0; ; try++ {
		// A free port, then a socket bound to it by number: only an
		// explicit port stays bound through shutdown(2).
		probe, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		require.NoError(t, syscall.Bind(probe, &syscall.SockaddrInet4{Addr: loopback}))
		sa, err := syscall.Getsockname(probe)
		require.NoError(t, err)
		syscall.Close(probe)
		port = sa.(*syscall.SockaddrInet4).Port
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		// The accepted connections it closed wait in TIME_WAIT on its
		// port; without SO_REUSEADDR it could not listen again.
		require.NoError(t, syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1))
		if err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: loopback, Port: port}); err == nil {
			break
		}
		syscall.Close(fd)
		require.Less(t, try, 20, "bind a port of its own: %v", err)
	}
	b := &tcpBackend{t: t, fd: fd, addr: netip.AddrPortFrom(netip.AddrFrom4(loopback), uint16(port))}
	b.set(true)
	t.Cleanup(func() {
		b.set(false)
		syscall.Close(fd)
	})
	return b
}

func (b *tcpBackend) listen() {
	require.NoError(b.t, syscall.Listen(b.fd, 128))
	dup, err := syscall.Dup(b.fd)
	require.NoError(b.t, err)
	f := os.NewFile(uintptr(dup), "tcp backend")
	ln, err := net.FileListener(f)
	f.Close()
	require.NoError(b.t, err)
	b.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.times = append(b.times, time.Now())
			b.mu.Unlock()
			b.accepts.Add(1)
			c.Close()
		}
	}()
}

func (b *tcpBackend) set(up bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case up && b.ln == nil:
		b.listen()
	case !up && b.ln != nil:
		// Stops listening (the queue is reset), the port stays bound.
		require.NoError(b.t, syscall.Shutdown(b.fd, syscall.SHUT_RDWR))
		b.ln.Close()
		b.ln = nil
	}
}

func (b *tcpBackend) backend(key string) backend {
	return backend{
		target: pulse.Target{Key: key, Addr: b.addr, Check: pulse.Check{Kind: pulse.KindTCP}},
		set:    b.set,
		seen:   b.accepts.Load,
	}
}

// httpBackend answers 200, or 503 while down, and remembers the
// requests it got.
type httpBackend struct {
	srv   *httptest.Server
	addr  netip.AddrPort
	down  atomic.Bool
	conns atomic.Int64
	mu    sync.Mutex
	reqs  []*http.Request
}

func newHTTPBackend(t *testing.T, tlsOn bool) *httpBackend {
	b := &httpBackend{}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.reqs = append(b.reqs, r)
		b.mu.Unlock()
		if b.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	b.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are the tests' point
	if tlsOn {
		b.srv.StartTLS()
	} else {
		b.srv.Start()
	}
	t.Cleanup(b.srv.Close)
	b.addr = netip.MustParseAddrPort(b.srv.Listener.Addr().String())
	return b
}

func (b *httpBackend) requests() []*http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*http.Request(nil), b.reqs...)
}

func (b *httpBackend) backend(key string) backend {
	return backend{
		target: pulse.Target{Key: key, Addr: b.addr, Check: pulse.Check{Kind: pulse.KindHTTP}},
		set:    func(up bool) { b.down.Store(!up) },
		seen:   func() int64 { return int64(len(b.requests())) },
	}
}

// caFile writes the certificate of a TLS httptest server to a file.
func caFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	block := &pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(block), 0o644))
	return path
}

// probeServer reads a line and answers "+PONG <line>" or, while down,
// "-ERR down", after delay.
type probeServer struct {
	addr   netip.AddrPort
	down   atomic.Bool
	delay  time.Duration
	silent bool // accept, never answer
	seen   atomic.Int64
	open   atomic.Int64 // checks under way
	most   atomic.Int64 // the most under way at once
}

func newProbeServer(t *testing.T, delay time.Duration) *probeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	s := &probeServer{addr: netip.MustParseAddrPort(ln.Addr().String()), delay: delay}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *probeServer) serve(c net.Conn) {
	defer c.Close()
	s.seen.Add(1)
	// A check is under way from its accept to its answer: the client
	// cannot end it sooner.
	n := s.open.Add(1)
	answered := false
	done := func() {
		if !answered {
			answered = true
			s.open.Add(-1)
		}
	}
	defer done()
	for {
		m := s.most.Load()
		if n <= m || s.most.CompareAndSwap(m, n) {
			break
		}
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || s.silent {
		// Hold the connection until the client goes.
		_, _ = io.Copy(io.Discard, c)
		return
	}
	time.Sleep(s.delay)
	done()
	if s.down.Load() {
		fmt.Fprint(c, "-ERR down\r\n")
		return
	}
	fmt.Fprintf(c, "+PONG %s", line)
}

func (s *probeServer) backend(key string) backend {
	return backend{
		target: pulse.Target{Key: key, Addr: s.addr, Check: pulse.Check{
			Kind: pulse.KindProbe, Send: []byte("PING\r\n"), Expect: []byte("+PONG")}},
		set:  func(up bool) { s.down.Store(!up) },
		seen: s.seen.Load,
	}
}

// script writes an executable /bin/sh script.
func script(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "check.sh")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return path
}

// execBackend's check passes while a file exists.
func execBackend(t *testing.T, key string) backend {
	dir := t.TempDir()
	up := filepath.Join(dir, "up")
	runs := filepath.Join(dir, "runs")
	sh := script(t, dir, fmt.Sprintf(`echo x >> %s; [ -e %s ] || { echo "no $0"; exit 3; }`, runs, up))
	return backend{
		target: pulse.Target{Key: key, Addr: netip.MustParseAddrPort("127.0.0.1:9"), Check: pulse.Check{
			Kind: pulse.KindExec, Command: []string{sh}}},
		set: func(on bool) {
			if on {
				require.NoError(t, os.WriteFile(up, nil, 0o644))
			} else {
				require.NoError(t, os.RemoveAll(up))
			}
		},
		seen: func() int64 {
			b, _ := os.ReadFile(runs)
			return int64(len(b) / 2)
		},
	}
}

// backends makes one failing-and-recovering backend of each kind that
// sends traffic.
var backends = map[string]func(t *testing.T) backend{
	"tcp":  func(t *testing.T) backend { return newTCPBackend(t).backend("svc/pool/tcp") },
	"http": func(t *testing.T) backend { return newHTTPBackend(t, false).backend("svc/pool/http") },
	"https": func(t *testing.T) backend {
		b := newHTTPBackend(t, true)
		be := b.backend("svc/pool/https")
		be.target.Check.Kind = pulse.KindHTTPS
		be.target.Check.TLSVerify = true
		be.target.Check.CAFile = caFile(t, b.srv)
		be.target.Check.ServerName = "example.com"
		return be
	},
	"probe": func(t *testing.T) backend { return newProbeServer(t, 0).backend("svc/pool/probe") },
	"exec":  func(t *testing.T) backend { return execBackend(t, "svc/pool/exec") },
}
