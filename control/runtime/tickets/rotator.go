package tickets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/lib/haproxy"
)

// recheck is how often the rotator looks at the instances between epoch
// boundaries: one started from the file just before a rotation, or
// taken over from an earlier ober, is brought up to date within it.
const recheck = 30 * time.Second

// Options configure a Rotator.
type Options struct {
	// File is the keys file the instances load (tls-ticket-keys).
	File string
	// Instances are the runtime API sockets of the running instances
	// that loaded File.
	Instances func() []string
	// Now is the clock; nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Status is what status and metrics show: never a key.
type Status struct {
	// Epoch is the epoch whose key encrypts; Period its length, 0
	// while tickets are off.
	Epoch  int64
	Period time.Duration
	// Next is when the next epoch begins.
	Next time.Time
	// Rotations counts the epochs this process moved the instances to
	// (at start and at each boundary); Failures the pushes to an
	// instance that failed (retried at the next pass).
	Rotations, Failures uint64
	// Shared says the seed is the configured key_file, the same on
	// every node; false, it is the node's own.
	Shared bool
}

// Rotator keeps File and every instance on the current epoch's keys.
type Rotator struct {
	opts Options
	log  *slog.Logger
	kick chan struct{}

	mu     sync.Mutex
	seed   []byte
	period time.Duration
	shared bool
	// written is the epoch File holds; synced, per socket, the epoch
	// its instance was last found or put on.
	written int64
	synced  map[string]int64
	st      Status
}

// New makes a rotator; Set gives it its keys.
func New(opts Options) *Rotator {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Rotator{opts: opts, log: opts.Logger, kick: make(chan struct{}, 1), written: -1 << 62, synced: map[string]int64{}}
}

// Set makes seed and period the keys' (a start or a reload) and writes
// File for the current epoch, so that an instance started after Set
// returns loads the current keys. shared is what Status reports.
func (r *Rotator) Set(seed []byte, period time.Duration, shared bool) error {
	if len(seed) == 0 || period < time.Second {
		return fmt.Errorf("ticket keys: need a seed and a period of at least 1s")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := !slices.Equal(r.seed, seed) || r.period != period
	r.seed, r.period, r.shared = slices.Clone(seed), period, shared
	if changed {
		// Every instance gets the new keys, whatever epoch it is on.
		clear(r.synced)
		r.written = -1 << 62
	}
	epoch := Epoch(r.opts.Now(), period)
	if _, err := r.writeLocked(epoch); err != nil {
		return err
	}
	r.st.Epoch, r.st.Period, r.st.Next, r.st.Shared = epoch, period, Start(epoch+1, period), shared
	return nil
}

// Off stops the rotations (tickets turned off): the keys file stays
// for the instances still running, which keep their keys.
func (r *Rotator) Off() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seed, r.period, r.shared = nil, 0, false
	clear(r.synced)
	r.written = -1 << 62
	r.st.Epoch, r.st.Period, r.st.Next, r.st.Shared = 0, 0, time.Time{}, false
}

// writeLocked writes File for epoch unless it holds it already.
func (r *Rotator) writeLocked(epoch int64) (bool, error) {
	if r.written == epoch {
		return false, nil
	}
	data, err := File(r.seed, r.period, epoch)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(r.opts.File), 0o700); err != nil {
		return false, fmt.Errorf("ticket keys: %w", err)
	}
	// Root's alone: HAProxy reads it as root, before it drops its
	// privileges.
	if err := atomicfile.Write(r.opts.File, data, 0o600); err != nil {
		return false, fmt.Errorf("ticket keys: %w", err)
	}
	r.written = epoch
	return true, nil
}

// Kick has Run look at the instances now (new ones started).
func (r *Rotator) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run rotates at every epoch boundary, and brings new instances up to
// date when kicked and every recheck, until ctx ends.
func (r *Rotator) Run(ctx context.Context) {
	for {
		if err := r.Sync(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("tls ticket keys: an instance is not on the current keys; trying again", "err", err)
		}
		wait := recheck
		if next := r.Status().Next; !next.IsZero() {
			wait = min(wait, max(next.Sub(r.opts.Now()), 0)+10*time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// Sync writes File for the current epoch and puts every instance on its
// keys: it returns once each is, or with why one is not.
func (r *Rotator) Sync(ctx context.Context) error {
	r.mu.Lock()
	if r.seed == nil {
		r.mu.Unlock()
		return nil
	}
	seed, period := r.seed, r.period
	epoch := Epoch(r.opts.Now(), period)
	rotated, err := r.writeLocked(epoch)
	r.st.Epoch, r.st.Period, r.st.Next, r.st.Shared = epoch, period, Start(epoch+1, period), r.shared
	if rotated {
		r.st.Rotations++
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if rotated {
		r.log.Info("tls ticket keys rotated", "epoch", epoch, "next", Start(epoch+1, period).UTC().Format(time.RFC3339))
	}
	want, err := Keys(seed, period, epoch)
	if err != nil {
		return err
	}
	var socks []string
	if r.opts.Instances != nil {
		socks = r.opts.Instances()
	}
	var errs []error
	done := map[string]int64{}
	for _, s := range socks {
		r.mu.Lock()
		e, ok := r.synced[s]
		r.mu.Unlock()
		if ok && e == epoch {
			done[s] = epoch
			continue
		}
		if err := r.syncInstance(ctx, s, want); err != nil {
			errs = append(errs, err)
			r.mu.Lock()
			r.st.Failures++
			r.mu.Unlock()
			continue
		}
		done[s] = epoch
	}
	r.mu.Lock()
	// Sockets of instances gone are forgotten; a socket path reused by
	// a new instance is looked at again.
	if slices.Equal(r.seed, seed) && r.period == period {
		r.synced = done
	}
	r.mu.Unlock()
	return errors.Join(errs...)
}

// syncInstance gives one instance want, pushing as few keys as it can:
// HAProxy shifts its keys at each one, so the one it lacks when a
// period went by, all three otherwise.
func (r *Rotator) syncInstance(ctx context.Context, socket string, want []string) error {
	rt := haproxy.Runtime{Path: socket}
	have, err := rt.TLSKeys(ctx, r.opts.File)
	if err != nil {
		return err
	}
	if slices.Equal(have, want) {
		return nil
	}
	push := want
	if len(have) == Slots && slices.Equal(have[1:], want[:Slots-1]) {
		push = want[Slots-1:]
	}
	for _, k := range push {
		if err := rt.SetTLSKey(ctx, r.opts.File, k); err != nil {
			return err
		}
	}
	return nil
}

// Status is the rotator's state.
func (r *Rotator) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}
