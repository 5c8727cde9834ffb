package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "discover")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755))
	return path
}

func fetch(t *testing.T, o Options) (discovery.Result, error) {
	t.Helper()
	s, err := New(o)
	require.NoError(t, err)
	return s.Fetch(context.Background())
}

// gone fails unless the process of the PID in file has ended within
// two seconds (dead, or a zombie its new parent has yet to reap).
func gone(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err, "the script did not get as far as writing its PIDs")
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true
		}
		// pid (comm) state ...
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		return f[0] == "Z" || f[0] == "X"
	}, 2*time.Second, 10*time.Millisecond, "process %d (%s) still runs", pid, filepath.Base(file))
}

func TestFetch(t *testing.T) {
	cmd := script(t, `
echo "# from the inventory"
echo "10.0.0.1:80 10"
printf '[2001:db8::1]:443\t1\t2\n'
echo "10.0.0.2:0"
echo "$1:8080"
`)
	res, err := fetch(t, Options{Command: []string{cmd, "web-1.example"}})
	require.NoError(t, err)
	require.Equal(t, []discovery.Backend{
		{Host: "10.0.0.1", Port: 80, Weight: 10},
		{Host: "2001:db8::1", Port: 443, Weight: 1, Priority: 2},
		{Host: "web-1.example", Port: 8080, Weight: -1},
	}, res.Backends)
	require.Equal(t, []string{`line 4: "10.0.0.2:0": port 0`}, res.Problems)
}

// The command gets PATH alone as its environment, and / as its working
// directory, whatever the daemon's.
func TestFetchEnvironment(t *testing.T) {
	t.Setenv("OBER_SECRET", "x")
	res, err := fetch(t, Options{Command: []string{"env"}})
	require.NoError(t, err)
	require.Equal(t, []string{`line 1: "` + execPath + `": not host:port: an IPv6 address goes in brackets, as in [2001:db8::1]:80`}, res.Problems)

	res, err = fetch(t, Options{Command: []string{"/bin/sh", "-c", `echo "cwd$(pwd | tr / x):80"`}})
	require.NoError(t, err)
	require.Empty(t, res.Problems)
	require.Equal(t, "cwdx", res.Backends[0].Host)
}

func TestFetchBinary(t *testing.T) {
	cmd := script(t, `printf '\177ELF\002\001\001\000\000\000\000\000\000\000\000\000\003\000>\000'`)
	_, err := fetch(t, Options{Command: []string{cmd}})
	require.ErrorIs(t, err, discovery.ErrBinary)
	require.EqualError(t, err, "backends command "+cmd+": output: binary data, not lines of text: a NUL byte at line 1")
}

func TestFetchExitStatus(t *testing.T) {
	cmd := script(t, `
echo 10.0.0.1:80
echo >&2
echo "  consul: no such service: rgw  " >&2
echo "second line" >&2
exit 3
`)
	_, err := fetch(t, Options{Command: []string{cmd}})
	require.EqualError(t, err, "backends command "+cmd+`: exit status 3: "consul: no such service: rgw"`)

	_, err = fetch(t, Options{Command: []string{"/bin/sh", "-c", "exit 1"}})
	require.EqualError(t, err, "backends command /bin/sh: exit status 1")

	// A long message is cut; a chatty standard error never blocks.
	_, err = fetch(t, Options{Command: []string{"/bin/sh", "-c", "yes | head -c 1000000 | tr -d '\\n' >&2; exit 2"}})
	require.EqualError(t, err, `backends command /bin/sh: exit status 2: "`+strings.Repeat("y", 200)+`"...`)

	_, err = fetch(t, Options{Command: []string{"/nonexistent/discover"}})
	require.EqualError(t, err, "backends command /nonexistent/discover: fork/exec /nonexistent/discover: no such file or directory")
}

// A command past its timeout is killed with everything it started, and
// the error says so.
func TestFetchTimeout(t *testing.T) {
	dir := t.TempDir()
	cmd := script(t, `
sleep 60 &
echo $! > "$1/child"
echo $$ > "$1/leader"
echo 10.0.0.1:80
sleep 60
`)
	_, err := fetch(t, Options{Command: []string{cmd, dir}, Timeout: 1500 * time.Millisecond})
	require.EqualError(t, err, "backends command "+cmd+": timed out after 1.5s; killed")
	gone(t, filepath.Join(dir, "leader"))
	gone(t, filepath.Join(dir, "child"))
}

