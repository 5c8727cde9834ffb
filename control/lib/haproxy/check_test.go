package haproxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/haproxytest"
)

// checkInstance has a frontend of every kind: TLS with a real PEM and
// plain HTTP on the S3 pool (IPv4 and IPv6 servers, a verified TLS
// server, PROXY protocol servers), a tcp service on a port range whose
// pool has three tiers, and a TLS passthrough service routing by name and
// regexp to three pools; every option that renders something is set
// somewhere, for the HAProxy at hand.
func checkInstance(t *testing.T, v Version, dir string) Instance {
	t.Helper()
	cert := newTestCert(t, dir)
	in := baseInstance()
	in.Version = v
	in.StatsSocket = filepath.Join(dir, "s.sock")
	in.Frontends[0].PEM = cert.CombinedPEM
	unprivileged(t, &in, dir)
	in.Pools[0].Servers = []Server{
		{Name: "v4", Addr: netip.MustParseAddrPort("192.0.2.10:9000"), Weight: 100},
		{Name: "v6", Addr: netip.MustParseAddrPort("[2001:db8::10]:9000"), Weight: 100},
		{Name: "tls-ca", Addr: netip.MustParseAddrPort("192.0.2.11:443"), Weight: 100,
			TLS: true, CAFile: cert.CAFile, SNI: "s3.test"},
		{Name: "tls-noverify", Addr: netip.MustParseAddrPort("[2001:db8::11]:443"), Weight: 10, TLS: true},
		{Name: "pp", Addr: netip.MustParseAddrPort("192.0.2.12:9000"), Weight: 100, ProxyProtocol: ProxyV2},
		{Name: "pp-tls", Addr: netip.MustParseAddrPort("192.0.2.13:443"), Weight: 0,
			TLS: true, CAFile: cert.CAFile, ProxyProtocol: ProxyV2},
	}
	in.Frontends[1].RejectWhenDown = true
	in.Frontends[1].ClientTimeout = time.Hour
	in.Frontends[1].MaxConn = 100
	in.Pools[0].ConnectTimeout = time.Second
	in.Pools[0].ServerTimeout = 2 * time.Hour
	in.ConnsPerSource, in.RatePerSource = 100, 50
	in.Frontends = append(in.Frontends,
		Frontend{Name: "db", Mode: ModeTCP, Port: 7000, LastPort: 7010, Binds: []Bind{{FD: 6, Family: 4}, {FD: 7, Family: 6}},
			VIPs: []netip.Addr{netip.MustParseAddr("10.20.0.20"), netip.MustParseAddr("2001:db8::20")}, Pool: "db:default",
			MaxConn: 50, ClientTimeout: time.Minute, RejectWhenDown: true},
		Frontend{Name: "pt", Mode: ModeTCP, Port: 443, Binds: []Bind{{FD: 8, Family: 4}}, Pool: "pt:c", RejectWhenDown: true,
			Passthrough: &Passthrough{InspectDelay: 3 * time.Second, Routes: []SNIRoute{
				{Names: []string{"a.example.com", "A.Example.org"}, Pool: "pt:a"},
				{Names: []string{"api.example.com"}, Regexp: `^api-[0-9]{1,3}\.example\.(com|org)$`, Pool: "pt:b"},
				{Regexp: `(?i)\.b\.example\.com$`, Pool: "pt:a"},
			}}},
		Frontend{Name: "pt-strict", Mode: ModeTCP, Port: 8443, Binds: []Bind{{FD: 9, Family: 4}},
			Passthrough: &Passthrough{InspectDelay: time.Second, Routes: []SNIRoute{{Names: []string{"z.example.com"}, Pool: "pt:z"}}}},
	)
	srv := func(name, a string, prio int, state string, pp int) Server {
		return Server{Name: name, Addr: netip.MustParseAddrPort(a), Weight: 50, Priority: prio, State: state, ProxyProtocol: pp}
	}
	in.Pools = append(in.Pools,
		Pool{Name: "db:default", Balance: BalanceConsistent, ConnectTimeout: 3 * time.Second, ServerTimeout: time.Hour, Servers: []Server{
			srv("a", "192.0.2.20:0", 1, "", ProxyV2), srv("b", "[2001:db8::21]:0", 1, StateDrain, ProxyV1),
			srv("c", "192.0.2.22:5432", 2, StateMaint, 0), srv("d", "192.0.2.23:0", 9, StateReady, 0)}},
		Pool{Name: "pt:a", Balance: BalanceRandom, Servers: []Server{srv("a1", "192.0.2.30:443", 1, "", 0), srv("a2", "192.0.2.31:443", 2, "", 0)}},
		Pool{Name: "pt:b", Balance: BalanceFirst, Servers: []Server{srv("b1", "192.0.2.32:443", 1, "", ProxyV2)}},
		Pool{Name: "pt:c", Balance: BalanceSource, Servers: []Server{srv("c1", "192.0.2.33:443", 3, "", 0), srv("c2", "192.0.2.34:443", 4, "", 0)}},
		Pool{Name: "pt:z", Balance: BalanceLeastBandwidth, Servers: []Server{srv("z1", "192.0.2.35:443", 1, "", 0)}},
	)
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

func TestCheckRenderedConfig(t *testing.T) { haproxytest.Each(t, testCheckRenderedConfig) }

func testCheckRenderedConfig(t *testing.T, bin string) {
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	path := writeConfig(t, dir, checkInstance(t, v, dir))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, Check(ctx, bin, path, []int{3, 4, 5}))
	// The descriptors can also come from the file alone.
	require.NoError(t, Check(ctx, bin, path, nil))
}

