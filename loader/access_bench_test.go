package loader

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/loader/packet"
)

// The services of the access list benchmark, on the test site's vip4:
// the same service three times, without a list and with lists of 10 and
// 10,000 rules.
const (
	portAccessNone = 9100
	portAccess10   = 9110
	portAccess10k  = 9120
	aclBench10     = AccessID(10)
	aclBench10k    = AccessID(11)
	accessBenchCPU = 0
	accessRepeat   = 100000
)

var (
	// accessClient is admitted by the last rule of each list, and by no
	// other; accessStranger by no rule: the default turns it away.
	accessClient   = netip.MustParseAddr("100.64.7.7")
	accessStranger = netip.MustParseAddr("100.64.8.8")
	// accessReserved is where the random rules never go.
	accessReserved = netip.MustParsePrefix("100.64.0.0/16")
)

// BenchmarkXDPAccess is the cost of a service's access list in XDP: a SYN
// from a client the list admits, to a service with a list of 10 or
// 10,000 random disjoint IPv4 prefixes (/16 to /32, the client's the last
// rule; default deny), beside the same service without a list. Each op
// runs the case's packet and then the no-list one, one BPF_PROG_TEST_RUN
// with repeat 1 each, on CPU 0; every instance is on another CPU, so each
// SYN is steered (redirected) there, as on a node. ns/pkt is the mean of
// the kernel's durations for the case's packet, none-ns/pkt the same for
// the interleaved no-list packet, and x-none their ratio; ns/pkt-rep and
// none-ns/pkt-rep are the kernel's per-run figures for 100,000 repeats of
// one call, and x-none-rep their ratio. ns/op is Go's wall time for the
// pair, syscalls included. BENCHMARKS.md has the figures:
//
//	go test -run '^$' -bench XDPAccess -benchtime 200000x -count 5 ./loader/
func BenchmarkXDPAccess(b *testing.B) {
	d := openUnpinnedDataplane(b)
	ncpu, err := ebpf.PossibleCPU()
	require.NoError(b, err)
	want := ActionRedirect
	if ncpu == 1 {
		want = ActionPass // the instances' CPU is the bench thread's
	}
	var insts []Instance
	for i := range testInsts {
		insts = append(insts, Instance{Index: uint32(i), CPU: ncpu - 1})
	}
	require.NoError(b, d.SetInstances(insts))

	svcs := siteServices()
	for port, acl := range map[uint16]AccessID{portAccessNone: 0, portAccess10: aclBench10, portAccess10k: aclBench10k} {
		svcs = append(svcs, Service{VIP: vip4, Proto: ProtoTCP, Port: port, Listener: listenHTTPS, Dispatch: true, Access: acl})
	}
	require.NoError(b, d.SetServices(siteVIPs(), svcs))
	rng := rand.New(rand.NewPCG(16, 10000))
	for id, n := range map[AccessID]int{aclBench10: 10, aclBench10k: 10000} {
		rules := append(disjointRules(rng, n-1, accessReserved), AccessRule{Prefix: netip.PrefixFrom(accessClient, 24).Masked(), Allow: true})
		es, err := CompileAccess(rules, false)
		require.NoError(b, err)
		require.Len(b, es, n+2, "every rule kept, and the two defaults")
		require.NoError(b, d.SetAccessList(id, es))
	}

	syn := func(src netip.Addr, port uint16) []byte { return tcp(src, 40000, vip4, port, packet.SYN).Bytes() }
	none := syn(accessClient, portAccessNone)
	cases := []struct {
		name string
		port uint16
	}{{"none", portAccessNone}, {"10", portAccess10}, {"10000", portAccess10k}}

	// Each case takes the path it is meant to measure: the client is
	// steered, the stranger turned away by the list (so it is looked at).
	onCPU(b, accessBenchCPU, func() {
		r := newXDPRunner(b, d)
		for _, c := range cases {
			got, err := r.run(syn(accessClient, c.port))
			require.NoError(b, err, c.name)
			require.Equal(b, ReasonSteered, got.Reason, c.name)
			require.Equal(b, want, got.Action, c.name)
			got, err = r.run(syn(accessStranger, c.port))
			require.NoError(b, err, c.name)
			if c.port == portAccessNone {
				require.Equal(b, ReasonSteered, got.Reason, "no list: the stranger is served")
			} else {
				require.Equal(b, ReasonAccessDenied, got.Reason, "%s: the list turns the stranger away", c.name)
			}
		}
	})

	prog := d.XDPProgram()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			// The sub-benchmark's goroutine is its own: its thread stays
			// locked and pinned, and goes with it.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(accessBenchCPU)
			require.NoError(b, unix.SchedSetaffinity(0, &set))
			pkt := syn(accessClient, c.port)
			var kernel, kernelNone time.Duration
			n := 0
			for b.Loop() {
				dt, err := runAccess(prog, pkt, want, 1)
				if err != nil {
					b.Fatal(err)
				}
				dn, err := runAccess(prog, none, want, 1)
				if err != nil {
					b.Fatal(err)
				}
				kernel += dt
				kernelNone += dn
				n++
			}
			rep, err := runAccess(prog, pkt, want, accessRepeat)
			require.NoError(b, err)
			repNone, err := runAccess(prog, none, want, accessRepeat)
			require.NoError(b, err)
			b.ReportMetric(float64(kernel)/float64(n), "ns/pkt")
			b.ReportMetric(float64(kernelNone)/float64(n), "none-ns/pkt")
			b.ReportMetric(float64(kernel)/float64(kernelNone), "x-none")
			b.ReportMetric(float64(rep), "ns/pkt-rep")
			b.ReportMetric(float64(repNone), "none-ns/pkt-rep")
			b.ReportMetric(float64(rep)/float64(repNone), "x-none-rep")
		})
	}
}

