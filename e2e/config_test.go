package e2e

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
)

// wizardSite is a node's directories under one temporary directory.
type wizardSite struct {
	dir, path, run, state, bpf string
}

func newWizardSite(t *testing.T) wizardSite {
	dir := t.TempDir()
	return wizardSite{dir: dir, path: filepath.Join(dir, "etc", "ober.yaml"),
		run: filepath.Join(dir, "run"), state: filepath.Join(dir, "state"), bpf: filepath.Join(dir, "bpf")}
}

// args are the command line of `ober config` for the site.
func (s wizardSite) args(more ...string) []string {
	return append([]string{"--config", s.path, "--bpffs-root", s.bpf, "config",
		"--runtime-dir", s.run, "--state-dir", s.state}, more...)
}

// wizardCert makes a certificate and its key.
func wizardCert(t *testing.T) (cert, key string) {
	t.Helper()
	cert, key, err := certs.SelfSigned(t.TempDir(), []string{"s3.example"}, nil)
	require.NoError(t, err)
	return cert, key
}

func TestConfigWizardBGPOnATerminal(t *testing.T) {
	cert, key := wizardCert(t)
	s := newWizardSite(t)
	tm := startTerminal(t, s.args()...)
	tm.answer("HA mode (none, bgp, vrrp) [none]: ", "bgp")
	tm.answer("Node name", "edge-1")
	tm.answer("Interfaces (NICs that get the XDP program): ", "lo")
	tm.answer("VIPs (the addresses clients connect to): ", "10.20.0.10,10.0.0.300")
	tm.expect("  not an IP address: 10.0.0.300")
	tm.answer("VIPs (the addresses clients connect to): ", "10.20.0.10, fd00:20::10")
	tm.answer("Local AS number: ", "65001")
	tm.answer("BGP router ID", "")
	tm.answer("Router 1 address: ", "10.0.0.1")
	tm.answer("Router 1 AS number: ", "65000")
	tm.answer("Router 2 address (Enter: no more): ", "10.0.0.2")
	tm.answer("Router 2 AS number [65000]: ", "")
	tm.answer("Router 3 address (Enter: no more): ", "")
	tm.answer("BFD on the sessions (yes/no) [no]: ", "yes")
	tm.answer("S3 backends: ", "rgw[01-02].internal:7480")
	tm.answer("Health-check path (any 2xx-4xx answer counts as up) [/]: ", "/health")
	tm.answer("TLS certificate (PEM file, chain with the leaf first, or self-signed): ", cert)
	tm.answer("TLS private key (PEM file): ", key)
	tm.answer("Plain-HTTP S3 on port 80 for whitelisted clients (yes/no) [no]: ", "yes")
	tm.answer("frontend-http whitelist", "compute[001-004],10.40.0.0/22")
	tm.answer("backend-http whitelist (-: nobody): ", "")
	tm.answer("routers whitelist (who may reach BGP and BFD; must hold every router) [10.0.0.1,10.0.0.2]: ", "")
	tm.expect("+++ " + s.path)
	tm.answer("Write "+s.path+"? [Y/n] ", "")
	tm.expect("wrote " + s.path)
	require.Equal(t, 0, tm.wait(), tm.String())

	c, err := config.Load(s.path)
	require.NoError(t, err)
	require.Equal(t, "bgp", c.HA.Mode)
	require.Equal(t, "edge-1", c.Node.Name)
	require.Equal(t, []string{"lo"}, c.Node.Interfaces)
	require.Equal(t, s.run, c.Node.RuntimeDir)
	require.Equal(t, s.bpf, c.Node.BPFFSRoot)
	require.Equal(t, "10.20.0.10", c.VIPs[0].String())
	require.Equal(t, "fd00:20::10", c.VIPs[1].String())
	require.EqualValues(t, 65001, c.HA.BGP.ASN)
	require.Len(t, c.HA.BGP.Peers, 2)
	for i, want := range []string{"10.0.0.1", "10.0.0.2"} {
		require.Equal(t, want, c.HA.BGP.Peers[i].Address.String())
		require.EqualValues(t, 65000, c.HA.BGP.Peers[i].ASN)
		require.True(t, c.HA.BGP.Peers[i].BFD.Enabled)
	}
	require.Equal(t, "rgw02.internal:7480", c.Backends.Servers[1].Address)
	require.Equal(t, "/health", c.Backends.Health.Path)
	require.Equal(t, cert, c.Services[0].TLS.Cert)
	require.Equal(t, key, c.Services[0].TLS.Key)
	require.Equal(t, config.ModeHTTP, c.Services[1].Mode)
	require.Equal(t, []string{"compute[001-004]", "10.40.0.0/22"}, c.Whitelists.FrontendHTTP)
	require.Equal(t, []string{"10.0.0.1", "10.0.0.2"}, c.Whitelists.Routers)
	st, err := os.Stat(s.path)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o640), st.Mode().Perm())

	// The same answers as flags, without a terminal, give the same file.
	s2 := newWizardSite(t)
	s2.run, s2.state, s2.bpf = s.run, s.state, s.bpf
	ober(t, nil, 0, s2.args("--ha", "bgp", "--node-name", "edge-1", "--interfaces", "lo",
		"--vips", "10.20.0.10,fd00:20::10", "--asn", "65001",
		"--bgp-peer", "10.0.0.1:65000", "--bgp-peer", "10.0.0.2:65000", "--bfd",
		"--backends", "rgw[01-02].internal:7480", "--health-path", "/health",
		"--cert", cert, "--key", key, "--http", "--frontend-http", "compute[001-004],10.40.0.0/22")...)
	want, err := os.ReadFile(s.path)
	require.NoError(t, err)
	got, err := os.ReadFile(s2.path)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
}

