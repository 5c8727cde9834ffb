package haproxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// section is the text of the configuration's section that starts with
// the line header, up to the blank line that ends it.
func section(t *testing.T, cfg, header string) string {
	t.Helper()
	i := strings.Index(cfg, "\n"+header+"\n")
	require.GreaterOrEqual(t, i, 0, "no section %q in\n%s", header, cfg)
	s := cfg[i+1:]
	if j := strings.Index(s, "\n\n"); j >= 0 {
		s = s[:j+1]
	}
	return s
}

// sections lists the section headers (global, defaults, frontend x,
// backend y) in order.
func sections(cfg string) []string {
	var out []string
	for _, l := range strings.Split(cfg, "\n") {
		if l != "" && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func addr(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// tcpInstance is baseInstance with a tcp service on a port range beside
// the S3 ones: PROXY v2 to its servers, which take the client's port,
// in two priority tiers.
func tcpInstance() Instance {
	in := baseInstance()
	in.ConnsPerSource, in.RatePerSource = 10, 5
	in.Frontends = append(in.Frontends, Frontend{
		Name: "db", Mode: ModeTCP, Port: 7000, LastPort: 7010, Binds: []Bind{{FD: 6, Family: 4}},
		VIPs: []netip.Addr{netip.MustParseAddr("10.20.0.20")}, Pool: "db:default",
		MaxConn: 500, ClientTimeout: time.Hour,
	})
	in.Pools = append(in.Pools, Pool{
		Name: "db:default", Balance: BalanceWeighted, ConnectTimeout: 2 * time.Second, ServerTimeout: 10 * time.Minute,
		Servers: []Server{
			{Name: "a", Addr: addr("10.30.1.1:0"), Weight: 30, ProxyProtocol: ProxyV2},
			{Name: "b", Addr: addr("[2001:db8::2]:0"), Weight: 10, ProxyProtocol: ProxyV2, State: StateDrain},
			{Name: "c", Addr: addr("10.30.1.3:5432"), Weight: 100, Priority: 2, ProxyProtocol: ProxyV1},
			{Name: "d", Addr: addr("10.30.1.4:0"), Weight: 100, Priority: 7, State: StateMaint},
		},
	})
	return in
}

func TestRenderTCP(t *testing.T) {
	cfg := render(t, tcpInstance())
	require.Equal(t, `frontend db
    mode tcp
    option tcplog
    bind fd@6  # IPv4 port 7000-7010
    maxconn 500
    timeout client 1h
    tcp-request connection reject unless { dst 10.20.0.20 }
    stick-table type ipv6 size 40000 expire 10s store conn_cur,conn_rate(1s)
    tcp-request connection track-sc0 src
    tcp-request connection reject if { sc0_conn_cur gt 10 }
    tcp-request connection reject if { sc0_conn_rate gt 5 }
    use_backend db:default if { nbsrv(db:default) gt 0 }
    use_backend db:default:p2 if { nbsrv(db:default:p2) gt 0 }
    default_backend db:default:p7
`, section(t, cfg, "frontend db"))
	// Each tier is a backend with the pool's balance and timeouts; the
	// established connection's idle timeout is the larger side's.
	require.Equal(t, `backend db:default
    mode tcp
    balance roundrobin
    timeout connect 2s
    timeout server 10m
    timeout tunnel 1h
    server a 10.30.1.1 weight 30 send-proxy-v2
    server b [2001:db8::2] weight 10 disabled send-proxy-v2
`, section(t, cfg, "backend db:default"))
	require.Equal(t, `backend db:default:p2
    mode tcp
    balance roundrobin
    timeout connect 2s
    timeout server 10m
    timeout tunnel 1h
    server c 10.30.1.3:5432 weight 100 send-proxy
`, section(t, cfg, "backend db:default:p2"))
	require.True(t, strings.HasSuffix(cfg, `backend db:default:p7
    mode tcp
    balance roundrobin
    timeout connect 2s
    timeout server 10m
    timeout tunnel 1h
    server d 10.30.1.4 weight 100 disabled
`), cfg)
	require.Equal(t, []string{"global", "defaults", "frontend tls-443", "frontend http-80", "frontend db",
		"backend s3", "backend db:default", "backend db:default:p2", "backend db:default:p7"}, sections(cfg))
	// The S3 services are as before: no HTTP rules leak into tcp, no tcp
	// into them.
	require.NotContains(t, section(t, cfg, "frontend db"), "http-")
	require.NotContains(t, section(t, cfg, "frontend http-80"), "mode tcp")
	require.Equal(t, 2, strings.Count(cfg, "X-Forwarded-For"))
}

func TestRenderTiersWithoutTCP(t *testing.T) {
	// An S3 server of priority 2 adds a tier: the pool's first keeps the
	// name s3.
	in := baseInstance()
	in.Pools[0].Servers[3].Priority = 2
	in.Pools[0].Servers[4].Priority = 2
	cfg := render(t, in)
	fe := section(t, cfg, "frontend http-80")
	require.True(t, strings.HasSuffix(fe, `    http-response set-header X-Served-By node-a/2
    use_backend s3 if { nbsrv(s3) gt 0 }
    default_backend s3:p2
`), fe)
	require.Equal(t, `backend s3:p2
    balance leastconn
    server s3 192.0.2.13:443 weight 0 ssl verify none
    server s4 192.0.2.14:9000 weight 100 send-proxy-v2
`, cfg[strings.Index(cfg, "\nbackend s3:p2\n")+1:])
	require.Contains(t, section(t, cfg, "backend s3"), "server s2 ")
	require.NotContains(t, section(t, cfg, "backend s3"), "server s3 ")
}

func TestTierBackend(t *testing.T) {
	require.Equal(t, "s3", TierBackend("s3", 0))
	require.Equal(t, "s3", TierBackend("s3", 1))
	require.Equal(t, "s3:p2", TierBackend("s3", 2))
	require.Equal(t, "web:api:p10", TierBackend("web:api", 10))
}

func TestRenderRejectWhenDown(t *testing.T) {
	in := tcpInstance()
	for i := range in.Frontends {
		in.Frontends[i].RejectWhenDown = true
	}
	cfg := render(t, in)
	// At accept, before the TLS handshake; and for requests on a
	// connection already open.
	tls := section(t, cfg, "frontend tls-443")
	require.Contains(t, tls, "    tcp-request connection reject if { sc0_conn_cur gt 10 }\n    tcp-request connection reject if { sc0_conn_rate gt 5 }\n    tcp-request connection reject if { nbsrv(s3) eq 0 }\n    http-request reject if { nbsrv(s3) eq 0 }\n    http-request set-header X-Forwarded-Proto https\n")
	db := section(t, cfg, "frontend db")
	require.Contains(t, db, "    tcp-request connection reject if { nbsrv(db:default) eq 0 } { nbsrv(db:default:p2) eq 0 } { nbsrv(db:default:p7) eq 0 }\n    use_backend db:default if")
	require.NotContains(t, db, "http-request")
}

func TestRenderPassthrough(t *testing.T) {
	in := baseInstance()
	in.Frontends = append(in.Frontends, Frontend{
		Name: "tls-pt", Mode: ModeTCP, Port: 8443, Binds: []Bind{{FD: 7, Family: 4}, {FD: 8, Family: 6}},
		Pool: "pt:fallback",
		Passthrough: &Passthrough{InspectDelay: 5 * time.Second, Routes: []SNIRoute{
			{Names: []string{"a.example.com", "www.a.example.com"}, Pool: "pt:a"},
			{Regexp: `^api[0-9]+\.example\.(com|org)$`, Names: []string{"api.example.com"}, Pool: "pt:api"},
			{Regexp: `\.b\.example\.com$`, Pool: "pt:a"},
		}},
	})
	srv := func(name, a string, prio int) Server {
		return Server{Name: name, Addr: addr(a), Weight: 100, Priority: prio}
	}
	in.Pools = append(in.Pools,
		Pool{Name: "pt:a", Balance: BalanceLeastConn, Servers: []Server{srv("a1", "10.1.0.1:443", 1), srv("a2", "10.1.0.2:443", 2)}},
		Pool{Name: "pt:api", Balance: BalanceSource, Servers: []Server{srv("x", "10.2.0.1:443", 1)}},
		Pool{Name: "pt:fallback", Balance: BalanceFirst, Servers: []Server{srv("f", "10.3.0.1:443", 3)}},
	)
	cfg := render(t, in)
	require.Equal(t, `frontend tls-pt
    mode tcp
    option tcplog
    bind fd@7  # IPv4 port 8443
    bind fd@8  # IPv6 port 8443
    maxconn 20000
    acl sni0 req.ssl_sni -i a.example.com www.a.example.com
    acl sni1 req.ssl_sni -i api.example.com
    acl sni1 req.ssl_sni -i -m reg '^api[0-9]+\.example\.(com|org)$'
    acl sni2 req.ssl_sni -i -m reg '\.b\.example\.com$'
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    tcp-request content reject
    use_backend pt:a if sni0 { nbsrv(pt:a) gt 0 }
    use_backend pt:a:p2 if sni0
    use_backend pt:api if sni1
    use_backend pt:a if sni2 { nbsrv(pt:a) gt 0 }
    use_backend pt:a:p2 if sni2
    default_backend pt:fallback:p3
`, section(t, cfg, "frontend tls-pt"))
	require.Contains(t, cfg, "backend pt:api\n    mode tcp\n    balance source\n    server x 10.2.0.1:443 weight 100\n")
	require.Contains(t, cfg, "backend pt:fallback:p3\n    mode tcp\n    balance first\n")
	require.NotContains(t, cfg, "backend pt:fallback\n")

	// No default pool: what no route takes is refused, and with
	// RejectWhenDown so is what a route would send to a pool with no
	// usable server, each route in turn.
	fe := &in.Frontends[2]
	fe.Pool = ""
	fe.RejectWhenDown = true
	in.Pools = in.Pools[:3]
	got := section(t, render(t, in), "frontend tls-pt")
	want := `    tcp-request inspect-delay 5s
    tcp-request content reject unless sni0 || sni1 || sni2
    tcp-request content reject if sni0 { nbsrv(pt:a) eq 0 } { nbsrv(pt:a:p2) eq 0 }
    tcp-request content reject if !sni0 sni1 { nbsrv(pt:api) eq 0 }
    tcp-request content reject if !sni0 !sni1 sni2 { nbsrv(pt:a) eq 0 } { nbsrv(pt:a:p2) eq 0 }
    tcp-request content accept if { req.ssl_hello_type 1 }
    tcp-request content reject
    use_backend pt:a if sni0 { nbsrv(pt:a) gt 0 }
`
	require.Contains(t, got, want)
	require.True(t, strings.HasSuffix(got, "    use_backend pt:a:p2 if sni2\n"), got)
	require.NotContains(t, got, "default_backend")

	// A default pool with RejectWhenDown: refused when the default has
	// nobody either.
	fe.Pool = "pt:api"
	got = section(t, render(t, in), "frontend tls-pt")
	require.Contains(t, got, "    tcp-request content reject if !sni0 !sni1 !sni2 { nbsrv(pt:api) eq 0 }\n    tcp-request content accept")
	require.NotContains(t, got, "reject unless")
	require.True(t, strings.HasSuffix(got, "    default_backend pt:api\n"), got)
}

func TestRenderPassthroughErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		pt   Passthrough
		pool string
		want string
	}{
		{"nothing", Passthrough{InspectDelay: time.Second}, "", `frontend 2 ("pt"): TLS passthrough has neither routes nor a default pool`},
		{"no delay", Passthrough{Routes: []SNIRoute{{Names: []string{"a"}, Pool: "p"}}}, "", "inspect delay 0s: want 1ms"},
		{"empty route", Passthrough{InspectDelay: time.Second, Routes: []SNIRoute{{Pool: "p"}}}, "", "route 0: names or a regexp are required"},
		{"bad name", Passthrough{InspectDelay: time.Second, Routes: []SNIRoute{{Names: []string{"a b"}, Pool: "p"}}}, "", `route 0: "a b" is not a host name`},
		{"wildcard", Passthrough{InspectDelay: time.Second, Routes: []SNIRoute{{Names: []string{"*.a"}, Pool: "p"}}}, "", `"*.a" is not a host name`},
		{"bad regexp", Passthrough{InspectDelay: time.Second, Routes: []SNIRoute{{Regexp: "a(", Pool: "p"}}}, "", `route 0: regexp "a(": error parsing regexp`},
		{"quote", Passthrough{InspectDelay: time.Second, Routes: []SNIRoute{{Regexp: "a'b", Pool: "p"}}}, "", `regexp "a'b" has a quote or control character`},
		{"unknown pool", Passthrough{InspectDelay: time.Second, Routes: []SNIRoute{{Names: []string{"a"}, Pool: "q"}}}, "", `route 0's pool "q" is not a pool of the instance`},
		{"unknown default", Passthrough{InspectDelay: time.Second, Routes: []SNIRoute{{Names: []string{"a"}, Pool: "p"}}}, "q", `default pool "q" is not a pool`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInstance()
			pt := tc.pt
			in.Frontends = append(in.Frontends, Frontend{Name: "pt", Mode: ModeTCP, Port: 443, Binds: []Bind{{FD: 9, Family: 4}},
				Pool: tc.pool, Passthrough: &pt})
			in.Pools = append(in.Pools, Pool{Name: "p", Balance: BalanceLeastConn, Servers: []Server{{Name: "a", Addr: addr("10.0.0.1:443"), Weight: 1}}})
			_, err := Render(in)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestRenderBalance(t *testing.T) {
	for balance, want := range map[string]string{
		BalanceRoundRobin:     "    balance roundrobin\n    server",
		BalanceWeighted:       "    balance roundrobin\n    server",
		BalanceLeastBandwidth: "    balance roundrobin\n    server",
		BalanceLeastConn:      "    balance leastconn\n    server",
		BalanceSource:         "    balance source\n    server",
		BalanceConsistent:     "    balance source\n    hash-type consistent\n    server",
		BalanceRandom:         "    balance random(2)\n    server",
		BalanceFirst:          "    balance first\n    server",
	} {
		in := baseInstance()
		in.Pools[0].Balance = balance
		cfg := render(t, in)
		require.Contains(t, section(t, cfg, "backend s3"), "backend s3\n"+want, balance)
		// Weights are rendered as given whatever the method: the caller
		// makes a roundrobin pool's equal.
		require.Contains(t, cfg, "server s1 [2001:db8::1]:9000 weight 50\n", balance)
	}
}

func TestRenderServerStateAndOptions(t *testing.T) {
	in := baseInstance()
	ss := in.Pools[0].Servers
	ss[0].State = StateReady
	ss[1].State = StateDrain
	ss[2].State = StateMaint
	ss[4].ProxyProtocol = ProxyV1
	in.Frontends[0].MaxConn = 300
	in.Frontends[1].ClientTimeout = 10 * time.Minute
	cfg := render(t, in)
	ls := lines(cfg)
	require.Contains(t, ls, "server s0 192.0.2.10:9000 weight 100")
	// A new instance has nothing to drain: drain starts as maint does.
	require.Contains(t, ls, "server s1 [2001:db8::1]:9000 weight 50 disabled")
	require.Contains(t, ls, "server s2 192.0.2.12:443 weight 100 disabled ssl verify required ca-file /etc/ober/ca.pem verifyhost s3.internal sni str(s3.internal)")
	require.Contains(t, ls, "server s4 192.0.2.14:9000 weight 100 send-proxy")
	require.Contains(t, section(t, cfg, "frontend tls-443"), "    maxconn 300\n")
	require.Contains(t, section(t, cfg, "frontend http-80"), "    maxconn 20000\n    timeout client 10m\n")
	// The http frontend's client timeout outlasts the server's: the
	// pool's tunnel timeout follows it.
	require.Contains(t, section(t, cfg, "backend s3"), "    balance leastconn\n    timeout tunnel 10m\n")
}

func TestRenderTunnelTimeout(t *testing.T) {
	for _, tc := range []struct {
		name           string
		client, server time.Duration
		alone          bool // the tls frontend is the pool's only user
		want           string
	}{
		{"none", 0, 0, false, ""},
		{"client longer", time.Hour, 0, false, "timeout tunnel 1h"},
		{"server longer", 0, 2 * time.Hour, false, "timeout tunnel 2h"},
		// The http frontend keeps the default client timeout, 30s.
		{"shared", 10 * time.Second, 20 * time.Second, false, ""},
		{"alone", 10 * time.Second, 20 * time.Second, true, "timeout tunnel 20s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInstance()
			in.Timeouts.Client = 30 * time.Second // the defaults' tunnel
			if tc.alone {
				in.Frontends = in.Frontends[:1]
			}
			in.Frontends[0].ClientTimeout = tc.client
			in.Pools[0].ServerTimeout = tc.server
			be := section(t, render(t, in), "backend s3")
			if tc.want == "" {
				require.NotContains(t, be, "timeout tunnel")
			} else {
				require.Contains(t, be, "    "+tc.want+"\n")
			}
		})
	}
}
