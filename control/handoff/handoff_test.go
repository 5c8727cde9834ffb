package handoff

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// applied records what a node would program into its dataplane.
type applied struct {
	mu   sync.Mutex
	sets [][]netip.Addr
}

func (a *applied) apply(d []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sets = append(a.sets, d)
	return nil
}

func (a *applied) last() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sets) == 0 {
		return nil
	}
	return a.sets[len(a.sets)-1]
}

// cluster starts one Handoff per address on loopback (127.0.0.0/8 is the
// host's own, every address of it answers).
func cluster(t *testing.T, port uint16, addrs ...string) ([]*Handoff, []*applied) {
	var nodes []netip.Addr
	for _, a := range addrs {
		nodes = append(nodes, netip.MustParseAddr(a))
	}
	var hs []*Handoff
	var as []*applied
	for _, n := range nodes {
		a := &applied{}
		h, err := Start(Options{Self: n, Nodes: nodes, Port: port, Apply: a.apply})
		require.NoError(t, err)
		t.Cleanup(h.Close)
		hs, as = append(hs, h), append(as, a)
	}
	return hs, as
}

func freePort(t *testing.T) uint16 {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func TestDrainReachesEveryPeer(t *testing.T) {
	hs, as := cluster(t, freePort(t), "127.0.0.11", "127.0.0.12", "127.0.0.13")
	a := netip.MustParseAddr("127.0.0.12")
	ctx := context.Background()

	// Drain returns only when both peers acknowledged, so their
	// dataplanes already forward to the draining node.
	require.NoError(t, hs[1].Drain(ctx, 10*time.Second))
	for i, ap := range as {
		require.Equal(t, []netip.Addr{a}, ap.last(), "node %d", i)
	}
	require.NoError(t, hs[1].Done(ctx))
	for i, ap := range as {
		require.Empty(t, ap.last(), "node %d", i)
	}
}

func TestDrainExpiresWhenTheNodeDies(t *testing.T) {
	hs, as := cluster(t, freePort(t), "127.0.0.21", "127.0.0.22")
	require.NoError(t, hs[0].Drain(context.Background(), 300*time.Millisecond))
	require.Len(t, as[1].last(), 1)
	hs[0].Close() // dies without Done
	require.Eventually(t, func() bool { return len(as[1].last()) == 0 }, 3*time.Second, 20*time.Millisecond,
		"a peer that died while draining is forgotten after its deadline")
}

func TestNoticesFromStrangersAreIgnored(t *testing.T) {
	port := freePort(t)
	_, as := cluster(t, port, "127.0.0.31", "127.0.0.32")
	// A well-formed notice from an address that is not a node, claiming
	// to be one.
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 99)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 31), Port: int(port)})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte(`{"v":1,"node":"127.0.0.32","state":"draining","until":99999999999999,"seq":1}`))
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	require.Empty(t, as[0].last())
}

func TestDrainNamesSilentPeers(t *testing.T) {
	port := freePort(t)
	nodes := []netip.Addr{netip.MustParseAddr("127.0.0.41"), netip.MustParseAddr("127.0.0.42")}
	h, err := Start(Options{Self: nodes[0], Nodes: nodes, Port: port})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	err = h.Drain(context.Background(), time.Second)
	require.ErrorContains(t, err, "127.0.0.42")
	require.Equal(t, []string{"127.0.0.41"}, nodeNames(h.InTransition()), "the node drains even when a peer does not answer")
}

func TestSelfMustBeANode(t *testing.T) {
	_, err := Start(Options{Self: netip.MustParseAddr("127.0.0.51"), Nodes: []netip.Addr{netip.MustParseAddr("127.0.0.52")}, Port: 1})
	require.ErrorContains(t, err, "127.0.0.51 is not among the nodes")
}

func nodeNames(ts []Transition) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Node)
	}
	return out
}

func TestJoinEndsByItself(t *testing.T) {
	hs, as := cluster(t, freePort(t), "127.0.0.61", "127.0.0.62")
	require.NoError(t, hs[1].Join(context.Background(), 300*time.Millisecond))
	for i, ap := range as {
		require.Equal(t, []netip.Addr{netip.MustParseAddr("127.0.0.62")}, ap.last(), "node %d", i)
	}
	require.Equal(t, "joining", hs[0].InTransition()[0].State)
	for i, ap := range as {
		require.Eventually(t, func() bool { return len(ap.last()) == 0 }, 3*time.Second, 20*time.Millisecond,
			"node %d still sees the join after its deadline", i)
	}
}
