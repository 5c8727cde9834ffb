package daemon

import (
	"context"
	"fmt"

	"github.com/ober-ingress/ober/control/mgmt"
)

// applyReq is one caller of Apply waiting for the file to be in force,
// or (discovered) for what discovery found to be.
type applyReq struct {
	reply chan applyResult
	// discovered asks for the running configuration with the pools'
	// backends as found now, not for the file: a file being edited, or
	// refused, must not hold discovery back.
	discovered bool
}

type applyResult struct {
	applied mgmt.Applied
	gen     uint64
	err     error
}

// Apply brings ober.yaml into force as a reload does and returns once it
// is (mgmt.Applier): the management API calls it after writing the file.
// Callers that ask while a reload runs, or together, share the next
// reload: a burst of writes costs few reloads, each answered only once
// its change is live.
func (d *Daemon) Apply(ctx context.Context) (mgmt.Applied, uint64, error) {
	return d.apply(ctx, applyReq{reply: make(chan applyResult, 1)})
}

// applyDiscovered brings what discovery found into force, on the running
// configuration.
func (d *Daemon) applyDiscovered(ctx context.Context) error {
	_, _, err := d.apply(ctx, applyReq{reply: make(chan applyResult, 1), discovered: true})
	return err
}

func (d *Daemon) apply(ctx context.Context, req applyReq) (mgmt.Applied, uint64, error) {
	select {
	case d.applies <- req:
	case <-ctx.Done():
		return "", 0, fmt.Errorf("apply: %w", ctx.Err())
	}
	select {
	case r := <-req.reply:
		return r.applied, r.gen, r.err
	case <-ctx.Done():
		// The reload goes on; the caller stops waiting for it.
		return "", 0, fmt.Errorf("apply: %w", ctx.Err())
	}
}

// applyBatch runs one reload for first and every request queued behind
// it, and answers them all.
func (d *Daemon) applyBatch(ctx context.Context, first applyReq) {
	batch := []applyReq{first}
	for more := true; more; {
		select {
		case r := <-d.applies:
			batch = append(batch, r)
		default:
			more = false
		}
	}
	// One file-based request in the batch reads the file, which takes
	// what discovery found as well.
	fromFile := false
	for _, r := range batch {
		fromFile = fromFile || !r.discovered
	}
	err := d.reloadFrom(ctx, fromFile)
	res := applyResult{err: err}
	if err == nil {
		d.mu.Lock()
		res.gen = d.generation
		ch := d.lastChanges
		d.mu.Unlock()
		switch {
		case ch.RuntimeOnly():
			res.applied = mgmt.AppliedRuntime
		default:
			res.applied = mgmt.AppliedReload
		}
	} else {
		d.log.Error("apply refused; the running configuration stays", "err", err)
	}
	for _, r := range batch {
		r.reply <- res
	}
	d.log.Debug("applied", "requests", len(batch), "applied", res.applied, "generation", res.gen)
}
