package pulse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// checkUDPProbe sends Send as one datagram and matches the first reply.
// The socket is connected, so the kernel hands it only the target's
// datagrams and reports the target's ICMP port unreachable as
// ECONNREFUSED: a closed port fails at once, not at the timeout.
func (c *checker) checkUDPProbe(ctx context.Context) error {
	conn, closeConn, err := c.dial(ctx, "udp")
	if err != nil {
		return c.udpFailure(err)
	}
	defer closeConn()
	if _, err := conn.Write(c.t.Check.Send); err != nil {
		return c.udpFailure(err)
	}
	// A datagram longer than the buffer is cut by the kernel: the byte
	// past maxRead only tells that the reply was longer than what is
	// matched, as a TCP probe matches its answer's first maxRead bytes.
	buf := make([]byte, maxRead+1)
	n, err := conn.Read(buf)
	if err != nil {
		return c.udpFailure(err)
	}
	return c.matchReply(buf[:min(n, maxRead)], n > maxRead)
}

// udpFailure says why a UDP probe got no reply.
func (c *checker) udpFailure(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("udp probe %s: %w (ICMP port unreachable)", c.addr, syscall.ECONNREFUSED)
	case errors.Is(err, os.ErrDeadlineExceeded) && c.ctx.Err() == nil:
		// A stopped checker's deadline is in the past too, but its
		// result is dropped.
		return fmt.Errorf("udp probe %s: no reply in %s", c.addr, c.t.Check.Timeout)
	}
	return fmt.Errorf("udp probe %s: %w", c.addr, err)
}

// matchReply checks a UDP probe's reply against Expect and ExpectRegexp.
// A datagram is the whole answer: unlike a TCP probe's stream, no more
// can come to complete it.
func (c *checker) matchReply(reply []byte, cut bool) error {
	ck := &c.t.Check
	if !bytes.HasPrefix(reply, ck.Expect) {
		return fmt.Errorf("udp probe %s: reply %q does not start with %q", c.addr, trim(reply, len(ck.Expect)+16), ck.Expect)
	}
	if ck.ExpectRegexp == nil || ck.ExpectRegexp.Match(reply) {
		return nil
	}
	if cut {
		return fmt.Errorf("udp probe %s: first %d bytes of the reply do not match regexp %q", c.addr, len(reply), ck.ExpectRegexp)
	}
	return fmt.Errorf("udp probe %s: reply %q does not match regexp %q", c.addr, trim(reply, 64), ck.ExpectRegexp)
}
