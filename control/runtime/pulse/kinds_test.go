package pulse_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/runtime/pulse"
)

// checkOnce runs one check of tg in a stepped pulse and returns its
// status.
func checkOnce(t *testing.T, tg pulse.Target) pulse.Status {
	t.Helper()
	p, _ := newPulse(t, true, pulse.Options{})
	require.NoError(t, p.Set([]pulse.Target{tg}))
	return step(t, p, tg.Key)
}

func TestHTTPRequest(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t, false)
	p, _ := newPulse(t, true, pulse.Options{})
	custom := hb.backend("custom").target
	custom.Check.Method, custom.Check.Path, custom.Check.Host = "HEAD", "/health?deep=1", "s3.example:8080"
	plain := hb.backend("plain").target
	require.NoError(t, p.Set([]pulse.Target{custom, plain}))
	for range 3 {
		require.Empty(t, step(t, p, "custom").LastError)
	}
	require.Empty(t, step(t, p, "plain").LastError)

	reqs := hb.requests()
	require.Len(t, reqs, 4)
	for _, r := range reqs[:3] {
		require.Equal(t, "HEAD", r.Method)
		require.Equal(t, "/health?deep=1", r.URL.String())
		require.Equal(t, "s3.example:8080", r.Host)
		require.True(t, r.Close, "no keep-alive")
		require.Equal(t, "ober-pulse", r.UserAgent())
	}
	require.Equal(t, "GET", reqs[3].Method)
	require.Equal(t, "/", reqs[3].URL.Path)
	require.Equal(t, hb.addr.String(), reqs[3].Host)
	require.EqualValues(t, 4, hb.conns.Load(), "a fresh connection per check")
}

func TestHTTPStatus(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t, false)
	hb.down.Store(true) // 503
	for name, tc := range map[string]struct {
		min, max int
		err      string
	}{
		"default":    {0, 0, "status 503, want 200-399"},
		"range":      {200, 599, ""},
		"one status": {204, 0, "status 503, want 204"},
		"exact":      {503, 503, ""},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tg := hb.backend(name).target
			tg.Check.StatusMin, tg.Check.StatusMax = tc.min, tc.max
			require.Equal(t, tc.err, checkOnce(t, tg).LastError)
		})
	}
}

func TestHTTPSVerification(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t, true) // certificate for example.com, 127.0.0.1, ::1
	ca := caFile(t, hb.srv)
	for name, tc := range map[string]struct {
		edit func(*pulse.Check)
		err  string
	}{
		"no verification":       {func(c *pulse.Check) {}, ""},
		"address":               {func(c *pulse.Check) { c.TLSVerify, c.CAFile = true, ca }, ""},
		"server name":           {func(c *pulse.Check) { c.TLSVerify, c.CAFile, c.ServerName = true, ca, "example.com" }, ""},
		"name from host":        {func(c *pulse.Check) { c.TLSVerify, c.CAFile, c.Host = true, ca, "example.com:443" }, ""},
		"wrong name":            {func(c *pulse.Check) { c.TLSVerify, c.CAFile, c.ServerName = true, ca, "other.example" }, "not other.example"},
		"wrong name from host":  {func(c *pulse.Check) { c.TLSVerify, c.CAFile, c.Host = true, ca, "other.example" }, "not other.example"},
		"system roots":          {func(c *pulse.Check) { c.TLSVerify = true }, "certificate signed by unknown authority"},
		"missing ca file":       {func(c *pulse.Check) { c.TLSVerify, c.CAFile = true, "/nonexistent/ca.pem" }, "ca_file: open /nonexistent/ca.pem: no such file"},
		"ca file without certs": {func(c *pulse.Check) { c.TLSVerify, c.CAFile = true, "/dev/null" }, "ca_file /dev/null: no PEM certificate"},
		"plain http to tls":     {func(c *pulse.Check) { c.Kind = pulse.KindHTTP }, "status 400, want 200-399"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tg := hb.backend(name).target
			tg.Check.Kind = pulse.KindHTTPS
			tc.edit(&tg.Check)
			st := checkOnce(t, tg)
			if tc.err == "" {
				require.Empty(t, st.LastError)
			} else {
				require.Contains(t, st.LastError, tc.err)
			}
		})
	}
}

