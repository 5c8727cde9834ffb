package plan

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/ipam"
	"github.com/ober-ingress/ober/control/runtime/pulse"
	"github.com/ober-ingress/ober/control/runtime/servers"
	"github.com/ober-ingress/ober/loader"
)

// build parses and plans yaml, its names resolved by Resolve (the
// configurations use addresses only).
func build(t *testing.T, yaml string, f Facts, prev *NodePlan) *NodePlan {
	t.Helper()
	cfg := parse(t, yaml)
	res, err := cfg.Resolve(context.Background(), nil)
	require.NoError(t, err)
	p, err := Build(cfg, res, f, prev)
	require.NoError(t, err)
	return p
}

func renderAll(t *testing.T, p *NodePlan) string {
	t.Helper()
	text, err := p.Render(p.Slots[0], p.ExampleFDs(), "/plan.sock")
	require.NoError(t, err)
	return string(text)
}

const tcpServices = `
vips: [10.20.0.10]
services:
  - name: db
    mode: tcp
    port: 5432
    balance: weighted
    proxy_protocol: v2
    slowstart: 10s
    fallback: keep_last
    health: {kind: tcp, interval: 500ms, fall: 2, rise: 1}
    backends:
      - {name: a, address: "10.30.1.1:5432", weight: 100}
      - {name: b, address: "10.30.1.2:5432", weight: 200, priority: 2, state: drain}
  - name: range
    mode: tcp
    ports: 7000-7002
    balance: rr
    health: {port: 7000}
    backends:
      - {name: r1, address: "10.30.2.1", weight: 5}
      - {name: r2, address: "10.30.2.2", weight: 50}
`

// A tcp service is its own pool: each priority a tier, the balance and
// PROXY header rendered, ober's checks and controller given every server.
func TestBuildTCPServicePools(t *testing.T) {
	p := build(t, tcpServices, facts(), nil)

	require.Len(t, p.Pools, 2)
	db := p.Pools[0]
	require.Equal(t, "db:default", db.Name)
	require.Equal(t, config.BalanceWeighted, db.Balance)
	require.Equal(t, []haproxy.Server{
		{Name: "a", Addr: netip.MustParseAddrPort("10.30.1.1:5432"), Weight: 100, Priority: 1, ProxyProtocol: haproxy.ProxyV2},
		{Name: "b", Addr: netip.MustParseAddrPort("10.30.1.2:5432"), Weight: 200, Priority: 2, ProxyProtocol: haproxy.ProxyV2,
			State: haproxy.StateDrain},
	}, db.Servers)
	rng := p.Pools[1]
	require.Equal(t, config.BalanceRoundRobin, rng.Balance, "the IPVS alias rr is roundrobin")
	require.Equal(t, 100, rng.Servers[0].Weight, "roundrobin renders every weight alike")
	require.Equal(t, 100, rng.Servers[1].Weight)

	require.Len(t, p.Servers, 4)
	b := p.Servers[1]
	require.Equal(t, servers.Server{
		Ref: servers.Ref{Backend: "db:default:p2", Server: "b"}, Key: "db:default/b", Group: "db:default",
		Weight: 200, Admin: config.StateDrain, Slowstart: 10 * time.Second, KeepLast: true,
		Addr: netip.MustParseAddrPort("10.30.1.2:5432"),
	}, b.Control)
	require.Equal(t, pulse.KindTCP, b.Target.Check.Kind)
	require.Equal(t, 500*time.Millisecond, b.Target.Check.Interval)
	require.Equal(t, 2, b.Target.Check.Fall)
	require.True(t, p.Servers[2].Control.Equal, "roundrobin: the controller keeps the weights equal")
	require.Equal(t, uint16(7000), p.Servers[2].Target.Check.Port, "a server of a port range is checked on health.port")

	text := renderAll(t, p)
	require.Contains(t, text, "backend db:default:p2")
	require.Contains(t, text, "send-proxy-v2")
	require.Contains(t, text, "server r1 10.30.2.1 weight 100", "no port: the client's destination port")

	// One row per port of the range, all to the one listener.
	var ports []uint16
	var listener uint32
	for _, s := range p.Tables.Services {
		if s.Port >= 7000 && s.Port <= 7002 {
			ports = append(ports, s.Port)
			listener = s.Listener
		}
	}
	require.Equal(t, []uint16{7000, 7001, 7002}, ports)
	n := 0
	for _, l := range p.Listeners {
		if l.ID == listener {
			n++
		}
	}
	require.Equal(t, 1, n, "the range has one listener")
}

