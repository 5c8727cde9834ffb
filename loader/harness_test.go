package loader

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// The addresses of the test site. 192.0.2.0/24, 198.51.100.0/24,
// 203.0.113.0/24 and 2001:db8::/32 are documentation ranges.
var (
	vip4      = netip.MustParseAddr("192.0.2.10")
	vip6      = netip.MustParseAddr("2001:db8::10")
	host4     = netip.MustParseAddr("192.0.2.1")
	host6     = netip.MustParseAddr("2001:db8::1")
	client4   = netip.MustParseAddr("198.51.100.7")   // in frontend-http
	client4b  = netip.MustParseAddr("198.51.100.200") // in frontend-http, denied by both access lists
	client6   = netip.MustParseAddr("2001:db8:c::7")
	stranger4 = netip.MustParseAddr("203.0.113.99") // in no list
	stranger6 = netip.MustParseAddr("2001:db8:bad::99")
	router4   = netip.MustParseAddr("203.0.113.1")
	other4    = netip.MustParseAddr("192.0.2.200") // not a VIP
	other6    = netip.MustParseAddr("2001:db8::200")
)

const (
	portHTTPS  = 443
	portHTTP   = 80   // whitelist, drop
	portReject = 8080 // whitelist, reject
	portDNS    = 53   // udp
	portBGP    = 179
	portBFD    = 3784
	// Access lists (siteAccess): strict denies by default, open admits.
	portACL       = 8001 // strict
	portACLReject = 8002 // strict, reject
	portACLOpen   = 8003 // open
	portACLUnset  = 8004 // a list that was never set
	portACLWL     = 8005 // whitelist frontend-http and the open list
	portACLUDP    = 5301 // udp, strict
	// Services the kernel forwards (modes udp and nat): no listener, no
	// dispatch; XDP polices and passes them to the stack.
	portKernelUDP = 5401 // udp, strict
	portKernelTCP = 5402 // tcp, no access list
	// Served by a listener whose sockets are in ober_sockets_hi.
	portHigh = 9443
	// A port range: one row per port, one listener bound to the first.
	portRangeFirst = 7000
	portRangeLast  = 7010
	aclStrict      = AccessID(1)
	aclOpen        = AccessID(2)
	aclUnset       = AccessID(3)
	testInsts      = 4
	testMSize      = 251 // small, prime: quick to rebuild in tests
	testSeed       = 0x5eed
	// Listeners per family: an IPv4 connection needs an IPv4 socket.
	listenHTTPS = 0
	listenHTTP  = 1
	listenUDP   = 2
	listenRange = 3
	listenV6    = 4 // added to the IPv4 listener for IPv6 services
	// The first listener past ober_sockets (IPv6: listenHigh+listenV6).
	listenHigh = lowListeners
)

func listenerFor(l uint32, a netip.Addr) uint32 {
	if a.Is6() {
		return l + listenV6
	}
	return l
}

func siteVIPs() []VIP {
	return []VIP{{Addr: vip4}, {Addr: vip6}, {Addr: host4, Host: true}, {Addr: host6, Host: true}}
}