// lineServer runs serve on each connection it accepts.
func lineServer(t *testing.T, serve func(c net.Conn)) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				serve(c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestProbeAnswers(t *testing.T) {
	t.Parallel()
	hold := func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }
	answer := func(parts ...string) func(c net.Conn) {
		return func(c net.Conn) {
			for _, p := range parts {
				fmt.Fprint(c, p)
				time.Sleep(5 * time.Millisecond)
			}
			hold(c)
		}
	}
	for name, tc := range map[string]struct {
		serve  func(c net.Conn)
		send   string
		expect string
		re     string
		err    string
	}{
		"prefix":            {serve: answer("+OK hello\r\n"), expect: "+OK"},
		"prefix in pieces":  {serve: answer("+", "O", "K"), expect: "+OK"},
		"regexp":            {serve: answer("server version 1.2.3\n"), re: `version \d+\.\d+`},
		"prefix and regexp": {serve: answer("+OK ", "ready\n"), expect: "+OK", re: `ready`},
		"regexp unmatched": {serve: func(c net.Conn) { fmt.Fprint(c, "+OK busy\n") }, expect: "+OK", re: `ready`,
			err: `connection closed after answer "+OK busy\n", want prefix "+OK" and regexp "ready"`},
		"mismatch":              {serve: answer("-ERR nope\r\n"), expect: "+OK", err: `answer "-ERR nope\r\n" does not start with "+OK"`},
		"closed":                {serve: func(net.Conn) {}, expect: "+OK", err: `connection closed after answer "", want prefix "+OK"`},
		"connect and send only": {serve: func(net.Conn) {}, send: "QUIT\r\n"},
		"silent":                {serve: hold, expect: "+OK", err: "i/o timeout"},
		"sent bytes": {send: "HELLO ober\n", expect: "+hi ober", serve: func(c net.Conn) {
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "+hi %s", strings.TrimPrefix(line, "HELLO "))
			hold(c)
		}},
		"long answer": {serve: answer(strings.Repeat("x", 5000)), re: `y`, err: `first 4096 bytes of the answer do not match regexp "y"`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tg := pulse.Target{Key: name, Addr: lineServer(t, tc.serve), Check: pulse.Check{
				Kind: pulse.KindProbe, Send: []byte(tc.send), Expect: []byte(tc.expect), Timeout: 500 * time.Millisecond}}
			if tc.re != "" {
				tg.Check.ExpectRegexp = regexp.MustCompile(tc.re)
			}
			st := checkOnce(t, tg)
			if tc.err == "" {
				require.Empty(t, st.LastError)
			} else {
				require.Contains(t, st.LastError, tc.err)
			}
			if tc.err != "" && tc.err != "i/o timeout" {
				require.Less(t, st.LastDuration, 250*time.Millisecond, "a wrong answer fails at once")
			}
		})
	}
}

// TestTimeouts: a backend that never answers fails its check at the
// timeout.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	const timeout = 50 * time.Millisecond
	silent := lineServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	probe := newProbeServer(t, 0)
	probe.silent = true
	for name, tg := range map[string]pulse.Target{
		"http":  {Addr: silent, Check: pulse.Check{Kind: pulse.KindHTTP}},
		"https": {Addr: silent, Check: pulse.Check{Kind: pulse.KindHTTPS}},
		"probe": {Addr: probe.addr, Check: pulse.Check{Kind: pulse.KindProbe, Send: []byte("PING\n"), Expect: []byte("+")}},
		"tcp":   {Addr: fullBacklog(t), Check: pulse.Check{Kind: pulse.KindTCP}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tg.Key = name
			tg.Check.Timeout = timeout
			st := checkOnce(t, tg)
			require.Contains(t, st.LastError, "i/o timeout")
			require.GreaterOrEqual(t, st.LastDuration, timeout)
			require.Less(t, st.LastDuration, time.Second)
		})
	}
}