// Services on the top-level backends share the HAProxy pool "s3" while
// they check and balance alike; one that differs gets its own.
func TestBuildSharedPool(t *testing.T) {
	p := build(t, `
vips: [10.20.0.10]
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
  - {name: http, port: 80, mode: http}
  - {name: other, port: 8080, mode: http, balance: source}
`, facts(), nil)
	require.Equal(t, []string{"s3", "other:default"}, poolNames(p))
	require.Equal(t, []string{"s3"}, p.Frontends[0].Key.Pools)
	require.Equal(t, []string{"s3"}, p.Frontends[1].Key.Pools)
	require.Equal(t, []string{"other:default"}, p.Frontends[2].Key.Pools)
	chk := p.Servers[0].Target.Check
	require.Equal(t, pulse.KindHTTP, chk.Kind, "the top-level pool keeps backends.health's HTTP check")
	require.Equal(t, [2]int{200, 499}, [2]int{chk.StatusMin, chk.StatusMax}, "S3 answers / with 403: up")
}

func poolNames(p *NodePlan) []string {
	var out []string
	for _, pl := range p.Pools {
		out = append(out, pl.Name)
	}
	return out
}

// SNI routes name HAProxy pools; the default reject leaves the frontend
// without a pool.
func TestBuildPassthrough(t *testing.T) {
	p := build(t, `
vips: [10.20.0.10]
services:
  - name: sni
    mode: tcp
    port: 8443
    tls_passthrough:
      routes:
        - {names: [a.example], pool: a}
        - {regexp: '^b[0-9]+\.example$', pool: b}
    pools:
      - {name: a, backends: [{address: "10.30.3.1:443"}]}
      - {name: b, backends: [{address: "10.30.3.2:443"}]}
`, facts(), nil)
	in := p.Instance(p.Slots[0], p.ExampleFDs(), "/s")
	fe := in.Frontends[0]
	require.Equal(t, "", fe.Pool, "default reject")
	require.Equal(t, []haproxy.SNIRoute{
		{Names: []string{"a.example"}, Pool: "sni:a"},
		{Regexp: `^b[0-9]+\.example$`, Pool: "sni:b"},
	}, fe.Passthrough.Routes)
	require.Contains(t, renderAll(t, p), "req.ssl_sni -i a.example")
}

// An access list is compiled for the dataplane; a service keeps its ID
// across plans, and a new one never takes an ID the running plan uses.
func TestBuildAccessLists(t *testing.T) {
	yaml := func(names ...string) string {
		var b strings.Builder
		b.WriteString("vips: [10.20.0.10]\nservices:\n")
		for i, n := range names {
			b.WriteString("  - {name: " + n + ", mode: tcp, port: " + string(rune('1'+i)) + "000, " +
				`access: {default: deny, rules: ["deny 10.1.2.0/24", "allow 10.1.0.0/16", "allow 10.1.2.3/32"]}, ` +
				`backends: [{address: "10.30.0.1:80"}]}` + "\n")
		}
		return b.String()
	}
	p1 := build(t, yaml("a", "b"), facts(), nil)
	require.Equal(t, map[string]loader.AccessID{"a": 1, "b": 2}, p1.AccessIDs)
	require.Equal(t, []loader.AccessEntry{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Allow: false},
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Allow: true},
		{Prefix: netip.MustParsePrefix("10.1.2.0/24"), Allow: false},
		{Prefix: netip.MustParsePrefix("::/0"), Allow: false},
	}, p1.Tables.Access[1], "10.1.2.3/32 lies in the earlier deny: shadowed, first match wins")
	for _, s := range p1.Tables.Services {
		require.NotZero(t, s.Access, "every row of a service with a list points at it")
	}

	p2 := build(t, yaml("b", "c"), facts(), p1)
	require.Equal(t, map[string]loader.AccessID{"b": 2, "c": 3}, p2.AccessIDs, "b keeps 2; c does not take a's 1 yet")
	set, clear := DiffAccess(&p1.Tables, &p2.Tables)
	require.Equal(t, []loader.AccessID{3}, set)
	require.Equal(t, []loader.AccessID{1}, clear)
}

// A service without VIPs gets the first free address of its pool, keeps
// it across plans, and the plan's configuration has it as a VIP (routes,
// keepalived and the VIP interface follow it).
func TestBuildIPAM(t *testing.T) {
	yaml := `
vips: [10.20.0.10]
vip_pools:
  - {name: p, addresses: ["10.20.1.0/30"], avoid_buggy_ips: true}
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
  - {name: db, mode: tcp, port: 5432, vip_pool: p, backends: [{address: "10.30.0.1:5432"}]}
  - {name: kv, mode: tcp, port: 6379, vip_pool: p, backends: [{address: "10.30.0.2:6379"}]}
`
	p := build(t, yaml, facts(), nil)
	db, kv := netip.MustParseAddr("10.20.1.1"), netip.MustParseAddr("10.20.1.2")
	require.Equal(t, ipam.Allocations{"db": db, "kv": kv}, p.IPAM.Allocations, ".0 skipped (avoid_buggy_ips)")
	require.True(t, p.IPAM.Changed())
	require.Equal(t, []netip.Addr{db}, p.Frontends[1].VIPs)
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.20.0.10")}, p.Frontends[0].VIPs,
		"a service on the configured VIPs does not get the pool's addresses")
	var vips []netip.Addr
	for _, v := range p.Config.VIPs {
		vips = append(vips, v.Addr)
	}
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.20.0.10"), db, kv}, vips)
	u := p.IPAM.Usage()
	require.Equal(t, uint64(2), u[0].Used)
	require.Equal(t, uint64(1), u[0].Free, "a /30 without .0 (avoid_buggy_ips) holds three addresses; .3 is free")

	// Kept after a restart (the allocations read back), whatever the
	// order of the services.
	f := facts()
	f.Allocations = p.IPAM.Allocations
	swapped := strings.Replace(yaml, "  - {name: db", "  - {name: zz", 1)
	p2 := build(t, swapped, f, nil)
	require.Equal(t, kv, p2.IPAM.Allocations["kv"])
	require.Equal(t, db, p2.IPAM.Allocations["zz"], "db's address was released and is the first free one")
}

