package access

import (
	"sync"
	"time"
)

// Defaults of the failed-authentication limit: a source may fail
// DefaultFailBurst times in a row, then DefaultFailRate times a second.
const (
	DefaultFailRate   = 5
	DefaultFailBurst  = 10
	DefaultMaxSources = 4096
)

// Limiter counts failed authentications per source (an IP address, or a
// unix peer's uid) in token buckets: each failure takes a token, tokens
// come back at a steady rate, and a source with none left is answered 429
// without its credentials being looked at. Successes cost nothing, so a
// client that authenticates never notices it.
//
// The table is bounded: when it is full, the sources whose buckets have
// refilled (nothing to remember) go first, then the fullest, so that a
// source being limited is the last forgotten.
type Limiter struct {
	rate, burst float64
	max         int
	now         func() time.Time

	mu      sync.Mutex
	sources map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was brought up to date
	last   time.Time // the last failure
}

// NewLimiter allows burst failures, then perSecond a second, from each of
// at most maxSources sources.
func NewLimiter(perSecond float64, burst, maxSources int) *Limiter {
	return &Limiter{
		rate:    perSecond,
		burst:   float64(burst),
		max:     maxSources,
		now:     time.Now,
		sources: make(map[string]*bucket),
	}
}

// refill brings b's tokens up to now; the caller holds l.mu.
func (l *Limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.at = now
	}
}

// Allow reports whether src may try to authenticate, and if not, how long
// until it may.
func (l *Limiter) Allow(src string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.sources[src]
	if !ok {
		return true, 0
	}
	now := l.now()
	l.refill(b, now)
	if b.tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// Fail records a failed authentication of src, and reports whether it
// was the one that used its last try up.
func (l *Limiter) Fail(src string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.sources[src]
	if !ok {
		if len(l.sources) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.sources[src] = b
	}
	l.refill(b, now)
	was := b.tokens
	b.tokens = max(0, b.tokens-1)
	b.last = now
	return was >= 1 && b.tokens < 1
}

// evict makes room for one source; the caller holds l.mu.
func (l *Limiter) evict(now time.Time) {
	for k, b := range l.sources {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.sources, k)
		}
	}
	for len(l.sources) >= l.max {
		// The fullest bucket says the least; an empty one is a source
		// being limited right now, and goes last.
		var victim string
		var vb *bucket
		for k, b := range l.sources {
			if vb == nil || b.tokens > vb.tokens || (b.tokens == vb.tokens && b.last.Before(vb.last)) {
				victim, vb = k, b
			}
		}
		delete(l.sources, victim)
	}
}

// Len is the number of sources remembered.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}
