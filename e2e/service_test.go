package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// fakeSystemd is a directory that looks like systemd's runtime directory
// and a systemctl on PATH that records its arguments and keeps the ober
// unit's state in a file: start makes it active with MainPID 4242, stop
// inactive, and a SIGUSR2 to the main process restarts it (through
// activating/auto-restart, as RestartForceExitStatus does) with MainPID
// 4343.
type fakeSystemd struct {
	dir, sdDir, env, calls, state string
}

const (
	unitActive   = "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4242\n"
	unitInactive = "LoadState=loaded\nActiveState=inactive\nSubState=dead\nMainPID=0\n"
	unitNotFound = "LoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\n"
)

func newFakeSystemd(t *testing.T, state string) *fakeSystemd {
	t.Helper()
	dir := t.TempDir()
	f := &fakeSystemd{dir: dir, sdDir: filepath.Join(dir, "systemd"), calls: filepath.Join(dir, "calls"), state: filepath.Join(dir, "state")}
	require.NoError(t, os.MkdirAll(filepath.Join(f.sdDir, "system"), 0o755))
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	f.env = "PATH=" + bin + ":" + os.Getenv("PATH")
	f.set(t, state)
	script := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %[1]s
case "$1" in
show) cat %[2]s ;;
start)
	if [ -e %[3]s/fail-start ]; then
		echo 'Job for ober.service failed because the control process exited with error code.' >&2
		echo 'See "systemctl status ober.service" and "journalctl -xeu ober.service" for details.' >&2
		exit 1
	fi
	printf '%[4]s' > %[2]s ;;
stop) printf '%[5]s' > %[2]s ;;
kill)
	printf 'LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nMainPID=0\n' > %[2]s
	( sleep 0.3; printf 'LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4343\n' > %[2]s.new; mv %[2]s.new %[2]s ) >/dev/null 2>&1 &
	;;
*) echo "unknown command $1" >&2; exit 1 ;;
esac
`, f.calls, f.state, dir, strings.ReplaceAll(unitActive, "\n", `\n`), strings.ReplaceAll(unitInactive, "\n", `\n`))
	require.NoError(t, os.WriteFile(filepath.Join(bin, "systemctl"), []byte(script), 0o755))
	return f
}

func (f *fakeSystemd) set(t *testing.T, state string) {
	t.Helper()
	require.NoError(t, os.WriteFile(f.state, []byte(state), 0o644))
}

// serviceConfig writes a configuration that passes `ober run --check`
// with its runtime directory and API port in the test's own places; the
// port answers nothing.
func serviceConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	path := filepath.Join(dir, "ober.yaml")
	cfg := fmt.Sprintf(`node:
  name: n1
  interfaces: [veth-none]
  runtime_dir: %[1]s/run
  state_dir: %[1]s/state
vips: [192.0.2.10]
services:
  - name: https
    port: 443
    mode: tls
    tls:
      self_signed: true
backends:
  servers:
    - name: s1
      address: 127.0.0.1:9
api:
  listen: 127.0.0.1:%[2]d
