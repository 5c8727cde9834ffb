package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/lab"
	"github.com/ober-ingress/ober/lab/netsite"
)

// requireLab fails the test, naming what to install, when the lab of
// the ha mode ("bgp", "vrrp") cannot run here.
func requireLab(t *testing.T, ha string) {
	t.Helper()
	netnstest.RequireRoot(t)
	if m := lab.MissingPackages(ha); len(m) > 0 {
		t.Fatalf("the lab needs Debian packages %s: apt-get install -y %s", strings.Join(m, ", "), strings.Join(m, " "))
	}
}

// newLab names a lab of this test run and removes it at cleanup, also
// when the test fails.
func newLab(t *testing.T, name string) (dir, prefix string) {
	t.Helper()
	// Not t.TempDir: its long names would push the nodes' HAProxy
	// sockets past HAProxy's limit.
	base, err := os.MkdirTemp("", "oblab-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	dir = filepath.Join(base, "lab")
	prefix = fmt.Sprintf("%s%d-%s-", netnstest.Prefix, os.Getpid(), name)
	t.Cleanup(func() {
		rep, err := netsite.Teardown(dir, prefix, 15*time.Second)
		if err != nil {
			t.Errorf("cleanup teardown: %v", err)
		}
		if len(rep.Killed)+len(rep.Namespaces) > 0 {
			t.Logf("cleanup removed: %d processes, namespaces %v", len(rep.Killed), rep.Namespaces)
		}
	})
	return dir, prefix
}

// runLab runs `ober lab args...` to its end (or ctx's deadline).
func runLab(ctx context.Context, args ...string) (result, error) {
	return runOber(ctx, nil, append([]string{"lab"}, args...)...)
}

// labUp runs `ober lab up` with args and requires it to succeed.
func labUp(ctx context.Context, t *testing.T, args ...string) result {
	t.Helper()
	start := time.Now()
	res, err := runLab(ctx, append([]string{"up"}, args...)...)
	require.NoError(t, err)
	t.Logf("ober lab up %s took %v:\n%s", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond), res.stdout)
	require.Zero(t, res.code, "ober lab up:\n%s", res)
	return res
}

// requireTally finds the demo's request tally: some requests succeeded.
func requireTally(t *testing.T, stdout string) []string {
	t.Helper()
	reqs := failoverReqs.FindStringSubmatch(stdout)
	require.NotNil(t, reqs, "no request tally:\n%s", stdout)
	okReqs, _ := strconv.Atoi(reqs[1])
	require.Positive(t, okReqs)
	return reqs
}

// requireAWSExample runs the aws-cli example lab up printed for endpoint.
func requireAWSExample(ctx context.Context, t *testing.T, stdout, prefix, endpoint string) {
	t.Helper()
	require.Contains(t, stdout, "ip netns exec "+prefix+"client aws --endpoint-url "+endpoint)
	aws, err := exec.LookPath("aws")
	require.NoError(t, err, "the lab's printed example uses the AWS CLI: install it with `apt-get install awscli`")
	awsExample(ctx, t, aws, stdout, prefix)
}

// labDown runs `ober lab down` and requires that nothing is left.
func labDown(ctx context.Context, t *testing.T, before hostView, dir, prefix string) {
	t.Helper()
	rec, err := netsite.ReadRecord(dir)
	require.NoError(t, err)
	start := time.Now()
	down, err := runLab(ctx, "down", "--dir", dir)
	require.NoError(t, err)
	t.Logf("ober lab down took %v:\n%s", time.Since(start).Round(100*time.Millisecond), down.stdout)
	require.Zero(t, down.code, "ober lab down:\n%s", down)
	requireNothingLeft(t, before, dir, prefix, rec)
}

// hostView is what of the root namespace and the mount table a lab
// could leave behind.
type hostView struct {
	links  []string // "index: name" of the root namespace's interfaces
	mounts []string // "mount point fstype" of this mount namespace
}

func viewHost(t *testing.T) hostView {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link").Output()
	require.NoError(t, err, "ip -o link")
	var v hostView
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			v.links = append(v.links, f[0]+" "+strings.TrimSuffix(f[1], ":"))
		}
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		i := slices.Index(f, "-")
		if len(f) > 4 && i > 0 && i+1 < len(f) {
			v.mounts = append(v.mounts, f[4]+" "+f[i+1])
		}
	}
	slices.Sort(v.links)
	slices.Sort(v.mounts)
	return v
}