// runAccess is one BPF_PROG_TEST_RUN of pkt, repeated, and the kernel's
// time per run.
func runAccess(prog *ebpf.Program, pkt []byte, want Action, repeat int) (time.Duration, error) {
	ret, d, err := prog.Benchmark(pkt, repeat, nil)
	if err != nil {
		return 0, err
	}
	if got := Action(ret); got != want {
		return 0, fmt.Errorf("xdp returned %s, want %s (did the thread leave CPU %d?)", got, want, accessBenchCPU)
	}
	return d, nil
}

// disjointRules are n random IPv4 prefixes, /16 to /32, none of which
// holds or lies in another or reserved, each allow or deny at random:
// rules whose order does not matter, none shadowed by another.
func disjointRules(rng *rand.Rand, n int, reserved netip.Prefix) []AccessRule {
	// taken has every kept prefix; inside every prefix that holds one
	// (so a candidate that holds a kept prefix is found in one lookup).
	taken, inside := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	keep := func(p netip.Prefix) {
		taken[p] = true
		for bits := p.Bits() - 1; bits >= 0; bits-- {
			inside[netip.PrefixFrom(p.Addr(), bits).Masked()] = true
		}
	}
	overlaps := func(p netip.Prefix) bool {
		if inside[p] {
			return true
		}
		for bits := p.Bits(); bits >= 0; bits-- {
			if taken[netip.PrefixFrom(p.Addr(), bits).Masked()] {
				return true
			}
		}
		return false
	}
	keep(reserved)
	var out []AccessRule
	for len(out) < n {
		var a [4]byte
		for i := range a {
			a[i] = byte(rng.UintN(256))
		}
		p := netip.PrefixFrom(netip.AddrFrom4(a), 16+rng.IntN(17)).Masked()
		if overlaps(p) {
			continue
		}
		keep(p)
		out = append(out, AccessRule{Prefix: p, Allow: rng.IntN(2) == 0})
	}
	return out
}
