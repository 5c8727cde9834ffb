package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// site is a client and a server namespace joined by a multi-queue veth,
// the server running the dataplane with one listening socket per
// instance, the way ober runs HAProxy.
type site struct {
	d        *Dataplane
	cli, srv *netnstest.NS

	mu       sync.Mutex
	accepted map[netip.AddrPort]acceptance // by the client's address
}

type acceptance struct {
	instance uint32
	cpu      int            // SO_INCOMING_CPU: where the kernel processed the flow
	local    netip.AddrPort // the connection's own address: what the client dialled
}

func newSite(t *testing.T) *site {
	d := openTestDataplane(t)
	s := &site{d: d, accepted: map[netip.AddrPort]acceptance{}}
	s.cli = netnstest.New(t, "cli")
	s.srv = netnstest.New(t, "srv")
	netnstest.Veth(t, s.cli, "cli0", s.srv, "srv0", 2)
	netnstest.PassXDP(t, s.cli, "cli0") // so the whitelist's RSTs are taken at once
	for _, args := range [][]string{
		{"addr", "add", "198.51.100.7/24", "dev", "cli0"},
		{"addr", "add", "203.0.113.99/24", "dev", "cli0"},
		{"addr", "add", "2001:db8:c::7/64", "dev", "cli0", "nodad"},
		{"route", "add", vip4.String() + "/32", "via", "198.51.100.1"},
		{"route", "add", vip6.String() + "/128", "via", "2001:db8:c::1"},
	} {
		s.cli.IP(t, args...)
	}
	for _, args := range [][]string{
		{"addr", "add", "198.51.100.1/24", "dev", "srv0"},
		{"addr", "add", "203.0.113.254/24", "dev", "srv0"},
		{"addr", "add", "2001:db8:c::1/64", "dev", "srv0", "nodad"},
		{"addr", "add", vip4.String() + "/32", "dev", "lo"},
		{"addr", "add", vip6.String() + "/128", "dev", "lo"},
	} {
		s.srv.IP(t, args...)
	}
	require.NoError(t, s.srv.Do(func() error {
		if _, err := d.AttachXDP("srv0", XDPNative); err != nil {
			return err
		}
		return d.AttachSkLookup()
	}))
	t.Cleanup(func() {
		// Before the namespace goes: the links live in this bpffs.
		s.srv.Do(func() error { return errors.Join(d.DetachXDP("srv0"), d.DetachSkLookup()) })
	})
	for _, l := range []uint32{listenHTTPS, listenHTTP, listenHigh} {
		for _, v6 := range []bool{false, true} {
			for i := uint32(0); i < testInsts; i++ {
				s.serve(t, lis(l, v6), i, v6)
			}
		}
	}
	// The port range's listener: instance 0's socket listens on the
	// range's first port of the VIP, the others on ports of their own.
	// (Not one SO_REUSEPORT group on the VIP's port: the kernel picks a
	// socket of such a group afresh after sk_lookup assigned one.)
	for _, vip := range []netip.Addr{vip4, vip6} {
		s.serveOn(t, listenerFor(listenRange, vip), 0, ap(vip, portRangeFirst).String())
		for i := uint32(1); i < testInsts; i++ {
			s.serve(t, listenerFor(listenRange, vip), i, vip.Is6())
		}
	}
	return s
}

// serve registers an echoing listener for instance inst.
func (s *site) serve(t *testing.T, listener, inst uint32, v6 bool) {
	addr := "127.0.0.1:0"
	if v6 {
		addr = "[::1]:0"
	}
	s.serveOn(t, listener, inst, addr)
}