// Only weights and admin states changed: the runtime API applies them, no
// instance is renewed.
func TestDiffRuntimeOnly(t *testing.T) {
	p1 := build(t, tcpServices, facts(), nil)
	p2 := build(t, strings.Replace(tcpServices, "weight: 100}", "weight: 150, state: disabled}", 1), facts(), p1)
	ch := Diff(p1, p2)
	require.True(t, ch.RuntimeOnly(), "changes: %s", ch)
	require.Equal(t, "backend weights and states", ch.String())

	p3 := build(t, strings.Replace(tcpServices, "balance: weighted", "balance: leastconn", 1), facts(), p1)
	require.False(t, Diff(p1, p3).RuntimeOnly(), "a balance change renders another configuration")
	require.True(t, Diff(p1, p3).HAProxy)

	// balance source's map-based hash takes no new weight at run time.
	src := strings.Replace(tcpServices, "balance: weighted", "balance: source", 1)
	p4 := build(t, src, facts(), nil)
	require.True(t, p4.Servers[0].Control.Static)
	p5 := build(t, strings.Replace(src, "weight: 100}", "weight: 150}", 1), facts(), p4)
	require.False(t, Diff(p4, p5).RuntimeOnly(), "the instances are renewed with the new weight")
	p6 := build(t, strings.Replace(src, "weight: 100}", "weight: 100, state: drain}", 1), facts(), p4)
	require.True(t, Diff(p4, p6).RuntimeOnly(), "a state change still needs no renewal")
}

// A consistent hash's servers keep their ids (their places on HAProxy's
// ring) when another server is removed before them.
func TestConsistentIDs(t *testing.T) {
	yaml := func(names ...string) string {
		var b strings.Builder
		b.WriteString("vips: [10.20.0.10]\nservices:\n  - {name: c, mode: tcp, port: 9000, balance: consistent, backends: [")
		for i, n := range names {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(`{name: ` + n + `, address: "10.30.0.` + string(rune('1'+i)) + `:80"}`)
		}
		b.WriteString("]}\n")
		return b.String()
	}
	ids := func(p *NodePlan) map[string]int {
		out := map[string]int{}
		for _, s := range p.Pools[0].Servers {
			out[s.Name] = s.ID
		}
		return out
	}
	all := ids(build(t, yaml("b0", "b1", "b2", "b3"), facts(), nil))
	less := ids(build(t, yaml("b0", "b2", "b3"), facts(), nil))
	for _, n := range []string{"b0", "b2", "b3"} {
		require.Equal(t, all[n], less[n], n)
		require.NotZero(t, all[n])
	}
	require.Contains(t, renderAll(t, build(t, yaml("b0"), facts(), nil)), " id ")
}

// An address IPAM gives a service is announced as a configured VIP is: a
// BGP route, or a keepalived instance with an owner chosen the same way.
func TestIPAMAnnounced(t *testing.T) {
	const services = `
vips: [10.20.0.10]
vip_pools: [{name: p, addresses: ["10.20.1.8/29"]}]
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
  - {name: db, mode: tcp, port: 5432, vip_pool: p, backends: [{address: "10.30.0.1:5432"}]}
`
	alloc := netip.MustParseAddr("10.20.1.8")
	bgpMode := build(t, services+`
ha:
  mode: bgp
  bgp: {asn: 65001, peers: [{address: 192.0.2.1, asn: 65000}]}
`, facts(), nil)
	var routes []netip.Prefix
	for _, r := range bgpMode.BGP.Routes {
		routes = append(routes, r.Prefix)
	}
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.20.0.10/32"), netip.PrefixFrom(alloc, 32)}, routes)

	vrrpMode := build(t, services+`
ha:
  mode: vrrp
  vrrp: {interface: eth1, nodes: [192.0.2.11, 192.0.2.12]}
`, facts(), nil)
	var vips []netip.Addr
	for _, in := range vrrpMode.VRRP.Instances {
		vips = append(vips, in.VIP)
		require.Len(t, in.Order, 2, "%s: every node takes part, its owner first", in.VIP)
	}
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.20.0.10"), alloc}, vips)
}
