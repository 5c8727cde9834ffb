package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/ecmptest"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// oberProc is one `ober run` the test starts itself, so that it chooses
// the environment and sees the exit status.
type oberProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{}
	log  *nodetest.LogBuffer
}

// startOber runs `ober run --config path` in ns with env added to the
// environment. It does not wait for health; cleanup stops it with SIGTERM.
func startOber(t *testing.T, ns *netnstest.NS, path string, env ...string) *oberProc {
	t.Helper()
	cmd := ns.Exec(context.Background(), oberBin, "run", "--config", path, "--log-level", "debug")
	cmd.Env = append(os.Environ(), env...)
	p := &oberProc{t: t, cmd: cmd, done: make(chan struct{}), log: &nodetest.LogBuffer{}}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	require.NoError(t, cmd.Start())
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(time.Minute)
		if t.Failed() {
			t.Logf("ober (pid %d) log:\n%s", cmd.Process.Pid, p.log.String())
		}
	})
	return p
}

func (p *oberProc) stop(wait time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(wait):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *oberProc) signal(sig syscall.Signal) {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig))
}

// wait returns the exit status, failing the test after timeout.
func (p *oberProc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("ober still running %v after being asked to exit\n%s", timeout, p.log.String())
		return -1
	}
}

// waitHealthy polls /health until it answers 200.
func (p *oberProc) waitHealthy(nc *api.Client) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if h, err := nc.Health(context.Background()); err == nil && h.OK() {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("ober run exited during start: %v\n%s", p.cmd.ProcessState, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("ober not healthy after 30s\n%s", p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// notification is one sd_notify datagram and when it arrived.
type notification struct {
	at     time.Time
	fields map[string]string
	raw    string
}

// notifySocket plays systemd's side of sd_notify: a datagram socket whose
// path goes into NOTIFY_SOCKET. Path sockets work across network
// namespaces (ip netns exec keeps the file system).
type notifySocket struct {
	path string
	ch   chan notification
	mu   sync.Mutex
	all  []notification
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "ober-notify-") // short: sun_path has 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "notify"), ch: make(chan notification, 4096)}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 8192)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(n.ch)
				return
			}
			m := notification{at: time.Now(), fields: map[string]string{}, raw: string(buf[:k])}
			for _, line := range strings.Split(strings.TrimSpace(m.raw), "\n") {
				key, v, _ := strings.Cut(line, "=")
				m.fields[key] = v
			}
			n.mu.Lock()
			n.all = append(n.all, m)
			n.mu.Unlock()
			n.ch <- m
		}
	}()
	return n
}

// next returns the next message that has key, skipping watchdog pings
// unless key is WATCHDOG.
func (n *notifySocket) next(t *testing.T, key string, timeout time.Duration) notification {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-n.ch:
			require.True(t, ok, "notify socket closed")
			if _, has := m.fields[key]; has {
				return m
			}
			if _, ping := m.fields["WATCHDOG"]; !ping || key == "WATCHDOG" {
				// Any other message is out of order for the test.
				require.Failf(t, "unexpected notification", "waiting for %s, got %q", key, m.raw)
			}
		case <-deadline:
			require.Failf(t, "no notification", "no %s= within %v; got so far: %q", key, timeout, n.raws())
		}
	}
}

func (n *notifySocket) raws() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.all {
		out = append(out, m.raw)
	}
	return out
}

// pings returns the arrival times of WATCHDOG=1 between from and to.
func (n *notifySocket) pings(from, to time.Time) []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []time.Time
	for _, m := range n.all {
		if m.fields["WATCHDOG"] == "1" && !m.at.Before(from) && !m.at.After(to) {
			out = append(out, m.at)
		}
	}
	return out
}

