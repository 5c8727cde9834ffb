package dataplane

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader"
)

// hasXDP asks iproute2 whether iface in ns runs an XDP program.
func hasXDP(t *testing.T, ns *netnstest.NS, iface string) bool {
	t.Helper()
	return strings.Contains(ns.IP(t, "link", "show", "dev", iface), "prog/xdp")
}

// attachIn runs Attach on a thread inside ns.
func attachIn(ns *netnstest.NS, opts loader.Options, iface string, mode loader.XDPMode) (*AttachResult, error) {
	var res *AttachResult
	err := ns.Do(func() (err error) {
		res, err = Attach(opts, iface, mode)
		return err
	})
	return res, err
}

// One pin root serves one namespace's sk_lookup. Attaching an interface of
// a second namespace must fail as a whole, leaving no XDP link there.
func TestAttachDetachOneNamespace(t *testing.T) {
	opts := loader.Options{Root: netnstest.BPFFS(t) + "/ober", Logger: quiet()}
	a, b := netnstest.New(t, "a"), netnstest.New(t, "b")
	netnstest.Veth(t, a, "va", b, "vb", 1)

	res, err := attachIn(a, opts, "va", loader.XDPNative)
	require.NoError(t, err)
	require.Equal(t, &AttachResult{Iface: "va", Mode: loader.XDPNative, Created: true}, res)
	require.True(t, hasXDP(t, a, "va"))

	res, err = attachIn(a, opts, "va", loader.XDPAuto)
	require.NoError(t, err, "attaching again is a no-op")
	require.Equal(t, &AttachResult{Iface: "va", Mode: loader.XDPNative, AlreadyAttached: true}, res)

	_, err = attachIn(b, opts, "vb", loader.XDPNative)
	require.ErrorContains(t, err, "attach vb: ")
	require.ErrorContains(t, err, "another network namespace")
	require.False(t, hasXDP(t, b, "vb"), "the XDP link of the failed attach must be gone")

	var (
		atts []loader.Attachment
		sk   bool
	)
	require.NoError(t, a.Do(func() error {
		d, err := loader.Open(opts)
		if err != nil {
			return err
		}
		defer d.Close()
		atts, sk, err = d.Attachments()
		return err
	}))
	require.Len(t, atts, 1)
	require.Equal(t, loader.Attachment{Iface: "va", Ifindex: atts[0].Ifindex, Mode: loader.XDPNative}, atts[0])
	require.NotZero(t, atts[0].Ifindex)
	require.True(t, sk)

	var det *DetachResult
	require.NoError(t, a.Do(func() (err error) {
		det, err = Detach(opts, "va")
		return err
	}))
	require.Equal(t, &DetachResult{Iface: "va", SkLookupDetached: true}, det)
	require.False(t, hasXDP(t, a, "va"))

	err = a.Do(func() error { _, err := Detach(opts, "va"); return err })
	require.ErrorContains(t, err, "not attached there (attached: none)")
}

func TestAttachUnknownInterfaceCreatesNothing(t *testing.T) {
	opts := loader.Options{Root: netnstest.BPFFS(t) + "/ober", Logger: quiet()}
	a := netnstest.New(t, "a")
	_, err := attachIn(a, opts, "nosuch0", loader.XDPAuto)
	require.ErrorContains(t, err, `no interface "nosuch0"`)
	_, err = os.Stat(opts.Root)
	require.ErrorIs(t, err, os.ErrNotExist, "a failed attach must not create a dataplane")
}

// An interface of the same name in a second namespace must not take over
// the first one's XDP: the pin root serves one namespace and says so.
func TestAttachSameNameInOtherNamespace(t *testing.T) {
	opts := loader.Options{Root: netnstest.BPFFS(t) + "/ober", Logger: quiet()}
	a, b, peer := netnstest.New(t, "a"), netnstest.New(t, "b"), netnstest.New(t, "peer")
	netnstest.Veth(t, a, "v0", peer, "pa", 1)
	netnstest.Veth(t, b, "pad0", peer, "pad1", 1) // gives b's v0 another ifindex
	netnstest.Veth(t, b, "v0", peer, "pb", 1)

	_, err := attachIn(a, opts, "v0", loader.XDPNative)
	require.NoError(t, err)
	_, err = attachIn(b, opts, "v0", loader.XDPNative)
	require.ErrorContains(t, err, "another network namespace")
	require.True(t, hasXDP(t, a, "v0"), "the first namespace's XDP must survive")
	require.False(t, hasXDP(t, b, "v0"))
}

// A native attach the driver refuses must not leave behind the dataplane
// that Attach created for it.
func TestAttachFailureRemovesCreatedDataplane(t *testing.T) {
	opts := loader.Options{Root: netnstest.BPFFS(t) + "/ober", Logger: quiet()}
	a, b := netnstest.New(t, "a"), netnstest.New(t, "b")
	// veth refuses native XDP when the peer has more TX queues than it
	// has RX queues.
	a.IP(t, "link", "add", "va", "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
		"peer", "name", "vb", "numtxqueues", "2", "numrxqueues", "2", "netns", b.Name)
	a.IP(t, "link", "set", "va", "up")

	_, err := attachIn(a, opts, "va", loader.XDPNative)
	require.ErrorContains(t, err, "attach va: attach xdp va (native): ")
	require.False(t, hasXDP(t, a, "va"))
	_, err = os.Stat(opts.Root)
	require.ErrorIs(t, err, os.ErrNotExist, "the dataplane created for the attach must be gone")
}

func TestDetachAll(t *testing.T) {
	root := netnstest.BPFFS(t) + "/ober"
	found, err := DetachAll(root, quiet())
	require.NoError(t, err)
	require.False(t, found)

	d, err := loader.Open(loader.Options{Root: root, Logger: quiet()})
	require.NoError(t, err)
	require.NoError(t, d.Close())
	found, err = DetachAll(root, quiet())
	require.NoError(t, err)
	require.True(t, found)
	_, err = os.Stat(root)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
