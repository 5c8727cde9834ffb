package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ober-ingress/ober/control/lib/procstat"
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

// tally is what the workers of one window did.
type tally struct {
	ok, failed int
	first      error // the first failure, for the error message
	elapsed    time.Duration
}

// runWindow runs conns workers, each calling do in a loop, for window.
// A call that fails because the window ended is neither a success nor a
// failure. atEnd runs the moment the window ends, before the workers have
// wound down, to read what was delivered by then.
func runWindow(ctx context.Context, conns int, window time.Duration, atEnd func(), do func(ctx context.Context, worker int) error) (tally, error) {
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var ok, failed atomic.Int64
	var first error
	var once sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for wctx.Err() == nil {
				err := do(wctx, w)
				switch {
				case err == nil:
					ok.Add(1)
				case wctx.Err() != nil:
				default:
					failed.Add(1)
					once.Do(func() { first = err })
				}
			}
		})
	}
	<-wctx.Done()
	tl := tally{elapsed: time.Since(start)}
	if atEnd != nil {
		atEnd()
	}
	wg.Wait()
	tl.ok, tl.failed, tl.first = int(ok.Load()), int(failed.Load()), first
	return tl, ctx.Err()
}

// throughput moves objects of size bytes with op (GET or PUT) over conns
// keep-alive connections for window.
func (t *topology) throughput(ctx context.Context, target, op string, size int64, conns int, window time.Duration) (Throughput, error) {
	tr := t.transport(conns, true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := fmt.Sprintf("https://%s/bench/%d", t.addr(target), size)
	var got atomic.Int64
	recv0 := t.received.Load()
	pids := t.haproxyPIDs(target)
	cpu0, sys0 := cpuTimes(pids)
	mach0, err := readMachineCPU()
	if err != nil {
		return Throughput{}, err
	}
	tx0, rx0, err := t.clientPackets(target)
	if err != nil {
		return Throughput{}, err
	}
	var cpu, sys float64
	var mach machineCPU
	var tx, rx uint64
	var atEndErr error
	var delivered int64
	bufs := make([][]byte, conns)
	tl, err := runWindow(ctx, conns, window, func() {
		cpu, sys = cpuTimes(pids)
		cpu, sys = cpu-cpu0, sys-sys0
		m, err := readMachineCPU()
		mach = m.sub(mach0)
		tx, rx, atEndErr = t.clientPackets(target)
		atEndErr = errors.Join(err, atEndErr)
		// Bytes delivered by the end of the window: for GET what the
		// client read, for PUT what the backend read.
		delivered = got.Load()
		if op == http.MethodPut {
			delivered = t.received.Load() - recv0
		}
	}, func(ctx context.Context, w int) error {
		if bufs[w] == nil {
			bufs[w] = make([]byte, 256<<10)
		}
		return t.transfer(ctx, client, op, url, size, bufs[w], &got)
	})
	if err := errors.Join(err, atEndErr); err != nil {
		return Throughput{}, err
	}
	p := Throughput{
		Op: op, Target: target, ObjectBytes: int(size), Conns: conns,
		Objects: tl.ok, Bytes: delivered, Seconds: tl.elapsed.Seconds(),
		GBps: float64(delivered) / tl.elapsed.Seconds() / 1e9, Errors: tl.failed,
		HAProxyCPUSeconds: cpu, HAProxySysSeconds: sys,
		MachineCPUSeconds: mach.busy, SoftirqCPUSeconds: mach.softirq,
		ClientTxPackets: int64(tx - tx0), ClientRxPackets: int64(rx - rx0),
	}
	if cpu > 0 {
		p.GBPerCPUSecond = float64(delivered) / cpu / 1e9
	}
	if p.Bytes == 0 {
		return p, fmt.Errorf("%s %s %d B x %d conns: nothing delivered in %v (first error: %v)", op, target, size, conns, window, tl.first)
	}
	t.settle(ctx, pids)
	return p, nil
}

// settle waits (up to 3 s) until pids are idle: the transfers a window
// cut off end in HAProxy a little later, and that work must not fall in
// the next point's window, which is the other target's.
func (t *topology) settle(ctx context.Context, pids []int) {
	const tick = 100 * time.Millisecond
	deadline := time.Now().Add(3 * time.Second)
	prev := cpuSeconds(pids)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(tick):
		}
		now := cpuSeconds(pids)
		// Under 5 % of a CPU per process: idle but for health checks.
		if now-prev < 0.05*tick.Seconds()*float64(len(pids)) {
			return
		}
		prev = now
	}
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
// clients for window. resumed is the same with tickets kept.
func (t *topology) handshakes(ctx context.Context, target string, conns int, window time.Duration) (Handshakes, error) {
	tr := t.transport(conns, false)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := fmt.Sprintf("https://%s/bench/0", t.addr(target))
	var sink atomic.Int64
	cpu := t.cpuMeter(target)
	tl, err := runWindow(ctx, conns, window, cpu.stop, func(ctx context.Context, _ int) error {
		return t.transfer(ctx, client, http.MethodGet, url, 0, nil, &sink)
	})
	if err != nil {
		return Handshakes{}, err
	}
	h := Handshakes{Target: target, Conns: conns, Handshakes: tl.ok, Seconds: tl.elapsed.Seconds(),
		ConnsPerSecond: float64(tl.ok) / tl.elapsed.Seconds(), Errors: tl.failed}
	cpu.fill(&h)
	t.settle(ctx, t.haproxyPIDs(target))
	if tl.ok == 0 {
		return h, fmt.Errorf("handshakes %s: none completed in %v (first error: %v)", target, window, tl.first)
	}
	return h, nil
}

