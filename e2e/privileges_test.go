package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/internal/testsite/ecmptest"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
	"github.com/ober-ingress/ober/internal/testsite/vrrptest"
	"github.com/ober-ingress/ober/systemd"
)

// procStatus is /proc/<pid>/status as field -> value.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	st, err := procstat.Status(pid)
	require.NoError(t, err)
	return st
}

// requireExited waits up to 15s for every process of pids to end.
func requireExited(t *testing.T, pids []int, msg string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, pid := range pids {
			if unix.Kill(pid, 0) == nil {
				return false
			}
		}
		return true
	}, 15*time.Second, 50*time.Millisecond, msg)
}

// capMask parses a Cap* field of /proc/PID/status.
func capMask(t *testing.T, hex string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(hex, 16, 64)
	require.NoError(t, err, "capability mask %q", hex)
	return v
}

// instancePIDs are the PIDs of the HAProxy instances in st.
func instancePIDs(t *testing.T, st *api.Status) []int {
	t.Helper()
	var pids []int
	for _, in := range st.Daemon.HAProxy.Instances {
		require.NotZero(t, in.PID, "instance %d has no process", in.Index)
		pids = append(pids, in.PID)
	}
	require.NotEmpty(t, pids)
	return pids
}

// reaper kills, at cleanup, the instances it was shown that ober did not
// end: an ober short of a capability (CAP_KILL) cannot signal them
// itself. Made before the site starts, its cleanup runs after ober's.
type reaper struct{ pids []int }

func newReaper(t *testing.T) *reaper {
	r := &reaper{}
	t.Cleanup(func() {
		for _, pid := range r.pids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if argv0, _, _ := bytes.Cut(b, []byte{0}); err == nil && filepath.Base(string(argv0)) == "haproxy" {
				t.Errorf("instance pid %d outlived ober: killed", pid)
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	})
	return r
}

func (r *reaper) add(pids []int) []int { r.pids = append(r.pids, pids...); return pids }

// requireUnprivileged checks what an instance kept once running: every
// uid and gid is ober-haproxy's (none is root's), no capability is
// effective, permitted or ambient, and its root is chroot.
func requireUnprivileged(t *testing.T, pids []int, chroot string) {
	t.Helper()
	u, err := user.Lookup(sysuser.HAProxyUser)
	require.NoError(t, err)
	g, err := user.LookupGroup(sysuser.HAProxyUser)
	require.NoError(t, err)
	for _, pid := range pids {
		st := procStatus(t, pid)
		require.Equal(t, "haproxy", st["Name"], "pid %d", pid)
		uids, gids := strings.Fields(st["Uid"]), strings.Fields(st["Gid"])
		require.Equal(t, []string{u.Uid, u.Uid, u.Uid, u.Uid}, uids, "pid %d: real, effective, saved and filesystem uid", pid)
		require.Equal(t, []string{g.Gid, g.Gid, g.Gid, g.Gid}, gids, "pid %d: real, effective, saved and filesystem gid", pid)
		require.NotContains(t, append(uids, gids...), "0", "pid %d", pid)
		for _, c := range []string{"CapEff", "CapPrm", "CapAmb"} {
			require.Zero(t, capMask(t, st[c]), "pid %d: %s %s", pid, c, st[c])
		}
		root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
		require.NoError(t, err)
		require.Equal(t, chroot, root, "pid %d: root directory", pid)
	}
}

// TestServeUnprivileged: the node's instances run as ober-haproxy in the
// empty directory ober made, with no capability, and still serve HTTPS
// with the key only root may read. A reload starts the next generation
// the same way, and is refused while the directory holds anything.
func TestServeUnprivileged(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	r := newReaper(t)
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true}))
	s.Start()
	chroot := filepath.Join(s.Dir, "run", "empty")

	fi, err := os.Stat(chroot)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o555), fi.Mode().Perm())
	require.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid)
	entries, err := os.ReadDir(chroot)
	require.NoError(t, err)
	require.Empty(t, entries)
	pems, err := filepath.Glob(filepath.Join(s.Dir, "run", "tls", "https-*.pem"))
	require.NoError(t, err)
	require.Len(t, pems, 1)
	fi, err = os.Stat(pems[0])
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the key bundle is root's alone")

	first := r.add(instancePIDs(t, s.Status()))
	require.Len(t, first, 2)
	requireUnprivileged(t, first, chroot)
	_, err = fetchServedBy(context.Background(), s, 0)
	require.NoError(t, err, "HTTPS through the VIP")

	// Something in the chroot: the next generation does not start there.
	planted := filepath.Join(chroot, "planted")
	require.NoError(t, os.WriteFile(planted, []byte("x"), 0o644))
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.ReloadFailures == 1 }, 15*time.Second, 20*time.Millisecond, s.Log())
	require.Contains(t, s.Status().Daemon.Config.LastReloadError,
		fmt.Sprintf("haproxy.chroot: %q: is not empty (1 entries, such as \"planted\"): the instances' root must hold nothing", chroot))
	require.Equal(t, first, instancePIDs(t, s.Status()), "the running generation stays")

	require.NoError(t, os.Remove(planted))
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.Generation == 2 }, 15*time.Second, 20*time.Millisecond, s.Log())
	second := r.add(instancePIDs(t, s.Status()))
	require.NotEqual(t, first, second)
	requireUnprivileged(t, second, chroot)
	_, err = fetchServedBy(context.Background(), s, 0)
	require.NoError(t, err, "HTTPS through the VIP after the reload")
	// The replaced instances got ober's SIGUSR1 across the uid boundary
	// and ended (drain 3s).
	requireExited(t, first, "the old generation did not end")
}

