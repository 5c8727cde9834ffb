package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ober-ingress/ober/control/haproxy"
	"github.com/ober-ingress/ober/internal/netnstest"
	"github.com/ober-ingress/ober/internal/nodetest"
	"github.com/ober-ingress/ober/loader"
)

// Baseline addresses: a second link between client and node without
// XDP, where one plain HAProxy process serves.
const (
	baseClient = "10.98.3.1"
	baseNode   = "10.98.3.254"
)

const (
	smallSize   = 4 << 10
	largeSize   = 64 << 20
	smallConns  = 16
	largeConns  = 64
	instances   = 2
	presignTime = time.Hour
)

// BenchmarkHTTPS measures S3 GETs over HTTPS through an ober node (XDP,
// sk_lookup, two single-threaded HAProxy instances pinned to CPUs 0 and
// 1) and, in the same run, through one HAProxy process with two threads
// and no XDP on the same node, the same certificate, backend and
// rendered configuration otherwise:
//
//	go test -run '^$' -bench 'HTTPS/small' -benchtime 3s ./bench/
//	go test -run '^$' -bench 'HTTPS/large' -benchtime 128x ./bench/
//
// requests/s: 4 KiB objects on 16 keep-alive connections, with p50/p99
// latency. GB/s: 64 MiB objects on up to 64 connections. ober hashes
// connections to instances instead of sharing one accept queue, so with
// few connections one instance may carry more than half of them:
// busiest-share reports that, and 128 objects over 64 connections keep it
// near one half. OBER_BENCH_INSTANCES=N compares N instances with N
// threads (default 2).
func BenchmarkHTTPS(b *testing.B) {
	n := instances
	if v, err := strconv.Atoi(os.Getenv("OBER_BENCH_INSTANCES")); err == nil && v > 0 {
		n = v
	}
	bin := buildOber(b)
	s := nodetest.New(b, bin, n)
	s.WriteConfig(s.Config(nodetest.Params{Instances: n, HealthInterval: time.Second}))
	s.Start()
	startBaseline(b, s, n)
	ctx := context.Background()
	mc := s.S3Client(nodetest.VIP.String())
	if err := mc.MakeBucket(ctx, "bench", minio.MakeBucketOptions{}); err != nil {
		b.Fatal(err)
	}
	for name, size := range map[string]int{"small": smallSize, "large": largeSize} {
		data := bytes.Repeat([]byte{0x5a}, size)
		if _, err := mc.PutObject(ctx, "bench", name, bytes.NewReader(data), int64(size), minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	targets := []struct{ name, host string }{{"ober", nodetest.VIP.String()}, {"haproxy", baseNode}}
	for _, kind := range []struct {
		object string
		conns  int
	}{{"small", smallConns}, {"large", largeConns}} {
		for _, tg := range targets {
			u := presign(b, s, tg.host, kind.object)
			b.Run(fmt.Sprintf("%s/%s", kind.object, tg.name), func(b *testing.B) {
				var before []uint64
				if tg.name == "ober" {
					before = assigned(b, s)
				}
				runGets(b, s, u, kind.conns, kind.object == "large")
				if tg.name == "ober" {
					// Connections are hashed, not balanced: with few of
					// them one instance may carry more than half.
					after := assigned(b, s)
					var total, most uint64
					for i := range after {
						d := after[i] - before[i]
						total += d
						most = max(most, d)
					}
					if total > 0 {
						b.ReportMetric(float64(most)/float64(total), "busiest-share")
					}
				}
			})
		}
	}
}

// assigned reads how many connections sk_lookup gave each instance.
func assigned(b *testing.B, s *nodetest.Site) []uint64 {
	d, err := loader.Open(loader.Options{Root: s.Root, MapsOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	c, err := d.Counters()
	if err != nil {
		b.Fatal(err)
	}
	out := make([]uint64, len(c.Assigned))
	for i, a := range c.Assigned {
		out[i] = a.Flows
	}
	return out
}

// presign makes a presigned GET URL for host: the signature covers the
// Host header, so each target gets its own.
func presign(b *testing.B, s *nodetest.Site, host, object string) *url.URL {
	u, err := s.S3Client(host).PresignedGetObject(context.Background(), "bench", object, presignTime, nil)
	if err != nil {
		b.Fatal(err)
	}
	return u
}

// runGets fetches u b.N times over conns keep-alive connections.
func runGets(b *testing.B, s *nodetest.Site, u *url.URL, conns int, large bool) {
	tr := &http.Transport{
		DialContext:         s.ClientDialer().DialContext,
		TLSClientConfig:     s.TLSConfig(),
		MaxIdleConnsPerHost: conns,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	var next atomic.Int64
	var bytesRead atomic.Int64
	lat := make([][]time.Duration, conns)
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				resp, err := client.Get(u.String())
				if err != nil {
					failed.Add(1)
					continue
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					continue
				}
				bytesRead.Add(n)
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d requests failed", f, b.N)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	if large {
		b.ReportMetric(float64(bytesRead.Load())/elapsed.Seconds()/1e9, "GB/s")
	} else {
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
}

// startBaseline runs one plain HAProxy with as many threads as ober has
// instances, rendered by ober's renderer, on a second link without XDP.
func startBaseline(b *testing.B, s *nodetest.Site, threads int) {
	b.Helper()
	netnstest.Veth(b, s.Client, "veth-c2", s.Node, "veth-n2", threads)
	s.Client.IP(b, "addr", "add", baseClient+"/24", "dev", "veth-c2")
	s.Node.IP(b, "addr", "add", baseNode+"/24", "dev", "veth-n2")
	var ln *net.TCPListener
	if err := s.Node.Do(func() error {
		l, err := net.Listen("tcp4", baseNode+":443")
		if err == nil {
			ln = l.(*net.TCPListener)
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	f, err := ln.File()
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	pems, _ := filepath.Glob(filepath.Join(s.Dir, "run", "tls", "https-*.pem"))
	if len(pems) != 1 {
		b.Fatalf("the node's certificate bundle: found %v", pems)
	}
	v, err := haproxy.DetectVersion(context.Background(), "haproxy")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	in := haproxy.Instance{
		Index: 0, Node: "baseline", StatsSocket: filepath.Join(dir, "stats.sock"), Threads: threads,
		Frontends: []haproxy.Frontend{{Name: "https", Mode: "tls", Port: 443, PEM: pems[0], Binds: []haproxy.Bind{{FD: 3, Family: 4}}}},
		Servers:   []haproxy.Server{{Name: "s3a", Addr: nodetest.BackendAddr, Weight: 100}},
		Balance:   "leastconn",
		Health:    haproxy.HealthCheck{Path: "/", Interval: time.Second, Fall: 2, Rise: 1},
		Timeouts: haproxy.Timeouts{Connect: 5 * time.Second, Client: 5 * time.Minute, Server: 5 * time.Minute,
			HTTPRequest: 30 * time.Second, HTTPKeepAlive: time.Minute},
		MaxConn: 5000,
		Version: v,
	}
	text, err := haproxy.Render(in)
	if err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, text, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := s.Node.Exec(context.Background(), "haproxy", "-f", cfg, "-db")
	cmd.ExtraFiles = []*os.File{f}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	rt := haproxy.Runtime{Path: in.StatsSocket, Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		rows, err := rt.Stat(context.Background())
		if err == nil && slices.ContainsFunc(haproxy.ServerStates(rows), func(st haproxy.ServerState) bool { return st.Up }) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("baseline HAProxy not ready: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// buildOber builds the ober binary for the site.
func buildOber(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "ober")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/ober").CombinedOutput()
	if err != nil {
		b.Fatalf("build ober: %v\n%s", err, out)
	}
	return bin
}