func TestConfigWizardVRRPOnATerminal(t *testing.T) {
	s := newWizardSite(t)
	tm := startTerminal(t, s.args()...)
	tm.answer("HA mode (none, bgp, vrrp) [none]: ", "vrrp")
	tm.answer("Node name", "vr-1")
	tm.answer("Interfaces (NICs that get the XDP program): ", "lo")
	tm.answer("VIPs (the addresses clients connect to): ", "10.20.0.10,10.20.0.11")
	tm.answer("VRRP nodes (every node's address, same order on every node): ", "10.0.0.1,10.0.0.2")
	tm.answer("This node's address among them (-: found on the interface when ober starts): ", "10.0.0.9")
	tm.expect("  not one of the VRRP nodes: 10.0.0.9")
	tm.answer("This node's address among them (-: found on the interface when ober starts): ", "10.0.0.2")
	tm.answer("VRRP interface (adverts and VIPs) [lo]: ", "")
	tm.answer("S3 backends: ", "s3-[1-2]")
	tm.answer("Port of the backends given without one [7480]: ", "")
	tm.answer("Health-check path (any 2xx-4xx answer counts as up) [/]: ", "")
	tm.answer("TLS certificate (PEM file, chain with the leaf first, or self-signed): ", "self-signed")
	tm.answer("Plain-HTTP S3 on port 80 for whitelisted clients (yes/no) [no]: ", "")
	tm.answer("Write "+s.path+"? [Y/n] ", "y")
	tm.expect("next:")
	require.Equal(t, 0, tm.wait(), tm.String())

	c, err := config.Load(s.path)
	require.NoError(t, err)
	require.Equal(t, "vrrp", c.HA.Mode)
	require.Equal(t, "10.0.0.1", c.HA.VRRP.Nodes[0].String())
	require.Equal(t, "10.0.0.2", c.HA.VRRP.Self.String())
	require.Equal(t, "lo", c.HA.VRRP.Interface)
	require.Equal(t, []string{"s3-1:7480", "s3-2:7480"}, []string{c.Backends.Servers[0].Address, c.Backends.Servers[1].Address})
	require.True(t, c.Services[0].TLS.SelfSigned)
	require.Len(t, c.Services, 1)

	// The flags for the same answers give the same file.
	s2 := newWizardSite(t)
	s2.run, s2.state, s2.bpf = s.run, s.state, s.bpf
	ober(t, nil, 0, s2.args("-y", "--ha", "vrrp", "--node-name", "vr-1", "--interfaces", "lo",
		"--vips", "10.20.0.10,10.20.0.11", "--vrrp-nodes", "10.0.0.1,10.0.0.2", "--vrrp-self", "10.0.0.2",
		"--backends", "s3-[1-2]", "--self-signed", "--no-http")...)
	want, err := os.ReadFile(s.path)
	require.NoError(t, err)
	got, err := os.ReadFile(s2.path)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
}

func TestConfigRerunKeepsTheRest(t *testing.T) {
	s := newWizardSite(t)
	require.NoError(t, os.MkdirAll(filepath.Dir(s.path), 0o755))
	old := `# Owner: storage team; ask before changing.
node:
  name: edge-1
  interfaces: [lo]
  runtime_dir: ` + s.run + `
  state_dir: ` + s.state + `
vips: [10.20.0.10]
services:
  - name: https
    port: 443
    mode: tls
    tls:
      self_signed: true # until the real one arrives
backends:
  servers:
    - address: 10.30.0.1:7480
      weight: 20 # slow disks
instances:
  maxconn: 5000
timeouts:
  client: 15m
`
	require.NoError(t, os.WriteFile(s.path, []byte(old), 0o640))
	res := ober(t, nil, 0, "--config", s.path, "config", "-y", "--vips", "10.20.0.10,10.20.0.11")
	require.Contains(t, res.stdout, "wrote "+s.path+" (the previous one is "+s.path+".bak)")
	require.Contains(t, res.stdout, "ober test --config "+s.path)
	text, err := os.ReadFile(s.path)
	require.NoError(t, err)
	for _, kept := range []string{"# Owner: storage team; ask before changing.", "self_signed: true # until the real one arrives",
		"weight: 20 # slow disks", "maxconn: 5000", "client: 15m"} {
		require.Contains(t, string(text), kept)
	}
	c, err := config.Load(s.path)
	require.NoError(t, err)
	require.Len(t, c.VIPs, 2)
	require.Equal(t, 5000, c.Instances.MaxConn)
	bak, err := os.ReadFile(s.path + ".bak")
	require.NoError(t, err)
	require.Equal(t, old, string(bak))
}

