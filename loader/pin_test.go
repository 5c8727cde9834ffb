package loader

import (
	"cmp"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader/packet"
)

// xdpProgID reports the id of the XDP program on iface in ns, 0 if none.
func xdpProgID(t testing.TB, ns *netnstest.NS, iface string) uint32 {
	t.Helper()
	var id uint32
	require.NoError(t, ns.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			id = x.ProgId
		}
		return nil
	}))
	return id
}

func progID(t testing.TB, p *ebpf.Program) uint32 {
	t.Helper()
	info, err := p.Info()
	require.NoError(t, err)
	id, ok := info.ID()
	require.True(t, ok)
	return uint32(id)
}

// TestRestartChangesNothing: closing the process's handles and opening the
// pin root again leaves the attached program, its tables and its links
// exactly as they were.
func TestRestartChangesNothing(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	srv := netnstest.New(t, "pin")
	other := netnstest.New(t, "pin-peer")
	netnstest.Veth(t, srv, "eth1", other, "eth1", 1)

	d, err := Open(Options{Root: root})
	require.NoError(t, err)
	require.NoError(t, d.SetServices(siteVIPs(), siteServices()))
	_, err = d.SetWhitelist(WhitelistFrontendHTTP, frontendList)
	require.NoError(t, err)
	require.NoError(t, d.SetMaglev(testSeed, roundRobinTable(testMSize, testInsts)))
	require.NoError(t, d.SetInstances(testInstances()))
	require.NoError(t, d.SetSteering(true))
	require.NoError(t, srv.Do(func() error {
		mode, err := d.AttachXDP("eth1", XDPNative)
		if err != nil {
			return err
		}
		require.Equal(t, XDPNative, mode)
		return d.AttachSkLookup()
	}))
	before := mustSnapshot(t, d)
	progBefore := progID(t, d.XDPProgram())
	require.Equal(t, progBefore, xdpProgID(t, srv, "eth1"))
	require.NoError(t, d.Close())

	// The process is gone: the program keeps running from its pins.
	require.Equal(t, progBefore, xdpProgID(t, srv, "eth1"))

	d2, err := Open(Options{Root: root, MustExist: true})
	require.NoError(t, err)
	defer d2.Close()
	require.Equal(t, progBefore, progID(t, d2.XDPProgram()), "the pinned program is adopted, not replaced")
	require.Equal(t, progBefore, xdpProgID(t, srv, "eth1"))
	require.Equal(t, before, mustSnapshot(t, d2))
	var atts []Attachment
	var sk bool
	require.NoError(t, srv.Do(func() error {
		atts, sk, err = d2.Attachments()
		return err
	}))
	require.True(t, sk)
	require.Len(t, atts, 1)
	require.Equal(t, "eth1", atts[0].Iface)
	require.Equal(t, XDPNative, atts[0].Mode)

	// Attaching again is a no-op; asking for another mode is refused.
	require.NoError(t, srv.Do(func() error {
		mode, err := d2.AttachXDP("eth1", XDPAuto)
		require.Equal(t, XDPNative, mode)
		return err
	}))
	require.Error(t, srv.Do(func() error { _, err := d2.AttachXDP("eth1", XDPGeneric); return err }))
	require.Equal(t, progBefore, xdpProgID(t, srv, "eth1"))

	require.Error(t, d2.DetachXDP("eth1"), "the link belongs to the server namespace, not ours")
	require.NoError(t, srv.Do(func() error { return d2.DetachXDP("eth1") }))
	require.Zero(t, xdpProgID(t, srv, "eth1"))
	require.NoError(t, srv.Do(func() error {
		_, err := d2.AttachXDP("eth1", XDPGeneric)
		return err
	}))
	require.NoError(t, srv.Do(func() error {
		atts, _, err = d2.Attachments()
		return err
	}))
	require.Equal(t, XDPGeneric, atts[0].Mode)
}

