package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/netnstest"
)

// The drain site's addresses: the router and the nodes share one link.
var (
	drainRouter = netip.MustParseAddr("10.77.0.1")
	drainA      = netip.MustParseAddr("10.77.0.2")
	drainB      = netip.MustParseAddr("10.77.0.3")
	drainNodes  = []netip.Addr{drainA, drainB}
)

// nodeMTU is the link of the router and the nodes: room for a client's
// full-size packet (the client's link has the default 1500) and the 20
// bytes of the outer header.
const nodeMTU = 1600

// drainNode is one ober node of the drain site: its namespace, its
// dataplane, and echoing listeners registered as instance sockets.
type drainNode struct {
	name string
	addr netip.Addr
	ns   *netnstest.NS
	d    *Dataplane
	dev  string

	mu       sync.Mutex
	accepted map[netip.AddrPort]bool // by the client's address
	closed   map[netip.AddrPort]error
}

// drainSite is a client, a router and two ober nodes A and B. The client
// reaches the VIP through the router, which routes it to one node (a /32
// standing in for what BGP and ECMP would decide); the router and the
// nodes share a bridge in a switch namespace.
type drainSite struct {
	cli, rtr, sw *netnstest.NS
	a, b         *drainNode
	dl           *dialer
}

func newDrainSite(t *testing.T) *drainSite {
	s := &drainSite{}
	s.cli = netnstest.New(t, "dcli")
	s.rtr = netnstest.New(t, "drtr")
	s.sw = netnstest.New(t, "dsw")
	s.sw.IP(t, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
	s.sw.IP(t, "link", "set", "br0", "up")

	netnstest.Veth(t, s.cli, "cli0", s.rtr, "rc0", 1)
	netnstest.Veth(t, s.rtr, "rn0", s.sw, "swr", 1)
	s.cli.IP(t, "addr", "add", client4.String()+"/24", "dev", "cli0")
	s.cli.IP(t, "route", "add", vip4.String()+"/32", "via", "198.51.100.1")
	s.rtr.IP(t, "addr", "add", "198.51.100.1/24", "dev", "rc0")
	s.rtr.IP(t, "addr", "add", drainRouter.String()+"/24", "dev", "rn0")
	s.rtr.IP(t, "link", "set", "rn0", "mtu", fmt.Sprint(nodeMTU))
	s.sw.IP(t, "link", "set", "swr", "mtu", fmt.Sprint(nodeMTU), "master", "br0")
	netnstest.Run(t, "ip", "netns", "exec", s.rtr.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	s.a = s.newNode(t, "A", drainA, "swa")
	s.b = s.newNode(t, "B", drainB, "swb")
	// The nodes keep each other resolved (XDP cannot resolve a neighbour).
	for _, pair := range [][2]*drainNode{{s.a, s.b}, {s.b, s.a}} {
		pair[0].ns.IP(t, "neigh", "replace", pair[1].addr.String(), "lladdr", macOf(t, pair[1].ns, pair[1].dev),
			"dev", pair[0].dev, "nud", "permanent")
	}
	s.dl = newDialer(t, s.cli, 2)
	s.routeTo(t, s.a)
	return s
}

func macOf(t *testing.T, ns *netnstest.NS, dev string) string {
	var mac string
	require.NoError(t, ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			mac = ifi.HardwareAddr.String()
		}
		return err
	}))
	return mac
}

func (s *drainSite) newNode(t *testing.T, name string, addr netip.Addr, port string) *drainNode {
	n := &drainNode{name: name, addr: addr, ns: netnstest.New(t, "d"+name), d: openTestDataplane(t), dev: "n0",
		accepted: map[netip.AddrPort]bool{}, closed: map[netip.AddrPort]error{}}
	netnstest.Veth(t, s.sw, port, n.ns, n.dev, 2)
	s.sw.IP(t, "link", "set", port, "mtu", fmt.Sprint(nodeMTU), "master", "br0")
	// The node's XDP_TX frames wait in this end's queue until an XDP
	// program of its own wakes it (see netnstest.PassXDP).
	netnstest.PassXDP(t, s.sw, port)
	n.ns.IP(t, "link", "set", n.dev, "mtu", fmt.Sprint(nodeMTU))
	n.ns.IP(t, "addr", "add", addr.String()+"/24", "dev", n.dev)
	n.ns.IP(t, "addr", "add", vip4.String()+"/32", "dev", "lo")
	n.ns.IP(t, "route", "add", "default", "via", drainRouter.String())
	// bpf_fib_lookup routes only from an interface that forwards.
	netnstest.Run(t, "ip", "netns", "exec", n.ns.Name, "sysctl", "-qw", "net.ipv4.conf."+n.dev+".forwarding=1")
	require.NoError(t, n.ns.Do(func() error {
		if _, err := n.d.AttachXDP(n.dev, XDPNative); err != nil {
			return err
		}
		return n.d.AttachSkLookup()
	}))
	t.Cleanup(func() {
		n.ns.Do(func() error { return errors.Join(n.d.DetachXDP(n.dev), n.d.DetachSkLookup()) })
	})
	for i := uint32(0); i < testInsts; i++ {
		n.serve(t, i)
	}
	return n
}

