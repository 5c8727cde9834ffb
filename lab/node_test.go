package lab

import (
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/control/runtime/handoff"
)

// TestNodeConfigLoads: the file `lab up` writes for each node loads, in
// both ha modes, and says what the site needs: VIP i owned by node i
// (VRRP), every node a drain handoff peer (BGP).
func TestNodeConfigLoads(t *testing.T) {
	if _, err := user.Lookup(sysuser.HAProxyUser); err != nil {
		t.Skipf("no %s user here (`ober bootstrap` makes it): the configuration cannot load", sysuser.HAProxyUser)
	}
	dir := t.TempDir()
	cert, key, err := certs.SelfSigned(filepath.Join(dir, "tls"), []string{"s3.lab"}, append([]netip.Addr{VIP4, VIP6}, VRRPVIPs...))
	require.NoError(t, err)
	handoffKey := filepath.Join(dir, "handoff.key")
	require.NoError(t, handoff.NewKeyFile(handoffKey))
	var nodes []config.Addr
	for i := range nodeCount {
		nodes = append(nodes, config.Addr{Addr: nodeHost(i).addr})
	}
	for _, ha := range []string{haBGP, haVRRP} {
		for i := range nodeCount {
			text, err := nodeConfigText(ha, i, filepath.Join(dir, nodeHost(i).role), "/sys/fs/bpf/oberlab/"+nodeHost(i).role, cert, key, handoffKey)
			require.NoError(t, err)
			path := filepath.Join(dir, ha+nodeHost(i).role+".yaml")
			require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
			c, err := config.Load(path)
			require.NoError(t, err, text)
			require.Equal(t, nodeHost(i).role, c.Node.Name)
			require.Len(t, c.Backends.Servers, len(backends))
			switch ha {
			case haVRRP:
				require.Equal(t, nodes, c.HA.VRRP.Nodes, "VIP i is owned by node i")
				require.Len(t, c.VIPs, len(VRRPVIPs))
			default:
				require.Equal(t, nodes, c.HA.BGP.Handoff.Nodes)
				require.Len(t, c.HA.BGP.Peers, 2)
			}
		}
	}
}
