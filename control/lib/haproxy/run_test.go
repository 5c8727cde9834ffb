package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/internal/testsite/haproxytest"
)

// seen is what a backend server received.
type seen struct {
	Method, Path, Host, Proto string
	Header                    http.Header
	TransferEncoding          []string
	ContentLength             int64
	BodyLen                   int64
	BodySHA                   [32]byte
	Err                       error
}

// recorder is an S3 stand-in: it answers the health check path like S3
// answers an anonymous request (403) and records everything else.
type recorder struct {
	mu     sync.Mutex
	reqs   map[string]seen // by X-Test-ID
	checks atomic.Int64
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/health" {
		r.checks.Add(1)
		w.WriteHeader(http.StatusForbidden)
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, req.Body)
	s := seen{
		Method: req.Method, Path: req.URL.RequestURI(), Host: req.Host, Proto: req.Proto,
		Header: req.Header.Clone(), TransferEncoding: req.TransferEncoding,
		ContentLength: req.ContentLength, BodyLen: n, Err: err,
	}
	copy(s.BodySHA[:], h.Sum(nil))
	r.mu.Lock()
	if r.reqs == nil {
		r.reqs = map[string]seen{}
	}
	r.reqs[req.Header.Get("X-Test-ID")] = s
	r.mu.Unlock()
	w.Header().Set("X-Backend-Proto", req.Proto)
	_, _ = io.WriteString(w, "ok")
}

func (r *recorder) get(t *testing.T, id string) seen {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.reqs[id]
	require.True(t, ok, "request %s never reached a backend", id)
	return s
}

// syncBuffer collects HAProxy's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls f until it succeeds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			require.NoError(t, err, "waiting %v for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady waits for the stats socket to answer, failing at once if
// HAProxy exits.
func waitReady(t *testing.T, ctx context.Context, rt Runtime, exited <-chan struct{}) {
	t.Helper()
	waitFor(t, 10*time.Second, "the stats socket", func() error {
		select {
		case <-exited:
			t.Fatal("haproxy exited at startup")
		default:
		}
		_, err := rt.Info(ctx)
		return err
	})
}

// listenerFile is a listening socket on 127.0.0.1 as a file to pass to
// HAProxy, and its address.
func listenerFile(t *testing.T) (*os.File, string) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f, l.Addr().String()
}

// lastCPU is the highest CPU this process may run on.
func lastCPU(t *testing.T) int {
	t.Helper()
	var set unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &set))
	cpu := -1
	for i := 0; i < 1024; i++ {
		if set.IsSet(i) {
			cpu = i
		}
	}
	require.GreaterOrEqual(t, cpu, 0)
	return cpu
}

// startHAProxy runs HAProxy in the foreground with files as fd 3, 4, ...
// and kills it (by PID) when the test ends. done closes when it exits.
func startHAProxy(t *testing.T, bin, cfg string, files ...*os.File) (cmd *exec.Cmd, out *syncBuffer, done <-chan struct{}) {
	t.Helper()
	out = &syncBuffer{}
	cmd = exec.Command(bin, "-f", cfg, "-db")
	cmd.ExtraFiles = files
	cmd.Stdout = out
	cmd.Stderr = out
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("haproxy pid %d did not exit after SIGKILL", cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out)
		}
	})
	return cmd, out, exited
}

// TestRealRun serves TLS, HTTP/2 and plain HTTP through a rendered
// instance, unprivileged in its chroot, with every release of
// haproxytest.All.
func TestRealRun(t *testing.T) { haproxytest.Each(t, realRun) }

