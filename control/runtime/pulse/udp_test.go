package pulse_test

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/runtime/pulse"
)

// TestFallAndRiseAreConsecutive drives a UDP probe too: its harness
// takes every backend in backends.
func init() {
	backends["udp probe"] = func(t *testing.T) backend { return newUDPPong(t).backend("svc/pool/udp") }
}

// udpServer answers each datagram it gets on 127.0.0.1 with what answer
// returns for it, or not at all for nil. answer must not keep req.
func udpServer(t *testing.T, answer func(req []byte) []byte) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply := answer(buf[:n]); reply != nil {
				_, _ = pc.WriteTo(reply, from)
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// udpPong answers "+PONG <datagram>", or "-ERR down" while down.
type udpPong struct {
	addr netip.AddrPort
	down atomic.Bool
	seen atomic.Int64
}

func newUDPPong(t *testing.T) *udpPong {
	s := &udpPong{}
	s.addr = udpServer(t, func(req []byte) []byte {
		s.seen.Add(1)
		if s.down.Load() {
			return []byte("-ERR down\r\n")
		}
		return append([]byte("+PONG "), req...)
	})
	return s
}

func (s *udpPong) backend(key string) backend {
	return backend{
		target: pulse.Target{Key: key, Addr: s.addr, Check: pulse.Check{
			Kind: pulse.KindProbe, Protocol: pulse.ProtocolUDP, Send: []byte("PING\r\n"), Expect: []byte("+PONG")}},
		set:  func(up bool) { s.down.Store(!up) },
		seen: s.seen.Load,
	}
}

// closedUDPPort is a port of 127.0.0.1 with no UDP socket: a datagram
// to it draws an ICMP port unreachable.
func closedUDPPort(t *testing.T) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := netip.MustParseAddrPort(pc.LocalAddr().String())
	require.NoError(t, pc.Close())
	return addr
}

func udpProbe(key string, addr netip.AddrPort, send, expect, re string) pulse.Target {
	tg := pulse.Target{Key: key, Addr: addr, Check: pulse.Check{Kind: pulse.KindProbe, Protocol: pulse.ProtocolUDP,
		Send: []byte(send), Expect: []byte(expect), Timeout: 2 * time.Second}}
	if re != "" {
		tg.Check.ExpectRegexp = regexp.MustCompile(re)
	}
	return tg
}

// TestUDPProbeReplies: the reply datagram is matched as a TCP probe's
// answer is, and a wrong one fails at once, saying why.
func TestUDPProbeReplies(t *testing.T) {
	t.Parallel()
	fixed := func(reply string) func([]byte) []byte {
		return func([]byte) []byte { return []byte(reply) }
	}
	for name, tc := range map[string]struct {
		answer func(req []byte) []byte
		send   string
		expect string
		re     string
		err    string // after "udp probe <addr>: "
	}{
		"prefix":            {answer: fixed("+OK ready\r\n"), expect: "+OK"},
		"regexp":            {answer: fixed("server version 1.2.3\n"), re: `version \d+\.\d+`},
		"prefix and regexp": {answer: fixed("+OK ready\n"), expect: "+OK", re: `ready`},
		"any reply":         {answer: fixed("whatever")},
		"empty datagram":    {answer: fixed("")},
		"sent bytes": {send: "HELLO ober", expect: "+hi HELLO ober\n", answer: func(req []byte) []byte {
			return fmt.Appendf(nil, "+hi %s\n", req)
		}},
		"mismatch":         {answer: fixed("-ERR nope\r\n"), expect: "+OK", err: `reply "-ERR nope\r\n" does not start with "+OK"`},
		"short reply":      {answer: fixed("+O"), expect: "+OK", err: `reply "+O" does not start with "+OK"`},
		"regexp unmatched": {answer: fixed("+OK busy\n"), expect: "+OK", re: `ready`, err: `reply "+OK busy\n" does not match regexp "ready"`},
		"past 4 KiB": {answer: fixed(strings.Repeat("x", 4096) + "ready"), re: `ready`,
			err: `first 4096 bytes of the reply do not match regexp "ready"`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			addr := udpServer(t, tc.answer)
			st := checkOnce(t, udpProbe(name, addr, cmp.Or(tc.send, "PING"), tc.expect, tc.re))
			if tc.err == "" {
				require.Empty(t, st.LastError)
			} else {
				require.Equal(t, fmt.Sprintf("udp probe %s: %s", addr, tc.err), st.LastError)
			}
		})
	}
}

