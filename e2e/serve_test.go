package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/signer"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
	"github.com/ober-ingress/ober/loader"
)

// payload returns n deterministic pseudo-random bytes.
func payload(n int64, seed uint64) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestServeS3 sends S3 traffic over HTTPS to the VIP through XDP, an
// instance's HAProxy and on to the signature-checking S3 server: objects
// of every size arrive byte-exact and every signature still verifies, so
// nothing on the way changed Host, Authorization or the bodies.
func TestServeS3(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true}))
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	mc := s.S3Client(nodetest.VIP.String())
	require.NoError(t, mc.MakeBucket(ctx, "objects", minio.MakeBucketOptions{}))
	for i, size := range []int64{0, 1, 64 << 10, 5<<20 + 3, 256 << 20} {
		data := payload(size, uint64(i))
		want := sha256.Sum256(data)
		key := fmt.Sprintf("obj-%d", size)
		_, err := mc.PutObject(ctx, "objects", key, bytes.NewReader(data), size, minio.PutObjectOptions{})
		require.NoError(t, err, "put %d bytes", size)
		stored, ok := s.S3.Object("objects", key)
		require.True(t, ok)
		require.Equal(t, want, sha256.Sum256(stored), "stored object of %d bytes", size)

		obj, err := mc.GetObject(ctx, "objects", key, minio.GetObjectOptions{})
		require.NoError(t, err)
		h := sha256.New()
		n, err := io.Copy(h, obj)
		obj.Close()
		require.NoError(t, err, "get %d bytes", size)
		require.Equal(t, size, n)
		require.Equal(t, want[:], h.Sum(nil), "object of %d bytes read back", size)
	}
	// Unknown size: the client streams (multipart for large objects).
	data := payload(24<<20+7, 99)
	_, err := mc.PutObject(ctx, "objects", "streamed", bytes.NewReader(data), -1, minio.PutObjectOptions{PartSize: 8 << 20})
	require.NoError(t, err)
	stored, ok := s.S3.Object("objects", "streamed")
	require.True(t, ok)
	require.Equal(t, sha256.Sum256(data), sha256.Sum256(stored))

	// A chunked upload that waits for 100-continue, signed by hand.
	chunked := payload(3<<20+11, 7)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "https://"+nodetest.VIP.String()+"/objects/chunked",
		io.NopCloser(bytes.NewReader(chunked)))
	require.NoError(t, err)
	req.ContentLength = -1
	req.Header.Set("Expect", "100-continue")
	req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	req = signer.SignV4(*req, nodetest.AccessKey, nodetest.SecretKey, "", "us-east-1")
	// Forged after signing, as a client would (clients never sign it):
	// the node replaces it with the real address.
	req.Header.Set("X-Forwarded-For", "192.0.2.66")
	tr := s.HTTPClient().Transport.(*http.Transport)
	tr.ExpectContinueTimeout = 5 * time.Second
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	stored, ok = s.S3.Object("objects", "chunked")
	require.True(t, ok)
	require.Equal(t, sha256.Sum256(chunked), sha256.Sum256(stored))

	require.Zero(t, s.S3.AuthFailures(), "a signature failed: the ingress changed a signed part of a request")
	var sawChunked bool
	for _, r := range s.S3.Requests() {
		if r.Op == "Anonymous" { // HAProxy's health checks
			continue
		}
		require.True(t, r.AuthOK, "%s %s: %s", r.Method, r.Path, r.AuthError)
		require.Equal(t, "https", r.Header.Get("X-Forwarded-Proto"), "%s %s", r.Method, r.Path)
		require.Equal(t, nodetest.ClientAddr.String(), r.Header.Get("X-Forwarded-For"), "%s %s", r.Method, r.Path)
		if r.Path == "/objects/chunked" {
			sawChunked = true
			require.True(t, r.Chunked, "the upload arrived chunked")
			require.True(t, r.Expect100, "Expect: 100-continue arrived")
		}
	}
	require.True(t, sawChunked)

	// ALPN offers h2 to clients that speak it.
	c, err := s.ClientDialer().DialContext(ctx, "tcp", nodetest.VIP.String()+":443")
	require.NoError(t, err)
	tc := tls.Client(c, &tls.Config{RootCAs: s.CertPool(), ServerName: nodetest.VIP.String(), NextProtos: []string{"h2", "http/1.1"}})
	require.NoError(t, tc.HandshakeContext(ctx))
	require.Equal(t, "h2", tc.ConnectionState().NegotiatedProtocol)
	tc.Close()

	// The whitelisted client reaches the plain-HTTP service.
	hc := &http.Client{Transport: &http.Transport{DialContext: s.ClientDialer().DialContext}}
	resp, err = hc.Get("http://" + nodetest.VIP.String() + "/objects/obj-1")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "anonymous GET answered by the S3 server")

	st := s.Status()
	require.True(t, st.Daemon.Health.OK)
	require.Len(t, st.Daemon.HAProxy.Instances, 2)
	for _, in := range st.Daemon.HAProxy.Instances {
		require.Equal(t, "healthy", string(in.State))
		require.Equal(t, []int{in.CPU}, cpusOf(t, in.PID), "instance %d runs on its CPU only", in.Index)
	}
	require.Len(t, st.Daemon.Backends, 1)
	require.True(t, st.Daemon.Backends[0].Up)
	// The CLI reads the same from the daemon.
	res := ober(t, s.Node, 0, "--config", s.ConfigPath, "status")
	for _, want := range []string{`node\s+node1 \(ober ` + testVersion, `health\s+ok`, `\n0\s+0\s+\d+\s+healthy`,
		`\n1\s+1\s+\d+\s+healthy`, `s3a\s+10\.98\.2\.1:9000\s+up\s+2/2 instances`, `10\.98\.0\.100:443/tcp`} {
		require.Regexp(t, want, res.stdout)
	}
	res = ober(t, s.Node, 0, "--config", s.ConfigPath, "status", "--json")
	var js api.Status
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &js))
	require.NotNil(t, js.Daemon)
	require.Equal(t, "node1", js.Daemon.Node)
	require.Len(t, js.Services, 2)

	m := s.Metrics()
	for _, want := range []string{
		`ober_instance_up{cpu="0",instance="0"} 1`,
		`ober_backend_up{address="10.98.2.1:9000",backend="s3a"} 1`,
		`ober_dataplane_packets_total{action="redirect",reason="steered"}`,
		`ober_whitelist_entries{list="frontend-http"} 1`,
		`ober_healthy 1`,
	} {
		require.Contains(t, m, want)
	}
}

