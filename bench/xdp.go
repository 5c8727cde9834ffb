// Package bench is ober's benchmark harness. This part measures what
// ober's XDP program costs per packet; the full GB/s harness (network
// namespace topology, load generator, comparisons) comes later.
//
// # XDP cost
//
// XDPCost opens a throwaway dataplane, configures a realistic site through
// the public loader API (IPv4 and IPv6 VIPs, :443 dispatched by a
// 65537-slot Maglev table over four instances on CPUs 0 and 1 with
// steering on, :80 enforcing a whitelist of about 1000 IPv4 and IPv6
// prefixes) and runs one packet per path through the program with
// BPF_PROG_TEST_RUN, beside floor_xdp (bpf/floor.c), a program that only
// returns XDP_PASS.
//
// Method: one run per packet as Katran's tester does, since programs may
// rewrite. Each measured packet is one BPF_PROG_TEST_RUN with repeat=1 on
// a fresh copy of the input (the kernel copies the frame in for every
// call), and its time is the kernel's own duration for that run. That
// excludes the syscall but includes the kernel's timing overhead (two
// clock reads around the run), which is why the floor program is measured
// beside every case, over the same frame, its runs interleaved with the
// case's: "ober minus floor" is what ober's decision costs. For the cases
// whose program does not rewrite the packet a second figure is given, the
// kernel's per-run time for one BPF_PROG_TEST_RUN of many repeats over the
// same buffer, which is lower because the timing overhead is amortised.
//
// The handoff cases run with drain handoff on (a node in transition): one
// ACK whose flow has a socket, the cost of the orphan check on every
// segment during a transition, and one whose flow has none and no record
// of another node's. The program
// asks the kernel for the flow's socket, so the benchmark runs in a
// network namespace of its own, holding that socket (and a listener on
// the VIP) and nothing else; the other cases do not depend on it.
//
// The benchmarking thread is pinned to CPU 0 (BenchCPU) so that the
// steering decision is deterministic: the steered cases use flows whose
// Maglev instance runs on CPU 1, so the program redirects them through the
// cpumap (BPF_PROG_TEST_RUN returns XDP_REDIRECT without sending the frame
// anywhere). Before measuring, one run per case checks that the program
// took the expected path, by its action and by the verdict counter it
// moved: a benchmark that measures the wrong path is worthless.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/loader"
	"github.com/ober-ingress/ober/loader/packet"
)

// BenchCPU is the CPU the benchmarking thread runs on.
const BenchCPU = 0

// Defaults for XDPOptions.
const (
	DefaultXDPPackets = 100000
	DefaultXDPRepeat  = 100000
)

// XDPCase is one frame measured through an XDP program.
type XDPCase struct {
	// Name is short and has no spaces (it names a sub-benchmark).
	Name string
	// Desc says which path the frame takes.
	Desc string
	// Packet is the Ethernet frame given to the program.
	Packet []byte
	// WantAction is the action the program must return.
	WantAction loader.Action
	// WantReason is the verdict counter ober's program must move: it tells
	// apart paths that end in the same action (a pass for a non-VIP and a
	// pass of a flow steered to the local CPU, say). Unused for the floor.
	WantReason loader.Reason
	// Rewrites marks a case whose program may rewrite the frame (a TCP RST
	// answer): it gets no repeat figure, because every run after the first
	// would see the rewritten frame.
	Rewrites bool
	// Floor runs floor_xdp instead of ober's program. The floor case's
	// "floor" column is then a second, independent measurement of the same
	// program: its difference shows the noise of the method.
	Floor bool
	// Handoff runs the case with drain handoff on, a node in transition
	// (siteHandoff); the other cases run with it off.
	Handoff bool
}