// resumed is handshakes with clients that keep their session tickets:
// each of the conns clients has its own session cache, makes one full
// handshake before the window, and then resumes its session on every new
// connection (one 0-byte GET each) for window.
func (t *topology) resumed(ctx context.Context, target string, conns int, window time.Duration) (Handshakes, error) {
	url := fmt.Sprintf("https://%s/bench/0", t.addr(target))
	clients := make([]*http.Client, conns)
	for i := range clients {
		tr := t.transport(1, false)
		tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		defer tr.CloseIdleConnections()
		clients[i] = &http.Client{Transport: tr}
		if _, err := getZero(ctx, clients[i], url); err != nil {
			return Handshakes{}, fmt.Errorf("resumed handshakes %s: the first connection: %w", target, err)
		}
	}
	var resumed atomic.Int64
	cpu := t.cpuMeter(target)
	tl, err := runWindow(ctx, conns, window, cpu.stop, func(ctx context.Context, w int) error {
		did, err := getZero(ctx, clients[w], url)
		if did {
			resumed.Add(1)
		}
		return err
	})
	if err != nil {
		return Handshakes{}, err
	}
	h := Handshakes{Target: target, Conns: conns, Handshakes: tl.ok, Seconds: tl.elapsed.Seconds(),
		ConnsPerSecond: float64(tl.ok) / tl.elapsed.Seconds(), Errors: tl.failed, Resumed: int(resumed.Load())}
	cpu.fill(&h)
	t.settle(ctx, t.haproxyPIDs(target))
	if tl.ok == 0 {
		return h, fmt.Errorf("resumed handshakes %s: none completed in %v (first error: %v)", target, window, tl.first)
	}
	return h, nil
}

// cpuMeter measures the CPU time of a target's HAProxy processes from
// now until stop.
type cpuMeter struct {
	pids      []int
	start, at float64
}

func (t *topology) cpuMeter(target string) *cpuMeter {
	pids := t.haproxyPIDs(target)
	return &cpuMeter{pids: pids, start: cpuSeconds(pids)}
}

func (m *cpuMeter) stop() { m.at = cpuSeconds(m.pids) - m.start }

// fill sets h's CPU figures.
func (m *cpuMeter) fill(h *Handshakes) {
	h.HAProxyCPUSeconds = m.at
	if m.at > 0 {
		h.PerCPUSecond = float64(h.Handshakes) / m.at
	}
}

// getZero GETs a 0-byte object on a new connection and reports whether
// its TLS session was resumed. Reading the answer is what stores a TLS
// 1.3 ticket: it arrives after the handshake.
func getZero(ctx context.Context, client *http.Client, url string) (resumed bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp.TLS != nil && resp.TLS.DidResume, nil
}

// small GETs size-byte objects over conns keep-alive connections for
// window, with each request's latency.
func (t *topology) small(ctx context.Context, target string, size, conns int, window time.Duration) (Small, error) {
	tr := t.transport(conns, true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := fmt.Sprintf("https://%s/bench/%d", t.addr(target), size)
	var sink atomic.Int64
	// Open the connections first: this figure is about requests, the
	// handshakes have their own.
	var warm sync.WaitGroup
	for range conns {
		warm.Go(func() { _ = t.transfer(ctx, client, http.MethodGet, url, int64(size), nil, &sink) })
	}
	warm.Wait()
	lat := make([][]time.Duration, conns)
	bufs := make([][]byte, conns)
	tl, err := runWindow(ctx, conns, window, nil, func(ctx context.Context, w int) error {
		if bufs[w] == nil {
			bufs[w] = make([]byte, 64<<10)
		}
		t0 := time.Now()
		err := t.transfer(ctx, client, http.MethodGet, url, int64(size), bufs[w], &sink)
		if err == nil {
			lat[w] = append(lat[w], time.Since(t0))
		}
		return err
	})
	if err != nil {
		return Small{}, err
	}
	all := slices.Concat(lat...)
	s := Small{Target: target, Conns: conns, Bytes: size, Requests: len(all), Seconds: tl.elapsed.Seconds(),
		Errors: tl.failed, latencies: all}
	if len(all) == 0 {
		return s, fmt.Errorf("small %s: no request completed in %v (first error: %v)", target, window, tl.first)
	}
	slices.Sort(all)
	s.setRates()
	return s, nil
}

// haproxyPIDs are the HAProxy processes serving target.
func (t *topology) haproxyPIDs(target string) []int {
	if target == TargetOber && t.variant.pid != 0 {
		return []int{t.variant.pid}
	}
	if target == TargetHAProxy || t.aa {
		return []int{t.base.pid}
	}
	return t.instancePIDs
}

// cpuSeconds sums the user and system time of pids.
func cpuSeconds(pids []int) float64 {
	total, _ := cpuTimes(pids)
	return total
}

// cpuTimes sums the CPU time of pids, and apart its system part: what
// the kernel spent on their behalf (socket copies, TCP). One read of
// each process gives both.
func cpuTimes(pids []int) (total, sys float64) {
	for _, pid := range pids {
		if st, err := procstat.Read(pid); err == nil {
			total += st.CPUSeconds()
			sys += st.SysSeconds()
		}
	}
	return total, sys
}
