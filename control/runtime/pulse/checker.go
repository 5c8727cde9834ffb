package pulse

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// checker runs one target's checks, one at a time.
type checker struct {
	p      *Pulse
	t      Target
	addr   string // host:port to connect to
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	// step, in tests, replaces the interval: each receive runs one check
	// and closes the channel received once its result is recorded.
	step chan chan struct{}

	request []byte      // http, https
	tls     *tls.Config // https
	tlsErr  error       // why tls is nil: a CA file that did not load
}

func newChecker(p *Pulse, t Target, cas map[string]*caPool) *checker {
	ctx, cancel := context.WithCancel(p.ctx)
	c := &checker{p: p, t: t, addr: t.dialAddr().String(), ctx: ctx, cancel: cancel, sem: p.netSem}
	ck := &t.Check
	switch ck.Kind {
	case KindExec:
		c.sem = p.execSem
	case KindHTTP, KindHTTPS:
		host := ck.Host
		if host == "" {
			host = c.addr
		}
		c.request = fmt.Appendf(nil, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ober-pulse\r\nAccept: */*\r\nConnection: close\r\n\r\n",
			ck.Method, ck.Path, host)
	}
	if ck.Kind == KindHTTPS {
		name := ck.ServerName
		if name == "" {
			name = hostName(ck.Host)
		}
		if name == "" {
			// Go sends no SNI for an address, and verifies it against
			// the certificate's IP names.
			name = t.Addr.Addr().String()
		}
		c.tls = &tls.Config{ServerName: name, InsecureSkipVerify: !ck.TLSVerify}
		if ck.TLSVerify && ck.CAFile != "" {
			ca := cas[ck.CAFile]
			if ca.err != nil {
				c.tls, c.tlsErr = nil, ca.err
			} else {
				c.tls.RootCAs = ca.pool
			}
		}
	}
	return c
}

// hostName is the name in a Host header value.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.Trim(host, "[]")
}

// run checks until the checker is cancelled, the first check after
// first.
func (c *checker) run(first time.Duration) {
	defer c.p.wg.Done()
	defer c.p.live.Add(-1)
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		var ack chan struct{}
		if c.step != nil {
			select {
			case <-c.ctx.Done():
				return
			case ack = <-c.step:
			}
		} else {
			select {
			case <-c.ctx.Done():
				return
			case <-timer.C:
			}
		}
		due := time.Now()
		took, err := c.once()
		if c.ctx.Err() == nil {
			c.p.record(c, err, took)
		}
		if ack != nil {
			close(ack)
		}
		timer.Reset(time.Until(due.Add(c.t.Check.Interval)))
	}
}

// once runs one check when its turn comes.
func (c *checker) once() (time.Duration, error) {
	select {
	case c.sem <- struct{}{}:
	case <-c.ctx.Done():
		return 0, c.ctx.Err()
	}
	defer func() { <-c.sem }()
	start := time.Now() // before the deadline is set: a timeout lasts Timeout at least
	ctx, cancel := context.WithTimeout(c.ctx, c.t.Check.Timeout)
	defer cancel()
	var err error
	switch c.t.Check.Kind {
	case KindTCP:
		err = c.checkTCP(ctx)
	case KindHTTP, KindHTTPS:
		err = c.checkHTTP(ctx)
	case KindProbe:
		if c.t.Check.Protocol == ProtocolUDP {
			err = c.checkUDPProbe(ctx)
		} else {
			err = c.checkProbe(ctx)
		}
	case KindExec:
		err = c.checkExec(ctx)
	}
	return time.Since(start), err
}

// dial connects to the target over network (tcp or udp). Reads and
// writes on the connection end with ctx: at its deadline, or at once
// when the checker is stopped. The returned function hangs up.
func (c *checker) dial(ctx context.Context, network string) (net.Conn, func(), error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, c.addr)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return conn, func() { stop(); hangUp(conn) }, nil
}

// hangUp closes a check's connection with a reset, as HAProxy does:
// thousands of checks a second would otherwise leave as many sockets in
// TIME_WAIT.
func hangUp(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func (c *checker) checkTCP(ctx context.Context) error {
	_, closeConn, err := c.dial(ctx, "tcp")
	if err != nil {
		return err
	}
	closeConn()
	return nil
}

func (c *checker) checkHTTP(ctx context.Context) error {
	if c.tlsErr != nil {
		return c.tlsErr
	}
	raw, closeConn, err := c.dial(ctx, "tcp")
	if err != nil {
		return err
	}
	defer closeConn()
	conn := raw
	if c.tls != nil {
		tc := tls.Client(raw, c.tls)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	if _, err := conn.Write(c.request); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	// Only the status matters: the status line and headers are read, the
	// body never.
	br := bufio.NewReaderSize(io.LimitReader(conn, 2*maxRead), 2*maxRead)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	ck := &c.t.Check
	if resp.StatusCode < ck.StatusMin || resp.StatusCode > ck.StatusMax {
		want := strconv.Itoa(ck.StatusMin)
		if ck.StatusMax != ck.StatusMin {
			want += "-" + strconv.Itoa(ck.StatusMax)
		}
		return fmt.Errorf("status %d, want %s", resp.StatusCode, want)
	}
	return nil
}

func (c *checker) checkProbe(ctx context.Context) error {
	conn, closeConn, err := c.dial(ctx, "tcp")
	if err != nil {
		return err
	}
	defer closeConn()
	ck := &c.t.Check
	if len(ck.Send) > 0 {
		if _, err := conn.Write(ck.Send); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	if ck.Expect == nil && ck.ExpectRegexp == nil {
		return nil
	}
	buf := make([]byte, 0, maxRead)
	for {
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		prefix := bytes.HasPrefix(buf, ck.Expect)
		if prefix && (ck.ExpectRegexp == nil || ck.ExpectRegexp.Match(buf)) {
			return nil
		}
		if !prefix && len(buf) >= len(ck.Expect) {
			return fmt.Errorf("answer %q does not start with %q", trim(buf, len(ck.Expect)+16), ck.Expect)
		}
		switch {
		case errors.Is(err, io.EOF):
			return fmt.Errorf("connection closed after answer %q, want %s", trim(buf, 64), c.want())
		case err != nil:
			return fmt.Errorf("read after answer %q: %w", trim(buf, 64), err)
		case len(buf) == cap(buf):
			return fmt.Errorf("first %d bytes of the answer do not match %s", len(buf), c.want())
		}
	}
}

func (c *checker) want() string {
	var w []string
	if c.t.Check.Expect != nil {
		w = append(w, fmt.Sprintf("prefix %q", c.t.Check.Expect))
	}
	if c.t.Check.ExpectRegexp != nil {
		w = append(w, fmt.Sprintf("regexp %q", c.t.Check.ExpectRegexp))
	}
	return strings.Join(w, " and ")
}

func trim(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// execPath is an exec check's PATH: the daemon's environment is not
// passed on.
const execPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func (c *checker) checkExec(ctx context.Context) error {
	ck := &c.t.Check
	// The command's own pipe, not exec's copying: Wait then returns when
	// the command exits, not when the last child holding the pipe does.
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("exec %s: %w", ck.Command[0], err)
	}
	defer r.Close()
	var cmd *exec.Cmd
	for try := 1; ; try++ {
		cmd = exec.CommandContext(ctx, ck.Command[0], ck.Command[1:]...)
		cmd.Env = []string{execPath,
			"OBER_BACKEND_ADDR=" + c.t.Addr.Addr().String(),
			"OBER_BACKEND_PORT=" + strconv.Itoa(int(c.t.port()))}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: ck.Credential}
		cmd.Stdout, cmd.Stderr = w, w
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		err = cmd.Start()
		// "text file busy": the script was just written, and a process
		// forked meanwhile (by this daemon or the tool that wrote it)
		// holds it open until it execs. That passes in moments.
		if !errors.Is(err, syscall.ETXTBSY) || try == 3 || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(try) * 10 * time.Millisecond)
	}
	w.Close()
	if err != nil {
		return fmt.Errorf("exec %s: %w", ck.Command[0], err)
	}
	var out capped
	var reading sync.WaitGroup
	reading.Go(func() { _, _ = io.Copy(&out, r) })
	err = cmd.Wait()
	// What the command left behind dies with it. Its group's ID cannot
	// have been reused while a member lives; with none left the kill
	// finds nothing.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	// A child that left the group may hold the pipe: stop reading soon.
	stop := time.AfterFunc(100*time.Millisecond, func() { _ = r.SetReadDeadline(time.Now()) })
	reading.Wait()
	stop.Stop()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %s", ck.Timeout)
	}
	if o := strings.TrimSpace(out.buf.String()); o != "" {
		return fmt.Errorf("%w: %s", err, o)
	}
	return err
}

// capped keeps the first maxRead bytes written to it and swallows the
// rest, so that a chatty command never blocks on its pipe.
type capped struct{ buf bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxRead - c.buf.Len(); room > 0 {
		c.buf.Write(trim(p, room))
	}
	return len(p), nil
}