// cpusOf reads a process's allowed CPUs.
func cpusOf(t *testing.T, pid int) []int {
	t.Helper()
	var set unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(pid, &set))
	var cpus []int
	for i := range 1024 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

// attempt is one connection of a load run.
type attempt struct {
	start, end time.Time
	port       uint16
	instance   int // from X-Served-By, -1 when failed
	err        error
}

// fetchServedBy makes one HTTPS request on a new connection from a fixed
// source port and returns the instance that served it.
func fetchServedBy(ctx context.Context, s *nodetest.Site, port uint16) (int, error) {
	var local *net.TCPAddr
	if port != 0 {
		local = &net.TCPAddr{IP: nodetest.ClientAddr.AsSlice(), Port: int(port)}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := s.ClientDialer().DialFrom(ctx, "tcp4", nodetest.VIP.String()+":443", local)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	tc := tls.Client(c, s.TLSConfig())
	if _, err := fmt.Fprintf(tc, "GET /objects/probe HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", nodetest.VIP); err != nil {
		return -1, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return -1, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	sb := resp.Header.Get("X-Served-By")
	_, idx, ok := strings.Cut(sb, "/")
	if !ok {
		return -1, fmt.Errorf("no X-Served-By header (status %s)", resp.Status)
	}
	return strconv.Atoi(idx)
}

// loadNew runs workers making new connections until stop is closed or the
// bounds are hit.
func loadNew(ctx context.Context, s *nodetest.Site, workers int, stop <-chan struct{}) []attempt {
	return repeat(workers, 50000, stop, func(w, i int) attempt {
		// Each worker owns a band of source ports, so the flow (and
		// its Maglev prediction) of every attempt is known.
		port := uint16(20000 + w*2000 + i%2000)
		a := attempt{start: time.Now(), port: port}
		a.instance, a.err = fetchServedBy(ctx, s, port)
		a.end = time.Now()
		return a
	})
}

// repeat runs workers, each calling try (with its number and a count)
// until stop is closed, a minute has passed or max results are in.
func repeat[T any](workers, max int, stop <-chan struct{}, try func(worker, i int) T) []T {
	var mu sync.Mutex
	var out []T
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Minute)
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				n := len(out)
				mu.Unlock()
				if n >= max || time.Now().After(deadline) {
					return
				}
				r := try(w, i)
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

func model(t *testing.T, s *nodetest.Site) *loader.Model {
	t.Helper()
	d, err := loader.Open(loader.Options{Root: s.Root, MapsOnly: true})
	require.NoError(t, err)
	defer d.Close()
	snap, err := d.Snapshot()
	require.NoError(t, err)
	return loader.NewModel(snap)
}

func tuple(port uint16) loader.SkTuple {
	return loader.SkTuple{Proto: loader.ProtoTCP,
		Remote: netip.AddrPortFrom(nodetest.ClientAddr, port), Local: netip.AddrPortFrom(nodetest.VIP, 443)}
}

// TestServeMaglevPrediction: every connection is served by the instance
// the Maglev model predicts from the pinned tables, with XDP steering
// (packets redirected to the instance's CPU) and without it (sk_lookup
// alone dispatches; nothing is redirected).
func TestServeMaglevPrediction(t *testing.T) {
	for _, steering := range []bool{true, false} {
		t.Run(fmt.Sprintf("steering=%v", steering), func(t *testing.T) { testMaglevPrediction(t, steering) })
	}
}

func testMaglevPrediction(t *testing.T, steering bool) {
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true, NoSteering: !steering}))
	s.Start()
	m := model(t, s)
	require.Equal(t, steering, s.Status().Steering, "the dataplane's steering flag")
	seen := map[int]int{}
	for port := uint16(30000); port < 30080; port++ {
		got, err := fetchServedBy(context.Background(), s, port)
		require.NoError(t, err)
		want := int(m.PreferredInstance(tuple(port)))
		require.Equal(t, want, got, "source port %d", port)
		seen[got]++
	}
	require.Len(t, seen, 2, "both instances served: %v", seen)
	st := s.Status()
	var flows uint64
	for _, a := range st.Counters.Assigned {
		flows += a.Flows
		require.Zero(t, a.Fallback)
	}
	require.GreaterOrEqual(t, flows, uint64(80))
	var steered uint64
	for _, c := range st.Counters.Steered {
		steered += c.Packets
	}
	if steering {
		require.NotZero(t, steered, "steering on: packets go through the cpumap")
	} else {
		require.Zero(t, steered, "steering off: no packet is redirected")
	}
}

