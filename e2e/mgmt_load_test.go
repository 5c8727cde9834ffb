package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// mlBackend listens on addr inside ns. Every connection is told name
// first; then a line "dl N" makes it send N bytes of nodetest.Bytes at
// about 100 KiB/s (a long download), anything else ends it.
func mlBackend(t *testing.T, ns *netnstest.NS, addr netip.AddrPort, name string) {
	t.Helper()
	var ln net.Listener
	require.NoError(t, ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}), "listen on %s", addr)
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				var n int
				if err != nil || func() bool { _, e := fmt.Sscanf(line, "dl %d", &n); return e != nil }() {
					return
				}
				const chunk = 10 << 10
				for off := 0; off < n; off += chunk {
					k := min(chunk, n-off)
					b := make([]byte, k)
					for i := range b {
						b[i] = nodetest.PatternByte(off + i)
					}
					if _, err := c.Write(b); err != nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// mlHit makes one connection to addr (from the client address from,
// when valid) and returns the backend's name.
func mlHit(ctx context.Context, s *nodetest.Site, addr string, from netip.Addr) (string, error) {
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var local *net.TCPAddr
	if from.IsValid() {
		local = &net.TCPAddr{IP: from.AsSlice()}
	}
	c, err := s.ClientDialer().DialFrom(dctx, "tcp", addr, local)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read the backend's name: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// mlDlResult is how a download ended.
type mlDlResult struct {
	data []byte
	err  error
	took time.Duration
}

// mlDownload opens a connection to addr that reaches the backend want
// (any when empty) and asks it for size bytes, read in the background.
func mlDownload(t *testing.T, s *nodetest.Site, addr, want string, size int) (string, <-chan mlDlResult) {
	t.Helper()
	var conn net.Conn
	var rd *bufio.Reader
	var name string
	for range 60 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := s.ClientDialer().DialContext(ctx, "tcp", addr)
		cancel()
		require.NoError(t, err)
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		if name = strings.TrimSpace(line); want == "" || name == want {
			conn, rd = c, r
			break
		}
		c.Close()
	}
	require.NotNil(t, conn, "no connection reached %s in 60 tries", want)
	t.Cleanup(func() { conn.Close() })
	_, err := fmt.Fprintf(conn, "dl %d\n", size)
	require.NoError(t, err)
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	done := make(chan mlDlResult, 1)
	start := time.Now()
	go func() {
		b := make([]byte, size)
		_, err := io.ReadFull(rd, b)
		if err == nil {
			// Then the end: nothing more.
			var one [1]byte
			if n, e := rd.Read(one[:]); n != 0 || e != io.EOF {
				err = fmt.Errorf("after %d bytes: %d more, %v", size, n, e)
			}
		}
		done <- mlDlResult{b, err, time.Since(start)}
	}()
	return name, done
}

// mlDownloaded waits for a download and checks that it arrived whole;
// it returns how long it took.
func mlDownloaded(t *testing.T, what string, done <-chan mlDlResult, size int) time.Duration {
	t.Helper()
	var r mlDlResult
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not end within a minute", what)
	}
	require.NoError(t, r.err, what)
	require.True(t, bytes.Equal(nodetest.Bytes(size), r.data), "%s arrived intact", what)
	t.Logf("%s: %d bytes in %v, intact", what, size, r.took.Round(time.Millisecond))
	return r.took
}

// mlSample is one request of the load.
type mlSample struct {
	start time.Time
	took  time.Duration
	name  string
	err   error
}

