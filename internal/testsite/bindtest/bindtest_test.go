package bindtest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

const zone = "rgw.test."

// site is a client namespace joined to the DNS server's by a veth:
//
//	client c0 10.78.0.2  fd78::2  ---  d0 10.78.0.53 fd78::53 named
type site struct {
	client, server *netnstest.NS
}

var (
	v4Server = netip.MustParseAddr("10.78.0.53")
	v6Server = netip.MustParseAddr("fd78::53")
)

func newSite(t *testing.T) site {
	t.Helper()
	s := site{client: netnstest.New(t, "bindc"), server: netnstest.New(t, "binds")}
	netnstest.Veth(t, s.client, "c0", s.server, "d0", 1)
	s.client.IP(t, "addr", "add", "10.78.0.2/24", "dev", "c0")
	s.server.IP(t, "addr", "add", v4Server.String()+"/24", "dev", "d0")
	// nodad: an address under duplicate address detection can be
	// neither bound nor chosen as a source.
	s.client.IP(t, "addr", "add", "fd78::2/64", "dev", "c0", "nodad")
	s.server.IP(t, "addr", "add", v6Server.String()+"/64", "dev", "d0", "nodad")
	return s
}

// threeRGWs is three RGW-like backends: two at priority 10, one spare at 20.
func threeRGWs() []Record {
	return []Record{
		SRV("_s3._tcp", 10, 60, 8080, "rgw1"),
		SRV("_s3._tcp", 10, 40, 8080, "rgw2"),
		SRV("_s3._tcp", 20, 100, 8081, "rgw3"),
		A("rgw1", netip.MustParseAddr("10.78.1.1")),
		A("rgw2", netip.MustParseAddr("10.78.1.2")),
		A("rgw3", netip.MustParseAddr("10.78.1.3")),
	}
}

// ask queries server from ns and fails the test unless it answers.
func ask(t *testing.T, ns *netnstest.NS, server netip.AddrPort, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m, err := query(context.Background(), ns, server, name, qtype)
	require.NoError(t, err, "query %s %s at %s", name, dns.TypeToString[qtype], server)
	require.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[m.Rcode], "query %s %s", name, dns.TypeToString[qtype])
	require.True(t, m.Authoritative, "answer to %s %s is authoritative", name, dns.TypeToString[qtype])
	return m
}

// srvs is the SRV records of name as "priority weight port target", sorted.
func srvs(t *testing.T, ns *netnstest.NS, server netip.AddrPort, name string) []string {
	t.Helper()
	var got []string
	for _, rr := range ask(t, ns, server, name, dns.TypeSRV).Answer {
		srv, ok := rr.(*dns.SRV)
		require.True(t, ok, "answer to SRV %s holds %s", name, rr)
		assert.EqualValues(t, TTL, srv.Hdr.Ttl, "TTL of %s", rr)
		got = append(got, fmt.Sprintf("%d %d %d %s", srv.Priority, srv.Weight, srv.Port, srv.Target))
	}
	slices.Sort(got)
	return got
}

// addrs is the A or AAAA records of name, sorted.
func addrs(t *testing.T, ns *netnstest.NS, server netip.AddrPort, name string, qtype uint16) []string {
	t.Helper()
	var got []string
	for _, rr := range ask(t, ns, server, name, qtype).Answer {
		switch rr := rr.(type) {
		case *dns.A:
			got = append(got, rr.A.String())
		case *dns.AAAA:
			got = append(got, rr.AAAA.String())
		default:
			t.Fatalf("answer to %s %s holds %s", name, dns.TypeToString[qtype], rr)
		}
	}
	slices.Sort(got)
	return got
}

