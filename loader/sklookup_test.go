package loader

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// skLookupCtx mirrors struct bpf_sk_lookup as BPF_PROG_TEST_RUN takes it;
// on the way out, Cookie is the cookie of the socket the program chose.
type skLookupCtx struct {
	Cookie         uint64
	Family         uint32
	Protocol       uint32
	RemoteIP4      [4]byte
	RemoteIP6      [16]byte
	RemotePort     [2]byte // network order
	_              [2]byte
	LocalIP4       [4]byte
	LocalIP6       [16]byte
	LocalPort      uint32 // host order
	IngressIfindex uint32
	_              [4]byte
}

func makeSkCtx(t SkTuple) skLookupCtx {
	c := skLookupCtx{Protocol: uint32(t.Proto), LocalPort: uint32(t.Local.Port())}
	c.RemotePort = [2]byte{byte(t.Remote.Port() >> 8), byte(t.Remote.Port())}
	if t.Local.Addr().Is4() {
		c.Family = unix.AF_INET
		c.RemoteIP4 = t.Remote.Addr().As4()
		c.LocalIP4 = t.Local.Addr().As4()
	} else {
		c.Family = unix.AF_INET6
		c.RemoteIP6 = t.Remote.Addr().As16()
		c.LocalIP6 = t.Local.Addr().As16()
	}
	return c
}

// listen makes a socket the sockmap accepts, in ns, of the family of v6.
func listen(t testing.TB, ns *netnstest.NS, proto Proto, v6 bool) syscall.Conn {
	t.Helper()
	lc := ListenConfig()
	addr := "127.0.0.1:0"
	if v6 {
		addr = "[::1]:0"
	}
	var c syscall.Conn
	err := ns.Do(func() error {
		if proto == ProtoUDP {
			pc, err := lc.ListenPacket(context.Background(), "udp", addr)
			if err == nil {
				c = pc.(*net.UDPConn)
			}
			return err
		}
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err == nil {
			c = ln.(*net.TCPListener)
		}
		return err
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.(interface{ Close() error }).Close() })
	return c
}

func lis(l uint32, v6 bool) uint32 {
	if v6 {
		return l + listenV6
	}
	return l
}

func socketCookies(t testing.TB, d *Dataplane) map[uint32]map[uint64]uint32 {
	t.Helper()
	refs, err := d.Sockets()
	require.NoError(t, err)
	out := map[uint32]map[uint64]uint32{}
	for _, r := range refs {
		if out[r.Listener] == nil {
			out[r.Listener] = map[uint64]uint32{}
		}
		out[r.Listener][r.Cookie] = r.Instance
	}
	return out
}

func randomTuple(rng *rand.Rand, proto Proto, v6 bool, port uint16) SkTuple {
	var remote, local netip.Addr
	if v6 {
		b := client6.As16()
		b[14], b[15] = byte(rng.IntN(256)), byte(rng.IntN(256))
		remote, local = netip.AddrFrom16(b), vip6
	} else {
		b := client4.As4()
		b[3] = byte(rng.IntN(256))
		remote, local = netip.AddrFrom4(b), vip4
	}
	return SkTuple{Proto: proto, Remote: netip.AddrPortFrom(remote, uint16(1024+rng.IntN(60000))),
		Local: netip.AddrPortFrom(local, port)}
}

