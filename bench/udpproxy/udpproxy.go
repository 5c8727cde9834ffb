// Package udpproxy is a user-space UDP load balancer built the way
// GoBetween builds its UDP servers: one listening socket, a session per
// client address with its own socket connected to the backend chosen for
// that client, replies sent back from the listening socket, and sessions
// closed when idle or after a number of replies. It exists so that the
// benchmarks of kernel-forwarded UDP services (nftables DNAT) have the
// user-space path to compare against; ober itself does not run it.
//
// Every datagram costs the proxy two receives and two sends plus a
// goroutine hand-off, which is the price the kernel path avoids.
package udpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults taken by the zero value of the matching Config field.
const (
	DefaultIdle        = 30 * time.Second
	DefaultMaxSessions = 10000
)

// maxDatagram holds any UDP payload: the IPv6 maximum is 65527 bytes,
// the IPv4 one 65507.
const maxDatagram = 64 << 10

// Config shapes a Proxy.
type Config struct {
	// Listen is the literal address and port to bind, "127.0.0.1:0" or
	// "[::1]:0" style; port 0 picks a free one (see Proxy.Addr).
	Listen string
	// Backends are handed to new sessions round robin.
	Backends []netip.AddrPort
	// Idle closes a session that carried no datagram in either
	// direction for this long (DefaultIdle when zero).
	Idle time.Duration
	// MaxSessions bounds the open sessions (DefaultMaxSessions when
	// zero): a datagram from a new client beyond it is dropped and
	// counted in Stats.Dropped.
	MaxSessions int
	// MaxReplies closes a session after this many replies; 0 means
	// unlimited, 1 suits one-shot protocols such as DNS.
	MaxReplies int
}

// Stats counts what a Proxy did since New.
type Stats struct {
	SessionsOpened uint64
	SessionsClosed uint64
	// Dropped counts datagrams from new clients refused because
	// MaxSessions sessions were open.
	Dropped uint64
	// DatagramsIn counts datagrams received from clients.
	DatagramsIn uint64
	// DatagramsOut counts replies sent to clients.
	DatagramsOut uint64
	// Lost counts datagrams a socket refused, in either direction.
	Lost uint64
}

// Proxy is a running UDP proxy; build it with New and run it with Serve.
type Proxy struct {
	cfg   Config
	conn  *net.UDPConn
	addr  netip.AddrPort
	epoch time.Time // monotonic base of session.last
	bufs  sync.Pool // *[]byte of maxDatagram, lent to a session only while it holds a reply

	served atomic.Bool
	wg     sync.WaitGroup // one per session goroutine

	mu       sync.Mutex // guards sessions and next, and orders writes upstream before a session's close
	sessions map[netip.AddrPort]*session
	next     int

	opened, closed, dropped, in, out, lost atomic.Uint64
}

type session struct {
	client netip.AddrPort
	up     *net.UDPConn
	last   atomic.Int64 // time since Proxy.epoch of the last datagram either way
}

// New checks cfg, fills in its defaults and binds the listening socket,
// which Serve owns from then on.
func New(cfg Config) (*Proxy, error) {
	listen, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("udpproxy: Listen %q: %w", cfg.Listen, err)
	}
	if len(cfg.Backends) == 0 {
		return nil, errors.New("udpproxy: Backends is empty")
	}
	for i, b := range cfg.Backends {
		if !b.IsValid() || b.Port() == 0 || b.Addr().IsUnspecified() {
			return nil, fmt.Errorf("udpproxy: Backends[%d] %q: want a specified address and a non-zero port", i, b)
		}
	}
	switch {
	case cfg.Idle < 0:
		return nil, fmt.Errorf("udpproxy: Idle %s is negative", cfg.Idle)
	case cfg.Idle == 0:
		cfg.Idle = DefaultIdle
	}
	switch {
	case cfg.MaxSessions < 0:
		return nil, fmt.Errorf("udpproxy: MaxSessions %d is negative", cfg.MaxSessions)
	case cfg.MaxSessions == 0:
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxReplies < 0 {
		return nil, fmt.Errorf("udpproxy: MaxReplies %d is negative", cfg.MaxReplies)
	}
	cfg.Backends = append([]netip.AddrPort(nil), cfg.Backends...)

	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return nil, fmt.Errorf("udpproxy: listen on %s: %w", listen, err)
	}
	p := &Proxy{
		cfg:      cfg,
		conn:     conn,
		addr:     conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		epoch:    time.Now(),
		sessions: make(map[netip.AddrPort]*session),
	}
	p.bufs.New = func() any { b := make([]byte, maxDatagram); return &b }
	return p, nil
}

