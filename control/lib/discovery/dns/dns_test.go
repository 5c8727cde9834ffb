package dns

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// zone is an in-process DNS server's data: it answers from its records,
// with NXDOMAIN for a name it has no record of, and notes every query.
type zone struct {
	records []mdns.RR
	// glue puts the A and AAAA records of an SRV answer's targets in
	// its additional section.
	glue bool
	// extra, when set, is the additional section of every SRV answer
	// instead of glue.
	extra []mdns.RR
	// truncateUDP answers every query over udp with an empty,
	// truncated answer.
	truncateUDP bool

	mu      sync.Mutex
	queries []string
}

func newZone(t *testing.T, rrs ...string) *zone {
	t.Helper()
	z := &zone{}
	for _, s := range rrs {
		rr, err := mdns.NewRR(s)
		require.NoError(t, err, s)
		z.records = append(z.records, rr)
	}
	return z
}

func (z *zone) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	q := r.Question[0]
	proto := w.RemoteAddr().Network()
	z.mu.Lock()
	z.queries = append(z.queries, fmt.Sprintf("%s %s %s", proto, mdns.TypeToString[q.Qtype], strings.ToLower(q.Name)))
	z.mu.Unlock()
	m := new(mdns.Msg)
	m.SetReply(r)
	if z.truncateUDP && proto == "udp" {
		m.Truncated = true
		_ = w.WriteMsg(m)
		return
	}
	exists := false
	for _, rr := range z.records {
		if !strings.EqualFold(rr.Header().Name, q.Name) {
			continue
		}
		exists = true
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, rr)
		}
	}
	if !exists {
		m.Rcode = mdns.RcodeNameError
	}
	if q.Qtype == mdns.TypeSRV {
		switch {
		case z.extra != nil:
			m.Extra = z.extra
		case z.glue:
			for _, a := range m.Answer {
				for _, rr := range z.records {
					t := rr.Header().Rrtype
					if (t == mdns.TypeA || t == mdns.TypeAAAA) && strings.EqualFold(rr.Header().Name, a.(*mdns.SRV).Target) {
						m.Extra = append(m.Extra, rr)
					}
				}
			}
		}
	}
	_ = w.WriteMsg(m)
}

// asked is the queries the zone had, "proto TYPE name".
func (z *zone) asked() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Clone(z.queries)
}

