package plan

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/loader"
)

var update = flag.Bool("update", false, "rewrite the golden HAProxy configurations in testdata")

// The tests parse real configurations: the instances' account must exist
// on the machine (nobody/nogroup on Debian), and nothing else is read.
const base = `
node: {name: n1, interfaces: [eth1], runtime_dir: /run/ober, state_dir: /var/lib/ober}
haproxy: {user: nobody, group: nogroup}
instances: {cpus: [0]}
backends:
  servers:
    - {name: rgw1, address: "10.30.0.1:7480"}
    - {name: rgw2, address: "10.30.0.2:7480", weight: 50}
`

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(base + yaml))
	require.NoError(t, err)
	return cfg
}

// resolved is what Resolve gives for configurations whose backends are
// addresses and whose whitelists are given as prefixes.
func resolved(t *testing.T, cfg *config.Config, lists map[string][]netip.Prefix) *config.Resolved {
	t.Helper()
	res := &config.Resolved{Whitelists: map[string][]netip.Prefix{
		config.WhitelistFrontendHTTP: nil, config.WhitelistRouters: nil, config.WhitelistBackendHTTP: nil,
	}}
	for _, s := range cfg.Backends.Servers {
		res.Backends = append(res.Backends, config.ResolvedServer{BackendServer: s, Addr: netip.MustParseAddrPort(s.Address)})
	}
	res.Pools = map[config.PoolRef][]config.ResolvedServer{}
	for i := range cfg.Services {
		for _, spec := range cfg.ServicePools(i) {
			for _, s := range spec.Servers {
				ap, err := netip.ParseAddrPort(s.Address)
				if err != nil {
					ap = netip.AddrPortFrom(netip.MustParseAddr(s.Address), 0)
				}
				res.Pools[spec.Ref] = append(res.Pools[spec.Ref], config.ResolvedServer{BackendServer: s, Addr: ap})
			}
		}
	}
	for k, v := range lists {
		res.Whitelists[k] = v
	}
	return res
}

func facts() Facts {
	return Facts{
		HAProxy: haproxy.Version{Major: 2, Minor: 6, Patch: 12},
		FDLimit: 1 << 20,
		PEM:     map[string][]byte{"https": []byte("-----BEGIN CERTIFICATE-----\nfake\n")},
		Addrs: map[string][]netip.Addr{"eth1": {
			netip.MustParseAddr("fe80::1"), netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::11"),
		}},
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".haproxy.cfg")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./control/plan -update to write it")
	require.Equal(t, string(want), string(got), "instance 0's configuration differs from %s (go test -update rewrites it)", path)
}

