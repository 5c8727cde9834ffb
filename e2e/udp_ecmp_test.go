package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/dnstest"
	"github.com/ober-ingress/ober/internal/testsite/ecmptest"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// ecmpFamily is one address family's share of TestUDPECMPConsistent: its
// VIP, the udp service on it, and the flows asked through it.
type ecmpFamily struct {
	name     string // IPv4, IPv6
	service  string
	vip      netip.Addr
	backends map[string]netip.Addr // by the name its dnsmasq answers
	flows    []*ecmpFlow
	// want is each flow's backend as the first round saw it.
	want map[netip.AddrPort]string
}

// A flow stays on its backend when ECMP moves it to another node: two
// nodes announce both VIPs to BIRD, each with the same udp services
// (balance consistent, three DNS servers; one service per address
// family). 100 flows per family from 10 client addresses are all
// answered, and the router spreads them over both nodes. One node's link
// goes down: once the router has only the other path, every flow the cut
// node carried arrives at the other node, which picks the same backend
// for it, and no flow's answers change backend. The link comes back: the
// cut node has forgotten its flows (its backends went out of rotation
// while it could not reach them), takes its share of the flows again,
// and picks as before.
func TestUDPECMPConsistent(t *testing.T) {
	const (
		clientAddrs  = 10
		portsPerAddr = 10
		queries      = 3 // per flow and round
		// minShare is the flows (of 100) each node must carry, for
		// taking one node away to move enough of them to show anything.
		minShare = 15
	)
	s := ecmptest.New(t, oberBin, ecmptest.Params{Nodes: 2})
	v4 := &ecmpFamily{name: "IPv4", service: "dns4", vip: ecmptest.VIP4, backends: map[string]netip.Addr{}}
	v6 := &ecmpFamily{name: "IPv6", service: "dns6", vip: ecmptest.VIP6, backends: map[string]netip.Addr{}}
	fams := []*ecmpFamily{v4, v6}
	for i, name := range []string{"ns1", "ns2", "ns3"} {
		v4.backends[name] = s.BackendIP(i)
		v6.backends[name] = s.BackendIP6(i)
	}
	for _, f := range fams {
		for name, a := range f.backends {
			dnstest.StartDnsmasq(t, s.Backend(), name, netip.AddrPortFrom(a, 53))
		}
	}
	for _, n := range s.Nodes {
		for _, sysctl := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
			out, err := n.NS.Exec(context.Background(), "sysctl", "-qw", sysctl).CombinedOutput()
			require.NoError(t, err, "%s: sysctl %s: %s", n.Name, sysctl, out)
		}
		c := s.Config(n)
		for _, f := range fams {
			c.Services = append(c.Services, f.config())
		}
		n.WriteConfig(c)
	}
	s.StartNodes()
	for _, n := range s.Nodes {
		waitKernelBackends(t, n, fams, "rotation")
	}
	for _, f := range fams {
		vip := netip.AddrPortFrom(f.vip, 53)
		require.Eventually(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tl, err := dnstest.Ask(ctx, s.Client, vip, 10, 10, time.Second)
			return err == nil && tl.Answered() == 10
		}, 20*time.Second, 200*time.Millisecond, "%s: the service answers", f.name)
	}

	var v4Addrs, v6Addrs []netip.Addr
	for i := range clientAddrs {
		v4Addrs = append(v4Addrs, s.ClientIP(i))
		v6Addrs = append(v6Addrs, s.ClientIP6(i))
	}
	v4.flows = openECMPFlows(t, s.Client, v4Addrs, portsPerAddr)
	v6.flows = openECMPFlows(t, s.Client, v6Addrs, portsPerAddr)

	// round asks on every flow and checks that each flow kept the
	// backend it had in the first round, and that every node's conntrack
	// translated the flows it holds to that backend. It returns, per
	// family and node, the flows the node holds.
	round := func(name string) map[*ecmpFamily]map[*ecmptest.Node]map[netip.AddrPort]netip.Addr {
		t.Helper()
		out := map[*ecmpFamily]map[*ecmptest.Node]map[netip.AddrPort]netip.Addr{}
		for _, f := range fams {
			got, problems := askECMPFlows(f.flows, netip.AddrPortFrom(f.vip, 53), queries)
			require.Empty(t, problems, "%s, %s: every query answered, and each flow by one backend", name, f.name)
			if f.want == nil {
				f.want = got
			}
			var changed []string
			perBackend := map[string]int{}
			for src, b := range got {
				perBackend[b]++
				if f.want[src] != b {
					changed = append(changed, fmt.Sprintf("%s: %s, was %s", src, b, f.want[src]))
				}
			}
			slices.Sort(changed)
			require.Zero(t, len(changed), "%s, %s: %d of %d flows changed backend, such as %v",
				name, f.name, len(changed), len(got), changed[:min(len(changed), 10)])
			out[f] = map[*ecmptest.Node]map[netip.AddrPort]netip.Addr{}
			var where []string
			for _, n := range s.Nodes {
				on, err := ctFlowsTo(n, f.vip, f.want)
				require.NoError(t, err)
				for src, a := range on {
					require.Equal(t, f.backends[f.want[src]], a, "%s, %s: %s translated flow %s to another backend than the one that answered",
						name, f.name, n.Name, src)
				}
				out[f][n] = on
				where = append(where, fmt.Sprintf("%s holds %d", n.Name, len(on)))
			}
			t.Logf("%s, %s: %d flows answered, by backend %v; %s", name, f.name, len(got), perBackend, strings.Join(where, ", "))
		}
		return out
	}

	// Both nodes carry flows, each flow on one node, and the flows use
	// more than one backend (all on one would prove nothing).
	before := round("both paths")
	for _, f := range fams {
		backends := map[string]bool{}
		for _, b := range f.want {
			backends[b] = true
		}
		require.GreaterOrEqual(t, len(backends), 2, "%s: the flows spread over the backends: %v", f.name, f.want)
		for _, n := range s.Nodes {
			require.GreaterOrEqual(t, len(before[f][n]), minShare, "%s: %s carries its share of the flows", f.name, n.Name)
		}
		for src := range f.want {
			_, on0 := before[f][s.Nodes[0]][src]
			_, on1 := before[f][s.Nodes[1]][src]
			require.True(t, on0 != on1, "%s: flow %s is on exactly one node (on %s: %v, on %s: %v)",
				f.name, src, s.Nodes[0].Name, on0, s.Nodes[1].Name, on1)
		}
	}

	// The flip: the victim's flows move to the other node, and keep
	// their backends there.
	victim, other := s.Nodes[1], s.Nodes[0]
	victim.LinkDown()
	s.WaitPaths(1, 30*time.Second)
	flipped := round("one path")
	for _, f := range fams {
		moved := 0
		for src := range before[f][victim] {
			_, ok := flipped[f][other][src]
			require.True(t, ok, "%s: flow %s that %s carried now reaches %s", f.name, src, victim.Name, other.Name)
			moved++
		}
		t.Logf("%s: %d of %d flows moved from %s to %s, none changed backend", f.name, moved, len(f.want), victim.Name, other.Name)
	}

	// Cut off, the victim's checks fail and its flows are deleted, so
	// that when the path comes back it chooses their backends afresh.
	waitKernelBackends(t, victim, fams, "out")
	for _, f := range fams {
		require.Eventually(t, func() bool {
			on, err := ctFlowsTo(victim, f.vip, f.want)
			return err == nil && len(on) == 0
		}, 5*time.Second, 100*time.Millisecond, "%s: %s deletes the flows of its backends out of rotation", f.name, victim.Name)
	}
	victim.LinkUp()
	waitKernelBackends(t, victim, fams, "rotation")
	s.WaitPaths(2, 30*time.Second)
	back := round("both paths again")
	for _, f := range fams {
		require.GreaterOrEqual(t, len(back[f][victim]), minShare, "%s: %s carries its share of the flows again", f.name, victim.Name)
	}
}

