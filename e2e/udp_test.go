package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/dnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// udpQuery is a DNS query for dnstest.QName's TXT record, as a health
// probe sends it: every byte below 0x80, so that the YAML string
// carries it as it is.
func udpQuery() string {
	var b strings.Builder
	b.WriteString("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")
	for _, l := range strings.Split(strings.TrimSuffix(dnstest.QName, "."), ".") {
		b.WriteByte(byte(len(l)))
		b.WriteString(l)
	}
	b.WriteString("\x00\x00\x10\x00\x01")
	return b.String()
}

// The health check of TestUDPServiceDNS's servers: a backend is out
// after udpFall failed checks udpInterval apart, each failing within
// udpCheckTimeout (the default, the smaller of 1s and the interval).
const (
	udpInterval     = 200 * time.Millisecond
	udpCheckTimeout = udpInterval
	udpFall         = 2
	// udpMoveMargin is what a loaded 2-CPU machine may add to the
	// checks: the verdict reaching nftables, the conntrack entries'
	// deletion, the status and the client's own polling.
	udpMoveMargin = 2 * time.Second
)

// A udp service on the VIP in front of two real DNS servers: 10,000
// queries over 100 source ports are all answered, the new flows split in
// turn between the servers (roundrobin) and each flow stays on one; then
// one server dies, its check (a DNS query over UDP) takes it out, and the
// very flows it had move to the other within fall × interval (plus a
// margin); its conntrack entries are gone and nothing goes to it after.
// Last, an access list admits the client's address and no other: the
// client is answered, another address of the client host gets nothing,
// dropped and counted in XDP.
func TestUDPServiceDNS(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	ns1 := dnstest.StartDnsmasq(t, s.Backend(), "ns1", netip.AddrPortFrom(s.BackendIP(0), 53))
	dnstest.StartDnsmasq(t, s.Backend(), "ns2", netip.AddrPortFrom(s.BackendIP(1), 53))
	out, err := s.Node.Exec(context.Background(), "sysctl", "-w", "net.ipv4.ip_forward=1").CombinedOutput()
	require.NoError(t, err, "%s", out)

	c := s.Config(nodetest.Params{Instances: 1})
	c.Services = append(c.Services, config.Service{
		Name: "dns", Mode: config.ModeUDP, Port: 53, Balance: config.BalanceRoundRobin,
		Health: &config.ServiceHealth{Kind: config.CheckProbe, Protocol: config.ProtocolUDP, Send: udpQuery(),
			ExpectRegexp: "backend=", Interval: config.Duration{Duration: udpInterval}, Fall: udpFall, Rise: 1},
		Backends: []config.BackendServer{
			{Name: "ns1", Address: netip.AddrPortFrom(s.BackendIP(0), 53).String()},
			{Name: "ns2", Address: netip.AddrPortFrom(s.BackendIP(1), 53).String()},
		},
	})
	s.WriteConfig(c)
	s.Start()

	vip := netip.AddrPortFrom(nodetest.VIP, 53)
	ask := func(n, ports int) dnstest.Tally {
		t.Helper()
		return udpAsk(t, s, vip, n, ports, time.Second)
	}
	require.Eventually(t, func() bool { return ask(10, 10).Answered() == 10 }, 10*time.Second, 200*time.Millisecond, "the service answers")
	// All 100 flows new (none left from the tries above on a port the
	// kernel hands out again): in turn, 50 to each server.
	forgetUDPFlows(t, s)
	tl := ask(10_000, 100)
	require.Equal(t, 10_000, tl.Answered(), "lost %d, errors %d (%s)", tl.Lost, tl.Errors, tl.FirstError)
	require.Empty(t, tl.MixedPorts(), "a flow stays on its server")
	require.Equal(t, map[string]int{"ns1": 5000, "ns2": 5000}, tl.ByBackend, "roundrobin per new flow, 100 queries each")

	// Status: both in rotation, each having had its half of the 100
	// flows (and of the first ones that waited for the service).
	byName := func() map[string]api.DaemonBackendStatus {
		out := map[string]api.DaemonBackendStatus{}
		for _, svc := range s.Status().Daemon.Services {
			if svc.Name == "dns" {
				for _, b := range svc.Backends {
					out[b.Name] = b
				}
			}
		}
		return out
	}
	st := byName()
	require.Equal(t, "rotation", st["ns1"].State)
	require.GreaterOrEqual(t, st["ns1"].TotalConnections, int64(50), "the new flows nftables sent to ns1: %+v", st["ns1"])
	require.GreaterOrEqual(t, st["ns2"].TotalConnections, int64(50))

	// Flows held open across the kill, half of them on ns1.
	forgetUDPFlows(t, s)
	flows := openDNSFlows(t, s, vip, 20)
	before := flows.who(time.Second)
	require.Equal(t, 10, strings.Count(strings.Join(before, " "), "ns1"), "new flows in turn: %v", before)
	require.Equal(t, 10, strings.Count(strings.Join(before, " "), "ns2"), "new flows in turn: %v", before)
	require.NotZero(t, udpFlowsTo(t, s, s.BackendIP(0)), "the flows left conntrack entries to ns1")

	bound := udpFall*udpInterval + udpCheckTimeout + udpMoveMargin
	killed := time.Now()
	ns1.Kill()
	var last string
	for {
		now := flows.who(150 * time.Millisecond)
		state := byName()["ns1"].State
		left := udpFlowsTo(t, s, s.BackendIP(0))
		moved := strings.Count(strings.Join(now, " "), "ns2") == len(flows)
		if moved && state == "out" && left == 0 {
			break
		}
		last = fmt.Sprintf("flows answered by %v, ns1 %s, %d conntrack entries to ns1", now, state, left)
		require.Less(t, time.Since(killed), bound,
			"ns1's flows on ns2 and its conntrack entries gone within fall x interval + check timeout + margin (last: %s)", last)
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ns1 out and its flows on ns2 %v after the kill (bound %v)", time.Since(killed).Round(time.Millisecond), bound)
	require.False(t, byName()["ns1"].Up, "ns1's check failed")

	// Nothing goes to ns1 any more: every answer is ns2's and no flow
	// to ns1 appears in conntrack.
	tl = ask(10_000, 100)
	require.Equal(t, 10_000, tl.ByBackend["ns2"], "every query to ns2: %v lost %d errors %d (%s)", tl.ByBackend, tl.Lost, tl.Errors, tl.FirstError)
	require.Zero(t, udpFlowsTo(t, s, s.BackendIP(0)), "no flow to ns1 once it is out")
	require.Equal(t, "out", byName()["ns1"].State)

	// An access list that admits the client's address only: the client
	// is answered; another address of the client host gets nothing,
	// XDP drops its queries (counted) and none reaches conntrack.
	c.Services[len(c.Services)-1].Access = &config.Access{Default: config.AccessDeny, Rules: []string{"allow " + nodetest.ClientAddr.String()}}
	s.WriteConfig(c)
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.Generation >= 2 }, 10*time.Second, 100*time.Millisecond)
	tl = ask(50, 10)
	require.Equal(t, map[string]int{"ns2": 50}, tl.ByBackend, "the admitted client is answered: lost %d errors %d (%s)", tl.Lost, tl.Errors, tl.FirstError)

	rogue := s.ClientIP(0)
	clientSource(t, s, rogue)
	denied := tcpSvcPackets(s.Status(), "access_denied", "drop")
	tl = udpAsk(t, s, vip, 50, 10, 300*time.Millisecond)
	require.Equal(t, 0, tl.Answered(), "%s, which the access list leaves out, gets nothing: %v", rogue, tl.ByBackend)
	require.GreaterOrEqual(t, tcpSvcPackets(s.Status(), "access_denied", "drop")-denied, uint64(50), "XDP counts each as access_denied")
	require.Zero(t, nodeUDPFlows(t, s, func(f conntrack.Flow) bool { return f.TupleOrig.IP.SourceAddress == rogue }),
		"no flow from %s got past XDP", rogue)
	clientSource(t, s, nodetest.ClientAddr)
	tl = ask(50, 10)
	require.Equal(t, map[string]int{"ns2": 50}, tl.ByBackend, "the admitted client still is")
}