%[3]s`, dir, port, extra)
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

func TestServiceSystemdRunsSystemctl(t *testing.T) {
	netnstest.RequireTool(t, "haproxy", "haproxy") // restart checks the configuration with it
	f := newFakeSystemd(t, unitInactive)
	cfg := serviceConfig(t, "")
	env := []string{f.env}
	svc := func(code int, args ...string) result {
		t.Helper()
		return oberEnv(t, env, code, append(args, "--config", cfg, "--systemd-dir", f.sdDir)...)
	}
	const detect, state = "show -p LoadState ober", "show -p ActiveState,SubState,MainPID ober"

	res := svc(0, "start")
	require.Equal(t, []string{detect, state, "start ober", state}, readCalls(t, f.calls))
	require.Regexp(t, `^started: pid 4242, serving after \S+ \(systemd unit ober\)\n$`, res.stdout)

	res = svc(0, "start")
	require.Equal(t, []string{detect, state}, readCalls(t, f.calls), "a running unit is not started again")
	require.Equal(t, "already running: pid 4242 (systemd unit ober)\n", res.stdout)

	res = svc(0, "restart")
	calls := readCalls(t, f.calls)
	require.Equal(t, []string{detect, state, "kill --kill-whom=main --signal=SIGUSR2 ober"}, calls[:3])
	for _, c := range calls[3:] {
		require.Equal(t, state, c, "restart only watches the unit after the signal")
	}
	require.Regexp(t, `^restarted: pid 4242 -> 4343 in \S+ \(instances not checked: the daemon's /status did not answer\)\n$`, res.stdout)

	res = svc(0, "stop")
	require.Equal(t, []string{detect, state, "stop ober"}, readCalls(t, f.calls))
	require.Regexp(t, `^stopped: pid 4343 in \S+\n$`, res.stdout)

	res = svc(0, "stop")
	require.Equal(t, []string{detect, state}, readCalls(t, f.calls))
	require.Equal(t, "not running\n", res.stdout)

	// Restart with nothing running starts.
	res = svc(0, "restart")
	require.Equal(t, []string{detect, state, "start ober", state}, readCalls(t, f.calls))
	require.Regexp(t, `^not running; started: pid 4242`, res.stdout)

	// A configuration that fails its check leaves the running unit alone.
	broken := serviceConfig(t, "haproxy:\n  binary: /nonexistent/haproxy\n")
	res = oberEnv(t, env, 1, "restart", "--config", broken, "--systemd-dir", f.sdDir)
	require.Equal(t, []string{detect, state}, readCalls(t, f.calls), "no signal with a broken configuration")
	require.Equal(t, "ober: restart: haproxy.binary: /nonexistent/haproxy -v: fork/exec /nonexistent/haproxy: no such file or directory; the running ober unit (pid 4242) was left alone\n", res.stderr)

	// systemctl's complaint, in one line, with the daemon's reason from
	// the journal.
	f.set(t, unitInactive)
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "fail-start"), nil, 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(f.sdDir, "journal"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "bin", "journalctl"), []byte(`#!/bin/sh
echo '{"level":"INFO","msg":"haproxy found"}'
echo 'ober: config /etc/ober/ober.yaml: vips[0]: "10.0.0.300" is not an IP address'
`), 0o755))
	res = svc(1, "start")
	require.Equal(t, []string{detect, state, "start ober"}, readCalls(t, f.calls))
	require.Equal(t, `ober: start: systemctl start ober: Job for ober.service failed because the control process exited with error code.; ober run: config /etc/ober/ober.yaml: vips[0]: "10.0.0.300" is not an IP address`+"\n", res.stderr)
}

func TestServiceModeDetection(t *testing.T) {
	f := newFakeSystemd(t, unitNotFound)
	cfg := serviceConfig(t, "")
	// systemd without the ober unit: the direct mode, whose PID file
	// names nothing.
	res := oberEnv(t, []string{f.env}, 0, "stop", "--config", cfg, "--systemd-dir", f.sdDir)
	require.Equal(t, "not running\n", res.stdout)
	require.Equal(t, []string{"show -p LoadState ober"}, readCalls(t, f.calls))

	// --direct asks systemd nothing.
	f.set(t, unitActive)
	res = oberEnv(t, []string{f.env}, 0, "stop", "--direct", "--config", cfg, "--systemd-dir", f.sdDir)
	require.Equal(t, "not running\n", res.stdout)
	require.Nil(t, readCalls(t, f.calls))

	// A PID file that holds no PID names no daemon.
	pidFile := filepath.Join(filepath.Dir(cfg), "run", "ober.pid")
	require.NoError(t, os.MkdirAll(filepath.Dir(pidFile), 0o755))
	require.NoError(t, os.WriteFile(pidFile, []byte("garbage\n"), 0o644))
	res = oberEnv(t, []string{f.env}, 0, "stop", "--direct", "--config", cfg)
	require.Equal(t, "note: removed the PID file "+pidFile+": \"garbage\" is not a process ID\nnot running\n", res.stdout)
	require.NoFileExists(t, pidFile)

	// No systemd directory: systemctl on PATH is not enough.
	res = oberEnv(t, []string{f.env}, 0, "stop", "--config", cfg, "--systemd-dir", t.TempDir())
	require.Equal(t, "not running\n", res.stdout)
	require.Nil(t, readCalls(t, f.calls))
}

