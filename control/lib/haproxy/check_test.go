package haproxy

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// checkInstance is a two-frontend instance (TLS with a real PEM, plain
// HTTP) with IPv4 and IPv6 servers, a verified TLS server and a PROXY
// protocol server, for the HAProxy at hand.
func checkInstance(t *testing.T, v Version, dir string) Instance {
	t.Helper()
	cert := newTestCert(t, dir)
	in := baseInstance()
	in.Version = v
	in.StatsSocket = filepath.Join(dir, "s.sock")
	in.Frontends[0].PEM = cert.CombinedPEM
	unprivileged(t, &in, dir)
	in.Servers = []Server{
		{Name: "v4", Addr: netip.MustParseAddrPort("192.0.2.10:9000"), Weight: 100},
		{Name: "v6", Addr: netip.MustParseAddrPort("[2001:db8::10]:9000"), Weight: 100},
		{Name: "tls-ca", Addr: netip.MustParseAddrPort("192.0.2.11:443"), Weight: 100,
			TLS: true, CAFile: cert.CAFile, SNI: "s3.test"},
		{Name: "tls-noverify", Addr: netip.MustParseAddrPort("[2001:db8::11]:443"), Weight: 10, TLS: true},
		{Name: "pp", Addr: netip.MustParseAddrPort("192.0.2.12:9000"), Weight: 100, ProxyProtocol: true},
		{Name: "pp-tls", Addr: netip.MustParseAddrPort("192.0.2.13:443"), Weight: 0,
			TLS: true, CAFile: cert.CAFile, ProxyProtocol: true},
	}
	return in
}

func writeConfig(t *testing.T, dir string, in Instance) string {
	t.Helper()
	b, err := Render(in)
	require.NoError(t, err)
	path := filepath.Join(dir, "haproxy.cfg")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	return path
}

func TestCheckRenderedConfig(t *testing.T) {
	bin := haproxyBinary(t)
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	path := writeConfig(t, dir, checkInstance(t, v, dir))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, Check(ctx, bin, path, []int{3, 4, 5}))
	// The descriptors can also come from the file alone.
	require.NoError(t, Check(ctx, bin, path, nil))
}

// TestCheckExtraBinaries checks the rendered configuration with more
// HAProxy releases, listed in OBER_TEST_HAPROXY_EXTRA (colon-separated
// paths), e.g. a 3.x build next to Debian 12's 2.6.
func TestCheckExtraBinaries(t *testing.T) {
	list := os.Getenv("OBER_TEST_HAPROXY_EXTRA")
	for _, bin := range strings.Split(list, ":") {
		if bin == "" {
			continue
		}
		t.Run(filepath.Base(bin), func(t *testing.T) {
			v := haproxyVersion(t, bin)
			t.Logf("%s: %s (%s)", bin, v.Raw, FeaturesFor(v))
			dir := shortTempDir(t)
			path := writeConfig(t, dir, checkInstance(t, v, dir))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, Check(ctx, bin, path, nil))
		})
	}
}

func TestCheckReportsAlerts(t *testing.T) {
	bin := haproxyBinary(t)
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A PEM file that does not exist.
	in := checkInstance(t, v, dir)
	missing := filepath.Join(dir, "missing.pem")
	in.Frontends[0].PEM = missing
	err := Check(ctx, bin, writeConfig(t, dir, in), nil)
	var ce *CheckError
	require.True(t, errors.As(err, &ce), "%v", err)
	require.NotEmpty(t, ce.Alerts)
	require.Contains(t, err.Error(), missing)
	require.NotContains(t, err.Error(), "[ALERT]")
	require.Contains(t, ce.Output, "[ALERT]")

	// An unknown keyword (as a newer directive on an older HAProxy).
	path := filepath.Join(dir, "bad.cfg")
	good, err := Render(checkInstance(t, v, dir))
	require.NoError(t, err)
	bad := strings.Replace(string(good), "    nbthread 1\n", "    nbthread 1\n    no-such-directive 42\n", 1)
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o644))
	err = Check(ctx, bin, path, nil)
	require.True(t, errors.As(err, &ce), "%v", err)
	require.Contains(t, err.Error(), "no-such-directive")
	require.Contains(t, err.Error(), "bad.cfg")

	// Without the descriptors its binds name, HAProxy refuses the file even
	// under -c: what Check's placeholder sockets are for.
	path = writeConfig(t, dir, checkInstance(t, v, dir))
	out, err := exec.CommandContext(ctx, bin, "-c", "-f", path).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "file descriptor")
	// Descriptors beyond the file's, with gaps, are fine.
	require.NoError(t, Check(ctx, bin, path, []int{3, 9}))
}

func TestCheckArguments(t *testing.T) {
	bin := haproxyBinary(t)
	dir := t.TempDir()
	ctx := context.Background()

	require.Error(t, Check(ctx, "", "/nonexistent", nil))
	require.ErrorContains(t, Check(ctx, bin, filepath.Join(dir, "none.cfg"), nil), "none.cfg")

	path := filepath.Join(dir, "x.cfg")
	require.NoError(t, os.WriteFile(path, []byte("global\n    nbthread 1\n"), 0o644))
	require.ErrorContains(t, Check(ctx, bin, path, []int{2}), "fd 2")
	err := Check(ctx, filepath.Join(dir, "no-haproxy"), path, nil)
	require.Error(t, err)
	var ce *CheckError
	require.False(t, errors.As(err, &ce), "a missing binary is not a refused config")
}