// TestSkLookupFixtures runs the sk_lookup program through BPF_PROG_TEST_RUN
// against real sockets and checks the chosen socket against the model.
func TestSkLookupFixtures(t *testing.T) {
	d := openTestDataplane(t)
	ns := netnstest.New(t, "sk")
	for _, v6 := range []bool{false, true} {
		for i := uint32(0); i < testInsts; i++ {
			require.NoError(t, d.SetSocket(lis(listenHTTPS, v6), i, listen(t, ns, ProtoTCP, v6)))
		}
		// UDP has sockets on instances 0 and 1 only: flows for 2 and 3 fall back.
		for i := uint32(0); i < 2; i++ {
			require.NoError(t, d.SetSocket(lis(listenUDP, v6), i, listen(t, ns, ProtoUDP, v6)))
		}
		for i := uint32(0); i < testInsts; i++ {
			require.NoError(t, d.SetSocket(lis(listenRange, v6), i, listen(t, ns, ProtoTCP, v6)))
		}
		// Past ober_sockets: instances 0 and 2 only, so that some flows
		// fall back there too.
		for _, i := range []uint32{0, 2} {
			require.NoError(t, d.SetSocket(lis(listenHigh, v6), i, listen(t, ns, ProtoTCP, v6)))
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	run := func(tu SkTuple) uint64 {
		t.Helper()
		in := makeSkCtx(tu)
		var out skLookupCtx
		err := ns.Do(func() error {
			_, err := d.SkLookupProgram().Run(&ebpf.RunOptions{Context: in, ContextOut: &out})
			return err
		})
		require.NoError(t, err)
		return out.Cookie
	}
	check := func(name string, n int, gen func() SkTuple) (fallbacks int) {
		t.Helper()
		model := NewModel(mustSnapshot(t, d))
		cookies := socketCookies(t, d)
		before, err := d.Counters()
		require.NoError(t, err)
		want := map[uint32]uint64{}
		for i := 0; i < n; i++ {
			tu := gen()
			cookie := run(tu)
			inst, fb, ok := model.SkLookup(tu)
			if !ok {
				require.Zero(t, cookie, "%s: %v must not be assigned", name, tu)
				continue
			}
			svc := model.svcs[makeSvcKey(tu.Local.Addr(), uint8(tu.Proto), tu.Local.Port())]
			got, found := cookies[svc.Listener][cookie]
			require.True(t, found, "%s: %v: cookie %d is no registered socket", name, tu, cookie)
			require.Equal(t, inst, got, "%s: %v: instance", name, tu)
			want[inst]++
			if fb {
				fallbacks++
			}
		}
		after, err := d.Counters()
		require.NoError(t, err)
		for i := uint32(0); i < MaxInstances; i++ {
			require.Equal(t, want[i], after.Assigned[i].Flows-before.Assigned[i].Flows, "%s: flows counted for %d", name, i)
		}
		return fallbacks
	}

	require.Zero(t, check("tcp v4", 400, func() SkTuple { return randomTuple(rng, ProtoTCP, false, portHTTPS) }))
	require.Zero(t, check("tcp v6", 400, func() SkTuple { return randomTuple(rng, ProtoTCP, true, portHTTPS) }))
	require.NotZero(t, check("udp with missing sockets", 400, func() SkTuple { return randomTuple(rng, ProtoUDP, false, portDNS) }))
	// Every port of a range goes to the range's one listener, whose
	// sockets are bound to a port of their own.
	rangePort := func() uint16 { return uint16(portRangeFirst + rng.IntN(portRangeLast-portRangeFirst+1)) }
	require.Zero(t, check("port range v4", 400, func() SkTuple { return randomTuple(rng, ProtoTCP, false, rangePort()) }))
	require.Zero(t, check("port range v6", 400, func() SkTuple { return randomTuple(rng, ProtoTCP, true, rangePort()) }))
	for _, p := range []uint16{portRangeFirst, portRangeLast} {
		tu := randomTuple(rng, ProtoTCP, false, p)
		require.Contains(t, socketCookies(t, d)[listenRange], run(tu), "port %d", p)
	}
	require.Zero(t, run(randomTuple(rng, ProtoTCP, false, portRangeLast+1)), "past the range")
	require.NotZero(t, check("listener 256 v4", 400, func() SkTuple { return randomTuple(rng, ProtoTCP, false, portHigh) }))
	require.NotZero(t, check("listener 260 v6", 400, func() SkTuple { return randomTuple(rng, ProtoTCP, true, portHigh) }))
	require.Zero(t, run(randomTuple(rng, ProtoTCP, false, portRangeFirst-1)), "before the range")
	require.Zero(t, run(randomTuple(rng, ProtoUDP, false, portRangeFirst)), "the range is tcp")

	// Every instance got flows: the table spreads them.
	c, err := d.Counters()
	require.NoError(t, err)
	for i := 0; i < testInsts; i++ {
		require.NotZero(t, c.Assigned[i].Flows, "instance %d", i)
	}

	// Instance 1 loses its socket: its flows go to the next live one, and
	// nobody else's flows move.
	require.NoError(t, d.ClearSocket(lis(listenHTTPS, false), 1))
	require.NotZero(t, check("tcp after removal", 400, func() SkTuple { return randomTuple(rng, ProtoTCP, false, portHTTPS) }))

	// Not dispatched: a port without a service, and the host's BGP service.
	require.Zero(t, run(SkTuple{Proto: ProtoTCP, Remote: ap(client4, 1000), Local: ap(vip4, 22)}))
	require.Zero(t, run(SkTuple{Proto: ProtoTCP, Remote: ap(router4, 1000), Local: ap(host4, portBGP)}))

	// No socket left at all: the lookup continues and is counted.
	for i := uint32(0); i < testInsts; i++ {
		require.NoError(t, d.ClearSocket(lis(listenHTTPS, false), i))
	}
	before, err := d.Counters()
	require.NoError(t, err)
	require.Zero(t, run(randomTuple(rng, ProtoTCP, false, portHTTPS)))
	after, err := d.Counters()
	require.NoError(t, err)
	require.Equal(t, before.Unassigned+1, after.Unassigned)
}

// TestSkLookupListenerEdges: listeners on both sides of the line between
// ober_sockets and ober_sockets_hi, and the last one, each get their own
// sockets, as the model says; Sockets lists them in order; a socket
// cleared from either map is gone, and clearing it again is no error.
func TestSkLookupListenerEdges(t *testing.T) {
	d := openTestDataplane(t)
	ns := netnstest.New(t, "ske")
	edges := []uint32{0, lowListeners - 1, lowListeners, lowListeners + 1, MaxListeners - 1}
	svcs := siteServices()
	for i, l := range edges {
		svcs = append(svcs, Service{VIP: vip4, Proto: ProtoTCP, Port: uint16(9500 + i), Listener: l, Dispatch: true})
	}
	require.NoError(t, d.SetServices(siteVIPs(), svcs))
	for _, l := range edges {
		for i := uint32(0); i < testInsts; i++ {
			require.NoError(t, d.SetSocket(l, i, listen(t, ns, ProtoTCP, false)))
		}
	}
	conn := listen(t, ns, ProtoTCP, false)
	require.ErrorContains(t, d.SetSocket(MaxListeners, 0, conn), "listener 4096 out of range (max 4095)")
	require.ErrorContains(t, d.SetServices(siteVIPs(), append(siteServices(),
		Service{VIP: vip4, Proto: ProtoTCP, Port: 9600, Listener: MaxListeners, Dispatch: true})),
		"listener 4096 out of range (max 4095)")

	refs, err := d.Sockets()
	require.NoError(t, err)
	var got []uint32
	for i, r := range refs {
		got = append(got, r.Listener)
		if i > 0 {
			prev := refs[i-1]
			require.True(t, prev.Listener < r.Listener || prev.Listener == r.Listener && prev.Instance < r.Instance,
				"sockets in listener, instance order: %v", refs)
		}
	}
	want := []uint32{}
	for _, l := range edges {
		for range testInsts {
			want = append(want, l)
		}
	}
	require.Equal(t, want, got)

	rng := rand.New(rand.NewPCG(3, 4))
	model := NewModel(mustSnapshot(t, d))
	cookies := socketCookies(t, d)
	run := func(tu SkTuple) uint64 {
		t.Helper()
		in := makeSkCtx(tu)
		var out skLookupCtx
		require.NoError(t, ns.Do(func() error {
			_, err := d.SkLookupProgram().Run(&ebpf.RunOptions{Context: in, ContextOut: &out})
			return err
		}))
		return out.Cookie
	}
	for i, l := range edges {
		perInst := map[uint32]int{}
		for n := 0; n < 100; n++ {
			tu := randomTuple(rng, ProtoTCP, false, uint16(9500+i))
			inst, fb, ok := model.SkLookup(tu)
			require.True(t, ok)
			require.False(t, fb)
			cookie := run(tu)
			gotInst, found := cookies[l][cookie]
			require.True(t, found, "listener %d: %v got cookie %d, none of the listener's sockets", l, tu, cookie)
			require.Equal(t, inst, gotInst, "listener %d: %v: instance", l, tu)
			perInst[inst]++
		}
		require.Len(t, perInst, testInsts, "listener %d: every instance gets flows", l)
	}

	// Every socket of the last listener and of the first past ober_sockets
	// cleared: their flows find none, twice clearing is fine.
	for _, l := range []uint32{lowListeners, MaxListeners - 1, lowListeners - 1} {
		for i := uint32(0); i < testInsts; i++ {
			require.NoError(t, d.ClearSocket(l, i))
			require.NoError(t, d.ClearSocket(l, i), "listener %d instance %d cleared again", l, i)
		}
		require.NotContains(t, socketCookies(t, d), l)
	}
	for i, l := range edges {
		tu := randomTuple(rng, ProtoTCP, false, uint16(9500+i))
		_, _, ok := NewModel(mustSnapshot(t, d)).SkLookup(tu)
		cookie := run(tu)
		if l == lowListeners || l == MaxListeners-1 || l == lowListeners-1 {
			require.False(t, ok)
			require.Zero(t, cookie, "listener %d has no socket left", l)
			continue
		}
		require.True(t, ok)
		require.Contains(t, cookies[l], cookie, "listener %d keeps its sockets", l)
	}
}
