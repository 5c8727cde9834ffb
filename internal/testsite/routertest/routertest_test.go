package routertest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	routerV4 = netip.MustParseAddr("10.77.1.1")
	routerV6 = netip.MustParseAddr("2001:db8:77::1")
	vip4     = netip.MustParsePrefix("10.77.0.100/32")
	vip6     = netip.MustParsePrefix("2001:db8:ff::100/128")
)

const routerASN = 65000

// node is a host on the switch that stands in for an ober node: a BIRD
// speaker announcing the VIPs over one IPv4 and one IPv6 session.
type node struct {
	ns      *netnstest.NS
	v4, v6  netip.Addr
	asn     uint32
	bfd     bool
	speaker *Router
}

// lab is a router and nodes on one switch.
type lab struct {
	sw    *Switch
	rt    *netnstest.NS
	nodes []*node
}

func newLab(t *testing.T, nodes ...*node) *lab {
	t.Helper()
	l := &lab{sw: NewSwitch(t), rt: netnstest.New(t, "rt"), nodes: nodes}
	l.sw.Attach(t, l.rt, "eth0", "prt", netip.PrefixFrom(routerV4, 24), netip.PrefixFrom(routerV6, 64))
	for i, n := range nodes {
		n.ns = netnstest.New(t, fmt.Sprintf("n%d", i+1))
		l.sw.Attach(t, n.ns, "eth0", fmt.Sprintf("pn%d", i+1), netip.PrefixFrom(n.v4, 24), netip.PrefixFrom(n.v6, 64))
	}
	return l
}

// startSpeaker runs BIRD in n's namespace announcing vip4 and vip6 to
// the router, with the same timers as the router.
func startSpeaker(t *testing.T, ctx context.Context, n *node, cfg Config) {
	t.Helper()
	cfg, err := cfg.withDefaults()
	require.NoError(t, err)
	sp := newRouter(t, n.ns, Config{Kind: BIRD})
	var b strings.Builder
	sp.birdPreamble(&b, n.v4)
	if n.bfd {
		birdBFD(&b, cfg)
	}
	b.WriteString(`protocol static vip4 { ipv4; route ` + vip4.String() + ` unreachable; }
protocol static vip6 { ipv6; route ` + vip6.String() + ` unreachable; }
`)
	for _, s := range []struct {
		name string
		peer netip.Addr
		af   string
	}{{"r4", routerV4, "ipv4"}, {"r6", routerV6, "ipv6"}} {
		fmt.Fprintf(&b, "protocol bgp %s {\n\tlocal as %d;\n\tneighbor %s as %d;\n", s.name, n.asn, s.peer, routerASN)
		birdBGPTimers(&b, cfg.hold(), cfg.keepalive())
		if n.bfd {
			b.WriteString("\tbfd on;\n")
		}
		fmt.Fprintf(&b, "\t%s { import none; export where proto = \"vip%s\"; };\n}\n", s.af, s.af[3:])
	}
	require.NoError(t, sp.startBIRDWith(ctx, b.String()), "start speaker in %s", n.ns.Name)
	n.speaker = sp
}

func addrs(a ...netip.Addr) []netip.Addr {
	slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) })
	return a
}

func is(want []netip.Addr) func([]netip.Addr) bool {
	return func(got []netip.Addr) bool { return equalSet(got, want) }
}

func TestRouter(t *testing.T) {
	for _, kind := range []Kind{BIRD, FRR} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			testRouter(t, kind)
		})
	}
}