// serve registers an echoing listener as instance inst's socket.
func (n *drainNode) serve(t *testing.T, inst uint32) {
	var ln net.Listener
	require.NoError(t, n.ns.Do(func() error {
		lc := ListenConfig()
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	require.NoError(t, n.d.SetSocket(listenHTTPS, inst, ln.(*net.TCPListener)))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
			n.mu.Lock()
			n.accepted[remote] = true
			n.mu.Unlock()
			go func() {
				defer c.Close()
				_, err := io.Copy(c, c)
				n.mu.Lock()
				n.closed[remote] = err
				n.mu.Unlock()
			}()
		}
	}()
}

func (n *drainNode) hasAccepted(remote netip.AddrPort) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.accepted[remote]
}

// closedWith waits for the node's side of a connection to end and
// returns how (nil: the client's FIN, read as a clean EOF).
func (n *drainNode) closedWith(t *testing.T, remote netip.AddrPort) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n.mu.Lock()
		err, ok := n.closed[remote]
		n.mu.Unlock()
		if ok {
			return err
		}
		require.True(t, time.Now().Before(deadline), "node %s never saw %s close", n.name, remote)
		time.Sleep(time.Millisecond)
	}
}

func (n *drainNode) counters(t *testing.T) *Counters {
	c, err := n.d.Counters()
	require.NoError(t, err)
	return c
}

// routeTo points the router's route for the VIP at node n, as the routers
// do when BGP moves the flows.
func (s *drainSite) routeTo(t *testing.T, n *drainNode) {
	s.rtr.IP(t, "route", "replace", vip4.String()+"/32", "via", n.addr.String())
}

// connect opens a connection to the VIP and checks which node took it.
func (s *drainSite) connect(t *testing.T, want *drainNode) (net.Conn, netip.AddrPort) {
	c, err := s.dl.dial(client4, ap(vip4, portHTTPS), 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, roundTrip(c, "hello"))
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	require.True(t, want.hasAccepted(local), "node %s serves %s", want.name, local)
	return c, local
}

// exchange makes n round trips of growing size, the largest several
// full-size segments each way.
func exchange(c net.Conn, n int) error {
	for i := 0; i < n; i++ {
		msg := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*4000/n)
		if err := roundTrip(c, string(msg)); err != nil {
			return fmt.Errorf("round trip %d (%d bytes): %w", i, len(msg), err)
		}
	}
	return nil
}

func sumReason(c *Counters, r Reason) uint64 {
	return c.ByReason()[r].Packets
}

func totalAssigned(c *Counters) uint64 {
	var n uint64
	for _, a := range c.Assigned {
		n += a.Flows
	}
	return n
}

