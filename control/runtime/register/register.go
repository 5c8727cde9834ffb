// Package register keeps ober's services registered in the local Consul
// agent, as GORB did: each service the node serves now (its VIP held) is
// registered as <service>-<port>-<proto>, with a check on ober's own
// /health; one the node no longer serves (withdrawn, VIP released, the
// service gone) is deregistered, and every one at stop.
package register

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"

	"github.com/ober-ingress/ober/control/lib/discovery/consul"
)

// Agent is what the registrar needs of Consul's agent (consul.Agent).
type Agent interface {
	Register(ctx context.Context, r consul.Registration) error
	Deregister(ctx context.Context, id string) error
}

// Registrar keeps the agent's registrations equal to the wanted ones.
type Registrar struct {
	agent Agent
	log   *slog.Logger

	mu sync.Mutex
	// done are the registrations the agent took, by ID.
	done map[string]consul.Registration
	// lastErr is the last sync's error, for status.
	lastErr error
	// closed: Close has run; Sync registers nothing more.
	closed bool
}

// New makes a Registrar; nil log means slog.Default().
func New(agent Agent, log *slog.Logger) *Registrar {
	if log == nil {
		log = slog.Default()
	}
	return &Registrar{agent: agent, log: log, done: map[string]consul.Registration{}}
}

// Sync registers what want has and the agent does not (or has
// otherwise), and deregisters what the agent has and want does not. A
// failure is retried at the next Sync; the error joins every failure.
func (r *Registrar) Sync(ctx context.Context, want []consul.Registration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		want = nil
	}
	wanted := map[string]consul.Registration{}
	for _, w := range want {
		if w.ID == "" {
			w.ID = w.Name
		}
		wanted[w.ID] = w
	}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(r.done)) {
		if _, ok := wanted[id]; ok {
			continue
		}
		if err := r.agent.Deregister(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(r.done, id)
		r.log.Info("consul: deregistered", "service", id)
	}
	for _, id := range slices.Sorted(maps.Keys(wanted)) {
		w := wanted[id]
		if have, ok := r.done[id]; ok && reflect.DeepEqual(have, w) {
			continue
		}
		if err := r.agent.Register(ctx, w); err != nil {
			errs = append(errs, err)
			continue
		}
		r.done[id] = w
		r.log.Info("consul: registered", "service", id, "address", w.Address, "port", w.Port)
	}
	r.lastErr = errors.Join(errs...)
	return r.lastErr
}

// Close deregisters everything, and from then on Sync registers
// nothing: a Sync already under way when the node stops cannot register
// a service again after it.
func (r *Registrar) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return r.Sync(ctx, nil)
}

// Registered are the IDs the agent took, sorted.
func (r *Registrar) Registered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.done))
}

// Err is the last Sync's error.
func (r *Registrar) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}