// TestUpgradeRelinks: when the pinned program differs from the one this
// binary carries, Open pins the new one and moves every link to it in
// place, without a moment of detachment.
func TestUpgradeRelinks(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	srv := netnstest.New(t, "upg")
	other := netnstest.New(t, "upg-peer")
	netnstest.Veth(t, srv, "eth1", other, "eth1", 1)

	d, err := Open(Options{Root: root})
	require.NoError(t, err)
	require.NoError(t, srv.Do(func() error { _, err := d.AttachXDP("eth1", XDPNative); return err }))
	require.NoError(t, d.Close())

	// Stand in for an older release: another program behind the pin, and
	// the link pointing at it.
	old := pinOtherXDP(t, root)
	require.NoError(t, relinkForTest(root, old))
	require.Equal(t, progID(t, old), xdpProgID(t, srv, "eth1"))

	d2, err := Open(Options{Root: root})
	require.NoError(t, err)
	defer d2.Close()
	require.Equal(t, progID(t, d2.XDPProgram()), xdpProgID(t, srv, "eth1"), "the link runs the new program")
	require.NotEqual(t, progID(t, old), progID(t, d2.XDPProgram()))
}

// pinOtherXDP puts another XDP program behind the pin of root's XDP
// program, as another ober release would have left it.
func pinOtherXDP(t *testing.T, root string) *ebpf.Program {
	t.Helper()
	p := netnstest.PassProgram(t)
	pin := filepath.Join(root, "progs", "xdp")
	require.NoError(t, os.Remove(pin))
	require.NoError(t, p.Pin(pin))
	return p
}

func relinkForTest(root string, p *ebpf.Program) error {
	d := &Dataplane{root: root, log: discardLogger()}
	return d.relink(p)
}

// TestDestroyAndMustExist: Destroy detaches and unpins everything; a
// look-only Open then finds nothing instead of creating it.
func TestDestroyAndMustExist(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	_, err := Open(Options{Root: root, MustExist: true})
	require.ErrorIs(t, err, ErrNotPinned)
	_, err = os.Stat(root)
	require.True(t, errors.Is(err, os.ErrNotExist), "a look-only open must not create %s", root)

	srv := netnstest.New(t, "dst")
	other := netnstest.New(t, "dst-peer")
	netnstest.Veth(t, srv, "eth1", other, "eth1", 1)
	d, err := Open(Options{Root: root})
	require.NoError(t, err)
	require.NoError(t, srv.Do(func() error {
		if _, err := d.AttachXDP("eth1", XDPAuto); err != nil {
			return err
		}
		return d.AttachSkLookup()
	}))
	require.NoError(t, d.Close())
	require.NotZero(t, xdpProgID(t, srv, "eth1"))

	require.NoError(t, Destroy(root))
	require.Zero(t, xdpProgID(t, srv, "eth1"))
	_, err = os.Stat(root)
	require.True(t, errors.Is(err, os.ErrNotExist))
	require.NoError(t, Destroy(root), "destroying nothing is fine")
}

// TestIncompatiblePinsAreReported: maps pinned by an incompatible version
// are not silently reused or replaced.
func TestIncompatiblePinsAreReported(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	require.NoError(t, os.MkdirAll(filepath.Join(root, "maps"), 0o700))
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ober_config", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.Pin(filepath.Join(root, "maps", "ober_config")))

	_, err = Open(Options{Root: root})
	require.ErrorIs(t, err, ebpf.ErrMapIncompatible)
	require.ErrorContains(t, err, "ober detach --all")
}

// TestEarlierHandoffPinIsLeftAlone: the drain-handoff set changed its
// layout and its map's name with it, so a node upgraded over pins of the
// earlier layout (ober_handoff) opens, and its handoff works.
func TestEarlierHandoffPinIsLeftAlone(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	require.NoError(t, os.MkdirAll(filepath.Join(root, "maps"), 0o700))
	inner := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 140, MaxEntries: 1}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ober_handoff", Type: ebpf.ArrayOfMaps, KeySize: 4, MaxEntries: 1, InnerMap: inner})
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.Pin(filepath.Join(root, "maps", "ober_handoff")))

	d, err := Open(Options{Root: root, Logger: discardLogger()})
	require.NoError(t, err)
	defer d.Close()
	nodes := addrs("10.0.0.1", "10.0.0.2")
	h := Handoff{Self: nodes[0], Nodes: nodes, Active: true}
	require.NoError(t, d.SetHandoff(h))
	got, err := d.Handoff()
	require.NoError(t, err)
	require.Equal(t, h, got)
}