// TestHandoffTraffic is real TCP through a router to two ober nodes. A
// client's connection is served by node A; the router then moves the
// VIP's route to node B, as the routers do when A withdraws it.
// Without handoff B answers the connection with RST. With handoff (A
// draining, on both nodes) B sends A the connection's segments and the
// connection carries on, both ways, to a clean close; so it does with
// every node marked draining, whether the owner comes before the node the
// route moved to in Nodes (round the end) or after it; a segment too big
// for the node-to-node path once encapsulated goes to B's kernel instead.
func TestHandoffTraffic(t *testing.T) {
	s := newDrainSite(t)

	t.Run("without handoff the moved connection is reset", func(t *testing.T) {
		s.routeTo(t, s.a)
		c, _ := s.connect(t, s.a)
		defer c.Close()
		s.routeTo(t, s.b)
		err := roundTrip(c, "still there?")
		require.ErrorIs(t, err, syscall.ECONNRESET, "B's kernel answers A's connection with RST")
	})

	drainSome := func(t *testing.T, draining []netip.Addr) {
		for _, n := range []*drainNode{s.a, s.b} {
			require.NoError(t, n.d.SetHandoff(Handoff{Self: n.addr, Nodes: drainNodes, Draining: draining}))
		}
		t.Cleanup(func() {
			for _, n := range []*drainNode{s.a, s.b} {
				require.NoError(t, n.d.SetHandoff(Handoff{}))
			}
		})
	}
	drain := func(t *testing.T) { drainSome(t, []netip.Addr{drainA}) }

	t.Run("with handoff the moved connection carries on", func(t *testing.T) {
		drain(t)
		s.routeTo(t, s.a)
		c, client := s.connect(t, s.a)
		defer c.Close()
		require.NoError(t, exchange(c, 4), "before the move, A draining")
		aBefore, bBefore := s.a.counters(t), s.b.counters(t)

		s.routeTo(t, s.b)
		require.NoError(t, exchange(c, 40), "after the move")

		// A new connection meanwhile is B's own: a SYN is never handed off.
		c2, _ := s.connect(t, s.b)
		require.NoError(t, exchange(c2, 4))
		c2.Close()

		// A clean close: the client's FIN and last ACK travel through B too.
		require.NoError(t, c.(*net.TCPConn).CloseWrite())
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(c)
		require.NoError(t, err, "the client reads A's FIN, not a RST")
		require.Empty(t, rest)
		require.NoError(t, s.a.closedWith(t, client), "A read the client's FIN")
		require.False(t, s.b.hasAccepted(client), "B never served the moved connection")

		aAfter, bAfter := s.a.counters(t), s.b.counters(t)
		fwd := bAfter.Get(ReasonHandoffForwarded, ActionTX).Packets - bBefore.Get(ReasonHandoffForwarded, ActionTX).Packets
		rcvd := sumReason(aAfter, ReasonHandoffReceived) - sumReason(aBefore, ReasonHandoffReceived)
		t.Logf("B forwarded %d segments, A received %d", fwd, rcvd)
		require.GreaterOrEqual(t, fwd, uint64(40), "B sends A the moved connection's segments (XDP_TX: same link)")
		require.Equal(t, fwd, rcvd, "A decapsulates and delivers every one")
		require.Equal(t, uint64(1), totalAssigned(bAfter)-totalAssigned(bBefore),
			"B's orphan checks ran its sk_lookup program but counted only the new connection")
		for _, r := range []Reason{ReasonHandoffNoTarget, ReasonHandoffNoRoute, ReasonHandoffTooBig} {
			require.Zero(t, sumReason(bAfter, r)-sumReason(bBefore, r), "B: %s", r)
		}
	})

	// Every node marked draining, as the control plane does while any one
	// drains. Nodes is [A, B]: B's orphans reach A only round the end of
	// Nodes, A's reach B going forward. Either way the connection lives,
	// and what one node sends the other is never sent back.
	for _, c := range []struct {
		name          string
		owner, moveTo *drainNode
	}{
		{"all drain: the owner before the receiver, round the end", s.a, s.b},
		{"all drain: the owner after the receiver", s.b, s.a},
	} {
		t.Run(c.name, func(t *testing.T) {
			drainSome(t, drainNodes)
			owner, recv := c.owner, c.moveTo
			s.routeTo(t, owner)
			conn, client := s.connect(t, owner)
			defer conn.Close()
			require.NoError(t, exchange(conn, 4), "before the move")
			oBefore, rBefore := owner.counters(t), recv.counters(t)

			s.routeTo(t, recv)
			require.NoError(t, exchange(conn, 40), "after the move")
			require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			rest, err := io.ReadAll(conn)
			require.NoError(t, err, "the client reads %s's FIN, not a RST", owner.name)
			require.Empty(t, rest)
			require.NoError(t, owner.closedWith(t, client))
			require.False(t, recv.hasAccepted(client), "%s never served the moved connection", recv.name)

			oAfter, rAfter := owner.counters(t), recv.counters(t)
			fwd := rAfter.Get(ReasonHandoffForwarded, ActionTX).Packets - rBefore.Get(ReasonHandoffForwarded, ActionTX).Packets
			rcvd := sumReason(oAfter, ReasonHandoffReceived) - sumReason(oBefore, ReasonHandoffReceived)
			t.Logf("%s forwarded %d segments, %s received %d", recv.name, fwd, owner.name, rcvd)
			require.GreaterOrEqual(t, fwd, uint64(40))
			require.Equal(t, fwd, rcvd)
			require.Zero(t, sumReason(oAfter, ReasonHandoffForwarded)-sumReason(oBefore, ReasonHandoffForwarded),
				"%s sends nothing back", owner.name)
			for _, r := range []Reason{ReasonHandoffNoTarget, ReasonHandoffNoRoute, ReasonHandoffTooBig} {
				require.Zero(t, sumReason(rAfter, r)-sumReason(rBefore, r), "%s: %s", recv.name, r)
			}
		})
	}

	t.Run("too big for the nodes' path", func(t *testing.T) {
		drain(t)
		s.routeTo(t, s.a)
		c, _ := s.connect(t, s.a)
		defer c.Close()
		// B's route to A now carries only 1500 bytes: a full-size client
		// segment with the outer header would need 1520.
		s.b.ns.IP(t, "route", "replace", drainA.String()+"/32", "dev", s.b.dev, "mtu", "lock", "1500")
		defer s.b.ns.IP(t, "route", "del", drainA.String()+"/32")
		before := s.b.counters(t)
		s.routeTo(t, s.b)
		require.NoError(t, roundTrip(c, "small segments still fit"))
		err := roundTrip(c, string(bytes.Repeat([]byte("x"), 4000)))
		require.ErrorIs(t, err, syscall.ECONNRESET, "the full-size segment went to B's kernel, which reset the flow")
		after := s.b.counters(t)
		require.NotZero(t, after.Get(ReasonHandoffTooBig, ActionPass).Packets-before.Get(ReasonHandoffTooBig, ActionPass).Packets)
		require.NotZero(t, after.Get(ReasonHandoffForwarded, ActionTX).Packets-before.Get(ReasonHandoffForwarded, ActionTX).Packets)
	})
}
