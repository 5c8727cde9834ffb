package handoff

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/loader"
)

var (
	testKey = []byte("0123456789abcdef0123456789abcdef-test")
	quiet   = slog.New(slog.DiscardHandler)
)

// fakeDataplane records what a node would program into its dataplane.
type fakeDataplane struct {
	mu     sync.Mutex
	set    loader.Handoff
	sets   int
	owners map[loader.Flow]netip.Addr
	clears int
	// lose drops the first record that names a flow of it, as a lost
	// datagram would.
	lose map[loader.Flow]bool
}

func (f *fakeDataplane) SetHandoff(h loader.Handoff) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set = h
	f.sets++
	return nil
}

func (f *fakeDataplane) AddOwners(owner netip.Addr, flows []loader.Flow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.owners == nil {
		f.owners = map[loader.Flow]netip.Addr{}
	}
	for _, fl := range flows {
		if f.lose[fl] {
			delete(f.lose, fl)
			return nil
		}
	}
	for _, fl := range flows {
		f.owners[fl] = owner
	}
	return nil
}

func (f *fakeDataplane) ClearOwners() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.owners = nil
	f.clears++
	return nil
}

func (f *fakeDataplane) active() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set.Active
}

func (f *fakeDataplane) ownersCopy() map[loader.Flow]netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.owners)
}

// fakeFlows is a node's connections: established ones, and new ones
// handed out once.
type fakeFlows struct {
	mu          sync.Mutex
	established []loader.Flow
	fresh       []loader.Flow
}

func (f *fakeFlows) Established() ([]loader.Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]loader.Flow(nil), f.established...), nil
}

func (f *fakeFlows) New(time.Duration) ([]loader.Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.fresh
	f.fresh = nil
	return out, nil
}

func (f *fakeFlows) add(fl loader.Flow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.established = append(f.established, fl)
	f.fresh = append(f.fresh, fl)
}

// flowsOf makes n flows of a node, told apart by the client port.
func flowsOf(node, n int) []loader.Flow {
	var out []loader.Flow
	for i := range n {
		out = append(out, loader.Flow{
			Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(node)}), uint16(10000+i)),
			VIP:    netip.MustParseAddrPort("192.0.2.10:443"),
		})
		if i%3 == 0 {
			out[i] = loader.Flow{
				Client: netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", node)), uint16(10000+i)),
				VIP:    netip.MustParseAddrPort("[2001:db8:10::10]:443"),
			}
		}
	}
	return out
}

type testNode struct {
	h     *Handoff
	dp    *fakeDataplane
	flows *fakeFlows
	addr  netip.Addr
}