// procArgs is pid's command line, nil when it is gone or a zombie.
func procArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X') {
		return nil
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// obersRunning are the PIDs of `ober run --config path`.
func obersRunning(path string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		args := procArgs(pid)
		if len(args) == 4 && args[0] == oberBin && args[1] == "run" && args[3] == path {
			out = append(out, pid)
		}
	}
	return out
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err, "PID file")
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err, "PID file holds %q", b)
	return pid
}

// serviceXDPID is the ID of the XDP program on iface in ns.
func serviceXDPID(t *testing.T, ns *netnstest.NS, iface string) string {
	t.Helper()
	m := regexp.MustCompile(`prog/xdp id (\d+)`).FindStringSubmatch(ns.IP(t, "link", "show", "dev", iface))
	require.NotNil(t, m, "no XDP program on %s", iface)
	return m[1]
}

// requestLoop makes HTTPS requests to the VIP, each on a new connection,
// until stop is closed, and counts answers and failures (errors and 5xx).
func requestLoop(s *nodetest.Site, stop <-chan struct{}) (ok, failed *atomic.Int64, errs *[]string, wait func()) {
	ok, failed = new(atomic.Int64), new(atomic.Int64)
	var mu sync.Mutex
	var list []string
	tr := s.HTTPClient().Transport.(*http.Transport)
	tr.DisableKeepAlives = true
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("https://" + nodetest.VIP.String() + "/")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode >= 500 {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					list = append(list, err.Error())
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	return ok, failed, &list, wg.Wait
}

func TestServiceDirect(t *testing.T) {
	netnstest.RequireTool(t, "haproxy", "haproxy")
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{Drain: time.Second}))
	logFile := filepath.Join(s.Dir, "log", "ober.log")
	pidFile := filepath.Join(s.Dir, "run", "ober.pid")
	// Whatever a failure leaves running is stopped: the daemons first,
	// gracefully, then any HAProxy instance they left.
	var leftovers []int
	t.Cleanup(func() {
		for _, pid := range append(obersRunning(s.ConfigPath), leftovers...) {
			if procArgs(pid) == nil {
				continue
			}
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 200 && procArgs(pid) != nil; i++ {
				time.Sleep(50 * time.Millisecond)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("ober's log:\n%s", b)
		}
	})
	svc := func(code int, args ...string) result {
		t.Helper()
		args = append(args, "--config", s.ConfigPath)
		if args[0] != "stop" {
			args = append(args, "--log-file", logFile)
		}
		return ober(t, s.Node, code, args...)
	}
	started := regexp.MustCompile(`started: pid (\d+), serving after \S+ \(log ` + regexp.QuoteMeta(logFile) + `\)\n$`)
	pidOf := func(out string, re *regexp.Regexp) int {
		t.Helper()
		m := re.FindStringSubmatch(out)
		require.NotNil(t, m, "%q does not match %s", out, re)
		pid, _ := strconv.Atoi(m[1])
		return pid
	}

	// start: serving, the PID file names it, and it is ober run.
	res := svc(0, "start")
	t.Logf("start: %s", strings.TrimSpace(res.stdout))
	first := pidOf(res.stdout, started)
	require.Equal(t, first, readPID(t, pidFile))
	require.Equal(t, []string{oberBin, "run", "--config", s.ConfigPath}, procArgs(first))
	code, _, err := s.Health()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	instances := func() []int {
		var pids []int
		for _, in := range s.Status().Daemon.HAProxy.Instances {
			require.NotZero(t, in.PID)
			pids = append(pids, in.PID)
		}
		require.Len(t, pids, 2)
		leftovers = append(leftovers, pids...)
		return pids
	}
	instances()

	res = svc(0, "start")
	require.Equal(t, fmt.Sprintf("already running: pid %d (log %s)\n", first, logFile), res.stdout)

	// restart: a new process, the same XDP program, no failed request.
	xdp := serviceXDPID(t, s.Node, "veth-n")
	stop := make(chan struct{})
	okReqs, failed, errs, wait := requestLoop(s, stop)
	time.Sleep(300 * time.Millisecond)
	before := okReqs.Load()
	res = svc(0, "restart")
	afterRestart := okReqs.Load()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wait()
	second := pidOf(res.stdout, regexp.MustCompile(fmt.Sprintf(`^restarted: pid %d -> (\d+) in \S+, instances kept serving \(2 of 2\)\n$`, first)))
	require.NotEqual(t, first, second)
	require.Nil(t, procArgs(first), "the old daemon is gone")
	require.Equal(t, second, readPID(t, pidFile))
	require.Equal(t, []string{oberBin, "run", "--config", s.ConfigPath}, procArgs(second))
	require.Equal(t, xdp, serviceXDPID(t, s.Node, "veth-n"), "the XDP program was replaced")
	require.Zero(t, failed.Load(), "requests failed across the restart: %v", *errs)
	require.Greater(t, afterRestart-before, int64(10), "requests were served during the restart")
	t.Logf("restart: %s; %d requests during it, %d in all, none failed", strings.TrimSpace(res.stdout), afterRestart-before, okReqs.Load())

	// stop: the daemon and its instances are gone, so is the PID file.
	insts := instances()
	res = svc(0, "stop")
	require.Regexp(t, fmt.Sprintf(`^stopped: pid %d in \S+\n$`, second), res.stdout)
	t.Logf("stop: %s", strings.TrimSpace(res.stdout))
	require.Nil(t, procArgs(second))
	for _, pid := range insts {
		require.Nil(t, procArgs(pid), "HAProxy instance %d outlived ober stop", pid)
	}
	require.NoFileExists(t, pidFile)

	res = svc(0, "stop")
	require.Equal(t, "not running\n", res.stdout)

	// A stale PID file naming a stranger: nobody is killed.
	sleep := exec.Command("sleep", "600")
	require.NoError(t, sleep.Start())
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
	require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(sleep.Process.Pid)+"\n"), 0o644))
	res = svc(0, "stop")
	require.Equal(t, fmt.Sprintf("note: removed the stale PID file %s: pid %d is \"sleep 600\", not ober run; left it alone\nnot running\n", pidFile, sleep.Process.Pid), res.stdout)
	require.NoError(t, sleep.Process.Signal(syscall.Signal(0)), "ober stop killed an unrelated process")
	require.Equal(t, []string{"sleep", "600"}, procArgs(sleep.Process.Pid))
	require.NoFileExists(t, pidFile)

	// restart with nothing running starts.
	res = svc(0, "restart")
	third := pidOf(res.stdout, regexp.MustCompile(`^not running; started: pid (\d+), serving after`))
	require.Equal(t, third, readPID(t, pidFile))
	res = svc(0, "stop")
	require.Regexp(t, fmt.Sprintf(`^stopped: pid %d in `, third), res.stdout)

	// A configuration that does not load: one line naming the problem.
	good, err := os.ReadFile(s.ConfigPath)
	require.NoError(t, err)
	s.WriteConfigText(strings.Replace(string(good), "vips: [10.98.0.100]", "vips: [10.98.0.300]", 1))
	res = svc(1, "start")
	require.Equal(t, "ober: start: config "+s.ConfigPath+`: vips[0]: "10.98.0.300" is not an IP address (line 9)`+"\n", res.stderr)
	require.NoFileExists(t, pidFile)
	require.Empty(t, obersRunning(s.ConfigPath))

	// One that loads but that ober run refuses: its reason, from the log.
	noHAProxy := s.Config(nodetest.Params{Drain: time.Second})
	noHAProxy.HAProxy.Binary = "/nonexistent/haproxy"
	s.WriteConfig(noHAProxy)
	res = svc(1, "start")
	require.Equal(t, "ober: start: ober run exited 1: haproxy.binary: /nonexistent/haproxy -v: fork/exec /nonexistent/haproxy: no such file or directory\n", res.stderr)
	require.NoFileExists(t, pidFile)
	require.Empty(t, obersRunning(s.ConfigPath))

	// Something else answering /health on api.listen is not taken for
	// the daemon just started.
	s.WriteConfigText(string(good))
	var ln net.Listener
	require.NoError(t, s.Node.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:8404")
		return err
	}))
	stray := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/status" {
			fmt.Fprint(w, `{"daemon":{"pid":1}}`)
		}
	})}
	go stray.Serve(ln)
	res = svc(1, "start")
	stray.Close()
	require.Regexp(t, `^ober: start: ober run exited 1: api.listen: "127.0.0.1:8404": .*address already in use\n$`, res.stderr)
	require.NoFileExists(t, pidFile)
	require.Empty(t, obersRunning(s.ConfigPath))
}