// TestUDPProbeRefused: a port nobody listens on answers with an ICMP
// port unreachable, which fails the check then, not at its timeout.
func TestUDPProbeRefused(t *testing.T) {
	t.Parallel()
	addr := closedUDPPort(t)
	tg := udpProbe("refused", addr, "PING", "+PONG", "")
	tg.Check.Timeout = 5 * time.Second
	st := checkOnce(t, tg)
	require.Equal(t, fmt.Sprintf("udp probe %s: connection refused (ICMP port unreachable)", addr), st.LastError)
	require.Less(t, st.LastDuration, tg.Check.Timeout, "did not wait for the timeout")
}

// TestUDPProbeNoReply: a target that never answers, or whose answer
// comes from another address, fails at the timeout.
func TestUDPProbeNoReply(t *testing.T) {
	t.Parallel()
	const timeout = 100 * time.Millisecond
	t.Run("silent", func(t *testing.T) {
		t.Parallel()
		got := make(chan string, 1)
		addr := udpServer(t, func(req []byte) []byte {
			got <- string(req)
			return nil
		})
		tg := udpProbe("silent", addr, "PING", "", "")
		tg.Check.Timeout = timeout
		st := checkOnce(t, tg)
		require.Equal(t, fmt.Sprintf("udp probe %s: no reply in 100ms", addr), st.LastError)
		require.GreaterOrEqual(t, st.LastDuration, timeout)
		require.Equal(t, "PING", <-got, "the datagram was sent")
	})
	t.Run("reply from another port", func(t *testing.T) {
		t.Parallel()
		other, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { other.Close() })
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { pc.Close() })
		answered := make(chan error, 1)
		go func() {
			buf := make([]byte, 512)
			_, from, err := pc.ReadFrom(buf)
			if err == nil {
				_, err = other.WriteTo([]byte("+PONG"), from)
			}
			answered <- err
		}()
		addr := netip.MustParseAddrPort(pc.LocalAddr().String())
		tg := udpProbe("other port", addr, "PING", "", "")
		tg.Check.Timeout = timeout
		st := checkOnce(t, tg)
		require.NoError(t, <-answered)
		require.Equal(t, fmt.Sprintf("udp probe %s: no reply in 100ms", addr), st.LastError)
	})
}

// TestUDPProbeDNS: a DNS backend is probed with a fixed query. Its ID
// and the reply's flags (response, authoritative, NOERROR) make the
// expected prefix; a regexp finds the answer's data in the raw reply.
func TestUDPProbeDNS(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(q)
			m.Authoritative = true
			if qs := q.Question[0]; qs.Name == "health.ober.test." && qs.Qtype == dns.TypeTXT {
				m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: qs.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
					Txt: []string{"status=up"}}}
			} else {
				m.Rcode = dns.RcodeNameError
			}
			_ = w.WriteMsg(m)
		})}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-served:
		t.Fatalf("dns server: %v", err)
	}
	t.Cleanup(func() {
		require.NoError(t, srv.Shutdown())
		<-served
	})
	addr := netip.MustParseAddrPort(pc.LocalAddr().String())

	query := func(name string) string {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT) // recursion desired
		m.Id = 0x5eed
		b, err := m.Pack()
		require.NoError(t, err)
		return string(b)
	}
	// ID 0x5eed; QR, AA and RD (copied); no RA, rcode 0 (NOERROR).
	const noError = "\x5e\xed\x85\x00"
	for name, tc := range map[string]struct {
		query, expect, re string
		err               string // after "udp probe <addr>: "
	}{
		"answer":             {query: query("health.ober.test."), expect: noError, re: `status=up`},
		"answer data only":   {query: query("health.ober.test."), re: `status=up`},
		"question echoed":    {query: query("health.ober.test."), re: `\x06health\x04ober\x04test\x00`},
		"nxdomain":           {query: query("gone.ober.test."), expect: noError, err: `reply "^\xed\x85\x03\x00\x01\x00\x00\x00\x00\x00\x00\x04gone\x04ob" does not start with "^\xed\x85\x00"`},
		"nxdomain no answer": {query: query("gone.ober.test."), re: `status=up`, err: `does not match regexp "status=up"`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			st := checkOnce(t, udpProbe(name, addr, tc.query, tc.expect, tc.re))
			switch {
			case tc.err == "":
				require.Empty(t, st.LastError)
			case strings.HasPrefix(tc.err, "reply"):
				require.Equal(t, fmt.Sprintf("udp probe %s: %s", addr, tc.err), st.LastError)
			default:
				require.Contains(t, st.LastError, tc.err)
			}
		})
	}
}

