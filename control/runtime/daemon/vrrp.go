package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// startVRRP starts keepalived with the node's current health and keeps
// its track file in step with the health from then on.
func (d *Daemon) startVRRP(ctx context.Context, p *plan.NodePlan) error {
	cfg, kc := p.Config, *p.VRRP
	ok, _ := d.healthFor(1, true)
	log := d.log.With("part", "vrrp")
	var offsets map[int]int
	if cfg.HA.VRRP.Handoff != nil {
		if err := d.startVRRPHandoff(ctx, p); err != nil {
			return err
		}
		offsets = d.vh.holdAll()
	}
	var err error
	d.ka, err = vrrp.Start(ctx, vrrp.Options{
		Binary: cfg.HA.VRRP.Keepalived, Dir: filepath.Join(cfg.Node.RuntimeDir, "keepalived"),
		Config: kc, Healthy: ok, Offsets: offsets, Logger: log,
		OnState: func(in vrrp.Instance, from, to vrrp.State) {
			log.Info("vrrp state", "vip", in.VIP, "vrid", in.VRID, "from", from, "to", to, "owner", in.Owner)
			if d.vh != nil {
				d.vh.state(in, from, to)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("ha.vrrp: %w", err)
	}
	if d.vh != nil {
		d.vh.mu.Lock()
		d.vh.ka = d.ka
		d.vh.mu.Unlock()
	}
	log.Info("keepalived started", "self", kc.Self, "interface", kc.Interface, "instances", len(kc.Instances),
		"handoff", d.vh != nil)
	d.tracker = &tracker{d: d, ka: d.ka, healthy: ok}
	go d.tracker.run(ctx, d.changes)
	return nil
}

// tracker writes keepalived's track file whenever the node's health
// changes: the supervisor's change events make a dead HAProxy a fault at
// once, the tick catches what sends no event.
type tracker struct {
	d  *Daemon
	ka *vrrp.Keepalived

	mu       sync.Mutex
	healthy  bool
	reason   string
	released bool
}

func (t *tracker) run(ctx context.Context, kick <-chan struct{}) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		t.evaluate()
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-tick.C:
		}
	}
}

func (t *tracker) evaluate() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.released {
		return
	}
	ok, reason := t.d.healthFor(1, true)
	if vh := t.d.vh; vh != nil {
		// Healthy first, still held at priority 1 (a backup of last
		// resort), then ready once the peers know.
		defer vh.health(ok, reason)
	}
	if ok == t.healthy {
		t.reason = reason
		return
	}
	if err := t.ka.SetHealthy(ok); err != nil {
		t.d.log.Error("vrrp: write the track file", "err", err)
		return
	}
	t.healthy, t.reason = ok, reason
	if ok {
		t.d.log.Info("vrrp: healthy, instances may take their VIPs")
	} else {
		t.d.log.Warn("vrrp: fault, giving up the VIPs", "reason", reason)
	}
}

// release gives up every VIP for good (ober is stopping) and waits until
// keepalived no longer masters any, at most wait.
func (t *tracker) release(wait time.Duration) {
	t.mu.Lock()
	t.released, t.healthy, t.reason = true, false, "stopping"
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := t.ka.Release(ctx); err != nil {
		t.d.log.Warn("vrrp: VIPs not released in time; keepalived's stop releases them", "err", err)
	}
}

func (t *tracker) state() (bool, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.healthy, t.reason
}