// XDPResult is the cost of one case. Times are nanoseconds per packet as
// the kernel measured them.
type XDPResult struct {
	Case   string
	Desc   string
	Action loader.Action
	// Bytes is the frame's length.
	Bytes int
	// Packets is the number of repeat=1 runs of each program.
	Packets int
	// NsPerPacket is the mean kernel duration of one repeat=1 run of the
	// case's program; NsPerPacketP50 is the median.
	NsPerPacket    float64
	NsPerPacketP50 float64
	// NsPerPacketRepeat is the kernel's per-run time for Repeat runs in
	// one BPF_PROG_TEST_RUN; 0 when not measured (the case rewrites).
	NsPerPacketRepeat float64
	// Repeat is the repeat count of NsPerPacketRepeat and FloorNsRepeat.
	Repeat int
	// FloorNs, FloorNsP50 and FloorNsRepeat are the same figures for
	// floor_xdp over the same frame.
	FloorNs       float64
	FloorNsP50    float64
	FloorNsRepeat float64
}

// OverFloor is the case's mean cost minus the floor's.
func (r XDPResult) OverFloor() float64 { return r.NsPerPacket - r.FloorNs }

// RatioToFloor is the case's mean cost divided by the floor's.
func (r XDPResult) RatioToFloor() float64 { return r.NsPerPacket / r.FloorNs }

// XDPProgress reports how far XDPCost got.
type XDPProgress struct {
	Case        string
	Done, Total int // packets of the case measured so far, of Total
}

// XDPOptions configure XDPCost.
type XDPOptions struct {
	// Root is a directory on a bpffs (the caller mounts it). The benchmark
	// pins a throwaway dataplane in a new directory under it and removes
	// it afterwards; it never touches a dataplane already pinned there.
	Root string
	// Packets is the number of repeat=1 runs per case and program;
	// DefaultXDPPackets when 0.
	Packets int
	// Repeat is the repeat count of the in-kernel figure; DefaultXDPRepeat
	// when 0.
	Repeat int
	// Progress, when set, is called from the measuring goroutine at the
	// start and end of each case and every few percent in between.
	Progress func(XDPProgress)
}