// testRouter checks a router with two nodes: n1 with BFD, n2 without and
// passive on the router's side. It measures how fast a node's path
// leaves the router's multipath route when the node withdraws the VIP,
// when its link dies under BFD, and when it dies without BFD.
func testRouter(t *testing.T, kind Kind) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	n1 := &node{v4: netip.MustParseAddr("10.77.1.11"), v6: netip.MustParseAddr("2001:db8:77::11"), asn: 65001, bfd: true}
	n2 := &node{v4: netip.MustParseAddr("10.77.1.12"), v6: netip.MustParseAddr("2001:db8:77::12"), asn: 65002}
	l := newLab(t, n1, n2)

	cfg := Config{Kind: kind, ASN: routerASN, RouterID: routerV4}
	for _, n := range l.nodes {
		for _, a := range []netip.Addr{n.v4, n.v6} {
			cfg.Neighbors = append(cfg.Neighbors, Neighbor{Addr: a, ASN: n.asn, BFD: n.bfd, Passive: n == n2})
		}
	}
	started := time.Now()
	r := Start(t, l.rt, cfg)
	t.Logf("%s: router answers %v after start", kind, time.Since(started).Round(time.Millisecond))
	w4, w6 := r.Watch(t, vip4), r.Watch(t, vip6)
	for _, n := range l.nodes {
		startSpeaker(t, ctx, n, cfg)
	}

	require.NoError(t, r.WaitEstablished(ctx))
	t.Logf("%s: sessions up %v after start", kind, time.Since(started).Round(time.Millisecond))
	sessions, err := r.Sessions(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[netip.Addr]Session{
		n1.v4: {State: "Established", BFD: "Up"},
		n1.v6: {State: "Established", BFD: "Up"},
		n2.v4: {State: "Established"},
		n2.v6: {State: "Established"},
	}, sessions)

	both4, both6 := addrs(n1.v4, n2.v4), addrs(n1.v6, n2.v6)
	// waitBoth waits for both nodes' paths in both routes, as they
	// are or as they come back after since.
	waitBoth := func(since time.Time, what string) {
		t.Helper()
		_, _, err := w4.Until(ctx, since, is(both4))
		require.NoError(t, err, what)
		_, _, err = w6.Until(ctx, since, is(both6))
		require.NoError(t, err, what)
	}
	waitBoth(time.Time{}, "multipath routes from both nodes")
	got, err := r.Nexthops(vip4)
	require.NoError(t, err)
	assert.Equal(t, both4, got)
	got, err = r.Nexthops(vip6)
	require.NoError(t, err)
	assert.Equal(t, both6, got)

	// measure returns how long after since w first showed want.
	measure := func(w *Watch, since time.Time, want []netip.Addr, what string) time.Duration {
		t.Helper()
		at, _, err := w.Until(ctx, since, is(want))
		require.NoError(t, err, what)
		d := at.Sub(since)
		t.Logf("%s: %s: %v", kind, what, d.Round(time.Microsecond))
		return d
	}

	// A withdrawal is one UPDATE: the path goes as soon as the router
	// has processed it.
	for _, v := range []struct {
		proto string
		w     *Watch
		want  []netip.Addr
	}{{"vip4", w4, []netip.Addr{n1.v4}}, {"vip6", w6, []netip.Addr{n1.v6}}} {
		since := time.Now()
		_, err := n2.speaker.Birdc(ctx, "disable", v.proto)
		require.NoError(t, err)
		d := measure(v.w, since, v.want, "n2 withdraws "+v.proto)
		assert.Less(t, d, time.Second, "withdrawal of %s", v.proto)
	}
	since := time.Now()
	for _, proto := range []string{"vip4", "vip6"} {
		_, err := n2.speaker.Birdc(ctx, "enable", proto)
		require.NoError(t, err)
	}
	waitBoth(since, "n2 announces again")

	// BFD notices n1's dead link within multiplier × interval (300 ms).
	since = time.Now()
	n1.ns.IP(t, "link", "set", "dev", "eth0", "down")
	d4 := measure(w4, since, []netip.Addr{n2.v4}, "n1 link down with BFD, IPv4 path gone")
	d6 := measure(w6, since, []netip.Addr{n2.v6}, "n1 link down with BFD, IPv6 path gone")
	assert.Less(t, d4, time.Second)
	assert.Less(t, d6, time.Second)

	// Without BFD only the hold timer notices, 2 to 3 s after the link
	// died depending on when the last keepalive came in.
	since = time.Now()
	n2.ns.IP(t, "link", "set", "dev", "eth0", "down")
	d4 = measure(w4, since, nil, "n2 link down without BFD, IPv4 route gone")
	d6 = measure(w6, since, nil, "n2 link down without BFD, IPv6 route gone")
	for _, d := range []time.Duration{d4, d6} {
		assert.Greater(t, d, 1500*time.Millisecond, "path went long before the hold time")
		assert.Less(t, d, 5*time.Second, "path stayed long after the hold time")
	}

	// Links coming back bring the sessions and paths back, as later
	// tests that bounce nodes rely on.
	for _, n := range l.nodes {
		n.ns.IP(t, "link", "set", "dev", "eth0", "up")
	}
	since = time.Now()
	require.NoError(t, r.WaitEstablished(ctx))
	waitBoth(since, "both nodes back")
	t.Logf("%s: both nodes back %v after their links", kind, time.Since(since).Round(time.Millisecond))
	t.Logf("%s: %v history: %s", kind, vip4, w4.History())
	t.Logf("%s: %v history: %s", kind, vip6, w6.History())
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Kind: FRR, ASN: 1, RouterID: routerV4}.withDefaults()
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, c.HoldTime)
	assert.Equal(t, 1, c.keepalive())
	assert.Equal(t, 100, c.bfdMillis())
	assert.Equal(t, 3, c.BFDMultiplier)

	for _, bad := range []Config{
		{Kind: "quagga", ASN: 1, RouterID: routerV4},
		{Kind: BIRD, RouterID: routerV4},
		{Kind: BIRD, ASN: 1, RouterID: routerV6},
		{Kind: BIRD, ASN: 1, RouterID: routerV4, HoldTime: 1500 * time.Millisecond},
		{Kind: BIRD, ASN: 1, RouterID: routerV4, Neighbors: []Neighbor{{Addr: netip.MustParseAddr("fe80::1"), ASN: 2}}},
		{Kind: BIRD, ASN: 1, RouterID: routerV4, Neighbors: []Neighbor{{Addr: routerV4, ASN: 2}, {Addr: routerV4, ASN: 3}}},
	} {
		_, err := bad.withDefaults()
		assert.Error(t, err, "%+v", bad)
	}
}

