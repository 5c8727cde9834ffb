// Package pulse is ober's health checking of backends: one checker per
// backend per node, whatever the number of HAProxy instances, so that a
// backend is probed once and the instances, the status API, the metrics
// and the announce policy share one verdict.
//
// A checker runs its target's check every interval, start to start: a
// slow check delays the next and never overlaps it. A target turns down
// after Fall consecutive failures and up after Rise consecutive passes;
// a result of the other kind restarts the count, so a backend failing
// one check in three never goes down. The first checks of many targets
// are spread over their interval, and the checks that run at once are
// bounded (exec checks far more tightly than network ones), so that
// thousands of backends neither fire together nor fork the node to
// death.
package pulse

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Pulse.
type Options struct {
	Logger *slog.Logger
	// OnChange is told each verdict change, in order, from one goroutine
	// of the pulse and without its lock held: it may call State, States
	// and Set, not Close. A call may arrive for a key that a concurrent
	// Set is removing.
	OnChange func(key string, up bool)
	// MaxExec bounds the exec checks running at once; default
	// max(4, GOMAXPROCS). MaxNetwork bounds the other checks; default
	// 512. A check waiting for its turn is late; its timeout starts
	// when it runs.
	MaxExec, MaxNetwork int
}

// Status is a target's health.
type Status struct {
	// Up is the verdict; Since when it was last reached (or the target
	// added).
	Up    bool
	Since time.Time
	// Passed and Failed count the target's checks.
	Passed, Failed uint64
	// Health is the fraction of the last 100 checks that passed (of
	// those made, if fewer); before the first check, 1 if Up, else 0.
	Health float64
	// LastError is why the last check failed; empty if it passed.
	LastError    string
	LastDuration time.Duration
	// Consecutive counts the last checks in a row with the last one's
	// result (passes if LastError is empty); 0 before the first check
	// and after the check changed.
	Consecutive int
}

// Pulse runs the checkers of a set of targets.
type Pulse struct {
	opts    Options
	log     *slog.Logger
	netSem  chan struct{}
	execSem chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	targets map[string]*target
	closed  bool
	// stepped checkers wait for Step instead of their interval (tests).
	stepped bool
	// events wait for the dispatcher to hand them to OnChange.
	events       []event
	wake         chan struct{}
	dispatchDone chan struct{}

	live atomic.Int64 // running checker goroutines
}

type target struct {
	t       Target // normalized
	status  Status
	lastOK  bool // the result Status.Consecutive counts
	hist    history
	checker *checker // nil for KindNone
}

type event struct {
	key string
	up  bool
}

// New makes a Pulse with no targets; Close stops it.
func New(opts Options) *Pulse {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxExec <= 0 {
		opts.MaxExec = max(4, runtime.GOMAXPROCS(0))
	}
	if opts.MaxNetwork <= 0 {
		opts.MaxNetwork = 512
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pulse{
		opts:         opts,
		log:          opts.Logger,
		netSem:       make(chan struct{}, opts.MaxNetwork),
		execSem:      make(chan struct{}, opts.MaxExec),
		ctx:          ctx,
		cancel:       cancel,
		targets:      map[string]*target{},
		wake:         make(chan struct{}, 1),
		dispatchDone: make(chan struct{}),
	}
	go p.dispatch()
	return p
}

// Set makes targets the checked set. A key not seen before starts at its
// check's initial verdict; a key whose target is unchanged keeps its
// checker, verdict and history, so a reload does not reset health; a key
// whose address or check changed keeps its verdict, counters and history
// and restarts its checker and its streak; a key that is gone stops.
// An invalid target fails the whole Set, which then changes nothing.
func (p *Pulse) Set(targets []Target) error {
	next := make(map[string]Target, len(targets))
	cas := map[string]*caPool{}
	for i, t := range targets {
		n, err := normalize(t)
		if err != nil {
			return fmt.Errorf("pulse: target %d (%q): %w", i, t.Key, err)
		}
		if _, dup := next[n.Key]; dup {
			return fmt.Errorf("pulse: target %d: key %q: given twice", i, n.Key)
		}
		next[n.Key] = n
		if f := n.Check.CAFile; n.Check.Kind == KindHTTPS && n.Check.TLSVerify && f != "" && cas[f] == nil {
			// Its checks fail, saying why; other targets are checked.
			if cas[f] = loadCA(f); cas[f].err != nil {
				p.log.Warn("health checks cannot verify TLS", "error", cas[f].err)
			}
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("pulse: closed")
	}
	now := time.Now()
	var added, changed, removed int
	for key, tg := range p.targets {
		if _, ok := next[key]; !ok {
			tg.stop()
			delete(p.targets, key)
			removed++
		}
	}
	for key, n := range next {
		tg := p.targets[key]
		switch {
		case tg == nil:
			tg = &target{t: n, status: Status{Up: n.Check.InitialUp || n.Check.Kind == KindNone, Since: now}}
			p.targets[key] = tg
			added++
		case sameTarget(tg.t, n):
			continue
		default:
			tg.stop()
			tg.t = n
			tg.status.Consecutive = 0
			changed++
			if n.Check.Kind == KindNone {
				tg.hist = history{}
				if !tg.status.Up {
					p.flip(tg, true, now)
				}
			}
		}
		if n.Check.Kind != KindNone {
			p.start(tg, cas)
		}
	}
	if added+changed+removed > 0 {
		p.log.Debug("health check targets set", "targets", len(p.targets), "added", added, "changed", changed, "removed", removed)
	}
	return nil
}

// State returns key's status.
func (p *Pulse) State(key string) (Status, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	tg := p.targets[key]
	if tg == nil {
		return Status{}, false
	}
	return tg.snapshot(), true
}

// States returns every target's status by key.
func (p *Pulse) States() map[string]Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Status, len(p.targets))
	for key, tg := range p.targets {
		out[key] = tg.snapshot()
	}
	return out
}

