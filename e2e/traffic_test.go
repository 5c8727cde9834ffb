package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/loader"
)

// The traffic site: the client owns A, B and C on its veth; the server
// holds the VIP on lo and reaches the clients over the veth.
var (
	trafficVIP = netip.MustParseAddr("10.99.0.100")
	srcA       = netip.MustParseAddr("10.99.1.1") // in both lists
	srcB       = netip.MustParseAddr("10.99.1.2") // in the first list only
	srcC       = netip.MustParseAddr("10.99.1.3") // in the second list only
	serverAddr = "10.99.1.254/24"
)

const (
	trafficPort   = 80
	trafficInsts  = 2
	trafficMSize  = 251
	trafficSyncs  = 25 // odd: the last one sets A,C
	maxConns      = 20000
	trafficBudget = 60 * time.Second
	// dialTimeout is below the kernel's 1 s initial SYN retransmission
	// timeout: a SYN the XDP program drops fails the dial instead of
	// being quietly retried.
	dialTimeout = 500 * time.Millisecond
)

// trafficSite is newSite plus addresses, routes, the dataplane tables,
// two echoing instance sockets and the programs attached by the CLI.
type trafficSite struct {
	*site
	d        *loader.Dataplane
	accepted [trafficInsts]atomic.Int64
}

func newTrafficSite(t *testing.T) *trafficSite {
	t.Helper()
	ts := &trafficSite{site: newSite(t, 2)}
	for _, a := range []netip.Addr{srcA, srcB, srcC} {
		ts.cli.IP(t, "addr", "add", a.String()+"/24", "dev", "veth-c")
	}
	ts.srv.IP(t, "addr", "add", serverAddr, "dev", "veth-s")
	ts.srv.IP(t, "addr", "add", trafficVIP.String()+"/32", "dev", "lo")
	ts.cli.IP(t, "route", "add", trafficVIP.String()+"/32", "via", "10.99.1.254")

	d, err := loader.Open(loader.Options{Root: ts.root})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	ts.d = d
	require.NoError(t, d.SetServices(
		[]loader.VIP{{Addr: trafficVIP}},
		[]loader.Service{{VIP: trafficVIP, Proto: loader.ProtoTCP, Port: trafficPort, Listener: 0,
			Dispatch: true, Enforce: true, Whitelist: loader.WhitelistFrontendHTTP, Reject: false}},
	))
	slots := make([]uint32, trafficMSize)
	for i := range slots {
		slots[i] = uint32(i % trafficInsts)
	}
	require.NoError(t, d.SetMaglev(0x5eed, slots))
	require.NoError(t, d.SetInstances([]loader.Instance{{Index: 0, CPU: 0}, {Index: 1, CPU: 1}}))
	require.NoError(t, d.SetSteering(true))
	for i := range trafficInsts {
		ts.listen(t, uint32(i))
	}

	ts.ober(t, 0, "attach", "--iface", "veth-s", "--mode", "native")
	require.True(t, hasXDP(t, ts.srv, "veth-s"))
	return ts
}

// listen opens instance inst's socket in the server namespace, registers
// it and echoes whatever its connections send.
func (ts *trafficSite) listen(t *testing.T, inst uint32) {
	t.Helper()
	var ln net.Listener
	require.NoError(t, ts.srv.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false) // a sockmap refuses MPTCP sockets
		ln, err = lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		return err
	}))
	require.NoError(t, ts.d.SetSocket(0, inst, ln.(*net.TCPListener)))
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			ts.accepted[inst].Add(1)
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(c, c)
			})
		}
	})
}

// dial connects from src to the VIP inside the client namespace.
func (ts *trafficSite) dial(src netip.Addr, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ts.cli.Do(func() (err error) {
		c, err = dialFrom(src, timeout)
		return err
	})
	return c, err
}

// dialFrom must run on a thread inside the client namespace.
func dialFrom(src netip.Addr, timeout time.Duration) (net.Conn, error) {
	dl := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	return dl.Dial("tcp4", netip.AddrPortFrom(trafficVIP, trafficPort).String())
}

// echo sends one message on a fresh connection and checks the answer.
func echo(src netip.Addr, n int) error {
	c, err := dialFrom(src, dialTimeout)
	if err != nil {
		return fmt.Errorf("connection %d: %w", n, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	msg := fmt.Appendf(nil, "hello %d from %s", n, src)
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("connection %d: write: %w", n, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("connection %d: read: %w", n, err)
	}
	if string(got) != string(msg) {
		return fmt.Errorf("connection %d: echo %q, want %q", n, got, msg)
	}
	return nil
}

// load is what the client side of the traffic phase saw.
type load struct {
	conns, failed atomic.Int64
	mu            sync.Mutex
	errs          []error
}

func (l *load) fail(err error) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err)
	}
}

// run makes connections from src, one after another on each of workers
// threads in the client namespace, until stop closes or the budget ends.
func (l *load) run(ts *trafficSite, src netip.Addr, workers int, stop <-chan struct{}) {
	deadline := time.Now().Add(trafficBudget)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			err := ts.cli.Do(func() error {
				for time.Now().Before(deadline) {
					select {
					case <-stop:
						return nil
					default:
					}
					n := l.conns.Add(1)
					if n > maxConns {
						return nil
					}
					if err := echo(src, int(n)); err != nil {
						l.fail(err)
					}
				}
				return nil
			})
			if err != nil {
				l.fail(err)
			}
		})
	}
	wg.Wait()
}