// XDPCost measures the cost of ober's XDP program per packet for each of
// the site's cases, beside the floor program.
func XDPCost(ctx context.Context, opts XDPOptions) (rs []XDPResult, err error) {
	if opts.Root == "" {
		return nil, errors.New("xdp bench: no bpffs root given")
	}
	if opts.Packets == 0 {
		opts.Packets = DefaultXDPPackets
	}
	if opts.Repeat == 0 {
		opts.Repeat = DefaultXDPRepeat
	}
	if opts.Packets < 0 || opts.Repeat < 0 {
		return nil, fmt.Errorf("xdp bench: packets %d and repeat %d must be positive", opts.Packets, opts.Repeat)
	}
	s, err := openSite(opts.Root)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, s.close()) }()

	err = s.onBenchThread(func() error {
		if err := s.verify(); err != nil {
			return err
		}
		for _, c := range s.cases {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, err := s.measure(ctx, c, opts)
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rs, nil
}

// FormatXDP prints results as two side-by-side tables, ober against the
// floor: the repeat=1 figures, then the in-kernel repeat figures.
func FormatXDP(w io.Writer, rs []XDPResult) error {
	if len(rs) == 0 {
		_, err := fmt.Fprintln(w, "no XDP results")
		return err
	}
	repeat := 0
	for _, r := range rs {
		repeat = max(repeat, r.Repeat)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "XDP cost per packet, ns: one BPF_PROG_TEST_RUN (repeat=1) per packet, kernel-timed, "+
		"%d runs per program, on CPU %d;\nfloor = floor_xdp (XDP_PASS) over the same frame, runs interleaved\n",
		rs[0].Packets, BenchCPU)
	fmt.Fprintln(tw, "case\taction\tframe B\tober\tober p50\tfloor\tfloor p50\tober-floor\tx floor\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.0f\t%.1f\t%.0f\t%.1f\t%.2f\t\n", r.Case, r.Action, r.Bytes,
			r.NsPerPacket, r.NsPerPacketP50, r.FloorNs, r.FloorNsP50, r.OverFloor(), r.RatioToFloor())
	}
	fmt.Fprintf(tw, "\nin-kernel repeat, ns per run (the kernel rounds down to whole ns): "+
		"one BPF_PROG_TEST_RUN of %d runs over one buffer, timing amortised\n", repeat)
	fmt.Fprintln(tw, "case\tober\tfloor\tober-floor\tx floor\t")
	for _, r := range rs {
		if r.NsPerPacketRepeat == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t\n", r.Case)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.2f\t\n", r.Case, r.NsPerPacketRepeat, r.FloorNsRepeat,
			r.NsPerPacketRepeat-r.FloorNsRepeat, r.NsPerPacketRepeat/r.FloorNsRepeat)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	width := 0
	for _, r := range rs {
		width = max(width, len(r.Case))
	}
	for _, r := range rs {
		if _, err := fmt.Fprintf(w, "%-*s %s\n", width, r.Case, r.Desc); err != nil {
			return err
		}
	}
	return nil
}

// ---- the site --------------------------------------------------------

// The site's addresses. 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and
// 2001:db8::/32 are documentation ranges.
var (
	siteVIP4s = []netip.Addr{
		netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"),
		netip.MustParseAddr("192.0.2.12"), netip.MustParseAddr("192.0.2.13"),
	}
	siteVIP6s = []netip.Addr{
		netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8::11"),
		netip.MustParseAddr("2001:db8::12"), netip.MustParseAddr("2001:db8::13"),
	}
	siteHost4   = netip.MustParseAddr("192.0.2.1") // the node's address on the router link
	siteHost6   = netip.MustParseAddr("2001:db8::1")
	siteMgmt4   = netip.MustParseAddr("192.0.2.200") // management address: not a VIP
	siteClient4 = netip.MustParseAddr("198.51.100.7")
	siteClient6 = netip.MustParseAddr("2001:db8:c::7")
	stranger4   = netip.MustParseAddr("203.0.113.99") // in no whitelist
	stranger6   = netip.MustParseAddr("2001:db8:bad::99")
	siteRouter4 = netip.MustParseAddr("203.0.113.1")
	siteRouter6 = netip.MustParseAddr("2001:db8:ffff::1")
	sitePeer4   = netip.MustParseAddr("192.0.2.2") // another node of the cluster

	// siteHandoff is the handoff cases' set: a node is in transition and
	// no flow is recorded, so an orphan is dropped (which spares the
	// benchmark a route to a peer).
	siteHandoff = loader.Handoff{Self: siteHost4, Nodes: []netip.Addr{sitePeer4, siteHost4}, Active: true}

	clientMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	nodeMAC   = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

const (
	siteInstances    = 4
	siteMaglevSeed   = 0x0be70be7
	listenerHTTPS    = 0
	listenerHTTP     = 1
	siteWhitelist4   = 700 // random IPv4 prefixes in frontend-http
	siteWhitelist6   = 300 // and IPv6 ones
	steerCPU         = 1   // instances run on CPUs 0..steerCPU
	firstClientPort  = 40000
	ackPayloadLength = 1400
)

func siteVIPs() []loader.VIP {
	var out []loader.VIP
	for _, a := range slices.Concat(siteVIP4s, siteVIP6s) {
		out = append(out, loader.VIP{Addr: a})
	}
	return append(out, loader.VIP{Addr: siteHost4, Host: true}, loader.VIP{Addr: siteHost6, Host: true})
}

func siteServices() []loader.Service {
	var out []loader.Service
	for _, a := range slices.Concat(siteVIP4s, siteVIP6s) {
		out = append(out,
			loader.Service{VIP: a, Proto: loader.ProtoTCP, Port: 443, Listener: listenerHTTPS, Dispatch: true},
			loader.Service{VIP: a, Proto: loader.ProtoTCP, Port: 80, Listener: listenerHTTP, Dispatch: true,
				Enforce: true, Whitelist: loader.WhitelistFrontendHTTP},
		)
	}
	for _, h := range []netip.Addr{siteHost4, siteHost6} {
		out = append(out, loader.Service{VIP: h, Proto: loader.ProtoTCP, Port: 179,
			Enforce: true, Whitelist: loader.WhitelistRouters})
	}
	return out
}

// siteWhitelist is frontend-http: the site's client networks and about
// 1000 prefixes spread over the address space, so that a lookup walks a
// trie of realistic depth. None of them holds a stranger.
func siteWhitelist() []netip.Prefix {
	rng := rand.New(rand.NewPCG(0x0be7, 0x1157))
	out := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:c::/48")}
	bits4 := []int{12, 16, 20, 22, 24, 24, 24, 26, 28, 29, 32, 32}
	for n := 0; n < siteWhitelist4; {
		var a [4]byte
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		p := netip.PrefixFrom(netip.AddrFrom4(a), bits4[rng.IntN(len(bits4))]).Masked()
		if p.Contains(stranger4) || p.Contains(siteClient4) {
			continue
		}
		out = append(out, p)
		n++
	}
	bits6 := []int{29, 32, 40, 44, 48, 48, 48, 52, 56, 64, 64, 128}
	for n := 0; n < siteWhitelist6; {
		var a [16]byte
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		a[0] = 0x20 | a[0]&0x1f // global unicast, 2000::/3
		p := netip.PrefixFrom(netip.AddrFrom16(a), bits6[rng.IntN(len(bits6))]).Masked()
		if p.Contains(stranger6) || p.Contains(siteClient6) {
			continue
		}
		out = append(out, p)
		n++
	}
	return out
}

func siteInstancesOn() []loader.Instance {
	var out []loader.Instance
	for i := 0; i < siteInstances; i++ {
		out = append(out, loader.Instance{Index: uint32(i), CPU: i % 2})
	}
	return out
}

// roundRobin is a stand-in Maglev table: the XDP program's cost does not
// depend on how the table was built, only on its size.
func roundRobin(m, n int) []uint32 {
	t := make([]uint32, m)
	for i := range t {
		t[i] = uint32(i % n)
	}
	return t
}

// synOptions are a Linux SYN's: MSS, SACK permitted, timestamps, window scale.
var synOptions = []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 3, 3, 7}

// tsOptions are an established segment's: two NOPs and timestamps.
var tsOptions = []byte{1, 1, 8, 10, 0, 0, 0x10, 0x01, 0, 0, 0x20, 0}

func frame(src, dst netip.AddrPort, flags uint8, opts, payload []byte) []byte {
	s := packet.TCP(src, dst, flags)
	s.SrcMAC, s.DstMAC = clientMAC, nodeMAC
	s.TCPOptions = opts
	s.Payload = payload
	return s.Bytes()
}

// site is a dataplane configured as the benchmark's site, with the floor
// program beside it and the cases to run through them.
type site struct {
	dir   string
	dp    *loader.Dataplane
	floor *ebpf.Program
	cases []XDPCase
	// netns is the benchmark's network namespace (see newBenchNetns); held
	// its sockets, closed with the site.
	netns *os.File
	held  []io.Closer
	// flow4 is the IPv4 ACK cases' flow, which has a socket in netns.
	flow4 [2]netip.AddrPort
}

// openSite pins a new dataplane in a fresh directory under root (a bpffs)
// and configures the site.
func openSite(root string) (s *site, err error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("xdp bench: %w", err)
	}
	if ncpu <= steerCPU {
		return nil, fmt.Errorf("xdp bench: needs at least %d CPUs to measure a redirect, this machine has %d",
			steerCPU+1, ncpu)
	}
	dir, err := os.MkdirTemp(root, "xdp-bench-")
	if err != nil {
		return nil, fmt.Errorf("xdp bench: %w", err)
	}
	s = &site{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
			s = nil
		}
	}()
	if s.dp, err = loader.Open(loader.Options{Root: dir}); err != nil {
		return s, fmt.Errorf("xdp bench: %w", err)
	}
	var objs floorObjects
	if err := loadFloorObjects(&objs, nil); err != nil {
		return s, fmt.Errorf("xdp bench: load floor program: %w", err)
	}
	s.floor = objs.FloorXdp

	if err := s.dp.SetServices(siteVIPs(), siteServices()); err != nil {
		return s, fmt.Errorf("xdp bench: %w", err)
	}
	if _, err := s.dp.SetWhitelist(loader.WhitelistFrontendHTTP, siteWhitelist()); err != nil {
		return s, fmt.Errorf("xdp bench: %w", err)
	}
	routers := []netip.Prefix{netip.PrefixFrom(siteRouter4, 32), netip.PrefixFrom(siteRouter6, 128)}
	if _, err := s.dp.SetWhitelist(loader.WhitelistRouters, routers); err != nil {
		return s, fmt.Errorf("xdp bench: %w", err)
	}
	if err := s.dp.SetMaglev(siteMaglevSeed, roundRobin(loader.MaglevDefaultSize, siteInstances)); err != nil {
		return s, fmt.Errorf("xdp bench: %w", err)
	}
	if err := s.dp.SetInstances(siteInstancesOn()); err != nil {
		return s, fmt.Errorf("xdp bench: %w", err)
	}
	if err := s.dp.SetSteering(true); err != nil {
		return s, fmt.Errorf("xdp bench: %w", err)
	}
	if s.cases, err = s.makeCases(); err != nil {
		return s, err
	}
	if s.netns, s.held, err = newBenchNetns(s.flow4[0], s.flow4[1]); err != nil {
		return s, err
	}
	return s, nil
}