func siteServices() []Service {
	var out []Service
	for _, v := range []netip.Addr{vip4, vip6} {
		out = append(out,
			Service{VIP: v, Proto: ProtoTCP, Port: portHTTPS, Listener: listenerFor(listenHTTPS, v), Dispatch: true},
			Service{VIP: v, Proto: ProtoTCP, Port: portHTTP, Listener: listenerFor(listenHTTP, v), Dispatch: true,
				Enforce: true, Whitelist: WhitelistFrontendHTTP},
			Service{VIP: v, Proto: ProtoTCP, Port: portReject, Listener: listenerFor(listenHTTP, v), Dispatch: true,
				Enforce: true, Whitelist: WhitelistFrontendHTTP, Reject: true},
			Service{VIP: v, Proto: ProtoUDP, Port: portDNS, Listener: listenerFor(listenUDP, v), Dispatch: true},
			Service{VIP: v, Proto: ProtoTCP, Port: portACL, Listener: listenerFor(listenHTTPS, v), Dispatch: true,
				Access: aclStrict},
			Service{VIP: v, Proto: ProtoTCP, Port: portACLReject, Listener: listenerFor(listenHTTPS, v), Dispatch: true,
				Access: aclStrict, Reject: true},
			Service{VIP: v, Proto: ProtoTCP, Port: portACLOpen, Listener: listenerFor(listenHTTPS, v), Dispatch: true,
				Access: aclOpen},
			Service{VIP: v, Proto: ProtoTCP, Port: portACLUnset, Listener: listenerFor(listenHTTPS, v), Dispatch: true,
				Access: aclUnset},
			Service{VIP: v, Proto: ProtoTCP, Port: portACLWL, Listener: listenerFor(listenHTTPS, v), Dispatch: true,
				Enforce: true, Whitelist: WhitelistFrontendHTTP, Access: aclOpen},
			Service{VIP: v, Proto: ProtoUDP, Port: portACLUDP, Listener: listenerFor(listenUDP, v), Dispatch: true,
				Access: aclStrict},
			Service{VIP: v, Proto: ProtoTCP, Port: portHigh, Listener: listenerFor(listenHigh, v), Dispatch: true},
			Service{VIP: v, Proto: ProtoUDP, Port: portKernelUDP, Access: aclStrict},
			Service{VIP: v, Proto: ProtoTCP, Port: portKernelTCP},
		)
		out = append(out, rangeServices(v, portRangeFirst, portRangeLast, listenerFor(listenRange, v), aclOpen)...)
	}
	for _, h := range []netip.Addr{host4, host6} {
		out = append(out,
			Service{VIP: h, Proto: ProtoTCP, Port: portBGP, Enforce: true, Whitelist: WhitelistRouters},
			Service{VIP: h, Proto: ProtoUDP, Port: portBFD, Enforce: true, Whitelist: WhitelistRouters},
		)
	}
	return out
}

// rangeServices is a port range as a plan lays it out: one row per port,
// every row the same listener, flags and access list.
func rangeServices(vip netip.Addr, first, last uint16, listener uint32, acl AccessID) []Service {
	var out []Service
	for p := first; p <= last; p++ {
		out = append(out, Service{VIP: vip, Proto: ProtoTCP, Port: p, Listener: listener, Dispatch: true, Access: acl})
	}
	return out
}

func rules(t testing.TB, s ...string) []AccessRule {
	t.Helper()
	var out []AccessRule
	for _, r := range s {
		verb, pfx, ok := strings.Cut(r, " ")
		require.True(t, ok && (verb == "allow" || verb == "deny"), r)
		out = append(out, AccessRule{Prefix: netip.MustParsePrefix(pfx), Allow: verb == "allow"})
	}
	return out
}

// siteAccess is the site's access lists: strict admits the client
// networks but for a carved-out half, and nobody else; open turns away
// the stranger networks and that half, and admits everyone else. strict's
// allow of router4 lies inside an earlier deny: it never decides.
func siteAccess(t testing.TB) map[AccessID][]AccessEntry {
	t.Helper()
	strict, err := CompileAccess(rules(t,
		"deny 198.51.100.128/25", "allow 198.51.100.0/24", "allow 2001:db8:c::/48",
		"deny 203.0.113.0/24", "allow 203.0.113.1/32"), false)
	require.NoError(t, err)
	open, err := CompileAccess(rules(t,
		"deny 203.0.113.0/24", "deny 198.51.100.128/25", "deny 2001:db8:bad::/48"), true)
	require.NoError(t, err)
	return map[AccessID][]AccessEntry{aclStrict: strict, aclOpen: open}
}

var (
	frontendList = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:c::/48")}
	routerList   = []netip.Prefix{netip.MustParsePrefix("203.0.113.1/32")}
)

// roundRobinTable is a stand-in Maglev table: the loader does not care how
// a table was built, only what it says.
func roundRobinTable(m, n int) []uint32 {
	t := make([]uint32, m)
	for i := range t {
		t[i] = uint32(i % n)
	}
	return t
}

func testInstances() []Instance {
	ncpu, _ := ebpf.PossibleCPU()
	var out []Instance
	for i := 0; i < testInsts; i++ {
		out = append(out, Instance{Index: uint32(i), CPU: i % ncpu})
	}
	return out
}

// openTestDataplane opens a dataplane on a private bpffs and fills it with
// the test site.
func openTestDataplane(t testing.TB) *Dataplane {
	t.Helper()
	root := netnstest.BPFFS(t)
	d, err := Open(Options{Root: root + "/ober"})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	fillSite(t, d)
	return d
}

