// Package tables is the one writer of a running node's dataplane maps.
//
// The daemon applies a plan's tables through it (VIPs and services,
// whitelists, access lists, steering), the supervisor writes the sockmap, the Maglev
// table and the instance table through it (it is the supervisor's
// Dataplane), and the drain handoff its owner and transition maps. One
// component and one lock for all of them keeps the order of writes in
// one place.
//
// The whitelists have a second writer outside the daemon: `ober sync`
// swaps them live, with compare-and-swap, and rewrites ober.yaml. So a
// plan writes only the lists that changed against the plan applied
// before, and each only while its live generation is still the one that
// was read together with the configuration (Base, read under the
// whitelist transaction lock): a list that `ober sync` changed after
// that is refused, never put back to the older list.
package tables

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/loader"
)

// ErrChanged matches (errors.Is) an Apply refused because another writer
// changed a whitelist after the configuration was read.
var ErrChanged = errors.New("changed by another writer since the configuration was read")

// Writer writes a node's dataplane maps.
type Writer struct {
	dp  *loader.Dataplane
	log *slog.Logger

	mu sync.Mutex
	// applied are the tables of the last plan applied, nil before the
	// first.
	applied *plan.Tables
}

// New makes the writer of dp's maps.
func New(dp *loader.Dataplane, log *slog.Logger) *Writer {
	return &Writer{dp: dp, log: log}
}

// Base is the live generation of each whitelist when a configuration was
// read.
type Base map[loader.WhitelistID]uint64

// ReadBase reads the live generation of every whitelist. Read it under
// the whitelist transaction lock, together with the configuration file.
func (w *Writer) ReadBase() (Base, error) {
	b := Base{}
	for id := range loader.WhitelistID(loader.MaxWhitelists) {
		info, err := w.dp.WhitelistInfo(id)
		if err != nil {
			return nil, err
		}
		b[id] = info.Generation
	}
	return b, nil
}

// Apply writes the tables t changes against those applied before: the
// whitelists that differ (each only if its generation is still base's),
// then the VIP and service table, then the steering flag. It is all or
// nothing: on an error, what it wrote is put back.
func (w *Writer) Apply(t plan.Tables, base Base) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	services, lists, steering := plan.DiffTables(w.applied, &t)
	var undo []func() error
	rollback := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				err = fmt.Errorf("%w; and putting the tables back failed: %v", err, uerr)
			}
		}
		return err
	}
	for _, id := range lists {
		var prev []netip.Prefix
		_, err := w.dp.UpdateWhitelist(id, func(live []netip.Prefix, info loader.WhitelistInfo) ([]netip.Prefix, error) {
			prev = live
			if info.Generation > 0 && slices.Equal(addrlist.Normalize(live), t.Whitelists[id]) {
				return live, nil // already there, whoever put it there
			}
			if g, ok := base[id]; ok && info.Generation != g {
				return nil, fmt.Errorf("whitelist %s: %w (ober sync, generation %d, was %d); reload (or start) again to apply the file as it is now",
					id, ErrChanged, info.Generation, g)
			}
			return t.Whitelists[id], nil
		})
		if err != nil {
			return rollback(err)
		}
		undo = append(undo, func() error {
			_, err := w.dp.SetWhitelist(id, prev)
			return err
		})
	}
	// Access lists before the service rows that point at them; the
	// lists no row points at any more after.
	setAccess, clearAccess := plan.DiffAccess(w.applied, &t)
	for _, id := range setAccess {
		prev, had, err := w.dp.AccessList(id)
		if err != nil {
			return rollback(err)
		}
		if err := w.dp.SetAccessList(id, t.Access[id]); err != nil {
			return rollback(err)
		}
		undo = append(undo, func() error {
			if had {
				return w.dp.SetAccessList(id, prev)
			}
			return w.dp.ClearAccessList(id)
		})
	}
	if services {
		// The live tables, not the last plan's: on the first plan after
		// a restart handover they are the previous ober's.
		pv, ps, err := w.dp.Services()
		if err != nil {
			return rollback(err)
		}
		if err := w.dp.SetServices(t.VIPs, t.Services); err != nil {
			return rollback(err)
		}
		undo = append(undo, func() error { return w.dp.SetServices(pv, ps) })
	}
	if w.applied == nil {
		// The first plan of this process: lists an earlier ober left
		// that no service of this plan uses.
		live, err := w.dp.AccessListIDs()
		if err != nil {
			w.log.Warn("access lists: cannot list the live ones; unused ones stay", "err", err)
		}
		for _, id := range live {
			if _, ok := t.Access[id]; !ok {
				clearAccess = append(clearAccess, id)
			}
		}
	}
	for _, id := range clearAccess {
		// No service row points at it any more: a failure only leaves
		// an unused list behind.
		if err := w.dp.ClearAccessList(id); err != nil {
			w.log.Warn("access lists: clear an unused list", "id", id, "err", err)
		}
	}
	if steering {
		// The flag is the last write: nothing is left to undo after it.
		if err := w.dp.SetSteering(t.Steering); err != nil {
			return rollback(err)
		}
	}
	w.applied = &t
	return nil
}

// The supervisor's writes (supervisor.Dataplane).

// SetSocket puts an instance's listening socket into the sockmap.
func (w *Writer) SetSocket(listener, inst uint32, conn syscall.Conn) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dp.SetSocket(listener, inst, conn)
}

// ClearSocket takes an instance's socket out of the sockmap.
func (w *Writer) ClearSocket(listener, inst uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dp.ClearSocket(listener, inst)
}

// SetMaglev swaps in a new Maglev table.
func (w *Writer) SetMaglev(seed uint32, slots []uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dp.SetMaglev(seed, slots)
}

// SetInstances replaces the instance table.
func (w *Writer) SetInstances(insts []loader.Instance) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dp.SetInstances(insts)
}

// The drain handoff's writes (handoff.Dataplane).

// SetHandoff sets the nodes in transition.
func (w *Writer) SetHandoff(h loader.Handoff) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dp.SetHandoff(h)
}

// AddOwners records another node's connections.
func (w *Writer) AddOwners(owner netip.Addr, flows []loader.Flow) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dp.AddOwners(owner, flows)
}

// ClearOwners forgets every other node's connections.
func (w *Writer) ClearOwners() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dp.ClearOwners()
}