// config is the family's udp service: three DNS servers behind its VIP,
// balance consistent, each checked with a DNS query.
func (f *ecmpFamily) config() config.Service {
	svc := config.Service{
		Name: f.service, Mode: config.ModeUDP, Port: 53, Balance: config.BalanceConsistent,
		VIPs: []config.Addr{{Addr: f.vip}},
		// Three failures in a row: a backend that leaves the rotation
		// by a slow answer on a loaded machine would move flows itself.
		Health: &config.ServiceHealth{Kind: config.CheckProbe, Protocol: config.ProtocolUDP, Send: udpQuery(),
			ExpectRegexp: "backend=", Interval: config.Duration{Duration: 500 * time.Millisecond}, Fall: 3, Rise: 1},
	}
	// The same list, in the same order, on every node.
	names := make([]string, 0, len(f.backends))
	for name := range f.backends {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		svc.Backends = append(svc.Backends, config.BackendServer{Name: name, Address: netip.AddrPortFrom(f.backends[name], 53).String()})
	}
	return svc
}

// waitKernelBackends waits until every backend of the families' services
// is in state (rotation or out) on n.
func waitKernelBackends(t *testing.T, n *ecmptest.Node, fams []*ecmpFamily, state string) {
	t.Helper()
	want := 0
	for _, f := range fams {
		want += len(f.backends)
	}
	var last string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		st, err := n.Status()
		if err != nil {
			last = err.Error()
			continue
		}
		var seen []string
		for _, svc := range st.Daemon.Services {
			for _, f := range fams {
				if svc.Name != f.service {
					continue
				}
				for _, b := range svc.Backends {
					if b.State == state {
						seen = append(seen, svc.Name+"/"+b.Name)
					}
				}
			}
		}
		if len(seen) == want {
			return
		}
		last = fmt.Sprintf("those %s: %v", state, seen)
	}
	t.Fatalf("%s: want every backend %s; %s", n.Name, state, last)
}