// TestSyncUnderTraffic is the acceptance test of `ober sync`: while the
// frontend-http list flips between "A,B" and "A,C", connections from A,
// which both lists admit, never fail, and afterwards C is admitted and B
// silently dropped.
func TestSyncUnderTraffic(t *testing.T) {
	ts := newTrafficSite(t)
	listAB := srcA.String() + "," + srcB.String()
	listAC := srcA.String() + "," + srcC.String()
	res := ts.ober(t, 0, "sync", "--frontend-http", listAB)
	require.Contains(t, res.stdout, "generation 0 -> 1")
	require.NoError(t, echo2(ts, srcA), "A must get through before the test starts")
	before, err := ts.d.Counters()
	require.NoError(t, err)

	var l load
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ts, srcA, 2, stop)
	}()
	// Let the traffic get going, so that every sync lands under load.
	for i := 0; l.conns.Load() < 50 && i < 500; i++ {
		time.Sleep(10 * time.Millisecond)
	}

	syncs, syncErr := ts.flipLists(listAB, listAC)
	close(stop)
	<-done
	after, err := ts.d.Counters()
	require.NoError(t, err)

	conns := min(l.conns.Load(), maxConns)
	t.Logf("%d connections from A during %d syncs; %d failed; accepted per instance %d/%d",
		conns, syncs, l.failed.Load(), ts.accepted[0].Load(), ts.accepted[1].Load())
	require.NoError(t, syncErr)
	require.Equal(t, trafficSyncs, syncs)
	require.Zero(t, l.failed.Load(), "failed connections from A: %v", l.errs)
	require.GreaterOrEqual(t, conns, int64(100), "too little traffic to mean anything")
	drops := after.Get(loader.ReasonWhitelistDrop, loader.ActionDrop).Packets -
		before.Get(loader.ReasonWhitelistDrop, loader.ActionDrop).Packets
	require.Zero(t, drops, "the whitelist dropped packets of A")
	ts.requireDispatched(t, before, after)

	// The last sync set A,C: C gets in, B's SYNs are dropped in silence.
	require.NoError(t, echo2(ts, srcC), "C is in the list now")
	c, err := ts.dial(srcB, time.Second)
	if c != nil {
		c.Close()
	}
	require.Error(t, err, "B is no longer in the list")
	require.False(t, errors.Is(err, syscall.ECONNREFUSED), "B must be dropped, not refused: %v", err)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "B's connect must time out: %v", err)
	final, err := ts.d.Counters()
	require.NoError(t, err)
	require.Greater(t, final.Get(loader.ReasonWhitelistDrop, loader.ActionDrop).Packets,
		after.Get(loader.ReasonWhitelistDrop, loader.ActionDrop).Packets)

	res = ts.ober(t, 0, "status")
	require.Regexp(t, `(?m)^frontend-http\s+2\s+26$`, res.stdout)
	require.Regexp(t, `(?m)^whitelist_drop\s+drop\s+[1-9]`, res.stdout)
	t.Logf("ober status:\n%s", res.stdout)
}

// echo2 runs one echo from src on a thread in the client namespace.
func echo2(ts *trafficSite, src netip.Addr) error {
	return ts.cli.Do(func() error { return echo(src, 0) })
}

// flipLists runs `ober sync` trafficSyncs times, alternating between two
// lists and starting with b, so that an odd count ends on b. Each run
// must report the one address that leaves and the one that enters.
func (ts *trafficSite) flipLists(a, b string) (int, error) {
	lists := [2]string{b, a}
	for i := range trafficSyncs {
		res, err := runOber(context.Background(), ts.srv, "--bpffs-root", ts.root, "sync", "--frontend-http", lists[i%2])
		if err != nil {
			return i, err
		}
		want := fmt.Sprintf("generation %d -> %d\n", i+1, i+2)
		if res.code != 0 || len(res.stdout) < len(want) || res.stdout[len(res.stdout)-len(want):] != want {
			return i, fmt.Errorf("sync %d (%s): want a summary ending %q\n%s", i, lists[i%2], want, res)
		}
	}
	return trafficSyncs, nil
}

// requireDispatched checks that the traffic took ober's path: steered to
// both instances' CPUs by XDP and handed to both sockets by sk_lookup.
func (ts *trafficSite) requireDispatched(t *testing.T, before, after *loader.Counters) {
	t.Helper()
	for i := range trafficInsts {
		steered := after.Steered[i].Packets - before.Steered[i].Packets
		flows := after.Assigned[i].Flows - before.Assigned[i].Flows
		t.Logf("instance %d: %d packets steered, %d flows assigned", i, steered, flows)
		require.NotZero(t, steered, "instance %d got no steered packets", i)
		require.NotZero(t, flows, "instance %d got no flows", i)
		require.NotZero(t, ts.accepted[i].Load(), "instance %d accepted nothing", i)
	}
	require.Equal(t, before.Unassigned, after.Unassigned, "connections found no socket")
}