func TestBuildTLSAndHTTPServices(t *testing.T) {
	cfg := parse(t, `
vips: [10.20.0.10, "2001:db8:20::10"]
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
  - {name: http, port: 80, mode: http, reject: true}
whitelists:
  frontend_http: [192.0.2.0/24]
`)
	res := resolved(t, cfg, map[string][]netip.Prefix{
		config.WhitelistFrontendHTTP: prefixes("198.51.100.7/32", "192.0.2.0/24"),
	})
	p, err := Build(cfg, res, facts(), nil)
	require.NoError(t, err)

	v4, v6 := netip.MustParseAddr("10.20.0.10"), netip.MustParseAddr("2001:db8:20::10")
	require.Equal(t, []loader.VIP{{Addr: v4}, {Addr: v6}}, p.Tables.VIPs, "mode none: no host entries")
	require.Equal(t, []supervisor.Listener{{ID: 0, Family: 4}, {ID: 1, Family: 6}, {ID: 2, Family: 4}, {ID: 3, Family: 6}},
		p.Listeners, "one listener per service and address family, no MSS clamp outside BGP mode")
	wl := loader.WhitelistFrontendHTTP
	require.Equal(t, []loader.Service{
		{VIP: v4, Proto: loader.ProtoTCP, Port: 443, Listener: 0, Dispatch: true},
		{VIP: v6, Proto: loader.ProtoTCP, Port: 443, Listener: 1, Dispatch: true},
		{VIP: v4, Proto: loader.ProtoTCP, Port: 80, Listener: 2, Dispatch: true, Enforce: true, Reject: true, Whitelist: wl},
		{VIP: v6, Proto: loader.ProtoTCP, Port: 80, Listener: 3, Dispatch: true, Enforce: true, Reject: true, Whitelist: wl},
	}, p.Tables.Services)
	require.Equal(t, prefixes("192.0.2.0/24", "198.51.100.7/32"), p.Tables.Whitelists[wl], "normalized")
	require.Equal(t, []supervisor.Slot{{Index: 0, CPU: 0}}, p.Slots)
	require.Nil(t, p.BGP)
	require.Nil(t, p.VRRP)

	// The files are named by their content and hold what HAProxy loads.
	require.Len(t, p.Files, 2)
	pem, acl := p.Files[0], p.Files[1]
	require.Equal(t, p.ACLs[config.WhitelistFrontendHTTP], acl.Path)
	require.Regexp(t, `^/run/ober/acl/frontend-http\.[0-9a-f]{12}\.acl$`, acl.Path)
	require.Equal(t, "198.51.100.7/32\n192.0.2.0/24\n", string(acl.Data))
	require.False(t, acl.Secret)
	require.Regexp(t, `^/run/ober/tls/https-[0-9a-f]{12}\.pem$`, pem.Path)
	require.True(t, pem.Secret, "the bundle holds the private key")
	require.Equal(t, pem.Path, p.Frontends[0].PEM)
	require.Equal(t, map[netip.AddrPort]bool{netip.MustParseAddrPort("10.20.0.10:443"): true,
		netip.MustParseAddrPort("[2001:db8:20::10]:443"): true}, p.TLSServices())

	text, err := p.Render(p.Slots[0], p.ExampleFDs(), "/run/ober/haproxy-0.g1.sock")
	require.NoError(t, err)
	golden(t, "tls-http", text)
	require.Contains(t, string(text), "crt "+pem.Path)
	require.Contains(t, string(text), acl.Path)
}

func TestBuildBGPMode(t *testing.T) {
	cfg := parse(t, `
vips: [10.20.0.10, 10.20.0.11]
services: [{name: https, port: 443, mode: tls, tls: {self_signed: true}}]
ha:
  mode: bgp
  bgp:
    asn: 65001
    listen_port: 179
    path_mtu: 1400
    communities: ["65001:100"]
    vips: [{vip: 10.20.0.11, med: 50}]
    graceful_restart: {enabled: true, restart_time: 30s}
    peers: [{address: 192.0.2.1, asn: 65000}]
`)
	p, err := Build(cfg, resolved(t, cfg, nil), facts(), nil)
	require.NoError(t, err)

	require.Equal(t, []supervisor.Listener{{ID: 0, Family: 4, MSS: 1360}}, p.Listeners,
		"under ECMP the MSS is clamped to path_mtu less 40 bytes of IPv4 and TCP headers")
	// The node's own addresses are host entries whose BGP and BFD ports
	// admit the routers whitelist only.
	var hosts []netip.Addr
	for _, v := range p.Tables.VIPs {
		if v.Host {
			hosts = append(hosts, v.Addr)
		}
	}
	require.Equal(t, []netip.Addr{netip.MustParseAddr("fe80::1"), netip.MustParseAddr("192.0.2.11"),
		netip.MustParseAddr("2001:db8::11")}, hosts)
	var guarded []string
	for _, s := range p.Tables.Services {
		if s.VIP == netip.MustParseAddr("192.0.2.11") {
			require.True(t, s.Enforce)
			require.Equal(t, loader.WhitelistRouters, s.Whitelist)
			require.False(t, s.Dispatch, "nothing to the node's own address goes to HAProxy")
			guarded = append(guarded, s.Proto.String()+"/"+itoa(s.Port))
		}
	}
	require.Equal(t, []string{"tcp/179", "udp/3784", "udp/4784"}, guarded)

	require.NotNil(t, p.BGP)
	sp := p.BGP.Speaker
	require.Equal(t, uint32(65001), sp.ASN)
	require.Equal(t, netip.MustParseAddr("192.0.2.11"), sp.RouterID, "the first IPv4 address of node.interfaces")
	require.Len(t, sp.Peers, 1)
	require.Equal(t, 30*time.Second, sp.Peers[0].GracefulRestart, "the daemon's peers keep its routes across a restart")
	require.Equal(t, []bgp.Route{
		{Prefix: netip.MustParsePrefix("10.20.0.10/32"), Communities: []uint32{65001<<16 | 100}},
		{Prefix: netip.MustParsePrefix("10.20.0.11/32"), Communities: []uint32{65001<<16 | 100}, MED: ptr(uint32(50))},
	}, p.BGP.Routes)

	f3 := facts()
	f3.HAProxy = haproxy.Version{Major: 3, Minor: 0, Patch: 5}
	p3, err := Build(cfg, resolved(t, cfg, nil), f3, nil)
	require.NoError(t, err)
	text, err := p3.Render(p3.Slots[0], p3.ExampleFDs(), "/run/ober/haproxy-0.g1.sock")
	require.NoError(t, err)
	golden(t, "bgp-haproxy3", text)

	// ober test probes the peers as configured, without graceful restart.
	probe, err := Speaker(cfg, facts().Addrs)
	require.NoError(t, err)
	require.Zero(t, probe.Peers[0].GracefulRestart)

	// Without an IPv4 address there is no router ID to default to.
	f := facts()
	f.Addrs = map[string][]netip.Addr{"eth1": {netip.MustParseAddr("2001:db8::11")}}
	_, err = Build(cfg, resolved(t, cfg, nil), f, nil)
	require.EqualError(t, err, "ha.bgp.router_id: not set, and node.interfaces have no IPv4 address to take it from")
}