// Addr is the bound listening address, with the port the kernel chose.
func (p *Proxy) Addr() netip.AddrPort { return p.addr }

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	return Stats{
		SessionsOpened: p.opened.Load(),
		SessionsClosed: p.closed.Load(),
		Dropped:        p.dropped.Load(),
		DatagramsIn:    p.in.Load(),
		DatagramsOut:   p.out.Load(),
		Lost:           p.lost.Load(),
	}
}

// Serve proxies until ctx ends, then closes the listening socket and
// every session and returns nil once all its goroutines have ended. It
// returns an error if the listening socket fails first (after the same
// clean-up) or if it is called a second time.
func (p *Proxy) Serve(ctx context.Context) error {
	if !p.served.CompareAndSwap(false, true) {
		return fmt.Errorf("udpproxy: Serve on %s called twice", p.addr)
	}
	// Closing the socket is the only way to wake a blocked read.
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { p.conn.Close(); close(woken) })
	err := p.readClients()
	if !stop() {
		<-woken
	}
	p.conn.Close()

	p.mu.Lock()
	for _, s := range p.sessions {
		s.up.Close() // its goroutine sees the close and ends the session
	}
	p.mu.Unlock()
	p.wg.Wait()

	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("udpproxy: read on %s: %w", p.addr, err)
}

func (p *Proxy) readClients() error {
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		p.in.Add(1)
		p.forward(client, buf[:n])
	}
}

// forward sends b upstream in client's session, opening one if needed.
// The write happens under mu so that a session found in the map cannot
// have its socket closed under it.
func (p *Proxy) forward(client netip.AddrPort, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sessions[client]
	if s == nil {
		if len(p.sessions) >= p.cfg.MaxSessions {
			p.dropped.Add(1)
			return
		}
		backend := p.cfg.Backends[p.next]
		p.next = (p.next + 1) % len(p.cfg.Backends)
		up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(backend))
		if err != nil {
			p.lost.Add(1)
			return
		}
		s = &session{client: client, up: up}
		s.touch(p.epoch) // before relay reads it, or the session would start out idle
		p.sessions[client] = s
		p.opened.Add(1)
		p.wg.Add(1)
		go p.relay(s)
	} else {
		s.touch(p.epoch)
	}
	if _, err := s.up.Write(b); err != nil {
		p.lost.Add(1)
	}
}

func (s *session) touch(epoch time.Time) { s.last.Store(int64(time.Since(epoch))) }

// relay carries the backend's replies to the client until the session
// is idle, has given its replies, or its socket fails or is closed.
func (p *Proxy) relay(s *session) {
	defer p.wg.Done()
	defer p.end(s)
	rc, err := s.up.SyscallConn()
	if err != nil {
		return
	}
	replies := 0
	for {
		deadline := p.epoch.Add(time.Duration(s.last.Load()) + p.cfg.Idle)
		if !time.Now().Before(deadline) {
			return
		}
		if err := s.up.SetReadDeadline(deadline); err != nil {
			return
		}
		last := p.cfg.MaxReplies > 0 && replies+1 >= p.cfg.MaxReplies
		sent, err := p.relayOne(rc, s, last)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // the client may have spoken since: the loop looks again
		}
		if err != nil {
			return
		}
		if sent {
			replies++
		}
		if p.cfg.MaxReplies > 0 && replies >= p.cfg.MaxReplies {
			return
		}
	}
}

// relayOne waits for one reply and sends it to the client. The buffer is
// taken from the pool only once the reply is there, so an idle session
// holds no 64 KiB of its own. A session's last reply is sent only once
// the session is forgotten: a client that asks again as soon as it has
// the answer (a stub resolver on the same port) must open a new session,
// not write into this one after its reader has stopped.
func (p *Proxy) relayOne(rc syscall.RawConn, s *session, last bool) (sent bool, err error) {
	var (
		buf  *[]byte
		n    int
		rerr error
	)
	err = rc.Read(func(fd uintptr) bool {
		b := p.bufs.Get().(*[]byte)
		for {
			n, rerr = unix.Read(int(fd), *b)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			p.bufs.Put(b)
			return false
		}
		buf = b
		return true
	})
	if err != nil {
		return false, err
	}
	defer p.bufs.Put(buf)
	if rerr != nil {
		return false, rerr
	}
	s.touch(p.epoch)
	if last {
		p.forget(s)
	}
	if _, err := p.conn.WriteToUDPAddrPort((*buf)[:n], s.client); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return false, err
		}
		p.lost.Add(1)
		return false, nil
	}
	p.out.Add(1)
	return true, nil
}

// end forgets the session and closes its socket.
func (p *Proxy) end(s *session) {
	p.forget(s)
	s.up.Close()
	p.closed.Add(1)
}

// forget removes the session from the map, so that the client's next
// datagram opens a new one.
func (p *Proxy) forget(s *session) {
	p.mu.Lock()
	if p.sessions[s.client] == s {
		delete(p.sessions, s.client)
	}
	p.mu.Unlock()
}
