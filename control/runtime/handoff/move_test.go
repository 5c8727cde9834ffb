package handoff

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMoveBody(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.10")
	target := netip.MustParseAddr("10.9.0.12")

	b := moveBody(42, vip, target)
	require.Len(t, b, 28)
	id, v, tg, err := parseMove(b)
	require.NoError(t, err)
	require.Equal(t, uint64(42), id)
	require.Equal(t, vip, v, "an IPv4 VIP comes back IPv4, not IPv4-mapped")
	require.True(t, v.Is4())
	require.Equal(t, target, tg)

	// The zero target: back to the owner.
	id, v, tg, err = parseMove(moveBody(1<<40+7, vip, netip.Addr{}))
	require.NoError(t, err)
	require.Equal(t, uint64(1<<40+7), id)
	require.Equal(t, vip, v)
	require.False(t, tg.IsValid(), "the owner is the zero address, not 0.0.0.0: %v", tg)
	require.Equal(t, "owner", targetName(tg))

	// An IPv6 VIP fits too.
	v6 := netip.MustParseAddr("2001:db8:10::10")
	_, v, tg, err = parseMove(moveBody(3, v6, target))
	require.NoError(t, err)
	require.Equal(t, v6, v)
	require.Equal(t, target, tg)

	for _, bad := range [][]byte{nil, make([]byte, 8), make([]byte, 27), make([]byte, 29), append(b, 0)} {
		_, _, _, err := parseMove(bad)
		require.ErrorIs(t, err, errBody, "%d bytes", len(bad))
	}
}

func TestResultBody(t *testing.T) {
	id, r, err := parseResult(resultBody(9, ""))
	require.NoError(t, err)
	require.Equal(t, uint64(9), id)
	require.Empty(t, r, "an empty refusal: applied")

	id, r, err = parseResult(resultBody(1<<63, "vip 192.0.2.10 is not configured here"))
	require.NoError(t, err)
	require.Equal(t, uint64(1<<63), id)
	require.Equal(t, "vip 192.0.2.10 is not configured here", r)

	long := strings.Repeat("0123456789", 60) // 600 bytes
	b := resultBody(5, long)
	require.Len(t, b, 8+maxReason)
	require.LessOrEqual(t, headerLen+len(b)+macLen, maxDatagram, "a result stays within one packet")
	id, r, err = parseResult(b)
	require.NoError(t, err)
	require.Equal(t, uint64(5), id)
	require.Len(t, r, maxReason)
	require.Equal(t, long[:maxReason], r)

	for _, bad := range [][]byte{nil, make([]byte, 7), make([]byte, 8+maxReason+1)} {
		_, _, err := parseResult(bad)
		require.ErrorIs(t, err, errBody, "%d bytes", len(bad))
	}
}

// moveCall is one call of a node's OnMove.
type moveCall struct {
	vip, target netip.Addr
}

// moveLog records a node's OnMove calls.
type moveLog struct {
	mu    sync.Mutex
	calls []moveCall
}

func (l *moveLog) get() []moveCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]moveCall(nil), l.calls...)
}

// onMove records each call, then waits delay and returns err (a nil
// error: applied).
func (l *moveLog) onMove(delay time.Duration, err error) func(context.Context, netip.Addr, netip.Addr) error {
	return func(ctx context.Context, vip, target netip.Addr) error {
		l.mu.Lock()
		l.calls = append(l.calls, moveCall{vip, target})
		l.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return err
	}
}

// moveNode is a node of a move test.
type moveNode struct {
	h    *Handoff
	addr netip.Addr
	log  *moveLog
}

// moveCluster starts a Handoff on every address of addrs for which
// onMove has an entry (the others are nodes that never started); a nil
// entry's node takes no moves. nodes lists every address.
func moveCluster(t *testing.T, port uint16, addrs []string, onMove map[string]func(*moveLog) func(context.Context, netip.Addr, netip.Addr) error) []*moveNode {
	var nodes []netip.Addr
	for _, a := range addrs {
		nodes = append(nodes, netip.MustParseAddr(a))
	}
	var out []*moveNode
	for _, a := range nodes {
		mk, ok := onMove[a.String()]
		if !ok {
			out = append(out, &moveNode{addr: a, log: &moveLog{}})
			continue
		}
		n := &moveNode{addr: a, log: &moveLog{}}
		opts := Options{Self: a, Nodes: nodes, Port: port, Key: testKey, Dataplane: &fakeDataplane{}, Logger: quiet}
		if mk != nil {
			opts.OnMove = mk(n.log)
		}
		h, err := Start(opts)
		require.NoError(t, err)
		t.Cleanup(h.Close)
		n.h = h
		out = append(out, n)
	}
	return out
}