// newBenchNetns makes the benchmark's network namespace: lo up with the
// client's and the VIP's address, a listener on vip and one connection to
// it from client. A thread of its own unshares it and dies with it
// locked, so no thread of the process is left in it; the namespace lives
// as long as the returned file and sockets.
func newBenchNetns(client, vip netip.AddrPort) (*os.File, []io.Closer, error) {
	type result struct {
		ns   *os.File
		held []io.Closer
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		var r result
		defer func() { done <- r }()
		fail := func(err error) {
			for _, c := range r.held {
				c.Close()
			}
			r = result{err: fmt.Errorf("xdp bench: network namespace: %w", err)}
		}
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			fail(err)
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		for _, a := range []netip.Addr{client.Addr(), vip.Addr()} {
			if err == nil {
				err = netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}})
			}
		}
		if err != nil {
			fail(err)
			return
		}
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		ln, err := lc.Listen(context.Background(), "tcp", vip.String())
		if err != nil {
			fail(err)
			return
		}
		r.held = append(r.held, ln)
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(client), Timeout: 5 * time.Second}
		d.SetMultipathTCP(false)
		c, err := d.Dial("tcp", vip.String())
		if err != nil {
			fail(err)
			return
		}
		r.held = append(r.held, c)
		sc, err := ln.Accept()
		if err != nil {
			fail(err)
			return
		}
		r.held = append(r.held, sc)
		if r.ns, err = os.Open("/proc/thread-self/ns/net"); err != nil {
			fail(err)
		}
	}()
	r := <-done
	return r.ns, r.held, r.err
}

