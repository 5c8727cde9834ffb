package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// The handoff lab's nodes. The lab is the node labSelf; the others are
// reached (or not) in every way bpf_fib_lookup can answer.
var (
	labNoRoute    = netip.MustParseAddr("10.8.0.1")  // no route at all
	labSelf       = netip.MustParseAddr("10.9.0.1")  // on hx0, where packets arrive
	labTX         = netip.MustParseAddr("10.9.0.2")  // on hx0's link: XDP_TX
	labUnresolved = netip.MustParseAddr("10.9.0.3")  // on hx0's link, no neighbour entry
	labRedirect   = netip.MustParseAddr("10.9.1.2")  // on hy0's link: a redirect
	labSmall      = netip.MustParseAddr("10.9.2.2")  // on hz0's link, MTU 600
	labStranger   = netip.MustParseAddr("10.9.0.66") // on hx0's link, not a node
	labNodes      = []netip.Addr{labNoRoute, labSelf, labTX, labUnresolved, labRedirect, labSmall}

	labPeerMAC = map[netip.Addr][6]byte{
		labTX:       {0x02, 0, 0, 0, 0x09, 0x02},
		labRedirect: {0x02, 0, 0, 0, 0x09, 0x12},
		labSmall:    {0x02, 0, 0, 0, 0x09, 0x22},
	}
)

const labSmallMTU = 600

// labOwners are flows recorded for the lab's nodes, one per node and
// family, from the client on ports 40100 and up to the VIPs' :443; no
// socket in the lab has them.
func labOwners() map[Flow]netip.Addr {
	out := map[Flow]netip.Addr{}
	for i, n := range []netip.Addr{labTX, labRedirect, labNoRoute, labUnresolved, labSmall, labSelf} {
		out[Flow{Client: netip.AddrPortFrom(client4, uint16(40100+i)), VIP: netip.AddrPortFrom(vip4, portHTTPS)}] = n
		out[Flow{Client: netip.AddrPortFrom(client6, uint16(40100+i)), VIP: netip.AddrPortFrom(vip6, portHTTPS)}] = n
	}
	return out
}

// handoffLab is a network namespace where the XDP program's handoff
// lookups have known answers, so that the model can be told them: the
// FIB reaches the nodes as labNodes says, and the only TCP sockets are
// listeners on the VIPs' :443 (which own no flow) and one established
// connection per family from the client to :443 (which does).
//
// Everything runs on one thread, locked in the namespace and pinned to
// CPU 0 (see onCPU).
type handoffLab struct {
	jobs    chan func()
	ifindex int // hx0, the ingress of every run
	fib     map[netip.Addr]FIBResult
	flows   []SkTuple // owned by the established connections
	// timeWait are the tuples the lab's kernel holds in TIME_WAIT, made
	// on listeners (by family, as timeWait).
	timeWait  []SkTuple
	listeners []net.Listener
}

// newHandoffLab builds the lab in a namespace made by netnstest, removed
// at cleanup.
func newHandoffLab(t testing.TB) *handoffLab {
	t.Helper()
	ns := netnstest.New(t, "ho")
	return startLab(t, func() error { return unix.Setns(int(ns.Handle), unix.CLONE_NEWNET) })
}

// newPrivateHandoffLab builds the lab in a namespace of its own thread,
// which nothing else holds: it goes when the thread does, also when the
// process is killed. A fuzz worker needs that: `go test -fuzz` kills its
// workers, so their cleanups (deleting a named namespace) never run.
func newPrivateHandoffLab(t testing.TB) *handoffLab {
	t.Helper()
	netnstest.RequireRoot(t)
	return startLab(t, func() error { return unix.Unshare(unix.CLONE_NEWNET) })
}

// startLab starts the lab's thread: enter moves it into the namespace.
// The thread is never unlocked, so it dies, leaving the namespace, when
// the lab stops.
func startLab(t testing.TB, enter func() error) *handoffLab {
	t.Helper()
	lab := &handoffLab{jobs: make(chan func()), fib: map[netip.Addr]FIBResult{}}
	ready := make(chan error, 1)
	var conns []net.Conn
	var lns []net.Listener
	go func() {
		runtime.LockOSThread()
		err := enter()
		if err == nil {
			var set unix.CPUSet
			set.Set(0)
			err = unix.SchedSetaffinity(0, &set)
		}
		if err == nil {
			lns, conns, err = lab.build()
		}
		ready <- err
		if err != nil {
			return
		}
		for job := range lab.jobs {
			job()
		}
		for _, c := range conns {
			c.Close()
		}
		for _, l := range lns {
			l.Close()
		}
	}()
	require.NoError(t, <-ready, "build the handoff lab")
	t.Cleanup(func() { close(lab.jobs) })
	return lab
}