// TestRunNotify runs `ober run` as systemd would with Type=notify and
// WatchdogSec: READY=1 only once /health is OK, watchdog pings at half
// the timeout, RELOADING=1 then READY=1 around a reload (applied or
// refused, STATUS= saying which), STOPPING=1 at SIGTERM.
func TestRunNotify(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{}))
	sock := newNotifySocket(t)
	nc := nodetest.NewAPI(nodetest.NewDialer(t, s.Node, 2))

	// Ask /health every 10ms from the start: once READY=1 has arrived, no
	// answer may be anything but OK.
	type probe struct {
		start time.Time
		code  int
		body  string
	}
	var (
		probesMu sync.Mutex
		probes   []probe
	)
	stopProbes := make(chan struct{})
	probesDone := make(chan struct{})
	go func() {
		defer close(probesDone)
		for {
			select {
			case <-stopProbes:
				return
			case <-time.After(10 * time.Millisecond):
			}
			start := time.Now()
			h, err := nc.Health(context.Background())
			if err != nil {
				continue // the API port is not bound yet
			}
			probesMu.Lock()
			probes = append(probes, probe{start, h.Code, h.Body})
			probesMu.Unlock()
		}
	}()

	p := startOber(t, s.Node, s.ConfigPath, "NOTIFY_SOCKET="+sock.path, "WATCHDOG_USEC=200000")
	ready := sock.next(t, "READY", 40*time.Second)
	require.Contains(t, ready.fields["STATUS"], "2 of 2 HAProxy instances healthy", ready.raw)
	time.Sleep(time.Second)
	close(stopProbes)
	<-probesDone
	probesMu.Lock()
	var before, after int
	for _, pr := range probes {
		if pr.start.After(ready.at) {
			after++
			require.Equal(t, http.StatusOK, pr.code, "/health at %v after READY=1: %s", pr.start.Sub(ready.at), pr.body)
		} else if pr.code != http.StatusOK {
			before++
		}
	}
	probesMu.Unlock()
	require.NotZero(t, after, "no /health probe after READY=1")
	t.Logf("/health: %d answers not OK before READY=1, %d OK after", before, after)
	require.NotContains(t, p.log.String(), "reporting ready while not healthy")

	// Watchdog: WATCHDOG_USEC=200000 means a ping every 100ms.
	time.Sleep(2 * time.Second)
	to := time.Now()
	pings := sock.pings(to.Add(-2*time.Second), to)
	var gap time.Duration
	for i := 1; i < len(pings); i++ {
		gap = max(gap, pings[i].Sub(pings[i-1]))
	}
	t.Logf("watchdog: %d pings in 2s, longest gap %v", len(pings), gap)
	require.InDelta(t, 20, len(pings), 4, "pings in 2s at WATCHDOG_USEC=200000")
	require.Less(t, gap, 200*time.Millisecond, "a gap as long as the timeout would have had ober killed")

	// A reload that applies.
	drainPings(sock)
	s.WriteConfig(s.Config(nodetest.Params{HealthInterval: 300 * time.Millisecond}))
	p.signal(syscall.SIGHUP)
	rl := sock.next(t, "RELOADING", 5*time.Second)
	mono, err := strconv.ParseInt(rl.fields["MONOTONIC_USEC"], 10, 64)
	require.NoError(t, err, "RELOADING=1 comes with MONOTONIC_USEC: %q", rl.raw)
	require.Positive(t, mono)
	done := sock.next(t, "READY", 20*time.Second)
	require.Contains(t, done.fields["STATUS"], "reloaded; serving configuration generation 2", done.raw)

	// A reload that is refused ends in READY=1 too, saying so.
	s.WriteConfigText(nodetest.YAML(t, s.Config(nodetest.Params{})) + "bogus_key: 1\n")
	p.signal(syscall.SIGHUP)
	sock.next(t, "RELOADING", 5*time.Second)
	refused := sock.next(t, "READY", 20*time.Second)
	require.Contains(t, refused.fields["STATUS"], "reload refused", refused.raw)
	require.Contains(t, refused.fields["STATUS"], "bogus_key", refused.raw)
	require.Contains(t, refused.fields["STATUS"], "serving configuration generation 2", refused.raw)

	// Pings resume after the reloads.
	time.Sleep(500 * time.Millisecond)
	require.NotEmpty(t, sock.pings(time.Now().Add(-300*time.Millisecond), time.Now()), "pings after the reloads")

	p.signal(syscall.SIGTERM)
	stop := sock.next(t, "STOPPING", 5*time.Second)
	require.Contains(t, stop.fields["STATUS"], "stopping", stop.raw)
	require.Zero(t, p.wait(30*time.Second), "ober exits 0 after SIGTERM")
}