// serve starts h on udp and tcp at the same port of addr (port 0: any),
// both stopped at cleanup.
func serve(t *testing.T, addr string, h mdns.Handler) netip.AddrPort {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	var err error
	for range 20 {
		pc, err = net.ListenPacket("udp", addr)
		require.NoError(t, err, "listen on udp at %s (does a DNS server of the machine listen on every address?)", addr)
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	require.NoError(t, err, "listen on tcp at the udp socket's port")
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func fetchSRV(t *testing.T, opts SRVOptions) (discovery.Result, error) {
	t.Helper()
	s, err := NewSRV(opts)
	require.NoError(t, err)
	return s.Fetch(context.Background())
}

func be(host string, port uint16, weight, prio int) discovery.Backend {
	return discovery.Backend{Host: host, Port: port, Weight: weight, Priority: prio}
}

func TestScaleWeight(t *testing.T) {
	for _, c := range []struct {
		w, largest uint16
		want       int
	}{
		{65535, 65535, 256},
		{1, 1, 256},
		{0, 0, 256},    // all of the priority are 0: all equal
		{0, 10, 1},     // 0 next to others: rarely, but in rotation
		{1, 65535, 1},  // never rounded down to 0
		{10, 30, 85},   // 85.3
		{20, 30, 171},  // 170.7
		{50, 100, 128}, // exactly half
		{1, 2, 128},    // exactly half
		{32768, 65535, 128},
	} {
		assert.Equal(t, c.want, scaleWeight(c.w, c.largest), "weight %d of largest %d", c.w, c.largest)
	}
}

func TestSRVPrioritiesAndWeights(t *testing.T) {
	z := newZone(t,
		// Priority 10: weights relative to 30.
		"_s3._tcp.rgw.example. 60 IN SRV 10 10 7480 a.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 10 20 7480 b.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 10 30 7481 c.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 10 0 7480 d.rgw.example.",
		// Priority 0 is the best there is, whatever its weights.
		"_s3._tcp.rgw.example. 60 IN SRV 0 65535 80 e.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 0 1 80 f.rgw.example.",
		// Priority 65535: every weight 0, all equal.
		"_s3._tcp.rgw.example. 60 IN SRV 65535 0 8080 g.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 65535 0 8080 h.rgw.example.",
		"a.rgw.example. 60 IN A 10.0.0.1",
		"b.rgw.example. 60 IN A 10.0.0.2",
		"c.rgw.example. 60 IN A 10.0.0.3",
		"c.rgw.example. 60 IN A 10.0.0.4",
		"d.rgw.example. 60 IN A 10.0.0.5",
		"e.rgw.example. 60 IN A 10.0.1.1",
		"f.rgw.example. 60 IN A 10.0.1.2",
		"g.rgw.example. 60 IN A 10.0.2.1",
		"h.rgw.example. 60 IN A 10.0.2.2",
	)
	z.glue = true
	srv := serve(t, "127.0.0.1:0", z)
	res, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: srv})
	require.NoError(t, err)
	assert.Empty(t, res.Problems)
	assert.Equal(t, []discovery.Backend{
		be("10.0.1.1", 80, 256, 1),
		be("10.0.1.2", 80, 1, 1),
		be("10.0.0.1", 7480, 85, 2),
		be("10.0.0.2", 7480, 171, 2),
		be("10.0.0.3", 7481, 256, 2), // each address of a target has its weight
		be("10.0.0.4", 7481, 256, 2),
		be("10.0.0.5", 7480, 1, 2),
		be("10.0.2.1", 8080, 256, 3),
		be("10.0.2.2", 8080, 256, 3),
	}, res.Backends)
}

func TestSRVAdditionalSectionOrLookups(t *testing.T) {
	rrs := []string{
		"_s3._tcp.rgw.example. 60 IN SRV 1 1 7480 a.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 1 1 7480 b.rgw.example.",
		"a.rgw.example. 60 IN A 10.0.0.1",
		"b.rgw.example. 60 IN A 10.0.0.2",
		"b.rgw.example. 60 IN AAAA 2001:db8::2",
	}
	t.Run("additional", func(t *testing.T) {
		z := newZone(t, rrs...)
		// The additional section says otherwise than the zone: what
		// it says is what counts, and nothing more is asked.
		z.extra = []mdns.RR{
			mustRR(t, "a.rgw.example. 60 IN A 192.0.2.1"),
			mustRR(t, "B.RGW.example. 60 IN AAAA 2001:db8::99"),
			mustRR(t, "other.example. 60 IN A 192.0.2.3"),
		}
		res, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: serve(t, "127.0.0.1:0", z)})
		require.NoError(t, err)
		assert.Empty(t, res.Problems)
		assert.Equal(t, []discovery.Backend{be("192.0.2.1", 7480, 256, 1), be("2001:db8::99", 7480, 256, 1)}, res.Backends)
		assert.Equal(t, []string{"udp SRV _s3._tcp.rgw.example."}, z.asked())
	})
	t.Run("looked up", func(t *testing.T) {
		z := newZone(t, rrs...)
		res, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: serve(t, "127.0.0.1:0", z)})
		require.NoError(t, err)
		assert.Empty(t, res.Problems)
		assert.Equal(t, []discovery.Backend{
			be("10.0.0.1", 7480, 256, 1), be("10.0.0.2", 7480, 256, 1), be("2001:db8::2", 7480, 256, 1),
		}, res.Backends)
		assert.ElementsMatch(t, []string{
			"udp SRV _s3._tcp.rgw.example.",
			"udp A a.rgw.example.", "udp AAAA a.rgw.example.",
			"udp A b.rgw.example.", "udp AAAA b.rgw.example.",
		}, z.asked())
	})
	t.Run("partly", func(t *testing.T) {
		z := newZone(t, rrs...)
		z.extra = []mdns.RR{mustRR(t, "a.rgw.example. 60 IN A 10.0.0.1")}
		res, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: serve(t, "127.0.0.1:0", z)})
		require.NoError(t, err)
		assert.Len(t, res.Backends, 3)
		assert.ElementsMatch(t, []string{
			"udp SRV _s3._tcp.rgw.example.", "udp A b.rgw.example.", "udp AAAA b.rgw.example.",
		}, z.asked())
	})
}