// do runs fn on the lab's thread. fn must not stop the goroutine it runs
// on (no t.FailNow): the lab would stop with it.
func (lab *handoffLab) do(fn func()) {
	done := make(chan struct{})
	lab.jobs <- func() { defer close(done); fn() }
	<-done
}

// run runs the XDP program over pkt in the lab, arriving on hx0.
func (lab *handoffLab) run(r *xdpRunner, pkt []byte) (res xdpResult, err error) {
	lab.do(func() { res, err = r.run(pkt) })
	return res, err
}

// labClientPort is the client port of the lab's established connections.
// No crafted segment of the tests uses it.
const labClientPort = 30999

// labTimeWaitPort is the client port of the lab's TIME_WAIT tuples, one
// per family: connections the lab's side closed first, so that its kernel
// keeps them for a minute. labTimeWaitOwners records the IPv4 one for
// another node, which then takes its segments; the IPv6 one stays the
// kernel's.
const labTimeWaitPort = 30998

func labTimeWaitOwners() map[Flow]netip.Addr {
	return map[Flow]netip.Addr{{Client: netip.AddrPortFrom(client4, labTimeWaitPort), VIP: netip.AddrPortFrom(vip4, portHTTPS)}: labTX}
}

// build makes the lab in the calling thread's namespace.
func (lab *handoffLab) build() ([]net.Listener, []net.Conn, error) {
	if self, init := nsInode("/proc/thread-self/ns/net"), nsInode("/proc/1/ns/net"); self == 0 || self == init {
		return nil, nil, errors.New("the lab thread is not in a namespace of its own")
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, nil, err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return nil, nil, err
	}
	for _, a := range []string{vip4.String() + "/32", client4.String() + "/32", vip6.String() + "/128", client6.String() + "/128"} {
		// Without NODAD an IPv6 address is tentative until the kernel's
		// DAD work has run, and binding it fails meanwhile (seen in CI).
		addr := &netlink.Addr{IPNet: mustIPNet(a)}
		if addr.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(lo, addr); err != nil {
			return nil, nil, fmt.Errorf("address %s: %w", a, err)
		}
	}
	links := []struct {
		name, peer, addr string
		mtu              int
	}{
		{"hx0", "hxp", "10.9.0.1/24", 1500},
		{"hy0", "hyp", "10.9.1.1/24", 1500},
		{"hz0", "hzp", "10.9.2.1/24", labSmallMTU},
	}
	byName := map[string]netlink.Link{}
	for _, l := range links {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.name, MTU: l.mtu}, PeerName: l.peer}
		if err := netlink.LinkAdd(veth); err != nil {
			return nil, nil, fmt.Errorf("veth %s: %w", l.name, err)
		}
		for _, n := range []string{l.name, l.peer} {
			link, err := netlink.LinkByName(n)
			if err != nil {
				return nil, nil, err
			}
			if err := netlink.LinkSetUp(link); err != nil {
				return nil, nil, err
			}
			byName[n] = link
		}
		if err := netlink.AddrAdd(byName[l.name], &netlink.Addr{IPNet: mustIPNet(l.addr)}); err != nil {
			return nil, nil, fmt.Errorf("address %s: %w", l.addr, err)
		}
	}
	lab.ifindex = byName["hx0"].Attrs().Index
	// bpf_fib_lookup refuses to route from an interface without it.
	if err := enableForwarding(byName["hx0"]); err != nil {
		return nil, nil, fmt.Errorf("forwarding on hx0: %w", err)
	}
	peers := []struct {
		node netip.Addr
		dev  string
		mtu  int
	}{{labTX, "hx0", 1500}, {labRedirect, "hy0", 1500}, {labSmall, "hz0", labSmallMTU}, {labUnresolved, "hx0", 1500}}
	for _, p := range peers {
		dev := byName[p.dev]
		r := FIBResult{Ifindex: dev.Attrs().Index, MTU: p.mtu}
		if mac, ok := labPeerMAC[p.node]; ok {
			err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_INET,
				State: netlink.NUD_PERMANENT, IP: p.node.AsSlice(), HardwareAddr: mac[:]})
			if err != nil {
				return nil, nil, fmt.Errorf("neighbour %s: %w", p.node, err)
			}
			r.Neighbour = true
			r.DstMAC = mac
			r.SrcMAC = [6]byte(dev.Attrs().HardwareAddr)
		}
		lab.fib[p.node] = r
	}

	// Listeners on :443 own no flow; the connections to them do.
	var lns []net.Listener
	var conns []net.Conn
	for _, c := range []struct{ vip, client netip.Addr }{{vip4, client4}, {vip6, client6}} {
		lc := ListenConfig()
		ln, err := lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(c.vip, portHTTPS).String())
		if err != nil {
			return lns, conns, err
		}
		lns = append(lns, ln)
		// A fixed port below the ephemeral range: with a random one, the
		// connection sometimes took a port that a test's crafted orphan
		// segment uses, and that segment then had a socket (seen in CI).
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.client, labClientPort))}
		d.SetMultipathTCP(false)
		cc, err := dialSettled(&d, ln.Addr().String())
		if err != nil {
			return lns, conns, err
		}
		sc, err := ln.Accept()
		if err != nil {
			return lns, conns, err
		}
		conns = append(conns, cc, sc)
		local := cc.LocalAddr().(*net.TCPAddr).AddrPort()
		lab.flows = append(lab.flows, SkTuple{Proto: ProtoTCP,
			Remote: netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), Local: netip.AddrPortFrom(c.vip, portHTTPS)})

		lab.timeWait = append(lab.timeWait, SkTuple{Proto: ProtoTCP,
			Remote: netip.AddrPortFrom(c.client, labTimeWaitPort), Local: netip.AddrPortFrom(c.vip, portHTTPS)})
	}
	lab.listeners = lns
	return lns, conns, lab.closeFirst()
}

