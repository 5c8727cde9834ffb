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