func realRun(t *testing.T, bin string) {
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	cert := newTestCert(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Backends: plain HTTP on 127.0.0.1 and on ::1 when the host has IPv6,
	// HTTPS with a verified certificate.
	rec := &recorder{}
	be4 := httptest.NewServer(rec)
	defer be4.Close()
	beTLS := httptest.NewTLSServer(rec)
	defer beTLS.Close()
	beCA := filepath.Join(dir, "backend-ca.pem")
	require.NoError(t, os.WriteFile(beCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: beTLS.Certificate().Raw}), 0o644))
	servers := []Server{
		{Name: "plain4", Addr: netip.MustParseAddrPort(be4.Listener.Addr().String()), Weight: 100},
		{Name: "tls4", Addr: netip.MustParseAddrPort(beTLS.Listener.Addr().String()), Weight: 100,
			TLS: true, CAFile: beCA, SNI: "example.com"}, // httptest's certificate names example.com
	}
	if l6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		be6 := httptest.NewUnstartedServer(rec)
		be6.Listener.Close()
		be6.Listener = l6
		be6.Start()
		defer be6.Close()
		servers = append(servers, Server{Name: "plain6", Addr: netip.MustParseAddrPort(l6.Addr().String()), Weight: 100})
	} else {
		t.Logf("no IPv6 loopback (%v): the IPv6 server is only covered by TestCheckRenderedConfig", err)
	}

	tlsFile, tlsAddr := listenerFile(t)
	httpFile, httpAddr := listenerFile(t)
	cpu := lastCPU(t)
	sock := filepath.Join(dir, "s.sock")
	in := Instance{
		Index: 7, CPU: cpu, Node: "testnode", StatsSocket: sock,
		Frontends: []Frontend{
			{Name: "tls-8443", Mode: ModeTLS, Port: 8443, PEM: cert.CombinedPEM, Binds: []Bind{{FD: 3, Family: 4}}, Pool: DefaultPool},
			{Name: "http-8080", Mode: ModeHTTP, Port: 8080, Binds: []Bind{{FD: 4, Family: 4}}, Pool: DefaultPool},
		},
		Pools: []Pool{{Name: DefaultPool, Balance: BalanceRoundRobin, Servers: servers}},
		Timeouts: Timeouts{
			Connect: 2 * time.Second, Client: 30 * time.Second, Server: 30 * time.Second,
			HTTPRequest: 10 * time.Second, HTTPKeepAlive: 10 * time.Second, Drain: 5 * time.Second,
		},
		MaxConn:        1000,
		ServedByHeader: true,
		Version:        v,
	}
	unprivileged(t, &in, dir)
	cfg := writeConfig(t, dir, in)
	require.NoError(t, Check(ctx, bin, cfg, []int{3, 4}))
	cmd, out, exited := startHAProxy(t, bin, cfg, tlsFile, httpFile)

	rt := Runtime{Path: sock, Timeout: 2 * time.Second}
	waitReady(t, ctx, rt, exited)
	// No server is checked by HAProxy: every one is usable from the start.
	states, err := rt.Servers(ctx)
	require.NoError(t, err)
	require.Len(t, states, len(servers))
	for _, s := range states {
		require.True(t, s.Up, "%+v", s)
		require.Equal(t, "no check", s.Status)
		require.Empty(t, s.CheckStatus)
	}

	t.Run("unprivileged in the chroot", func(t *testing.T) {
		// What it gave up: every id is ober-haproxy's, no capability is
		// left, and its root is the empty directory.
		u, err := user.Lookup(in.User)
		require.NoError(t, err)
		g, err := user.LookupGroup(in.Group)
		require.NoError(t, err)
		st := procStatus(t, cmd.Process.Pid)
		require.Equal(t, []string{u.Uid, u.Uid, u.Uid, u.Uid}, strings.Fields(st["Uid"]), "real, effective, saved, filesystem uid")
		require.Equal(t, []string{g.Gid, g.Gid, g.Gid, g.Gid}, strings.Fields(st["Gid"]), "real, effective, saved, filesystem gid")
		require.Empty(t, strings.TrimSpace(st["Groups"]), "no supplementary groups (root's are dropped)")
		for _, c := range []string{"CapEff", "CapPrm", "CapAmb"} {
			require.Equal(t, "0000000000000000", st[c], c)
		}
		root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", cmd.Process.Pid))
		require.NoError(t, err)
		require.Equal(t, in.Chroot, root)

		// What it read first, as root: the key bundle only root may read
		// (the TLS requests below are served with it), and the runtime
		// socket it made root's, which ober talks to (the runtime API
		// below).
		for _, f := range []string{cert.CombinedPEM, sock} {
			fi, err := os.Stat(f)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
			require.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid, f)
		}
	})

	t.Run("pinned to the CPU", func(t *testing.T) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		require.NoError(t, err)
		var allowed string
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
				allowed = strings.TrimSpace(v)
			}
		}
		require.Equal(t, strconv.Itoa(cpu), allowed)
	})

	tlsConfig := func(minV, maxV uint16) *tls.Config {
		return &tls.Config{RootCAs: cert.Pool, ServerName: "localhost", MinVersion: minV, MaxVersion: maxV}
	}
	client := func(cfg *tls.Config, h2 bool) *http.Client {
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, ExpectContinueTimeout: 10 * time.Second}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}

	// s3Request is a signed-looking S3 request with forged forwarding
	// headers.
	s3Request := func(t *testing.T, method, url, id string, body io.Reader) *http.Request {
		req, err := http.NewRequestWithContext(ctx, method, url, body)
		require.NoError(t, err)
		req.Host = "bucket.s3.test"
		req.Header.Set("X-Test-ID", id)
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0123456789abcdef")
		req.Header.Set("X-Amz-Date", "20260101T000000Z")
		req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		req.Header.Set("X-Amz-Meta-Note", "Mixed Case  two spaces")
		req.Header.Add("X-Forwarded-For", "203.0.113.9")
		req.Header.Add("X-Forwarded-For", "198.51.100.7, 192.0.2.1")
		req.Header.Set("X-Forwarded-Proto", "gopher")
		return req
	}
	checkForwarded := func(t *testing.T, s seen, proto string) {
		require.Equal(t, "bucket.s3.test", s.Host)
		require.Equal(t, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0123456789abcdef", s.Header.Get("Authorization"))
		require.Equal(t, []string{"20260101T000000Z"}, s.Header.Values("X-Amz-Date"))
		require.Equal(t, []string{"UNSIGNED-PAYLOAD"}, s.Header.Values("X-Amz-Content-Sha256"))
		require.Equal(t, []string{"Mixed Case  two spaces"}, s.Header.Values("X-Amz-Meta-Note"))
		require.Equal(t, []string{"127.0.0.1"}, s.Header.Values("X-Forwarded-For"), "client-supplied X-Forwarded-For must be replaced")
		require.Equal(t, []string{proto}, s.Header.Values("X-Forwarded-Proto"))
		require.Equal(t, "/bucket/key?x-id=GetObject&list-type=2", s.Path)
	}
	checkResponse := func(t *testing.T, resp *http.Response) {
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		require.Equal(t, "ok", string(body))
		require.Equal(t, "testnode/7", resp.Header.Get("X-Served-By"))
		require.Equal(t, "HTTP/1.1", resp.Header.Get("X-Backend-Proto"))
	}
	path := "/bucket/key?x-id=GetObject&list-type=2"

	for _, tc := range []struct {
		name    string
		version uint16
	}{{"TLS 1.2", tls.VersionTLS12}, {"TLS 1.3", tls.VersionTLS13}} {
		t.Run(tc.name+" request", func(t *testing.T) {
			id := "get-" + tc.name
			resp, err := client(tlsConfig(tc.version, tc.version), false).Do(s3Request(t, "GET", "https://"+tlsAddr+path, id, nil))
			require.NoError(t, err)
			require.Equal(t, tc.version, resp.TLS.Version)
			require.Equal(t, 1, resp.ProtoMajor)
			checkResponse(t, resp)
			checkForwarded(t, rec.get(t, id), "https")
		})
	}

	t.Run("TLS 1.1 refused", func(t *testing.T) {
		d := tls.Dialer{Config: tlsConfig(tls.VersionTLS10, tls.VersionTLS11)}
		c, err := d.DialContext(ctx, "tcp", tlsAddr)
		if err == nil {
			c.Close()
		}
		require.Error(t, err)
		require.Contains(t, err.Error(), "protocol version")
	})

	t.Run("ALPN h2", func(t *testing.T) {
		cfg := tlsConfig(tls.VersionTLS12, 0)
		cfg.NextProtos = []string{"h2", "http/1.1"}
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", tlsAddr)
		require.NoError(t, err)
		require.Equal(t, "h2", c.(*tls.Conn).ConnectionState().NegotiatedProtocol)
		c.Close()

		cfg = tlsConfig(tls.VersionTLS12, 0)
		cfg.NextProtos = []string{"http/1.1"}
		d = tls.Dialer{Config: cfg}
		c, err = d.DialContext(ctx, "tcp", tlsAddr)
		require.NoError(t, err)
		require.Equal(t, "http/1.1", c.(*tls.Conn).ConnectionState().NegotiatedProtocol)
		c.Close()
	})

	h2 := client(tlsConfig(tls.VersionTLS12, 0), true)
	t.Run("HTTP/2 request", func(t *testing.T) {
		resp, err := h2.Do(s3Request(t, "GET", "https://"+tlsAddr+path, "get-h2", nil))
		require.NoError(t, err)
		require.Equal(t, 2, resp.ProtoMajor)
		checkResponse(t, resp)
		checkForwarded(t, rec.get(t, "get-h2"), "https")
	})

	t.Run("plain HTTP request", func(t *testing.T) {
		resp, err := client(nil, false).Do(s3Request(t, "GET", "http://"+httpAddr+path, "get-http", nil))
		require.NoError(t, err)
		checkResponse(t, resp)
		checkForwarded(t, rec.get(t, "get-http"), "http")
	})

	t.Run("10 MiB chunked PUT with Expect 100-continue", func(t *testing.T) {
		data := make([]byte, 10<<20)
		_, err := rand.Read(data)
		require.NoError(t, err)
		// A reader of unknown length: the body goes chunked.
		body := struct{ io.Reader }{bytes.NewReader(data)}
		req := s3Request(t, "PUT", "https://"+tlsAddr+"/bucket/big", "put-big", body)
		req.ContentLength = -1
		req.Header.Set("Expect", "100-continue")
		req.Header.Set("X-Amz-Content-Sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
		var got100 atomic.Bool
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			Got100Continue: func() { got100.Store(true) },
		}))
		resp, err := client(tlsConfig(tls.VersionTLS13, 0), false).Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.True(t, got100.Load(), "the client never saw 100 Continue")

		s := rec.get(t, "put-big")
		require.NoError(t, s.Err)
		require.Equal(t, "PUT", s.Method)
		require.Equal(t, int64(len(data)), s.BodyLen)
		require.Equal(t, sha256.Sum256(data), s.BodySHA)
		require.Equal(t, []string{"chunked"}, s.TransferEncoding)
		require.Equal(t, int64(-1), s.ContentLength)
		require.Equal(t, "100-continue", s.Header.Get("Expect"))
		require.Equal(t, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", s.Header.Get("X-Amz-Content-Sha256"))
	})

	t.Run("HTTP/2 PUT", func(t *testing.T) {
		data := make([]byte, 3<<20)
		_, err := rand.Read(data)
		require.NoError(t, err)
		resp, err := h2.Do(s3Request(t, "PUT", "https://"+tlsAddr+"/bucket/h2", "put-h2", bytes.NewReader(data)))
		require.NoError(t, err)
		require.Equal(t, 2, resp.ProtoMajor)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		s := rec.get(t, "put-h2")
		require.Equal(t, int64(len(data)), s.BodyLen)
		require.Equal(t, sha256.Sum256(data), s.BodySHA)
	})

	t.Run("runtime API", func(t *testing.T) {
		info, err := rt.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, "HAProxy", info["Name"])
		require.True(t, strings.HasPrefix(info["Version"], fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)), info["Version"])
		require.Equal(t, "1", info["Nbthread"])
		require.Equal(t, strconv.Itoa(cmd.Process.Pid), info["Pid"])
		require.Equal(t, "1000", info["Maxconn"])

		rows, err := rt.Stat(ctx)
		require.NoError(t, err)
		byName := map[string]StatRow{}
		for _, r := range rows {
			byName[r.Proxy+"/"+r.Name] = r
		}
		fe := byName["tls-8443/FRONTEND"]
		require.Equal(t, TypeFrontend, fe.Type)
		require.Equal(t, "OPEN", fe.Status)
		require.GreaterOrEqual(t, fe.ReqTotal, int64(5))
		require.Greater(t, fe.BytesIn, int64(10<<20))
		require.Greater(t, fe.TotalConns, int64(0))
		require.Equal(t, TypeFrontend, byName["http-8080/FRONTEND"].Type)
		be := byName["s3/BACKEND"]
		require.Equal(t, TypeBackend, be.Type)
		require.Equal(t, "UP", be.Status)

		states := ServerStates(rows)
		require.Len(t, states, len(servers))
		var conns, in, out int64
		for i, s := range states {
			require.Equal(t, servers[i].Name, s.Name)
			require.Equal(t, "s3", s.Backend)
			require.True(t, s.Up, "%+v", s)
			require.Equal(t, 100, s.Weight)
			conns += s.TotalConns
			in += s.BytesIn
			out += s.BytesOut
		}
		require.Zero(t, rec.checks.Load(), "HAProxy checks nothing: ober does")
		require.GreaterOrEqual(t, conns, int64(5))
		require.Greater(t, in, int64(10<<20), "the uploads")
		require.Greater(t, out, int64(0))

		// Admin level: a server can be drained and brought back.
		require.NoError(t, rt.SetServerState(ctx, "s3", "plain4", StateDrain))
		states, err = rt.Servers(ctx)
		require.NoError(t, err)
		for _, s := range states {
			if s.Name == "plain4" {
				require.Equal(t, "DRAIN", s.Status)
				require.False(t, s.Up)
			}
		}
		require.NoError(t, rt.SetServerState(ctx, "s3", "plain4", StateReady))

		_, err = rt.Command(ctx, "no such command")
		require.ErrorContains(t, err, "Unknown command")
	})

	t.Run("logs on stdout", func(t *testing.T) {
		// Failed requests are logged (log-separate-errors raises them to
		// "err"); successful ones stay at "info", below "notice".
		c, err := net.Dial("tcp4", httpAddr)
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = io.WriteString(c, "NOT HTTP AT ALL\r\n\r\n")
		require.NoError(t, err)
		resp, err := io.ReadAll(c)
		require.NoError(t, err)
		c.Close()
		require.Contains(t, string(resp), "400")
		waitFor(t, 5*time.Second, "failures in the log", func() error {
			for _, want := range []string{"<BADREQ>", "SSL handshake failure" /* TLS 1.1 */} {
				if !strings.Contains(out.String(), want) {
					return fmt.Errorf("no %q in %q", want, out.String())
				}
			}
			return nil
		})
		require.NotContains(t, out.String(), "/bucket/", "successful requests are not logged")
	})
}