// requireNothingLeft checks that a lab is gone without a trace: no
// namespace with its prefix, none of its recorded processes, no process
// whose command line or working directory is in its directory, no mount
// in it, the directory itself gone, and the root namespace's interfaces
// and the mounts the lab could have made as they were before it.
func requireNothingLeft(t *testing.T, before hostView, dir, prefix string, rec *netsite.Record) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	require.NoError(t, err)
	for _, l := range strings.Split(string(out), "\n") {
		require.False(t, strings.HasPrefix(l, prefix), "namespace left: %s", l)
	}
	if rec != nil {
		for _, p := range rec.Procs {
			require.False(t, netsite.Running(p), "%s (pid %d) still runs", p.Name, p.PID)
		}
	}
	require.Empty(t, processesIn(dir), "processes left that point into %s", dir)
	_, err = os.Stat(dir)
	require.True(t, errors.Is(err, os.ErrNotExist), "%s still there (%v)", dir, err)

	after := viewHost(t)
	require.Equal(t, before.links, after.links, "the root namespace's interfaces changed")
	// Other tests and the bench may mount and unmount their own bpffs
	// and namespaces meanwhile: what counts is what a lab makes, under
	// its directory and as /run/netns/<prefix>*.
	ours := func(m string) bool {
		mp, _, _ := strings.Cut(m, " ")
		return strings.HasPrefix(mp, dir) || strings.HasPrefix(mp, "/run/netns/"+prefix)
	}
	var left []string
	for _, m := range after.mounts {
		if ours(m) || (!slices.Contains(before.mounts, m) && !strings.HasPrefix(m, "/run/netns") && !otherTests(m)) {
			left = append(left, m)
		}
	}
	require.Empty(t, left, "mounts left behind")
}

// otherTests recognises the mounts other tests of this repository make
// while this one runs (go test runs packages in parallel): their private
// bpffs mounts and the bench's site directories.
func otherTests(m string) bool {
	mp, _, _ := strings.Cut(m, " ")
	return strings.HasPrefix(mp, os.TempDir()+"/ober-bpffs-") || strings.HasPrefix(mp, "/run/ober-bench") ||
		strings.HasPrefix(mp, os.TempDir()+"/Test")
}

// processesIn lists the processes (HAProxy, BIRD, Ceph, radosgw, ober or
// any other) whose command line or working directory is in dir.
func processesIn(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !procstat.Alive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		if strings.Contains(args, dir) || strings.HasPrefix(cwd, dir) {
			out = append(out, fmt.Sprintf("pid %d: %s (cwd %s)", pid, args, cwd))
		}
	}
	return out
}

var (
	failoverGone = regexp.MustCompile(`2 next hops (\d+) ms after the kill`)
	failoverBack = regexp.MustCompile(`3 next hops again ([\d.]+) s after the withdraw`)
	failoverReqs = regexp.MustCompile(`requests through the failover: (\d+) OK, (\d+) failed`)
)