// pinEarlierServices pins a VIP and service table of the layout before
// access lists under root, as a node running that release has it, holding
// vips and svcs (whose Access must be 0).
func pinEarlierServices(t *testing.T, root string, vips []VIP, svcs []Service) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "maps"), 0o700))
	innerSpec := &ebpf.MapSpec{Type: ebpf.Hash, KeySize: svcKeySize, ValueSize: earlierSvcValSize, MaxEntries: 16384}
	outer, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ober_services", Type: ebpf.ArrayOfMaps, KeySize: 4, MaxEntries: 1, InnerMap: innerSpec})
	require.NoError(t, err)
	defer outer.Close()
	if vips != nil {
		inner, err := ebpf.NewMap(innerSpec)
		require.NoError(t, err)
		defer inner.Close()
		for _, v := range vips {
			val := earlierSvcVal{}
			if v.Host {
				val.Flags = vipHost
			}
			require.NoError(t, inner.Put(makeSvcKey(v.Addr, 0, 0), val))
		}
		for _, sv := range svcs {
			require.Zero(t, sv.Access)
			nv := sv.val()
			require.NoError(t, inner.Put(sv.key(), earlierSvcVal{Listener: nv.Listener, Flags: nv.Flags, Whitelist: nv.Whitelist}))
		}
		require.NoError(t, outer.Put(uint32(0), inner))
	}
	require.NoError(t, outer.Pin(filepath.Join(root, "maps", "ober_services")))
}

// TestEarlierServicesTableIsCopied: a node upgraded from the layout before
// access lists finds its VIPs and services in the new table before the
// new programs run, so no packet meets an empty table; the earlier pin
// goes.
func TestEarlierServicesTableIsCopied(t *testing.T) {
	var svcs []Service
	for _, sv := range siteServices() {
		if sv.Access == 0 && (sv.Port < portRangeFirst || sv.Port > portRangeLast) {
			svcs = append(svcs, sv)
		}
	}
	root := netnstest.BPFFS(t) + "/ober"
	pinEarlierServices(t, root, siteVIPs(), svcs)
	earlier := filepath.Join(root, "maps", "ober_services")

	// A look from this release leaves the earlier table alone.
	ro, err := Open(Options{Root: root, MapsOnly: true, Logger: discardLogger()})
	require.NoError(t, err, "the earlier table is a pinned dataplane")
	require.NoError(t, ro.Close())
	require.FileExists(t, earlier)

	d, err := Open(Options{Root: root, Logger: discardLogger()})
	require.NoError(t, err)
	defer d.Close()
	vips, got, err := d.Services()
	require.NoError(t, err)
	wantV := siteVIPs()
	slices.SortFunc(wantV, func(a, b VIP) int { return a.Addr.Compare(b.Addr) })
	require.Equal(t, wantV, vips)
	require.ElementsMatch(t, svcs, got)
	require.NoFileExists(t, earlier)

	// The copy is what the program reads.
	_, err = d.SetWhitelist(WhitelistFrontendHTTP, frontendList)
	require.NoError(t, err)
	onCPU(t, 0, func() {
		r := newXDPRunner(t, d)
		for _, c := range []struct {
			pkt  []byte
			want Reason
		}{
			{tcp(client4, 1, vip4, portHTTP, packet.SYN).Bytes(), ReasonPass},
			{tcp(stranger6, 1, vip6, portHTTP, packet.SYN).Bytes(), ReasonWhitelistDrop},
			{tcp(stranger4, 1, vip4, 22, packet.SYN).Bytes(), ReasonNoService},
			{tcp(stranger4, 1, host4, 22, packet.SYN).Bytes(), ReasonPass},
		} {
			got, err := r.run(c.pkt)
			require.NoError(t, err)
			require.Equal(t, c.want, got.Reason)
		}
	})
}

