package plan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/loader"
)

// The benchmarks of a large configuration (issue 16): 1,000 services of
// 10 backends each, on one IPv4 VIP and two instances; and the same at
// 250 services, to see how each figure grows. BENCHMARKS.md ("Services
// at scale") has the figures and the commands, such as:
//
//	go test -run '^$' -bench '(Plan|Render)1000x10' -count 5 ./control/plan/
const benchBackends = 10

// benchBalances are spread over the services in turn.
var benchBalances = []string{
	config.BalanceLeastConn, config.BalanceWeighted, config.BalanceRoundRobin, config.BalanceSource,
	config.BalanceConsistent, config.BalanceRandom, config.BalanceFirst, config.BalanceLeastBandwidth,
}

// benchShape is a configuration of N services on distinct ports, each
// with its own 10 backends given as IP literals (nothing to resolve).
// Without Balance, a twentieth are tls, a twentieth http and the rest
// tcp, and they take the balance methods in turn; with it, they are all
// tcp and balance so. Every 10th service has a priority tier (its last
// two backends), every 20th an access list, every 5th tcp service sends
// PROXY v2.
type benchShape struct {
	N       int
	Balance string
}

// yaml is the configuration; maxconn, unless 0, is instances.maxconn.
func (sh benchShape) yaml(runtimeDir string, maxconn int) []byte {
	n := sh.N
	var b strings.Builder
	fmt.Fprintf(&b, `node: {name: n1, interfaces: [eth1], runtime_dir: %s, state_dir: %s}
haproxy: {user: nobody, group: nogroup}
vips: [10.20.0.10]
instances: {cpus: [0, 1]`, runtimeDir, filepath.Join(runtimeDir, "state"))
	if maxconn > 0 {
		fmt.Fprintf(&b, ", maxconn: %d", maxconn)
	}
	b.WriteString("}\n")
	b.WriteString("services:\n")
	for i := range n {
		mode, port, balance := config.ModeTCP, 20000+i, sh.Balance
		switch {
		case balance != "":
		case i < n/20:
			mode, port = config.ModeTLS, 30000+i
		case i < n/10:
			mode, port = config.ModeHTTP, 31000+i
		}
		if balance == "" {
			balance = benchBalances[i%len(benchBalances)]
		}
		fmt.Fprintf(&b, "  - name: svc%d\n    mode: %s\n    port: %d\n    balance: %s\n",
			i, mode, port, balance)
		switch {
		case mode == config.ModeTLS:
			b.WriteString("    tls: {self_signed: true}\n")
		case mode == config.ModeTCP && i%5 == 0:
			b.WriteString("    proxy_protocol: v2\n")
		}
		if i%20 == 0 {
			b.WriteString(`    access: {default: deny, rules: ["deny 192.0.2.128/25", "allow 192.0.2.0/24", "allow 198.51.100.0/24"]}` + "\n")
		}
		b.WriteString("    backends:\n")
		for j := range benchBackends {
			prio := 1
			if i%10 == 0 && j >= benchBackends-2 {
				prio = 2
			}
			fmt.Fprintf(&b, "      - {name: b%d, address: \"10.%d.%d.%d:%d\", weight: %d, priority: %d}\n",
				j, 100+i/256, i%256, j+1, 8000+j, 50+10*j, prio)
		}
	}
	return []byte(b.String())
}

// benchInput is what Build takes for the large configuration.
type benchInput struct {
	n     int
	cfg   *config.Config
	res   *config.Resolved
	facts Facts
}

// newBenchInput parses the configuration of n services (benchShape) and
// resolves it (IP literals: no lookups), outside the timed part. v is the
// HAProxy release to render for. A size the dataplane cannot hold is
// skipped, saying so.
func newBenchInput(b *testing.B, n int, runtimeDir string, v haproxy.Version) benchInput {
	return newShapeInput(b, benchShape{N: n}, runtimeDir, v)
}

