package haproxy

import (
	"context"
	"crypto/x509"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/internal/testsite/haproxytest"
)

// haproxyBinary is the system's HAProxy (Debian 12's 2.6), for the
// tests that run one release; the ones that run every release take
// theirs from haproxytest.Each.
func haproxyBinary(t *testing.T) string { return haproxytest.System(t) }

func haproxyVersion(t *testing.T, bin string) Version {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := DetectVersion(ctx, bin)
	require.NoError(t, err)
	return v
}

// testCert is a self-signed ECDSA certificate for "localhost" and
// 127.0.0.1/::1, written as a combined PEM (chain and key, what the
// daemon writes for HAProxy) and as a CA file.
type testCert struct {
	CombinedPEM string // certificate then key
	CAFile      string // certificate only
	Pool        *x509.CertPool
	Cert        *x509.Certificate
}

func newTestCert(t *testing.T, dir string) testCert {
	t.Helper()
	certPath, keyPath, err := certs.SelfSigned(dir, []string{"localhost", "s3.test"},
		[]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()})
	require.NoError(t, err)
	bundle, err := certs.Bundle(certPath, keyPath)
	require.NoError(t, err)
	chain, _ := certs.Split(bundle)
	cert, err := x509.ParseCertificate(chain[0].Bytes)
	require.NoError(t, err)
	tc := testCert{
		CombinedPEM: filepath.Join(dir, "frontend.pem"),
		CAFile:      certPath,
		Pool:        x509.NewCertPool(),
		Cert:        cert,
	}
	require.NoError(t, os.WriteFile(tc.CombinedPEM, bundle, 0o600))
	tc.Pool.AddCert(cert)
	return tc
}

// shortTempDir is a temporary directory with a short path: the stats
// socket path must stay within MaxStatsSocketPath.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ober-hx")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// baseInstance is a valid two-frontend instance for HAProxy 2.6: tls and
// http services on the S3 pool.
func baseInstance() Instance {
	return Instance{
		Index:       2,
		CPU:         1,
		Node:        "node-a",
		StatsSocket: "/run/ober/haproxy-2.sock",
		Frontends: []Frontend{
			{Name: "tls-443", Mode: ModeTLS, Port: 443, PEM: "/run/ober/tls-443.pem",
				Binds: []Bind{{FD: 3, Family: 4}, {FD: 4, Family: 6}}, Pool: DefaultPool},
			{Name: "http-80", Mode: ModeHTTP, Port: 80,
				Binds: []Bind{{FD: 5, Family: 4}}, Pool: DefaultPool},
		},
		Pools: []Pool{{Name: DefaultPool, Balance: BalanceLeastConn, Servers: []Server{
			{Name: "s0", Addr: netip.MustParseAddrPort("192.0.2.10:9000"), Weight: 100},
			{Name: "s1", Addr: netip.MustParseAddrPort("[2001:db8::1]:9000"), Weight: 50},
			{Name: "s2", Addr: netip.MustParseAddrPort("192.0.2.12:443"), Weight: 100,
				TLS: true, CAFile: "/etc/ober/ca.pem", SNI: "s3.internal"},
			{Name: "s3", Addr: netip.MustParseAddrPort("192.0.2.13:443"), Weight: 0, TLS: true},
			{Name: "s4", Addr: netip.MustParseAddrPort("192.0.2.14:9000"), Weight: 100, ProxyProtocol: ProxyV2},
		}}},
		Timeouts: Timeouts{
			Connect: 5 * time.Second, Client: 5 * time.Minute, Server: 5 * time.Minute,
			HTTPRequest: 30 * time.Second, HTTPKeepAlive: time.Minute, Drain: 30 * time.Second,
		},
		MaxConn:        20000,
		ServedByHeader: true,
		Version:        Version{Major: 2, Minor: 6, Patch: 12, Raw: "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"},
		User:           sysuser.HAProxyUser,
		Group:          sysuser.HAProxyUser,
		Chroot:         "/run/ober/empty",
	}
}

// unprivileged makes in drop to ober-haproxy (created when the machine
// lacks it) in an empty directory under dir, as the daemon's instances
// do, so that a real run shows what they go through.
func unprivileged(t *testing.T, in *Instance, dir string) {
	t.Helper()
	_, err := sysuser.Ensure(context.Background(), sysuser.HAProxyUser)
	require.NoError(t, err)
	in.User, in.Group = sysuser.HAProxyUser, sysuser.HAProxyUser
	in.Chroot = filepath.Join(dir, "empty")
	if err := os.Mkdir(in.Chroot, 0o555); !errors.Is(err, fs.ErrExist) {
		require.NoError(t, err)
	}
	require.NoError(t, os.Chmod(in.Chroot, 0o555))
}

// procStatus is /proc/<pid>/status as field -> value.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	st, err := procstat.Status(pid)
	require.NoError(t, err)
	return st
}
