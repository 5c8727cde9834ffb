package config

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeResolver answers from a table; other names are not found. It
// records whether every lookup had a deadline.
type fakeResolver struct {
	mu          sync.Mutex
	hosts       map[string][]string
	lookups     []string
	noDeadline  bool
	wrongFamily bool
}

func (f *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups = append(f.lookups, host)
	if _, ok := ctx.Deadline(); !ok {
		f.noDeadline = true
	}
	if network != "ip" {
		f.wrongFamily = true
	}
	addrs, ok := f.hosts[host]
	if !ok && strings.HasSuffix(host, ".hpc.example") {
		n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSuffix(host, ".hpc.example"), "compute"))
		if err == nil {
			addrs, ok = []string{"10.50.0." + strconv.Itoa(n)}, true
		}
	}
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestResolveExample(t *testing.T) {
	c := exampleConfig(t)
	r := &fakeResolver{hosts: map[string][]string{
		// IPv6 first and a mapped IPv4: the smallest IPv4 must win.
		"rgw1.storage.example": {"fd00:30::11", "::ffff:10.30.0.21", "10.30.0.11"},
		"rgw2.storage.example": {"fd00:30::12"},
	}}
	res, err := c.Resolve(context.Background(), r)
	require.NoError(t, err)
	require.False(t, r.noDeadline, "Resolve gives lookups a deadline")
	require.False(t, r.wrongFamily)

	require.Len(t, res.Backends, 3)
	require.Equal(t, c.Backends.Servers[0], res.Backends[0].BackendServer)
	require.Equal(t, netip.MustParseAddrPort("10.30.0.11:7480"), res.Backends[0].Addr)
	require.Equal(t, netip.MustParseAddrPort("[fd00:30::12]:7480"), res.Backends[1].Addr)
	require.Equal(t, netip.MustParseAddrPort("10.30.0.13:7480"), res.Backends[2].Addr)
	require.Equal(t, "rgw3", res.Backends[2].Name)

	front := res.Whitelists[WhitelistFrontendHTTP]
	// 64 compute nodes and one /22, sorted by Normalize.
	require.Len(t, front, 65)
	require.Equal(t, netip.MustParsePrefix("10.40.0.0/22"), front[0])
	require.Equal(t, netip.MustParsePrefix("10.50.0.1/32"), front[1])
	require.Equal(t, netip.MustParsePrefix("10.50.0.64/32"), front[64])
	require.Equal(t, pfx("10.20.0.1/32", "10.20.0.2/32"), res.Whitelists[WhitelistRouters])
	require.NotNil(t, res.Whitelists[WhitelistBackendHTTP])
	require.Empty(t, res.Whitelists[WhitelistBackendHTTP])
	require.Len(t, res.Whitelists, 3)
}

func TestResolveNormalizes(t *testing.T) {
	c := baseConfig()
	c.Whitelists.Routers = []string{"10.0.0.0/8", "10.1.2.3", "gw.example.com", "10.0.0.0/8"}
	r := &fakeResolver{hosts: map[string][]string{
		"rgw1.example.com": {"10.1.0.1"},
		"gw.example.com":   {"fd00::9", "192.0.2.1"},
	}}
	res, err := c.Resolve(context.Background(), r)
	require.NoError(t, err)
	require.Equal(t, pfx("10.0.0.0/8", "192.0.2.1/32", "fd00::9/128"), res.Whitelists[WhitelistRouters])
}

func TestResolveErrors(t *testing.T) {
	c := baseConfig()
	c.Backends.Servers = append(c.Backends.Servers,
		BackendServer{Name: "rgw9", Address: "rgw9.invalid:7480"},
		BackendServer{Name: "empty", Address: "empty.example.com:7480"})
	c.Whitelists.FrontendHTTP = []string{"10.0.0.0/8", "login.invalid"}
	c.Whitelists.BackendHTTP = []string{"node[1-2].invalid"}
	r := &fakeResolver{hosts: map[string][]string{
		"rgw1.example.com":  {"10.1.0.1"},
		"empty.example.com": {},
	}}
	res, err := c.Resolve(context.Background(), r)
	require.Nil(t, res)
	require.EqualError(t, err, ""+
		`backends.servers[2].address: "rgw9.invalid:7480": does not resolve: lookup rgw9.invalid: no such host`+"\n"+
		`backends.servers[3].address: "empty.example.com:7480": does not resolve: no addresses`+"\n"+
		`whitelists.frontend_http[1]: "login.invalid": does not resolve: lookup login.invalid: no such host`+"\n"+
		`whitelists.backend_http[0]: "node[1-2].invalid": "node1.invalid" does not resolve: lookup node1.invalid: no such host`+"\n"+
		`whitelists.backend_http[0]: "node[1-2].invalid": "node2.invalid" does not resolve: lookup node2.invalid: no such host`)
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "backends.servers[2].address", fe.Path)
}

