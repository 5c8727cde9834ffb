package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// The management API's benchmarks (BENCHMARKS.md, "Management API"): the
// real `ober run` in namespaces with two HAProxy instances, driven over
// its unix socket as an orchestrator would, every write fsynced into
// ober.yaml.
//
//	go test ./e2e/ -run '^$' -bench MgmtWeight -benchtime 1000x
//	go test ./e2e/ -run '^$' -bench MgmtBackendAdd -benchtime 1000x -timeout 30m
//	go test ./e2e/ -run '^$' -bench MgmtWriteRate -benchtime 1x -v
//	go test ./e2e/ -run '^$' -bench MgmtBurst -benchtime 1x -v -timeout 20m
//	go test ./e2e/ -run '^$' -bench MgmtStoreDo -benchtime 10x -cpuprofile cpu.out

// mbService is the service the benchmarks write to, and mbPort its port.
const (
	mbService = "bench"
	mbPort    = 7700
)

// mbSite is a node running a tcp service with n backends b0..b<n-1>,
// and a client of its management API.
func mbSite(b *testing.B, n int) (*nodetest.Site, *mbClient) {
	b.Helper()
	s := nodetest.New(b, oberBin, 1)
	be := s.BackendIP(0)
	nodetest.Serve(b, s.Backend(), netip.AddrPortFrom(be, 9200), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	c := s.Config(nodetest.Params{Instances: 2})
	svc := config.Service{Name: mbService, Mode: config.ModeTCP, Port: mbPort}
	for i := range n {
		svc.Backends = append(svc.Backends, config.BackendServer{Name: fmt.Sprintf("b%d", i), Address: netip.AddrPortFrom(be, 9200).String()})
	}
	c.Services = append(c.Services, svc)
	s.WriteConfig(c)
	s.Start()
	return s, mbNewClient(b, filepath.Join(c.Node.RuntimeDir, config.DefaultAPISocketName))
}

// mbClient speaks to the API over the unix socket; safe for concurrent
// use, and it fails nothing itself: the benchmark decides.
type mbClient struct{ hc *http.Client }

func mbNewClient(b *testing.B, socket string) *mbClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 64,
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &mbClient{hc: &http.Client{Transport: tr, Timeout: 10 * time.Minute}}
}

// mbAnswer is a write's answer, as far as the benchmarks read it.
type mbAnswer struct {
	Applied          string `json:"applied"`
	ConfigGeneration uint64 `json:"config_generation"`
	Error            string `json:"error"`
}

// do sends a write and decodes its answer; an error for anything but 200.
func (c *mbClient) do(method, path, body string) (mbAnswer, error) {
	req, err := http.NewRequest(method, "http://ober"+path, strings.NewReader(body))
	if err != nil {
		return mbAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return mbAnswer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return mbAnswer{}, err
	}
	var a mbAnswer
	if err := json.Unmarshal(data, &a); err != nil {
		return mbAnswer{}, fmt.Errorf("%s %s: %d %q: %w", method, path, resp.StatusCode, data, err)
	}
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return a, nil
}

func mbWeight(c *mbClient, backend string, w int) (mbAnswer, error) {
	return c.do("PATCH", "/api/v1/services/"+mbService+"/backends/"+backend, fmt.Sprintf(`{"weight": %d}`, w))
}

// mbAdd puts backend name i, on a port of its own.
func mbAdd(c *mbClient, s *nodetest.Site, service string, i int) (mbAnswer, error) {
	addr := netip.AddrPortFrom(s.BackendIP(0), uint16(20000+i))
	return c.do("PUT", fmt.Sprintf("/api/v1/services/%s/backends/n%d", service, i), fmt.Sprintf(`{"address": "%s"}`, addr))
}

// mbSockets are the runtime sockets of the instances running now.
func mbSockets(b *testing.B, s *nodetest.Site) []string {
	b.Helper()
	var out []string
	err := filepath.WalkDir(s.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSocket != 0 && strings.HasPrefix(d.Name(), "haproxy-") && strings.HasSuffix(d.Name(), ".sock") {
			out = append(out, path)
		}
		return nil
	})
	require.NoError(b, err)
	return out
}