// makeCases builds the frames. The steered flows are found with the Go
// reference model of the program: the first client port whose flow the
// program, run on BenchCPU, redirects to another CPU.
func (s *site) makeCases() ([]XDPCase, error) {
	snap, err := s.dp.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("xdp bench: %w", err)
	}
	model := loader.NewModel(snap)
	redirected := func(client, vip netip.Addr) (netip.AddrPort, loader.Decision, error) {
		dst := netip.AddrPortFrom(vip, 443)
		for port := firstClientPort; port < 65536; port++ {
			src := netip.AddrPortFrom(client, uint16(port))
			d := model.XDP(frame(src, dst, packet.SYN, synOptions, nil), BenchCPU)
			if d.Action == loader.ActionRedirect {
				return src, d, nil
			}
		}
		return netip.AddrPort{}, loader.Decision{}, fmt.Errorf("xdp bench: no client port of %s is steered away from CPU %d", client, BenchCPU)
	}
	src4, dec4, err := redirected(siteClient4, siteVIP4s[0])
	if err != nil {
		return nil, err
	}
	src6, dec6, err := redirected(siteClient6, siteVIP6s[0])
	if err != nil {
		return nil, err
	}
	https4 := netip.AddrPortFrom(siteVIP4s[0], 443)
	s.flow4 = [2]netip.AddrPort{src4, https4}
	orphan4 := netip.AddrPortFrom(src4.Addr(), src4.Port()+1) // no socket has it
	https6 := netip.AddrPortFrom(siteVIP6s[0], 443)
	steered := func(what string, src netip.AddrPort, dec loader.Decision) string {
		return fmt.Sprintf("%s from %s: Maglev instance %d runs on CPU %d, the bench on CPU %d: cpumap redirect",
			what, src, dec.Instance, siteInstancesOn()[dec.Instance].CPU, BenchCPU)
	}
	syn4 := frame(src4, https4, packet.SYN, synOptions, nil)
	payload := make([]byte, ackPayloadLength)
	for i := range payload {
		payload[i] = byte(i)
	}
	return []XDPCase{{
		Name: "syn-v4-redirect", Packet: syn4,
		WantAction: loader.ActionRedirect, WantReason: loader.ReasonSteered,
		Desc: steered("SYN of a new flow to "+https4.String(), src4, dec4),
	}, {
		Name: "syn-v6-redirect", Packet: frame(src6, https6, packet.SYN, synOptions, nil),
		WantAction: loader.ActionRedirect, WantReason: loader.ReasonSteered,
		Desc: steered("SYN of a new flow to "+https6.String(), src6, dec6),
	}, {
		Name:       "ack1400-v4-redirect",
		Packet:     frame(src4, https4, packet.ACK|packet.PSH, tsOptions, payload),
		WantAction: loader.ActionRedirect, WantReason: loader.ReasonSteered,
		Desc: steered(fmt.Sprintf("ACK with %d payload bytes, same flow,", ackPayloadLength), src4, dec4),
	}, {
		Name:       "ack1400-v4-handoff-local",
		Packet:     frame(src4, https4, packet.ACK|packet.PSH, tsOptions, payload),
		WantAction: loader.ActionRedirect, WantReason: loader.ReasonSteered, Handoff: true,
		Desc: "the ack1400-v4-redirect frame, handoff on (a node in transition): its socket is found, then the redirect",
	}, {
		Name:       "ack1400-v4-handoff-orphan",
		Packet:     frame(orphan4, https4, packet.ACK|packet.PSH, tsOptions, payload),
		WantAction: loader.ActionDrop, WantReason: loader.ReasonHandoffUnknown, Handoff: true,
		Desc: fmt.Sprintf("the same from %s, handoff on: no socket but the VIP's listener, no node's record: drop", orphan4),
	}, {
		Name: "wl-drop-v4",
		Packet: frame(netip.AddrPortFrom(stranger4, firstClientPort), netip.AddrPortFrom(siteVIP4s[0], 80),
			packet.SYN, synOptions, nil),
		WantAction: loader.ActionDrop, WantReason: loader.ReasonWhitelistDrop,
		Desc: fmt.Sprintf("SYN from %s to %s:80 (whitelist enforced, %d-prefix LPM trie): drop",
			stranger4, siteVIP4s[0], siteWhitelist4+siteWhitelist6+2),
	}, {
		Name: "wl-drop-v6",
		Packet: frame(netip.AddrPortFrom(stranger6, firstClientPort), netip.AddrPortFrom(siteVIP6s[0], 80),
			packet.SYN, synOptions, nil),
		WantAction: loader.ActionDrop, WantReason: loader.ReasonWhitelistDrop,
		Desc: fmt.Sprintf("SYN from %s to [%s]:80 (whitelist enforced): drop", stranger6, siteVIP6s[0]),
	}, {
		Name: "non-vip-v4-pass",
		Packet: frame(netip.AddrPortFrom(siteClient4, firstClientPort), netip.AddrPortFrom(siteMgmt4, 22),
			packet.ACK, tsOptions, nil),
		WantAction: loader.ActionPass, WantReason: loader.ReasonNotVIP,
		Desc: fmt.Sprintf("ACK to %s:22, the host's own address (not a VIP): pass untouched", siteMgmt4),
	}, {
		Name: "floor", Packet: syn4, Floor: true, WantAction: loader.ActionPass,
		Desc: "floor_xdp (return XDP_PASS) over the syn-v4 frame; its floor column is a second run of itself",
	}}, nil
}