func TestServesZone(t *testing.T) {
	site := newSite(t)
	s := Start(t, site.server, v4Server, zone, threeRGWs())
	require.Equal(t, netip.AddrPortFrom(v4Server, 53), s.Addr())

	assert.Equal(t, []string{
		"10 40 8080 rgw2.rgw.test.",
		"10 60 8080 rgw1.rgw.test.",
		"20 100 8081 rgw3.rgw.test.",
	}, srvs(t, site.client, s.Addr(), "_s3._tcp."+zone))
	for i, host := range []string{"rgw1", "rgw2", "rgw3"} {
		assert.Equal(t, []string{fmt.Sprintf("10.78.1.%d", i+1)}, addrs(t, site.client, s.Addr(), host+"."+zone, dns.TypeA), host)
	}
	// The targets' addresses come along in the additional section, as an
	// SRV client that saves the extra lookups expects (next to the name
	// server's, which comes with the authority section).
	var extra []string
	for _, rr := range ask(t, site.client, s.Addr(), "_s3._tcp."+zone, dns.TypeSRV).Extra {
		if a, ok := rr.(*dns.A); ok && a.Hdr.Name != "ns."+zone {
			extra = append(extra, a.Hdr.Name+" "+a.A.String())
		}
	}
	slices.Sort(extra)
	assert.Equal(t, []string{"rgw1.rgw.test. 10.78.1.1", "rgw2.rgw.test. 10.78.1.2", "rgw3.rgw.test. 10.78.1.3"}, extra)

	// TCP too: a client falls back to it for a truncated answer.
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion("_s3._tcp."+zone, dns.TypeSRV)
	var m *dns.Msg
	require.NoError(t, site.client.Do(func() error {
		var err error
		m, _, err = c.Exchange(q, s.Addr().String())
		return err
	}))
	assert.Len(t, m.Answer, 3, "SRV over TCP")

	m, err := query(context.Background(), site.client, s.Addr(), "rgw9."+zone, dns.TypeA)
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeToString[dns.RcodeNameError], dns.RcodeToString[m.Rcode], "a name the zone lacks")
}

func TestServesZoneOnIPv6(t *testing.T) {
	site := newSite(t)
	s := Start(t, site.server, v6Server, zone, []Record{
		SRV("_s3._tcp", 10, 50, 8080, "rgw1"),
		AAAA("rgw1", netip.MustParseAddr("fd78:1::1")),
	})
	require.Equal(t, netip.AddrPortFrom(v6Server, 53), s.Addr())
	assert.Equal(t, []string{"10 50 8080 rgw1.rgw.test."}, srvs(t, site.client, s.Addr(), "_s3._tcp."+zone))
	assert.Equal(t, []string{"fd78:1::1"}, addrs(t, site.client, s.Addr(), "rgw1."+zone, dns.TypeAAAA))
}

func TestUpdate(t *testing.T) {
	site := newSite(t)
	s := Start(t, site.server, v4Server, zone, threeRGWs())
	name := "_s3._tcp." + zone

	// A backend joins, another leaves, in one transaction.
	s.Update(t,
		[]Record{SRV("_s3._tcp", 10, 50, 8080, "rgw4"), A("rgw4", netip.MustParseAddr("10.78.1.4"))},
		[]Record{SRV("_s3._tcp", 10, 40, 8080, "rgw2"), A("rgw2", netip.MustParseAddr("10.78.1.2"))})
	assert.Equal(t, []string{
		"10 50 8080 rgw4.rgw.test.",
		"10 60 8080 rgw1.rgw.test.",
		"20 100 8081 rgw3.rgw.test.",
	}, srvs(t, site.client, s.Addr(), name))
	assert.Equal(t, []string{"10.78.1.4"}, addrs(t, site.client, s.Addr(), "rgw4."+zone, dns.TypeA))
	m, err := query(context.Background(), site.client, s.Addr(), "rgw2."+zone, dns.TypeA)
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeToString[dns.RcodeNameError], dns.RcodeToString[m.Rcode], "rgw2's address is gone")

	// The spare becomes the first choice: a priority change is a delete
	// and an add.
	s.Update(t,
		[]Record{SRV("_s3._tcp", 5, 100, 8081, "rgw3")},
		[]Record{SRV("_s3._tcp", 20, 100, 8081, "rgw3")})
	assert.Equal(t, []string{
		"10 50 8080 rgw4.rgw.test.",
		"10 60 8080 rgw1.rgw.test.",
		"5 100 8081 rgw3.rgw.test.",
	}, srvs(t, site.client, s.Addr(), name))

	// Absolute names work as well as relative ones.
	s.Update(t, nil, []Record{SRV("_s3._tcp.rgw.test.", 10, 60, 8080, "rgw1.rgw.test.")})
	assert.Equal(t, []string{
		"10 50 8080 rgw4.rgw.test.",
		"5 100 8081 rgw3.rgw.test.",
	}, srvs(t, site.client, s.Addr(), name))
}