func mustRR(t *testing.T, s string) mdns.RR {
	t.Helper()
	rr, err := mdns.NewRR(s)
	require.NoError(t, err)
	return rr
}

func TestSRVIPv6Targets(t *testing.T) {
	for _, glue := range []bool{true, false} {
		z := newZone(t,
			"_s3._tcp.rgw.example. 60 IN SRV 1 3 7480 v6.rgw.example.",
			"_s3._tcp.rgw.example. 60 IN SRV 1 1 7480 v6b.rgw.example.",
			"v6.rgw.example. 60 IN AAAA 2001:db8::1",
			"v6.rgw.example. 60 IN AAAA 2001:DB8:0:0::10",
			"v6b.rgw.example. 60 IN AAAA ::ffff:10.0.0.9",
		)
		z.glue = glue
		res, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: serve(t, "127.0.0.1:0", z)})
		require.NoError(t, err)
		assert.Empty(t, res.Problems)
		// A mapped IPv4 address is the IPv4 address it maps.
		assert.Equal(t, []discovery.Backend{
			be("10.0.0.9", 7480, 85, 1), be("2001:db8::1", 7480, 256, 1), be("2001:db8::10", 7480, 256, 1),
		}, res.Backends, "glue %v", glue)
		for _, b := range res.Backends {
			a, ok := b.Addr()
			assert.True(t, ok, b.Host)
			assert.Equal(t, b.Host != "10.0.0.9", a.Is6(), b.Host)
		}
	}
}

func TestSRVTruncatedAnswerIsAskedAgainOverTCP(t *testing.T) {
	z := newZone(t,
		"_s3._tcp.rgw.example. 60 IN SRV 1 1 7480 a.rgw.example.",
		"a.rgw.example. 60 IN A 10.0.0.1",
	)
	z.truncateUDP = true
	srv := serve(t, "127.0.0.1:0", z)
	res, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: srv})
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{be("10.0.0.1", 7480, 256, 1)}, res.Backends)
	q := z.asked()
	assert.Equal(t, []string{"udp SRV _s3._tcp.rgw.example.", "tcp SRV _s3._tcp.rgw.example."}, q[:2])
	assert.ElementsMatch(t, []string{
		"udp A a.rgw.example.", "tcp A a.rgw.example.", "udp AAAA a.rgw.example.", "tcp AAAA a.rgw.example.",
	}, q[2:])

	// Over tcp from the start, udp is never used.
	z = newZone(t, "_s3._tcp.rgw.example. 60 IN SRV 1 1 7480 a.rgw.example.", "a.rgw.example. 60 IN A 10.0.0.1")
	z.truncateUDP, z.glue = true, true
	res, err = fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: serve(t, "127.0.0.1:0", z), Protocol: "tcp"})
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{be("10.0.0.1", 7480, 256, 1)}, res.Backends)
	assert.Equal(t, []string{"tcp SRV _s3._tcp.rgw.example."}, z.asked())
}