func fillSite(t testing.TB, d *Dataplane) {
	t.Helper()
	require.NoError(t, d.SetServices(siteVIPs(), siteServices()))
	_, err := d.SetWhitelist(WhitelistFrontendHTTP, frontendList)
	require.NoError(t, err)
	_, err = d.SetWhitelist(WhitelistRouters, routerList)
	require.NoError(t, err)
	for id, es := range siteAccess(t) {
		require.NoError(t, d.SetAccessList(id, es))
	}
	require.NoError(t, d.SetMaglev(testSeed, roundRobinTable(testMSize, testInsts)))
	require.NoError(t, d.SetInstances(testInstances()))
	require.NoError(t, d.SetSteering(true))
}

// openUnpinnedDataplane loads the programs and maps without pinning them,
// filled with the test site. Everything goes away with the process, which
// suits fuzz workers: `go test -fuzz` kills them, so their cleanups (an
// unmount, say) never run.
func openUnpinnedDataplane(t testing.TB) *Dataplane {
	t.Helper()
	netnstest.RequireRoot(t)
	spec, err := loadOber()
	require.NoError(t, err)
	ncpu, err := ebpf.PossibleCPU()
	require.NoError(t, err)
	spec.Maps["ober_cpumap"].MaxEntries = uint32(ncpu)
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs oberObjects
	require.NoError(t, spec.LoadAndAssign(&objs, nil))
	lf, err := os.Open(os.DevNull)
	require.NoError(t, err)
	d := &Dataplane{root: "(unpinned)", log: discardLogger(), spec: spec, maps: objs.oberMaps,
		xdp: objs.OberXdp, skLookup: objs.OberSkLookup, lockFile: lf}
	t.Cleanup(func() { d.Close() })
	fillSite(t, d)
	return d
}

// onCPU runs fn on an OS thread pinned to cpu, so that
// bpf_get_smp_processor_id inside BPF_PROG_TEST_RUN is known.
func onCPU(t testing.TB, cpu int, fn func()) {
	t.Helper()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the pinned thread dies with us
		var set unix.CPUSet
		set.Set(cpu)
		if err = unix.SchedSetaffinity(0, &set); err != nil {
			return
		}
		fn()
	}()
	<-done
	require.NoError(t, err, "pin thread to cpu %d", cpu)
}

// xdpRun runs the XDP program once over pkt and reports what it did: the
// action, the output packet, and the reason and instance it counted.
type xdpResult struct {
	Action   Action
	Reason   Reason
	Instance uint32
	Out      []byte
}

type xdpRunner struct {
	t    testing.TB
	d    *Dataplane
	prev *Counters
	// ifindex, when set, is the interface the packets arrive on: it must
	// be in the calling thread's namespace.
	ifindex int
}

func newXDPRunner(t testing.TB, d *Dataplane) *xdpRunner {
	c, err := d.Counters()
	require.NoError(t, err)
	return &xdpRunner{t: t, d: d, prev: c}
}

// run must be called on a pinned thread.
func (r *xdpRunner) run(pkt []byte) (xdpResult, error) {
	out := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
	if r.ifindex != 0 {
		opts.Context = xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: uint32(r.ifindex)}
	}
	ret, err := r.d.XDPProgram().Run(opts)
	if err != nil {
		return xdpResult{}, err
	}
	res := xdpResult{Action: Action(ret), Out: opts.DataOut, Reason: numReasons, Instance: NoInstance}
	c, err := r.d.Counters()
	if err != nil {
		return xdpResult{}, err
	}
	changed := 0
	for _, v := range c.Verdicts {
		if d := v.Packets - r.prev.Get(v.Reason, v.Action).Packets; d != 0 {
			res.Reason = v.Reason
			changed += int(d)
			if v.Action != res.Action {
				return xdpResult{}, fmt.Errorf("counted action %s, returned %s", v.Action, res.Action)
			}
		}
	}
	if changed != 1 {
		return xdpResult{}, fmt.Errorf("one run moved the verdict counters by %d", changed)
	}
	for i := range c.Steered {
		if c.Steered[i].Packets != r.prev.Steered[i].Packets {
			res.Instance = uint32(i)
		}
	}
	r.prev = c
	return res, nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
