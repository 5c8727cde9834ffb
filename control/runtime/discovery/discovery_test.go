package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/discovery"
)

// fakeSource answers what the test sets, counting its fetches; with
// push, Wait returns on each Notify.
type fakeSource struct {
	mu      sync.Mutex
	res     discovery.Result
	err     error
	fetches int
	change  func(n int) discovery.Result // when set, answers a new result each fetch
	notify  chan struct{}
}

func (f *fakeSource) Fetch(context.Context) (discovery.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.change != nil {
		return f.change(f.fetches), nil
	}
	return f.res, f.err
}

func (f *fakeSource) set(res discovery.Result, err error) {
	f.mu.Lock()
	f.res, f.err = res, err
	f.mu.Unlock()
}

type pushSource struct{ *fakeSource }

func (p pushSource) Wait(ctx context.Context) error {
	select {
	case <-p.notify:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func backends(ports ...uint16) discovery.Result {
	var r discovery.Result
	for _, p := range ports {
		r.Backends = append(r.Backends, discovery.Backend{Host: "10.1.0.1", Port: p, Weight: -1})
	}
	return r
}

// applies records what the runner handed over.
type applies struct {
	mu    sync.Mutex
	calls []map[string]config.Found
	fail  error
}

func (a *applies) apply(_ context.Context, ch map[string]config.Found) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.calls = append(a.calls, ch)
	return nil
}

func (a *applies) last(key string) ([]discovery.Backend, int) {
	f, n := a.lastFound(key)
	return f.Backends, n
}

func (a *applies) lastFound(key string) (config.Found, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.calls) - 1; i >= 0; i-- {
		if f, ok := a.calls[i][key]; ok {
			return f, len(a.calls)
		}
	}
	return config.Found{}, len(a.calls)
}

func start(t *testing.T, o Options, ps ...Pool) *Runner {
	t.Helper()
	o.Logger = slog.New(slog.DiscardHandler)
	r := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	go r.Run(ctx)
	r.Set(ctx, ps)
	t.Cleanup(func() { cancel(); r.Stop() })
	return r
}

// A source that changes on every fetch, a hundred times a second, costs
// one Apply per gap, and the last Apply carries the last answer.
func TestStormIsCoalesced(t *testing.T) {
	src := &fakeSource{change: func(n int) discovery.Result { return backends(uint16(8000 + n)) }}
	a := &applies{}
	r := start(t, Options{Apply: a.apply, Gap: 100 * time.Millisecond},
		Pool{Key: "s", Kind: "srv", Source: src, Interval: 10 * time.Millisecond, Timeout: time.Second})
	time.Sleep(time.Second)
	st := r.States()["s"]
	_, n := a.last("s")
	require.Greater(t, st.Changes, uint64(30), "the source changed many times")
	require.LessOrEqual(t, n, 12, "at most one Apply per 100 ms gap in 1 s (and one at once)")
	require.Positive(t, n)
	require.Less(t, st.Applied, st.Changes, "changes were coalesced")
	// Quiet now: the last answer is applied.
	src.mu.Lock()
	src.change = nil
	src.res = backends(9999)
	src.mu.Unlock()
	require.Eventually(t, func() bool {
		b, _ := a.last("s")
		return len(b) == 1 && b[0].Port == 9999
	}, 2*time.Second, 10*time.Millisecond)
}

// keeplast keeps the last backends through a failure and says why;
// setempty empties the pool.
func TestFailPolicy(t *testing.T) {
	keep, empty := &fakeSource{res: backends(80, 81)}, &fakeSource{res: backends(90)}
	a := &applies{}
	r := start(t, Options{Apply: a.apply, Gap: 10 * time.Millisecond},
		Pool{Key: "keep", Kind: "srv", Source: keep, Interval: 20 * time.Millisecond, Timeout: time.Second},
		Pool{Key: "empty", Kind: "http", Source: empty, Interval: 20 * time.Millisecond, Timeout: time.Second, SetEmpty: true})
	require.Eventually(t, func() bool {
		k, _ := a.last("keep")
		e, _ := a.last("empty")
		return len(k) == 2 && len(e) == 1
	}, 2*time.Second, 10*time.Millisecond)
	keep.set(discovery.Result{}, errors.New("dial udp 10.0.0.53:53: connection refused"))
	empty.set(discovery.Result{}, errors.New("HTTP 500"))
	require.Eventually(t, func() bool {
		e, _ := a.last("empty")
		return len(e) == 0
	}, 2*time.Second, 10*time.Millisecond, "setempty empties the pool")
	require.Eventually(t, func() bool { return r.States()["keep"].LastError != "" }, 2*time.Second, 10*time.Millisecond)
	st := r.States()
	require.Len(t, st["keep"].Backends, 2, "keeplast keeps them")
	require.Equal(t, "dial udp 10.0.0.53:53: connection refused", st["keep"].LastError)
	require.Positive(t, st["keep"].Failures)
	k, _ := a.last("keep")
	require.Len(t, k, 2, "no Apply emptied the keeplast pool")
}

