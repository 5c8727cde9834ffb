package dnstest

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// site is a client namespace and a server namespace joined by a veth:
//
//	client c0 10.77.0.2  fd77::2  ---  s0 10.77.0.11 10.77.0.12 fd77::11 fd77::12 server
type site struct {
	client, server *netnstest.NS
}

func newSite(t *testing.T) site {
	t.Helper()
	s := site{client: netnstest.New(t, "dnsc"), server: netnstest.New(t, "dnss")}
	netnstest.Veth(t, s.client, "c0", s.server, "s0", 1)
	// nodad: an address under duplicate address detection can be
	// neither bound nor chosen as a source.
	s.client.IP(t, "addr", "add", "10.77.0.2/24", "dev", "c0")
	s.client.IP(t, "addr", "add", "fd77::2/64", "dev", "c0", "nodad")
	for _, a := range []string{"10.77.0.11/24", "10.77.0.12/24"} {
		s.server.IP(t, "addr", "add", a, "dev", "s0")
	}
	for _, a := range []string{"fd77::11/64", "fd77::12/64"} {
		s.server.IP(t, "addr", "add", a, "dev", "s0", "nodad")
	}
	return s
}

func ask(t *testing.T, ns *netnstest.NS, server netip.AddrPort, n, ports int, timeout time.Duration) Tally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tally, err := Ask(ctx, ns, server, n, ports, timeout)
	require.NoError(t, err)
	require.Equal(t, n, tally.Answered()+tally.Lost+tally.Errors, "every query counted once: %+v", tally)
	return tally
}

// requireAllFrom checks that backend answered all n queries, spread evenly
// over the source ports, each port by that backend only.
func requireAllFrom(t *testing.T, tally Tally, backend string, n, ports int) {
	t.Helper()
	require.Equal(t, map[string]int{backend: n}, tally.ByBackend, "lost %d, errors %d, first: %s", tally.Lost, tally.Errors, tally.FirstError)
	assert.Len(t, tally.PerPort, ports)
	assert.Empty(t, tally.MixedPorts())
	for port, backends := range tally.PerPort {
		assert.Equal(t, map[string]int{backend: n / ports}, backends, "source port %d", port)
	}
}

func TestTwoDnsmasqServers(t *testing.T) {
	for _, tc := range []struct {
		family string
		a, b   netip.Addr
	}{
		{"IPv4", netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.77.0.12")},
		{"IPv6", netip.MustParseAddr("fd77::11"), netip.MustParseAddr("fd77::12")},
	} {
		t.Run(tc.family, func(t *testing.T) {
			s := newSite(t)
			// Both on port 53 of one namespace: each binds its
			// own address only.
			a := StartDnsmasq(t, s.server, "a", netip.AddrPortFrom(tc.a, 53))
			b := StartDnsmasq(t, s.server, "b", netip.AddrPortFrom(tc.b, 53))

			for _, srv := range []*Server{a, b} {
				tally := ask(t, s.client, srv.Addr, 2000, 20, time.Second)
				requireAllFrom(t, tally, srv.Name, 2000, 20)
			}

			comm, err := os.ReadFile("/proc/" + strconv.Itoa(a.PID()) + "/comm")
			require.NoError(t, err)
			require.Equal(t, "dnsmasq", strings.TrimSpace(string(comm)), "PID is the server's own")
			a.Kill()
			a.Kill() // idempotent
			assert.ErrorIs(t, syscall.Kill(a.PID(), 0), syscall.ESRCH, "dnsmasq a still runs after Kill")

			dead := ask(t, s.client, a.Addr, 200, 20, 200*time.Millisecond)
			assert.Equal(t, 200, dead.Lost, "queries to the killed server: %+v", dead)
			assert.Zero(t, dead.Answered())
			assert.Zero(t, dead.Errors, dead.FirstError)

			alive := ask(t, s.client, b.Addr, 2000, 20, time.Second)
			requireAllFrom(t, alive, "b", 2000, 20)
		})
	}
}

// fakeServer answers on loopback, by query id modulo 4: rightly, from
// another port, with REFUSED, or not at all. Before each right answer it
// sends a stale one with another id, which Ask must skip.
func fakeServer(t *testing.T) netip.AddrPort {
	t.Helper()
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	rogue, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close(); rogue.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			size, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed at cleanup
			}
			var q dns.Msg
			if q.Unpack(buf[:size]) != nil {
				continue
			}
			r := new(dns.Msg).SetReply(&q)
			r.Answer = []dns.RR{&dns.TXT{
				Hdr: dns.RR_Header{Name: QName, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 0},
				Txt: []string{txtPrefix + "fake"},
			}}
			send := func(c *net.UDPConn, m *dns.Msg) {
				wire, err := m.Pack()
				if err == nil {
					_, _ = c.WriteToUDPAddrPort(wire, from)
				}
			}
			switch q.Id % 4 {
			case 0:
				stale := r.Copy()
				stale.Id = q.Id + 1000
				stale.Answer[0].(*dns.TXT).Txt = []string{txtPrefix + "stale"}
				send(srv, stale)
				send(srv, r)
			case 1:
				send(rogue, r)
			case 2:
				r.Rcode = dns.RcodeRefused
				r.Answer = nil
				send(srv, r)
			}
		}
	}()
	return srv.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestAskSortsAnswers(t *testing.T) {
	server := fakeServer(t)
	// Each of the 4 ports sends ids 0-9: 3 right, 3 from another port,
	// 2 refused, 2 unanswered.
	tally := ask(t, nil, server, 40, 4, 100*time.Millisecond)
	assert.Equal(t, map[string]int{"fake": 12}, tally.ByBackend)
	assert.Equal(t, 20, tally.Errors)
	assert.Equal(t, 8, tally.Lost)
	assert.NotEmpty(t, tally.FirstError)
	assert.Len(t, tally.PerPort, 4)
	for port, backends := range tally.PerPort {
		assert.Equal(t, map[string]int{"fake": 3}, backends, "source port %d", port)
	}
}

func TestAskEndsWithContext(t *testing.T) {
	server := fakeServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	// Query 3 goes unanswered; with an hour's timeout only ctx ends it.
	tally, err := Ask(ctx, nil, server, 8, 1, time.Hour)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, map[string]int{"fake": 1}, tally.ByBackend)
	assert.Equal(t, 2, tally.Errors)
	assert.Zero(t, tally.Lost, "the query cut short is not lost")
}

func TestAskRejectsBadArguments(t *testing.T) {
	server := netip.MustParseAddrPort("127.0.0.1:53")
	for _, tc := range []struct {
		name       string
		server     netip.AddrPort
		n, ports   int
		timeout    time.Duration
		wantInText string
	}{
		{"no queries", server, 0, 1, time.Second, "0 queries"},
		{"too many queries", server, MaxQueries + 1, 1, time.Second, "queries"},
		{"no ports", server, 10, 0, time.Second, "0 source ports"},
		{"more ports than queries", server, 10, 11, time.Second, "11 source ports"},
		{"no timeout", server, 10, 1, 0, "timeout"},
		{"no port", netip.MustParseAddrPort("127.0.0.1:0"), 10, 1, time.Second, "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Ask(context.Background(), nil, tc.server, tc.n, tc.ports, tc.timeout)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantInText)
		})
	}
}