func applies(delay time.Duration) func(*moveLog) func(context.Context, netip.Addr, netip.Addr) error {
	return func(l *moveLog) func(context.Context, netip.Addr, netip.Addr) error { return l.onMove(delay, nil) }
}

func refuses(err error) func(*moveLog) func(context.Context, netip.Addr, netip.Addr) error {
	return func(l *moveLog) func(context.Context, netip.Addr, netip.Addr) error { return l.onMove(0, err) }
}

// TestMoveReachesEveryNode: a move is applied on every node, the calling
// one included, exactly once, although each node takes long enough for
// the caller to resend it (every 250 ms); Move returns nil once all are
// done. A second move, back to the owner, is a new one and applied too.
func TestMoveReachesEveryNode(t *testing.T) {
	addrs := []string{"127.0.0.111", "127.0.0.112", "127.0.0.113"}
	ns := moveCluster(t, freePort(t), addrs, map[string]func(*moveLog) func(context.Context, netip.Addr, netip.Addr) error{
		addrs[0]: applies(700 * time.Millisecond),
		addrs[1]: applies(700 * time.Millisecond),
		addrs[2]: applies(700 * time.Millisecond),
	})
	require.Equal(t, ns[0].addr, ns[0].h.Self())
	vip := netip.MustParseAddr("192.0.2.10")
	ctx := context.Background()

	start := time.Now()
	require.NoError(t, ns[0].h.Move(ctx, vip, ns[2].addr))
	require.GreaterOrEqual(t, time.Since(start), 700*time.Millisecond, "Move waits for every node's part")
	for i, n := range ns {
		require.Equal(t, []moveCall{{vip, ns[2].addr}}, n.log.get(), "node %d applied it once, by the time Move returned", i)
	}
	// Resends still on their way are answered, not applied again.
	time.Sleep(400 * time.Millisecond)
	for i, n := range ns {
		require.Len(t, n.log.get(), 1, "node %d applied the move once", i)
	}

	// Back to the owner, asked from another node.
	require.NoError(t, ns[1].h.Move(ctx, vip, netip.Addr{}))
	for i, n := range ns {
		require.Equal(t, []moveCall{{vip, ns[2].addr}, {vip, netip.Addr{}}}, n.log.get(), "node %d", i)
	}
}

// TestMoveRefused: a peer whose OnMove fails, and one that takes no
// moves, are named in the *MoveError with their reasons; the caller's own
// refusal is too. The nodes that agreed applied it all the same.
func TestMoveRefused(t *testing.T) {
	addrs := []string{"127.0.0.121", "127.0.0.122", "127.0.0.123", "127.0.0.124"}
	ns := moveCluster(t, freePort(t), addrs, map[string]func(*moveLog) func(context.Context, netip.Addr, netip.Addr) error{
		addrs[0]: applies(0),
		addrs[1]: refuses(errors.New("vip 192.0.2.10 is not configured here")),
		addrs[2]: nil, // takes no moves
		addrs[3]: applies(0),
	})
	vip := netip.MustParseAddr("192.0.2.10")
	err := ns[0].h.Move(context.Background(), vip, ns[3].addr)
	var me *MoveError
	require.ErrorAs(t, err, &me)
	require.Equal(t, map[netip.Addr]string{
		ns[1].addr: "vip 192.0.2.10 is not configured here",
		ns[2].addr: "this node takes no moves",
	}, me.Refused)
	require.Empty(t, me.Silent)
	require.Equal(t, "move: 127.0.0.122 refused: vip 192.0.2.10 is not configured here; 127.0.0.123 refused: this node takes no moves", err.Error())
	require.Equal(t, []moveCall{{vip, ns[3].addr}}, ns[0].log.get())
	require.Equal(t, []moveCall{{vip, ns[3].addr}}, ns[1].log.get(), "the refusing node was asked")
	require.Equal(t, []moveCall{{vip, ns[3].addr}}, ns[3].log.get())

	// The caller's own refusal counts as well.
	err = ns[1].h.Move(context.Background(), vip, ns[0].addr)
	require.ErrorAs(t, err, &me)
	require.Equal(t, map[netip.Addr]string{
		ns[1].addr: "vip 192.0.2.10 is not configured here",
		ns[2].addr: "this node takes no moves",
	}, me.Refused)
	require.Empty(t, me.Silent)
	require.Len(t, ns[0].log.get(), 2)
	require.Len(t, ns[3].log.get(), 2)
}