// TestRealSoftStop shows what ober relies on when it replaces an
// instance: after SIGUSR1 HAProxy stops accepting, hard-stop-after ends
// it once Drain has passed even with a request in flight, and the
// inherited socket, of which ober keeps a copy, is still listening
// afterwards (HAProxy neither closes nor shuts it down for the parent).
func TestRealSoftStop(t *testing.T) { haproxytest.Each(t, testRealSoftStop) }

func testRealSoftStop(t *testing.T, bin string) {
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	be := httptest.NewServer(&recorder{})
	defer be.Close()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	require.NoError(t, err)
	defer f.Close()

	in := baseInstance()
	in.Version = v
	in.CPU = lastCPU(t)
	in.StatsSocket = filepath.Join(dir, "s.sock")
	in.Frontends = []Frontend{{Name: "http-80", Mode: ModeHTTP, Port: 80, Binds: []Bind{{FD: 3, Family: 4}}, Pool: DefaultPool}}
	in.Pools = []Pool{{Name: DefaultPool, Balance: BalanceLeastConn,
		Servers: []Server{{Name: "be", Addr: netip.MustParseAddrPort(be.Listener.Addr().String()), Weight: 1}}}}
	in.Timeouts.Drain = time.Second
	in.MaxConn = 1000 // HAProxy needs about 2*maxconn descriptors
	unprivileged(t, &in, dir)
	cmd, out, exited := startHAProxy(t, bin, writeConfig(t, dir, in), f)
	rt := Runtime{Path: in.StatsSocket, Timeout: time.Second}
	waitReady(t, ctx, rt, exited)

	// A request whose headers never finish keeps HAProxy busy.
	slow, err := net.Dial("tcp4", l.Addr().String())
	require.NoError(t, err)
	defer slow.Close()
	_, err = io.WriteString(slow, "PUT /bucket/slow HTTP/1.1\r\nHost: s3.test\r\n")
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGUSR1))
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("haproxy still running 15s after SIGUSR1 with hard-stop-after 1s\n%s", out)
	}
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, elapsed, 900*time.Millisecond, "exited before the drain time")

	// ober's copy still listens: a replacement instance can take it over.
	ln := l.(*net.TCPListener)
	require.NoError(t, ln.SetDeadline(time.Now().Add(5*time.Second)))
	c, err := net.Dial("tcp4", l.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	accepted, err := ln.Accept()
	require.NoError(t, err)
	accepted.Close()
}