// cluster starts one Handoff per address on loopback (127.0.0.0/8 is the
// host's own, every address of it answers), node i owning flowsOf(i, n).
func cluster(t *testing.T, port uint16, n int, addrs ...string) []*testNode {
	var nodes []netip.Addr
	for _, a := range addrs {
		nodes = append(nodes, netip.MustParseAddr(a))
	}
	var out []*testNode
	for i, a := range nodes {
		tn := &testNode{dp: &fakeDataplane{}, flows: &fakeFlows{established: flowsOf(i+1, n)}, addr: a}
		h, err := Start(Options{Self: a, Nodes: nodes, Port: port, Key: testKey, Dataplane: tn.dp, Flows: tn.flows,
			Linger: 300 * time.Millisecond, Rate: 1000, Burst: 10, Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(h.Close)
		tn.h = h
		out = append(out, tn)
	}
	return out
}

func freePort(t *testing.T) uint16 {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// TestDrainReachesEveryPeer: Drain returns once every peer acknowledged,
// and by then every node's dataplane hands orphans off and holds every
// other node's connections with their owner; the draining node's too,
// hundreds of them, across many datagrams. Done ends it everywhere and
// the records go.
func TestDrainReachesEveryPeer(t *testing.T) {
	ns := cluster(t, freePort(t), 300, "127.0.0.11", "127.0.0.12", "127.0.0.13")
	ctx := context.Background()

	require.NoError(t, ns[1].h.Drain(ctx, 10*time.Second))
	for i, n := range ns {
		require.True(t, n.dp.active(), "node %d hands off", i)
		require.Equal(t, loader.Handoff{Self: n.addr, Nodes: []netip.Addr{ns[0].addr, ns[1].addr, ns[2].addr},
			Active: true, Rate: 1000, Burst: 10}, n.dp.set, "node %d", i)
	}
	// Every peer sent its records before it acknowledged; the draining
	// node's own go out before its notice. UDP on loopback keeps them in
	// order, so they are in by now, or a moment later.
	for i, n := range ns {
		require.Eventually(t, func() bool {
			got := n.dp.ownersCopy()
			for j, o := range ns {
				if j == i {
					continue
				}
				for _, f := range flowsOf(j+1, 300) {
					if got[f] != o.addr {
						return false
					}
				}
			}
			return len(got) == 600
		}, 2*time.Second, 10*time.Millisecond, "node %d holds every other node's connections", i)
	}
	require.Equal(t, []string{"127.0.0.12"}, nodeNames(ns[0].h.InTransition()))
	require.Equal(t, "draining", ns[2].h.InTransition()[0].State)

	require.NoError(t, ns[1].h.Done(ctx))
	for i, n := range ns {
		require.Eventually(t, func() bool { return !n.dp.active() && len(n.dp.ownersCopy()) == 0 }, 2*time.Second, 10*time.Millisecond,
			"node %d ends the handoff after the linger", i)
		require.Empty(t, n.h.InTransition(), "node %d", i)
	}
	st := ns[0].h.Stats()
	require.GreaterOrEqual(t, st.FlowsReceived, uint64(600), "node 0 got its peers' 600 records")
	for r, n := range st.Refused {
		require.Zero(t, n, "refused %s", r)
	}
}

// TestNewFlowsReachPeers: a connection made during a transition reaches
// the other nodes' records within a few of the 20 ms rounds.
func TestNewFlowsReachPeers(t *testing.T) {
	ns := cluster(t, freePort(t), 2, "127.0.0.71", "127.0.0.72")
	require.NoError(t, ns[0].h.Join(context.Background(), 10*time.Second))
	fl := loader.Flow{Client: netip.MustParseAddrPort("198.51.100.99:55555"), VIP: netip.MustParseAddrPort("192.0.2.10:443")}
	start := time.Now()
	ns[1].flows.add(fl)
	require.Eventually(t, func() bool { return ns[0].dp.ownersCopy()[fl] == ns[1].addr }, time.Second, time.Millisecond)
	t.Logf("a new connection reached the peer's records in %v", time.Since(start))
	require.Less(t, time.Since(start), 200*time.Millisecond)
}

// TestLostNewFlowRecordHeals: a new connection's record whose first
// datagram is lost still reaches the peer within a few ticks, not only
// with the next full list (which here never names it, as for a
// connection the socket table had not listed yet).
func TestLostNewFlowRecordHeals(t *testing.T) {
	ns := cluster(t, freePort(t), 2, "127.0.0.73", "127.0.0.74")
	require.NoError(t, ns[0].h.Join(context.Background(), 10*time.Second))
	fl := loader.Flow{Client: netip.MustParseAddrPort("198.51.100.98:55556"), VIP: netip.MustParseAddrPort("192.0.2.10:443")}
	ns[0].dp.mu.Lock()
	ns[0].dp.lose = map[loader.Flow]bool{fl: true}
	ns[0].dp.mu.Unlock()
	start := time.Now()
	ns[1].flows.mu.Lock()
	ns[1].flows.fresh = append(ns[1].flows.fresh, fl)
	ns[1].flows.mu.Unlock()
	require.Eventually(t, func() bool { return ns[0].dp.ownersCopy()[fl] == ns[1].addr }, 2*time.Second, time.Millisecond,
		"the record of a new connection, lost once, never reached the peer")
	t.Logf("a new connection's record, lost once, reached the peer in %v", time.Since(start))
	ns[0].dp.mu.Lock()
	require.Empty(t, ns[0].dp.lose, "the first record was dropped")
	ns[0].dp.mu.Unlock()
	require.Less(t, time.Since(start), 200*time.Millisecond)
}

func TestDrainExpiresWhenTheNodeDies(t *testing.T) {
	ns := cluster(t, freePort(t), 1, "127.0.0.21", "127.0.0.22")
	require.NoError(t, ns[0].h.Drain(context.Background(), 300*time.Millisecond))
	require.True(t, ns[1].dp.active())
	ns[0].h.Close() // dies without Done
	require.Eventually(t, func() bool { return !ns[1].dp.active() && len(ns[1].h.InTransition()) == 0 }, 3*time.Second, 20*time.Millisecond,
		"a peer that died while draining is forgotten after its deadline")
}

// TestForgedNoticesChangeNothing: notices under another key, from an
// address that is not a node, naming another node than their source,
// replayed, or too old are refused, counted, and change nothing; a
// notice's deadline is capped.
func TestForgedNoticesChangeNothing(t *testing.T) {
	port := freePort(t)
	ns := cluster(t, port, 1, "127.0.0.31", "127.0.0.32")
	target, peer := ns[0], ns[1].addr
	send := func(from netip.Addr, b []byte) {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(target.addr, port)))
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write(b)
		require.NoError(t, err)
	}
	far := time.Now().Add(time.Hour)
	drain := noticeBody(stateDraining, far, 1)
	epoch := uint64(time.Now().UnixNano())
	good := sealer{key: testKey, self: peer.As4(), epoch: epoch}
	wrongKey := sealer{key: []byte("another key of at least thirty-two bytes"), self: peer.As4(), epoch: epoch}
	stranger := netip.MustParseAddr("127.0.0.99")
	asStranger := sealer{key: testKey, self: stranger.As4(), epoch: epoch}
	cases := []struct {
		name   string
		from   netip.Addr
		b      []byte
		reason string
	}{
		{"under another key", peer, wrongKey.seal(kindNotice, 1, time.Now(), drain), "authentication"},
		{"from a stranger", stranger, asStranger.seal(kindNotice, 1, time.Now(), drain), "stranger"},
		{"from a stranger claiming a node", stranger, good.seal(kindNotice, 1, time.Now(), drain), "stranger"},
		{"naming a node that did not send it", peer, asStranger.seal(kindNotice, 1, time.Now(), drain), "stranger"},
		{"too old", peer, good.seal(kindNotice, 2, time.Now().Add(-time.Minute), drain), "stale"},
		{"from the future", peer, good.seal(kindNotice, 3, time.Now().Add(time.Minute), drain), "stale"},
		{"not ober's", peer, []byte(`{"v":1,"node":"127.0.0.32","state":"draining"}`), "malformed"},
		{"truncated mac", peer, func() []byte { b := good.seal(kindNotice, 4, time.Now(), drain); return b[:len(b)-3] }(), "authentication"},
		{"bad body", peer, good.seal(kindNotice, 5, time.Now(), []byte{9}), "body"},
	}
	for _, c := range cases {
		before := target.h.Stats().Refused[c.reason]
		send(c.from, c.b)
		require.Eventually(t, func() bool { return target.h.Stats().Refused[c.reason] == before+1 }, time.Second, 5*time.Millisecond,
			"%s: refused as %s (%v)", c.name, c.reason, target.h.Stats().Refused)
		require.Empty(t, target.h.InTransition(), c.name)
		require.False(t, target.dp.active(), c.name)
	}

	// A genuine notice is applied, its deadline capped at MaxTransition
	// (5m by default); the same datagram again is a replay.
	real := good.seal(kindNotice, 10, time.Now(), drain)
	send(peer, real)
	require.Eventually(t, target.dp.active, time.Second, 5*time.Millisecond)
	tr := target.h.InTransition()
	require.Len(t, tr, 1)
	require.WithinDuration(t, time.Now().Add(5*time.Minute), tr[0].Until, 5*time.Second, "the deadline is capped")
	serving := good.seal(kindNotice, 11, time.Now(), noticeBody(stateServing, time.Time{}, 2))
	send(peer, serving)
	require.Eventually(t, func() bool { return len(target.h.InTransition()) == 0 }, time.Second, 5*time.Millisecond)
	before := target.h.Stats().Refused["replay"]
	send(peer, real)
	require.Eventually(t, func() bool { return target.h.Stats().Refused["replay"] == before+1 }, time.Second, 5*time.Millisecond)
	require.Empty(t, target.h.InTransition(), "a replayed notice changes nothing")
	// An older process of the peer is no longer believed either.
	old := sealer{key: testKey, self: peer.As4(), epoch: epoch - 1}
	send(peer, old.seal(kindNotice, 99, time.Now(), drain))
	require.Eventually(t, func() bool { return target.h.Stats().Refused["replay"] == before+2 }, time.Second, 5*time.Millisecond)
	require.Empty(t, target.h.InTransition())
}

func TestDrainNamesSilentPeers(t *testing.T) {
	port := freePort(t)
	nodes := []netip.Addr{netip.MustParseAddr("127.0.0.41"), netip.MustParseAddr("127.0.0.42")}
	h, err := Start(Options{Self: nodes[0], Nodes: nodes, Port: port, Key: testKey, Dataplane: &fakeDataplane{}, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	err = h.Drain(context.Background(), time.Second)
	require.ErrorContains(t, err, "127.0.0.42")
	require.Equal(t, []string{"127.0.0.41"}, nodeNames(h.InTransition()), "the node drains even when a peer does not answer")
}

func TestStartChecks(t *testing.T) {
	a, b := netip.MustParseAddr("127.0.0.51"), netip.MustParseAddr("127.0.0.52")
	_, err := Start(Options{Self: a, Nodes: []netip.Addr{b}, Port: 1, Key: testKey, Dataplane: &fakeDataplane{}, Logger: quiet})
	require.ErrorContains(t, err, "127.0.0.51 is not among the nodes")
	_, err = Start(Options{Self: a, Nodes: []netip.Addr{a, b}, Port: 1, Key: testKey[:31], Dataplane: &fakeDataplane{}})
	require.EqualError(t, err, "handoff: the shared key has 31 bytes; at least 32 are required")
}

func nodeNames(ts []Transition) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Node)
	}
	return out
}