// TestMoveNamesSilentNodes: a node that never started and one that
// stopped do not answer; Move gives up after its bound and names both,
// in the nodes' order, while the live nodes applied the move.
func TestMoveNamesSilentNodes(t *testing.T) {
	addrs := []string{"127.0.0.131", "127.0.0.132", "127.0.0.133", "127.0.0.134"}
	ns := moveCluster(t, freePort(t), addrs, map[string]func(*moveLog) func(context.Context, netip.Addr, netip.Addr) error{
		addrs[0]: applies(0),
		addrs[1]: applies(0),
		// addrs[2] never started
		addrs[3]: applies(0),
	})
	ns[3].h.Close()
	vip := netip.MustParseAddr("192.0.2.10")
	start := time.Now()
	err := ns[0].h.Move(context.Background(), vip, ns[1].addr)
	took := time.Since(start)
	var me *MoveError
	require.ErrorAs(t, err, &me)
	require.Equal(t, []netip.Addr{ns[2].addr, ns[3].addr}, me.Silent)
	require.Empty(t, me.Refused)
	require.Equal(t, "move: no answer from [127.0.0.133 127.0.0.134]", err.Error())
	require.GreaterOrEqual(t, took, moveTimeout, "Move waits for the silent nodes before it gives up")
	require.Less(t, took, moveTimeout+3*time.Second, "and gives up")
	require.Equal(t, []moveCall{{vip, ns[1].addr}}, ns[0].log.get())
	require.Equal(t, []moveCall{{vip, ns[1].addr}}, ns[1].log.get(), "the live peer applied it once despite the resends")
	require.Empty(t, ns[3].log.get(), "the stopped node got nothing")
}