// dnsFlows are sockets of the site's client held open, each one UDP flow
// to a server, to see where the same flows go as the backends change
// (dnstest.Ask opens new sockets every time).
type dnsFlows []*dns.Conn

// openDNSFlows opens n sockets in the client's namespace, connected to
// server; they are closed at cleanup.
func openDNSFlows(t *testing.T, s *nodetest.Site, server netip.AddrPort, n int) dnsFlows {
	t.Helper()
	var flows dnsFlows
	t.Cleanup(func() {
		for _, c := range flows {
			c.Close()
		}
	})
	require.NoError(t, s.Client.Do(func() error {
		for range n {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
			if err != nil {
				return fmt.Errorf("open flow %d to %s: %w", len(flows)+1, server, err)
			}
			flows = append(flows, &dns.Conn{Conn: c})
		}
		return nil
	}))
	return flows
}

// who asks dnstest.QName's TXT record on every flow at once and returns,
// per flow, the backend that answered, or "" when none did in time.
func (f dnsFlows) who(timeout time.Duration) []string {
	out := make([]string, len(f))
	var wg sync.WaitGroup
	for i, c := range f {
		wg.Go(func() {
			cl := dns.Client{Net: "udp", Timeout: timeout}
			r, _, err := cl.ExchangeWithConn(new(dns.Msg).SetQuestion(dnstest.QName, dns.TypeTXT), c)
			if err != nil {
				return // lost, or refused while the flow still led to a dead server
			}
			for _, rr := range r.Answer {
				if txt, ok := rr.(*dns.TXT); ok {
					if name, ok := strings.CutPrefix(strings.Join(txt.Txt, ""), "backend="); ok {
						out[i] = name
					}
				}
			}
		})
	}
	wg.Wait()
	return out
}