// TestRealSoftStopServesIdleConnection: a client's idle keep-alive
// connection outlives the soft stop of a reload (option
// idle-close-on-response): its next request is served, answered with
// "Connection: close", and only then is the connection closed. Closed at
// once instead, it races a request the client may be sending on it.
func TestRealSoftStopServesIdleConnection(t *testing.T) {
	haproxytest.Each(t, testRealSoftStopServesIdleConnection)
}

func testRealSoftStopServesIdleConnection(t *testing.T, bin string) {
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	be := httptest.NewServer(&recorder{})
	defer be.Close()
	f, addr := listenerFile(t)
	in := baseInstance()
	in.Version = haproxyVersion(t, bin)
	in.CPU = lastCPU(t)
	in.StatsSocket = filepath.Join(dir, "s.sock")
	in.ServedByHeader = false
	in.Frontends = []Frontend{{Name: "http-80", Mode: ModeHTTP, Port: 80, Binds: []Bind{{FD: 3, Family: 4}}, Pool: DefaultPool}}
	in.Pools = []Pool{{Name: DefaultPool, Balance: BalanceLeastConn,
		Servers: []Server{{Name: "be", Addr: netip.MustParseAddrPort(be.Listener.Addr().String()), Weight: 1}}}}
	in.Timeouts.Drain = 10 * time.Second
	in.MaxConn = 1000
	unprivileged(t, &in, dir)
	cmd, out, exited := startHAProxy(t, bin, writeConfig(t, dir, in), f)
	waitReady(t, ctx, Runtime{Path: in.StatsSocket, Timeout: time.Second}, exited)

	c, err := net.Dial("tcp4", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	r := bufio.NewReader(c)
	get := func(id string) *http.Response {
		_, err := fmt.Fprintf(c, "GET /bucket/%s HTTP/1.1\r\nHost: s3.test\r\nX-Test-ID: %s\r\n\r\n", id, id)
		require.NoError(t, err)
		resp, err := http.ReadResponse(r, nil)
		require.NoError(t, err, "haproxy output:\n%s", out)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	first := get("before")
	require.Equal(t, http.StatusOK, first.StatusCode)
	require.False(t, first.Close, "keep-alive before the stop")

	require.NoError(t, cmd.Process.Signal(syscall.SIGUSR1))
	// Long enough for HAProxy to have closed idle connections, were it
	// going to.
	time.Sleep(500 * time.Millisecond)
	select {
	case <-exited:
		t.Fatalf("haproxy exited with an idle client connection open\n%s", out)
	default:
	}
	last := get("after")
	require.Equal(t, http.StatusOK, last.StatusCode)
	require.True(t, last.Close, "the answer after the stop says Connection: close")
	_, err = r.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the connection is closed after that answer")
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("haproxy still running 5s after its last connection closed\n%s", out)
	}
}

// TestRealH2ConnectionRenewed: on 3.0 an HTTP/2 client connection is sent
// a graceful GOAWAY after h2TotalStreams requests and the client goes on
// over a new one (which Maglev may place elsewhere), with no request
// lost; on 2.6, which has no such limit, the connection carries them all.
func TestRealH2ConnectionRenewed(t *testing.T) {
	haproxytest.Each(t, testRealH2ConnectionRenewed)
}

func testRealH2ConnectionRenewed(t *testing.T, bin string) {
	dir := shortTempDir(t)
	cert := newTestCert(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	addr, in, out := startTLSInstance(t, ctx, bin, dir, cert)

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool, ServerName: "localhost"}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var conns atomic.Int64
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			conns.Add(1)
		}
	}}
	const requests = h2TotalStreams + 200
	jobs := make(chan int)
	errs := make(chan error, requests)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", "https://"+addr+"/bucket/key", nil)
				if err != nil {
					errs <- err
					continue
				}
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("%s %s", resp.Proto, resp.Status)
				}
			}
		}()
	}
	for i := range requests {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err, "haproxy output:\n%s", out)
	}
	if FeaturesFor(in.Version).H2MaxTotalStreams {
		require.GreaterOrEqual(t, conns.Load(), int64(2), "a new connection after %d requests", h2TotalStreams)
	} else {
		require.Equal(t, int64(1), conns.Load(), "one connection carries every request")
	}
}