// TestMoveContextCancelled: the caller's context ends the wait.
func TestMoveContextCancelled(t *testing.T) {
	addrs := []string{"127.0.0.141", "127.0.0.142"}
	ns := moveCluster(t, freePort(t), addrs, map[string]func(*moveLog) func(context.Context, netip.Addr, netip.Addr) error{
		addrs[0]: applies(0),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := ns[0].h.Move(ctx, netip.MustParseAddr("192.0.2.10"), netip.Addr{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)
}

// TestMoveRefusedUpFront: a node without OnMove, and a target that is not
// one of the nodes, are refused before anything is sent or applied.
func TestMoveRefusedUpFront(t *testing.T) {
	addrs := []string{"127.0.0.151", "127.0.0.152", "127.0.0.153"}
	ns := moveCluster(t, freePort(t), addrs, map[string]func(*moveLog) func(context.Context, netip.Addr, netip.Addr) error{
		addrs[0]: nil,
		addrs[1]: applies(0),
		addrs[2]: applies(0),
	})
	vip := netip.MustParseAddr("192.0.2.10")
	ctx := context.Background()

	err := ns[0].h.Move(ctx, vip, ns[1].addr)
	require.EqualError(t, err, "move: this node takes no moves")
	var me *MoveError
	require.False(t, errors.As(err, &me), "a refusal of the caller itself, not of the nodes")

	stranger := netip.MustParseAddr("127.0.0.159")
	err = ns[1].h.Move(ctx, vip, stranger)
	require.EqualError(t, err, "move: 127.0.0.159 is not one of the nodes [127.0.0.151 127.0.0.152 127.0.0.153]")

	// Nothing went out: no node applied anything, not even the caller.
	time.Sleep(300 * time.Millisecond)
	for i, n := range ns {
		require.Empty(t, n.log.get(), "node %d", i)
	}
}

// TestMoveAskedOnce: a peer's move is applied once per (sender, id): a
// retry while it is applied gets no answer yet (its result follows), a
// retry after gets the same result again, and only another id or another
// sender applies it anew.
func TestMoveAskedOnce(t *testing.T) {
	port := freePort(t)
	self, peer, other := netip.MustParseAddr("127.0.0.161"), netip.MustParseAddr("127.0.0.162"), netip.MustParseAddr("127.0.0.163")
	// The peers are bare sockets that read what the node answers.
	listen := func(a netip.Addr) *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, port)))
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	peerConn, otherConn := listen(peer), listen(other)
	type result struct {
		id      uint64
		refusal string
	}
	// next reads the next result within wait, or reports none.
	next := func(c *net.UDPConn, wait time.Duration) (result, bool) {
		buf := make([]byte, 2048)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(wait)))
		n, _, err := c.ReadFromUDPAddrPort(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return result{}, false
		}
		require.NoError(t, err)
		m, err := open(testKey, buf[:n], time.Now())
		require.NoError(t, err)
		require.Equal(t, kindResult, m.kind)
		require.Equal(t, self, m.node)
		id, r, err := parseResult(m.body)
		require.NoError(t, err)
		return result{id, r}, true
	}

	release := make(chan struct{})
	var mu sync.Mutex
	var calls []moveCall
	h, err := Start(Options{Self: self, Nodes: []netip.Addr{self, peer, other}, Port: port, Key: testKey,
		Dataplane: &fakeDataplane{}, Logger: quiet,
		OnMove: func(ctx context.Context, vip, target netip.Addr) error {
			mu.Lock()
			calls = append(calls, moveCall{vip, target})
			mu.Unlock()
			<-release
			return errors.New("not now")
		}})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(calls)
	}
	vip := netip.MustParseAddr("192.0.2.10")

	h.moveAsked(peer, 1, 7, vip, self)
	require.Eventually(t, func() bool { return count() == 1 }, time.Second, 5*time.Millisecond)
	h.moveAsked(peer, 1, 7, vip, self) // a retry while it is applied
	_, got := next(peerConn, 200*time.Millisecond)
	require.False(t, got, "no answer before the move is applied")
	require.Equal(t, 1, count())

	close(release)
	r, got := next(peerConn, time.Second)
	require.True(t, got, "the result follows once applied")
	require.Equal(t, result{7, "not now"}, r)
	_, got = next(peerConn, 200*time.Millisecond)
	require.False(t, got, "one answer for the retry that came while applying")

	h.moveAsked(peer, 1, 7, vip, self) // a retry after it was applied
	r, got = next(peerConn, time.Second)
	require.True(t, got, "a retry after is answered")
	require.Equal(t, result{7, "not now"}, r, "with the same result")
	require.Equal(t, 1, count(), "and not applied again")
	require.Equal(t, []moveCall{{vip, self}}, calls)

	// Another id from the same sender, and the same id from another, are
	// other moves.
	h.moveAsked(peer, 1, 8, vip, netip.Addr{})
	r, got = next(peerConn, time.Second)
	require.True(t, got)
	require.Equal(t, result{8, "not now"}, r)
	h.moveAsked(other, 1, 7, vip, peer)
	r, got = next(otherConn, time.Second)
	require.True(t, got)
	require.Equal(t, result{7, "not now"}, r)
	// The same id from the sender's next process (a restart numbers its
	// moves from 1 again) is a new move too.
	h.moveAsked(peer, 2, 7, vip, netip.Addr{})
	r, got = next(peerConn, time.Second)
	require.True(t, got)
	require.Equal(t, result{7, "not now"}, r)
	require.Equal(t, 4, count())
	mu.Lock()
	require.Equal(t, []moveCall{{vip, self}, {vip, netip.Addr{}}, {vip, peer}, {vip, netip.Addr{}}}, calls)
	mu.Unlock()
}