// closeFirst makes the lab's TIME_WAIT tuples again: a connection from
// each one's client port that the lab's side closes first. TIME_WAIT lasts
// a minute, so a test that runs longer calls it again (refreshTimeWait);
// the kernel lets a new SYN take over a tuple in TIME_WAIT.
func (lab *handoffLab) closeFirst() error {
	for i, tw := range lab.timeWait {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(tw.Remote)}
		d.SetMultipathTCP(false)
		tc, err := dialSettled(&d, lab.listeners[i].Addr().String())
		if err != nil {
			return fmt.Errorf("TIME_WAIT tuple %v: %w", tw, err)
		}
		ts, err := lab.listeners[i].Accept()
		if err != nil {
			tc.Close()
			return fmt.Errorf("TIME_WAIT tuple %v: %w", tw, err)
		}
		ts.Close()
		_, err = tc.Read(make([]byte, 1))
		tc.Close()
		if err != io.EOF {
			return fmt.Errorf("TIME_WAIT tuple %v: the lab's close: %v", tw, err)
		}
	}
	return nil
}

// dialSettled dials addr, again for up to 2 s while the network is
// unreachable: the kernel installs an IPv6 address's local route from its
// DAD work, after the address is added even with NODAD, so the lab's
// first dial can come before it (seen in CI).
func dialSettled(d *net.Dialer, addr string) (net.Conn, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := d.Dial("tcp", addr)
		if err == nil || !errors.Is(err, unix.ENETUNREACH) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refreshTimeWait renews the lab's TIME_WAIT tuples for another minute.
func (lab *handoffLab) refreshTimeWait(t testing.TB) {
	t.Helper()
	var err error
	lab.do(func() { err = lab.closeFirst() })
	require.NoError(t, err)
}

// enableForwarding sets net.ipv4.conf.<link>.forwarding in the calling
// thread's namespace. It goes by netlink rather than /proc/sys: the
// request's socket belongs to the thread's namespace, beyond doubt.
func enableForwarding(link netlink.Link) error {
	const (
		iflaInetConf          = 1 // IFLA_INET_CONF
		ipv4DevconfForwarding = 1 // IPV4_DEVCONF_FORWARDING
	)
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(link.Attrs().Index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(iflaInetConf, nil).AddRtAttr(ipv4DevconfForwarding, nl.Uint32Attr(1))
	req.AddData(spec)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func nsInode(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

func mustIPNet(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// model is a model of d told the lab's answers.
func (lab *handoffLab) model(t testing.TB, d *Dataplane) *Model {
	t.Helper()
	m := NewModel(mustSnapshot(t, d))
	owned := map[SkTuple]bool{}
	for _, f := range lab.flows {
		owned[f] = true
	}
	tw := map[SkTuple]bool{}
	for _, f := range lab.timeWait {
		tw[f] = true
	}
	m.Sockets = func(t SkTuple) bool { return owned[t] || tw[t] }
	m.TimeWait = func(t SkTuple) bool { return tw[t] }
	m.FIB = func(dst netip.Addr) (FIBResult, bool) {
		r, ok := lab.fib[dst]
		return r, ok
	}
	m.Ifindex = lab.ifindex
	return m
}

// xdpMD is struct xdp_md as BPF_PROG_TEST_RUN takes it: the frame is all
// data, and it arrived on IngressIfindex.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// runner is an xdpRunner for the lab: give it to lab.run.
func (lab *handoffLab) runner(t testing.TB, d *Dataplane) *xdpRunner {
	r := newXDPRunner(t, d)
	r.ifindex = lab.ifindex
	return r
}