// unitSettings are the [Service] directives of ober.service, as the
// binary embeds it.
func unitSettings(t *testing.T) map[string][]string {
	t.Helper()
	for _, u := range systemd.Units() {
		if u.Name != "ober.service" {
			continue
		}
		out := map[string][]string{}
		section := ""
		sc := bufio.NewScanner(bytes.NewReader(u.Content))
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			switch {
			case l == "" || strings.HasPrefix(l, "#"):
			case strings.HasPrefix(l, "["):
				section = l
			case section == "[Service]":
				k, v, ok := strings.Cut(l, "=")
				require.True(t, ok, "not a directive: %q", l)
				out[k] = append(out[k], v)
			}
		}
		return out
	}
	t.Fatal("no ober.service among the embedded units")
	return nil
}

// capBits are the capabilities the unit may name, by number.
var capBits = map[string]uint{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"CAP_FOWNER": unix.CAP_FOWNER, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID, "CAP_SETUID": unix.CAP_SETUID,
	"CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK,
	"CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN,
	"CAP_SYS_NICE": unix.CAP_SYS_NICE, "CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_PERFMON": unix.CAP_PERFMON,
	"CAP_BPF": unix.CAP_BPF,
}

// unitWrap is the command that starts ober as ober.service would, as far
// as capabilities go: setpriv with exactly the unit's bounding set, no
// inheritable or ambient capability (the unit grants none), no new
// privileges, and the unit's umask. Capabilities the unit keeps that this
// test process lacks itself cannot be given: they are logged, and ober is
// then shown to work without them too. It returns the bounding set ober
// runs with.
func unitWrap(t *testing.T) ([]string, uint64) {
	t.Helper()
	netnstest.RequireTool(t, "setpriv", "util-linux")
	u := unitSettings(t)
	require.Len(t, u["CapabilityBoundingSet"], 1)
	require.Empty(t, u["AmbientCapabilities"], "the test gives ober no ambient capability; give it the unit's")
	require.Equal(t, []string{"yes"}, u["NoNewPrivileges"])
	require.Len(t, u["UMask"], 1)
	have := capMask(t, procStatus(t, os.Getpid())["CapBnd"])
	var keep []string
	var mask uint64
	for _, c := range strings.Fields(u["CapabilityBoundingSet"][0]) {
		bit, ok := capBits[c]
		require.True(t, ok, "capability %s of the unit is not in capBits", c)
		if have&(1<<bit) == 0 {
			t.Logf("this test runs without %s, which the unit keeps: ober runs without it here", c)
			continue
		}
		keep = append(keep, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		mask |= 1 << bit
	}
	wrap := []string{"setpriv", "--bounding-set", "-all," + strings.Join(keep, ","),
		"--inh-caps", "-all", "--ambient-caps", "-all", "--nnp", "--",
		"sh", "-c", "umask " + u["UMask"][0] + " && exec \"$0\" \"$@\""}
	return wrap, mask
}

// requireUnitCaps checks the ober process against the unit: its bounding
// and effective sets are the unit's, no ambient capability, no new
// privileges.
func requireUnitCaps(t *testing.T, pid int, mask uint64) {
	t.Helper()
	st := procStatus(t, pid)
	require.Equal(t, "ober", st["Name"], "pid %d", pid)
	require.Equal(t, mask, capMask(t, st["CapBnd"]), "ober's bounding set")
	require.Equal(t, mask, capMask(t, st["CapEff"]), "ober's effective set")
	require.Zero(t, capMask(t, st["CapAmb"]))
	require.Equal(t, "1", st["NoNewPrivs"])
}

// TestUnitCapabilities runs the one-node site's `ober run` with exactly
// ober.service's capability bounding set, no ambient capabilities,
// NoNewPrivileges and its umask: it serves HTTPS through the VIP, its
// instances have dropped to ober-haproxy, and a reload replaces and ends
// them.
func TestUnitCapabilities(t *testing.T) {
	wrap, mask := unitWrap(t)
	s := nodetest.New(t, oberBin, 2)
	r := newReaper(t)
	s.Wrap = wrap
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true}))
	s.Start()
	st := s.Status()
	requireUnitCaps(t, st.Daemon.PID, mask)
	first := r.add(instancePIDs(t, st))
	requireUnprivileged(t, first, filepath.Join(s.Dir, "run", "empty"))
	for _, pid := range first {
		require.Zero(t, capMask(t, procStatus(t, pid)["CapBnd"])&^mask, "an instance's bounding set is within the unit's")
	}
	for range 4 {
		_, err := fetchServedBy(context.Background(), s, 0)
		require.NoError(t, err, "HTTPS through the VIP")
	}

	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true, HealthInterval: 300 * time.Millisecond}))
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.Generation == 2 }, 15*time.Second, 20*time.Millisecond, s.Log())
	requireUnprivileged(t, r.add(instancePIDs(t, s.Status())), filepath.Join(s.Dir, "run", "empty"))
	_, err := fetchServedBy(context.Background(), s, 0)
	require.NoError(t, err, "HTTPS through the VIP after the reload")
	requireExited(t, first, "the replaced instances did not end")
	require.NotContains(t, s.Log(), "operation not permitted")
}

