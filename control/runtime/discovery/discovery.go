// Package discovery runs the discovery of every pool that has one: it
// fetches each source on its interval (and on each change a Waiter
// sees), applies the pool's failpolicy, and hands the daemon the pools
// whose backends changed, no more often than once per MinApplyGap, so
// that a flapping source cannot cause a storm of reloads. It keeps, per
// pool, what status and metrics show: the source, the last success and
// error, the backends found, and the changes applied and coalesced.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/discovery"
)

// MinApplyGap is the least time between two hand-overs to the daemon: a
// source that changes a hundred times in ten seconds costs at most about
// ten reloads.
const MinApplyGap = time.Second

// Pool is one pool's discovery, as the daemon sets it up.
type Pool struct {
	// Key names the pool, such as services[s3] or backends.
	Key string
	// Kind and Source are where the backends come from.
	Kind   string
	Source discovery.Source
	// Interval between fetches, Timeout of one.
	Interval, Timeout time.Duration
	// SetEmpty empties the pool when a fetch fails (failpolicy
	// setempty); otherwise the last backends stay (keeplast).
	SetEmpty bool
	// DrainFor is how long a backend the source no longer names stays
	// in the pool, drained, so that its connections finish rather than
	// being cut (the daemon's drain timeout).
	DrainFor time.Duration
}

// State is a pool's discovery as status shows it.
type State struct {
	Kind string
	// Backends are what the pool has now: the last fetch's, or the ones
	// kept from before a failure.
	Backends []discovery.Backend
	// Draining are the backends the source no longer names, kept
	// drained until DrainFor has passed since they went.
	Draining []discovery.Backend
	// Problems are the last fetch's refused entries.
	Problems []string
	// LastSuccess and LastError, with when the error happened.
	LastSuccess time.Time
	LastError   string
	ErrorAt     time.Time
	// Fetches and Failures count the fetches and the failed ones;
	// Changes the fetches that changed the backends; Applied the
	// hand-overs to the daemon that carried them (fewer when changes
	// came faster than MinApplyGap).
	Fetches, Failures, Changes, Applied uint64
}

// Options set a Runner up.
type Options struct {
	// Apply gets the pools whose backends changed, with their backends
	// now; it returns when they are in force (or refused).
	Apply func(ctx context.Context, changed map[string]config.Found) error
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Gap is the least time between two Applies; 0 means MinApplyGap.
	Gap time.Duration
	// RetryGap is the wait after a refused Apply; 0 means RetryGap.
	RetryGap time.Duration
}

// Runner runs the pools' discovery.
type Runner struct {
	o Options

	mu      sync.Mutex
	pools   map[string]*pool
	pending map[string]config.Found
	wake    chan struct{}
}

type pool struct {
	Pool
	cancel context.CancelFunc
	done   chan struct{}
	state  State
	// goneAt is when each draining backend left the source, by ID.
	goneAt map[string]time.Time
}

// New makes a Runner; Run starts its hand-overs.
func New(o Options) *Runner {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Gap == 0 {
		o.Gap = MinApplyGap
	}
	if o.RetryGap == 0 {
		o.RetryGap = RetryGap
	}
	return &Runner{o: o, pools: map[string]*pool{}, pending: map[string]config.Found{}, wake: make(chan struct{}, 1)}
}

// Set makes ps the running pools: a new pool starts fetching, a pool no
// longer named stops, a pool whose settings changed starts again. A pool
// that starts again keeps its backends until its first fetch.
func (r *Runner) Set(ctx context.Context, ps []Pool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]bool{}
	for _, p := range ps {
		want[p.Key] = true
		old := r.pools[p.Key]
		if old != nil && same(old.Pool, p) {
			continue
		}
		var keep State
		goneAt := map[string]time.Time{}
		if old != nil {
			old.cancel()
			if old.Source != p.Source {
				go closeAfter(old)
			}
			keep, goneAt = old.state, old.goneAt
		}
		keep.Kind = p.Kind
		np := &pool{Pool: p, state: keep, goneAt: goneAt, done: make(chan struct{})}
		pctx, cancel := context.WithCancel(ctx)
		np.cancel = cancel
		r.pools[p.Key] = np
		go r.run(pctx, np)
	}
	for k, p := range r.pools {
		if !want[k] {
			p.cancel()
			go closeAfter(p)
			delete(r.pools, k)
			delete(r.pending, k)
		}
	}
}

