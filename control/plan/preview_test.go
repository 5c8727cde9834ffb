package plan

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/sysuser"
)

func TestRenderPreviewTouchesNothing(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("RenderPreview needs HAProxy: apt-get install haproxy")
	}
	// The configuration names ober-haproxy, as on a bootstrapped node.
	_, err := sysuser.Ensure(context.Background(), sysuser.HAProxyUser)
	require.NoError(t, err)
	dir := t.TempDir()
	run, state := filepath.Join(dir, "run"), filepath.Join(dir, "state")
	cfg, err := config.Parse(fmt.Appendf(nil, `
node: {name: n1, interfaces: [lo], runtime_dir: %s, state_dir: %s}
vips: [10.20.0.10]
services: [{name: https, port: 443, mode: tls, tls: {self_signed: true}}]
backends: {servers: [{address: "10.30.0.1:7480"}]}
instances: {count: 1}
`, run, state))
	require.NoError(t, err)

	// No certificate yet: the daemon would make one; the preview does not.
	p, err := RenderPreview(context.Background(), cfg, nil)
	require.NoError(t, err)
	require.True(t, p.NewSelfSigned)
	require.NoDirExists(t, run)
	require.NoDirExists(t, state)
	require.Len(t, p.HAProxy, 1)
	require.Equal(t, filepath.Join(run, "haproxy-0.g1.cfg"), p.HAProxy[0].Path)
	require.Empty(t, p.HAProxy[0].Current)

	// With the node's certificate in place the bundle's name is the one
	// the daemon will use, run after run.
	_, _, err = certs.SelfSigned(filepath.Join(state, "tls"), []string{"n1"}, []netip.Addr{netip.MustParseAddr("10.20.0.10")})
	require.NoError(t, err)
	before, err := os.ReadFile(filepath.Join(state, "tls", "selfsigned.crt"))
	require.NoError(t, err)
	p1, err := RenderPreview(context.Background(), cfg, nil)
	require.NoError(t, err)
	p2, err := RenderPreview(context.Background(), cfg, nil)
	require.NoError(t, err)
	require.False(t, p1.NewSelfSigned)
	require.Equal(t, p1.Bundles, p2.Bundles)
	require.True(t, strings.HasPrefix(p1.Bundles[0], filepath.Join(run, "tls", "https-")), p1.Bundles[0])
	require.Contains(t, string(p1.HAProxy[0].Data), "crt "+p1.Bundles[0]+" ")
	require.Contains(t, string(p1.HAProxy[0].Data), "\n    user ober-haproxy\n    group ober-haproxy\n    chroot "+filepath.Join(run, "empty")+"\n",
		"the instances drop to ober-haproxy in the runtime directory's empty directory, which the preview does not create")
	after, err := os.ReadFile(filepath.Join(state, "tls", "selfsigned.crt"))
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.NoDirExists(t, run)

	// The next generation follows the newest on disk.
	require.NoError(t, os.MkdirAll(run, 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(run, "haproxy-0.g7.cfg"), nil, 0o640))
	require.NoError(t, os.WriteFile(filepath.Join(run, "haproxy-0.g6.cfg"), nil, 0o640))
	p3, err := RenderPreview(context.Background(), cfg, nil)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(run, "haproxy-0.g7.cfg"), p3.HAProxy[0].Current)
	require.Equal(t, filepath.Join(run, "haproxy-0.g8.cfg"), p3.HAProxy[0].Path)
	require.Contains(t, string(p3.HAProxy[0].Data), "stats socket "+filepath.Join(run, "haproxy-0.g8.sock"))
}
