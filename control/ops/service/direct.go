package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Direct runs the daemon without a service manager: a detached `ober run`
// in its own session, its output appended to a log file, its PID in
// node.runtime_dir.
type Direct struct {
	opts    Options
	st      settings
	pidFile string
}

func newDirect(opts Options, st settings) (*Direct, error) {
	if opts.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the ober binary to run: %w", err)
		}
		opts.Executable = exe
	}
	if opts.LogFile == "" {
		opts.LogFile = DefaultLogFile
	}
	abs, err := filepath.Abs(opts.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", opts.ConfigPath, err)
	}
	// The daemon runs in /, so that it pins no directory it was started
	// from; the path it is given must not depend on that.
	opts.ConfigPath = abs
	return &Direct{opts: opts, st: st, pidFile: filepath.Join(st.runtimeDir, PIDFileName)}, nil
}

// Mode is ModeDirect.
func (d *Direct) Mode() Mode { return ModeDirect }

// lock creates node.runtime_dir when needed and takes the node's lock.
func (d *Direct) lock() (func(), error) {
	if err := os.MkdirAll(d.st.runtimeDir, 0o750); err != nil {
		return nil, fmt.Errorf("node.runtime_dir: %w", err)
	}
	return lockFile(d.st.runtimeDir)
}

// running returns the PID of the daemon the PID file names, 0 when none
// runs. A PID file that names a gone process or a stranger is removed,
// and said so in rep; the stranger is left alone.
func (d *Direct) running(rep *Report) (int, error) {
	pid, err := readPIDFile(d.pidFile)
	var bad *badPIDFile
	if errors.As(err, &bad) {
		os.Remove(d.pidFile)
		rep.Notes = append(rep.Notes, fmt.Sprintf("removed the PID file %s: %q is not a process ID", d.pidFile, bad.content))
		return 0, nil
	}
	if err != nil || pid == 0 {
		return 0, err
	}
	if !alive(pid) {
		os.Remove(d.pidFile)
		rep.Notes = append(rep.Notes, fmt.Sprintf("removed the stale PID file %s (pid %d had exited)", d.pidFile, pid))
		return 0, nil
	}
	if args := cmdline(pid); !isOberRun(args) {
		os.Remove(d.pidFile)
		rep.Notes = append(rep.Notes, fmt.Sprintf("removed the stale PID file %s: pid %d is %q, not ober run; left it alone", d.pidFile, pid, describe(args)))
		return 0, nil
	}
	return pid, nil
}