// TestEarlierServicesTableYields: a table this release wrote is newer
// than the earlier one, which is then only dropped; so is an earlier
// table that was never filled.
func TestEarlierServicesTableYields(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	d, err := Open(Options{Root: root, Logger: discardLogger()})
	require.NoError(t, err)
	mine := []Service{{VIP: vip4, Proto: ProtoTCP, Port: 8443, Listener: 1, Access: aclOpen}}
	require.NoError(t, d.SetServices([]VIP{{Addr: vip4}}, mine))
	require.NoError(t, d.Close())
	pinEarlierServices(t, root, siteVIPs(), nil)

	d, err = Open(Options{Root: root, Logger: discardLogger()})
	require.NoError(t, err)
	_, got, err := d.Services()
	require.NoError(t, err)
	require.Equal(t, mine, got)
	require.NoFileExists(t, filepath.Join(root, "maps", "ober_services"))
	require.NoError(t, d.Close())

	root = netnstest.BPFFS(t) + "/ober"
	pinEarlierServices(t, root, nil, nil)
	d, err = Open(Options{Root: root, Logger: discardLogger()})
	require.NoError(t, err)
	defer d.Close()
	vips, got, err := d.Services()
	require.NoError(t, err)
	require.Empty(t, vips)
	require.Empty(t, got)
	require.NoFileExists(t, filepath.Join(root, "maps", "ober_services"))
}

// TestConcurrentWritersLoseNothing: two handles on one pin root, as the
// daemon and an operator's `ober sync` would hold, each appending to the
// same whitelist. Only the flock on the root serialises them (each handle
// has its own mutex), and no update may be lost.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	var handles [2]*Dataplane
	for i := range handles {
		d, err := Open(Options{Root: root, Logger: discardLogger()})
		require.NoError(t, err)
		t.Cleanup(func() { d.Close() })
		handles[i] = d
	}
	_, err := handles[0].SetWhitelist(WhitelistFrontendHTTP, nil)
	require.NoError(t, err)

	const per = 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*per)
	for h, d := range handles {
		for i := 0; i < per; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				add := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(h), byte(i), 0}), 24)
				_, err := d.UpdateWhitelist(WhitelistFrontendHTTP, func(live []netip.Prefix, _ WhitelistInfo) ([]netip.Prefix, error) {
					return append(append([]netip.Prefix{}, live...), add), nil
				})
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got, info, err := handles[1].Whitelist(WhitelistFrontendHTTP)
	require.NoError(t, err)
	require.Len(t, got, 2*per, "every writer's prefix is there")
	require.EqualValues(t, 2*per+1, info.Generation, "one generation per swap")
}

// TestMapsOnlyLeavesProgramsAlone: a table-only open (status, sync) from a
// binary whose programs differ does not replace the running ones.
func TestMapsOnlyLeavesProgramsAlone(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	d, err := Open(Options{Root: root})
	require.NoError(t, err)
	require.NoError(t, d.Close())

	other := pinOtherXDP(t, root)
	pin := filepath.Join(root, "progs", "xdp")

	tables, err := Open(Options{Root: root, MapsOnly: true})
	require.NoError(t, err)
	defer tables.Close()
	require.Nil(t, tables.XDPProgram())
	_, err = tables.SetWhitelist(WhitelistFrontendHTTP, frontendList)
	require.NoError(t, err, "tables can be changed")
	_, err = tables.AttachXDP("lo", XDPGeneric)
	require.ErrorContains(t, err, "opened for its tables only")

	pinned, err := ebpf.LoadPinnedProgram(pin, nil)
	require.NoError(t, err)
	defer pinned.Close()
	require.Equal(t, progID(t, other), progID(t, pinned), "the pinned program was not replaced")

	_, err = Open(Options{Root: netnstest.BPFFS(t) + "/none", MapsOnly: true})
	require.ErrorIs(t, err, ErrNotPinned)
}