// A Waiter's change is fetched at once, long before the interval; the
// order of a source's answer is no change.
func TestPushAndOrder(t *testing.T) {
	src := &fakeSource{res: backends(80, 81), notify: make(chan struct{}, 1)}
	a := &applies{}
	r := start(t, Options{Apply: a.apply, Gap: 10 * time.Millisecond},
		Pool{Key: "c", Kind: "consul", Source: pushSource{src}, Interval: time.Hour, Timeout: time.Second})
	require.Eventually(t, func() bool { b, _ := a.last("c"); return len(b) == 2 }, 2*time.Second, 5*time.Millisecond)
	src.set(backends(81, 80), nil)
	src.notify <- struct{}{}
	require.Eventually(t, func() bool { return r.States()["c"].Fetches >= 2 }, 2*time.Second, 5*time.Millisecond)
	require.Equal(t, uint64(1), r.States()["c"].Changes, "the same backends in another order")
	src.set(backends(82), nil)
	src.notify <- struct{}{}
	require.Eventually(t, func() bool { b, _ := a.last("c"); return len(b) == 1 && b[0].Port == 82 }, 2*time.Second, 5*time.Millisecond)
}

// A refused Apply is offered again, with what changed meanwhile.
func TestApplyRetried(t *testing.T) {
	src := &fakeSource{res: backends(80)}
	a := &applies{fail: fmt.Errorf("reload refused")}
	start(t, Options{Apply: a.apply, Gap: 10 * time.Millisecond, RetryGap: 50 * time.Millisecond},
		Pool{Key: "f", Kind: "file", Source: src, Interval: time.Hour, Timeout: time.Second})
	time.Sleep(100 * time.Millisecond)
	a.mu.Lock()
	a.fail = nil
	a.mu.Unlock()
	require.Eventually(t, func() bool { b, _ := a.last("f"); return len(b) == 1 }, 2*time.Second, 10*time.Millisecond)
}

// Set stops a pool no longer named, and keeps a replaced pool's backends
// until its first fetch.
func TestSet(t *testing.T) {
	src := &fakeSource{res: backends(80)}
	a := &applies{}
	r := start(t, Options{Apply: a.apply, Gap: 10 * time.Millisecond},
		Pool{Key: "x", Kind: "file", Source: src, Interval: 10 * time.Millisecond, Timeout: time.Second})
	require.Eventually(t, func() bool { return len(r.Found()["x"].Backends) == 1 }, 2*time.Second, 5*time.Millisecond)
	r.Set(context.Background(), nil)
	_, ok := r.Found()["x"]
	require.False(t, ok)
	src.mu.Lock()
	n := src.fetches
	src.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	src.mu.Lock()
	require.LessOrEqual(t, src.fetches, n+1, "a removed pool stops fetching")
	src.mu.Unlock()
}

// A backend the source no longer names stays, drained, for DrainFor, so
// that its connections finish; then it goes. One that comes back before
// is no longer draining.
func TestDraining(t *testing.T) {
	src := &fakeSource{res: backends(80, 81, 82)}
	a := &applies{}
	r := start(t, Options{Apply: a.apply, Gap: 20 * time.Millisecond},
		Pool{Key: "d", Kind: "srv", Source: src, Interval: 20 * time.Millisecond, Timeout: time.Second, DrainFor: 400 * time.Millisecond})
	require.Eventually(t, func() bool { b, _ := a.last("d"); return len(b) == 3 }, 2*time.Second, 5*time.Millisecond)
	src.set(backends(80), nil)
	require.Eventually(t, func() bool {
		f, _ := a.lastFound("d")
		return len(f.Backends) == 1 && len(f.Draining) == 2
	}, 2*time.Second, 5*time.Millisecond, "81 and 82 drain")
	src.set(backends(80, 82), nil)
	require.Eventually(t, func() bool {
		f, _ := a.lastFound("d")
		return len(f.Backends) == 2 && len(f.Draining) == 1 && f.Draining[0].Port == 81
	}, 2*time.Second, 5*time.Millisecond, "82 came back")
	require.Eventually(t, func() bool {
		f, _ := a.lastFound("d")
		return len(f.Backends) == 2 && len(f.Draining) == 0
	}, 3*time.Second, 10*time.Millisecond, "81 goes once its drain time is over")
	require.Empty(t, r.States()["d"].Draining)
}