// mlLoad makes requests on new connections, workers at a time (each
// from its own client address, so that no address runs out of ports in
// TIME_WAIT), until stopped.
type mlLoad struct {
	mu      sync.Mutex
	samples []mlSample
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

func mlStartLoad(s *nodetest.Site, addr string, workers int) *mlLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &mlLoad{cancel: cancel}
	for i := range workers {
		from := s.ClientIP(i)
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for ctx.Err() == nil {
				start := time.Now()
				name, err := mlHit(ctx, s, addr, from)
				if ctx.Err() != nil {
					return
				}
				l.mu.Lock()
				l.samples = append(l.samples, mlSample{start: start, took: time.Since(start), name: name, err: err})
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *mlLoad) stop() []mlSample {
	l.cancel()
	l.done.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.samples
}

// window is the samples that started in [from, to).
func (l *mlLoad) window(from, to time.Time) []mlSample {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []mlSample
	for _, x := range l.samples {
		if !x.start.Before(from) && x.start.Before(to) {
			out = append(out, x)
		}
	}
	return out
}

// mlShares checks the share of each backend among samples (every one of
// which must have succeeded) against want, within tol; a backend want
// lacks must have none.
func mlShares(t *testing.T, what string, samples []mlSample, want map[string]float64, tol float64) {
	t.Helper()
	require.GreaterOrEqual(t, len(samples), 100, "%s: enough requests to measure", what)
	counts := map[string]int{}
	var slowest time.Duration
	for _, x := range samples {
		slowest = max(slowest, x.took)
		require.NoError(t, x.err, "%s: request at %s", what, x.start.Format("15:04:05.000"))
		counts[x.name]++
	}
	got := map[string]float64{}
	for k, n := range counts {
		got[k] = float64(n) / float64(len(samples))
	}
	t.Logf("%s: %d requests: %v; slowest %v", what, len(samples), counts, slowest.Round(time.Millisecond))
	for k := range counts {
		_, ok := want[k]
		require.True(t, ok, "%s: %s got %d of %d new connections; want none", what, k, counts[k], len(samples))
	}
	for k, w := range want {
		require.InDelta(t, w, got[k], tol, "%s: share of %s (counts %v)", what, k, counts)
	}
}

// mlWrite makes a write that must succeed with the status want, and
// says how it was applied.
func mlWrite(t *testing.T, c *mgmtClient, want int, method, path, body string) map[string]any {
	t.Helper()
	code, out := c.do(method, path, body)
	require.Equal(t, want, code, "%s %s: %v", method, path, out)
	return out
}

func mlSvcBody(port uint16, extra string, backends ...string) string {
	return fmt.Sprintf(`{"mode": "tcp", "port": %d, "balance": "weighted", "slowstart": "0s",
		"health": {"kind": "tcp", "interval": "200ms"}%s, "backends": [%s]}`, port, extra, strings.Join(backends, ", "))
}

func mlBackendBody(name string, addr netip.AddrPort, extra string) string {
	return fmt.Sprintf(`{"name": %q, "address": %q%s}`, name, addr.String(), extra)
}

func mlAPI(t *testing.T, c *config.Config) *mgmtClient {
	return newMgmtClient(t, filepath.Join(c.Node.RuntimeDir, config.DefaultAPISocketName))
}

// TestMgmtUnderLoad: a service's whole life through the API while a
// client makes requests on new connections the whole time. No request
// fails but those to the deleted service, new connections follow every
// change within a second, and a download in flight on a drained backend
// completes intact.
func TestMgmtUnderLoad(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	addrs := make([]netip.AddrPort, 4)
	for i := range addrs {
		addrs[i] = netip.AddrPortFrom(s.BackendIP(i), 9300)
		mlBackend(t, s.Backend(), addrs[i], fmt.Sprintf("b%d", i))
	}
	// Old instances finish their transfers for up to 10 s after a
	// reload: more than the download across one takes.
	c := s.Config(nodetest.Params{Drain: 10 * time.Second})
	s.WriteConfig(c)
	s.Start()
	mc := mlAPI(t, c)
	const port = 7810
	vip := netip.AddrPortFrom(nodetest.VIP, port).String()
	const svc = "/api/v1/services/ml"

	out := mlWrite(t, mc, http.StatusOK, "PUT", svc, mlSvcBody(port, "", mlBackendBody("b0", addrs[0], "")))
	require.Equal(t, "reload", out["applied"])
	load := mlStartLoad(s, vip, 4)
	var loadStopped bool
	t.Cleanup(func() {
		if !loadStopped {
			load.stop()
		}
	})

	// step makes a change, then measures the share of new connections
	// from 1 s after its answer for 2 s.
	step := func(what, method, path, body, applied string, want map[string]float64) time.Time {
		t.Helper()
		gen := s.Status().Daemon.HAProxy.Generation
		out := mlWrite(t, mc, http.StatusOK, method, path, body)
		acked := time.Now()
		require.Equal(t, applied, out["applied"], "%s: %v", what, out)
		if renewed := s.Status().Daemon.HAProxy.Generation != gen; applied == "reload" {
			require.True(t, renewed, "%s: a reload renews the instances", what)
		} else {
			require.False(t, renewed, "%s: through the runtime API, no instance renewed", what)
		}
		from, to := acked.Add(time.Second), acked.Add(3*time.Second)
		time.Sleep(time.Until(to))
		mlShares(t, what, load.window(from, to), want, 0.08)
		return acked
	}
	step("b1 added", "PUT", svc+"/backends/b1", mlBackendBody("b1", addrs[1], ""), "reload",
		map[string]float64{"b0": 0.5, "b1": 0.5})
	step("b2 added", "PUT", svc+"/backends/b2", mlBackendBody("b2", addrs[2], ""), "reload",
		map[string]float64{"b0": 1. / 3, "b1": 1. / 3, "b2": 1. / 3})
	step("weights 50/50/150", "PATCH", svc, `{"backends": [{"name": "b0", "address": "`+addrs[0].String()+`", "weight": 50},
		{"name": "b1", "address": "`+addrs[1].String()+`", "weight": 50}, {"name": "b2", "address": "`+addrs[2].String()+`", "weight": 150}]}`,
		"runtime", map[string]float64{"b0": 0.2, "b1": 0.2, "b2": 0.6})

	// A long download on b1, then b1 drained.
	const size = 3 << 20 // about 30 s at 100 KiB/s
	_, long := mlDownload(t, s, vip, "b1", size)
	step("b1 drained", "POST", svc+"/backends/b1/drain", "", "runtime",
		map[string]float64{"b0": 0.25, "b2": 0.75})
	require.Eventually(t, func() bool {
		for _, sv := range s.Status().Daemon.Services {
			for _, b := range sv.Backends {
				if sv.Name == "ml" && b.Name == "b1" {
					return b.Admin == config.StateDrain && b.State == "drain" && b.Connections == 1
				}
			}
		}
		return false
	}, 5*time.Second, 100*time.Millisecond, "b1 drains with the download open on it")
	took := mlDownloaded(t, "the download on the drained b1", long, size)
	require.Greater(t, took, 25*time.Second, "the download lasted about 30 s")

	step("b1 removed", "DELETE", svc+"/backends/b1", "", "reload",
		map[string]float64{"b0": 0.25, "b2": 0.75})
	// A download in flight across a reload: the old instances finish
	// it while the new ones take the new connections.
	on, mid := mlDownload(t, s, vip, "", 500<<10) // about 5 s
	step("b3 added", "PUT", svc+"/backends/b3", mlBackendBody("b3", addrs[3], ""), "reload",
		map[string]float64{"b0": 1. / 6, "b2": 0.5, "b3": 1. / 3})
	mlDownloaded(t, "a download on "+on+" across the reload", mid, 500<<10)

	sent := time.Now()
	out = mlWrite(t, mc, http.StatusOK, "DELETE", svc, "")
	require.Equal(t, "reload", out["applied"])
	acked := time.Now()
	time.Sleep(2 * time.Second)
	samples := load.stop()
	loadStopped = true

	var ok, before, intended, afterOK int
	var failed []string
	for _, x := range samples {
		switch {
		case x.start.Before(sent):
			before++
			if x.err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", x.start.Format("15:04:05.000"), x.err))
			} else {
				ok++
			}
		case x.start.After(acked.Add(time.Second)):
			if x.err == nil {
				afterOK++
			}
		default:
			intended++
		}
	}
	require.Empty(t, failed, "requests failed before the service was deleted (of %d)", before)
	require.Zero(t, afterOK, "requests served more than 1 s after the service was deleted")
	t.Logf("%d requests before the delete, none failed; %d during it", before, intended)
	_, err := mgmtDial(t, s, port)
	require.Error(t, err, "the deleted service no longer answers")
	code, _ := mc.do("GET", svc, "")
	require.Equal(t, http.StatusNotFound, code)
}

// mlSnapshot is what the API says of every service and backend, and
// where the pool put its services.
type mlSnapshot struct {
	services map[string]map[string]any
	backends map[string]map[string]any
	pools    string
}

func mlTake(t *testing.T, c *mgmtClient) mlSnapshot {
	t.Helper()
	code, out := c.do("GET", "/api/v1/services", "")
	require.Equal(t, http.StatusOK, code, "%v", out)
	snap := mlSnapshot{services: map[string]map[string]any{}, backends: map[string]map[string]any{}}
	list, _ := out["services"].([]any)
	for _, x := range list {
		m := x.(map[string]any)
		name := m["name"].(string)
		snap.services[name] = m
		bs, _ := m["backends"].([]any)
		for _, b := range bs {
			bn := b.(map[string]any)["name"].(string)
			code, bo := c.do("GET", "/api/v1/services/"+name+"/backends/"+bn, "")
			require.Equal(t, http.StatusOK, code, "%v", bo)
			snap.backends[name+"/"+bn] = bo
		}
	}
	code, out = c.do("GET", "/api/v1/pools", "")
	require.Equal(t, http.StatusOK, code, "%v", out)
	var allocs []string
	for _, p := range out["pools"].([]any) {
		pm := p.(map[string]any)
		a, _ := pm["allocations"].(map[string]any)
		for k, v := range a {
			allocs = append(allocs, fmt.Sprintf("%s:%s=%v", pm["name"], k, v))
		}
	}
	sort.Strings(allocs)
	snap.pools = strings.Join(allocs, ",")
	return snap
}

// mlSame checks that after holds every object of before, unchanged,
// with the same generation or a higher one.
func mlSame(t *testing.T, what string, before, after mlSnapshot) {
	t.Helper()
	cmp := func(kind string, b, a map[string]map[string]any) {
		require.Equal(t, len(b), len(a), "%s: number of %s", what, kind)
		for k, bo := range b {
			ao, ok := a[k]
			require.True(t, ok, "%s: %s %s is gone", what, kind, k)
			bg, ag := bo["generation"].(float64), ao["generation"].(float64)
			require.GreaterOrEqual(t, ag, bg, "%s: %s %s's generation", what, kind, k)
			strip := func(m map[string]any) map[string]any {
				o := map[string]any{}
				for k, v := range m {
					if k != "generation" {
						o[k] = v
					}
				}
				return o
			}
			require.Equal(t, strip(bo), strip(ao), "%s: %s %s", what, kind, k)
		}
	}
	cmp("services", before.services, after.services)
	cmp("backends", before.backends, after.backends)
	require.Equal(t, before.pools, after.pools, "%s: the pool's allocations", what)
}

// TestMgmtRestartKeepsEverything: services, backends, weights, admin
// states and a pool's address made through the API are all there after
// a restart handover and after ober is killed and started again, and
// traffic goes where it went.
func TestMgmtRestartKeepsEverything(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	addrs := make([]netip.AddrPort, 5)
	for i := range addrs {
		addrs[i] = netip.AddrPortFrom(s.BackendIP(i), 9300)
		mlBackend(t, s.Backend(), addrs[i], []string{"k0", "k1", "k2", "k3", "p0"}[i])
	}
	c := s.Config(nodetest.Params{})
	c.VIPPools = []config.VIPPool{{Name: "p", Addresses: []string{"10.98.0.200-10.98.0.202"}}}
	s.WriteConfig(c)
	s.Start()
	s.Client.IP(t, "route", "add", "10.98.0.200/30", "via", "10.98.1.254")
	mc := mlAPI(t, c)

	mlWrite(t, mc, http.StatusOK, "PUT", "/api/v1/services/ka", mlSvcBody(7830, "",
		mlBackendBody("k0", addrs[0], `, "weight": 50`), mlBackendBody("k1", addrs[1], `, "weight": 150`)))
	mlWrite(t, mc, http.StatusOK, "PUT", "/api/v1/services/ka/backends/k2", mlBackendBody("k2", addrs[2], ""))
	mlWrite(t, mc, http.StatusOK, "PUT", "/api/v1/services/ka/backends/k3", mlBackendBody("k3", addrs[3], ""))
	mlWrite(t, mc, http.StatusOK, "POST", "/api/v1/services/ka/backends/k2/drain", "")
	mlWrite(t, mc, http.StatusOK, "POST", "/api/v1/services/ka/backends/k3/disable", "")
	out := mlWrite(t, mc, http.StatusCreated, "POST", "/api/v1/services", `{"name": "kp", "vip_pool": "p", `+
		strings.TrimPrefix(mlSvcBody(7831, "", mlBackendBody("p0", addrs[4], "")), "{"))
	require.Equal(t, []any{"10.98.0.200"}, out["allocated_vips"], "kp's address from the pool: %v", out)
	pooled := "10.98.0.200:7831"

	// serves checks where new connections go: ka by its weights, none
	// to the drained and the disabled backend; kp on its pool address.
	serves := func(what string) {
		t.Helper()
		var samples []mlSample
		for range 200 {
			name, err := mlHit(context.Background(), s, netip.AddrPortFrom(nodetest.VIP, 7830).String(), netip.Addr{})
			samples = append(samples, mlSample{start: time.Now(), name: name, err: err})
		}
		mlShares(t, what+": ka", samples, map[string]float64{"k0": 0.25, "k1": 0.75}, 0.08)
		name, err := mlHit(context.Background(), s, pooled, netip.Addr{})
		require.NoError(t, err, "%s: kp on %s", what, pooled)
		require.Equal(t, "p0", name, "%s: kp on %s", what, pooled)
		st := s.Status()
		want := map[string][2]string{"k0": {"50", config.StateEnabled}, "k1": {"150", config.StateEnabled},
			"k2": {"100", config.StateDrain}, "k3": {"100", config.StateDisabled}}
		seen := 0
		for _, sv := range st.Daemon.Services {
			if sv.Name == "kp" {
				require.Equal(t, []netip.Addr{netip.MustParseAddr("10.98.0.200")}, sv.VIPs, "%s: kp's VIPs", what)
			}
			if sv.Name != "ka" {
				continue
			}
			for _, b := range sv.Backends {
				w, ok := want[b.Name]
				require.True(t, ok, "%s: ka has backend %s", what, b.Name)
				require.Equal(t, w, [2]string{fmt.Sprint(b.Weight), b.Admin}, "%s: %s's weight and admin state", what, b.Name)
				seen++
			}
		}
		require.Equal(t, len(want), seen, "%s: ka's backends in status", what)
	}
	mlBackendsUp(t, s)
	serves("before")
	before := mlTake(t, mc)
	file, err := os.ReadFile(s.ConfigPath)
	require.NoError(t, err)

	// A restart handover (what `ober restart` asks systemd for).
	s.Signal(syscall.SIGUSR2)
	code, err := s.Wait(15 * time.Second)
	require.NoError(t, err)
	require.Equal(t, api.ExitRestart, code, "exit status after SIGUSR2")
	s.Start()
	mc = mlAPI(t, c)
	mlSame(t, "after the restart handover", before, mlTake(t, mc))
	mlBackendsUp(t, s)
	serves("after the restart handover")

	// kill -9, then a start.
	s.Kill()
	s.Start()
	mc = mlAPI(t, c)
	mlSame(t, "after kill -9 and a start", before, mlTake(t, mc))
	mlBackendsUp(t, s)
	serves("after kill -9 and a start")
	now, err := os.ReadFile(s.ConfigPath)
	require.NoError(t, err)
	require.Equal(t, string(file), string(now), "ober.yaml is as the API left it")
}

// mlBackendsUp waits until the enabled and draining backends
// of the tcp services are up (a disabled one is in maintenance).
func mlBackendsUp(t *testing.T, s *nodetest.Site) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		why := ""
		for _, sv := range s.Status().Daemon.Services {
			if sv.Mode != config.ModeTCP {
				continue
			}
			for _, b := range sv.Backends {
				if b.Admin == config.StateEnabled && (!b.Up || b.State != "ready") {
					why = fmt.Sprintf("%s/%s: up %v, state %s", sv.Name, b.Name, b.Up, b.State)
				}
			}
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcp backends not up within 10 s: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mlRaw sends body as it is and returns the status and the answer.
func mlRaw(t *testing.T, c *mgmtClient, method, path string, body io.Reader) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://ober"+path, body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := map[string]any{}
	require.NoError(t, json.Unmarshal(data, &out), "%s", data)
	return resp.StatusCode, out
}

// TestMgmtBadInput: over the socket, every kind of bad request gets its
// status and a message that says what is wrong, and changes nothing:
// not the objects, not a byte of ober.yaml, and no reload.
func TestMgmtBadInput(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	be := netip.AddrPortFrom(s.BackendIP(0), 9300)
	mlBackend(t, s.Backend(), be, "x0")
	c := s.Config(nodetest.Params{})
	c.VIPPools = []config.VIPPool{{Name: "p", Addresses: []string{"10.98.0.200-10.98.0.202"}}}
	s.WriteConfig(c)
	s.Start()
	mc := mlAPI(t, c)
	mlWrite(t, mc, http.StatusOK, "PUT", "/api/v1/services/bad", mlSvcBody(7840, "", mlBackendBody("x0", be, "")))
	mlBackendsUp(t, s)
	vips := s.Status().Daemon.VIPs
	require.Len(t, vips, 1)
	require.True(t, vips[0].Held, "the service's VIP is on the node: %+v", vips)

	type state struct {
		snap       mlSnapshot
		file, gens string
		cfgGen     uint64
		haproxyGen uint64
	}
	take := func() state {
		f, err := os.ReadFile(s.ConfigPath)
		require.NoError(t, err)
		g, err := os.ReadFile(filepath.Join(c.Node.StateDir, mgmt.GenerationsFile))
		require.NoError(t, err)
		st := s.Status()
		return state{mlTake(t, mc), string(f), string(g), st.Daemon.Config.Generation, st.Daemon.HAProxy.Generation}
	}
	huge := `{"mode": "tcp", "port": 7841, "backends": [], "pad": "` + strings.Repeat("x", 10<<20) + `"}`
	cases := []struct {
		name, method, path, body string
		raw                      io.Reader
		status                   int
		msg, field               string
	}{
		{name: "malformed JSON", method: "PUT", path: "/api/v1/services/bad", body: `{"mode": "tcp", "port": 7840,`,
			status: 400, msg: "request body is not valid JSON: unexpected end of JSON input"},
		{name: "unknown field", method: "PATCH", path: "/api/v1/services/bad/backends/x0", body: `{"wieght": 5}`,
			status: 400, msg: `services[bad].backends[x0].wieght: unknown key; did you mean "weight"?`, field: "services[bad].backends[x0].wieght"},
		{name: "wrong type", method: "PATCH", path: "/api/v1/services/bad/backends/x0", body: `{"weight": "heavy"}`,
			status: 400, msg: `services[bad].backends[x0].weight: "heavy": must be a whole number`, field: "services[bad].backends[x0].weight"},
		{name: "10 MiB body", method: "PUT", path: "/api/v1/services/big", raw: strings.NewReader(huge),
			status: 413, msg: "request body is larger than 1048576 bytes (1 MiB)"},
		{name: "name with /", method: "PUT", path: "/api/v1/services/a%2Fb", body: mlSvcBody(7842, "", mlBackendBody("y", be, "")),
			status: 400, msg: `services[]: "a/b": not a usable name (no "/", "." or "..")`, field: "services[]"},
		{name: "backend name with /", method: "PUT", path: "/api/v1/services/bad/backends/..%2Fx", body: mlBackendBody("../x", be, ""),
			status: 400, msg: `services[bad].backends[../x]: "../x": not a usable name (no "/", "." or "..")`, field: "services[bad].backends[../x]"},
		{name: "name ..", method: "PUT", path: "/api/v1/services/..", body: mlSvcBody(7842, "", mlBackendBody("y", be, "")),
			status: 400, msg: "path /api/v1/services/.. is not usable: it has an empty, \".\" or \"..\" segment"},
		{name: "name .. in the body", method: "POST", path: "/api/v1/services", body: `{"name": "..", ` + strings.TrimPrefix(mlSvcBody(7842, "", mlBackendBody("y", be, "")), "{"),
			status: 400, msg: `services[]: "..": not a usable name (no "/", "." or "..")`, field: "services[]"},
		{name: "VIP outside every pool", method: "PUT", path: "/api/v1/services/out", body: mlSvcBody(7843, `, "vips": ["10.98.0.150"]`, mlBackendBody("y", be, "")),
			status: 422, msg: "services[out].vips[0]: 10.98.0.150: not one of the top-level vips (10.98.0.100), nor in a vip_pools entry (p: 10.98.0.200-10.98.0.202)", field: "services[out].vips[0]"},
		{name: "VIP outside its pool", method: "PUT", path: "/api/v1/services/out", body: mlSvcBody(7843, `, "vips": ["10.98.0.150"], "vip_pool": "p"`, mlBackendBody("y", be, "")),
			status: 422, msg: `services[out].vips[0]: 10.98.0.150: not in vip_pool "p" (10.98.0.200-10.98.0.202)`, field: "services[out].vips[0]"},
		{name: "port in use", method: "PUT", path: "/api/v1/services/twin", body: mlSvcBody(7840, "", mlBackendBody("y", be, "")),
			status: 409, msg: `services[twin].port: 7840: already used by services[bad] ("bad") on VIP 10.98.0.100`, field: "services[twin].port"},
		// The Store refuses the last backend of a service that would be
		// left without one, tcp as tls and http.
		{name: "last backend of an announced service", method: "DELETE", path: "/api/v1/services/bad/backends/x0",
			status: 409, msg: "services[bad].backends[x0]: the last backend of the service: a tcp service without backends cannot serve; add another backend first, or delete the service", field: "services[bad].backends[x0]"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			before := take()
			var code int
			var out map[string]any
			if tc.raw != nil {
				code, out = mlRaw(t, mc, tc.method, tc.path, tc.raw)
			} else {
				code, out = mc.do(tc.method, tc.path, tc.body)
			}
			t.Logf("%s %s: %d %v", tc.method, tc.path, code, out)
			require.Equal(t, tc.status, code, "%v", out)
			if tc.msg != "" {
				require.Equal(t, tc.msg, out["error"])
			}
			if tc.field != "" {
				require.Equal(t, tc.field, out["field"])
			}
			after := take()
			mlSame(t, tc.name, before.snap, after.snap)
			require.Equal(t, before.snap, after.snap, "the objects are unchanged, generations too")
			require.Equal(t, before.file, after.file, "ober.yaml is unchanged byte for byte")
			require.Equal(t, before.gens, after.gens, "the generations are unchanged")
			require.Equal(t, before.cfgGen, after.cfgGen, "no reload: daemon.config.generation")
			require.Equal(t, before.haproxyGen, after.haproxyGen, "no reload: the instances' generation")
		})
	}
	// And the service serves as before.
	name, err := mlHit(context.Background(), s, netip.AddrPortFrom(nodetest.VIP, 7840).String(), netip.Addr{})
	require.NoError(t, err)
	require.Equal(t, "x0", name)
}