// TestOneNamespacePerRoot: the tables and sockets of a pin root belong to
// one network namespace; attaching in a second is refused, and the first
// namespace's links are untouched. Once the first namespace is gone, its
// dead links no longer stand in the way.
func TestOneNamespacePerRoot(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	a, b, peer := netnstest.New(t, "one-a"), netnstest.New(t, "one-b"), netnstest.New(t, "one-p")
	netnstest.Veth(t, a, "eth1", peer, "pa", 1)
	netnstest.Veth(t, b, "eth1", peer, "pb", 1)
	d, err := Open(Options{Root: root})
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, a.Do(func() error {
		if _, err := d.AttachXDP("eth1", XDPNative); err != nil {
			return err
		}
		return d.AttachSkLookup()
	}))
	err = b.Do(func() error { _, err := d.AttachXDP("eth1", XDPNative); return err })
	require.ErrorContains(t, err, "serves another network namespace")
	require.ErrorContains(t, b.Do(d.AttachSkLookup), "serves another network namespace")
	require.NotZero(t, xdpProgID(t, a, "eth1"))
	require.Zero(t, xdpProgID(t, b, "eth1"))

	// Namespace a goes away (as when a container or test host is removed);
	// the kernel dismantles it in the background.
	a.Delete(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = b.Do(func() error {
			if _, err := d.AttachXDP("eth1", XDPNative); err != nil {
				return err
			}
			return d.AttachSkLookup()
		})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.NoError(t, err)
	require.NotZero(t, xdpProgID(t, b, "eth1"))
}

// earlierObject is the dataplane of the release before ober_sockets_hi
// (at most 256 listeners), as its `make generate` built it: its sk_lookup
// program knows ober_sockets only, and its maps are this release's but
// that one.
const earlierObject = "testdata/ober_256_listeners.o"

// pinEarlierRelease pins and links what the release before
// ober_sockets_hi runs: its maps and programs under root, its sk_lookup
// program attached to ns. It returns that program's id.
func pinEarlierRelease(t *testing.T, root string, ns *netnstest.NS) uint32 {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(earlierObject)
	require.NoError(t, err)
	require.NotContains(t, spec.Maps, "ober_sockets_hi")
	require.Contains(t, spec.Maps, "ober_sockets")
	ncpu, err := ebpf.PossibleCPU()
	require.NoError(t, err)
	spec.Maps["ober_cpumap"].MaxEntries = uint32(ncpu)
	for _, dir := range []string{"maps", "progs", "links"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, dir), 0o700))
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: filepath.Join(root, "maps")}})
	require.NoError(t, err)
	defer coll.Close()
	require.NoError(t, coll.Programs["ober_xdp"].Pin(filepath.Join(root, "progs", "xdp")))
	skl := coll.Programs["ober_sk_lookup"]
	require.NoError(t, skl.Pin(filepath.Join(root, "progs", "sk_lookup")))
	require.NoError(t, ns.Do(func() error {
		ino, f, err := currentNetns()
		if err != nil {
			return err
		}
		defer f.Close()
		l, err := link.AttachNetNs(int(f.Fd()), skl)
		if err != nil {
			return err
		}
		defer l.Close()
		return l.Pin(filepath.Join(root, "links", skLookupPinName(ino)))
	}))
	return progID(t, skl)
}

// linkedSkLookup is the id of the program ns's pinned sk_lookup link runs.
func linkedSkLookup(t *testing.T, root string, ns *netnstest.NS) uint32 {
	t.Helper()
	var id uint32
	require.NoError(t, ns.Do(func() error {
		ino, f, err := currentNetns()
		if err != nil {
			return err
		}
		f.Close()
		l, err := link.LoadPinnedLink(filepath.Join(root, "links", skLookupPinName(ino)), nil)
		if err != nil {
			return err
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return err
		}
		id = uint32(info.Program)
		return nil
	}))
	return id
}

