package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The load generators. Each runs for a fixed window and stops by itself:
// a point's figure is what was delivered in the window, so a large object
// still in flight at the end counts with the bytes it delivered, and no
// point can run longer than its window plus the time to cancel.

// transport is an HTTPS client of one target from the client namespace.
func (t *topology) transport(conns int, keepAlive bool) *http.Transport {
	return &http.Transport{
		DialContext:         t.dial.DialContext,
		TLSClientConfig:     t.tls.Clone(),
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableKeepAlives:   !keepAlive,
		DisableCompression:  true,
		// Large buffers: the client should not be what limits GB/s.
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      256 << 10,
		TLSHandshakeTimeout: 10 * time.Second,
	}
}

// stopped tells an error caused by the window's end from a real one.
func stopped(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil
}

// throughput moves objects of size bytes with op (GET or PUT) over conns
// keep-alive connections for window.
func (t *topology) throughput(ctx context.Context, target, op string, size int64, conns int, window time.Duration) (Throughput, error) {
	tr := t.transport(conns, true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := fmt.Sprintf("https://%s/bench/%d", addr(target), size)
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var got atomic.Int64
	recv0 := t.received.Load()
	var objects, failures atomic.Int64
	var firstErr error
	var errOnce sync.Once
	pids := t.haproxyPIDs(target)
	cpu0 := cpuSeconds(pids)
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for wctx.Err() == nil {
				err := t.transfer(wctx, client, op, url, size, buf, &got)
				switch {
				case err == nil:
					objects.Add(1)
				case stopped(wctx, err):
				default:
					failures.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		})
	}
	<-wctx.Done()
	elapsed := time.Since(start)
	cpu := cpuSeconds(pids) - cpu0
	// Bytes delivered by the end of the window: for GET what the client
	// read, for PUT what the backend read.
	delivered := got.Load()
	if op == http.MethodPut {
		delivered = t.received.Load() - recv0
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Throughput{}, err
	}
	p := Throughput{
		Op: op, Target: target, ObjectBytes: int(size), Conns: conns,
		Objects: int(objects.Load()), Bytes: delivered, Seconds: elapsed.Seconds(),
		GBps: float64(delivered) / elapsed.Seconds() / 1e9, Errors: int(failures.Load()),
		HAProxyCPUSeconds: cpu,
	}
	if cpu > 0 {
		p.GBPerCPUSecond = float64(delivered) / cpu / 1e9
	}
	if p.Bytes == 0 {
		return p, fmt.Errorf("%s %s %d B x %d conns: nothing delivered in %v (first error: %v)", op, target, size, conns, window, firstErr)
	}
	return p, nil
}

// transfer does one GET or PUT, counting GET bytes as they arrive.
func (t *topology) transfer(ctx context.Context, client *http.Client, op, url string, size int64, buf []byte, got *atomic.Int64) error {
	var body io.Reader
	if op == http.MethodPut {
		body = &pattern{left: size}
	}
	req, err := http.NewRequestWithContext(ctx, op, url, body)
	if err != nil {
		return err
	}
	if op == http.MethodPut {
		req.ContentLength = size
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var n int64
	if op == http.MethodGet {
		n, err = io.CopyBuffer(countingDiscard{got}, resp.Body, buf)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", op, url, resp.Status)
	}
	if op == http.MethodGet && n != size {
		return fmt.Errorf("GET %s: %d of %d bytes", url, n, size)
	}
	return nil
}

// pattern is a PUT body of left bytes from the shared chunk.
type pattern struct{ left int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := copy(b, chunk[:min(int64(len(chunk)), p.left)])
	p.left -= int64(n)
	return n, nil
}

// handshakes opens a new TLS connection for every request (a full
// handshake: the client keeps no session tickets) on conns concurrent
// clients for window.
func (t *topology) handshakes(ctx context.Context, target string, conns int, window time.Duration) (Handshakes, error) {
	tr := t.transport(conns, false)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := fmt.Sprintf("https://%s/bench/0", addr(target))
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var done, failures, sink atomic.Int64
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for wctx.Err() == nil {
				err := t.transfer(wctx, client, http.MethodGet, url, 0, nil, &sink)
				switch {
				case err == nil:
					done.Add(1)
				case stopped(wctx, err):
				default:
					failures.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		})
	}
	<-wctx.Done()
	elapsed := time.Since(start)
	n := done.Load()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Handshakes{}, err
	}
	h := Handshakes{Target: target, Conns: conns, Handshakes: int(n), Seconds: elapsed.Seconds(),
		ConnsPerSecond: float64(n) / elapsed.Seconds(), Errors: int(failures.Load())}
	if n == 0 {
		return h, fmt.Errorf("handshakes %s: none completed in %v (first error: %v)", target, window, firstErr)
	}
	return h, nil
}

// small GETs size-byte objects over conns keep-alive connections for
// window, with each request's latency.
func (t *topology) small(ctx context.Context, target string, size, conns int, window time.Duration) (Small, error) {
	tr := t.transport(conns, true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := fmt.Sprintf("https://%s/bench/%d", addr(target), size)
	// Open the connections first: this figure is about requests, the
	// handshakes have their own.
	var warm sync.WaitGroup
	for range conns {
		warm.Go(func() { _ = t.transfer(ctx, client, http.MethodGet, url, int64(size), nil, new(atomic.Int64)) })
	}
	warm.Wait()
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	lat := make([][]time.Duration, conns)
	var failures atomic.Int64
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	var sink atomic.Int64
	for w := range conns {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for wctx.Err() == nil {
				t0 := time.Now()
				err := t.transfer(wctx, client, http.MethodGet, url, int64(size), buf, &sink)
				switch {
				case err == nil:
					lat[w] = append(lat[w], time.Since(t0))
				case stopped(wctx, err):
				default:
					failures.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		})
	}
	<-wctx.Done()
	elapsed := time.Since(start)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Small{}, err
	}
	all := slices.Concat(lat...)
	s := Small{Target: target, Conns: conns, Bytes: size, Requests: len(all), Seconds: elapsed.Seconds(),
		Errors: int(failures.Load())}
	if len(all) == 0 {
		return s, fmt.Errorf("small %s: no request completed in %v (first error: %v)", target, window, firstErr)
	}
	slices.Sort(all)
	s.RequestsPerSecond = float64(len(all)) / elapsed.Seconds()
	s.P50Ms = float64(all[len(all)/2]) / 1e6
	s.P99Ms = float64(all[len(all)*99/100]) / 1e6
	return s, nil
}

// haproxyPIDs are the HAProxy processes serving target.
func (t *topology) haproxyPIDs(target string) []int {
	if target == TargetHAProxy {
		return []int{t.basePID}
	}
	return t.instancePIDs
}

// cpuSeconds sums the user and system time of pids (fields 14 and 15 of
// /proc/PID/stat, in clock ticks of 1/100 s on Linux).
func cpuSeconds(pids []int) float64 {
	var ticks uint64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// f[0] is field 3; utime is field 14, stime 15.
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		ticks += u + st
	}
	return float64(ticks) / 100
}