// TestUDPProbeSettings: only a probe can be UDP, and it must send
// something; tcp and "" are the same check, udp another.
func TestUDPProbeSettings(t *testing.T) {
	t.Parallel()
	addr := netip.MustParseAddrPort("127.0.0.1:53")
	for name, tc := range map[string]struct {
		check pulse.Check
		err   string
	}{
		"tcp check": {pulse.Check{Kind: pulse.KindTCP, Protocol: "udp"}, `protocol "udp": only a probe check can use it, not kind "tcp"`},
		"http":      {pulse.Check{Kind: pulse.KindHTTP, Protocol: "udp"}, `protocol "udp": only a probe check can use it, not kind "http"`},
		"https":     {pulse.Check{Kind: pulse.KindHTTPS, Protocol: "udp"}, `protocol "udp": only a probe check can use it, not kind "https"`},
		"exec":      {pulse.Check{Kind: pulse.KindExec, Protocol: "udp", Command: []string{"/bin/true"}}, `protocol "udp": only a probe check can use it, not kind "exec"`},
		"none":      {pulse.Check{Kind: pulse.KindNone, Protocol: "udp"}, `protocol "udp": only a probe check can use it, not kind "none"`},
		"no send":   {pulse.Check{Kind: pulse.KindProbe, Protocol: "udp", Expect: []byte("x")}, `protocol "udp": send is empty; a udp probe must send a datagram`},
		"unknown":   {pulse.Check{Kind: pulse.KindProbe, Protocol: "sctp", Send: []byte("x")}, `protocol "sctp": not one of tcp, udp`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, _ := newPulse(t, true, pulse.Options{})
			err := p.Set([]pulse.Target{{Key: name, Addr: addr, Check: tc.check}})
			require.EqualError(t, err, fmt.Sprintf("pulse: target 0 (%q): %s", name, tc.err))
			require.Empty(t, p.States(), "nothing applied")
		})
	}

	t.Run("tcp is the default, udp another check", func(t *testing.T) {
		t.Parallel()
		srv := newProbeServer(t, 0) // tcp; nothing listens on its port for udp
		p, _ := newPulse(t, true, pulse.Options{})
		tg := srv.backend("probe").target
		require.NoError(t, p.Set([]pulse.Target{tg}))
		require.Empty(t, step(t, p, "probe").LastError)
		tg.Check.Protocol = pulse.ProtocolTCP
		require.NoError(t, p.Set([]pulse.Target{tg}))
		require.Equal(t, 2, step(t, p, "probe").Consecutive, "same checker")

		tg.Check.Protocol = pulse.ProtocolUDP
		require.NoError(t, p.Set([]pulse.Target{tg}))
		require.Zero(t, state(t, p, "probe").Consecutive, "a new checker")
		st := step(t, p, "probe")
		require.Equal(t, fmt.Sprintf("udp probe %s: connection refused (ICMP port unreachable)", tg.Addr), st.LastError)
	})
}