// TestServeInstanceKilled kills one instance under load: only flows of
// that instance fail, new connections succeed again within 100 ms, and
// the instance comes back on its CPU.
func TestServeInstanceKilled(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true}))
	s.Start()
	m := model(t, s)
	before := s.Status().Daemon.HAProxy.Instances
	victim := before[1]

	stop := make(chan struct{})
	var res []attempt
	done := make(chan struct{})
	go func() { res = loadNew(context.Background(), s, 6, stop); close(done) }()
	time.Sleep(time.Second)
	killed := time.Now()
	require.NoError(t, syscall.Kill(victim.PID, syscall.SIGKILL))
	time.Sleep(2 * time.Second)
	close(stop)
	<-done

	var failed, afterKill, servedAfter int
	for _, a := range res {
		pref := int(m.PreferredInstance(tuple(a.port)))
		if a.err != nil {
			failed++
			require.Equal(t, victim.Index, pref, "a flow of instance %d failed: %v", pref, a.err)
			require.True(t, a.start.Before(killed.Add(100*time.Millisecond)),
				"connection started %v after the kill failed: %v", a.start.Sub(killed), a.err)
			continue
		}
		if a.start.After(killed.Add(100 * time.Millisecond)) {
			afterKill++
			if pref == victim.Index {
				servedAfter++
			}
		}
	}
	t.Logf("%d attempts, %d failed (all on instance %d around the kill), %d after the kill", len(res), failed, victim.Index, afterKill)
	require.NotZero(t, servedAfter, "flows of the killed instance were served by the others")

	require.Eventually(t, func() bool {
		for _, in := range s.Status().Daemon.HAProxy.Instances {
			if in.Index == victim.Index {
				return in.State == "healthy" && in.PID != victim.PID && in.Restarts == 1
			}
		}
		return false
	}, 15*time.Second, 50*time.Millisecond, "the killed instance came back")
	now := s.Status().Daemon.HAProxy.Instances
	require.Equal(t, before[0].PID, now[0].PID, "the other instance was not touched")
	require.Equal(t, []int{victim.CPU}, cpusOf(t, now[1].PID))
	m = model(t, s)
	for port := uint16(40000); port < 40040; port++ {
		got, err := fetchServedBy(context.Background(), s, port)
		require.NoError(t, err)
		require.Equal(t, int(m.PreferredInstance(tuple(port))), got)
	}
	require.Contains(t, s.Metrics(), fmt.Sprintf(`ober_instance_restarts_total{instance="%d"} 1`, victim.Index))
}

