package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/lib/procstat"
)

// readPIDFile returns the PID in path, 0 when there is no file.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("PID file %s: %w", path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, &badPIDFile{path: path, content: strings.TrimSpace(string(b))}
	}
	return pid, nil
}

// badPIDFile is a PID file that holds no process ID: a crash while it was
// written, or an operator's edit. It names no daemon.
type badPIDFile struct{ path, content string }

func (e *badPIDFile) Error() string {
	return fmt.Sprintf("PID file %s: %q is not a process ID", e.path, e.content)
}

// writePIDFile replaces path atomically, so that a reader never sees it
// half written.
func writePIDFile(path string, pid int) error {
	if err := atomicfile.Write(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("PID file: %w", err)
	}
	return nil
}

// removePIDFile removes path if it still names pid: another start may
// have written its own meanwhile.
func removePIDFile(path string, pid int) {
	if cur, err := readPIDFile(path); err == nil && cur == pid {
		os.Remove(path)
	}
}

// alive reports whether pid runs. A zombie does not: a daemon whose parent
// exited is reaped by init, which may take its time.
func alive(pid int) bool { return procstat.Alive(pid) }

// cmdline is pid's argument list, nil when it is gone.
func cmdline(pid int) []string {
	args, _ := procstat.Proc.Cmdline(pid)
	return args
}

// isOberRun reports whether args are `ober ... run ...`: a PID file may
// outlive its daemon, and its PID then belong to any other process.
func isOberRun(args []string) bool {
	if len(args) < 2 || !strings.HasPrefix(filepath.Base(args[0]), "ober") {
		return false
	}
	for _, a := range args[1:] {
		if a == "run" {
			return true
		}
	}
	return false
}

// describe names a process for a message: its command line, shortened.
func describe(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// waitGone polls until pid has exited or ctx ends.
func waitGone(ctx context.Context, pid int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for alive(pid) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// lockFile serialises start, stop and restart on one node: two starts at
// once would both launch a daemon and fight over the PID file.
func lockFile(dir string) (func(), error) {
	path := filepath.Join(dir, "ober.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another ober start, stop or restart is running (it holds %s)", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// apiClient asks the daemon's API on listen; the service commands poll
// it in short steps, so each request is short too.
func apiClient(listen string) *api.Client {
	return api.NewClient(listen, api.ClientOptions{Timeout: 2 * time.Second})
}

// health asks /health; it returns the status code and the body's first
// line, or the error of the request.
func health(ctx context.Context, listen string) (int, string, error) {
	h, err := apiClient(listen).Health(ctx)
	if err != nil {
		return 0, "", err
	}
	// A body of several lines is summed up the way a configuration's
	// problems are.
	return h.Code, oneLine(errors.New(h.Body)), nil
}

// fetchStatus is the daemon's part of its /status; nil when it does not
// answer.
func fetchStatus(ctx context.Context, listen string) *api.DaemonStatus {
	st, err := apiClient(listen).Status(ctx)
	if err != nil {
		return nil
	}
	return st.Daemon
}

// instancePIDs are the PIDs of the daemon's HAProxy instances, nil when
// its /status does not answer.
func instancePIDs(ctx context.Context, listen string) []int {
	st := fetchStatus(ctx, listen)
	if st == nil {
		return nil
	}
	out := []int{}
	for _, in := range st.HAProxy.Instances {
		if in.PID > 0 {
			out = append(out, in.PID)
		}
	}
	return out
}

// countAlive counts the pids still running.
func countAlive(pids []int) int {
	n := 0
	for _, p := range pids {
		if alive(p) {
			n++
		}
	}
	return n
}