func (s *site) prog(c XDPCase) *ebpf.Program {
	if c.Floor {
		return s.floor
	}
	return s.dp.XDPProgram()
}

// useHandoff sets drain handoff as case c wants it.
func (s *site) useHandoff(c XDPCase) error {
	h := loader.Handoff{}
	if c.Handoff {
		h = siteHandoff
	}
	if err := s.dp.SetHandoff(h); err != nil {
		return fmt.Errorf("xdp bench: case %s: %w", c.Name, err)
	}
	return nil
}

// verify runs every case once and checks its action and, for ober's
// program, the one verdict counter it moved. Call it on a bench thread.
func (s *site) verify() error {
	for _, c := range s.cases {
		if err := s.useHandoff(c); err != nil {
			return err
		}
		before, err := s.dp.Counters()
		if err != nil {
			return fmt.Errorf("xdp bench: %w", err)
		}
		ret, _, err := s.prog(c).Benchmark(c.Packet, 1, nil)
		if err != nil {
			return fmt.Errorf("xdp bench: case %s: %w", c.Name, err)
		}
		if got := loader.Action(ret); got != c.WantAction {
			return fmt.Errorf("xdp bench: case %s: program returned %s, want %s: it would measure the wrong path",
				c.Name, got, c.WantAction)
		}
		if c.Floor {
			continue
		}
		after, err := s.dp.Counters()
		if err != nil {
			return fmt.Errorf("xdp bench: %w", err)
		}
		var moved []string
		for _, v := range after.Verdicts {
			if d := v.Packets - before.Get(v.Reason, v.Action).Packets; d != 0 {
				moved = append(moved, fmt.Sprintf("%s/%s+%d", v.Reason, v.Action, d))
			}
		}
		want := fmt.Sprintf("%s/%s+1", c.WantReason, c.WantAction)
		if len(moved) != 1 || moved[0] != want {
			return fmt.Errorf("xdp bench: case %s: counters moved %v, want %s: it would measure the wrong path",
				c.Name, moved, want)
		}
	}
	return nil
}