// Close stops every checker (killing running exec checks) and returns
// once they and OnChange calls have ended. Set fails afterwards.
func (p *Pulse) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.dispatchDone
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	<-p.dispatchDone
}

func (tg *target) snapshot() Status {
	s := tg.status
	switch {
	case tg.hist.n > 0:
		s.Health = float64(tg.hist.passed) / float64(tg.hist.n)
	case s.Up:
		s.Health = 1
	}
	return s
}

func (tg *target) stop() {
	if tg.checker != nil {
		tg.checker.cancel()
		tg.checker = nil
	}
}

// start runs a checker for tg; with p.mu held.
func (p *Pulse) start(tg *target, cas map[string]*caPool) {
	c := newChecker(p, tg.t, cas)
	tg.checker = c
	if p.stepped {
		c.step = make(chan chan struct{})
	}
	p.wg.Add(1)
	p.live.Add(1)
	// A random start spreads the checks of targets added together over
	// their interval.
	go c.run(rand.N(tg.t.Check.Interval))
}

// record takes the result of one of c's checks; a checker replaced or
// stopped meanwhile has its result dropped.
func (p *Pulse) record(c *checker, err error, took time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	tg := p.targets[c.t.Key]
	if p.closed || tg == nil || tg.checker != c {
		return
	}
	ok := err == nil
	s := &tg.status
	s.LastDuration = took
	if ok {
		s.Passed++
		s.LastError = ""
	} else {
		s.Failed++
		s.LastError = err.Error()
	}
	if s.Consecutive > 0 && ok == tg.lastOK {
		s.Consecutive++
	} else {
		s.Consecutive, tg.lastOK = 1, ok
	}
	tg.hist.add(ok)
	need := tg.t.Check.Fall
	if ok {
		need = tg.t.Check.Rise
	}
	if ok != s.Up && s.Consecutive >= need {
		p.flip(tg, ok, time.Now())
	}
}

// flip changes tg's verdict; with p.mu held.
func (p *Pulse) flip(tg *target, up bool, now time.Time) {
	s := &tg.status
	s.Up, s.Since = up, now
	verdict := "down"
	if up {
		verdict = "up"
	}
	p.log.Info("backend "+verdict, "target", tg.t.Key, "addr", tg.t.Addr, "check", tg.t.Check.Kind,
		"consecutive", s.Consecutive, "error", s.LastError)
	if p.opts.OnChange == nil {
		return
	}
	p.events = append(p.events, event{tg.t.Key, up})
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// dispatch hands events to OnChange in order, so that a slow OnChange
// delays no check and two changes of a key never arrive swapped.
func (p *Pulse) dispatch() {
	defer close(p.dispatchDone)
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		}
		p.mu.Lock()
		evs := p.events
		p.events = nil
		p.mu.Unlock()
		for _, e := range evs {
			if p.ctx.Err() != nil {
				return
			}
			p.opts.OnChange(e.key, e.up)
		}
	}
}

// history is a target's last 100 results.
type history struct {
	ok      [100]bool
	n, next int
	passed  int
}

func (h *history) add(ok bool) {
	if h.n == len(h.ok) {
		if h.ok[h.next] {
			h.passed--
		}
	} else {
		h.n++
	}
	h.ok[h.next] = ok
	if ok {
		h.passed++
	}
	h.next = (h.next + 1) % len(h.ok)
}

// caPool is a CA file's certificates, or why there are none.
type caPool struct {
	pool *x509.CertPool
	err  error
}

func loadCA(path string) *caPool {
	pem, err := os.ReadFile(path)
	if err != nil {
		return &caPool{err: fmt.Errorf("ca_file: %w", err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return &caPool{err: fmt.Errorf("ca_file %s: no PEM certificate", path)}
	}
	return &caPool{pool: pool}
}