func TestSRVBadRecordsLeaveTheRestStanding(t *testing.T) {
	z := newZone(t,
		"_s3._tcp.rgw.example. 60 IN SRV 1 5 0 zero.rgw.example.",
		// A priority of no backend is no tier: 1 and 2 are ober's 1
		// and 2 still.
		"_s3._tcp.rgw.example. 60 IN SRV 0 5 7480 noaddr.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 1 5 7480 gone.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 1 5 7480 a.rgw.example.",
		"_s3._tcp.rgw.example. 60 IN SRV 2 5 7480 alias.rgw.example.",
		"zero.rgw.example. 60 IN A 10.0.0.9",
		"noaddr.rgw.example. 60 IN TXT \"no address here\"",
		"a.rgw.example. 60 IN A 10.0.0.1",
		"alias.rgw.example. 60 IN A 10.0.0.1",
		"alias.rgw.example. 60 IN A 10.0.0.2",
	)
	res, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: serve(t, "127.0.0.1:0", z)})
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{be("10.0.0.1", 7480, 256, 1), be("10.0.0.2", 7480, 256, 2)}, res.Backends)
	assert.ElementsMatch(t, []string{
		"SRV zero.rgw.example. port 0 (priority 1, weight 5): port 0 refused",
		"SRV noaddr.rgw.example. port 7480 (priority 0, weight 5): noaddr.rgw.example. has no A or AAAA record",
		"SRV gone.rgw.example. port 7480 (priority 1, weight 5): gone.rgw.example. has no A or AAAA record",
		"SRV alias.rgw.example. port 7480 (priority 2, weight 5): 10.0.0.1:7480 is given already by SRV a.rgw.example. port 7480 (priority 1, weight 5)",
	}, res.Problems)
}

func TestSRVNotAvailableTarget(t *testing.T) {
	// RFC 2782's "." target: the service is decidedly not available,
	// which is an answer (no backends), not a failure.
	z := newZone(t, "_s3._tcp.rgw.example. 60 IN SRV 0 0 0 .")
	res, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: serve(t, "127.0.0.1:0", z)})
	require.NoError(t, err)
	assert.Empty(t, res.Backends)
	assert.Empty(t, res.Problems)
	assert.Equal(t, []string{"udp SRV _s3._tcp.rgw.example."}, z.asked(), "nothing is looked up for .")

	z = newZone(t,
		"_s3._tcp.rgw.example. 60 IN SRV 0 0 0 .",
		"_s3._tcp.rgw.example. 60 IN SRV 5 0 7480 a.rgw.example.",
		"a.rgw.example. 60 IN A 10.0.0.1",
	)
	res, err = fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: serve(t, "127.0.0.1:0", z)})
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{be("10.0.0.1", 7480, 256, 1)}, res.Backends)
	assert.Empty(t, res.Problems)
}

func TestSRVBadName(t *testing.T) {
	for _, name := range []string{
		"rgw.example",           // no _service._proto
		"_s3.rgw.example",       // no _proto
		"_s3._sctp.rgw.example", // not _tcp or _udp
		"s3._tcp.rgw.example",   // service without _
		"_._tcp.rgw.example",    // empty service
		"_s3._tcp",              // no domain
		"_s3._tcp.rgw..example", // not a domain name
		"",                      //
	} {
		_, err := NewSRV(SRVOptions{Name: name, Server: netip.MustParseAddrPort("127.0.0.1:53")})
		if assert.Error(t, err, name) {
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", name))
		}
	}
	for _, name := range []string{"_s3._tcp.rgw.example", "_S3._UDP.rgw.example.", "_ldap._tcp.dc._msdcs.example"} {
		_, err := NewSRV(SRVOptions{Name: name, Server: netip.MustParseAddrPort("127.0.0.1:53")})
		assert.NoError(t, err, name)
	}
	_, err := NewSRV(SRVOptions{Name: "_s3._tcp.rgw.example", Server: netip.MustParseAddrPort("127.0.0.1:53"), Protocol: "sctp"})
	assert.ErrorContains(t, err, `protocol "sctp"`)
}

func TestSRVNoSuchNameOrNoRecords(t *testing.T) {
	z := newZone(t,
		"_s3._tcp.rgw.example. 60 IN TXT \"not an SRV\"",
		"a.rgw.example. 60 IN A 10.0.0.1",
	)
	srv := serve(t, "127.0.0.1:0", z)
	_, err := fetchSRV(t, SRVOptions{Name: "_swift._tcp.rgw.example", Server: srv})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "NXDOMAIN")
	assert.Contains(t, err.Error(), "_swift._tcp.rgw.example.")

	_, err = fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: srv})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no SRV records")
}

