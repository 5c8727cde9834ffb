package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/sdnotify"
)

// ErrRestart is what Run returns after a restart handover; `ober run`
// exits with api.ExitRestart on it.
var ErrRestart = errors.New("restart handover: the next ober takes over")

// handoverFile, in node.runtime_dir, tells the next ober that this one
// left for a restart and when: within ha.bgp.graceful_restart's restart
// time the next BGP speaker starts as a restarting speaker.
const handoverFile = "handover"

// handover leaves the node to the next ober process. The HAProxy
// instances keep serving from the pinned sockmap (they are in their own
// process group and do not die with ober), the XDP and sk_lookup programs
// stay attached, the VIPs stay on their interface: the next process finds
// the instances through their pid files and retires them once its own
// serve. Nothing is withdrawn or drained.
//
// What cannot outlive the process is given up cleanly instead:
// keepalived dies with ober (it would otherwise hold the VIPs on a node
// nobody supervises), so in VRRP mode the backups take the VIPs for the
// length of the restart. The BGP sessions end without a NOTIFICATION
// towards peers that negotiated graceful restart, which then keep the
// routes until the next ober re-announces them; the other peers get a
// Cease and drop them.
func (d *Daemon) handover() {
	cfg := d.config()
	st := d.sup.Status()
	pids := make([]string, 0, len(st.Instances))
	for _, in := range st.Instances {
		if in.PID > 0 {
			pids = append(pids, strconv.Itoa(in.PID))
		}
	}
	d.notify(sdnotify.Stopping, sdnotify.Status("restarting: HAProxy instances %s keep serving for the next ober", strings.Join(pids, ", ")))
	d.log.Info("restart handover: leaving the instances serving and the dataplane attached",
		"instances", strings.Join(pids, ","), "interfaces", strings.Join(d.attached, ","))
	if cfg != nil {
		at := time.Now().UTC().Format(time.RFC3339Nano)
		if err := os.WriteFile(filepath.Join(cfg.Node.RuntimeDir, handoverFile), []byte(at+"\n"), 0o640); err != nil {
			d.log.Warn("restart handover: cannot leave the handover mark; the next BGP speaker starts as a fresh one", "err", err)
		}
	}
	if d.vh != nil && d.handoff != nil {
		// The backups take the VIPs for the restart: they hand this
		// node's connections back to the instances that keep serving
		// them (the VIPs stay on lo, the dataplane keeps decapsulating)
		// until the next ober has them back.
		d.vh.stop()
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := d.handoff.Drain(hctx, cfgMaxTransition(cfg)); err != nil {
			d.log.Warn("restart handover: not every node acknowledged; their share of this node's connections will be reset", "err", err)
		}
		cancel()
	}
	if d.tracker != nil {
		d.tracker.release(time.Second)
	}
	d.stopKeepalived()
	if d.speaker != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if err := d.speaker.StopForRestart(sctx); err != nil {
			d.log.Warn("bgp sessions not closed cleanly; the routers see them end with the process", "err", err)
		}
		cancel()
	}
	if d.handoff != nil {
		d.handoff.Close()
	}
}

func cfgMaxTransition(cfg *config.Config) time.Duration {
	if cfg != nil && cfg.HA.VRRP != nil && cfg.HA.VRRP.Handoff != nil {
		return cfg.HA.VRRP.Handoff.MaxTransition.Duration
	}
	return config.DefaultMaxTransition
}

// takeHandover reads and removes the mark a previous ober left at its
// restart handover and returns when that was; zero without one.
func takeHandover(cfg *config.Config) (time.Time, error) {
	path := filepath.Join(cfg.Node.RuntimeDir, handoverFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read %s: %w", path, err)
	}
	os.Remove(path)
	at, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %q: not a time", path, strings.TrimSpace(string(b)))
	}
	return at, nil
}

// stopKeepalived ends keepalived, which releases what VIPs it still holds;
// a stop and a restart handover both end it (it cannot outlive ober).
func (d *Daemon) stopKeepalived() {
	if d.ka == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.ka.Stop(ctx); err != nil {
		d.log.Warn("keepalived not stopped cleanly", "err", err)
	}
}