// drainPings drops the messages received so far.
func drainPings(n *notifySocket) {
	for {
		select {
		case <-n.ch:
		default:
			return
		}
	}
}

// xdpProgID is the ID of the XDP program on iface in ns.
func xdpProgID(t *testing.T, ns *netnstest.NS, iface string) string {
	t.Helper()
	out := ns.IP(t, "-d", "link", "show", "dev", iface)
	m := regexp.MustCompile(`prog/xdp id (\d+)`).FindStringSubmatch(out)
	require.NotNil(t, m, "no XDP program on %s:\n%s", iface, out)
	return m[1]
}

// TestRunRestartHandover: SIGUSR2 makes `ober run` exit 75 at once and
// leave everything serving; a new `ober run` takes over. A long download
// in flight completes byte-exact, no request of a client loop fails
// before, during or after, the XDP program is the same one throughout,
// the VIP stays on lo (ha.mode none), and the old instances are retired
// once the new ones serve.
func TestRunRestartHandover(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true, Drain: 10 * time.Second}))
	sock := newNotifySocket(t)
	nc := nodetest.NewAPI(nodetest.NewDialer(t, s.Node, 2))
	first := startOber(t, s.Node, s.ConfigPath, "NOTIFY_SOCKET="+sock.path)
	first.waitHealthy(nc)
	sock.next(t, "READY", 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	mc, tr := s.S3ClientTransport(nodetest.VIP.String())
	require.NoError(t, mc.MakeBucket(ctx, "handover", minio.MakeBucketOptions{}))
	data := payload(48<<20, 7)
	_, err := mc.PutObject(ctx, "handover", "big", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	require.NoError(t, err)
	st, err := nc.Status(ctx)
	require.NoError(t, err)
	var oldPIDs []int
	for _, in := range st.Daemon.HAProxy.Instances {
		oldPIDs = append(oldPIDs, in.PID)
	}
	require.Len(t, oldPIDs, 2)
	progBefore := xdpProgID(t, s.Node, "veth-n")

	// The long download starts on an old instance and is read slowly
	// across the whole handover.
	obj, err := mc.GetObject(ctx, "handover", "big", minio.GetObjectOptions{})
	require.NoError(t, err)
	h := sha256.New()
	_, err = io.CopyN(h, obj, 1<<20)
	require.NoError(t, err)
	dl := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			n, err := obj.Read(buf)
			h.Write(buf[:n])
			if err == io.EOF {
				dl <- nil
				return
			}
			if err != nil {
				dl <- err
				return
			}
			time.Sleep(100 * time.Millisecond) // about 5s for the rest
		}
	}()

	stop := make(chan struct{})
	var res []attempt
	loadDone := make(chan struct{})
	go func() { res = loadNew(ctx, s, 4, stop); close(loadDone) }()
	time.Sleep(300 * time.Millisecond)

	sent := time.Now()
	first.signal(syscall.SIGUSR2)
	stopping := sock.next(t, "STOPPING", 5*time.Second)
	require.Contains(t, stopping.fields["STATUS"], "restarting", stopping.raw)
	code := first.wait(10 * time.Second)
	exited := time.Since(sent)
	require.Equal(t, api.ExitRestart, code, "exit status after SIGUSR2\n%s", first.log.String())
	t.Logf("SIGUSR2: exited %d after %v", code, exited.Round(time.Millisecond))
	require.Less(t, exited, 3*time.Second, "a handover neither drains nor waits")
	require.NotContains(t, first.log.String(), "draining instances")

	// Between the two processes nothing runs but HAProxy and the BPF
	// programs, and the node serves.
	require.Contains(t, s.Node.IP(t, "addr", "show", "dev", "lo"), nodetest.VIP.String()+"/32", "the VIP stays on lo")
	for _, pid := range oldPIDs {
		require.True(t, alive(pid), "HAProxy %d keeps running without ober", pid)
	}
	time.Sleep(500 * time.Millisecond)

	second := startOber(t, s.Node, s.ConfigPath)
	second.waitHealthy(nc)
	require.Contains(t, second.log.String(), "taking over after a restart handover")
	select {
	case err := <-dl:
		t.Fatalf("the long download ended (%v) before the new ober served: the test shows nothing", err)
	default:
	}
	st, err = nc.Status(ctx)
	require.NoError(t, err)
	for _, in := range st.Daemon.HAProxy.Instances {
		require.NotContains(t, oldPIDs, in.PID, "the new ober runs its own instances")
	}
	time.Sleep(time.Second)
	close(stop)
	<-loadDone

	select {
	case err := <-dl:
		require.NoError(t, err, "the long download broke")
	case <-time.After(60 * time.Second):
		t.Fatal("the long download did not finish")
	}
	obj.Close()
	want := sha256.Sum256(data)
	require.Equal(t, want[:], h.Sum(nil), "the long download completed byte-exact")

	var failed []string
	for _, a := range res {
		if a.err != nil {
			failed = append(failed, fmt.Sprintf("port %d at %v: %v", a.port, a.start.Sub(sent).Round(time.Millisecond), a.err))
		}
	}
	require.Empty(t, failed, "requests failed across the handover (of %d)", len(res))
	t.Logf("%d requests across the handover, none failed", len(res))
	require.Equal(t, progBefore, xdpProgID(t, s.Node, "veth-n"), "the XDP program was never replaced")

	// The client lets its kept-alive connections go, as it would within
	// timeouts.http_keep_alive: the old instances have nothing left.
	tr.CloseIdleConnections()
	require.Eventually(t, func() bool {
		for _, pid := range oldPIDs {
			if alive(pid) {
				return false
			}
		}
		return true
	}, 20*time.Second, 100*time.Millisecond, "the old instances were retired once their transfers were done")
}

