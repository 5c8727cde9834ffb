package daemon

import (
	"context"
	"fmt"

	"github.com/ober-ingress/ober/control/mgmt"
)

// applyReq is one caller of Apply waiting for the file to be in force.
type applyReq struct {
	reply chan applyResult
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
	req := applyReq{reply: make(chan applyResult, 1)}
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
	err := d.reload(ctx)
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
