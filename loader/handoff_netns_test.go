package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader/packet"
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
// Without handoff B answers the connection with RST. With handoff (a node
// in transition, the connection recorded as A's on B) B sends A the
// connection's segments and the connection carries on, both ways, to a
// clean close; so it does the other way round. A connection B has no
// record of yet is dropped, not reset, until the record arrives, and then
// the client's retransmission carries it on. A segment too big for the
// node-to-node path once encapsulated goes to B's kernel instead, and a
// flood of segments of a recorded flow is forwarded at the configured
// rate only.
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

	activate := func(t *testing.T, rate, burst uint64) {
		for _, n := range []*drainNode{s.a, s.b} {
			require.NoError(t, n.d.SetHandoff(Handoff{Self: n.addr, Nodes: drainNodes, Active: true, Rate: rate, Burst: burst}))
		}
		t.Cleanup(func() {
			for _, n := range []*drainNode{s.a, s.b} {
				require.NoError(t, n.d.SetHandoff(Handoff{}))
				require.NoError(t, n.d.ClearOwners())
			}
		})
	}
	flowOf := func(client netip.AddrPort) Flow { return Flow{Client: client, VIP: ap(vip4, portHTTPS)} }

	for _, c := range []struct {
		name          string
		owner, moveTo *drainNode
	}{
		{"with handoff A's moved connection carries on", s.a, s.b},
		{"with handoff B's moved connection carries on", s.b, s.a},
	} {
		t.Run(c.name, func(t *testing.T) {
			activate(t, 0, 0)
			owner, recv := c.owner, c.moveTo
			rec, err := owner.d.NewFlows()
			require.NoError(t, err)
			defer rec.Close()
			s.routeTo(t, owner)
			conn, client := s.connect(t, owner)
			defer conn.Close()
			require.NoError(t, exchange(conn, 4), "before the move")
			// What the control plane does: the owner's record of its new
			// connection, sent to the other node.
			fs, err := rec.Read(time.Second, 100)
			require.NoError(t, err)
			require.Contains(t, fs, flowOf(client), "%s recorded its new connection", owner.name)
			require.NoError(t, recv.d.AddOwners(owner.addr, fs))
			oBefore, rBefore := owner.counters(t), recv.counters(t)

			s.routeTo(t, recv)
			require.NoError(t, exchange(conn, 40), "after the move")

			// A new connection meanwhile is the receiver's own: a SYN is
			// never handed off.
			c2, _ := s.connect(t, recv)
			require.NoError(t, exchange(c2, 4))
			c2.Close()

			// A clean close: the client's FIN and last ACK travel through
			// the receiver too.
			require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			rest, err := io.ReadAll(conn)
			require.NoError(t, err, "the client reads %s's FIN, not a RST", owner.name)
			require.Empty(t, rest)
			require.NoError(t, owner.closedWith(t, client), "%s read the client's FIN", owner.name)
			require.False(t, recv.hasAccepted(client), "%s never served the moved connection", recv.name)

			oAfter, rAfter := owner.counters(t), recv.counters(t)
			fwd := rAfter.Get(ReasonHandoffForwarded, ActionTX).Packets - rBefore.Get(ReasonHandoffForwarded, ActionTX).Packets
			rcvd := sumReason(oAfter, ReasonHandoffReceived) - sumReason(oBefore, ReasonHandoffReceived)
			t.Logf("%s forwarded %d segments, %s received %d", recv.name, fwd, owner.name, rcvd)
			require.GreaterOrEqual(t, fwd, uint64(40), "the receiver sends the owner the moved connection's segments (XDP_TX: same link)")
			require.Equal(t, fwd, rcvd, "the owner decapsulates and delivers every one")
			require.Equal(t, uint64(1), totalAssigned(rAfter)-totalAssigned(rBefore),
				"the receiver's orphan checks ran its sk_lookup program but counted only the new connection")
			require.Zero(t, sumReason(oAfter, ReasonHandoffForwarded)-sumReason(oBefore, ReasonHandoffForwarded),
				"%s sends nothing back", owner.name)
			for _, r := range []Reason{ReasonHandoffNoTarget, ReasonHandoffNoRoute, ReasonHandoffTooBig, ReasonHandoffUnknown, ReasonHandoffLimited} {
				require.Zero(t, sumReason(rAfter, r)-sumReason(rBefore, r), "%s: %s", recv.name, r)
			}
		})
	}

	t.Run("a late record: dropped, then the retransmission carries on", func(t *testing.T) {
		activate(t, 0, 0)
		s.routeTo(t, s.a)
		c, client := s.connect(t, s.a)
		defer c.Close()
		before := s.b.counters(t)
		s.routeTo(t, s.b)
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = s.b.d.AddOwners(s.a.addr, []Flow{flowOf(client)})
		}()
		start := time.Now()
		require.NoError(t, roundTrip(c, "held until the record came"), "not reset")
		t.Logf("round trip over the late record: %v", time.Since(start))
		require.NoError(t, exchange(c, 10))
		after := s.b.counters(t)
		require.NotZero(t, after.Get(ReasonHandoffUnknown, ActionDrop).Packets-before.Get(ReasonHandoffUnknown, ActionDrop).Packets,
			"B dropped the segment it had no record of")
		require.NotZero(t, after.Get(ReasonHandoffForwarded, ActionTX).Packets-before.Get(ReasonHandoffForwarded, ActionTX).Packets)
	})

	t.Run("too big for the nodes' path", func(t *testing.T) {
		activate(t, 0, 0)
		s.routeTo(t, s.a)
		c, client := s.connect(t, s.a)
		defer c.Close()
		require.NoError(t, s.b.d.AddOwners(s.a.addr, []Flow{flowOf(client)}))
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

	t.Run("an ack flood is forwarded at the configured rate", func(t *testing.T) {
		const rate, burst = 1000, 20
		activate(t, rate, burst)
		s.routeTo(t, s.a)
		c, client := s.connect(t, s.a)
		defer c.Close()
		require.NoError(t, s.b.d.AddOwners(s.a.addr, []Flow{flowOf(client)}))
		// Random ACKs for flows nobody recorded, and ACKs spoofing the
		// recorded one, straight onto B's link.
		before := s.b.counters(t)
		unknown, recorded, elapsed := s.floodB(t, client, 20000)
		after := s.b.counters(t)
		delta := func(r Reason, a Action) uint64 { return after.Get(r, a).Packets - before.Get(r, a).Packets }
		fwd, limited := delta(ReasonHandoffForwarded, ActionTX), delta(ReasonHandoffLimited, ActionDrop)
		ncpu, err := ebpf.PossibleCPU()
		require.NoError(t, err)
		bound := uint64(ncpu) * (uint64(elapsed.Seconds()*rate) + burst + 1)
		t.Logf("%d ACKs of the recorded flow and %d of unknown ones in %v: %d forwarded (bound %d on %d CPUs), %d over the rate, %d unknown dropped",
			recorded, unknown, elapsed, fwd, bound, ncpu, limited, delta(ReasonHandoffUnknown, ActionDrop))
		require.Equal(t, uint64(unknown), delta(ReasonHandoffUnknown, ActionDrop), "no segment of an unknown flow is forwarded")
		require.LessOrEqual(t, fwd, bound, "forwarded beyond the rate")
		require.NotZero(t, fwd, "the recorded flow's segments are forwarded up to the rate")
		require.Equal(t, uint64(recorded), fwd+limited, "every segment of the recorded flow is forwarded or counted over the rate")
		// The connection itself lives on through the flood's aftermath.
		s.routeTo(t, s.a)
		require.NoError(t, roundTrip(c, "still here"))
	})
}

// floodB sends n crafted TCP ACKs onto B's link from the switch, half of
// them for flows nobody recorded (random client ports) and half spoofing
// client's connection, and returns how many of each it sent and how long
// the sending took.
func (s *drainSite) floodB(t *testing.T, client netip.AddrPort, n int) (unknown, recorded int, elapsed time.Duration) {
	t.Helper()
	dst, err := net.ParseMAC(macOf(t, s.b.ns, s.b.dev))
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	frames := make([][]byte, n)
	for i := range frames {
		sp := packet.Spec{Src: client.Addr(), Dst: vip4, Proto: packet.ProtoTCP, SrcPort: client.Port(), DstPort: portHTTPS,
			Flags: packet.ACK, Seq: rng.Uint32(), Ack: rng.Uint32(), DstMAC: [6]byte(dst), SrcMAC: [6]byte{2, 0, 0, 0, 0x77, 1}}
		if i%2 == 0 {
			sp.SrcPort = uint16(20000 + rng.IntN(10000)) // never the client's: it dials from the ephemeral range
			unknown++
		} else {
			recorded++
		}
		frames[i] = sp.Bytes()
	}
	require.NoError(t, s.sw.Do(func() error {
		ifi, err := net.InterfaceByName("swb")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], dst)
		start := time.Now()
		for _, f := range frames {
			for {
				err := unix.Sendto(fd, f, 0, to)
				if err == nil {
					break
				}
				if !errors.Is(err, unix.ENOBUFS) {
					return err
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
		elapsed = time.Since(start)
		return nil
	}))
	// Let B's queue drain before the counters are read.
	time.Sleep(200 * time.Millisecond)
	return unknown, recorded, elapsed
}

// TestHandoffPastTimeWait: node A served a client port first and closed
// first, so A's kernel keeps that tuple in TIME_WAIT for a minute. The
// client then reuses the port for a connection that B takes (its SYN went
// to B), and the route moves back to A while it runs. A's TIME_WAIT socket
// is the tuple's past, B's record its present: A hands the segments to B
// and the connection carries on. Without the record, A's kernel keeps
// answering for its TIME_WAIT socket as before.
func TestHandoffPastTimeWait(t *testing.T) {
	s := newDrainSite(t)
	// A closes first: every instance of A says bye and hangs up.
	for i := uint32(0); i < testInsts; i++ {
		var ln net.Listener
		require.NoError(t, s.a.ns.Do(func() error {
			lc := ListenConfig()
			var err error
			ln, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
			return err
		}))
		t.Cleanup(func() { ln.Close() })
		require.NoError(t, s.a.d.SetSocket(listenHTTPS, i, ln.(*net.TCPListener)))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, "bye")
				c.Close()
			}
		}()
	}
	dialFrom := func(port uint16) net.Conn {
		done := make(chan dialResult, 1)
		s.dl.jobs <- dialJob{src: netip.AddrPortFrom(client4, port), dst: ap(vip4, portHTTPS), timeout: 5 * time.Second, done: done}
		r := <-done
		require.NoError(t, r.err)
		return r.conn
	}
	port := uint16(40000 + rand.IntN(20000))
	client := netip.AddrPortFrom(client4, port)

	s.routeTo(t, s.a)
	c := dialFrom(port)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "bye", string(got))
	c.Close()
	require.Eventually(t, func() bool {
		out, _ := exec.Command("ip", "netns", "exec", s.a.ns.Name, "ss", "-Htn", "state", "time-wait", "dst", client.String()).CombinedOutput()
		return strings.Contains(string(out), client.String())
	}, 5*time.Second, 10*time.Millisecond, "A holds the tuple in TIME_WAIT")

	for _, n := range []*drainNode{s.a, s.b} {
		require.NoError(t, n.d.SetHandoff(Handoff{Self: n.addr, Nodes: drainNodes, Active: true}))
	}
	rec, err := s.b.d.NewFlows()
	require.NoError(t, err)
	defer rec.Close()
	s.routeTo(t, s.b)
	conn := dialFrom(port)
	defer conn.Close()
	require.NoError(t, exchange(conn, 4), "B serves the port's new connection")
	require.True(t, s.b.hasAccepted(client))
	fs, err := rec.Read(time.Second, 100)
	require.NoError(t, err)
	require.Contains(t, fs, Flow{Client: client, VIP: ap(vip4, portHTTPS)})
	require.NoError(t, s.a.d.AddOwners(s.b.addr, fs))

	before := s.a.counters(t)
	s.routeTo(t, s.a)
	require.NoError(t, exchange(conn, 20), "after the route moved back to A, which holds the tuple in TIME_WAIT")
	after := s.a.counters(t)
	fwd := after.Get(ReasonHandoffForwarded, ActionTX).Packets - before.Get(ReasonHandoffForwarded, ActionTX).Packets
	t.Logf("A forwarded %d segments of B's connection past its TIME_WAIT socket", fwd)
	require.GreaterOrEqual(t, fwd, uint64(20))
}
