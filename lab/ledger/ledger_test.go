package ledger

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

func mounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func namespaces(t *testing.T, prefix string) []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	require.NoError(t, err)
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			ns = append(ns, f[0])
		}
	}
	return ns
}

// A site is built, its builder "crashes" (the Ledger is dropped without
// cleanup), and Teardown, from the file alone, removes the namespaces
// (also one made after its entry was lost), the process, the mount and
// the directory, and nothing else.
func TestTeardownAfterCrash(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, "ip", "iproute2")
	prefix := fmt.Sprintf("%s%d-ledger-", netnstest.Prefix, os.Getpid())
	base := t.TempDir()
	path := filepath.Join(base, "state", "ledger.json")
	t.Cleanup(func() { _, _ = Teardown(path, prefix, time.Second) })

	l, err := Open(path, prefix)
	require.NoError(t, err)
	for _, role := range []string{"router", "node1"} {
		name := prefix + role
		require.NoError(t, l.Namespace(name))
		require.NoError(t, exec.Command("ip", "netns", "add", name).Run())
	}
	// Made, but the crash came before its entry was written.
	require.NoError(t, exec.Command("ip", "netns", "add", prefix+"orphan").Run())

	dir := filepath.Join(base, "site")
	require.NoError(t, l.Dir(dir))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "node1"), 0o700))
	bpffs := filepath.Join(dir, "bpffs")
	require.NoError(t, os.MkdirAll(bpffs, 0o700))
	require.NoError(t, l.Mount(bpffs))
	require.NoError(t, unix.Mount("bpf", bpffs, "bpf", 0, ""))

	sleeper := exec.Command("ip", "netns", "exec", prefix+"node1", "sleep", "120")
	require.NoError(t, sleeper.Start())
	go sleeper.Wait() // reap it when it dies, as a supervisor would
	require.NoError(t, l.Process(sleeper.Process.Pid, "sleep"))

	// A process whose PID was recorded, but which is not the recorded
	// process any more (PID reuse): it must survive.
	bystander := exec.Command("sleep", "120")
	require.NoError(t, bystander.Start())
	t.Cleanup(func() { _ = bystander.Process.Kill(); _ = bystander.Wait() })
	require.NoError(t, l.add(func(r *record) {
		r.Procs = append(r.Procs, Proc{PID: bystander.Process.Pid, Name: "reused", Start: 1})
	}))

	// Crash: no cleanup through l. A second Open sees the same record.
	l2, err := Open(path, prefix)
	require.NoError(t, err)
	require.Len(t, l2.Procs(), 2)
	_, err = Open(path, "other-")
	require.ErrorContains(t, err, `belongs to the site with prefix "`+prefix+`"`)

	rep, err := Teardown(path, prefix, 2*time.Second)
	require.NoError(t, err)
	t.Logf("teardown: %+v", rep)
	require.Empty(t, namespaces(t, prefix))
	require.ElementsMatch(t, []string{prefix + "router", prefix + "node1", prefix + "orphan"}, rep.Namespaces)
	require.Equal(t, []string{fmt.Sprintf("sleep (pid %d)", sleeper.Process.Pid)}, rep.Killed)
	require.Equal(t, []string{fmt.Sprintf("reused (pid %d)", bystander.Process.Pid)}, rep.Gone)
	require.NoError(t, syscall.Kill(bystander.Process.Pid, 0), "a process the ledger did not start was killed")
	require.False(t, mounted(t, bpffs))
	require.NoDirExists(t, dir)
	require.NoFileExists(t, path)

	// Again: nothing left, nothing to do, no error.
	rep, err = Teardown(path, prefix, time.Second)
	require.NoError(t, err)
	require.Empty(t, rep.Namespaces)
	require.Empty(t, rep.Killed)
}

func TestRefusesDangerousEntries(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "ledger.json"), "obt-x-")
	require.NoError(t, err)
	for _, d := range []string{"/", "/tmp", "/run", "relative/dir", "/run/../etc/x"} {
		require.Error(t, l.Dir(d), d)
	}
	require.ErrorContains(t, l.Namespace("other-ns"), `does not start with the site's prefix "obt-x-"`)
	_, err = Open(filepath.Join(t.TempDir(), "l.json"), "")
	require.Error(t, err)
}
