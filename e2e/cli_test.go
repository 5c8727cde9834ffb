package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

func TestVersion(t *testing.T) {
	res := ober(t, nil, 0, "version")
	require.True(t, strings.HasPrefix(res.stdout, "ober "+testVersion+" (go"), res.stdout)
	res = dev(t, "version")
	require.True(t, strings.HasPrefix(res.stdout, "ober dev (go"), res.stdout)
}

// site is a client and a server namespace joined by a veth pair, and a
// private bpffs for the dataplane.
type site struct {
	root     string
	cli, srv *netnstest.NS
}

func newSite(t *testing.T, queues int) *site {
	t.Helper()
	s := &site{root: netnstest.BPFFS(t) + "/ober"}
	s.cli, s.srv = netnstest.New(t, "cli"), netnstest.New(t, "srv")
	netnstest.Veth(t, s.cli, "veth-c", s.srv, "veth-s", queues)
	return s
}

func (s *site) ober(t *testing.T, code int, args ...string) result {
	t.Helper()
	return ober(t, s.srv, code, append([]string{"--bpffs-root", s.root}, args...)...)
}

func TestAttachDetach(t *testing.T) {
	s := newSite(t, 1)

	res := s.ober(t, 0, "attach", "--iface", "veth-s", "--mode", "native")
	require.Equal(t, "created dataplane at "+s.root+"\nattached xdp to veth-s (native)\n", res.stdout)
	require.True(t, hasXDP(t, s.srv, "veth-s"))
	require.False(t, hasXDP(t, s.cli, "veth-c"))
	st := status(t, s.srv, s.root)
	require.Len(t, st.Attachments, 1)
	require.Equal(t, "veth-s", st.Attachments[0].Iface)
	require.Equal(t, "native", st.Attachments[0].Mode)
	require.NotZero(t, st.Attachments[0].Ifindex)
	require.True(t, st.SkLookupAttached)

	// Again: nothing changes.
	res = s.ober(t, 0, "attach", "--iface", "veth-s")
	require.Equal(t, "xdp already attached to veth-s (native)\n", res.stdout)
	requireSameAttachments(t, st, status(t, s.srv, s.root))

	res = s.ober(t, 1, "attach", "--iface", "veth-s", "--mode", "bogus")
	require.Contains(t, res.stderr, `--mode: invalid XDP mode "bogus"`)
	res = s.ober(t, 1, "attach", "--iface", "veth-s", "--mode", "generic")
	require.Contains(t, res.stderr, "already attached in native mode")
	res = s.ober(t, 1, "attach", "--iface", "nosuch0")
	require.Contains(t, res.stderr, `no interface "nosuch0"`)
	requireSameAttachments(t, st, status(t, s.srv, s.root))

	// The human view names the interface too.
	res = s.ober(t, 0, "status")
	require.Regexp(t, `(?m)^veth-s\s+\d+\s+native$`, res.stdout)
	require.Regexp(t, `(?m)^sk_lookup\s+attached$`, res.stdout)

	res = s.ober(t, 0, "detach", "--iface", "veth-s")
	require.Equal(t, "detached xdp from veth-s\ndetached sk_lookup (no interface left)\n", res.stdout)
	require.False(t, hasXDP(t, s.srv, "veth-s"))
	st = status(t, s.srv, s.root)
	require.Empty(t, st.Attachments)
	require.False(t, st.SkLookupAttached)
	res = s.ober(t, 1, "detach", "--iface", "veth-s")
	require.Contains(t, res.stderr, "not attached there")

	s.ober(t, 0, "attach", "--iface", "veth-s")
	require.True(t, hasXDP(t, s.srv, "veth-s"))
	res = s.ober(t, 0, "detach", "--all")
	require.Equal(t, "removed dataplane at "+s.root+" (links, programs and maps)\n", res.stdout)
	require.False(t, hasXDP(t, s.srv, "veth-s"))
	requireNoPins(t, filepath.Dir(s.root))
	res = s.ober(t, 0, "detach", "--all")
	require.Equal(t, "nothing pinned at "+s.root+"\n", res.stdout)
}

// requireSameAttachments compares what attach changes; counters move on
// their own (IPv6 neighbour discovery on the veth, say).
func requireSameAttachments(t *testing.T, want, got *api.DataplaneStatus) {
	t.Helper()
	require.Equal(t, want.Attachments, got.Attachments)
	require.Equal(t, want.SkLookupAttached, got.SkLookupAttached)
}

// requireNoPins checks that a bpffs holds nothing but the kernel's own
// debug files.
func requireNoPins(t *testing.T, fs string) {
	t.Helper()
	entries, err := os.ReadDir(fs)
	require.NoError(t, err)
	for _, e := range entries {
		require.True(t, strings.HasSuffix(e.Name(), ".debug"), "left in bpffs: %s", e.Name())
	}
}

// Without a dataplane, the commands that need one fail clearly and
// create nothing.
func TestCommandsNeedADataplane(t *testing.T) {
	s := newSite(t, 1)
	for _, args := range [][]string{
		{"status"},
		{"status", "--json"},
		{"sync", "--frontend-http", "10.0.0.1"},
		{"detach", "--iface", "veth-s"},
	} {
		res := s.ober(t, 1, args...)
		require.Contains(t, res.stderr, "no dataplane pinned at "+s.root, "%v", args)
		require.Empty(t, res.stdout, "%v", args)
	}
	requireNoPins(t, filepath.Dir(s.root))
}

// ip netns exec gives commands a fresh /sys without the host's bpffs. With
// the default root, ober must refuse rather than pin into a bpffs that
// vanishes with the process (leaving the operator believing it attached).
func TestDefaultRootUnderIPNetnsExec(t *testing.T) {
	s := newSite(t, 1)
	res := ober(t, s.srv, 1, "attach", "--iface", "veth-s")
	require.Contains(t, res.stderr, "ip netns exec gives commands a fresh /sys")
	require.Contains(t, res.stderr, "--bpffs-root")
	require.False(t, hasXDP(t, s.srv, "veth-s"), "nothing may be attached")
}