// serveOn is serve with the socket bound to addr.
func (s *site) serveOn(t *testing.T, listener, inst uint32, addr string) {
	var ln net.Listener
	require.NoError(t, s.srv.Do(func() error {
		lc := ListenConfig()
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	require.NoError(t, s.d.SetSocket(listener, inst, ln.(*net.TCPListener)))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cpu := -1
			if raw, err := c.(*net.TCPConn).SyscallConn(); err == nil {
				raw.Control(func(fd uintptr) {
					cpu, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_INCOMING_CPU)
				})
			}
			remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
			local := c.LocalAddr().(*net.TCPAddr).AddrPort()
			local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
			s.mu.Lock()
			s.accepted[remote] = acceptance{instance: inst, cpu: cpu, local: local}
			s.mu.Unlock()
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// dialer opens connections from the client namespace: workers sit on
// threads inside it, so the sockets they make belong to it.
type dialer struct {
	jobs chan dialJob
}

type dialJob struct {
	src, dst netip.AddrPort
	timeout  time.Duration
	done     chan dialResult
}

type dialResult struct {
	conn net.Conn
	err  error
}

func newDialer(t *testing.T, ns *netnstest.NS, workers int) *dialer {
	d := &dialer{jobs: make(chan dialJob)}
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns.Do(func() error {
				for j := range d.jobs {
					nd := net.Dialer{Timeout: j.timeout, LocalAddr: net.TCPAddrFromAddrPort(j.src)}
					nd.SetMultipathTCP(false)
					c, err := nd.Dial("tcp", j.dst.String())
					j.done <- dialResult{c, err}
				}
				return nil
			})
		}()
	}
	t.Cleanup(func() { close(d.jobs); wg.Wait() })
	return d
}

func (d *dialer) dial(src netip.Addr, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	done := make(chan dialResult, 1)
	d.jobs <- dialJob{src: netip.AddrPortFrom(src, 0), dst: dst, timeout: timeout, done: done}
	r := <-done
	return r.conn, r.err
}

// roundTrip proves a connection works end to end.
func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

func (s *site) acceptanceOf(t *testing.T, local netip.AddrPort) acceptance {
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		a, ok := s.accepted[local]
		s.mu.Unlock()
		if ok {
			return a
		}
		require.True(t, time.Now().Before(deadline), "no instance accepted %s", local)
		time.Sleep(time.Millisecond)
	}
}

