package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Systemd runs the daemon as the ober unit.
type Systemd struct {
	systemctl string
	opts      Options
	st        settings
}

func newSystemd(systemctl string, opts Options, st settings) *Systemd {
	return &Systemd{systemctl: systemctl, opts: opts, st: st}
}

// Mode is ModeSystemd.
func (s *Systemd) Mode() Mode { return ModeSystemd }

// unitState is what systemctl show says about the unit.
type unitState struct {
	active string // ActiveState
	sub    string // SubState
	pid    int    // MainPID
}

func (u unitState) running() bool { return u.active == "active" || u.active == "reloading" }

// show asks systemctl for properties of the ober unit.
func show(ctx context.Context, systemctl string, props ...string) (map[string]string, error) {
	out, err := systemctlRun(ctx, systemctl, "show", "-p", strings.Join(props, ","), Unit)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// systemctlRun runs systemctl and returns its stdout; its error is one
// line: the command and the first line systemctl wrote to stderr.
func systemctlRun(ctx context.Context, systemctl string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, systemctl, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	what := "systemctl " + strings.Join(args, " ")
	if ctx.Err() != nil {
		return "", fmt.Errorf("%s: %w", what, context.Cause(ctx))
	}
	first, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
	var exit *exec.ExitError
	switch {
	case first != "":
		return "", fmt.Errorf("%s: %s", what, strings.TrimSpace(first))
	case errors.As(err, &exit):
		return "", fmt.Errorf("%s exited %d", what, exit.ExitCode())
	default:
		return "", fmt.Errorf("%s: %w", what, err)
	}
}

func (s *Systemd) state(ctx context.Context) (unitState, error) {
	m, err := show(ctx, s.systemctl, "ActiveState", "SubState", "MainPID")
	if err != nil {
		return unitState{}, err
	}
	pid, _ := strconv.Atoi(m["MainPID"])
	return unitState{active: m["ActiveState"], sub: m["SubState"], pid: pid}, nil
}

// waitFor polls the unit until done says so, a failure shows, or the
// timeout passes.
func (s *Systemd) waitFor(ctx context.Context, timeout time.Duration, what string, done func(unitState) bool) (unitState, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		u, err := s.state(ctx)
		if err != nil {
			return u, err
		}
		if done(u) {
			return u, nil
		}
		if u.active == "failed" {
			return u, fmt.Errorf("the ober unit failed (%s)%s", u.sub, s.journalHint(ctx))
		}
		select {
		case <-ctx.Done():
			return u, fmt.Errorf("the ober unit is %s/%s after %v, not %s; 'systemctl status ober' says why", u.active, u.sub, timeout, what)
		case <-t.C:
		}
	}
}

// journalHint is the daemon's last error from the journal, as
// "; ober run: <error>", or empty when the journal has none.
func (s *Systemd) journalHint(ctx context.Context) string {
	journalctl, ok := DetectJournal(s.opts.SystemdDir)
	if !ok {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, journalctl, "-u", Unit, "-o", "cat", "-n", "50", "--no-pager").Output()
	if err != nil {
		return ""
	}
	if why := lastError(out); why != "" {
		return "; ober run: " + why
	}
	return ""
}

// Start starts the unit and waits until it is active.
func (s *Systemd) Start(ctx context.Context) (*Report, error) {
	rep := &Report{Mode: ModeSystemd, Where: Unit}
	u, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	if u.running() {
		rep.PID, rep.Already = u.pid, true
		return rep, nil
	}
	start := time.Now()
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	u, err = s.waitFor(ctx, s.opts.StartTimeout, "active", func(u unitState) bool { return u.running() && u.pid != 0 })
	if err != nil {
		return nil, err
	}
	rep.PID, rep.Took = u.pid, time.Since(start)
	return rep, nil
}

func (s *Systemd) start(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	if _, err := systemctlRun(sctx, s.systemctl, "start", Unit); err != nil {
		return fmt.Errorf("%w%s", err, s.journalHint(ctx))
	}
	return nil
}

// Stop stops the unit; systemd sends SIGTERM and waits for the drain.
func (s *Systemd) Stop(ctx context.Context) (*Report, error) {
	rep := &Report{Mode: ModeSystemd, Where: Unit}
	u, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	if !u.running() && u.active != "activating" && u.active != "deactivating" {
		rep.Already = true
		return rep, nil
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, s.opts.StopTimeout)
	defer cancel()
	if _, err := systemctlRun(sctx, s.systemctl, "stop", Unit); err != nil {
		return nil, err
	}
	rep.PID, rep.Took = u.pid, time.Since(start)
	return rep, nil
}

// Restart sends SIGUSR2 to the unit's main process: the daemon hands over
// and exits with api.ExitRestart, which the unit's
// RestartForceExitStatus turns into a restart.
func (s *Systemd) Restart(ctx context.Context) (*Report, error) {
	rep := &Report{Mode: ModeSystemd, Where: Unit, Instances: -1}
	u, err := s.state(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if !u.running() || u.pid == 0 {
		if err := s.start(ctx); err != nil {
			return nil, err
		}
		u, err = s.waitFor(ctx, s.opts.StartTimeout, "active", func(u unitState) bool { return u.running() && u.pid != 0 })
		if err != nil {
			return nil, err
		}
		rep.PID, rep.Already, rep.Took = u.pid, true, time.Since(start)
		return rep, nil
	}
	old := u.pid
	if s.st.loadErr != nil {
		return nil, fmt.Errorf("%s; the running ober unit (pid %d) was left alone", oneLine(s.st.loadErr), old)
	}
	if s.opts.Check != nil {
		if err := s.opts.Check(ctx, s.opts.ConfigPath); err != nil {
			return nil, fmt.Errorf("%s; the running ober unit (pid %d) was left alone", oneLine(err), old)
		}
	}
	insts := instancePIDs(ctx, s.st.apiListen)
	if _, err := systemctlRun(ctx, s.systemctl, "kill", "--kill-whom=main", "--signal=SIGUSR2", Unit); err != nil {
		return nil, err
	}
	// The instances are counted as soon as the old process is seen gone,
	// before its successor may replace them.
	counted := false
	u, err = s.waitFor(ctx, s.opts.StopTimeout+s.opts.StartTimeout, "active with a new main process", func(u unitState) bool {
		if u.pid != old && !counted && insts != nil {
			rep.Instances, rep.Kept, counted = len(insts), countAlive(insts), true
		}
		return u.running() && u.pid != 0 && u.pid != old
	})
	if err != nil {
		return nil, err
	}
	rep.OldPID, rep.PID, rep.Took = old, u.pid, time.Since(start)
	return rep, nil
}