func TestUpdateNeedsTheKey(t *testing.T) {
	site := newSite(t)
	s := Start(t, site.server, v4Server, zone, threeRGWs())
	want := srvs(t, site.client, s.Addr(), "_s3._tcp."+zone)
	script := "update add _s3._tcp." + zone + " 1 IN SRV 1 1 9999 evil." + zone + "\n"

	// The right key name with another secret, another key name, and no
	// key at all: named must refuse each.
	dir := t.TempDir()
	for _, tc := range []struct{ name, key string }{
		{"wrong secret", `key "bindtest-update" { algorithm hmac-sha256; secret "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="; };`},
		{"other key", `key "intruder" { algorithm hmac-sha256; secret "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="; };`},
		{"unsigned", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keyFile := ""
			if tc.key != "" {
				keyFile = filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".key")
				require.NoError(t, os.WriteFile(keyFile, []byte(tc.key+"\n"), 0o600))
			}
			ctx, cancel := context.WithTimeout(context.Background(), updateTimeout)
			defer cancel()
			out, err := s.nsupdate(ctx, keyFile, script)
			require.Error(t, err, "nsupdate said:\n%s", out)
			t.Logf("refused as expected: %s", strings.TrimSpace(out))
			assert.Equal(t, want, srvs(t, site.client, s.Addr(), "_s3._tcp."+zone), "records unchanged")
		})
	}

	// The same update with the fixture's key goes through, so the refusals
	// above were for the key and not for the update.
	ctx, cancel := context.WithTimeout(context.Background(), updateTimeout)
	defer cancel()
	out, err := s.nsupdate(ctx, s.KeyFile(), script)
	require.NoError(t, err, "nsupdate said:\n%s", out)
	assert.Contains(t, srvs(t, site.client, s.Addr(), "_s3._tcp."+zone), "1 1 9999 evil.rgw.test.")
}

func TestStopAndRestart(t *testing.T) {
	site := newSite(t)
	s := Start(t, site.server, v4Server, zone, threeRGWs())
	name := "_s3._tcp." + zone
	s.Update(t,
		[]Record{SRV("_s3._tcp", 10, 50, 8080, "rgw4"), A("rgw4", netip.MustParseAddr("10.78.1.4"))},
		[]Record{SRV("_s3._tcp", 20, 100, 8081, "rgw3")})
	want := []string{
		"10 40 8080 rgw2.rgw.test.",
		"10 50 8080 rgw4.rgw.test.",
		"10 60 8080 rgw1.rgw.test.",
	}
	require.Equal(t, want, srvs(t, site.client, s.Addr(), name))

	s.Stop(t)
	_, err := query(context.Background(), site.client, s.Addr(), name, dns.TypeSRV)
	require.Error(t, err, "a query to the stopped server gets no answer")
	t.Logf("query to the stopped server: %v", err)
	s.Stop(t) // stopping twice is harmless

	// named comes back with the updates it had taken (its journal), not
	// with the zone file it started from.
	s.Restart(t)
	assert.Equal(t, want, srvs(t, site.client, s.Addr(), name))
	assert.Equal(t, []string{"10.78.1.4"}, addrs(t, site.client, s.Addr(), "rgw4."+zone, dns.TypeA))

	// And it takes updates again.
	s.Update(t, []Record{SRV("_s3._tcp", 20, 100, 8081, "rgw3")}, nil)
	assert.Equal(t, append(want, "20 100 8081 rgw3.rgw.test."), srvs(t, site.client, s.Addr(), name))

	// Restart of a running server is a stop and a start.
	s.Restart(t)
	assert.Equal(t, append(want, "20 100 8081 rgw3.rgw.test."), srvs(t, site.client, s.Addr(), name))
}

func TestBadRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Record
		want string
	}{
		{"outside the zone", SRV("_s3._tcp.other.test.", 1, 1, 80, "rgw1"), "outside zone"},
		{"IPv6 in A", A("rgw1", netip.MustParseAddr("fd78::1")), "needs an IPv4"},
		{"IPv4 in AAAA", AAAA("rgw1", netip.MustParseAddr("10.0.0.1")), "needs an IPv6"},
		{"space in name", A("rgw 1", netip.MustParseAddr("10.0.0.1")), "spaces"},
		{"empty target", SRV("_s3._tcp", 1, 1, 80, ""), "empty name"},
		{"TXT", Record{Name: "x", Type: dns.TypeTXT}, "only SRV, A and AAAA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.r.RR(zone)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