// TestLabUpDemoDown: `ober lab up` builds the site and runs the demo
// (transfers checked by SHA-256, the route leaving and returning when a
// node loses its HAProxy instances), `lab status` reports three healthy
// nodes, and `lab down` leaves nothing: no namespace, process, mount,
// directory or root-namespace interface.
func TestLabUpDemoDown(t *testing.T) {
	requireLab(t, "bgp")
	before := viewHost(t)
	dir, prefix := newLab(t, "lab")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	res := labUp(ctx, t, "--dir", dir, "--prefix", prefix, "--no-install")
	require.GreaterOrEqual(t, strings.Count(res.stdout, "sha256 ok"), 4, "three sizes over IPv4 and one over IPv6, each checked")
	gone := failoverGone.FindStringSubmatch(res.stdout)
	back := failoverBack.FindStringSubmatch(res.stdout)
	require.NotNil(t, gone, "the route did not go down to 2 next hops:\n%s", res.stdout)
	require.NotNil(t, back, "the route did not come back to 3 next hops:\n%s", res.stdout)
	reqs := requireTally(t, res.stdout)
	t.Logf("failover: route gone %s ms after the kill, back %s s after the withdraw; requests %s OK, %s failed",
		gone[1], back[1], reqs[1], reqs[2])
	requireAWSExample(ctx, t, res.stdout, prefix, "https://10.99.0.100")

	// A second lab in the same place is refused, and changes nothing.
	again, err := runLab(ctx, "up", "--dir", dir, "--prefix", prefix, "--no-install")
	require.NoError(t, err)
	require.NotZero(t, again.code)
	require.Contains(t, again.stderr, "ober lab down")
	// S3 storage BlueStore cannot use, or too small, is refused before
	// anything is built.
	dir2, prefix2 := newLab(t, "lab2")
	for _, bad := range []struct{ flag, value, want string }{
		{"--s3-dir", "/dev/shm/ober-lab-test", "--s3-dir /dev/shm/ober-lab-test is on tmpfs"},
		{"--s3-capacity", "512MiB", "--s3-capacity 512 MiB: at least 1.0 GiB"},
		{"--s3-capacity", "16PB", `--s3-capacity "16PB": want a size such as 16GiB`},
	} {
		res, err := runLab(ctx, "up", "--dir", dir2, "--prefix", prefix2, "--no-install", bad.flag, bad.value)
		require.NoError(t, err)
		require.NotZero(t, res.code, "%s %s", bad.flag, bad.value)
		require.Contains(t, res.stderr, bad.want)
		require.NoDirExists(t, dir2, "nothing built for %s %s", bad.flag, bad.value)
	}
	require.NoDirExists(t, "/dev/shm/ober-lab-test")

	st, err := runLab(ctx, "status", "--dir", dir)
	require.NoError(t, err)
	require.Zero(t, st.code, "ober lab status:\n%s", st)
	require.Contains(t, st.stdout, "nodes: 3 of 3 healthy, 3 announcing")
	require.Contains(t, st.stdout, "3 next hops: 10.99.1.11, 10.99.1.12, 10.99.1.13")
	require.Contains(t, st.stdout, "S3 backend (Ceph, HEALTH_OK)")
	require.Contains(t, st.stdout, "of its 12.7 GiB quota")
	require.Contains(t, st.stdout, "all well")

	store := filepath.Join(lab.DefaultS3Dir, strings.TrimSuffix(prefix, "-")+"-s3")
	require.FileExists(t, filepath.Join(store, "osd.block"))
	labDown(ctx, t, before, dir, prefix)
	require.NoDirExists(t, store, "lab down removes the S3 storage")

	// Down again: nothing to do, and no error.
	down, err := runLab(ctx, "down", "--dir", dir)
	require.NoError(t, err)
	require.Zero(t, down.code, "second ober lab down:\n%s", down)
	require.Contains(t, down.stdout, "nothing to remove")
	st, err = runLab(ctx, "status", "--dir", dir)
	require.NoError(t, err)
	require.Contains(t, st.stdout, "no lab")
}

var (
	vrrpTakeover = regexp.MustCompile(`node3 took 10\.99\.1\.102 (\d+) ms after the kill`)
	vrrpBack     = regexp.MustCompile(`node2 holds 10\.99\.1\.102 again ([\d.]+) s after it left fault with its instances back`)
)