// Start launches `ober run` unless it runs already.
func (d *Direct) Start(ctx context.Context) (*Report, error) {
	if d.st.loadErr != nil {
		return nil, errors.New(oneLine(d.st.loadErr))
	}
	unlock, err := d.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	rep := &Report{Mode: ModeDirect, Where: d.opts.LogFile}
	pid, err := d.running(rep)
	if err != nil {
		return nil, err
	}
	if pid != 0 {
		rep.PID, rep.Already = pid, true
		return rep, nil
	}
	start := time.Now()
	if rep.PID, err = d.launch(ctx); err != nil {
		return nil, err
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// launch starts the daemon and waits until its /health answers 200. When
// it exits first, its PID file is removed and the error is the reason it
// logged.
func (d *Direct) launch(ctx context.Context) (int, error) {
	if err := os.MkdirAll(filepath.Dir(d.opts.LogFile), 0o750); err != nil {
		return 0, fmt.Errorf("log file %s: %w", d.opts.LogFile, err)
	}
	logf, err := os.OpenFile(d.opts.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return 0, fmt.Errorf("log file %s: %w", d.opts.LogFile, err)
	}
	var offset int64
	if fi, err := logf.Stat(); err == nil {
		offset = fi.Size()
	}
	cmd := exec.Command(d.opts.Executable, "run", "--config", d.opts.ConfigPath)
	cmd.Dir = "/"
	cmd.Env = daemonEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the daemon outlives this command and the terminal,
	// and a Ctrl-C meant for this command does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return 0, fmt.Errorf("run %s: %w", d.opts.Executable, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan *os.ProcessState, 1)
	go func() {
		_ = cmd.Wait()
		exited <- cmd.ProcessState
	}()
	if err := writePIDFile(d.pidFile, pid); err != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		return 0, fmt.Errorf("%w; stopped ober run (pid %d) again", err, pid)
	}

	deadline := time.NewTimer(d.opts.StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		code, body, err := health(ctx, d.st.apiListen)
		switch {
		case err == nil && code == http.StatusOK:
			// Another daemon on api.listen (one not started here) would
			// answer too; this one is about to fail to bind it.
			if st := fetchStatus(ctx, d.st.apiListen); st != nil && st.PID == pid {
				return pid, nil
			}
			last = "/health answers, but from another process than pid " + strconv.Itoa(pid)
		case err == nil:
			last = fmt.Sprintf("/health answers %d %s", code, body)
		default:
			last = "no answer on " + d.st.apiListen
		}
		select {
		case ps := <-exited:
			removePIDFile(d.pidFile, pid)
			why := lastError(readFrom(d.opts.LogFile, offset))
			if why == "" {
				why = "it logged nothing to " + d.opts.LogFile
			}
			return 0, fmt.Errorf("ober run %s: %s", exitText(ps), why)
		case <-ctx.Done():
			return 0, fmt.Errorf("interrupted while waiting for ober run (pid %d) to serve; it keeps starting ('ober stop' stops it)", pid)
		case <-deadline.C:
			return 0, fmt.Errorf("ober run (pid %d) runs but does not serve after %v (%s); 'ober status' and %s say why, 'ober stop' stops it",
				pid, d.opts.StartTimeout, last, d.opts.LogFile)
		case <-tick.C:
		}
	}
}

// daemonEnv is env without systemd's per-service variables: a daemon
// started here is no unit's main process, and must not report readiness
// or watchdog pings for whatever unit ran this command.
func daemonEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// exitText says how a process ended: "exited 1" or "was killed by
// signal: killed".
func exitText(ps *os.ProcessState) string {
	if ps == nil {
		return "exited"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "was killed by signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exited %d", ps.ExitCode())
}

// Stop sends SIGTERM, the daemon's graceful stop, and waits until it has
// drained and exited.
func (d *Direct) Stop(ctx context.Context) (*Report, error) {
	unlock, err := d.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	rep := &Report{Mode: ModeDirect, Where: d.opts.LogFile}
	pid, err := d.running(rep)
	if err != nil {
		return nil, err
	}
	if pid == 0 {
		rep.Already = true
		return rep, nil
	}
	start := time.Now()
	if err := d.signalAndWait(ctx, pid, syscall.SIGTERM); err != nil {
		return nil, err
	}
	os.Remove(d.pidFile)
	rep.PID, rep.Took = pid, time.Since(start)
	return rep, nil
}

// signalAndWait sends sig to pid and waits, at most StopTimeout, for it
// to exit.
func (d *Direct) signalAndWait(ctx context.Context, pid int, sig syscall.Signal) error {
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal ober run (pid %d): %w", pid, err)
	}
	wctx, cancel := context.WithTimeout(ctx, d.opts.StopTimeout)
	defer cancel()
	if err := waitGone(wctx, pid); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while waiting for ober run (pid %d) to exit; it goes on stopping", pid)
		}
		return fmt.Errorf("ober run (pid %d) still runs %v after %s (timeouts.drain is %v); it is still draining or stuck: 'kill -KILL %d' ends it now",
			pid, d.opts.StopTimeout, sigName(sig), d.st.drain, pid)
	}
	return nil
}

// sigName is the signal as operators write it.
func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGUSR2:
		return "SIGUSR2"
	}
	return sig.String()
}

// Restart has the daemon hand over (SIGUSR2: it exits leaving its HAProxy
// instances serving and the dataplane attached) and starts a new one,
// which takes the instances over.
func (d *Direct) Restart(ctx context.Context) (*Report, error) {
	rep := &Report{Mode: ModeDirect, Where: d.opts.LogFile, Instances: -1}
	unlock, err := d.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	old, err := d.running(rep)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if old == 0 {
		if d.st.loadErr != nil {
			return nil, errors.New(oneLine(d.st.loadErr))
		}
		rep.Already = true
		if rep.PID, err = d.launch(ctx); err != nil {
			return nil, err
		}
		rep.Took = time.Since(start)
		return rep, nil
	}
	if err := d.check(ctx, old); err != nil {
		return nil, err
	}
	insts := instancePIDs(ctx, d.st.apiListen)
	if err := d.signalAndWait(ctx, old, syscall.SIGUSR2); err != nil {
		return nil, err
	}
	if insts != nil {
		rep.Instances, rep.Kept = len(insts), countAlive(insts)
	}
	os.Remove(d.pidFile)
	rep.OldPID = old
	if rep.PID, err = d.launch(ctx); err != nil {
		return nil, fmt.Errorf("ober run (pid %d) handed over, but its successor failed: %w", old, err)
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// check vets the configuration before a running daemon is let go.
func (d *Direct) check(ctx context.Context, pid int) error {
	if d.st.loadErr != nil {
		return fmt.Errorf("%s; the running ober run (pid %d) was left alone", oneLine(d.st.loadErr), pid)
	}
	if d.opts.Check == nil {
		return nil
	}
	if err := d.opts.Check(ctx, d.opts.ConfigPath); err != nil {
		return fmt.Errorf("%s; the running ober run (pid %d) was left alone", oneLine(err), pid)
	}
	return nil
}