func newShapeInput(b *testing.B, sh benchShape, runtimeDir string, v haproxy.Version) benchInput {
	b.Helper()
	n := sh.N
	if n > loader.MaxListeners {
		b.Skipf("%d services need %d listeners: the dataplane has %d (loader.MaxListeners, OBER_MAX_LISTENERS)",
			n, n, loader.MaxListeners)
	}
	// The instances inherit this process's descriptor limit, raised to
	// its hard limit as the daemon does (ReadFacts). Where that is too
	// low for the default maxconn (20,000 connections, two descriptors
	// each) beside n listeners, maxconn is set to fit, as Build lowers
	// it, so that every size is measured at the same maxconn.
	limit, maxconn := fdLimit(), 0
	if need := uint64(2*config.DefaultMaxConn + n + 2*fdReserve); limit < need {
		maxconn = (int(limit) - n - 2*fdReserve) / 2
	}
	cfg, err := config.Parse(sh.yaml(runtimeDir, maxconn))
	require.NoError(b, err)
	require.Len(b, cfg.Services, n)
	res, err := cfg.Resolve(context.Background(), nil)
	require.NoError(b, err)
	dir := b.TempDir()
	certPath, keyPath, err := certs.SelfSigned(dir, []string{"n1"}, []netip.Addr{netip.MustParseAddr("10.20.0.10")})
	require.NoError(b, err)
	pem, err := certs.Bundle(certPath, keyPath)
	require.NoError(b, err)
	f := Facts{HAProxy: v, FDLimit: limit, PEM: map[string][]byte{}}
	for _, svc := range cfg.Services {
		if svc.Mode == config.ModeTLS {
			f.PEM[svc.Name] = pem
		}
	}
	return benchInput{n: n, cfg: cfg, res: res, facts: f}
}

func (in benchInput) build(b *testing.B) *NodePlan {
	b.Helper()
	p, err := Build(in.cfg, in.res, in.facts, nil)
	require.NoError(b, err)
	return p
}

// benchVersion is the release the plan and render benchmarks render for,
// so that they need no HAProxy: the one BENCHMARKS.md's figures ran.
var benchVersion = haproxy.Version{Major: 2, Minor: 6, Patch: 12}

// BenchmarkPlan1000x10 times Build: the configuration, resolved, to a
// NodePlan (listeners, service and access tables, pools and servers,
// files). heap-KiB is the Go heap in use (HeapInuse, after a GC) of this
// process holding the configuration, its resolution and one plan;
// plan-heap-KiB is the part of it the plan adds.
func BenchmarkPlan1000x10(b *testing.B) { benchPlan(b, 1000) }

// BenchmarkPlan250x10 is BenchmarkPlan1000x10 at 250 services.
func BenchmarkPlan250x10(b *testing.B) { benchPlan(b, 250) }

func benchPlan(b *testing.B, n int) {
	in := newBenchInput(b, n, "/run/ober", benchVersion)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p := in.build(b)
	runtime.GC()
	runtime.ReadMemStats(&after)
	require.Len(b, p.Frontends, n)
	require.Len(b, p.Servers, n*benchBackends)
	require.Len(b, p.Listeners, n, "one IPv4 listener per service")

	b.ReportAllocs()
	for b.Loop() {
		in.build(b)
	}
	b.ReportMetric(float64(after.HeapInuse)/1024, "heap-KiB")
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/1024, "plan-heap-KiB")
	runtime.KeepAlive(p)
}

// BenchmarkRender1000x10 renders the HAProxy configuration of every
// instance of the plan (two); an op is all of them. cfg-KiB is the size
// of one instance's file.
func BenchmarkRender1000x10(b *testing.B) { benchRender(b, 1000) }

// BenchmarkRender250x10 is BenchmarkRender1000x10 at 250 services.
func BenchmarkRender250x10(b *testing.B) { benchRender(b, 250) }

