package certs

import (
	"crypto/tls"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSelfSignedAndBundle(t *testing.T) {
	dir := t.TempDir()
	vip := netip.MustParseAddr("10.0.0.10")
	cert, key, err := SelfSigned(dir, []string{"node1"}, []netip.Addr{vip})
	require.NoError(t, err)
	st, err := os.Stat(key)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the key is private")
	first, _ := os.ReadFile(cert)

	// Same names: kept. A new VIP: regenerated to cover it.
	_, _, err = SelfSigned(dir, []string{"node1"}, []netip.Addr{vip})
	require.NoError(t, err)
	again, _ := os.ReadFile(cert)
	require.Equal(t, first, again)
	_, _, err = SelfSigned(dir, []string{"node1"}, []netip.Addr{vip, netip.MustParseAddr("fd00::10")})
	require.NoError(t, err)
	third, _ := os.ReadFile(cert)
	require.NotEqual(t, first, third)

	pem, err := Bundle(cert, key)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(pem, pem)
	require.NoError(t, err, "the bundle holds a matching chain and key")
	require.Contains(t, pair.Leaf.DNSNames, "node1")

	// A PEM holding both is bundled without a key file.
	both := filepath.Join(dir, "both.pem")
	require.NoError(t, os.WriteFile(both, pem, 0o600))
	again2, err := Bundle(both, "")
	require.NoError(t, err)
	require.Equal(t, pem, again2)

	_, err = Bundle(filepath.Join(dir, "none.pem"), "")
	require.ErrorContains(t, err, "read certificate")
	_, err = Bundle(cert, "")
	require.EqualError(t, err, "no private key found")
}