func TestBuildVRRPMode(t *testing.T) {
	yaml := `
vips: [10.20.0.10, 10.20.0.11]
services: [{name: https, port: 443, mode: tls, tls: {self_signed: true}}]
ha:
  mode: vrrp
  vrrp:
    interface: eth1
    nodes: [192.0.2.11, 192.0.2.12, 192.0.2.13]
`
	cfg := parse(t, yaml)
	p, err := Build(cfg, resolved(t, cfg, nil), facts(), nil)
	require.NoError(t, err)
	require.NotNil(t, p.VRRP)
	require.Equal(t, netip.MustParseAddr("192.0.2.11"), p.VRRP.Self, "the node's address among ha.vrrp.nodes")
	require.Equal(t, []netip.Addr{netip.MustParseAddr("192.0.2.12"), netip.MustParseAddr("192.0.2.13")}, p.VRRP.Peers)
	require.Len(t, p.VRRP.Instances, 2, "one VRRP instance per VIP")
	require.Equal(t, []supervisor.Listener{{ID: 0, Family: 4}}, p.Listeners, "no MSS clamp: VRRP moves no flow between nodes")

	f := facts()
	f.Addrs["eth1"] = []netip.Addr{netip.MustParseAddr("192.0.2.99")}
	_, err = Build(cfg, resolved(t, cfg, nil), f, nil)
	require.EqualError(t, err, "ha.vrrp.self: none of ha.vrrp.nodes is an address of eth1 (it has 192.0.2.99); set ha.vrrp.self or add the address")
	f.Addrs["eth1"] = []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.12")}
	_, err = Build(cfg, resolved(t, cfg, nil), f, nil)
	require.EqualError(t, err, "ha.vrrp.self: eth1 holds several of ha.vrrp.nodes (192.0.2.11, 192.0.2.12); set ha.vrrp.self")
}

func TestBuildFitsMaxConnToTheDescriptorLimit(t *testing.T) {
	cfg := parse(t, `
vips: [10.20.0.10]
services: [{name: https, port: 443, mode: tls, tls: {self_signed: true}}]
`)
	cfg.Instances.MaxConn = 50000
	f := facts()
	f.FDLimit = 20000
	p, err := Build(cfg, resolved(t, cfg, nil), f, nil)
	require.NoError(t, err)
	require.Equal(t, 9899, p.MaxConn, "two descriptors a connection, one per listener and a reserve of 200")
	f.FDLimit = 1 << 20
	p, err = Build(cfg, resolved(t, cfg, nil), f, nil)
	require.NoError(t, err)
	require.Equal(t, 50000, p.MaxConn)
	require.Equal(t, fdReserve, MaxConnFor(100))
}