// udpFlowsTo counts the node's conntrack entries of UDP flows to the VIP
// translated to backend.
func udpFlowsTo(t *testing.T, s *nodetest.Site, backend netip.Addr) int {
	t.Helper()
	// The health checks' own flows go to the backend directly.
	return nodeUDPFlows(t, s, func(f conntrack.Flow) bool { return f.TupleReply.IP.SourceAddress == backend })
}

// nodeUDPFlows counts the node's conntrack entries of UDP flows to the
// VIP that match.
func nodeUDPFlows(t *testing.T, s *nodetest.Site, match func(conntrack.Flow) bool) int {
	t.Helper()
	n := 0
	vipUDPFlows(t, s, func(_ *conntrack.Conn, f conntrack.Flow) error {
		if match(f) {
			n++
		}
		return nil
	})
	return n
}

// vipUDPFlows calls each with the conntrack connection and every entry
// of the node's UDP flows to the VIP, in the node's namespace.
func vipUDPFlows(t *testing.T, s *nodetest.Site, each func(*conntrack.Conn, conntrack.Flow) error) {
	t.Helper()
	require.NoError(t, s.Node.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return fmt.Errorf("conntrack: %w", err)
		}
		defer c.Close()
		flows, err := c.Dump(nil)
		if err != nil {
			return fmt.Errorf("conntrack dump: %w", err)
		}
		for _, f := range flows {
			if f.TupleOrig.Proto.Protocol == unix.IPPROTO_UDP && f.TupleOrig.IP.DestinationAddress == nodetest.VIP {
				if err := each(c, f); err != nil {
					return err
				}
			}
		}
		return nil
	}))
}

// A nat service forwards TCP in the kernel: with fullnat the backend
// sees the node's address, with dnat the client's own (the backend
// routes back through the node, as nodetest's backend host does).
func TestNATServiceForwarding(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	be := netip.AddrPortFrom(s.BackendIP(0), 9100)
	tcpSvcListen(t, s.Backend(), be.String(), func(c net.Conn) {
		io.WriteString(c, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()+"\n")
	})
	out, err := s.Node.Exec(context.Background(), "sysctl", "-w", "net.ipv4.ip_forward=1").CombinedOutput()
	require.NoError(t, err, "%s", out)
	c := s.Config(nodetest.Params{Instances: 1})
	for _, svc := range []struct {
		name    string
		port    uint16
		forward string
	}{{"full", 7100, config.ForwardFullNAT}, {"kept", 7101, config.ForwardDNAT}} {
		c.Services = append(c.Services, config.Service{Name: svc.name, Mode: config.ModeNAT, Port: svc.port, Forward: svc.forward,
			Backends: []config.BackendServer{{Name: "b", Address: be.String()}}})
	}
	s.WriteConfig(c)
	s.Start()
	require.Eventually(t, func() bool { return mgmtReadOrEmpty(s, 7100) != "" }, 10*time.Second, 200*time.Millisecond)
	require.Equal(t, "10.98.2.254", mgmtRead(t, s, 7100), "fullnat: the backend sees the node")
	require.Equal(t, nodetest.ClientAddr.String(), mgmtRead(t, s, 7101), "dnat: the backend sees the client")
}

// mgmtReadOrEmpty is mgmtRead that answers "" instead of failing.
func mgmtReadOrEmpty(s *nodetest.Site, port uint16) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := s.ClientDialer().DialContext(ctx, "tcp", netip.AddrPortFrom(nodetest.VIP, port).String())
	if err != nil {
		return ""
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	n, _ := io.ReadAtLeast(conn, buf, 1)
	return strings.TrimSpace(string(buf[:n]))
}
