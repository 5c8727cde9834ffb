package wizard

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
)

// testCert makes a certificate and its key in a directory of its own.
func testCert(t *testing.T) (cert, key string) {
	t.Helper()
	cert, key, err := certs.SelfSigned(t.TempDir(), []string{"s3.example"}, nil)
	require.NoError(t, err)
	return cert, key
}

// opts are Options for a test: no terminal, a fixed host, and no
// interface or address of the machine running the test.
func opts(path string, flags map[string]string) Options {
	return Options{
		Path: path, Flags: flags, Out: io.Discard, Warn: io.Discard,
		Hostname:        func() (string, error) { return "testhost", nil },
		InterfaceExists: func(string) bool { return true },
		LocalAddrs:      func() []netip.Addr { return nil },
	}
}

func dirFlags(t *testing.T, flags map[string]string) map[string]string {
	dir := t.TempDir()
	flags["runtime-dir"] = filepath.Join(dir, "run")
	flags["state-dir"] = filepath.Join(dir, "state")
	flags["bpffs-root"] = filepath.Join(dir, "bpf")
	return flags
}

func TestFlagsMakeAValidBGPFile(t *testing.T) {
	cert, key := testCert(t)
	path := filepath.Join(t.TempDir(), "ober.yaml")
	p, err := Prepare(context.Background(), opts(path, dirFlags(t, map[string]string{
		"ha": "bgp", "node-name": "edge-1", "interfaces": "eth1,eth2", "vips": "10.20.0.10, fd00:20::10",
		"asn": "65001", "bgp-peer": "10.0.0.1:65000,[fd00::1]:65000", "bfd": "yes",
		"backends": "rgw[01-03].internal:7480,10.30.0.9:8080", "health-path": "/health",
		"cert": cert, "key": key, "http": "yes", "frontend-http": "compute[001-004],10.40.0.0/22",
	})))
	require.NoError(t, err)
	require.Nil(t, p.Old)
	c := p.Config
	require.Equal(t, "bgp", c.HA.Mode)
	require.Equal(t, "edge-1", c.Node.Name)
	require.Equal(t, []string{"eth1", "eth2"}, c.Node.Interfaces)
	require.Len(t, c.VIPs, 2)
	require.EqualValues(t, 65001, c.HA.BGP.ASN)
	require.Len(t, c.HA.BGP.Peers, 2)
	require.Equal(t, "fd00::1", c.HA.BGP.Peers[1].Address.String())
	require.True(t, c.HA.BGP.Peers[0].BFD.Enabled && c.HA.BGP.Peers[1].BFD.Enabled)
	var addrs, names []string
	for _, s := range c.Backends.Servers {
		addrs = append(addrs, s.Address)
		names = append(names, s.Name)
	}
	require.Equal(t, []string{"rgw01.internal:7480", "rgw02.internal:7480", "rgw03.internal:7480", "10.30.0.9:8080"}, addrs)
	require.Equal(t, []string{"rgw01", "rgw02", "rgw03", "s3"}, names)
	require.Equal(t, "/health", c.Backends.Health.Path)
	require.Equal(t, cert, c.Services[0].TLS.Cert)
	require.Equal(t, "http", c.Services[1].Mode)
	require.Equal(t, []string{"compute[001-004]", "10.40.0.0/22"}, c.Whitelists.FrontendHTTP)
	// The routers whitelist defaults to the peers.
	require.Equal(t, []string{"10.0.0.1", "fd00::1"}, c.Whitelists.Routers)
	text := string(p.New)
	require.Contains(t, text, "# ober.yaml, written by 'ober config'")
	require.Contains(t, text, "interfaces: [eth1, eth2] # NICs that get the XDP program")
	require.Contains(t, text, "\n\n# Addresses clients connect to.\nvips:\n", "top-level sections are set apart by a blank line")
}

func TestMissingAnswerNamesTheFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ober.yaml")
	base := map[string]string{"interfaces": "eth1", "vips": "10.0.0.10", "backends": "rgw1", "cert": "self-signed"}
	for _, tc := range []struct {
		drop, set, want string
	}{
		{drop: "vips", want: "--vips is required (no value in " + path + ")"},
		{drop: "backends", want: "--backends is required (no value in " + path + ")"},
		{drop: "cert", want: "--cert is required"},
		{set: "ha=bgp", want: "--asn is required"},
		{set: "ha=vrrp", want: "--vrrp-nodes is required"},
		{set: "vips=10.0.0.300", want: "--vips: not an IP address: 10.0.0.300"},
		{set: "ha=ecmp", want: "--ha: not an HA mode (none, bgp or vrrp): ecmp"},
		{set: "backends=rgw[01-", want: "--backends: not a hostlist"},
		{set: "backend-port=99999", want: "--backend-port: not a port (1-65535): 99999"},
		{set: "health-path=health", want: `--health-path: a health-check path starts with "/": health`},
		{set: "interfaces=eth/1", want: "--interfaces: not an interface name"},
	} {
		flags := map[string]string{}
		for k, v := range base {
			if k != tc.drop {
				flags[k] = v
			}
		}
		if k, v, ok := strings.Cut(tc.set, "="); ok {
			flags[k] = v
		}
		_, err := Prepare(context.Background(), opts(path, flags))
		require.ErrorContains(t, err, tc.want, "%+v", tc)
		require.NotContains(t, err.Error(), "\n")
		require.NoFileExists(t, path)
	}
}

