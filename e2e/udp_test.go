package e2e

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

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

// A udp service on the VIP in front of two real DNS servers: every query
// of 2,000 over 100 source ports is answered, the flows split in turn
// between the servers (roundrobin) and each flow stays on one; then one
// server dies, its check (a DNS query over UDP) takes it out, and every
// query is answered by the other.
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
			ExpectRegexp: "backend=", Interval: config.Duration{Duration: 200 * time.Millisecond}, Fall: 2, Rise: 1},
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
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		tl, err := dnstest.Ask(ctx, s.Client, vip, n, ports, time.Second)
		require.NoError(t, err)
		return tl
	}
	require.Eventually(t, func() bool { return ask(10, 10).Answered() == 10 }, 10*time.Second, 200*time.Millisecond, "the service answers")
	tl := ask(2000, 100)
	require.Equal(t, 2000, tl.Answered(), "lost %d, errors %d (%s)", tl.Lost, tl.Errors, tl.FirstError)
	require.Empty(t, tl.MixedPorts(), "a flow stays on its server")
	require.InDelta(t, 1000, tl.ByBackend["ns1"], 100, "%v", tl.ByBackend)
	require.InDelta(t, 1000, tl.ByBackend["ns2"], 100, "%v", tl.ByBackend)

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

	// Flows pinned to ns1 in conntrack, to see them go with it.
	require.NotZero(t, udpFlowsTo(t, s, s.BackendIP(0)), "the queries left conntrack entries to ns1")
	ns1.Kill()
	require.Eventually(t, func() bool {
		st := s.Status()
		for _, svc := range st.Daemon.Services {
			for _, b := range svc.Backends {
				if svc.Name == "dns" && b.Name == "ns1" {
					return !b.Up
				}
			}
		}
		return false
	}, 5*time.Second, 100*time.Millisecond, "ns1's check fails within fall x interval")
	require.Eventually(t, func() bool { return udpFlowsTo(t, s, s.BackendIP(0)) == 0 }, 3*time.Second, 100*time.Millisecond,
		"ns1's conntrack entries are deleted once it is out")
	require.Equal(t, "out", byName()["ns1"].State)
	tl = ask(2000, 100)
	require.Equal(t, 2000, tl.ByBackend["ns2"], "every query to ns2: %v lost %d errors %d (%s)", tl.ByBackend, tl.Lost, tl.Errors, tl.FirstError)

	// An access list that leaves the client out: XDP drops its queries
	// (counted) and nothing reaches a server.
	c.Services[len(c.Services)-1].Access = &config.Access{Default: config.AccessDeny, Rules: []string{"allow 10.200.0.0/16"}}
	s.WriteConfig(c)
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.Generation >= 2 }, 10*time.Second, 100*time.Millisecond)
	denied := tcpSvcPackets(s.Status(), "access_denied", "drop")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tl, err = dnstest.Ask(ctx, s.Client, vip, 50, 10, 300*time.Millisecond)
	require.NoError(t, err)
	require.Equal(t, 0, tl.Answered(), "a client the access list leaves out gets nothing")
	require.GreaterOrEqual(t, tcpSvcPackets(s.Status(), "access_denied", "drop")-denied, uint64(50), "XDP counts each as access_denied")
}

// udpFlowsTo counts the node's conntrack entries of UDP flows to the VIP
// translated to backend.
func udpFlowsTo(t *testing.T, s *nodetest.Site, backend netip.Addr) int {
	t.Helper()
	n := 0
	require.NoError(t, s.Node.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err := c.Dump(nil)
		for _, f := range flows {
			// The health checks' own flows go to the backend directly.
			if f.TupleOrig.Proto.Protocol == unix.IPPROTO_UDP && f.TupleOrig.IP.DestinationAddress == nodetest.VIP &&
				f.TupleReply.IP.SourceAddress == backend {
				n++
			}
		}
		return err
	}))
	return n
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