// runOnce is one measured packet: one BPF_PROG_TEST_RUN with repeat=1 and
// the kernel's duration for it.
// want is c.WantAction for the case's program, pass for the floor.
func runOnce(prog *ebpf.Program, c XDPCase, want loader.Action) (time.Duration, error) {
	ret, d, err := prog.Benchmark(c.Packet, 1, nil)
	if err != nil {
		return 0, fmt.Errorf("xdp bench: case %s: %w", c.Name, err)
	}
	if got := loader.Action(ret); got != want {
		return 0, fmt.Errorf("xdp bench: case %s: %s returned %s, want %s (did the thread leave CPU %d?)",
			c.Name, progName(prog), got, want, BenchCPU)
	}
	return d, nil
}

func progName(p *ebpf.Program) string {
	if info, err := p.Info(); err == nil {
		return info.Name
	}
	return "program"
}

// runRepeat is the kernel's per-run time for repeat runs in one call.
func runRepeat(prog *ebpf.Program, c XDPCase, want loader.Action, repeat int) (time.Duration, error) {
	ret, d, err := prog.Benchmark(c.Packet, repeat, nil)
	if err != nil {
		return 0, fmt.Errorf("xdp bench: case %s: repeat %d: %w", c.Name, repeat, err)
	}
	if got := loader.Action(ret); got != want {
		return 0, fmt.Errorf("xdp bench: case %s: %s, repeat run, returned %s, want %s", c.Name, progName(prog), got, want)
	}
	return d, nil
}