// TestLabVRRP: `ober lab up --ha vrrp` builds the site with the nodes in
// VRRP mode and runs its demo (transfers through each VIP checked by
// SHA-256 and served by the VIP's owner, node2's VIP moving to node3
// when node2 loses its HAProxy instances and coming back after the
// preempt delay, never on two nodes at once), `lab status` finds each VIP
// on its owner, and `lab down` leaves nothing.
func TestLabVRRP(t *testing.T) {
	requireLab(t, "vrrp")
	before := viewHost(t)
	dir, prefix := newLab(t, "vrrp")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	res := labUp(ctx, t, "--ha", "vrrp", "--dir", dir, "--prefix", prefix, "--no-install")
	require.Contains(t, res.stdout, "S3 endpoints: https://10.99.1.101  https://10.99.1.102  https://10.99.1.103")
	for _, v := range []string{"10.99.1.101", "10.99.1.102", "10.99.1.103"} {
		require.Contains(t, res.stdout, "s3.ober.lab.  60  IN  A  "+v, "the DNS round robin to publish")
	}
	require.Len(t, regexp.MustCompile(`GET demo-\S+ .* sha256 ok [0-9a-f]{16}`).FindAllString(res.stdout, -1), 9,
		"three sizes through each of the three VIPs, each checked")
	for i, v := range []string{"10.99.1.101", "10.99.1.102", "10.99.1.103"} {
		require.Contains(t, res.stdout, fmt.Sprintf("through https://%s (owner node%d):", v, i+1))
	}
	require.Contains(t, res.stdout, "each VIP on its owner alone")
	took := vrrpTakeover.FindStringSubmatch(res.stdout)
	back := vrrpBack.FindStringSubmatch(res.stdout)
	require.NotNil(t, took, "node3 did not take node2's VIP:\n%s", res.stdout)
	require.NotNil(t, back, "node2 did not take its VIP back:\n%s", res.stdout)
	reqs := requireTally(t, res.stdout)
	backS, err := strconv.ParseFloat(back[1], 64)
	require.NoError(t, err)
	// The preempt delay (2s) runs from node2's VRRP instance leaving
	// fault, as keepalived reported it (measured from the demo's poll of
	// the restart instead, it came out 1.3 s on a loaded machine).
	require.GreaterOrEqual(t, backS, 1.8, "node2 took its VIP back before the preempt delay")
	require.Contains(t, res.stdout, "no VIP on two nodes at once in any of")
	require.NotContains(t, res.stdout, "TWO HOLDERS")
	// The return to the owner is planned (ha.vrrp.handoff): the 30 s
	// download through node3 survives it, and no request after the
	// takeover fails (the demo itself fails otherwise).
	require.Regexp(t, `a download of demo-32MiB started through node3 after the takeover, read over 30s: sha256 ok across the return, in [\d.]+ s, served by node3 \(node2 handed [1-9]\d* segments back to it\)`, res.stdout)
	require.Regexp(t, `requests through the failover: \d+ OK(, 0 failed|, \d+ failed \(\d+ started before the takeover, on node2's dead instances; 0 after it\))?\n`, res.stdout)
	t.Logf("VRRP failover: node3 took 10.99.1.102 %s ms after the kill; node2 back %s s after its restart; requests %s OK, %s failed",
		took[1], back[1], reqs[1], reqs[2])
	requireAWSExample(ctx, t, res.stdout, prefix, "https://10.99.1.101")

	st, err := runLab(ctx, "status", "--dir", dir)
	require.NoError(t, err)
	t.Logf("ober lab status:\n%s", st.stdout)
	require.Zero(t, st.code, "ober lab status:\n%s", st)
	require.Contains(t, st.stdout, "nodes (VRRP): 3 of 3 healthy")
	for i, v := range []string{"10.99.1.101", "10.99.1.102", "10.99.1.103"} {
		require.Regexp(t, fmt.Sprintf(`%s\s+held by node%d\s+\(owner node%d\)`, regexp.QuoteMeta(v), i+1, i+1), st.stdout)
	}
	require.Contains(t, st.stdout, "all well")

	labDown(ctx, t, before, dir, prefix)
}