func TestBuildNeedsTheCertificate(t *testing.T) {
	cfg := parse(t, `
vips: [10.20.0.10]
services: [{name: https, port: 443, mode: tls, tls: {self_signed: true}}]
`)
	f := facts()
	delete(f.PEM, "https")
	_, err := Build(cfg, resolved(t, cfg, nil), f, nil)
	require.EqualError(t, err, `services[0].tls: no certificate read for "https"`)
}

// A reload keeps the IDs of listeners that stay and never reuses an ID
// the running generation still has, so no old service's connection can
// reach a new service's socket while the tables switch.
func TestListenerIDsAcrossPlans(t *testing.T) {
	svc := func(names ...string) string {
		var b strings.Builder
		b.WriteString("vips: [10.20.0.10]\nservices:\n")
		for i, n := range names {
			b.WriteString("  - {name: " + n + ", port: " + itoa(uint16(8000+i)) + ", mode: tls, tls: {self_signed: true}}\n")
		}
		return b.String()
	}
	f := facts()
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		f.PEM[n] = []byte(n)
	}
	ids := func(p *NodePlan) map[string]uint32 {
		out := map[string]uint32{}
		for k, id := range p.ListenerIDs {
			out[k.Service] = id
		}
		return out
	}
	c1 := parse(t, svc("a", "b", "c"))
	p1, err := Build(c1, resolved(t, c1, nil), f, nil)
	require.NoError(t, err)
	require.Equal(t, map[string]uint32{"a": 0, "b": 1, "c": 2}, ids(p1))

	// The ports change with the position, so keep each service's own.
	c2 := parse(t, "vips: [10.20.0.10]\nservices:\n"+
		"  - {name: a, port: 8000, mode: tls, tls: {self_signed: true}}\n"+
		"  - {name: c, port: 8002, mode: tls, tls: {self_signed: true}}\n"+
		"  - {name: d, port: 8003, mode: tls, tls: {self_signed: true}}\n")
	p2, err := Build(c2, resolved(t, c2, nil), f, p1)
	require.NoError(t, err)
	require.Equal(t, map[string]uint32{"a": 0, "c": 2, "d": 3}, ids(p2), "b's ID 1 is not reused while the running plan has it")

	c3 := parse(t, "vips: [10.20.0.10]\nservices:\n  - {name: e, port: 8004, mode: tls, tls: {self_signed: true}}\n")
	p3, err := Build(c3, resolved(t, c3, nil), f, p2)
	require.NoError(t, err)
	require.Equal(t, map[string]uint32{"e": 1}, ids(p3), "free again once no running plan uses it")
}

func TestDiff(t *testing.T) {
	yaml := `
vips: [10.20.0.10]
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
  - {name: http, port: 80, mode: http}
`
	cfg := parse(t, yaml)
	lists := map[string][]netip.Prefix{config.WhitelistFrontendHTTP: prefixes("192.0.2.0/24")}
	running, err := Build(cfg, resolved(t, cfg, lists), facts(), nil)
	require.NoError(t, err)

	all := Diff(nil, running)
	require.Equal(t, []string{"eth1"}, all.Attach)
	require.True(t, all.Tables && all.Steering && all.HAProxy)
	require.Len(t, all.Whitelists, 3, "every list is written on start")

	same, err := Build(parse(t, yaml), resolved(t, cfg, lists), facts(), running)
	require.NoError(t, err)
	require.True(t, Diff(running, same).None(), "nothing changes: %s", Diff(running, same))

	// Another list: that list, and HAProxy's file of it.
	lists2 := map[string][]netip.Prefix{config.WhitelistFrontendHTTP: prefixes("192.0.2.0/24", "198.51.100.0/24")}
	wl, err := Build(parse(t, yaml), resolved(t, cfg, lists2), facts(), running)
	require.NoError(t, err)
	d := Diff(running, wl)
	require.Equal(t, []loader.WhitelistID{loader.WhitelistFrontendHTTP}, d.Whitelists)
	require.True(t, d.HAProxy)
	require.False(t, d.Tables)
	require.Equal(t, "whitelist frontend-http, haproxy configuration", d.String())

	// Another interface and a service less.
	cfg2 := parse(t, strings.Replace(yaml, "  - {name: http, port: 80, mode: http}\n", "", 1))
	cfg2.Node.Interfaces = []string{"eth1", "eth2"}
	fewer, err := Build(cfg2, resolved(t, cfg2, lists), facts(), running)
	require.NoError(t, err)
	d = Diff(running, fewer)
	require.Equal(t, []string{"eth2"}, d.Attach)
	require.True(t, d.Tables)
	require.Empty(t, d.Whitelists)
}