func TestParseBird(t *testing.T) {
	protocols := `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     06:48:58.000
n0         BGP        ---        up     06:48:59.665  Established
  BGP state:          Established
    Neighbor address: 10.77.1.11
    Neighbor AS:      65001
  Channel ipv4
    State:          UP
n1         BGP        ---        start  06:48:59.665  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 2001:db8:77::12
    Neighbor AS:      65002
    Connect delay:    0.579/1
n2         BGP        ---        start  06:48:59.665  Passive
  BGP state:          Passive
    Neighbor address: fe80::1%eth0
`
	assert.Equal(t, map[netip.Addr]Session{
		netip.MustParseAddr("10.77.1.11"):      {State: "Established"},
		netip.MustParseAddr("2001:db8:77::12"): {State: "Active"},
		netip.MustParseAddr("fe80::1"):         {State: "Passive"},
	}, parseBirdProtocols(protocols))

	bfd := `BIRD 2.0.12 ready.
bfd1:
IP address                Interface  State      Since         Interval  Timeout
2001:db8:77::1            eth0       Up         06:49:01.084    0.100    0.300
10.77.1.1                 eth0       Init       06:49:01.011    1.000    0.000
`
	assert.Equal(t, map[netip.Addr]string{
		netip.MustParseAddr("2001:db8:77::1"): "Up",
		netip.MustParseAddr("10.77.1.1"):      "Init",
	}, parseBirdBFD(bfd))
}

func TestParseFRR(t *testing.T) {
	got, err := parseFRRNeighbors([]byte(`{
  "10.77.1.11": {"remoteAs": 65001, "bgpState": "Established",
    "peerBfdInfo": {"type": "single hop", "detectMultiplier": 3, "status": "Up"}},
  "2001:db8:77::12": {"remoteAs": 65002, "bgpState": "Active"}
}`))
	require.NoError(t, err)
	assert.Equal(t, map[netip.Addr]Session{
		netip.MustParseAddr("10.77.1.11"):      {State: "Established", BFD: "Up"},
		netip.MustParseAddr("2001:db8:77::12"): {State: "Active"},
	}, got)
}
