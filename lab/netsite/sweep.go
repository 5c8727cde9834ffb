package netsite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/lib/procstat"
)

// stopped is what stopProcesses did, in ledger.Report's words.
type stopped struct {
	killed []string
	gone   []string
}

// stopProcesses ends the site's processes before the ledger's teardown
// deletes the namespaces: first the recorded ones (SIGTERM, then SIGKILL
// after grace), then every process still living in one of the site's
// namespaces. The second sweep catches what the ledger cannot know: the
// children a recorded process left behind when it was killed (ober's
// HAProxy instances outlive ober by design), a process started just
// before the builder crashed and not yet recorded, a forking daemon
// whose PID was not read yet. Left alone, such a process would keep its
// namespace, and the links in it, alive after `ip netns del`.
//
// Only processes whose network namespace is one of the site's are
// touched: nothing else on the machine can be in them.
func stopProcesses(dir, prefix string, grace time.Duration) (stopped, error) {
	var st stopped
	rec, err := ReadRecord(dir)
	switch {
	case isNotExist(err):
		rec = &Record{Prefix: prefix}
	case err != nil:
		// ledger.Teardown reports it; touch nothing.
		return st, nil
	case rec.Prefix != prefix:
		return st, nil
	}

	var live []target
	for _, p := range slices.Backward(rec.Procs) {
		if !Running(p) {
			st.gone = append(st.gone, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
			continue
		}
		live = append(live, target{pid: p.PID, start: p.Start, label: fmt.Sprintf("%s (pid %d)", p.Name, p.PID)})
	}
	var errs []error
	k, err := terminate(live, grace)
	st.killed = append(st.killed, k...)
	errs = append(errs, err)

	// A few rounds: a process may fork while the sweep runs.
	for range 3 {
		strays, err := inNamespaces(siteNamespaces(rec))
		errs = append(errs, err)
		if len(strays) == 0 {
			break
		}
		k, err := terminate(strays, min(grace, 3*time.Second))
		st.killed = append(st.killed, k...)
		errs = append(errs, err)
	}
	return st, errors.Join(errs...)
}

// target is a process to end, named by PID and start time.
type target struct {
	pid   int
	start uint64
	label string
}

func (t target) running() bool {
	s, err := procstat.StartTime(t.pid)
	return err == nil && s == t.start && procstat.Alive(t.pid)
}

// terminate sends SIGTERM to every target, waits up to grace for them to
// end, then kills the rest.
func terminate(ts []target, grace time.Duration) ([]string, error) {
	for _, t := range ts {
		if t.running() {
			_ = syscall.Kill(t.pid, syscall.SIGTERM)
		}
	}
	waitEnded(ts, grace)
	for _, t := range ts {
		if t.running() {
			_ = syscall.Kill(t.pid, syscall.SIGKILL)
		}
	}
	waitEnded(ts, 2*time.Second)
	var killed []string
	var errs []error
	for _, t := range ts {
		if t.running() {
			errs = append(errs, fmt.Errorf("%s did not end", t.label))
			continue
		}
		killed = append(killed, t.label)
	}
	return killed, errors.Join(errs...)
}

func waitEnded(ts []target, d time.Duration) {
	deadline := time.Now().Add(d)
	for _, t := range ts {
		for t.running() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// siteNamespaces names the recorded namespaces and every one in
// /run/netns with the site's prefix.
func siteNamespaces(rec *Record) []string {
	names := slices.Clone(rec.Namespaces)
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), rec.Prefix) && !slices.Contains(names, e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names
}

// inNamespaces lists the processes (other than this one) whose network
// namespace is one of names.
func inNamespaces(names []string) ([]target, error) {
	inodes := map[uint64]string{}
	for _, n := range names {
		var s syscall.Stat_t
		if err := syscall.Stat(filepath.Join("/run/netns", n), &s); err == nil {
			inodes[s.Ino] = n
		}
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	pids, err := procstat.Proc.PIDs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []target
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue
		}
		ino, err := procstat.Proc.NetNS(pid)
		if err != nil {
			continue
		}
		ns, ok := inodes[ino]
		if !ok || !procstat.Alive(pid) {
			continue
		}
		start, err := procstat.StartTime(pid)
		if err != nil {
			continue
		}
		out = append(out, target{pid: pid, start: start, label: fmt.Sprintf("%s (pid %d, in %s)", comm(pid), pid, ns)})
	}
	return out, nil
}