func TestBackendPortForNamesWithout(t *testing.T) {
	bs, err := parseBackends("rgw[1-2],[fd00::5]:7480,fd00::6,10.0.0.7:80", 7481)
	require.NoError(t, err)
	require.Equal(t, []string{"rgw1:7481", "rgw2:7481", "[fd00::5]:7480", "[fd00::6]:7481", "10.0.0.7:80"}, bs)
	require.True(t, needsPort("rgw[1-2]"))
	require.False(t, needsPort("rgw[1-2]:7480"))
	_, err = parseBackends("rgw1:99999", 0)
	require.ErrorContains(t, err, "not a port (1-65535): 99999")
	_, err = parseBackends("10.0.0.300:80", 0)
	require.ErrorContains(t, err, "10.0.0.300")
}

func TestCertChecks(t *testing.T) {
	cert, key := testCert(t)
	_, otherKey := testCert(t)
	hasKey, err := checkCert(cert, time.Now())
	require.NoError(t, err)
	require.False(t, hasKey)
	require.NoError(t, checkKey(cert, key))
	require.ErrorContains(t, checkKey(cert, otherKey), "private key in "+otherKey+" does not match the certificate in "+cert)
	_, err = checkCert(cert, time.Now().Add(500*24*time.Hour))
	require.ErrorContains(t, err, "expired on")
	_, err = checkCert(key, time.Now())
	require.ErrorContains(t, err, "no PEM certificate in "+key)
	_, err = checkCert(filepath.Join(t.TempDir(), "nope.pem"), time.Now())
	require.ErrorContains(t, err, "no such file")
}

// example is a hand-written file with comments and keys the wizard does
// not ask about.
const example = `# Site A, ingress node 1. Owner: storage team.

node:
  name: ingress-a # rack 7
  interfaces: [eth1]
  xdp_mode: native # the NIC supports it
  runtime_dir: %[1]s/run
  state_dir: %[1]s/state

vips:
  - 10.20.0.10

services:
  - name: https
    port: 443
    mode: tls
    tls:
      cert: %[2]s # renewed by certbot
      key: %[3]s
  # Plain S3 for the compute nodes.
  - name: http
    port: 80
    mode: http
    reject: true

backends:
  balance: roundrobin
  servers:
    - name: big
      address: 10.30.0.13:7480
      weight: 50 # older hardware: half the traffic
  health:
    path: /
    interval: 5s

timeouts:
  client: 10m # large uploads from slow sites

ha:
  mode: none

whitelists:
  frontend_http:
    - compute[001-064] # the cluster
`

func TestRerunKeepsUnaskedKeysAndComments(t *testing.T) {
	dir := t.TempDir()
	cert, key := testCert(t)
	path := filepath.Join(dir, "ober.yaml")
	require.NoError(t, os.WriteFile(path, fmt.Appendf(nil, example, dir, cert, key), 0o640))

	p, err := Prepare(context.Background(), opts(path, map[string]string{
		"vips": "10.20.0.10,10.20.0.11", "backends": "10.30.0.13:7480,10.30.0.14:7480",
		"frontend-http": "compute[001-064],10.50.0.0/24",
	}))
	require.NoError(t, err)
	text := string(p.New)
	for _, kept := range []string{
		"# Site A, ingress node 1. Owner: storage team.",
		"name: ingress-a # rack 7",
		"xdp_mode: native # the NIC supports it",
		"# renewed by certbot",
		"# Plain S3 for the compute nodes.",
		"reject: true",
		"balance: roundrobin",
		"weight: 50 # older hardware: half the traffic",
		"interval: 5s",
		"client: 10m # large uploads from slow sites",
		"- compute[001-064] # the cluster",
	} {
		require.Contains(t, text, kept)
	}
	c := p.Config
	require.Equal(t, "native", c.Node.XDPMode)
	require.Equal(t, 10*time.Minute, c.Timeouts.Client.Duration)
	require.Equal(t, "big", c.Backends.Servers[0].Name)
	require.Equal(t, 50, *c.Backends.Servers[0].Weight)
	require.Equal(t, "10.30.0.14:7480", c.Backends.Servers[1].Address)
	require.Len(t, c.VIPs, 2)
	require.Equal(t, []string{"compute[001-064]", "10.50.0.0/24"}, c.Whitelists.FrontendHTTP)

	// The same answers again change nothing.
	require.NoError(t, os.WriteFile(path, p.New, 0o640))
	again, err := Prepare(context.Background(), opts(path, nil))
	require.NoError(t, err)
	require.False(t, again.Changed(), "a second run with no new answer rewrote the file:\n%s", Diff(path, path, again.Old, again.New))

	// Switching to VRRP and dropping plain HTTP edits only those parts.
	vr, err := Prepare(context.Background(), opts(path, map[string]string{
		"ha": "vrrp", "vrrp-nodes": "10.0.0.11,10.0.0.12", "vrrp-self": "10.0.0.12", "http": "no",
	}))
	require.NoError(t, err)
	require.Equal(t, "vrrp", vr.Config.HA.Mode)
	require.Equal(t, "eth1", vr.Config.HA.VRRP.Interface)
	require.Len(t, vr.Config.Services, 1)
	require.Contains(t, string(vr.New), "# renewed by certbot")
}

