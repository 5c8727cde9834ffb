package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
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

func TestParsePrivateKeyAndKeyMatches(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, err := SelfSigned(dir, []string{"node1"}, nil)
	require.NoError(t, err)
	cb, err := os.ReadFile(certPath)
	require.NoError(t, err)
	kb, err := os.ReadFile(keyPath)
	require.NoError(t, err)
	chainBlocks, _ := Split(cb)
	_, keyBlocks := Split(kb)
	require.Len(t, keyBlocks, 1)

	chain, err := ParseChain(chainBlocks)
	require.NoError(t, err)
	require.Equal(t, "node1", chain[0].Subject.CommonName)
	key, err := ParsePrivateKey(keyBlocks[0])
	require.NoError(t, err)
	require.True(t, KeyMatches(key, chain[0]))

	// The same key as SEC 1 ("EC PRIVATE KEY") parses too, whatever the
	// label says.
	ec, ok := key.(*ecdsa.PrivateKey)
	require.True(t, ok)
	der, err := x509.MarshalECPrivateKey(ec)
	require.NoError(t, err)
	again, err := ParsePrivateKey(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	require.NoError(t, err)
	require.True(t, KeyMatches(again, chain[0]))

	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	require.False(t, KeyMatches(other, chain[0]), "another key does not match")

	_, err = ParsePrivateKey(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})
	require.EqualError(t, err, "private key is encrypted; HAProxy needs it unencrypted")
	_, err = ParsePrivateKey(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: der})
	require.EqualError(t, err, "private key is encrypted; HAProxy needs it unencrypted")
	_, err = ParsePrivateKey(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")})
	require.EqualError(t, err, "PRIVATE KEY block does not parse as a PKCS #1, PKCS #8 or EC private key")

	_, err = ParseChain(nil)
	require.EqualError(t, err, "no PEM CERTIFICATE block")
	_, err = ParseChain([]*pem.Block{chainBlocks[0], {Type: "CERTIFICATE", Bytes: []byte("junk")}})
	require.ErrorContains(t, err, "certificate 2 of 2 does not parse: ")
}