// TestServeReload reloads under load: no request fails, the instances are
// replaced; then a broken configuration is refused and the running one
// keeps serving.
func TestServeReload(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	first := s.Config(nodetest.Params{ServedByHeader: true})
	// Tickets off, then on (the default) after the reload: the reload
	// must give its instances the keys they load.
	first.TLS.SessionTickets.Enabled = new(false)
	s.WriteConfig(first)
	s.Start()
	before := s.Status().Daemon.HAProxy.Instances
	resumeAcrossInstances(t, s, false)

	stop := make(chan struct{})
	var res []attempt
	done := make(chan struct{})
	go func() { res = loadNew(context.Background(), s, 6, stop); close(done) }()
	time.Sleep(time.Second)
	// The new configuration changes the checks and adds a service, so
	// the listeners, the service table and the instances all change.
	reloaded := nodetest.Params{ServedByHeader: true, HealthInterval: 300 * time.Millisecond,
		ExtraServices: []config.Service{{Name: "https-alt", Port: 8443, Mode: config.ModeTLS, TLS: &config.TLS{SelfSigned: true}}}}
	s.WriteConfig(s.Config(reloaded))
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.Generation == 2 }, 15*time.Second, 20*time.Millisecond,
		"reload applied\n%s", s.Log())
	time.Sleep(2 * time.Second)
	close(stop)
	<-done
	var failed []string
	for _, a := range res {
		if a.err != nil {
			failed = append(failed, fmt.Sprintf("port %d at %s: %v", a.port, a.start.Format("15:04:05.000"), a.err))
		}
	}
	require.Empty(t, failed, "requests failed across the reload (of %d)", len(res))
	t.Logf("%d requests across the reload, none failed", len(res))
	st := s.Status()
	require.Equal(t, uint64(1), st.Daemon.HAProxy.Reloads)
	for i, in := range st.Daemon.HAProxy.Instances {
		require.NotEqual(t, before[i].PID, in.PID, "instance %d replaced", i)
	}
	require.Len(t, st.Services, 3)
	c, err := s.ClientDialer().DialContext(context.Background(), "tcp4", nodetest.VIP.String()+":8443")
	require.NoError(t, err)
	tc := tls.Client(c, s.TLSConfig())
	require.NoError(t, tc.Handshake(), "the added service answers")
	tc.Close()
	resumeAcrossInstances(t, s, true)
	require.NotNil(t, st.Daemon.HAProxy.SessionTickets, "status shows the keys' epoch once tickets are on")
	require.False(t, st.Daemon.HAProxy.SessionTickets.Shared, "without key_file, the node's own seed")

	// A broken configuration: refused, and everything stays as it was.
	s.WriteConfigText(nodetest.YAML(t, s.Config(reloaded)) + "bogus_key: 1\n")
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.ReloadFailures == 1 }, 10*time.Second, 20*time.Millisecond)
	after := s.Status()
	require.Contains(t, after.Daemon.Config.LastReloadError, "bogus_key")
	require.Equal(t, uint64(2), after.Daemon.Config.Generation)
	for i, in := range after.Daemon.HAProxy.Instances {
		require.Equal(t, st.Daemon.HAProxy.Instances[i].PID, in.PID)
	}
	_, err = fetchServedBy(context.Background(), s, 0)
	require.NoError(t, err)
	require.Contains(t, s.Metrics(), "ober_reload_failures_total 1")
}