func TestResolveInvalidEntries(t *testing.T) {
	c := baseConfig()
	c.Backends.Servers[1].Address = "rgw_2:7480"
	c.Whitelists.Routers = []string{"10.0.0.0/33"}
	_, err := c.Resolve(context.Background(), &fakeResolver{hosts: map[string][]string{"rgw1.example.com": {"10.1.0.1"}}})
	require.EqualError(t, err, ""+
		`backends.servers[1].address: "rgw_2:7480": invalid host name: label "rgw_2" contains invalid character '_'`+"\n"+
		`whitelists.routers[0]: "10.0.0.0/33": invalid CIDR: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`)
}

// blockingResolver waits for the context to end.
type blockingResolver struct{}

func (blockingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestResolveContextEnds(t *testing.T) {
	c := baseConfig()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.Resolve(ctx, blockingResolver{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var fe *FieldError
	require.False(t, errors.As(err, &fe), "a timeout is not a problem of the file")
}

func TestResolvePools(t *testing.T) {
	c := servicesConfig()
	c.Services[4].Backends = append(c.Services[4].Backends, BackendServer{Address: "db2.example.com:8080"})
	c.Whitelists.FrontendHTTP = []string{"10.40.0.0/22", "login.example.com"}
	c.ApplyDefaults()
	require.NoError(t, c.Validate())
	r := &fakeResolver{hosts: map[string][]string{
		"rgw1.example.com":  {"10.1.0.1"},
		"db2.example.com":   {"fd00:2::2", "10.2.0.2"},
		"web2.example.com":  {"10.5.0.2"},
		"login.example.com": {"10.40.9.9"},
	}}
	res, err := c.Resolve(context.Background(), r)
	require.NoError(t, err)

	addrs := func(ref PoolRef) []string {
		var out []string
		for _, s := range res.Pools[ref] {
			out = append(out, s.Name+"="+s.Addr.String())
		}
		return out
	}
	require.Equal(t, []string{"s0=10.1.0.1:7480", "s1=10.1.0.2:7480"}, addrs(PoolRef{"https", DefaultPool}))
	require.Equal(t, res.Backends, res.Pools[PoolRef{"https", DefaultPool}])
	require.Equal(t, []string{"s0=10.2.0.1:5432", "s1=10.2.0.2:5432"}, addrs(PoolRef{"db", DefaultPool}))
	require.Equal(t, []string{"s0=10.3.0.1:0", "s1=10.3.0.2:7000"}, addrs(PoolRef{"games", DefaultPool}),
		"a range's backend without a port keeps port 0: the client's")
	require.Equal(t, []string{"s0=10.4.0.1:443"}, addrs(PoolRef{"sni", "s3"}))
	require.Equal(t, []string{"s0=10.4.0.2:443"}, addrs(PoolRef{"sni", "web"}))
	require.Equal(t, []string{"s0=10.5.0.1:80", "s1=10.5.0.2:443", "s2=10.2.0.2:8080"}, addrs(PoolRef{"web", DefaultPool}))
	require.Len(t, res.Pools, 7)
	require.Equal(t, 2, res.Pools[PoolRef{"db", DefaultPool}][1].Priority)

	n := 0
	for _, h := range r.lookups {
		if h == "db2.example.com" {
			n++
		}
	}
	require.Equal(t, 1, n, "a name in two pools is looked up once")

	require.Equal(t, map[string]ResolvedAccess{"db": {
		DefaultAllow: false,
		Rules: []ResolvedAccessRule{
			{Allow: false, Prefixes: pfx("10.9.0.0/16"), Rule: "deny 10.9.0.0/16"},
			{Allow: true, Prefixes: pfx("10.0.0.0/8"), Rule: "allow 10.0.0.0/8"},
			{Allow: true, Prefixes: pfx("10.40.0.0/22", "10.40.9.9/32"), Rule: "allow frontend-http"},
		},
	}}, res.Access)
}

func TestResolvePoolErrors(t *testing.T) {
	c := servicesConfig()
	c.Services[3].Pools[1].Backends[0].Address = "us.invalid:443"
	c.ApplyDefaults()
	r := &fakeResolver{hosts: map[string][]string{"rgw1.example.com": {"10.1.0.1"}, "web2.example.com": {"10.5.0.2"}}}
	res, err := c.Resolve(context.Background(), r)
	require.Nil(t, res)
	require.EqualError(t, err, ""+
		`services[1].backends[1].address: "db2.example.com:5432": does not resolve: lookup db2.example.com: no such host`+"\n"+
		`services[3].pools[1].backends[0].address: "us.invalid:443": does not resolve: lookup us.invalid: no such host`)
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "services[1].backends[1].address", fe.Path)
}
