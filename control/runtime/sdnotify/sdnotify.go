// Package sdnotify tells the service manager (systemd) how the daemon is
// doing: READY=1 once it serves, RELOADING=1 and STOPPING=1 around
// reloads and stops, WATCHDOG=1 while it is alive, STATUS= for humans.
//
// The protocol is one datagram per message on the AF_UNIX socket named
// by $NOTIFY_SOCKET: newline-separated KEY=VALUE assignments. A name
// starting with '@' is an abstract socket. Without $NOTIFY_SOCKET every
// call is a no-op, so the daemon runs the same under any supervisor.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables of the protocol.
const (
	EnvSocket        = "NOTIFY_SOCKET"
	EnvWatchdogUsec  = "WATCHDOG_USEC"
	EnvWatchdogPID   = "WATCHDOG_PID"
	maxMessageLength = 4096 // systemd reads at most PIPE_BUF bytes of a message
)

// Common assignments.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
	Watchdog  = "WATCHDOG=1"
)

// Notifier sends messages to the service manager. The nil *Notifier is
// valid and sends nothing.
type Notifier struct {
	addr *net.UnixAddr
}

// New returns a notifier for socket, the value of $NOTIFY_SOCKET; nil
// when socket is empty. Only file system paths and abstract ('@')
// names are accepted: other forms (vsock:) are for virtual machines'
// managers, not for a daemon on the host.
func New(socket string) (*Notifier, error) {
	switch {
	case socket == "":
		return nil, nil
	case socket[0] != '/' && socket[0] != '@':
		return nil, fmt.Errorf("%s: %q: want an absolute path or an abstract name starting with '@'", EnvSocket, socket)
	case len(socket) > 107:
		return nil, fmt.Errorf("%s: %q: longer than a unix socket address allows (107 bytes)", EnvSocket, socket)
	}
	// Go's net package turns a leading '@' into the NUL byte of an
	// abstract address itself.
	return &Notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
}

// FromEnv is New($NOTIFY_SOCKET).
func FromEnv() (*Notifier, error) { return New(os.Getenv(EnvSocket)) }

// Enabled reports whether messages go anywhere.
func (n *Notifier) Enabled() bool { return n != nil }

// Send sends the assignments as one message. A newline inside a value
// would start a new assignment, so it is replaced by a space: a STATUS=
// carrying a multi-line error stays one status.
func (n *Notifier) Send(assignments ...string) error {
	if n == nil || len(assignments) == 0 {
		return nil
	}
	lines := make([]string, len(assignments))
	for i, a := range assignments {
		if k, _, ok := strings.Cut(a, "="); !ok || k == "" {
			return fmt.Errorf("sd_notify: %q: want KEY=VALUE", a)
		}
		lines[i] = strings.ReplaceAll(a, "\n", " ")
	}
	msg := strings.Join(lines, "\n") + "\n"
	if len(msg) > maxMessageLength {
		return fmt.Errorf("sd_notify: message of %d bytes is longer than the %d the service manager reads", len(msg), maxMessageLength)
	}
	// A socket per message: the manager may have been re-executed since
	// the last one, and a datagram socket costs nothing to make.
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %s %s: %w", EnvSocket, n.addr.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sd_notify: %s %s: %w", EnvSocket, n.addr.Name, err)
	}
	return nil
}

// Status is a STATUS= assignment.
func Status(format string, args ...any) string {
	s := fmt.Sprintf(format, args...)
	// Keep room for the other assignments of the message.
	const max = 1024
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return "STATUS=" + s
}

// MonotonicUsec is the MONOTONIC_USEC= assignment that goes with
// RELOADING=1: the time of the reload on CLOCK_MONOTONIC, which lets
// the manager tell this reload from an earlier one.
func MonotonicUsec() string {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for CLOCK_MONOTONIC
	return "MONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}

// WatchdogInterval parses $WATCHDOG_USEC and $WATCHDOG_PID (usec and pid)
// for the process self. It returns 0 when there is no watchdog for self:
// usec empty, or pid naming another process (the variables were
// inherited from a parent that the manager watches).
func WatchdogInterval(usec, pid string, self int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	if pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil || p <= 0 {
			return 0, fmt.Errorf("%s: %q: want a process ID", EnvWatchdogPID, pid)
		}
		if p != self {
			return 0, nil
		}
	}
	u, err := strconv.ParseUint(usec, 10, 64)
	if err != nil || u == 0 {
		return 0, fmt.Errorf("%s: %q: want a positive number of microseconds", EnvWatchdogUsec, usec)
	}
	if u > uint64(1<<63-1)/1000 {
		return 0, fmt.Errorf("%s: %q: too large", EnvWatchdogUsec, usec)
	}
	return time.Duration(u) * time.Microsecond, nil
}

// WatchdogFromEnv is WatchdogInterval of this process's environment.
func WatchdogFromEnv() (time.Duration, error) {
	return WatchdogInterval(os.Getenv(EnvWatchdogUsec), os.Getenv(EnvWatchdogPID), os.Getpid())
}

// UnsetEnv removes the protocol's variables from this process's
// environment, so that the processes it starts (HAProxy, keepalived)
// neither talk to the manager in its name nor believe it watches them.
func UnsetEnv() error {
	return errors.Join(os.Unsetenv(EnvSocket), os.Unsetenv(EnvWatchdogUsec), os.Unsetenv(EnvWatchdogPID))
}