// TestLabDownAfterCrash: `ober lab down` removes everything also when
// `lab up` was killed while building, and when the lab runs with one
// node's ober killed (its HAProxy instances outlive it).
func TestLabDownAfterCrash(t *testing.T) {
	requireLab(t, "bgp")

	// Killed at two points: right after BIRD was recorded (the nodes
	// about to start) and once the Ceph monitor was (the nodes running,
	// Ceph half made).
	for _, at := range []int{1, 5} {
		t.Run(fmt.Sprintf("killed_at_%d_processes", at), func(t *testing.T) {
			before := viewHost(t)
			dir, prefix := newLab(t, fmt.Sprintf("crash%d", at))
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, oberBin, "lab", "up", "--no-demo", "--no-install", "--dir", dir, "--prefix", prefix)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			require.NoError(t, cmd.Start())
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()

			var rec *netsite.Record
			for rec == nil || len(rec.Procs) < at {
				select {
				case err := <-done:
					t.Fatalf("lab up ended (%v) before recording %d processes\nstdout:\n%s\nstderr:\n%s", err, at, stdout.String(), stderr.String())
				case <-ctx.Done():
					t.Fatal("no processes recorded in time")
				case <-time.After(5 * time.Millisecond):
				}
				rec, _ = netsite.ReadRecord(dir)
			}
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			<-done
			t.Logf("lab up killed with %d processes recorded:\n%s", len(rec.Procs), stdout.String())

			// Whatever ran on after the kill (a daemon forking, a
			// command under way) is found by its namespace.
			rec, err := netsite.ReadRecord(dir)
			require.NoError(t, err)
			down, err := runLab(ctx, "down", "--dir", dir)
			require.NoError(t, err)
			t.Logf("ober lab down:\n%s", down.stdout)
			require.Zero(t, down.code, "ober lab down:\n%s", down)
			requireNothingLeft(t, before, dir, prefix, rec)
		})
	}

	t.Run("complete_lab_ober_killed", func(t *testing.T) {
		before := viewHost(t)
		dir, prefix := newLab(t, "crashfull")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		res, err := runLab(ctx, "up", "--no-demo", "--no-install", "--dir", dir, "--prefix", prefix)
		require.NoError(t, err)
		require.Zero(t, res.code, "ober lab up --no-demo:\n%s", res)
		state, err := lab.Load(dir)
		require.NoError(t, err)
		require.True(t, state.Ready)

		// node1's ober dies as in a crash; its instances keep running
		// (by design), known to no record.
		n1 := state.Nodes[0]
		require.NoError(t, syscall.Kill(n1.PID, syscall.SIGKILL))
		var orphans []string
		deadline := time.Now().Add(10 * time.Second)
		for len(orphans) < 2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			orphans = slices.DeleteFunc(processesIn(filepath.Join(dir, n1.Name)), func(p string) bool {
				return !strings.Contains(p, "haproxy")
			})
		}
		require.NotEmpty(t, orphans, "node1's HAProxy instances should outlive its ober")
		t.Logf("node1's ober killed; its instances run on: %v", orphans)

		st, err := runLab(ctx, "status", "--dir", dir)
		require.NoError(t, err)
		require.NotZero(t, st.code, "status must report the dead node:\n%s", st)
		require.Contains(t, st.stdout, "ober node1")
		require.Contains(t, st.stdout, "DEAD")

		rec, err := netsite.ReadRecord(dir)
		require.NoError(t, err)
		down, err := runLab(ctx, "down", "--dir", dir)
		require.NoError(t, err)
		t.Logf("ober lab down:\n%s", down.stdout)
		require.Zero(t, down.code, "ober lab down:\n%s", down)
		require.Contains(t, down.stdout, "in "+prefix+"node1", "the orphaned instances are found in node1's namespace")
		requireNothingLeft(t, before, dir, prefix, rec)
	})
}

// TestLabRefusals: what `ober lab` refuses, without building anything.
func TestLabRefusals(t *testing.T) {
	netnstest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "none")
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"up", "--ha", "ospf", "--dir", dir}, 1, `--ha "ospf": want bgp or vrrp`},
		// vrrp is accepted: it fails on the directory's length, past the
		// check of --ha.
		{[]string{"up", "--ha", "vrrp", "--no-install", "--dir", "/tmp/" + strings.Repeat("x", 60)}, 1, "may be at most"},
		{[]string{"up", "--no-install", "--dir", "/tmp/" + strings.Repeat("x", 60)}, 1, "may be at most"},
		{[]string{"status", "--dir", dir}, 1, "no lab in " + dir},
		{[]string{"down", "--dir", dir}, 0, "nothing to remove"},
	} {
		res, err := runLab(ctx, c.args...)
		require.NoError(t, err)
		require.Equal(t, c.code, res.code, "ober lab %v:\n%s", c.args, res)
		require.Contains(t, res.stdout+res.stderr, c.out, "ober lab %v", c.args)
	}
	_, err := os.Stat(dir)
	require.True(t, errors.Is(err, os.ErrNotExist), "a refused command made %s", dir)
}

