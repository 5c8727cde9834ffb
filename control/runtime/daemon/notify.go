package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/runtime/sdnotify"
)

// readyWait bounds how long start-up waits for /health to turn OK before
// it reports ready anyway: ober itself serves, and a backend outage must
// not turn into a service manager killing and restarting it.
const readyWait = 10 * time.Second

// notify sends assignments to the service manager. A failure is logged
// once: the manager going away must not stop the node.
func (d *Daemon) notify(assignments ...string) {
	err := d.opts.Notifier.Send(assignments...)
	d.mu.Lock()
	first := err != nil && !d.notifyFailed
	d.notifyFailed = d.notifyFailed || err != nil
	d.mu.Unlock()
	switch {
	case first:
		d.log.Warn("cannot notify the service manager; it will not see readiness, reloads or watchdog pings", "err", err)
	case err != nil:
		d.log.Debug("notify the service manager", "err", err)
	}
}

// pingWatchdog sends WATCHDOG=1 every half timeout, each time only after
// the main loop took the question off ask. A loop wedged in a deadlock
// or an endless wait never answers, the pings stop, and the service
// manager kills and restarts ober after the timeout.
func (d *Daemon) pingWatchdog(ctx context.Context, timeout time.Duration, ask chan<- chan struct{}) {
	period := timeout / 2
	t := time.NewTicker(period)
	defer t.Stop()
	stalled := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reply := make(chan struct{})
		select {
		case ask <- reply:
		case <-ctx.Done():
			return
		case <-time.After(period):
			if stalled.IsZero() {
				stalled = time.Now().Add(-period)
				d.log.Warn("main loop not answering; watchdog pings withheld", "timeout", timeout)
			}
			continue
		}
		select {
		case <-reply:
		case <-ctx.Done():
			return
		}
		if !stalled.IsZero() {
			d.log.Info("main loop answering again; watchdog pings resumed", "stalled", time.Since(stalled).Round(time.Millisecond))
			stalled = time.Time{}
		}
		d.notify(sdnotify.Watchdog)
	}
}

// readiness reports READY=1 once the node serves: /health answers OK
// (instances healthy, a backend up), the routes are announced or
// keepalived runs. It waits at most readyWait, then reports ready with
// what is still wrong in STATUS=.
type readiness struct {
	d        *Daemon
	deadline time.Time
	ticker   *time.Ticker
	done     bool
}

func newReadiness(d *Daemon) *readiness {
	return &readiness{d: d, deadline: time.Now().Add(readyWait), ticker: time.NewTicker(20 * time.Millisecond)}
}

// tick is the channel to wait on; nil (never ready) once reported.
func (r *readiness) tick() <-chan time.Time {
	if r.done {
		return nil
	}
	return r.ticker.C
}

func (r *readiness) check() {
	ok, reason := r.d.health(context.Background())
	if !ok && time.Now().Before(r.deadline) {
		return
	}
	if r.d.ann != nil {
		// Announce now, not at the announcer's next tick, so that READY
		// means announced when the node is healthy.
		r.d.ann.evaluate()
	}
	r.report(reason)
}

func (r *readiness) report(unhealthy string) {
	r.done = true
	r.ticker.Stop()
	status := r.d.statusLine()
	if unhealthy != "" {
		status += "; not healthy: " + unhealthy
		r.d.log.Warn("reporting ready while not healthy", "after", readyWait, "reason", unhealthy)
	}
	r.d.notify(sdnotify.Ready, sdnotify.Status("%s", status))
}

// reloaded follows a reload, whose RELOADING=1 the manager ends at the
// next READY=1, whatever the outcome.
func (r *readiness) reloaded(err error) {
	status := r.d.statusLine()
	if err != nil {
		status = "reload refused (" + err.Error() + "); " + status
	} else {
		status = "reloaded; " + status
	}
	r.done = true
	r.ticker.Stop()
	r.d.notify(sdnotify.Ready, sdnotify.Status("%s", status))
}

func (r *readiness) stop() { r.ticker.Stop() }

// waitHealthy polls healthy until it says yes, for at most wait, and
// returns its last answer.
func (d *Daemon) waitHealthy(ctx context.Context, wait time.Duration, healthy func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(wait)
	for {
		ok, reason := healthy()
		if ok || time.Now().After(deadline) {
			return ok, reason
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err().Error()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// statusLine is the node's state in one line for `systemctl status`.
func (d *Daemon) statusLine() string {
	d.mu.Lock()
	gen := d.generation
	d.mu.Unlock()
	st := d.sup.Status()
	parts := []string{fmt.Sprintf("serving configuration generation %d: %d of %d HAProxy instances healthy",
		gen, st.Healthy(), len(st.Instances))}
	if d.ann != nil {
		if why := d.ann.notAnnouncedReason(); why != "" {
			parts = append(parts, "VIPs not announced ("+why+")")
		} else {
			parts = append(parts, "VIPs announced")
		}
	}
	if d.tracker != nil {
		if ok, why := d.tracker.state(); ok {
			parts = append(parts, "VRRP running")
		} else {
			parts = append(parts, "VRRP in fault ("+why+")")
		}
	}
	return strings.Join(parts, ", ")
}