// mbHAProxyBackend is the HAProxy backend of the service's pool.
func mbHAProxyBackend(b *testing.B, s *nodetest.Site, backend string) string {
	b.Helper()
	for _, ss := range s.Status().Daemon.Services {
		if ss.Name == mbService {
			for _, be := range ss.Backends {
				if be.Name == backend {
					return be.HAProxyBackend
				}
			}
		}
	}
	b.Fatalf("status has no backend %s of %s", backend, mbService)
	return ""
}

func mbGeneration(s *nodetest.Site) uint64 { return s.Status().Daemon.Config.Generation }

func mbReloads(s *nodetest.Site) int { return strings.Count(s.Log(), "configuration reloaded") }

// mbPercentile is the p-th percentile of ds (sorted in place).
func mbPercentile(ds []time.Duration, p float64) time.Duration {
	slices.Sort(ds)
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func mbMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mbDaemon is what the daemon's log says of the applies since a moment:
// how many reloads, how long they took from "reloading configuration"
// (before the daemon waits for the lock and reads the file) to
// "configuration reloaded", and how many API requests each carried.
type mbDaemon struct {
	reloads       int
	inReload      time.Duration
	longest       time.Duration
	batches, reqs int
}

func mbDaemonLog(log string, since time.Time) mbDaemon {
	var d mbDaemon
	var began time.Time
	for line := range strings.Lines(log) {
		var e struct {
			Time     time.Time `json:"time"`
			Msg      string    `json:"msg"`
			Requests int       `json:"requests"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Time.Before(since) {
			continue
		}
		switch e.Msg {
		case "reloading configuration":
			began = e.Time
		case "configuration reloaded":
			if !began.IsZero() {
				took := e.Time.Sub(began)
				d.reloads++
				d.inReload += took
				d.longest = max(d.longest, took)
				began = time.Time{}
			}
		case "applied":
			d.batches++
			d.reqs += e.Requests
		}
	}
	return d
}

func (d mbDaemon) String() string {
	if d.reloads == 0 || d.batches == 0 {
		return fmt.Sprintf("%d reloads, %d batches", d.reloads, d.batches)
	}
	return fmt.Sprintf("%d reloads, %v in them (mean %v, longest %v); %d batches of %.1f requests on average",
		d.reloads, d.inReload.Round(time.Millisecond), (d.inReload / time.Duration(d.reloads)).Round(time.Millisecond),
		d.longest.Round(time.Millisecond), d.batches, float64(d.reqs)/float64(d.batches))
}

// BenchmarkMgmtWeight: PATCH a backend's weight, sequentially, one
// client; an op is one request, from sent to answered. Besides the
// answer's p50/p99 it reports when both instances' HAProxy had the
// weight (polled from the answer on), and how many answers came before
// HAProxy had it (the API says a write answers once it is live).
//
//	go test ./e2e/ -run '^$' -bench MgmtWeight -benchtime 1000x
func BenchmarkMgmtWeight(b *testing.B) {
	s, c := mbSite(b, 2)
	socks := mbSockets(b, s)
	require.Len(b, socks, 2, "one runtime socket per instance")
	hb := mbHAProxyBackend(b, s, "b0")
	ctx := context.Background()
	gen0, reloads0 := mbGeneration(s), mbReloads(s)
	lat := make([]time.Duration, 0, b.N)
	live := make([]time.Duration, 0, b.N)
	early := 0
	b.ResetTimer()
	for i := range b.N {
		w := 50 + 100*(i%2) // 50, 150: every op changes the weight
		sent := time.Now()
		a, err := mbWeight(c, "b0", w)
		took := time.Since(sent)
		require.NoError(b, err)
		require.Equal(b, "runtime", a.Applied)
		lat = append(lat, took)
		b.StopTimer()
		for polls := 0; ; polls++ {
			if hcRuntimeWeight(ctx, socks, hb, "b0") == w {
				if polls > 0 {
					early++
				}
				live = append(live, time.Since(sent))
				break
			}
			require.Less(b, time.Since(sent), 10*time.Second, "weight %d not in HAProxy 10 s after", w)
			time.Sleep(time.Millisecond)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(mbMs(mbPercentile(lat, 50)), "p50-ms")
	b.ReportMetric(mbMs(mbPercentile(lat, 99)), "p99-ms")
	b.ReportMetric(mbMs(mbPercentile(live, 50)), "haproxy-p50-ms")
	b.ReportMetric(mbMs(mbPercentile(live, 99)), "haproxy-p99-ms")
	b.ReportMetric(float64(early), "answers-before-haproxy")
	b.ReportMetric(float64(mbGeneration(s)-gen0), "generations")
	b.ReportMetric(float64(mbReloads(s)-reloads0), "reload-logs")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMgmtBackendAdd: PUT a new backend into the service,
// sequentially, one client: every op renews the instances (a reload),
// and the service grows by one backend per op. 1,000 ops took about 7
// minutes on 2 vCPUs: give -timeout.
//
//	go test ./e2e/ -run '^$' -bench MgmtBackendAdd -benchtime 1000x -timeout 30m
func BenchmarkMgmtBackendAdd(b *testing.B) {
	s, c := mbSite(b, 1)
	gen0 := mbGeneration(s)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		sent := time.Now()
		a, err := mbAdd(c, s, mbService, i)
		took := time.Since(sent)
		require.NoError(b, err)
		require.Equal(b, "reload", a.Applied)
		lat = append(lat, took)
	}
	b.StopTimer()
	b.ReportMetric(mbMs(mbPercentile(lat, 50)), "p50-ms")
	b.ReportMetric(mbMs(mbPercentile(lat, 99)), "p99-ms")
	b.ReportMetric(mbMs(lat[0]), "first-ms")
	b.ReportMetric(float64(mbGeneration(s)-gen0), "generations")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMgmtWriteRate: 8 clients each change their own backend's
// weight back to back for 10 s; every write is fsynced into ober.yaml
// and answered once applied. It reports the writes per second, and the
// daemon's configuration generations (applies) over the window:
// batching shows as far fewer generations than writes.
//
//	go test ./e2e/ -run '^$' -bench MgmtWriteRate -benchtime 1x
func BenchmarkMgmtWriteRate(b *testing.B) {
	const clients, window = 8, 10 * time.Second
	s, c := mbSite(b, clients)
	b.ResetTimer()
	for range b.N {
		gen0, reloads0 := mbGeneration(s), mbReloads(s)
		var writes, failed atomic.Int64
		var firstErr atomic.Value
		end := time.Now().Add(window)
		start := time.Now()
		var wg sync.WaitGroup
		for k := range clients {
			wg.Go(func() {
				for i := 0; time.Now().Before(end); i++ {
					if _, err := mbWeight(c, fmt.Sprintf("b%d", k), 50+100*(i%2)); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					writes.Add(1)
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		require.Zero(b, failed.Load(), "failed writes; the first: %v", firstErr.Load())
		dl := mbDaemonLog(s.Log(), start)
		b.Logf("daemon over %v: %v", took.Round(time.Millisecond), dl)
		b.ReportMetric(mbMs(dl.inReload)/float64(max(dl.reloads, 1)), "reload-ms")
		gens := mbGeneration(s) - gen0
		b.ReportMetric(float64(writes.Load())/took.Seconds(), "writes/s")
		b.ReportMetric(float64(writes.Load()), "writes")
		b.ReportMetric(float64(gens), "generations")
		b.ReportMetric(float64(mbReloads(s)-reloads0), "reload-logs")
		b.ReportMetric(float64(writes.Load())/float64(max(gens, 1)), "writes/generation")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMgmtBurst: 1,000 PUTs of different new backends, all sent at
// once (1,000 connections), to one service. It reports the time until
// the last is answered, the daemon's generations over the burst (1 would
// be perfect batching, 1,000 none), and when the first and the median
// answers came.
//
//	go test ./e2e/ -run '^$' -bench MgmtBurst -benchtime 1x -v -timeout 20m
func BenchmarkMgmtBurst(b *testing.B) {
	const adds = 1000
	s, c := mbSite(b, 1)
	b.ResetTimer()
	for round := range b.N {
		gen0, reloads0 := mbGeneration(s), mbReloads(s)
		answered := make([]time.Duration, adds)
		gens := make([]uint64, adds)
		errs := make([]error, adds)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range adds {
			wg.Go(func() {
				a, err := mbAdd(c, s, mbService, round*adds+i)
				answered[i], gens[i], errs[i] = time.Since(start), a.ConfigGeneration, err
			})
		}
		wg.Wait()
		took := time.Since(start)
		for _, err := range errs {
			require.NoError(b, err)
		}
		distinct := map[uint64]int{}
		for _, g := range gens {
			distinct[g]++
		}
		b.ReportMetric(took.Seconds(), "total-s")
		b.ReportMetric(float64(mbGeneration(s)-gen0), "generations")
		b.ReportMetric(float64(mbReloads(s)-reloads0), "reload-logs")
		b.ReportMetric(float64(len(distinct)), "answer-generations")
		b.ReportMetric(mbPercentile(answered, 0).Seconds(), "first-s")
		b.ReportMetric(mbPercentile(answered, 50).Seconds(), "p50-s")
		b.Logf("answers per configuration generation: %v", distinct)
		b.Logf("daemon over %v: %v", took.Round(time.Millisecond), mbDaemonLog(s.Log(), start))
	}
	b.ReportMetric(0, "ns/op")
}

// mbNoApply is an Applier that applies nothing: the Store alone.
type mbNoApply struct{ gen atomic.Uint64 }

func (a *mbNoApply) Apply(context.Context) (mgmt.Applied, uint64, error) {
	return mgmt.AppliedRuntime, a.gen.Add(1), nil
}

// mbStoreDo times the Store's part of a write, without the
// daemon: a weight change of one backend in an ober.yaml whose one tcp
// service has n backends (lock, read, edit, validate, write and fsync
// the file and the generations). parse-ms is one config.Parse of that
// file.
func mbStoreDo(b *testing.B, n int) {
	var sb strings.Builder
	sb.WriteString("node:\n  name: n1\n  interfaces: [eth1]\nhaproxy: {user: nobody, group: nogroup}\n" +
		"instances: {cpus: [0]}\nvips: [10.0.0.1]\nservices:\n  - name: bench\n    port: 7700\n    mode: tcp\n    backends:\n")
	for i := range n {
		fmt.Fprintf(&sb, "      - {name: n%d, address: \"10.1.%d.%d:9200\"}\n", i, i/250, i%250+1)
	}
	dir := b.TempDir()
	st := &mgmt.Store{Path: filepath.Join(dir, "ober.yaml"), RuntimeDir: filepath.Join(dir, "run"), StateDir: filepath.Join(dir, "state"), Applier: &mbNoApply{}}
	require.NoError(b, os.WriteFile(st.Path, []byte(sb.String()), 0o600))
	_, err := config.Parse([]byte(sb.String()))
	require.NoError(b, err)
	b.ResetTimer()
	for i := range b.N {
		res, err := st.Do(context.Background(), mgmt.Change{Verb: mgmt.Patch, Kind: mgmt.KindBackend, Service: "bench", Backend: "n0",
			Body: json.RawMessage(fmt.Sprintf(`{"weight": %d}`, 50+100*(i%2)))})
		require.NoError(b, err)
		require.Equal(b, mgmt.AppliedRuntime, res.Applied)
	}
	b.StopTimer()
	start := time.Now()
	for range 5 {
		_, err := config.Parse([]byte(sb.String()))
		require.NoError(b, err)
	}
	b.ReportMetric(mbMs(time.Since(start))/5, "parse-ms")
	b.ReportMetric(float64(sb.Len())/1024, "file-KiB")
}

func BenchmarkMgmtStoreDo1(b *testing.B)    { mbStoreDo(b, 1) }
func BenchmarkMgmtStoreDo100(b *testing.B)  { mbStoreDo(b, 100) }
func BenchmarkMgmtStoreDo1000(b *testing.B) { mbStoreDo(b, 1000) }
