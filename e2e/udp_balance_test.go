package e2e

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/ti-mo/conntrack"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/dnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// balanceZ is how many standard deviations a count of independent draws
// may stray from its expectation before a test calls the split wrong:
// beyond 5 σ a correct split fails about once in 1.7 million checks.
const balanceZ = 5

// binomialSlack is balanceZ standard deviations of the number of n
// independent draws that fall to a backend with probability p.
func binomialSlack(n int, p float64) float64 {
	return balanceZ * math.Sqrt(float64(n)*p*(1-p))
}

// balanceFlows and balanceQueriesPerFlow size each method's sample. The
// flow is what balances (conntrack keeps a flow's backend), so the flows
// are the draws; the further queries on each flow show it staying. The
// flows are asked balanceBatch at a time: a thousand at once overflow
// dnsmasq's socket buffer (UdpRcvbufErrors), and the lost queries would
// hide what the balance did.
const (
	balanceFlows          = 1000
	balanceQueriesPerFlow = 10
	balanceBatch          = 100
)

// One node with a udp service per balance method, each in front of the
// same real DNS servers, and each asked 10,000 times over 1,000 new flows
// (in batches of 100): the split of the flows is what the method
// promises (exactly in turn for roundrobin, whatever the weights; within
// the binomial spread of the weights for random, weighted and the
// hashes), every flow stays on its backend, nftables' counters saw
// exactly the flows the answers name, and where a hash decides, a flow
// conntrack forgot comes back to the same backend.
func TestUDPBalanceMethods(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	for i, name := range []string{"ns1", "ns2", "ns3"} {
		dnstest.StartDnsmasq(t, s.Backend(), name, netip.AddrPortFrom(s.BackendIP(i), 53))
	}
	out, err := s.Node.Exec(context.Background(), "sysctl", "-w", "net.ipv4.ip_forward=1").CombinedOutput()
	require.NoError(t, err, "%s", out)

	backend := func(name string, i, weight int) config.BackendServer {
		return config.BackendServer{Name: name, Address: netip.AddrPortFrom(s.BackendIP(i), 53).String(), Weight: &weight}
	}
	two := []config.BackendServer{backend("ns1", 0, 100), backend("ns2", 1, 100)}
	type method struct {
		svc     config.Service
		weights map[string]int // the shares the flows should take
	}
	methods := []method{
		// Weights 1 and 3, which roundrobin ignores.
		{config.Service{Name: "rr", Port: 5301, Balance: config.BalanceRoundRobin,
			Backends: []config.BackendServer{backend("ns1", 0, 1), backend("ns2", 1, 3)}}, nil},
		{config.Service{Name: "random", Port: 5302, Balance: config.BalanceRandom, Backends: two}, map[string]int{"ns1": 1, "ns2": 1}},
		{config.Service{Name: "weighted", Port: 5303, Balance: config.BalanceWeighted,
			Backends: []config.BackendServer{backend("ns1", 0, 1), backend("ns2", 1, 3)}}, map[string]int{"ns1": 1, "ns2": 3}},
		{config.Service{Name: "srcport", Port: 5304, Balance: config.BalanceSource, HashSourcePort: true, Backends: two},
			map[string]int{"ns1": 1, "ns2": 1}},
		{config.Service{Name: "src", Port: 5305, Balance: config.BalanceSource, Backends: two}, nil},
		{config.Service{Name: "consistent", Port: 5306, Balance: config.BalanceConsistent,
			Backends: []config.BackendServer{backend("ns1", 0, 100), backend("ns2", 1, 100), backend("ns3", 2, 100)}},
			map[string]int{"ns1": 1, "ns2": 1, "ns3": 1}},
	}
	c := s.Config(nodetest.Params{Instances: 1})
	for _, m := range methods {
		m.svc.Mode = config.ModeUDP // no health check: the servers are up throughout
		c.Services = append(c.Services, m.svc)
	}
	s.WriteConfig(c)
	s.Start()
	for _, m := range methods {
		waitRotation(t, s, m.svc.Name, len(m.svc.Backends))
	}

	vipPort := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(nodetest.VIP, port) }
	// sample asks a service over balanceFlows new flows and checks what
	// holds for every method: each query answered, each flow on one
	// backend, and the service's counters grown by the flows seen.
	sample := func(t *testing.T, svc string, port uint16) map[string]int {
		t.Helper()
		before := kernelFlows(t, s, svc)
		flows := map[string]int{}
		for range balanceFlows / balanceBatch {
			// Forgotten flows make every socket's flow new, even
			// one on a port an earlier batch had.
			forgetUDPFlows(t, s)
			tl := udpAsk(t, s, vipPort(port), balanceBatch*balanceQueriesPerFlow, balanceBatch, time.Second)
			require.Equal(t, balanceBatch*balanceQueriesPerFlow, tl.Answered(), "lost %d, errors %d (%s)", tl.Lost, tl.Errors, tl.FirstError)
			require.Empty(t, tl.MixedPorts(), "a query on an existing flow stays on the flow's backend")
			for b, n := range flowsByBackend(tl) {
				flows[b] += n
			}
		}
		after := kernelFlows(t, s, svc)
		for b, n := range flows {
			assert.Equal(t, int64(n), after[b]-before[b], "nftables counted each new flow to %s once", b)
		}
		t.Logf("%s: flows per backend %v", svc, flows)
		return flows
	}

	t.Run("roundrobin", func(t *testing.T) {
		// Each new flow takes the next backend, the weights aside: an
		// even number of flows splits exactly.
		flows := sample(t, "rr", 5301)
		require.Equal(t, map[string]int{"ns1": balanceFlows / 2, "ns2": balanceFlows / 2}, flows)

		// One flow at a time, three queries each: the flows alternate,
		// and the later queries of a flow stay with its first.
		var seq []string
		for range 6 {
			forgetUDPFlows(t, s) // new even should the kernel hand out a port used before
			tl := udpAsk(t, s, vipPort(5301), 3, 1, time.Second)
			require.Len(t, tl.ByBackend, 1, "one flow, one backend: %v", tl.ByBackend)
			for b, n := range tl.ByBackend {
				require.Equal(t, 3, n)
				seq = append(seq, b)
			}
		}
		for i := 1; i < len(seq); i++ {
			require.NotEqual(t, seq[i-1], seq[i], "new flows alternate: %v", seq)
		}
	})

	for _, m := range methods {
		if m.weights == nil {
			continue
		}
		t.Run(m.svc.Name, func(t *testing.T) {
			flows := sample(t, m.svc.Name, m.svc.Port)
			total := 0
			for _, w := range m.weights {
				total += w
			}
			for b, w := range m.weights {
				p := float64(w) / float64(total)
				slack := binomialSlack(balanceFlows, p)
				if m.svc.Balance == config.BalanceConsistent {
					// The flows hash onto a table whose slots were
					// themselves dealt to the backends by a hash:
					// its shares stray too, by the spread of
					// consistentSlots draws.
					slack = balanceZ * math.Sqrt(float64(balanceFlows)*p*(1-p)*(1+float64(balanceFlows)/consistentSlots))
				}
				assert.InDelta(t, float64(balanceFlows)*p, flows[b], slack,
					"%s's share of %d flows at weight %d of %d: %v", b, balanceFlows, w, total, flows)
			}
			assert.Len(t, flows, len(m.weights), "only the service's backends answer: %v", flows)
			if m.svc.Balance != config.BalanceSource && m.svc.Balance != config.BalanceConsistent {
				return
			}
			// A hash decides, not conntrack: the same flows, forgotten
			// by conntrack, come back to the backends they had.
			forgetUDPFlows(t, s)
			held := openDNSFlows(t, s, vipPort(m.svc.Port), 50)
			first := held.who(time.Second)
			require.NotContains(t, first, "", "every held flow answered: %v", first)
			forgetUDPFlows(t, s)
			require.Equal(t, first, held.who(time.Second), "each flow's backend before and after conntrack forgot it")
		})
	}

	t.Run("source", func(t *testing.T) {
		// The client's address alone is hashed: all the flows of one
		// address go to one backend. Over several addresses both get
		// some (the hash is fixed, so this is the same every run).
		forgetUDPFlows(t, s)
		perAddr := map[netip.Addr]string{}
		used := map[string]int{}
		addrs := []netip.Addr{nodetest.ClientAddr}
		for i := range 7 {
			addrs = append(addrs, s.ClientIP(i))
		}
		for _, a := range addrs {
			clientSource(t, s, a)
			tl := udpAsk(t, s, vipPort(5305), 100, 50, time.Second)
			require.Equal(t, 100, tl.Answered(), "from %s: lost %d, errors %d (%s)", a, tl.Lost, tl.Errors, tl.FirstError)
			require.Len(t, tl.ByBackend, 1, "the 50 flows from %s all on one backend: %v", a, tl.ByBackend)
			for b := range tl.ByBackend {
				perAddr[a] = b
				used[b]++
			}
		}
		clientSource(t, s, nodetest.ClientAddr)
		t.Logf("backend per client address: %v", perAddr)
		require.Len(t, used, 2, "the addresses spread over both backends: %v", perAddr)

		// Flows forgotten, the same addresses land where they did: the
		// hash, not conntrack, decides.
		forgetUDPFlows(t, s)
		for _, a := range addrs[:3] {
			clientSource(t, s, a)
			tl := udpAsk(t, s, vipPort(5305), 20, 10, time.Second)
			require.Equal(t, map[string]int{perAddr[a]: 20}, tl.ByBackend, "from %s again", a)
		}
		clientSource(t, s, nodetest.ClientAddr)
	})
}

