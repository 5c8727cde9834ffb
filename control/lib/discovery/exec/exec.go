// Package exec is discovery from a command: the command is run, as an
// unprivileged user and with a timeout, and its standard output read as
// `host:port [weight [priority]]` lines (discovery.ParseLines).
//
// The package is named for the kind of discovery it is; it uses the
// standard os/exec as osexec.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// DefaultTimeout is a command's timeout when Options gives none.
const DefaultTimeout = 10 * time.Second

// execPath is the command's whole environment: the daemon's is not
// passed on, so that what a command does does not depend on how ober
// was started.
const execPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maxStderr is how much of the standard error is kept for a failure's
// message; the rest is read and dropped, so that the command never
// blocks on it.
const maxStderr = 4096

// Options set up a command.
type Options struct {
	// Command is the program and its arguments. A program without a
	// slash is looked up in the daemon's PATH.
	Command []string
	// Credential is the user and groups the command runs as; nil runs
	// it as the caller (tests).
	Credential *syscall.Credential
	// Timeout bounds a run; 0 is DefaultTimeout.
	Timeout time.Duration
}

// Source is a command whose output names the backends.
type Source struct{ o Options }

var _ discovery.Source = (*Source)(nil)

// New checks o.
func New(o Options) (*Source, error) {
	if len(o.Command) == 0 || o.Command[0] == "" {
		return nil, errors.New("backends command: no command")
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("backends command %s: negative timeout %s", o.Command[0], o.Timeout)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	o.Command = append([]string(nil), o.Command...)
	return &Source{o: o}, nil
}

// Fetch runs the command once and parses what it printed. The command
// runs in its own process group, in /, with PATH alone in its
// environment; the whole group is killed when the command ends, times
// out, prints more than discovery.MaxBytes, or ctx ends.
func (s *Source) Fetch(ctx context.Context) (discovery.Result, error) {
	name := s.o.Command[0]
	rctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	r, err := s.run(rctx)
	if err != nil {
		return discovery.Result{}, fmt.Errorf("backends command %s: %w", name, err)
	}
	switch {
	case r.overflow:
		return discovery.Result{}, fmt.Errorf("backends command %s: output %w of %d bytes (4 MiB); killed", name, discovery.ErrTooLarge, discovery.MaxBytes)
	case r.wait == nil && r.read == nil:
	case ctx.Err() != nil:
		return discovery.Result{}, fmt.Errorf("backends command %s: killed: %w", name, ctx.Err())
	case rctx.Err() != nil && r.wait == nil:
		// It ended in time, yet its output did not.
		return discovery.Result{}, fmt.Errorf("backends command %s: timed out after %s: its standard output was still open after it exited (held by a process that left its process group)", name, s.o.Timeout)
	case rctx.Err() != nil:
		return discovery.Result{}, fmt.Errorf("backends command %s: timed out after %s; killed", name, s.o.Timeout)
	case r.wait != nil:
		if line := firstLine(r.stderr); line != "" {
			return discovery.Result{}, fmt.Errorf("backends command %s: %w: %s", name, r.wait, line)
		}
		return discovery.Result{}, fmt.Errorf("backends command %s: %w", name, r.wait)
	default:
		return discovery.Result{}, fmt.Errorf("backends command %s: read its output: %w", name, r.read)
	}
	res, err := discovery.ParseLines(bytes.NewReader(r.stdout))
	if err != nil {
		return discovery.Result{}, fmt.Errorf("backends command %s: output: %w", name, err)
	}
	return res, nil
}

// ran is what one run gave.
type ran struct {
	stdout, stderr []byte
	overflow       bool  // more than MaxBytes of output
	wait           error // how the command ended
	read           error // reading its output, other than at EOF
}

func (s *Source) run(ctx context.Context) (ran, error) {
	var r ran
	// Pipes of our own, not exec's copying: exec's Wait would wait for
	// the copy, which a process that left the group could hold open for
	// ever; ours are read until EOF or ctx's end.
	outR, outW, err := os.Pipe()
	if err != nil {
		return r, err
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return r, err
	}
	defer errR.Close()
	var cmd *osexec.Cmd
	err = startRetrying(ctx, func() error {
		cmd = osexec.Command(s.o.Command[0], s.o.Command[1:]...)
		cmd.Env = []string{execPath}
		cmd.Dir = "/"
		cmd.Stdout, cmd.Stderr = outW, errW
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.o.Credential}
		return cmd.Start()
	})
	outW.Close()
	errW.Close()
	if err != nil {
		return r, err
	}

	// The group's ID is the leader's PID, which is not reused until the
	// leader is reaped: a kill after the reap could hit a stranger.
	pgid := cmd.Process.Pid
	var mu sync.Mutex
	reaped := false
	kill := func() {
		mu.Lock()
		defer mu.Unlock()
		if !reaped {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
	stop := context.AfterFunc(ctx, func() {
		kill()
		now := time.Now()
		_ = outR.SetReadDeadline(now)
		_ = errR.SetReadDeadline(now)
	})
	defer stop()

	var outDone, errDone sync.WaitGroup
	outDone.Go(func() {
		r.stdout, r.read = io.ReadAll(io.LimitReader(outR, discovery.MaxBytes+1))
		if len(r.stdout) > discovery.MaxBytes {
			r.overflow = true
			kill()
		}
	})
	errDone.Go(func() {
		var buf bytes.Buffer
		_, _ = io.Copy(&buf, io.LimitReader(errR, maxStderr))
		_, _ = io.Copy(io.Discard, errR)
		r.stderr = buf.Bytes()
	})

	// Once the leader has ended, what it left behind in its group goes
	// too; then the leader is reaped.
	waitExit(pgid)
	kill()
	mu.Lock()
	reaped = true
	mu.Unlock()
	r.wait = cmd.Wait()
	// The output is read to its end, or ctx's. The standard error only
	// gives a message: a process that left the group and holds it open
	// delays the result a second at most.
	outDone.Wait()
	if ctx.Err() == nil {
		_ = errR.SetReadDeadline(time.Now().Add(time.Second))
	}
	errDone.Wait()
	return r, nil
}

// waitExit returns when the process has ended, leaving it to be reaped.
func waitExit(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// startRetrying starts a command, again if it fails with "text file
// busy": a script just written is busy while a process forked meanwhile
// (by this daemon or by the tool that wrote it) holds it open until it
// execs, which passes in moments. Three tries, 10 and 20 ms apart.
func startRetrying(ctx context.Context, start func() error) error {
	for try := 1; ; try++ {
		err := start()
		if !errors.Is(err, syscall.ETXTBSY) || try == 3 {
			return err
		}
		t := time.NewTimer(time.Duration(try) * 10 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// firstLine is the first line of a command's standard error with text
// in it, quoted and cut short, or "".
func firstLine(stderr []byte) string {
	for line := range strings.Lines(string(stderr)) {
		if line = strings.TrimSpace(line); line != "" {
			if len(line) > 200 {
				return strconv.Quote(line[:200]) + "..."
			}
			return strconv.Quote(line)
		}
	}
	return ""
}
