package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// nodeA is the machine the tests run on unless they say otherwise: host
// "node-a" allowed to use CPUs 0 and 1.
func nodeA() *environment { return onCPUs(0, 1) }

// onCPUs is host "node-a" allowed to use the given CPUs.
func onCPUs(cpus ...int) *environment {
	return &environment{
		hostname:    func() (string, error) { return "node-a", nil },
		cpus:        func() []int { return cpus },
		now:         time.Now,
		lookupUser:  fakeUsers.lookupUser,
		lookupGroup: fakeUsers.lookupGroup,
	}
}

// accounts are the users and groups of a fake machine: name -> id.
type accounts struct{ users, groups map[string]string }

// fakeUsers is node-a's: ober-haproxy as bootstrap makes it, root, and
// toor, a second name for uid and gid 0.
var fakeUsers = accounts{
	users:  map[string]string{"ober-haproxy": "996", "root": "0", "toor": "0", "www": "33"},
	groups: map[string]string{"ober-haproxy": "993", "root": "0", "wheel0": "0", "www": "33"},
}

func (a accounts) lookupUser(name string) (*user.User, error) {
	id, ok := a.users[name]
	if !ok {
		return nil, user.UnknownUserError(name)
	}
	return &user.User{Username: name, Uid: id, Gid: id}, nil
}

func (a accounts) lookupGroup(name string) (*user.Group, error) {
	id, ok := a.groups[name]
	if !ok {
		return nil, user.UnknownGroupError(name)
	}
	return &user.Group{Name: name, Gid: id}, nil
}

func addr(s string) Addr { return Addr{netip.MustParseAddr(s)} }

func dur(d time.Duration) Duration { return Duration{d} }

func intp(v int) *int { return &v }

// baseConfig is a small valid configuration after defaults, needing no
// files, on nodeA.
func baseConfig() *Config { return baseConfigOn(nodeA()) }

// baseConfigOn is baseConfig on the machine env describes.
func baseConfigOn(env *environment) *Config {
	c := &Config{
		env:  env,
		Node: Node{Interfaces: []string{"eth0"}},
		VIPs: []Addr{addr("10.0.0.1"), addr("fd00::1")},
		Services: []Service{
			{Name: "https", Port: 443, Mode: ModeTLS, TLS: &TLS{SelfSigned: true}},
			{Name: "http", Port: 80, Mode: ModeHTTP},
		},
		Backends: Backends{Servers: []BackendServer{
			{Address: "rgw1.example.com:7480"},
			{Address: "10.1.0.2:7480"},
		}},
	}
	c.ApplyDefaults()
	return c
}

// certOpts shapes a generated certificate.
type certOpts struct {
	cn        string
	notAfter  time.Time // zero: a year from now
	keyInCert bool      // write the key into the certificate file
	keyFormat string    // "pkcs8" (default) or "sec1"
	otherKey  bool      // write a key that does not belong to the cert
}

// writeCert writes a self-signed ECDSA P-256 certificate and its key into
// dir, returning the paths (keyPath is empty when the key is in the cert
// file).
func writeCert(t *testing.T, dir string, o certOpts) (certPath, keyPath string) {
	t.Helper()
	if o.cn == "" {
		o.cn = "s3.example.com"
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: o.cn},
		NotBefore:    o.notAfter.Add(-2 * 365 * 24 * time.Hour),
		NotAfter:     o.notAfter,
		DNSNames:     []string{o.cn},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)

	if o.otherKey {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
	}
	var keyBlock *pem.Block
	switch o.keyFormat {
	case "sec1":
		b, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		keyBlock = &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
	default:
		b, err := x509.MarshalPKCS8PrivateKey(key)
		require.NoError(t, err)
		keyBlock = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	}

	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certPath = filepath.Join(dir, o.cn+".pem")
	if o.keyInCert {
		certPEM = append(certPEM, pem.EncodeToMemory(keyBlock)...)
	} else {
		keyPath = filepath.Join(dir, o.cn+".key")
		require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(keyBlock), 0o600))
	}
	require.NoError(t, os.WriteFile(certPath, certPEM, 0o644))
	return certPath, keyPath
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}