// awsExample runs the aws-cli example `lab up` printed, as a newcomer
// would paste it, and wants the demo's objects listed.
func awsExample(ctx context.Context, t *testing.T, aws, out, prefix string) {
	t.Helper()
	var script []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "export AWS_") || strings.HasPrefix(l, "ip netns exec "+prefix+"client aws ") {
			script = append(script, l)
		}
	}
	require.Len(t, script, 3, "the aws example:\n%s", out)
	script[2] += " s3://ober-lab-demo/"
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := exec.CommandContext(ctx, "bash", "-c", strings.Join(script, "\n")).CombinedOutput()
	require.NoError(t, err, "the printed aws example (%s):\n%s\n%s", aws, strings.Join(script, "\n"), res)
	require.Contains(t, string(res), "demo-32MiB")
	t.Logf("the printed aws example lists: %s", strings.TrimSpace(string(res)))
}

var soakRow = regexp.MustCompile(`(?m)^(steady|kill node1's HAProxy|reload node2|stop and start node3|flap node1's link)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)$`)

// TestLabS3: one fresh lab for the S3 work a user does with it. First
// every client path through HAProxy to the real RGW (testS3Clients), then
// `ober lab soak` for a minute, as CI runs it: aws-cli multipart uploads,
// ranged reads, listings and deletes while node1 loses its HAProxy
// instances, node2 reloads, node3 stops and starts, and node1's link
// flaps. Every phase is reported and saw traffic, the lab is well at the
// end and every kept object reads back byte-exact.
func TestLabS3(t *testing.T) {
	requireLab(t, "bgp")
	before := viewHost(t)
	dir, prefix := newLab(t, "s3")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	labUp(ctx, t, "--dir", dir, "--prefix", prefix, "--no-install", "--no-demo")
	t.Run("plain HTTP only from the client subnets", func(t *testing.T) {
		// The router's own address is not whitelisted: XDP drops its SYNs
		// to port 80, while port 443 is open to it as to anyone.
		d, err := netsite.NewDialer(&netsite.NS{Name: prefix + "router"}, 1)
		require.NoError(t, err)
		defer d.Close()
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		c, err := d.DialContext(dctx, "tcp", lab.VIP4.String()+":443")
		require.NoError(t, err, "port 443 from the router")
		c.Close()
		c, err = d.DialContext(dctx, "tcp", lab.VIP4.String()+":80")
		if err == nil {
			c.Close()
		}
		require.Error(t, err, "port 80 from the router, which is not whitelisted")
	})
	t.Run("clients", func(t *testing.T) { testS3Clients(ctx, t, dir) })
	t.Run("soak", func(t *testing.T) {
		res, err := runLab(ctx, "soak", "--dir", dir, "--duration", "60s")
		require.NoError(t, err)
		t.Logf("ober lab soak:\n%s", res.stdout)
		require.Zero(t, res.code, "ober lab soak:\n%s", res)
		require.Contains(t, res.stdout, "all well")
		rows := soakRow.FindAllStringSubmatch(res.stdout, -1)
		require.Len(t, rows, 5, "a row per phase")
		var up, down float64
		for _, r := range rows {
			u, _ := strconv.ParseFloat(r[2], 64)
			d, _ := strconv.ParseFloat(r[3], 64)
			up, down = up+u, down+d
		}
		require.Positive(t, up, "the soak uploaded")
		require.Positive(t, down, "the soak read")
		kept := regexp.MustCompile(`objects: (\d+) acknowledged and kept, (\d+) read back byte-exact`).FindStringSubmatch(res.stdout)
		require.NotNil(t, kept)
		require.Equal(t, kept[1], kept[2])
		require.NotEqual(t, "0", kept[1], "the soak kept objects to check")
	})
	// A node that lost its default route still looks healthy and
	// announces, while its answers to the client go nowhere (as after a
	// link flap without a network configuration to restore it).
	t.Run("status names a node without its route back", func(t *testing.T) {
		node1 := &netsite.NS{Name: prefix + "node1"}
		require.NoError(t, node1.IP(ctx, "route", "del", "default"))
		res, err := runLab(ctx, "status", "--dir", dir)
		require.NoError(t, node1.IP(ctx, "route", "add", "default", "via", lab.RouterAddr.String()))
		require.NoError(t, err)
		require.Equal(t, 1, res.code, "lab status:\n%s", res)
		require.Contains(t, res.stdout, "node1 has no default route via "+lab.RouterAddr.String())
		res, err = runLab(ctx, "status", "--dir", dir)
		require.NoError(t, err)
		require.Zero(t, res.code, "lab status with the route back:\n%s", res)
	})
	labDown(ctx, t, before, dir, prefix)
}