// TestCheckEveryBalance: HAProxy takes what each balance method renders,
// in tcp and http backends.
func TestCheckEveryBalance(t *testing.T) { haproxytest.Each(t, testCheckEveryBalance) }

func testCheckEveryBalance(t *testing.T, bin string) {
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for b := range balanceLines {
		in := checkInstance(t, v, dir)
		in.Pools[0].Balance = b
		in.Pools[1].Balance = b
		require.NoError(t, Check(ctx, bin, writeConfig(t, dir, in), nil), b)
	}
}

// TestCheckPoolWithoutServers: a pool with no server yet (a tcp service
// whose backends are still to come) renders a backend HAProxy accepts.
func TestCheckPoolWithoutServers(t *testing.T) { haproxytest.Each(t, testCheckPoolWithoutServers) }

func testCheckPoolWithoutServers(t *testing.T, bin string) {
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in := checkInstance(t, v, dir)
	in.Pools[1].Servers = nil
	text, err := Render(in)
	require.NoError(t, err)
	require.Contains(t, string(text), "backend "+in.Pools[1].Name+"\n")
	require.NoError(t, Check(ctx, bin, writeConfig(t, dir, in), nil))
}

// TestCheckIdleInstance: an instance with no frontend and no pool (a
// node whose services the kernel forwards) renders a file HAProxy accepts;
// a pool without a frontend is still refused.
func TestCheckIdleInstance(t *testing.T) { haproxytest.Each(t, testCheckIdleInstance) }

func testCheckIdleInstance(t *testing.T, bin string) {
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in := checkInstance(t, v, dir)
	pools := in.Pools
	in.Frontends, in.Pools = nil, nil
	text, err := Render(in)
	require.NoError(t, err)
	require.NotContains(t, string(text), "frontend ")
	require.NoError(t, Check(ctx, bin, writeConfig(t, dir, in), nil))
	in.Pools = pools
	_, err = Render(in)
	require.ErrorContains(t, err, "no frontends")
}

func TestCheckReportsAlerts(t *testing.T) { haproxytest.Each(t, testCheckReportsAlerts) }

func testCheckReportsAlerts(t *testing.T, bin string) {
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

// TestCheckTune: HAProxy takes every Tune field at both ends of the range
// ober admits, so a configuration ober accepts never fails to start.
func TestCheckTune(t *testing.T) { haproxytest.Each(t, testCheckTune) }

func testCheckTune(t *testing.T, bin string) {
	v := haproxyVersion(t, bin)
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, end := range []string{"min", "max"} {
		in := checkInstance(t, v, dir)
		for _, f := range in.Tune.Fields() {
			*f.Value = f.Min
			if end == "max" {
				*f.Value = f.Max
			}
		}
		path := writeConfig(t, dir, in)
		require.NoError(t, Check(ctx, bin, path, nil), end)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Contains(t, string(b), fmt.Sprintf("tune.bufsize %d", in.Tune.BufSize))
	}
}