// snapshot is every file and directory under root with its mode and
// content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		v := info.Mode().String()
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += "\n" + string(data)
		}
		out[p] = v
		return nil
	}))
	return out
}

func TestConfigDryRunWritesNothing(t *testing.T) {
	s := newWizardSite(t)
	ober(t, nil, 0, s.args("-y", "--ha", "vrrp", "--node-name", "vr-1", "--interfaces", "lo",
		"--vips", "10.20.0.10", "--vrrp-nodes", "10.0.0.1,10.0.0.2", "--vrrp-self", "10.0.0.1",
		"--backends", "10.30.0.1:7480", "--self-signed")...)
	// A running generation: instance 0's configuration is on disk.
	require.NoError(t, os.MkdirAll(s.run, 0o750))
	running := filepath.Join(s.run, "haproxy-0.g3.cfg")
	require.NoError(t, os.WriteFile(running, []byte("global\n    maxconn 1\n"), 0o640))
	before := snapshot(t, s.dir)
	tmp := t.TempDir()

	cmd := exec.Command(oberBin, "--config", s.path, "config", "--dry-run", "--vips", "10.20.0.10,10.20.0.12")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	out := stdout.String()

	require.Contains(t, out, "--- "+s.path+"\n+++ "+s.path+"\n")
	require.Contains(t, out, "+  - 10.20.0.12\n")
	require.Contains(t, out, "--- "+running+"\n+++ "+filepath.Join(s.run, "haproxy-0.g4.cfg")+"\n")
	require.Contains(t, out, "-    maxconn 1\n")
	require.Contains(t, out, "+    stats socket "+filepath.Join(s.run, "haproxy-0.g4.sock"))
	require.Contains(t, out, "+    server s0 10.30.0.1:7480 weight 100\n")
	require.Contains(t, out, "--- /dev/null\n+++ "+filepath.Join(s.run, "keepalived", "keepalived.conf")+"\n")
	require.Contains(t, out, "+        10.20.0.12/32 dev lo")
	require.Contains(t, out, "ssl crt "+filepath.Join(s.run, "tls", "https-"), "the bundle is named where the daemon writes it")
	require.Contains(t, out, "dry run: nothing written")

	require.Equal(t, before, snapshot(t, s.dir), "--dry-run changed files")
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	require.Empty(t, left, "--dry-run left scratch files in TMPDIR")
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	cert, _ := wizardCert(t)
	_, otherKey := wizardCert(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing", []string{"--interfaces", "lo", "--backends", "rgw1:7480", "--self-signed"},
			"--vips is required (no value in %s)"},
		{"bad ip", []string{"--interfaces", "lo", "--vips", "10.0.0.300", "--backends", "rgw1:7480", "--self-signed"},
			"--vips: not an IP address: 10.0.0.300"},
		{"unknown ha", []string{"--ha", "ecmp", "--interfaces", "lo", "--vips", "10.0.0.1", "--backends", "rgw1:7480", "--self-signed"},
			"--ha: not an HA mode (none, bgp or vrrp): ecmp"},
		{"key mismatch", []string{"--interfaces", "lo", "--vips", "10.0.0.1", "--backends", "rgw1:7480", "--cert", cert, "--key", otherKey},
			"--key: private key in " + otherKey + " does not match the certificate in " + cert},
		{"bad peer", []string{"--ha", "bgp", "--asn", "65001", "--bgp-peer", "10.0.0.1", "--interfaces", "lo", "--vips", "10.0.0.1", "--backends", "rgw1:7480", "--self-signed"},
			"--bgp-peer: not ADDRESS:ASN (such as 10.0.0.1:65000): 10.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newWizardSite(t)
			res := ober(t, nil, 1, s.args(tc.args...)...)
			want := tc.want
			if strings.Contains(want, "%s") {
				want = strings.ReplaceAll(want, "%s", s.path)
			}
			require.Equal(t, "ober: config: "+want+"\n", res.stderr)
			entries, err := os.ReadDir(s.dir)
			require.NoError(t, err)
			require.Empty(t, entries, "a failed run wrote something")
		})
	}
}

// --dry-run checks the answers like a real run: a bad one fails before
// any diff is printed.
func TestConfigDryRunRefusesInvalid(t *testing.T) {
	s := newWizardSite(t)
	res, err := runOber(context.Background(), nil, s.args("--dry-run", "--interfaces", "lo", "--vips", "127.0.0.1", "--backends", "rgw1:7480", "--self-signed")...)
	require.NoError(t, err)
	require.Equal(t, 1, res.code, res.String())
	require.Equal(t, "ober: config: --vips: VIP cannot be a loopback address: 127.0.0.1\n", res.stderr)
	require.Empty(t, res.stdout)
}