// consistentSlots is the size of the table nftlb deals to 3 backends of a
// consistent service (its tableSize(3)).
const consistentSlots = 1021

// udpAsk asks server from the site's client n times over ports flows.
func udpAsk(t *testing.T, s *nodetest.Site, server netip.AddrPort, n, ports int, timeout time.Duration) dnstest.Tally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tl, err := dnstest.Ask(ctx, s.Client, server, n, ports, timeout)
	require.NoError(t, err)
	return tl
}

// flowsByBackend counts a tally's flows (source ports) per backend; a
// port two backends answered counts for both.
func flowsByBackend(tl dnstest.Tally) map[string]int {
	out := map[string]int{}
	for _, backends := range tl.PerPort {
		for b := range backends {
			out[b]++
		}
	}
	return out
}

// waitRotation waits until the node puts n backends of the kernel
// service svc in rotation, which is when its rules are in nftables.
func waitRotation(t *testing.T, s *nodetest.Site, svc string, n int) {
	t.Helper()
	tcpSvcEventually(t, 10*time.Second, svc+" in rotation", func() (bool, string) {
		in := 0
		var states []string
		for _, ss := range s.Status().Daemon.Services {
			if ss.Name != svc {
				continue
			}
			for _, b := range ss.Backends {
				states = append(states, b.Name+":"+b.State)
				if b.State == "rotation" {
					in++
				}
			}
		}
		return in == n, fmt.Sprint(states)
	})
}