// TestUpgradeFrom256Listeners: a node of the release before
// ober_sockets_hi, its instances' sockets in ober_sockets and a client
// connected, is opened by this release (`ober restart` does that). The
// new sk_lookup program takes the link over while connections are being
// made, none of which fails; the established one goes on, the running
// sockets keep taking new ones where the model says; ober_sockets_hi is
// created and pinned, and a listener past 256 serves.
func TestUpgradeFrom256Listeners(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	ns := netnstest.New(t, "upg256")
	ns.IP(t, "addr", "add", vip4.String()+"/32", "dev", "lo")
	ns.IP(t, "addr", "add", client4.String()+"/32", "dev", "lo")
	earlierProg := pinEarlierRelease(t, root, ns)
	hiPin := filepath.Join(root, "maps", "ober_sockets_hi")

	// The earlier release's tables and sockets. Its writes are this
	// release's; only a table-only handle of this release pins
	// ober_sockets_hi, which the earlier one did not have.
	var lowSvcs []Service
	for _, sv := range siteServices() {
		if sv.Listener < lowListeners {
			lowSvcs = append(lowSvcs, sv)
		}
	}
	ro, err := Open(Options{Root: root, MapsOnly: true, Logger: discardLogger()})
	require.NoError(t, err)
	require.NoError(t, ro.SetServices(siteVIPs(), lowSvcs))
	require.NoError(t, ro.SetMaglev(testSeed, roundRobinTable(testMSize, testInsts)))
	require.NoError(t, ro.SetInstances(testInstances()))
	s := &site{d: ro, srv: ns, accepted: map[netip.AddrPort]acceptance{}}
	for i := uint32(0); i < testInsts; i++ {
		s.serve(t, listenHTTPS, i, false)
	}
	before, err := ro.Sockets()
	require.NoError(t, err)
	require.Len(t, before, testInsts)
	require.NoError(t, ro.Close())
	require.NoError(t, os.Remove(hiPin))
	require.Equal(t, earlierProg, linkedSkLookup(t, root, ns))

	dl := newDialer(t, ns, 4)
	https := ap(vip4, portHTTPS)
	established, err := dl.dial(client4, https, 5*time.Second)
	require.NoError(t, err, "the earlier release serves")
	defer established.Close()
	require.NoError(t, roundTrip(established, "before"))

	// Connections keep coming while the new release opens the pin root.
	stop := make(chan struct{})
	var made, failed int
	var firstErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := dl.dial(client4, https, 5*time.Second)
			if err == nil {
				err = roundTrip(c, "during")
				c.Close()
			}
			if err != nil {
				failed++
				firstErr = cmp.Or(firstErr, err)
			}
			made++
		}
	}()
	time.Sleep(100 * time.Millisecond)
	d, err := Open(Options{Root: root, Logger: discardLogger()})
	time.Sleep(100 * time.Millisecond)
	close(stop)
	<-done
	require.NoError(t, err)
	defer d.Close()
	require.Zero(t, failed, "of %d connections made across the upgrade, %d failed: %v", made, failed, firstErr)
	require.Greater(t, made, 10)
	t.Logf("%d connections across the upgrade", made)

	require.FileExists(t, hiPin, "the upgrade creates ober_sockets_hi")
	require.NotEqual(t, earlierProg, progID(t, d.SkLookupProgram()))
	require.Equal(t, progID(t, d.SkLookupProgram()), linkedSkLookup(t, root, ns), "the link runs the new program")
	after, err := d.Sockets()
	require.NoError(t, err)
	require.Equal(t, before, after, "the running instances' sockets are where they were")
	require.NoError(t, roundTrip(established, "after"), "the established connection goes on")

	s.d = d
	landWhereModelSays := func(dst netip.AddrPort, n int) {
		t.Helper()
		model := NewModel(mustSnapshot(t, d))
		perInst := map[uint32]int{}
		for i := 0; i < n; i++ {
			c, err := dl.dial(client4, dst, 5*time.Second)
			require.NoError(t, err, "%s: connection %d", dst, i)
			require.NoError(t, roundTrip(c, "ping"))
			from := c.LocalAddr().(*net.TCPAddr).AddrPort()
			c.Close()
			got := s.acceptanceOf(t, from)
			want, _, ok := model.SkLookup(SkTuple{Proto: ProtoTCP, Remote: from, Local: dst})
			require.True(t, ok)
			require.Equal(t, want, got.instance, "%s from %s: instance", dst, from)
			perInst[got.instance]++
		}
		require.Len(t, perInst, testInsts, "%s: every instance gets flows: %v", dst, perInst)
	}
	landWhereModelSays(https, 100)

	// This release's configuration, with a listener past 256.
	require.NoError(t, d.SetServices(siteVIPs(), siteServices()))
	for i := uint32(0); i < testInsts; i++ {
		s.serve(t, listenHigh, i, false)
	}
	landWhereModelSays(ap(vip4, portHigh), 100)
	// 60 flows: with 20, one of the four instances got none about once
	// in 80 runs ((3/4)^20 each), which is chance, not a fault.
	landWhereModelSays(https, 60)
	require.NoError(t, roundTrip(established, "still"), "the established connection goes on")
}
