// Package ledger records what a long-lived site of network namespaces
// (the lab) makes on the machine, so that one command can remove all of
// it later: also after the process that built it crashed, and also what
// it made just before the crash.
//
// Every entry is written to the ledger file before the thing itself is
// made (a namespace, a mount, a directory) or right after it exists (a
// process, known only by its PID once started), and the file is replaced
// atomically each time. Teardown works from the file alone. It kills a
// recorded process only while the PID still names the process that was
// recorded (same start time), so a PID the kernel has since given to
// someone else is left alone.
package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/lib/procstat"
)

// Proc is a process the site started.
type Proc struct {
	PID  int    `json:"pid"`
	Name string `json:"name"`
	// Start is the process's start time in clock ticks after boot
	// (/proc/PID/stat field 22): with the PID it names one process.
	Start uint64 `json:"start"`
}

// Ledger is the record of one site.
type Ledger struct {
	path string
	mu   sync.Mutex
	rec  record
}

type record struct {
	// Prefix starts every namespace name of the site; Teardown also
	// removes namespaces with it that the record lacks.
	Prefix     string   `json:"prefix"`
	Namespaces []string `json:"namespaces"`
	Procs      []Proc   `json:"procs"`
	Mounts     []string `json:"mounts"`
	Dirs       []string `json:"dirs"`
}

// Open continues the ledger at path, or starts one for a site whose
// namespaces all begin with prefix. A ledger of another prefix at path is
// an error: two sites must not share a record.
func Open(path, prefix string) (*Ledger, error) {
	if prefix == "" || strings.ContainsAny(prefix, "/ \t\n") {
		return nil, fmt.Errorf("ledger: prefix %q must be a non-empty namespace name part", prefix)
	}
	l := &Ledger{path: path, rec: record{Prefix: prefix}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("ledger %s: %w", path, err)
		}
		return l, l.saveLocked()
	case err != nil:
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &l.rec); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	if l.rec.Prefix != prefix {
		return nil, fmt.Errorf("ledger %s belongs to the site with prefix %q, not %q", path, l.rec.Prefix, prefix)
	}
	return l, nil
}

// Namespace records a namespace; call it before `ip netns add`.
func (l *Ledger) Namespace(name string) error {
	if !strings.HasPrefix(name, l.rec.Prefix) {
		return fmt.Errorf("ledger: namespace %q does not start with the site's prefix %q", name, l.rec.Prefix)
	}
	return l.add(func(r *record) { r.Namespaces = append(r.Namespaces, name) })
}

// Mount records a mount point; call it before mounting.
func (l *Ledger) Mount(dir string) error {
	return l.add(func(r *record) { r.Mounts = append(r.Mounts, dir) })
}

// Dir records a directory to remove with everything in it; call it
// before making it. It must be absolute and at least two levels deep, so
// that a slip can never have Teardown empty /, /tmp or /run.
func (l *Ledger) Dir(dir string) error {
	if err := removable(dir); err != nil {
		return err
	}
	return l.add(func(r *record) { r.Dirs = append(r.Dirs, dir) })
}

func removable(dir string) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || strings.Count(dir, "/") < 2 {
		return fmt.Errorf("ledger: directory %q must be a clean absolute path at least two levels deep", dir)
	}
	return nil
}

// Process records a process the site started.
func (l *Ledger) Process(pid int, name string) error {
	start, err := procstat.StartTime(pid)
	if err != nil {
		return fmt.Errorf("ledger: process %d (%s): %w", pid, name, err)
	}
	return l.add(func(r *record) { r.Procs = append(r.Procs, Proc{PID: pid, Name: name, Start: start}) })
}

// Ended forgets a recorded process that has exited, so that a site
// that restarted it (the soak's stop and start of a node) is not
// reported with a dead process.
func (l *Ledger) Ended(pid int) error {
	return l.add(func(r *record) { r.Procs = slices.DeleteFunc(r.Procs, func(p Proc) bool { return p.PID == pid }) })
}

// Procs lists the recorded processes.
func (l *Ledger) Procs() []Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.rec.Procs)
}

func (l *Ledger) add(f func(*record)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.rec)
	return l.saveLocked()
}

func (l *Ledger) saveLocked() error {
	b, err := json.MarshalIndent(l.rec, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(l.path, b, 0o600); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}

// Report says what Teardown removed and what it left alone.
type Report struct {
	Killed     []string // "name (pid N)"
	Gone       []string // recorded processes that had already ended
	Namespaces []string
	Unmounted  []string
	Removed    []string // directories
}

// Teardown removes everything the ledger at path records, and every
// namespace whose name starts with prefix, then the ledger itself. It
// goes on past errors and returns them joined; running it again finishes
// what an earlier run could not. A missing ledger is not an error (there
// may be leftover namespaces all the same).
func Teardown(path, prefix string, grace time.Duration) (Report, error) {
	var rep Report
	var errs []error
	rec := record{Prefix: prefix}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &rec); err != nil {
			return rep, fmt.Errorf("ledger %s: %w (remove it by hand once the site is gone)", path, err)
		}
		if rec.Prefix != prefix {
			return rep, fmt.Errorf("ledger %s belongs to the site with prefix %q, not %q", path, rec.Prefix, prefix)
		}
	case !errors.Is(err, os.ErrNotExist):
		return rep, fmt.Errorf("ledger %s: %w", path, err)
	}

	// Processes first, newest first: they hold sockets in the
	// namespaces and files in the directories.
	var live []Proc
	for _, p := range slices.Backward(rec.Procs) {
		if st, err := procstat.StartTime(p.PID); err != nil || st != p.Start {
			rep.Gone = append(rep.Gone, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
			continue
		}
		if err := syscall.Kill(p.PID, syscall.SIGTERM); err == nil {
			live = append(live, p)
		}
	}
	deadline := time.Now().Add(grace)
	for _, p := range live {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(p) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			for i := 0; alive(p) && i < 100; i++ {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if alive(p) {
			errs = append(errs, fmt.Errorf("%s (pid %d) did not end", p.Name, p.PID))
			continue
		}
		rep.Killed = append(rep.Killed, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
	}

	for _, m := range slices.Backward(rec.Mounts) {
		switch err := unix.Unmount(m, unix.MNT_DETACH); {
		case err == nil:
			rep.Unmounted = append(rep.Unmounted, m)
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			// Not mounted (any more).
		default:
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}

	names := slices.Clone(rec.Namespaces)
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) && !slices.Contains(names, f[0]) {
				names = append(names, f[0])
			}
		}
	}
	for _, ns := range slices.Backward(names) {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", ns, err, strings.TrimSpace(string(out))))
			continue
		}
		rep.Namespaces = append(rep.Namespaces, ns)
	}

	for _, d := range slices.Backward(rec.Dirs) {
		if err := removable(d); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
			continue
		}
		rep.Removed = append(rep.Removed, d)
	}

	if len(errs) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

func alive(p Proc) bool {
	st, err := procstat.Read(p.PID)
	// A zombie has ended: only its parent's wait is missing.
	return err == nil && st.Start == p.Start && st.State != 'Z'
}