// closeAfter closes a stopped pool's source once its loop has ended.
func closeAfter(p *pool) {
	<-p.done
	closeSource(p.Source)
}

// same reports whether two set-ups of a pool are alike; a Source is
// compared by identity, so the daemon passes the same Source for an
// unchanged discovery block.
func same(a, b Pool) bool {
	return a.Kind == b.Kind && a.Source == b.Source && a.Interval == b.Interval && a.Timeout == b.Timeout &&
		a.SetEmpty == b.SetEmpty && a.DrainFor == b.DrainFor
}

// Stop ends every pool's fetching and waits for it.
func (r *Runner) Stop() {
	r.mu.Lock()
	var dones []chan struct{}
	var stopped []*pool
	for k, p := range r.pools {
		p.cancel()
		dones = append(dones, p.done)
		stopped = append(stopped, p)
		delete(r.pools, k)
	}
	r.mu.Unlock()
	for _, d := range dones {
		<-d
	}
	for _, p := range stopped {
		closeSource(p.Source)
	}
}

// Fetched waits until each pool of keys has been fetched once, or ctx
// ends.
func (r *Runner) Fetched(ctx context.Context, keys []string) {
	for {
		r.mu.Lock()
		done := true
		for _, k := range keys {
			if p, ok := r.pools[k]; ok && p.state.Fetches == 0 {
				done = false
			}
		}
		r.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// States are the pools' states by key.
func (r *Runner) States() map[string]State {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]State, len(r.pools))
	for k, p := range r.pools {
		st := p.state
		st.Backends = slices.Clone(st.Backends)
		st.Draining = slices.Clone(st.Draining)
		st.Problems = slices.Clone(st.Problems)
		out[k] = st
	}
	return out
}

// Found is every pool's backends now, and those draining, by key: what
// config.WithDiscovered takes.
func (r *Runner) Found() map[string]config.Found {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]config.Found, len(r.pools))
	for k, p := range r.pools {
		out[k] = config.Found{Backends: slices.Clone(p.state.Backends), Draining: slices.Clone(p.state.Draining)}
	}
	return out
}

