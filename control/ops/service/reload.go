package service

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/api"
)

// ErrReloadRefused matches (errors.Is) a reload the daemon refused: its
// running configuration stays, and the error says why.
var ErrReloadRefused = errors.New("reload refused")

// reloadPoll is how often the daemon's /status is asked whether a reload
// is done.
const reloadPoll = 50 * time.Millisecond

// awaitReload sends the reload with send and waits until the daemon's
// /status says it applied (the configuration's generation moved on) or
// refused it (one more refused reload), at most timeout.
func awaitReload(ctx context.Context, listen string, timeout time.Duration, send func() error) (*api.DaemonStatus, error) {
	before := fetchStatus(ctx, listen)
	if before == nil {
		return nil, fmt.Errorf("the daemon's API does not answer on %s; is ober running?", listen)
	}
	if err := send(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(reloadPoll)
	defer t.Stop()
	for {
		if st := fetchStatus(ctx, listen); st != nil && st.PID == before.PID {
			switch {
			case st.Config.Generation > before.Config.Generation:
				return st, nil
			case st.Config.ReloadFailures > before.Config.ReloadFailures:
				return st, fmt.Errorf("%w: %s; the running configuration (generation %d) stays",
					ErrReloadRefused, st.Config.LastReloadError, st.Config.Generation)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the daemon did not report the reload within %s", timeout)
		case <-t.C:
		}
	}
}

// Reload has the running daemon read its configuration again and waits
// for the outcome.
func (d *Direct) Reload(ctx context.Context) (*Report, error) {
	rep := &Report{Mode: ModeDirect, Where: d.opts.LogFile, Instances: -1}
	pid, err := d.running(rep)
	if err != nil {
		return nil, err
	}
	if pid == 0 {
		return nil, errors.New("ober is not running (no daemon in " + d.pidFile + "); start it with ober start")
	}
	start := time.Now()
	st, err := awaitReload(ctx, d.st.apiListen, d.opts.StartTimeout, func() error {
		return syscall.Kill(pid, syscall.SIGHUP)
	})
	if err != nil {
		return nil, err
	}
	rep.PID, rep.Generation, rep.Took = pid, st.Config.Generation, time.Since(start)
	return rep, nil
}

// Reload has systemd deliver the unit's reload (SIGHUP) and waits for the
// daemon's outcome.
func (s *Systemd) Reload(ctx context.Context) (*Report, error) {
	rep := &Report{Mode: ModeSystemd, Where: Unit, Instances: -1}
	u, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	if !u.running() || u.pid == 0 {
		return nil, errors.New("the ober unit is not running; start it with ober start")
	}
	start := time.Now()
	st, err := awaitReload(ctx, s.st.apiListen, s.opts.StartTimeout, func() error {
		_, err := systemctlRun(ctx, s.systemctl, "reload", Unit)
		return err
	})
	if err != nil {
		return nil, err
	}
	rep.PID, rep.Generation, rep.Took = u.pid, st.Config.Generation, time.Since(start)
	return rep, nil
}