// The caller's context ending kills the command too, and is the error.
func TestFetchCanceled(t *testing.T) {
	dir := t.TempDir()
	cmd := script(t, `
sleep 60 &
echo $! > "$1/child.tmp" && mv "$1/child.tmp" "$1/child"
wait
`)
	s, err := New(Options{Command: []string{cmd, dir}, Timeout: time.Minute})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(dir, "child")); err == nil {
				cancel()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	_, err = s.Fetch(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.EqualError(t, err, "backends command "+cmd+": killed: context canceled")
	gone(t, filepath.Join(dir, "child"))
}

// A command that exits but leaves a process outside its group holding
// its output: the read ends at the timeout, with an error saying why.
func TestFetchOutputHeldOpen(t *testing.T) {
	dir := t.TempDir()
	cmd := script(t, `
setsid sh -c 'echo $$ > "$1/escaped.tmp" && mv "$1/escaped.tmp" "$1/escaped"; exec sleep 60' sh "$1" &
while [ ! -e "$1/escaped" ]; do sleep 0.01; done
echo 10.0.0.1:80
`)
	_, err := fetch(t, Options{Command: []string{cmd, dir}, Timeout: time.Second})
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "escaped")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	require.EqualError(t, err, "backends command "+cmd+": timed out after 1s: its standard output was still open after it exited (held by a process that left its process group)")
}

// Output beyond the bound kills the command at once (`yes` never ends
// by itself; the timeout is a minute) and is an error naming the bound.
func TestFetchTooLarge(t *testing.T) {
	_, err := fetch(t, Options{Command: []string{"yes", "10.0.0.1:80"}, Timeout: time.Minute})
	require.ErrorIs(t, err, discovery.ErrTooLarge)
	require.EqualError(t, err, "backends command yes: output larger than the bound of 4194304 bytes (4 MiB); killed")
}

// With a credential the command runs as that user, its supplementary
// groups dropped.
func TestFetchCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs as root, to run a command as nobody")
	}
	res, err := fetch(t, Options{
		Command:    []string{"/bin/sh", "-c", `echo "uid$(id -u)-gid$(id -g)-groups$(id -G | tr ' ' _):80"`},
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534},
	})
	require.NoError(t, err)
	require.Empty(t, res.Problems)
	require.Equal(t, "uid65534-gid65534-groups65534", res.Backends[0].Host)
}

func TestStartRetrying(t *testing.T) {
	busy := &os.PathError{Op: "fork/exec", Path: "/x", Err: syscall.ETXTBSY}
	tries := 0
	err := startRetrying(context.Background(), func() error {
		if tries++; tries < 3 {
			return busy
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, tries)

	tries = 0
	err = startRetrying(context.Background(), func() error { tries++; return busy })
	require.ErrorIs(t, err, syscall.ETXTBSY)
	require.Equal(t, 3, tries)

	tries = 0
	other := errors.New("permission denied")
	err = startRetrying(context.Background(), func() error { tries++; return other })
	require.ErrorIs(t, err, other)
	require.Equal(t, 1, tries)
}

// A script held open for writing cannot be run: the error says so, after
// the retries.
func TestFetchBusyScript(t *testing.T) {
	cmd := script(t, "echo 10.0.0.1:80\n")
	f, err := os.OpenFile(cmd, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = fetch(t, Options{Command: []string{cmd}})
	require.ErrorIs(t, err, syscall.ETXTBSY)
	require.EqualError(t, err, "backends command "+cmd+": fork/exec "+cmd+": text file busy")
}

func TestNew(t *testing.T) {
	_, err := New(Options{})
	require.EqualError(t, err, "backends command: no command")
	_, err = New(Options{Command: []string{"x"}, Timeout: -time.Second})
	require.EqualError(t, err, "backends command x: negative timeout -1s")
	s, err := New(Options{Command: []string{"x"}})
	require.NoError(t, err)
	require.Equal(t, DefaultTimeout, s.o.Timeout)
}
