package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// listen opens a datagram socket as the service manager does and returns
// a function that reads one message from it.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 8192)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(2*time.Second)))
		n, err := c.Read(buf)
		require.NoError(t, err, "no message arrived")
		return string(buf[:n])
	}
}

func TestSendPathSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	read := listen(t, path)
	n, err := New(path)
	require.NoError(t, err)
	require.True(t, n.Enabled())
	require.NoError(t, n.Send(Ready, Status("serving %d instances", 2)))
	require.Equal(t, "READY=1\nSTATUS=serving 2 instances\n", read())
}

func TestSendAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@ober-sdnotify-test-%d", os.Getpid())
	read := listen(t, name)
	n, err := New(name)
	require.NoError(t, err)
	require.NoError(t, n.Send(Watchdog))
	require.Equal(t, "WATCHDOG=1\n", read())
}

// A multi-line error in STATUS= must not turn into assignments of its
// own: "READY=1" on a line of an error text would lie to the manager.
func TestSendKeepsValuesOnOneLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.sock")
	read := listen(t, path)
	n, err := New(path)
	require.NoError(t, err)
	require.NoError(t, n.Send(Status("reload refused: a\nREADY=1")))
	require.Equal(t, "STATUS=reload refused: a READY=1\n", read())

	require.ErrorContains(t, n.Send("READY"), `"READY": want KEY=VALUE`)
	require.ErrorContains(t, n.Send(Status("%s", strings.Repeat("x", 5000)), strings.Repeat("y=", 2100)), "longer than the 4096")
	// Status cuts long texts to leave room for the rest of a message.
	require.Len(t, Status("%s", strings.Repeat("x", 5000)), len("STATUS=")+1024)
}

func TestNoSocketIsNoOp(t *testing.T) {
	n, err := New("")
	require.NoError(t, err)
	require.Nil(t, n)
	require.False(t, n.Enabled())
	require.NoError(t, n.Send(Ready))

	t.Setenv(EnvSocket, "")
	n, err = FromEnv()
	require.NoError(t, err)
	require.False(t, n.Enabled())
}

func TestBadSocket(t *testing.T) {
	_, err := New("relative/path")
	require.EqualError(t, err, `NOTIFY_SOCKET: "relative/path": want an absolute path or an abstract name starting with '@'`)
	_, err = New("/" + strings.Repeat("a", 120))
	require.ErrorContains(t, err, "longer than a unix socket address allows")

	// Nobody listening: the error names the socket.
	n, err := New(filepath.Join(t.TempDir(), "gone.sock"))
	require.NoError(t, err)
	err = n.Send(Ready)
	require.ErrorContains(t, err, "NOTIFY_SOCKET")
	require.ErrorContains(t, err, "gone.sock")
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		err       string
	}{
		{"", "", 0, ""},
		{"30000000", "", 30 * time.Second, ""},
		{"200000", "4242", 200 * time.Millisecond, ""},
		{"200000", "4243", 0, ""}, // for another process
		{"0", "", 0, `WATCHDOG_USEC: "0": want a positive number of microseconds`},
		{"-5", "", 0, `WATCHDOG_USEC: "-5": want a positive number of microseconds`},
		{"1s", "", 0, `WATCHDOG_USEC: "1s": want a positive number of microseconds`},
		{"18446744073709551615", "", 0, `WATCHDOG_USEC: "18446744073709551615": too large`},
		{"200000", "me", 0, `WATCHDOG_PID: "me": want a process ID`},
	} {
		got, err := WatchdogInterval(c.usec, c.pid, 4242)
		if c.err != "" {
			require.EqualError(t, err, c.err, "usec %q pid %q", c.usec, c.pid)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, c.want, got, "usec %q pid %q", c.usec, c.pid)
	}

	t.Setenv(EnvWatchdogUsec, "100000")
	t.Setenv(EnvWatchdogPID, strconv.Itoa(os.Getpid()))
	got, err := WatchdogFromEnv()
	require.NoError(t, err)
	require.Equal(t, 100*time.Millisecond, got)
}

func TestUnsetEnv(t *testing.T) {
	t.Setenv(EnvSocket, "/run/systemd/notify")
	t.Setenv(EnvWatchdogUsec, "100000")
	t.Setenv(EnvWatchdogPID, "1")
	require.NoError(t, UnsetEnv())
	for _, k := range []string{EnvSocket, EnvWatchdogUsec, EnvWatchdogPID} {
		_, ok := os.LookupEnv(k)
		require.False(t, ok, "%s still set", k)
	}
}

func TestMonotonicUsec(t *testing.T) {
	var ts unix.Timespec
	require.NoError(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	before := ts.Nano() / 1000
	k, v, ok := strings.Cut(MonotonicUsec(), "=")
	require.True(t, ok)
	require.Equal(t, "MONOTONIC_USEC", k)
	got, err := strconv.ParseInt(v, 10, 64)
	require.NoError(t, err)
	require.GreaterOrEqual(t, got, before)
	require.Less(t, got-before, int64(time.Second/time.Microsecond))
}