// run fetches one pool until ctx ends.
func (r *Runner) run(ctx context.Context, p *pool) {
	defer close(p.done)
	w, push := p.Source.(discovery.Waiter)
	for {
		r.fetch(ctx, p)
		next := time.NewTimer(p.Interval)
		if push {
			// A change wakes the loop before the interval; the timer
			// stays as the net under a lost notification.
			changed := make(chan error, 1)
			wctx, cancel := context.WithCancel(ctx)
			go func() { changed <- w.Wait(wctx) }()
			select {
			case <-ctx.Done():
			case err := <-changed:
				if err != nil && ctx.Err() == nil {
					// A failed wait must not spin: the interval paces it.
					select {
					case <-ctx.Done():
					case <-next.C:
					}
				}
			case <-next.C:
			}
			cancel()
		} else {
			select {
			case <-ctx.Done():
			case <-next.C:
			}
		}
		next.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// fetch asks the source once and records what came of it.
func (r *Runner) fetch(ctx context.Context, p *pool) {
	fctx, cancel := context.WithTimeout(ctx, p.Timeout)
	res, err := p.Source.Fetch(fctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	now := r.o.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pools[p.Key] != p {
		return // replaced meanwhile
	}
	st := &p.state
	st.Fetches++
	next := st.Backends
	if err != nil {
		st.Failures++
		st.LastError, st.ErrorAt = err.Error(), now
		if errors.Is(err, context.DeadlineExceeded) {
			st.LastError = fmt.Sprintf("no answer within %s (%v)", p.Timeout, err)
		}
		r.o.Logger.Warn("discovery failed", "pool", p.Key, "kind", p.Kind, "err", st.LastError, "keeping", !p.SetEmpty)
		if p.SetEmpty {
			next = nil
		}
	} else {
		st.LastSuccess, st.LastError = now, ""
		st.Problems = res.Problems
		for _, pr := range res.Problems {
			r.o.Logger.Warn("discovery entry refused", "pool", p.Key, "problem", pr)
		}
		next = sorted(res.Backends)
	}
	if slices.Equal(next, st.Backends) {
		return
	}
	// What left starts draining; what came back stops.
	in := map[string]bool{}
	for _, b := range next {
		in[b.ID()] = true
		delete(p.goneAt, b.ID())
	}
	for _, b := range st.Backends {
		if !in[b.ID()] && p.DrainFor > 0 {
			if _, ok := p.goneAt[b.ID()]; !ok {
				p.goneAt[b.ID()] = now
				st.Draining = append(st.Draining, b)
			}
		}
	}
	st.Draining = slices.DeleteFunc(st.Draining, func(b discovery.Backend) bool { return in[b.ID()] })
	st.Backends = next
	st.Changes++
	r.changedLocked(p)
}

// changedLocked queues p's backends for the next Apply.
func (r *Runner) changedLocked(p *pool) {
	r.pending[p.Key] = config.Found{Backends: slices.Clone(p.state.Backends), Draining: slices.Clone(p.state.Draining)}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// sweep lets go of the draining backends whose time is up.
func (r *Runner) sweep() {
	now := r.o.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pools {
		n := len(p.state.Draining)
		p.state.Draining = slices.DeleteFunc(p.state.Draining, func(b discovery.Backend) bool {
			at, ok := p.goneAt[b.ID()]
			if ok && now.Sub(at) >= p.DrainFor {
				delete(p.goneAt, b.ID())
				return true
			}
			return false
		})
		if len(p.state.Draining) != n {
			r.changedLocked(p)
		}
	}
}

// sorted orders backends by identity, so that a source answering in
// another order is no change.
func sorted(bs []discovery.Backend) []discovery.Backend {
	out := slices.Clone(bs)
	slices.SortFunc(out, func(a, b discovery.Backend) int {
		if a.Host != b.Host {
			if a.Host < b.Host {
				return -1
			}
			return 1
		}
		return int(a.Port) - int(b.Port)
	})
	return out
}

// RetryGap is the wait after a refused Apply before its changes are
// offered again (with whatever came meanwhile).
const RetryGap = 5 * time.Second

// Run hands the changed pools to Apply, at most once per Gap, until ctx
// ends. Changes that arrive while an Apply runs or within the gap go in
// the next one together. A refused Apply's changes are offered again
// after RetryGap, unless newer ones replaced them.
func (r *Runner) Run(ctx context.Context) {
	var last time.Time
	gap := r.o.Gap
	sweep := time.NewTicker(r.o.Gap)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			r.sweep()
			continue
		case <-r.wake:
		}
		if wait := gap - r.o.Now().Sub(last); !last.IsZero() && wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		r.mu.Lock()
		batch := r.pending
		r.pending = map[string]config.Found{}
		r.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		last = r.o.Now()
		err := r.o.Apply(ctx, batch)
		r.mu.Lock()
		if err != nil {
			r.o.Logger.Error("discovered backends not applied; the running ones stay, and the change is offered again", "pools", len(batch), "retry_in", r.o.RetryGap, "err", err)
			for k, v := range batch {
				if _, newer := r.pending[k]; !newer && r.pools[k] != nil {
					r.pending[k] = v
				}
			}
			gap = r.o.RetryGap
			select {
			case r.wake <- struct{}{}:
			default:
			}
		} else {
			gap = r.o.Gap
			for k := range batch {
				if p, ok := r.pools[k]; ok {
					p.state.Applied++
				}
			}
		}
		r.mu.Unlock()
	}
}