func TestWriteIsAtomicWithBackup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "ober.yaml")
	flags := dirFlags(t, map[string]string{"interfaces": "eth1", "vips": "10.0.0.10", "backends": "rgw1:7480", "cert": "self-signed"})
	p, err := Prepare(context.Background(), opts(path, flags))
	require.NoError(t, err)
	bak, err := p.Write()
	require.NoError(t, err)
	require.Empty(t, bak, "a first file has nothing to back up")
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), st.Mode().Perm())
	_, err = config.Load(path)
	require.NoError(t, err)

	flags["vips"] = "10.0.0.11"
	p2, err := Prepare(context.Background(), opts(path, flags))
	require.NoError(t, err)
	bak, err = p2.Write()
	require.NoError(t, err)
	require.Equal(t, path+".bak", bak)
	got, err := os.ReadFile(bak)
	require.NoError(t, err)
	require.Equal(t, string(p.New), string(got), "the backup is the previous file")

	// A file control/config refuses is not written, and no temporary
	// file is left behind.
	bad := &Plan{Path: path, Old: p2.New, New: []byte("vips: [10.0.0.12]\n")}
	_, err = bad.Write()
	require.ErrorContains(t, err, "would be invalid, nothing written: node.interfaces: at least one interface is required")
	require.NotContains(t, err.Error(), "\n")
	require.NotContains(t, err.Error(), "."+filepath.Base(path)+"-", "the error names the file, not the temporary one beside it")
	now, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(p2.New), string(now))
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{"ober.yaml", "ober.yaml.bak"}, names)
}

func TestTerminalReasksBadAnswers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ober.yaml")
	answers := strings.Join([]string{
		"", // HA mode: none
		"", // node name: testhost
		"eth1",
		"10.0.0.300", // re-asked
		"10.0.0.10",
		"rgw[1-2]", // port asked next
		"",         // 7480
		"",         // health path /
		"self-signed",
		"maybe", // re-asked
		"no",
		"y",
	}, "\n") + "\n"
	var out strings.Builder
	o := opts(path, nil)
	o.In, o.Out = strings.NewReader(answers), &out
	p, err := Prepare(context.Background(), o)
	require.NoError(t, err, out.String())
	ok, err := p.Confirm(context.Background(), "Write?")
	require.NoError(t, err)
	require.True(t, ok)
	require.Contains(t, out.String(), "  not an IP address: 10.0.0.300\nVIPs (the addresses clients connect to): ")
	require.Contains(t, out.String(), "  answer yes or no, not: maybe\n")
	require.Equal(t, "testhost", p.Config.Node.Name)
	require.Equal(t, "rgw2:7480", p.Config.Backends.Servers[1].Address)
	require.True(t, p.Config.Services[0].TLS.SelfSigned)

	// The terminal closing mid-way is an error, not a half answer.
	o.In, o.Out = strings.NewReader("bgp\n"), io.Discard
	_, err = Prepare(context.Background(), o)
	require.ErrorContains(t, err, "input ended before the last question; nothing written")
}

func TestDiffAgainstDevNull(t *testing.T) {
	d := Diff("", "/etc/ober/ober.yaml", nil, []byte("a: 1\n"))
	require.Equal(t, "--- /dev/null\n+++ /etc/ober/ober.yaml\n@@ -0,0 +1 @@\n+a: 1\n", d)
	require.Empty(t, Diff("x", "x", []byte("a\n"), []byte("a\n")))
}
