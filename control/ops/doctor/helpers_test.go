package doctor

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
)

// now is the fake clock of every test.
var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// fake is a machine made up for a test: a file tree under root, and
// answers for the commands, binds, dials and HTTP requests.
type fake struct {
	t     *testing.T
	root  string
	exec  map[string]string // "name args..." -> output
	binds map[string]error  // "network addr" -> error (absent: free)
	dials map[string]error  // addr -> error (absent: connects)
	up    bool              // ober's API answers /health
	addrs map[string][]netip.Addr
}

func newFake(t *testing.T) *fake {
	t.Helper()
	return &fake{t: t, root: t.TempDir(), exec: map[string]string{}, binds: map[string]error{},
		dials: map[string]error{}, addrs: map[string][]netip.Addr{}}
}

// file writes name (relative to the root) with content.
func (f *fake) file(name, content string) *fake {
	f.t.Helper()
	p := filepath.Join(f.root, name)
	require.NoError(f.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(f.t, os.WriteFile(p, []byte(content), 0o644))
	return f
}

// nic makes /sys/class/net/IF with rx queues and, when drv is not empty,
// a device/driver link as a PCI or virtio device has.
func (f *fake) nic(iface, drv string, queues int) *fake {
	f.t.Helper()
	dir := filepath.Join(f.root, "sys/class/net", iface)
	for i := range queues {
		require.NoError(f.t, os.MkdirAll(filepath.Join(dir, "queues", fmt.Sprintf("rx-%d", i)), 0o755))
		require.NoError(f.t, os.MkdirAll(filepath.Join(dir, "queues", fmt.Sprintf("tx-%d", i)), 0o755))
	}
	if drv != "" {
		require.NoError(f.t, os.MkdirAll(filepath.Join(dir, "device"), 0o755))
		require.NoError(f.t, os.Symlink("../../../../bus/pci/drivers/"+drv, filepath.Join(dir, "device/driver")))
	}
	return f
}

func (f *fake) env() Env {
	return Env{
		Root: f.root,
		Exec: func(_ context.Context, name string, args ...string) ([]byte, error) {
			out, ok := f.exec[strings.Join(append([]string{name}, args...), " ")]
			if !ok {
				return nil, fmt.Errorf("%s: %w", name, os.ErrNotExist)
			}
			return []byte(out), nil
		},
		Listen: func(network, addr string) (io.Closer, error) {
			if err := f.binds[network+" "+addr]; err != nil {
				return nil, err
			}
			return io.NopCloser(nil), nil
		},
		Dial: func(_ context.Context, _, addr string) (io.Closer, error) {
			if err := f.dials[addr]; err != nil {
				return nil, err
			}
			return io.NopCloser(nil), nil
		},
		HTTPGet: func(context.Context, string) (int, error) {
			if f.up {
				return 200, nil
			}
			return 0, errors.New("connection refused")
		},
		Addrs: func(iface string) ([]netip.Addr, error) { return f.addrs[iface], nil },
		Now:   func() time.Time { return now },
	}
}

// addrInUse is what a bind returns when another socket holds the port.
var addrInUse = &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}

// addrNotLocal is what a bind to an address the node lacks returns.
var addrNotLocal = &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}

func addr(s string) config.Addr { return config.Addr{Addr: netip.MustParseAddr(s)} }

// baseConfig is a valid configuration with defaults filled in, as
// config.Load returns it, without touching any file.
func baseConfig() *config.Config {
	return &config.Config{
		Node:     config.Node{Name: "n1", Interfaces: []string{"eth1"}, XDPMode: "auto", BPFFSRoot: "/sys/fs/bpf/ober"},
		VIPs:     []config.Addr{addr("192.0.2.10")},
		Services: []config.Service{{Name: "http", Port: 80, Mode: "http"}},
		Backends: config.Backends{Servers: []config.BackendServer{{Name: "s0", Address: "10.0.0.1:7480"}}},
		HA:       config.HA{Mode: "none"},
		API:      config.API{Listen: "127.0.0.1:8404"},
		HAProxy:  config.HAProxy{Binary: "haproxy"},
	}
}

// find returns the results named name.
func find(rs []Result, name string) []Result {
	var out []Result
	for _, r := range rs {
		if r.Name == name {
			out = append(out, r)
		}
	}
	return out
}

// one returns the only result named name.
func one(t *testing.T, rs []Result, name string) Result {
	t.Helper()
	got := find(rs, name)
	require.Len(t, got, 1, "results named %q in %+v", name, rs)
	return got[0]
}

// requireStatus checks a result's status, that its detail holds want,
// and that anything short of a pass has a fix.
func requireStatus(t *testing.T, r Result, st Status, want ...string) {
	t.Helper()
	require.Equal(t, st, r.Status, "%+v", r)
	for _, w := range want {
		require.Contains(t, r.Detail+" | fix: "+r.Fix, w, "%+v", r)
	}
	if st == Pass {
		require.Empty(t, r.Fix, "%+v", r)
	} else {
		require.NotEmpty(t, r.Fix, "%+v", r)
	}
}

// certPair writes a certificate valid from notBefore to notAfter for
// dns, and its key, and returns their paths.
func certPair(t *testing.T, dir, name string, notBefore, notAfter time.Time, dns []string) (certPath, keyPath string, key crypto.Signer) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	require.NoError(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return certPath, keyPath, k
}
