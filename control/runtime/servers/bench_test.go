package servers_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/servers"
)

// The pool of the benchmark's instance, as the plan names a service's
// own backends.
const (
	benchBackend = "svc:default"
	benchServer  = "a"
)

// BenchmarkWeightChange times a weight change from the controller to
// HAProxy: an op is Controller.Set with server a's weight changed (50,
// then 150, in turn) and Kick, until a real HAProxy instance's runtime
// API answers `get weight` with the new weight. The pool has two
// servers under balance weighted (roundrobin with weights), the one
// whose weights change at run time. BENCHMARKS.md has the figures:
//
//	go test -run '^$' -bench WeightChange -count 5 ./control/runtime/servers/
func BenchmarkWeightChange(b *testing.B) {
	rt, pid := startBenchInstance(b)
	ctx, cancel := context.WithCancel(context.Background())
	c := servers.New(servers.Options{
		Health:    func() map[string]bool { return map[string]bool{"a": true, "b": true} },
		Instances: func() []servers.Instance { return []servers.Instance{{PID: pid, Socket: rt.Path}} },
		// Only Kick starts a pass: the ticker must not do it for us.
		Every: time.Hour,
	})
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })

	set := func(w int) {
		c.Set([]servers.Server{
			{Ref: servers.Ref{Backend: benchBackend, Server: "a"}, Key: "a", Group: "svc", Weight: w, Admin: servers.AdminEnabled},
			{Ref: servers.Ref{Backend: benchBackend, Server: "b"}, Key: "b", Group: "svc", Weight: 100, Admin: servers.AdminEnabled},
		})
		c.Kick()
	}
	// The first pass tells the instance every server's state; the ops
	// then change one weight each.
	set(100)
	waitWeight(b, rt, 100)

	// The observer's own cost: one `get weight` round trip, on the same
	// socket HAProxy serves the controller's commands on.
	const probes = 200
	start := time.Now()
	for range probes {
		waitWeight(b, rt, 100)
	}
	get := time.Since(start) / probes

	i, polls := 0, 0
	for b.Loop() {
		w := []int{50, 150}[i%2]
		i++
		set(w)
		polls += waitWeight(b, rt, w)
	}
	b.ReportMetric(float64(get.Nanoseconds()), "get-ns")
	b.ReportMetric(float64(polls)/float64(i), "polls/op")
}

// waitWeight polls the runtime API, back to back, until server a's
// current weight is w, and returns how many polls that took.
func waitWeight(b *testing.B, rt haproxy.Runtime, w int) int {
	ctx := context.Background()
	want := fmt.Sprintf("%d ", w)
	deadline := time.Now().Add(10 * time.Second)
	for n := 1; ; n++ {
		out, err := rt.Command(ctx, "get weight "+benchBackend+"/"+benchServer)
		if err == nil && strings.HasPrefix(out, want) {
			return n
		}
		if time.Now().After(deadline) {
			b.Fatalf("server %s/%s: weight %d not seen in 10s: %q (%v)", benchBackend, benchServer, w, out, err)
		}
	}
}

// startBenchInstance starts HAProxy with one tcp service on an inherited
// socket on 127.0.0.1, forwarding to a pool of two servers (listeners
// on 127.0.0.1 that nobody reads: the benchmark opens no connection),
// and returns its runtime API once it answers, and its PID.
func startBenchInstance(b *testing.B) (haproxy.Runtime, int) {
	b.Helper()
	bin, err := exec.LookPath("haproxy")
	require.NoError(b, err, "this benchmark runs HAProxy: install it (apt-get install haproxy)")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := haproxy.DetectVersion(ctx, bin)
	require.NoError(b, err)

	dir, err := os.MkdirTemp("", "ober-sv")
	require.NoError(b, err)
	b.Cleanup(func() { os.RemoveAll(dir) })
	chroot := filepath.Join(dir, "empty")
	require.NoError(b, os.Mkdir(chroot, 0o555))

	listen := func() (net.Listener, *os.File) {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		require.NoError(b, err)
		b.Cleanup(func() { l.Close() })
		f, err := l.(*net.TCPListener).File()
		require.NoError(b, err)
		b.Cleanup(func() { f.Close() })
		return l, f
	}
	fe, feFile := listen()
	srvA, _ := listen()
	srvB, _ := listen()
	addr := func(l net.Listener) netip.AddrPort { return netip.MustParseAddrPort(l.Addr().String()) }

	in := haproxy.Instance{
		Node: "bench", StatsSocket: filepath.Join(dir, "s.sock"), CPU: 0, MaxConn: 1000, Version: v,
		User: "nobody", Group: "nogroup", Chroot: chroot,
		Frontends: []haproxy.Frontend{{Name: "svc", Mode: haproxy.ModeTCP, Port: uint16(addr(fe).Port()),
			Binds: []haproxy.Bind{{FD: 3, Family: 4}}, Pool: benchBackend}},
		Pools: []haproxy.Pool{{Name: benchBackend, Balance: haproxy.BalanceWeighted, Servers: []haproxy.Server{
			{Name: "a", Addr: addr(srvA), Weight: 100},
			{Name: "b", Addr: addr(srvB), Weight: 100},
		}}},
		Timeouts: haproxy.Timeouts{Connect: 5 * time.Second, Client: time.Minute, Server: time.Minute,
			HTTPRequest: 30 * time.Second, HTTPKeepAlive: time.Minute},
	}
	text, err := haproxy.Render(in)
	require.NoError(b, err)
	cfg := filepath.Join(dir, "haproxy.cfg")
	require.NoError(b, os.WriteFile(cfg, text, 0o600))
	require.NoError(b, haproxy.Check(ctx, bin, cfg, nil))

	var out strings.Builder
	cmd := exec.Command(bin, "-f", cfg, "-db")
	cmd.ExtraFiles = []*os.File{feFile}
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(b, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	rt := haproxy.Runtime{Path: in.StatsSocket, Timeout: 2 * time.Second}
	for {
		if _, err := rt.Info(ctx); err == nil {
			return rt, cmd.Process.Pid
		}
		select {
		case <-exited:
			b.Fatalf("haproxy exited at startup: %s", out.String())
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-exited
			b.Fatalf("haproxy's runtime API did not answer in 30s: %s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