func TestJoinEndsByItself(t *testing.T) {
	ns := cluster(t, freePort(t), 1, "127.0.0.61", "127.0.0.62")
	require.NoError(t, ns[1].h.Join(context.Background(), 300*time.Millisecond))
	for i, n := range ns {
		require.True(t, n.dp.active(), "node %d", i)
	}
	require.Equal(t, "joining", ns[0].h.InTransition()[0].State)
	for i, n := range ns {
		require.Eventually(t, func() bool { return !n.dp.active() }, 3*time.Second, 20*time.Millisecond,
			"node %d still hands off after the join's deadline and the linger", i)
	}
}

// TestHealthReports: each node's backend view reaches the others, and a
// peer that stops reporting is no longer counted.
func TestHealthReports(t *testing.T) {
	port := freePort(t)
	nodes := []netip.Addr{netip.MustParseAddr("127.0.0.81"), netip.MustParseAddr("127.0.0.82")}
	var mu sync.Mutex
	up := true
	var hs []*Handoff
	for _, n := range nodes {
		h, err := Start(Options{Self: n, Nodes: nodes, Port: port, Key: testKey, Dataplane: &fakeDataplane{},
			HealthEvery: 50 * time.Millisecond, Logger: quiet,
			Health: func() (bool, bool) {
				mu.Lock()
				defer mu.Unlock()
				return up, true
			}})
		require.NoError(t, err)
		t.Cleanup(h.Close)
		hs = append(hs, h)
	}
	require.Eventually(t, hs[0].BackendsUpElsewhere, time.Second, 10*time.Millisecond)
	p := hs[0].Peers()
	require.Len(t, p, 1)
	require.Equal(t, "127.0.0.82", p[0].Node)
	require.True(t, p[0].Serving)
	mu.Lock()
	up = false
	mu.Unlock()
	require.Eventually(t, func() bool { return !hs[0].BackendsUpElsewhere() }, time.Second, 10*time.Millisecond)
	require.Len(t, hs[0].Peers(), 1, "the peer reports, with no backend up")
	hs[1].Close()
	require.Eventually(t, func() bool { return len(hs[0].Peers()) == 0 }, time.Second, 10*time.Millisecond,
		"a silent peer is not counted")
}

// TestReceiveBufferForced: as root the channel's receive buffer is the
// 4 MiB a burst of full records needs, past net.core.rmem_max.
func TestReceiveBufferForced(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer c.Close()
	forceBuffers(c, 4<<20)
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var got int
	require.NoError(t, rc.Control(func(fd uintptr) { got, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }))
	require.NoError(t, err)
	require.Equal(t, 8<<20, got, "the kernel doubles the size asked for its bookkeeping")
}
