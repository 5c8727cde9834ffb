package supervisor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/loader"
)

// listen makes one instance's socket for a listener. It is bound to the
// loopback address of the listener's family on an ephemeral port: the
// sk_lookup program hands it the VIP's connections, so it needs no VIP
// address, and loopback keeps it off every other interface. A non-zero
// mss clamps the MSS of every connection it accepts (TCP_MAXSEG on a
// listener bounds both the MSS it advertises and the one it sends with).
func listen(ctx context.Context, family, mss int) (*net.TCPListener, error) {
	lc := loader.ListenConfig()
	if mss > 0 {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("set TCP_MAXSEG %d: %w", mss, serr)
			}
			return nil
		}
	}
	network, addr := "tcp4", "127.0.0.1:0"
	if family == 6 {
		network, addr = "tcp6", "[::1]:0"
	}
	l, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l.(*net.TCPListener), nil
}

// acceptQueue returns how many established connections wait in a
// listening socket's accept queue. For a listener the kernel reports that
// number in tcp_info's unacked field.
func acceptQueue(l *net.TCPListener) (int, error) {
	raw, err := l.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var serr error
	err = raw.Control(func(fd uintptr) {
		info, e := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if e != nil {
			serr = e
			return
		}
		n = int(info.Unacked)
	})
	if err == nil {
		err = serr
	}
	return n, err
}

// startPinned starts cmd with its CPU affinity set to cpu from the first
// instruction on. The child of fork inherits the affinity of the thread
// that forked it, so the calling goroutine's thread is pinned for the
// duration of Start and restored afterwards. This works on every HAProxy
// version, unlike cpu-map, and leaves no window in which the process runs
// elsewhere.
func startPinned(cmd *exec.Cmd, cpu int) error {
	runtime.LockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("read CPU affinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	err := cmd.Start()
	if rerr := unix.SchedSetaffinity(0, &old); rerr != nil {
		// Left locked on purpose: the thread dies with this goroutine
		// instead of going back to the scheduler stuck on one CPU.
		if err == nil {
			err = fmt.Errorf("restore CPU affinity: %w", rerr)
		}
		return err
	}
	runtime.UnlockOSThread()
	return err
}

// newHAProxyCmd prepares `haproxy -f cfg -db`: in the foreground (ober
// supervises it), not a master-worker (ober is the master), with the
// listening sockets as descriptors 3, 4, ... in files' order.
func newHAProxyCmd(binary, cfg string, files []*os.File, out io.Writer) *exec.Cmd {
	cmd := exec.Command(binary, "-f", cfg, "-db")
	cmd.ExtraFiles = files
	cmd.Stdout = out
	cmd.Stderr = out
	// Its own process group: a Ctrl-C on ober's terminal reaches ober,
	// which drains the instances in order, and not HAProxy directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// logWriter turns HAProxy's output lines into log records.
type logWriter struct {
	pw *io.PipeWriter
}

func newLogWriter(log *slog.Logger) *logWriter {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			level := slog.LevelInfo
			switch {
			case strings.HasPrefix(line, "[ALERT]"):
				level = slog.LevelError
			case strings.HasPrefix(line, "[WARNING]"):
				level = slog.LevelWarn
			}
			log.Log(context.Background(), level, line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	return &logWriter{pw: pw}
}

func (w *logWriter) Write(p []byte) (int, error) { return w.pw.Write(p) }
func (w *logWriter) Close() error                { return w.pw.Close() }

// haproxyCmd is one running HAProxy process.
type haproxyCmd struct {
	cmd *exec.Cmd
	pid int
	out *logWriter
}

// startHAProxy starts HAProxy pinned to cpu with files as descriptors
// 3, 4, ...; its output goes to log.
func startHAProxy(binary, cfg string, files []*os.File, cpu int, log *slog.Logger) (*haproxyCmd, error) {
	out := newLogWriter(log)
	cmd := newHAProxyCmd(binary, cfg, files, out)
	if err := startPinned(cmd, cpu); err != nil {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		out.Close()
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	return &haproxyCmd{cmd: cmd, pid: cmd.Process.Pid, out: out}, nil
}

func (h *haproxyCmd) wait() error {
	err := h.cmd.Wait()
	h.out.Close()
	return err
}

// signal sends sig. os.Process signals through a pidfd, so a process
// that was already reaped is never confused with a recycled PID.
func (h *haproxyCmd) signal(sig syscall.Signal) {
	_ = h.cmd.Process.Signal(sig)
}