// TestUnitCapabilitiesBGP: the same bounding set suffices for BGP with
// TCP MD5 on port 179: every node's session comes up, the router spreads
// the VIP over the three nodes, and their instances are unprivileged.
func TestUnitCapabilitiesBGP(t *testing.T) {
	wrap, mask := unitWrap(t)
	s := ecmptest.New(t, oberBin, ecmptest.Params{Password: "rack7-md5-key"})
	for _, n := range s.Nodes {
		n.Ober.Wrap = wrap
	}
	s.StartNodes()
	var fs []fetch
	for range 30 {
		fs = append(fs, fetchVIP(context.Background(), s, ecmptest.VIP4, "/"))
	}
	require.Empty(t, failures(fs))
	for _, n := range s.Nodes {
		require.NotZero(t, byNode(fs)[n.Name], "%s served nothing", n.Name)
		st, err := n.Status()
		require.NoError(t, err)
		requireUnitCaps(t, st.Daemon.PID, mask)
		requireUnprivileged(t, instancePIDs(t, st), filepath.Join(n.Dir, "run", "empty"))
	}
}

// TestUnitCapabilitiesVRRP: the same bounding set suffices for
// keepalived: each VIP goes to its owner, which serves it.
func TestUnitCapabilitiesVRRP(t *testing.T) {
	wrap, mask := unitWrap(t)
	s := vrrptest.New(t, oberBin, vrrptest.Params{})
	for _, n := range s.Nodes {
		n.Ober.Wrap = wrap
	}
	s.StartNodes()
	for i, v := range vrrptest.VIPs {
		by, err := vrrpFetch(context.Background(), s, v)
		require.NoError(t, err, "GET https://%s/", v)
		require.True(t, strings.HasPrefix(by, s.Nodes[i].Name+"/"), "%s served by %q", v, by)
	}
	for _, n := range s.Nodes {
		st, err := n.Status()
		require.NoError(t, err)
		requireUnitCaps(t, st.Daemon.PID, mask)
		requireUnprivileged(t, instancePIDs(t, st), filepath.Join(n.Dir, "run", "empty"))
		netnstest.RequireTool(t, "pgrep", "procps")
		out, err := exec.Command("pgrep", "-P", strconv.Itoa(st.Daemon.PID), "keepalived").Output()
		require.NoError(t, err, "keepalived runs under ober")
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			require.NoError(t, err)
			require.Zero(t, capMask(t, procStatus(t, pid)["CapBnd"])&^mask, "keepalived's bounding set is within the unit's")
		}
	}
}