func benchRender(b *testing.B, n int) {
	p := newBenchInput(b, n, "/run/ober", benchVersion).build(b)
	require.Len(b, p.Slots, 2)
	fds := p.ExampleFDs()
	text, err := p.Render(p.Slots[0], fds, "/run/ober/haproxy-0.sock")
	require.NoError(b, err)
	require.Equal(b, n, strings.Count(string(text), "\nfrontend "))

	b.ReportAllocs()
	for b.Loop() {
		for _, sl := range p.Slots {
			if _, err := p.Render(sl, fds, fmt.Sprintf("/run/ober/haproxy-%d.sock", sl.Index)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(text))/1024, "cfg-KiB")
	b.ReportMetric(float64(strings.Count(string(text), "\n")), "cfg-lines")
}

// benchHAProxy is the HAProxy binary of the configuration (haproxy in
// PATH), and its release; the benchmarks that need it fail without it.
func benchHAProxy(b *testing.B) (string, haproxy.Version) {
	b.Helper()
	bin, err := exec.LookPath("haproxy")
	require.NoError(b, err, "these benchmarks run HAProxy: install it (apt-get install haproxy)")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := haproxy.DetectVersion(ctx, bin)
	require.NoError(b, err)
	return bin, v
}

// BenchmarkCheck1000x10 times what a reload does before it starts an
// instance: CheckHAProxy renders instance 0's configuration and has
// `haproxy -c` parse it, with a placeholder socket for each of its
// inherited listeners (one per service).
func BenchmarkCheck1000x10(b *testing.B) { benchCheck(b, 1000) }

// BenchmarkCheck250x10 is BenchmarkCheck1000x10 at 250 services.
func BenchmarkCheck250x10(b *testing.B) { benchCheck(b, 250) }

func benchCheck(b *testing.B, n int) {
	_, v := benchHAProxy(b)
	p := newBenchInput(b, n, b.TempDir(), v).build(b)
	require.NoError(b, p.WriteFiles())
	ctx := context.Background()
	require.NoError(b, p.CheckHAProxy(ctx))
	for b.Loop() {
		if err := p.CheckHAProxy(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInstance1000x10 starts one real HAProxy instance with the
// configuration as ober renders it, its listeners (one per service)
// inherited sockets on 127.0.0.1, and times it from exec to its runtime API
// answering (what a new instance takes to serve). rss-KiB is its VmRSS
// then, the median over the ops.
func BenchmarkInstance1000x10(b *testing.B) { benchInstance(b, 1000) }

// BenchmarkInstance250x10 is BenchmarkInstance1000x10 at 250 services.
func BenchmarkInstance250x10(b *testing.B) { benchInstance(b, 250) }

func benchInstance(b *testing.B, n int) { benchInstanceShape(b, benchShape{N: n}) }

// BenchmarkInstanceBalance is BenchmarkInstance250x10 with every service
// tcp and of one balance method: an instance's memory depends on it.
func BenchmarkInstanceBalance(b *testing.B) {
	for _, bal := range benchBalances {
		b.Run(bal, func(b *testing.B) { benchInstanceShape(b, benchShape{N: 250, Balance: bal}) })
	}
}

func benchInstanceShape(b *testing.B, sh benchShape) {
	bin, v := benchHAProxy(b)
	dir, err := os.MkdirTemp("", "ober-bench")
	require.NoError(b, err)
	b.Cleanup(func() { os.RemoveAll(dir) })
	p := newShapeInput(b, sh, dir, v).build(b)
	require.NoError(b, p.WriteFiles())
	chroot := p.Config.HAProxy.Chroot
	if err := os.Mkdir(chroot, 0o555); err != nil && !errors.Is(err, fs.ErrExist) {
		require.NoError(b, err)
	}

	// The sockets of a node's listeners: HAProxy inherits them in order
	// from descriptor 3, as ExampleFDs numbers them.
	var files []*os.File
	for range p.Listeners {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		require.NoError(b, err)
		f, err := l.(*net.TCPListener).File()
		l.Close()
		require.NoError(b, err)
		files = append(files, f)
	}
	b.Cleanup(func() {
		for _, f := range files {
			f.Close()
		}
	})
	sock := filepath.Join(dir, "haproxy-0.sock")
	text, err := p.Render(p.Slots[0], p.ExampleFDs(), sock)
	require.NoError(b, err)
	cfgPath := filepath.Join(dir, "haproxy-0.cfg")
	require.NoError(b, os.WriteFile(cfgPath, text, 0o600))
	rt := haproxy.Runtime{Path: sock, Timeout: time.Second}

	var rss []float64
	for b.Loop() {
		kib, err := startInstance(bin, cfgPath, files, rt)
		if err != nil {
			b.Fatal(err)
		}
		rss = append(rss, kib)
	}
	b.ReportMetric(median(rss), "rss-KiB")
	b.ReportMetric(float64(p.MaxConn), "maxconn")
}

// startInstance runs HAProxy as the supervisor does (-f cfg -db) with
// files as descriptors 3, 4, ..., waits for its runtime API, reads its
// VmRSS and kills it.
func startInstance(bin, cfgPath string, files []*os.File, rt haproxy.Runtime) (float64, error) {
	var out strings.Builder
	cmd := exec.Command(bin, "-f", cfgPath, "-db")
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = &out, &out
	os.Remove(rt.Path)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := rt.Info(ctx); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return 0, fmt.Errorf("haproxy exited at startup (%v): %s", err, out.String())
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			exited <- <-exited
			return 0, fmt.Errorf("haproxy's runtime API did not answer in 30s: %s", out.String())
		case <-time.After(time.Millisecond):
		}
	}
	st, err := procstat.Status(cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	var kib float64
	if _, err := fmt.Sscanf(st["VmRSS"], "%f kB", &kib); err != nil {
		return 0, fmt.Errorf("VmRSS %q: %w", st["VmRSS"], err)
	}
	return kib, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}