func TestSRVServerFailure(t *testing.T) {
	srv := serve(t, "127.0.0.1:0", mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeServerFailure)
		_ = w.WriteMsg(m)
	}))
	_, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: srv})
	assert.ErrorContains(t, err, "SERVFAIL")
}

func TestSRVTargetLookupFailureFailsTheFetch(t *testing.T) {
	// A target that could not be asked about is not a target without
	// an address: the fetch fails rather than shrink the pool.
	z := newZone(t,
		"_s3._tcp.rgw.example. 60 IN SRV 1 1 7480 a.rgw.example.",
		"a.rgw.example. 60 IN A 10.0.0.1",
	)
	srv := serve(t, "127.0.0.1:0", mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		if r.Question[0].Qtype == mdns.TypeAAAA {
			m := new(mdns.Msg)
			m.SetRcode(r, mdns.RcodeRefused)
			_ = w.WriteMsg(m)
			return
		}
		z.ServeDNS(w, r)
	}))
	_, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: srv})
	assert.ErrorContains(t, err, "AAAA a.rgw.example.")
	assert.ErrorContains(t, err, "REFUSED")
}

// silent is a server that takes queries and never answers, on udp and
// tcp at the same port.
func silent(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func TestTimeout(t *testing.T) {
	srv := silent(t)
	for _, proto := range []string{"udp", "tcp"} {
		_, err := fetchSRV(t, SRVOptions{Name: "_s3._tcp.rgw.example", Server: srv, Protocol: proto, Timeout: 300 * time.Millisecond})
		require.Error(t, err, proto)
		assert.ErrorIs(t, err, context.DeadlineExceeded, proto)
		assert.Contains(t, err.Error(), srv.String(), proto)

		h, err := NewHost(HostOptions{Name: "rgw.example", Port: 80, Server: srv, Protocol: proto, Timeout: 300 * time.Millisecond})
		require.NoError(t, err)
		_, err = h.Fetch(context.Background())
		assert.ErrorIs(t, err, context.DeadlineExceeded, proto)
	}

	// The caller's context ends a fetch before the timeout does.
	s, err := NewSRV(SRVOptions{Name: "_s3._tcp.rgw.example", Server: srv, Timeout: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = s.Fetch(ctx)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestHost(t *testing.T) {
	z := newZone(t,
		"rgw.example. 60 IN A 10.0.0.2",
		"rgw.example. 60 IN A 10.0.0.1",
		"rgw.example. 60 IN AAAA 2001:db8::1",
		"www.example. 60 IN CNAME rgw.example.",
		"www.example. 60 IN A 10.0.0.3", // as a resolver gives the chain's end
		"txt.example. 60 IN TXT \"no address\"",
	)
	srv := serve(t, "127.0.0.1:0", z)
	h, err := NewHost(HostOptions{Name: "RGW.example", Port: 7480, Server: srv})
	require.NoError(t, err)
	res, err := h.Fetch(context.Background())
	require.NoError(t, err)
	assert.Empty(t, res.Problems)
	assert.Equal(t, []discovery.Backend{
		{Host: "10.0.0.1", Port: 7480, Weight: -1},
		{Host: "10.0.0.2", Port: 7480, Weight: -1},
		{Host: "2001:db8::1", Port: 7480, Weight: -1},
	}, res.Backends)
	assert.ElementsMatch(t, []string{"udp A rgw.example.", "udp AAAA rgw.example."}, z.asked())

	h, err = NewHost(HostOptions{Name: "www.example", Port: 80, Server: srv})
	require.NoError(t, err)
	res, err = h.Fetch(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{{Host: "10.0.0.3", Port: 80, Weight: -1}}, res.Backends)

	h, err = NewHost(HostOptions{Name: "gone.example", Port: 80, Server: srv})
	require.NoError(t, err)
	_, err = h.Fetch(context.Background())
	assert.ErrorContains(t, err, "NXDOMAIN")

	h, err = NewHost(HostOptions{Name: "txt.example", Port: 80, Server: srv})
	require.NoError(t, err)
	_, err = h.Fetch(context.Background())
	assert.ErrorContains(t, err, "no A or AAAA records")

	_, err = NewHost(HostOptions{Name: "rgw.example", Server: srv})
	assert.ErrorContains(t, err, "port 0")
	_, err = NewHost(HostOptions{Name: "rgw..example", Port: 80, Server: srv})
	assert.ErrorContains(t, err, `"rgw..example"`)
}

func TestHostTruncatedAnswer(t *testing.T) {
	z := newZone(t, "rgw.example. 60 IN A 10.0.0.1")
	z.truncateUDP = true
	h, err := NewHost(HostOptions{Name: "rgw.example", Port: 80, Server: serve(t, "127.0.0.1:0", z)})
	require.NoError(t, err)
	res, err := h.Fetch(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{{Host: "10.0.0.1", Port: 80, Weight: -1}}, res.Backends)
	assert.Contains(t, z.asked(), "tcp A rgw.example.")
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		return p
	}
	r := resolver{resolvConf: write("first", "search example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")}
	got, err := r.serverAddr()
	require.NoError(t, err)
	assert.Equal(t, "192.0.2.53:53", got)
	r = resolver{resolvConf: write("v6", "nameserver 2001:db8::53\n")}
	got, err = r.serverAddr()
	require.NoError(t, err)
	assert.Equal(t, "[2001:db8::53]:53", got)

	_, err = NewSRV(SRVOptions{Name: "_s3._tcp.rgw.example", ResolvConf: write("none", "search example\n")})
	assert.ErrorContains(t, err, "no nameserver")
	_, err = NewHost(HostOptions{Name: "rgw.example", Port: 80, ResolvConf: filepath.Join(dir, "missing")})
	assert.ErrorContains(t, err, filepath.Join(dir, "missing"))
	_, err = NewHost(HostOptions{Name: "rgw.example", Port: 80, ResolvConf: write("bad", "nameserver ns1.example\n")})
	assert.ErrorContains(t, err, `"ns1.example"`)

	// End to end, which needs servers on port 53: random loopback
	// addresses keep them clear of any resolver of the machine's own.
	a, b := netip.AddrFrom4([4]byte{127, 53, byte(rand.IntN(128)), byte(1 + rand.IntN(254))}),
		netip.AddrFrom4([4]byte{127, 53, byte(128 + rand.IntN(128)), byte(1 + rand.IntN(254))})
	za := newZone(t, "_s3._tcp.rgw.example. 60 IN SRV 1 1 7480 a.rgw.example.", "a.rgw.example. 60 IN A 10.0.0.1")
	zb := newZone(t, "_s3._tcp.rgw.example. 60 IN SRV 1 1 7480 a.rgw.example.", "a.rgw.example. 60 IN A 10.0.0.2")
	za.glue, zb.glue = true, true
	serve(t, netip.AddrPortFrom(a, 53).String(), za)
	serve(t, netip.AddrPortFrom(b, 53).String(), zb)
	conf := write("e2e", "nameserver "+a.String()+"\n")
	s, err := NewSRV(SRVOptions{Name: "_s3._tcp.rgw.example", ResolvConf: conf})
	require.NoError(t, err)
	res, err := s.Fetch(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{be("10.0.0.1", 7480, 256, 1)}, res.Backends)

	// The file is read again on each fetch.
	require.NoError(t, os.WriteFile(conf, []byte("nameserver "+b.String()+"\n"), 0o644))
	res, err = s.Fetch(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{be("10.0.0.2", 7480, 256, 1)}, res.Backends)
	assert.Len(t, za.asked(), 1)
	assert.Len(t, zb.asked(), 1)
}