// gracefulRestartRouter turns BIRD of the ecmp site into a graceful
// restart helper: routertest starts it with graceful restart off, so that
// the other tests see a dead node's routes go at once.
func gracefulRestartRouter(t *testing.T, s *ecmptest.Site) {
	t.Helper()
	path := filepath.Join(s.R.Dir, "bird.conf")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	conf := strings.ReplaceAll(string(b), "graceful restart off;", "graceful restart aware;")
	require.NotEqual(t, string(b), conf, "routertest's BIRD configuration changed: no graceful restart line")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.R.Birdc(ctx, "configure")
	require.NoError(t, err, out)
	require.Contains(t, out, "Reconfigur", out) // "Reconfigured" or "Reconfiguration in progress"
}

// TestBGPRestartHandover: with ha.bgp.graceful_restart, a restart handover
// keeps the node in the router's multipath route the whole time (sampled
// every 10ms): the sessions end without a NOTIFICATION, BIRD keeps the
// routes as stale, and the next ober reconnects as a restarting speaker
// and refreshes them. A SIGTERM stop still withdraws at once.
func TestBGPRestartHandover(t *testing.T) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{})
	gracefulRestartRouter(t, s)
	for _, n := range s.Nodes {
		c := s.Config(n)
		c.HA.BGP.GracefulRestart = config.GracefulRestart{Enabled: true, RestartTime: config.Duration{Duration: 20 * time.Second}}
		n.WriteConfig(c)
	}
	victim := s.Nodes[1]
	nc := nodetest.NewAPI(nodetest.NewDialer(t, victim.NS, 2))
	s.Nodes[0].Start()
	s.Nodes[2].Start()
	first := startOber(t, victim.NS, victim.ConfigPath)
	first.waitHealthy(nc)
	s.WaitPaths(3, 30*time.Second)
	sess, err := s.R.Birdc(context.Background(), "show", "protocols", "all", "n2")
	require.NoError(t, err)
	require.Contains(t, sess, "Graceful restart", "the router negotiated graceful restart with %s:\n%s", victim.Name, sess)

	// Sample the router's kernel routes every 10ms across the handover.
	type sample struct {
		at       time.Time
		nh4, nh6 []netip.Addr
	}
	var samples []sample
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			nh4, err4 := s.R.Nexthops(ecmptest.Prefix4)
			nh6, err6 := s.R.Nexthops(ecmptest.Prefix6)
			if err4 == nil && err6 == nil {
				samples = append(samples, sample{time.Now(), nh4, nh6})
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	var fs []fetch
	loadDone := make(chan struct{})
	go func() { fs = loadECMP(context.Background(), s, 4, stop); close(loadDone) }()
	time.Sleep(300 * time.Millisecond)

	sent := time.Now()
	first.signal(syscall.SIGUSR2)
	require.Equal(t, api.ExitRestart, first.wait(10*time.Second), "exit status after SIGUSR2")
	require.NotContains(t, first.log.String(), "bgp withdrawn")
	time.Sleep(500 * time.Millisecond) // systemd's RestartSec, about
	second := startOber(t, victim.NS, victim.ConfigPath)
	second.waitHealthy(nc)
	require.Eventually(t, func() bool { return strings.Contains(second.log.String(), `"restarting":true`) },
		10*time.Second, 20*time.Millisecond, "the next speaker starts as restarting")
	// The refreshed routes and End-of-RIB go out once the router's
	// End-of-RIB is in; then BIRD ends its graceful restart.
	require.Eventually(t, func() bool {
		out, err := s.R.Birdc(context.Background(), "show", "protocols", "n2")
		return err == nil && strings.Contains(out, "Established")
	}, 20*time.Second, 50*time.Millisecond, "session with %s back", victim.Name)
	time.Sleep(2 * time.Second)
	close(stop)
	<-sampled
	<-loadDone

	missing := 0
	for _, sm := range samples {
		if !slices.Contains(sm.nh4, victim.Addr) || !slices.Contains(sm.nh6, victim.Addr6) {
			missing++
			t.Logf("at %v: router's next hops %v %v lack %s", sm.at.Sub(sent).Round(time.Millisecond), sm.nh4, sm.nh6, victim.Name)
		}
	}
	t.Logf("%d route samples over %v across the handover, %d without %s; %d requests, %d failed",
		len(samples), samples[len(samples)-1].at.Sub(samples[0].at).Round(time.Millisecond), missing, victim.Name, len(fs), len(failures(fs)))
	require.Greater(t, len(samples), 200, "sampled too rarely to show anything")
	require.Zero(t, missing, "the node left the router's route during the handover")
	require.Empty(t, failures(fs), "requests failed across the handover")
	require.Contains(t, byNode(fs), victim.Name, "no request was served by %s", victim.Name)

	// A stop is still a stop: withdrawn at once, with a Cease.
	w := s.R.Watch(t, ecmptest.Prefix4)
	stopped := time.Now()
	second.signal(syscall.SIGTERM)
	gone, _ := waitGone(t, w, stopped, victim, 5*time.Second)
	t.Logf("SIGTERM: route via %s gone %v later", victim.Name, gone.Sub(stopped).Round(time.Millisecond))
	require.Zero(t, second.wait(30*time.Second), "ober exits 0 after SIGTERM")
}