// measure runs the case's program and the floor alternately, one packet
// each, then the repeat figures. Call it on a bench thread.
func (s *site) measure(ctx context.Context, c XDPCase, opts XDPOptions) (XDPResult, error) {
	r := XDPResult{Case: c.Name, Desc: c.Desc, Action: c.WantAction, Bytes: len(c.Packet), Packets: opts.Packets}
	if err := s.useHandoff(c); err != nil {
		return r, err
	}
	prog := s.prog(c)
	progress := func(done int) {
		if opts.Progress != nil {
			opts.Progress(XDPProgress{Case: c.Name, Done: done, Total: opts.Packets})
		}
	}
	progress(0)
	step := max(opts.Packets/20, 1)
	ober := make([]time.Duration, opts.Packets)
	floor := make([]time.Duration, opts.Packets)
	for i := range opts.Packets {
		var err error
		// Alternate which goes first, so neither always runs warmer.
		if i%2 == 0 {
			if ober[i], err = runOnce(prog, c, c.WantAction); err == nil {
				floor[i], err = runOnce(s.floor, c, loader.ActionPass)
			}
		} else {
			if floor[i], err = runOnce(s.floor, c, loader.ActionPass); err == nil {
				ober[i], err = runOnce(prog, c, c.WantAction)
			}
		}
		if err != nil {
			return r, err
		}
		if (i+1)%step == 0 {
			if err := ctx.Err(); err != nil {
				return r, err
			}
			if i+1 < opts.Packets {
				progress(i + 1)
			}
		}
	}
	r.NsPerPacket, r.NsPerPacketP50 = meanMedian(ober)
	r.FloorNs, r.FloorNsP50 = meanMedian(floor)
	if !c.Rewrites {
		r.Repeat = opts.Repeat
		d, err := runRepeat(prog, c, c.WantAction, opts.Repeat)
		if err != nil {
			return r, err
		}
		r.NsPerPacketRepeat = float64(d)
		if d, err = runRepeat(s.floor, c, loader.ActionPass, opts.Repeat); err != nil {
			return r, err
		}
		r.FloorNsRepeat = float64(d)
	}
	progress(opts.Packets)
	return r, nil
}

func meanMedian(ds []time.Duration) (mean, median float64) {
	if len(ds) == 0 {
		return math.NaN(), math.NaN()
	}
	var sum float64
	for _, d := range ds {
		sum += float64(d)
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	n := len(sorted)
	median = float64(sorted[n/2])
	if n%2 == 0 {
		median = float64(sorted[n/2-1]+sorted[n/2]) / 2
	}
	return sum / float64(n), median
}

func (s *site) close() error {
	var errs []error
	if s.floor != nil {
		errs = append(errs, s.floor.Close())
	}
	if s.dp != nil {
		errs = append(errs, s.dp.Close())
	}
	for _, c := range s.held {
		errs = append(errs, c.Close())
	}
	if s.netns != nil {
		errs = append(errs, s.netns.Close())
	}
	errs = append(errs, loader.Destroy(s.dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("xdp bench: close: %w", err)
	}
	return nil
}

// enter makes the calling goroutine's thread a bench thread: locked to
// it, pinned to BenchCPU, in the benchmark's network namespace. The
// thread is never released, and dies with the goroutine: call it only on
// a goroutine of its own.
func (s *site) enter() error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(BenchCPU)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("xdp bench: pin thread to CPU %d: %w", BenchCPU, err)
	}
	if err := unix.Setns(int(s.netns.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("xdp bench: enter the network namespace: %w", err)
	}
	return nil
}

// onBenchThread runs fn on a new bench thread (see enter).
func (s *site) onBenchThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		if err := s.enter(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
