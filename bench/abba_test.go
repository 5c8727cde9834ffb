package bench

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
)

func TestABBAOrderAndHalves(t *testing.T) {
	var order []string
	var windows []time.Duration
	got, err := abba(context.Background(), 4*time.Second, func(_ context.Context, target string, w time.Duration) (Throughput, error) {
		order = append(order, target)
		windows = append(windows, w)
		// The second half of each target moves twice the first's bytes.
		n := int64(1e9)
		if len(order) > 2 {
			n = 2e9
		}
		if target == TargetHAProxy {
			n /= 2
		}
		return Throughput{Target: target, Bytes: n, Seconds: w.Seconds(), Objects: 1, HAProxyCPUSeconds: 1}, nil
	}, Throughput.merge)
	require.NoError(t, err)
	require.Equal(t, []string{TargetOber, TargetHAProxy, TargetHAProxy, TargetOber}, order)
	require.Equal(t, []time.Duration{2 * time.Second, 2 * time.Second, 2 * time.Second, 2 * time.Second}, windows)
	require.Len(t, got, 2)
	// ober: 1e9 then 2e9 bytes over 4 s; the baseline: 0.5e9 then 0.5e9
	// (its two halves are the 2nd and 3rd calls).
	require.Equal(t, TargetOber, got[0].Target)
	require.Equal(t, int64(3e9), got[0].Bytes)
	require.InDelta(t, 0.75, got[0].GBps, 1e-9)
	require.InDelta(t, 1.5, got[0].GBPerCPUSecond, 1e-9)
	require.Equal(t, 2, got[0].Objects)
	require.Equal(t, TargetHAProxy, got[1].Target)
	require.Equal(t, int64(1.5e9), got[1].Bytes)
	require.InDelta(t, 0.375, got[1].GBps, 1e-9)
}

func TestABBAStopsAtFirstError(t *testing.T) {
	calls := 0
	boom := errors.New("boom")
	_, err := abba(context.Background(), time.Second, func(context.Context, string, time.Duration) (Handshakes, error) {
		calls++
		if calls == 2 {
			return Handshakes{}, boom
		}
		return Handshakes{Handshakes: 1, Seconds: 0.5}, nil
	}, Handshakes.merge)
	require.ErrorIs(t, err, boom)
	require.Equal(t, 2, calls)
}

func TestMergeRates(t *testing.T) {
	h := Handshakes{Handshakes: 100, Seconds: 1, Errors: 1}.merge(Handshakes{Handshakes: 300, Seconds: 1})
	require.Equal(t, 400, h.Handshakes)
	require.InDelta(t, 200, h.ConnsPerSecond, 1e-9)
	require.Equal(t, 1, h.Errors)

	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	// Percentiles come from the pooled latencies, not from averaging the
	// halves' percentiles: 99 fast requests in one half, one slow in the
	// other make p99 the slow one's neighbour, p50 fast.
	a := Small{Requests: 99, Seconds: 1, latencies: ms(make([]int, 99)...)}
	for i := range a.latencies {
		a.latencies[i] = time.Millisecond
	}
	b := Small{Requests: 1, Seconds: 1, latencies: ms(500)}
	s := a.merge(b)
	require.Equal(t, 100, s.Requests)
	require.InDelta(t, 50, s.RequestsPerSecond, 1e-9)
	require.InDelta(t, 1, s.P50Ms, 1e-9)
	require.InDelta(t, 500, s.P99Ms, 1e-9)
}

// TestVariantColumns: in an A/B of a lever, ober's column dials the
// variant HAProxy and counts its CPU, the baseline's column the
// baseline; without a variant, an A/A run measures the baseline in both,
// and a normal run ober's VIP and instances.
func TestVariantColumns(t *testing.T) {
	tp := &topology{aa: true, base: plainHAProxy{pid: 5}, variant: plainHAProxy{pid: 7}, instancePIDs: []int{11, 12}}
	require.Equal(t, "10.96.3.254:8443", tp.addr(TargetOber))
	require.Equal(t, []int{7}, tp.haproxyPIDs(TargetOber))
	require.Equal(t, "10.96.3.254:443", tp.addr(TargetHAProxy))
	require.Equal(t, []int{5}, tp.haproxyPIDs(TargetHAProxy))

	tp.variant = plainHAProxy{}
	require.Equal(t, "10.96.3.254:443", tp.addr(TargetOber))
	require.Equal(t, []int{5}, tp.haproxyPIDs(TargetOber))

	tp.aa = false
	require.Equal(t, "10.96.0.100:443", tp.addr(TargetOber))
	require.Equal(t, []int{11, 12}, tp.haproxyPIDs(TargetOber))
}

func TestVariantNeedsAA(t *testing.T) {
	_, err := Options{VariantTune: haproxy.Tune{BufSize: 65536}}.withDefaults()
	require.EqualError(t, err, "bench: a variant tune (bufsize=65536) is measured against the baseline in an A/A run only")
	o, err := Options{AA: true, VariantTune: haproxy.Tune{BufSize: 16384}}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, 16384, o.VariantTune.BufSize)
	require.Equal(t, haproxy.Tune{BufSize: config.DefaultBufSize}, o.Tune, "both targets run ober's defaults")
	o, err = Options{Tune: haproxy.Tune{BufSize: 32768, ServerRcvBuf: 1 << 20}}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, haproxy.Tune{BufSize: 32768, ServerRcvBuf: 1 << 20}, o.Tune, "--tune wins over the defaults")
}