// fullBacklog is a listener whose accept queue is full: the kernel drops
// new connections' SYNs, so connecting hangs.
func fullBacklog(t *testing.T) netip.AddrPort {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	addr := netip.AddrPortFrom(netip.AddrFrom4(sa.(*syscall.SockaddrInet4).Addr), uint16(sa.(*syscall.SockaddrInet4).Port))
	for {
		c, err := net.DialTimeout("tcp", addr.String(), 50*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
}

func TestExecEnvironmentAndOutput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		body string
		addr string
		port uint16
		err  string
	}{
		"environment": {
			body: `echo "addr=$OBER_BACKEND_ADDR port=$OBER_BACKEND_PORT home=${HOME:-none} pwd=$(pwd)"; exit 4`,
			addr: "[::1]:8080", port: 9000,
			err: "exit status 4: addr=::1 port=9000 home=none pwd=/"},
		"target's port": {body: `echo $OBER_BACKEND_PORT >&2; exit 1`, addr: "127.0.0.1:8080", err: "exit status 1: 8080"},
		"no stdin":      {body: `if read x; then echo read; else echo eof; fi; exit 1`, addr: "127.0.0.1:80", err: "exit status 1: eof"},
		"passes":        {body: `echo fine`, addr: "127.0.0.1:80"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sh := script(t, filepath.Join(dir, mkdir(t, dir, name)), tc.body)
			tg := pulse.Target{Key: name, Addr: netip.MustParseAddrPort(tc.addr), Check: pulse.Check{
				Kind: pulse.KindExec, Command: []string{"/bin/sh", sh}, Port: tc.port}}
			require.Equal(t, tc.err, checkOnce(t, tg).LastError)
		})
	}

	t.Run("output kept to 4 KiB", func(t *testing.T) {
		t.Parallel()
		sh := script(t, filepath.Join(dir, mkdir(t, dir, "long")), `head -c 100000 /dev/zero | tr '\0' x; exit 1`)
		st := checkOnce(t, pulse.Target{Key: "long", Addr: netip.MustParseAddrPort("127.0.0.1:80"),
			Check: pulse.Check{Kind: pulse.KindExec, Command: []string{sh}}})
		require.Equal(t, "exit status 1: "+strings.Repeat("x", 4096), st.LastError)
	})
	t.Run("no such command", func(t *testing.T) {
		t.Parallel()
		st := checkOnce(t, pulse.Target{Key: "none", Addr: netip.MustParseAddrPort("127.0.0.1:80"),
			Check: pulse.Check{Kind: pulse.KindExec, Command: []string{"/nonexistent/check"}}})
		require.Contains(t, st.LastError, "exec /nonexistent/check:")
	})
}

func mkdir(t *testing.T, dir, name string) string {
	require.NoError(t, os.MkdirAll(filepath.Join(dir, name), 0o755))
	return name
}

// TestExecTimeoutKillsItsGroup: at the timeout the command and its
// children die, and the check does not wait for children that hold its
// output open.
func TestExecTimeoutKillsItsGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sh := script(t, dir, fmt.Sprintf("sleep 30 & echo $! > %s/child; echo $$ > %s/pid; echo started; sleep 30", dir, dir))
	st := checkOnce(t, pulse.Target{Key: "slow", Addr: netip.MustParseAddrPort("127.0.0.1:80"), Check: pulse.Check{
		Kind: pulse.KindExec, Command: []string{sh}, Timeout: 100 * time.Millisecond}})
	require.Equal(t, "killed after 100ms: started", st.LastError)
	require.Less(t, st.LastDuration, time.Second)
	waitGone(t, waitPid(t, dir+"/pid"))
	waitGone(t, waitPid(t, dir+"/child"))
}

// TestExecLeftoversDie: children a passing command leaves behind are
// killed; the check does not wait for them.
func TestExecLeftoversDie(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sh := script(t, dir, fmt.Sprintf("sleep 30 & echo $! > %s/child; exit 0", dir))
	st := checkOnce(t, pulse.Target{Key: "quick", Addr: netip.MustParseAddrPort("127.0.0.1:80"), Check: pulse.Check{
		Kind: pulse.KindExec, Command: []string{sh}, Timeout: 5 * time.Second}})
	require.Empty(t, st.LastError)
	require.Less(t, st.LastDuration, time.Second)
	waitGone(t, waitPid(t, dir+"/child"))
}

// TestExecCredential: the command runs as the credential's user.
func TestExecCredential(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to change user")
	}
	dir, err := os.MkdirTemp("", "pulse-cred-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	out := filepath.Join(dir, "uid")
	require.NoError(t, os.WriteFile(out, nil, 0o666))
	require.NoError(t, os.Chmod(out, 0o666))
	sh := script(t, dir, fmt.Sprintf(`id -u > %s; [ "$(id -u)" = 65534 ] || { echo "uid $(id -u)"; exit 1; }`, out))
	tg := pulse.Target{Key: "nobody", Addr: netip.MustParseAddrPort("127.0.0.1:80"), Check: pulse.Check{
		Kind: pulse.KindExec, Command: []string{sh}, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}}
	require.Empty(t, checkOnce(t, tg).LastError)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "65534\n", string(b))

	tg.Check.Credential = nil
	require.Equal(t, "exit status 1: uid 0", checkOnce(t, tg).LastError)
}

func waitPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 5*time.Second, time.Millisecond)
	return pid
}

// waitGone waits for pid to be dead (a zombie counts as dead).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		_, rest, _ := strings.Cut(string(b), ") ")
		return strings.HasPrefix(rest, "Z")
	}, 2*time.Second, time.Millisecond, "pid %d lives", pid)
}