// kernelFlows is the new flows nftables has sent to each backend of svc.
func kernelFlows(t *testing.T, s *nodetest.Site, svc string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, ss := range s.Status().Daemon.Services {
		if ss.Name == svc {
			for _, b := range ss.Backends {
				out[b.Name] = b.TotalConnections
			}
		}
	}
	return out
}

// forgetUDPFlows deletes the node's conntrack entries of UDP flows to the
// VIP, so that the next datagrams are new flows the balance decides.
func forgetUDPFlows(t *testing.T, s *nodetest.Site) {
	t.Helper()
	vipUDPFlows(t, s, func(c *conntrack.Conn, f conntrack.Flow) error {
		if err := c.Delete(f); err != nil {
			return fmt.Errorf("conntrack delete %v: %w", f.TupleOrig, err)
		}
		return nil
	})
}

// clientNodeSide is the node's address on the client's link, the
// client's route to the VIP (nodetest's site).
const clientNodeSide = "10.98.1.254"

// clientSource makes the client's datagrams to the VIP leave from addr
// (an address of the client host): the sockets dnstest.Ask opens are
// unbound, so the route's preferred source decides.
func clientSource(t *testing.T, s *nodetest.Site, addr netip.Addr) {
	t.Helper()
	s.Client.IP(t, "route", "replace", nodetest.VIP.String()+"/32", "via", clientNodeSide, "src", addr.String())
}