// ecmpFlow is one client socket, open for the whole test: asking on it
// again is the same flow (addresses and ports), which is what the
// router's ECMP hash and the nodes' consistent hash see.
type ecmpFlow struct {
	src  netip.AddrPort
	conn *net.UDPConn
}

// openECMPFlows opens perAddr flows from each of addrs, in ns.
func openECMPFlows(t *testing.T, ns *netnstest.NS, addrs []netip.Addr, perAddr int) []*ecmpFlow {
	t.Helper()
	var flows []*ecmpFlow
	t.Cleanup(func() {
		for _, f := range flows {
			f.conn.Close()
		}
	})
	require.NoError(t, ns.Do(func() error {
		for _, a := range addrs {
			network := "udp4"
			if a.Is6() {
				network = "udp6"
			}
			for range perAddr {
				c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
				if err != nil {
					return fmt.Errorf("open a flow from %s: %w", a, err)
				}
				src := c.LocalAddr().(*net.UDPAddr).AddrPort()
				flows = append(flows, &ecmpFlow{src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), conn: c})
			}
		}
		return nil
	}))
	return flows
}

// askECMPFlows sends n queries for dnstest.QName on every flow at once,
// one after another on each, and returns the backend that answered each
// flow, with what went wrong: a query lost or answered wrongly, or a
// flow that more than one backend answered.
func askECMPFlows(flows []*ecmpFlow, server netip.AddrPort, n int) (map[netip.AddrPort]string, []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		mu       sync.Mutex
		got      = map[netip.AddrPort]string{}
		problems []string
		wg       sync.WaitGroup
	)
	for _, f := range flows {
		wg.Go(func() {
			for i := range n {
				b, err := f.exchange(ctx, server)
				mu.Lock()
				switch {
				case err != nil:
					problems = append(problems, fmt.Sprintf("flow %s, query %d: %v", f.src, i, err))
				case got[f.src] != "" && got[f.src] != b:
					problems = append(problems, fmt.Sprintf("flow %s, query %d: answered by %s, before by %s", f.src, i, b, got[f.src]))
				default:
					got[f.src] = b
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(problems)
	return got, problems
}

// exchange sends one query on f and returns the backend its answer names.
func (f *ecmpFlow) exchange(ctx context.Context, server netip.AddrPort) (string, error) {
	q := new(dns.Msg).SetQuestion(dnstest.QName, dns.TypeTXT)
	wire, err := q.Pack()
	if err != nil {
		return "", fmt.Errorf("pack query: %w", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := f.conn.SetReadDeadline(deadline); err != nil {
		return "", err
	}
	if _, err := f.conn.WriteToUDPAddrPort(wire, server); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 2048)
	for {
		size, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "", errors.New("no answer")
		}
		if err != nil {
			return "", fmt.Errorf("read: %w", err)
		}
		var r dns.Msg
		if err := r.Unpack(buf[:size]); err != nil {
			return "", fmt.Errorf("unpack answer from %s: %w", from, err)
		}
		if r.Id != q.Id {
			continue // a late answer to an earlier query
		}
		if from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); from != server {
			return "", fmt.Errorf("answer from %s, not %s", from, server)
		}
		for _, rr := range r.Answer {
			if txt, ok := rr.(*dns.TXT); ok {
				// dnstest's servers answer "backend=<name>".
				if name, ok := strings.CutPrefix(strings.Join(txt.Txt, ""), "backend="); ok && name != "" {
					return name, nil
				}
			}
		}
		return "", fmt.Errorf("answer %s names no backend: %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

// ctFlowsTo reads n's conntrack: for each flow of flows (by source) that
// n holds to vip:53, the backend n translated it to.
func ctFlowsTo(n *ecmptest.Node, vip netip.Addr, flows map[netip.AddrPort]string) (map[netip.AddrPort]netip.Addr, error) {
	out := map[netip.AddrPort]netip.Addr{}
	err := n.NS.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return fmt.Errorf("conntrack of %s: %w", n.Name, err)
		}
		defer c.Close()
		all, err := c.Dump(nil)
		if err != nil {
			return fmt.Errorf("dump conntrack of %s: %w", n.Name, err)
		}
		for _, f := range all {
			o := f.TupleOrig
			if o.Proto.Protocol != unix.IPPROTO_UDP || o.IP.DestinationAddress != vip || o.Proto.DestinationPort != 53 {
				continue
			}
			src := netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort)
			if _, ours := flows[src]; ours {
				out[src] = f.TupleReply.IP.SourceAddress
			}
		}
		return nil
	})
	return out, err
}
