package loader

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/ober-ingress/ober/internal/netnstest"
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

	require.NoError(t, d2.DetachXDP("eth1"))
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
	old, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	require.NoError(t, err)
	defer old.Close()
	pin := filepath.Join(root, "progs", "xdp")
	require.NoError(t, os.Remove(pin))
	require.NoError(t, old.Pin(pin))
	require.NoError(t, relinkForTest(root, old))
	require.Equal(t, progID(t, old), xdpProgID(t, srv, "eth1"))

	d2, err := Open(Options{Root: root})
	require.NoError(t, err)
	defer d2.Close()
	require.Equal(t, progID(t, d2.XDPProgram()), xdpProgID(t, srv, "eth1"), "the link runs the new program")
	require.NotEqual(t, progID(t, old), progID(t, d2.XDPProgram()))
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