// connectMany opens n connections from src to dst, checks each lands on
// the instance the model predicts (and was processed on its CPU), and
// returns them still open.
func (s *site) connectMany(t *testing.T, dl *dialer, n int, src netip.Addr, dst netip.AddrPort) []net.Conn {
	model := NewModel(mustSnapshot(t, s.d))
	insts := map[uint32]int{}
	for _, in := range testInstances() {
		insts[in.Index] = in.CPU
	}
	var conns []net.Conn
	perInst := map[uint32]int{}
	for i := 0; i < n; i++ {
		c, err := dl.dial(src, dst, 5*time.Second)
		require.NoError(t, err, "connection %d", i)
		conns = append(conns, c)
		require.NoError(t, roundTrip(c, "ping"), "connection %d", i)
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		got := s.acceptanceOf(t, local)
		want, _, ok := model.SkLookup(SkTuple{Proto: ProtoTCP, Remote: local, Local: dst})
		require.True(t, ok)
		require.Equal(t, want, got.instance, "connection %d from %s: instance", i, local)
		require.Equal(t, insts[want], got.cpu, "connection %d from %s: steered to instance %d's CPU", i, local, want)
		perInst[got.instance]++
	}
	t.Logf("%d connections %s -> %s per instance: %v", n, src, dst, perInst)
	require.Len(t, perInst, testInsts, "every instance gets flows")
	return conns
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// TestNamespaceTraffic is real TCP across a veth into a namespace running
// the XDP and sk_lookup programs: every connection lands on the socket
// and CPU the model predicts; the whitelist keeps strangers out of the
// plain-HTTP ports; a Maglev change leaves established connections alone.
func TestNamespaceTraffic(t *testing.T) {
	s := newSite(t)
	dl := newDialer(t, s.cli, 8)
	before, err := s.d.Counters()
	require.NoError(t, err)

	t.Run("connections land where the model says", func(t *testing.T) {
		closeAll(s.connectMany(t, dl, 1000, client4, ap(vip4, portHTTPS)))
		closeAll(s.connectMany(t, dl, 200, client6, ap(vip6, portHTTPS)))
	})

	t.Run("a listener past ober_sockets", func(t *testing.T) {
		closeAll(s.connectMany(t, dl, 200, client4, ap(vip4, portHigh)))
		closeAll(s.connectMany(t, dl, 100, client6, ap(vip6, portHigh)))
	})

	t.Run("whitelist", func(t *testing.T) {
		c, err := dl.dial(client4, ap(vip4, portHTTP), 5*time.Second)
		require.NoError(t, err, "a listed client reaches plain HTTP")
		require.NoError(t, roundTrip(c, "GET"))
		c.Close()
		c, err = dl.dial(client6, ap(vip6, portReject), 5*time.Second)
		require.NoError(t, err, "a listed client reaches the reject port")
		c.Close()

		start := time.Now()
		_, err = dl.dial(stranger4, ap(vip4, portHTTP), time.Second)
		var nerr net.Error
		require.True(t, errors.As(err, &nerr) && nerr.Timeout(), "a stranger's SYN is dropped: want a timeout, got %v", err)
		require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond)

		start = time.Now()
		_, err = dl.dial(stranger4, ap(vip4, portReject), 5*time.Second)
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "a stranger is refused with a RST")
		require.Less(t, time.Since(start), time.Second, "the refusal is fast")

		after, err := s.d.Counters()
		require.NoError(t, err)
		require.Greater(t, after.Get(ReasonWhitelistDrop, ActionDrop).Packets, before.Get(ReasonWhitelistDrop, ActionDrop).Packets)
		require.Greater(t, after.Get(ReasonWhitelistReject, ActionTX).Packets, before.Get(ReasonWhitelistReject, ActionTX).Packets)
	})

	t.Run("access lists", func(t *testing.T) {
		before, err := s.d.Counters()
		require.NoError(t, err)
		for _, dst := range []netip.AddrPort{ap(vip4, portACL), ap(vip4, portACLReject), ap(vip4, portACLWL)} {
			c, err := dl.dial(client4, dst, 5*time.Second)
			require.NoError(t, err, "the access list admits a listed client to %s", dst)
			require.NoError(t, roundTrip(c, "GET"))
			c.Close()
		}
		c, err := dl.dial(client6, ap(vip6, portACL), 5*time.Second)
		require.NoError(t, err, "and a listed IPv6 client")
		require.NoError(t, roundTrip(c, "GET"))
		c.Close()

		start := time.Now()
		_, err = dl.dial(stranger4, ap(vip4, portACL), time.Second)
		var nerr net.Error
		require.True(t, errors.As(err, &nerr) && nerr.Timeout(), "a denied SYN is dropped: want a timeout, got %v", err)
		require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond)

		start = time.Now()
		_, err = dl.dial(stranger4, ap(vip4, portACLReject), 5*time.Second)
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "a denied client is refused with a RST")
		require.Less(t, time.Since(start), time.Second, "the refusal is fast")
		_, err = dl.dial(client4, ap(vip4, portACLUnset), time.Second)
		require.True(t, errors.As(err, &nerr) && nerr.Timeout(), "a list never set admits nobody: want a timeout, got %v", err)

		after, err := s.d.Counters()
		require.NoError(t, err)
		require.Greater(t, after.Get(ReasonAccessDenied, ActionDrop).Packets, before.Get(ReasonAccessDenied, ActionDrop).Packets)
		require.Greater(t, after.Get(ReasonAccessDenied, ActionTX).Packets, before.Get(ReasonAccessDenied, ActionTX).Packets)
	})

	t.Run("port range", func(t *testing.T) {
		model := NewModel(mustSnapshot(t, s.d))
		for _, dst := range []netip.AddrPort{ap(vip4, portRangeFirst), ap(vip4, portRangeFirst+3), ap(vip4, portRangeLast),
			ap(vip6, portRangeFirst+7)} {
			src := client4
			if dst.Addr().Is6() {
				src = client6
			}
			perInst := map[uint32]int{}
			for i := 0; i < 40; i++ {
				c, err := dl.dial(src, dst, 5*time.Second)
				require.NoError(t, err, "%s, connection %d", dst, i)
				require.NoError(t, roundTrip(c, "range"))
				from := c.LocalAddr().(*net.TCPAddr).AddrPort()
				from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
				got := s.acceptanceOf(t, from)
				c.Close()
				require.Equal(t, dst, got.local, "a connection to %s keeps its port, whatever its socket's", dst)
				want, _, ok := model.SkLookup(SkTuple{Proto: ProtoTCP, Remote: from, Local: dst})
				require.True(t, ok)
				require.Equal(t, want, got.instance, "%s from %s: instance", dst, from)
				perInst[got.instance]++
			}
			require.NotZero(t, perInst[0], "%s: the socket listening on :%d takes its share: %v", dst, portRangeFirst, perInst)
			require.Greater(t, len(perInst), 1, "%s: flows spread over the instances: %v", dst, perInst)
		}
		_, err := dl.dial(client4, ap(vip4, portRangeLast+1), time.Second)
		var nerr net.Error
		require.True(t, errors.As(err, &nerr) && nerr.Timeout(), "no service past the range: want a timeout, got %v", err)
	})

	t.Run("maglev change keeps established connections", func(t *testing.T) {
		open := s.connectMany(t, dl, 100, client4, ap(vip4, portHTTPS))
		defer closeAll(open)
		// Every slot moves to another instance: each open flow's packets now
		// hash to a different instance and CPU than its socket's.
		tab := roundRobinTable(testMSize, testInsts)
		for i := range tab {
			tab[i] = (tab[i] + 1) % testInsts
		}
		require.NoError(t, s.d.SetMaglev(testSeed, tab))
		for i, c := range open {
			require.NoError(t, roundTrip(c, "still there"), "established connection %d after the table change", i)
		}
		// And new connections follow the new table.
		closeAll(s.connectMany(t, dl, 200, client4, ap(vip4, portHTTPS)))
	})
	if t.Failed() {
		out, _ := s.srv.Exec(context.Background(), "ip", "-s", "link", "show", "srv0").CombinedOutput()
		fmt.Fprintf(os.Stderr, "%s\n", out)
	}
}