// TestServeStopDrains: SIGTERM lets a download in flight finish, turns
// /health to 503 while draining, refuses new connections, and leaves no
// HAProxy process behind.
func TestServeStopDrains(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	// HAProxy 2.6 keeps an idle keep-alive client connection through a
	// soft stop, so the drain runs its full time; keep it short.
	s.WriteConfig(s.Config(nodetest.Params{Drain: 6 * time.Second}))
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mc := s.S3Client(nodetest.VIP.String())
	require.NoError(t, mc.MakeBucket(ctx, "drain", minio.MakeBucketOptions{}))
	data := payload(48<<20, 3)
	_, err := mc.PutObject(ctx, "drain", "big", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	require.NoError(t, err)
	pids := []int{}
	for _, in := range s.Status().Daemon.HAProxy.Instances {
		pids = append(pids, in.PID)
	}

	obj, err := mc.GetObject(ctx, "drain", "big", minio.GetObjectOptions{})
	require.NoError(t, err)
	h := sha256.New()
	_, err = io.CopyN(h, obj, 1<<20)
	require.NoError(t, err)

	s.Signal(syscall.SIGTERM)
	require.Eventually(t, func() bool {
		code, body, err := s.Health()
		return err == nil && code == http.StatusServiceUnavailable && strings.HasPrefix(body, "stopping")
	}, 5*time.Second, 20*time.Millisecond, "/health says stopping while draining")
	_, err = fetchServedBy(ctx, s, 0)
	require.Error(t, err, "a new connection while draining is refused")

	// The download in flight finishes, slowly, while the node drains.
	buf := make([]byte, 4<<20)
	for {
		n, err := obj.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
	}
	obj.Close()
	want := sha256.Sum256(data)
	require.Equal(t, want[:], h.Sum(nil), "the download in flight completed byte-exact")

	code, err := s.Wait(30 * time.Second)
	require.NoError(t, err)
	require.Zero(t, code, "ober exits 0 after a drain\n%s", s.Log())
	for _, pid := range pids {
		require.False(t, alive(pid), "HAProxy %d is gone", pid)
	}
}

// TestServeOberKilled: ober dies with SIGKILL; its instances keep serving
// from the pinned sockmap, and the next ober takes over without a failed
// request and retires them.
func TestServeOberKilled(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true, Drain: 2 * time.Second}))
	s.Start()
	var old []int
	for _, in := range s.Status().Daemon.HAProxy.Instances {
		old = append(old, in.PID)
	}
	s.Kill()
	for port := uint16(31000); port < 31020; port++ {
		_, err := fetchServedBy(context.Background(), s, port)
		require.NoError(t, err, "served while ober is down")
	}

	stop := make(chan struct{})
	var res []attempt
	done := make(chan struct{})
	go func() { res = loadNew(context.Background(), s, 4, stop); close(done) }()
	time.Sleep(300 * time.Millisecond)
	s.Start()
	time.Sleep(time.Second)
	close(stop)
	<-done
	for _, a := range res {
		require.NoError(t, a.err, "port %d at %s", a.port, a.start.Format("15:04:05.000"))
	}
	t.Logf("%d requests across the takeover, none failed", len(res))
	for _, in := range s.Status().Daemon.HAProxy.Instances {
		require.NotContains(t, old, in.PID)
	}
	require.Eventually(t, func() bool {
		for _, pid := range old {
			if alive(pid) {
				return false
			}
		}
		return true
	}, 20*time.Second, 100*time.Millisecond, "the old instances were retired")
}

// alive reports whether pid runs; a zombie (an orphan its new parent has
// not reaped yet) has ended.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(rest, "Z")
}

// TestServeInstanceHung: an instance that stops answering (SIGSTOP) is
// killed after three missed probes and replaced on its CPU.
func TestServeInstanceHung(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true}))
	s.Start()
	victim := s.Status().Daemon.HAProxy.Instances[1]
	require.NoError(t, syscall.Kill(victim.PID, syscall.SIGSTOP))
	t.Cleanup(func() { syscall.Kill(victim.PID, syscall.SIGCONT) })
	require.Eventually(t, func() bool {
		in := s.Status().Daemon.HAProxy.Instances[1]
		return in.State == "healthy" && in.PID != victim.PID && in.Restarts == 1
	}, 20*time.Second, 100*time.Millisecond, "the hung instance was replaced\n%s", s.Log())
	require.False(t, alive(victim.PID))
	require.Contains(t, s.Log(), "instance does not answer; killing it")
	_, err := fetchServedBy(context.Background(), s, 0)
	require.NoError(t, err)
}