func itoa(n uint16) string { return strconv.Itoa(int(n)) }

func ptr[T any](v T) *T { return &v }

// The instances load the ticket keys file while tickets are on and a
// service terminates TLS; with tickets off, or nothing to terminate, no
// file is named and the binds keep no-tls-tickets.
func TestBuildTicketKeys(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"on by default", `
vips: [10.20.0.10]
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
`, "/run/ober/tls/ticket-keys"},
		{"turned off", `
vips: [10.20.0.10]
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
tls: {session_tickets: {enabled: false}}
`, ""},
		{"no tls service", `
vips: [10.20.0.10]
services:
  - {name: http, port: 80, mode: http}
`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parse(t, tc.yaml)
			p, err := Build(cfg, resolved(t, cfg, nil), facts(), nil)
			require.NoError(t, err)
			require.Equal(t, tc.want, p.TicketKeys)
			text, err := p.Render(p.Slots[0], p.ExampleFDs(), "/run/ober/haproxy-0.g1.sock")
			require.NoError(t, err)
			if tc.want == "" {
				require.NotContains(t, string(text), "tls-ticket-keys")
			} else {
				require.Contains(t, string(text), "tls-ticket-keys "+tc.want)
			}
		})
	}
}

// TestHAProxyTune: haproxy.tune reaches every instance's global section,
// and unset keys render nothing.
func TestHAProxyTune(t *testing.T) {
	cfg := parse(t, `
vips: [10.20.0.10]
services: [{name: web, port: 80, mode: http}]
`)
	cfg.Instances.CPUs = []int{0, 1}
	cfg.HAProxy.Tune = config.HAProxyTune{BufSize: 65536, ServerRcvBuf: 4 << 20}
	res, err := cfg.Resolve(context.Background(), nil)
	require.NoError(t, err)
	p, err := Build(cfg, res, facts(), nil)
	require.NoError(t, err)
	require.Len(t, p.Slots, 2)
	for _, sl := range p.Slots {
		text, err := p.Render(sl, p.ExampleFDs(), "/plan.sock")
		require.NoError(t, err)
		require.Contains(t, string(text), "\n    tune.bufsize 65536\n")
		require.Contains(t, string(text), "\n    tune.rcvbuf.server 4194304\n")
		require.NotContains(t, string(text), "tune.ssl.maxrecord")
	}
}

// TestCertNotAfter: a TLS service's expiry is its chain's earliest, here
// the intermediate's, not the leaf's.
func TestCertNotAfter(t *testing.T) {
	leafEnd := time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)
	interEnd := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	var bundle []byte
	for i, end := range []time.Time{leafEnd, interEnd} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), NotBefore: end.AddDate(-1, 0, 0), NotAfter: end}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		require.NoError(t, err)
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	cfg := parse(t, `
vips: [10.20.0.10]
services: [{name: https, port: 443, mode: tls, tls: {self_signed: true}}]
`)
	res, err := cfg.Resolve(context.Background(), nil)
	require.NoError(t, err)
	f := facts()
	f.PEM = map[string][]byte{"https": bundle}
	p, err := Build(cfg, res, f, nil)
	require.NoError(t, err)
	require.Equal(t, map[string]time.Time{"https": interEnd}, p.CertNotAfter)
}
