package e2e

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/nodetest"
	"github.com/ober-ingress/ober/internal/testsite/vrrptest"
)

// testLineRE is the shape of every line `ober test` prints: the verdict,
// the check's name, what was found.
var testLineRE = regexp.MustCompile(`^(ok  |warn|FAIL) \S+(?: \S+)*? +\S.*$`)

// jsonCheck is one object of `ober test --json`, decoded loosely so that
// the test sees the keys as a script would.
type jsonCheck = map[string]any

// runTestCmd runs `ober test --json` and then the text form with the same
// configuration, checks that both agree and have the documented shape,
// and returns the checks by name.
func runTestCmd(t *testing.T, run func(code int, args ...string) result, code int, cfgPath string) (map[string]jsonCheck, string) {
	t.Helper()
	res := run(code, "test", "--config", cfgPath, "--json")
	var list []jsonCheck
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &list), res.stdout)
	require.NotEmpty(t, list)
	byName := map[string]jsonCheck{}
	failures := 0
	for _, c := range list {
		name, _ := c["name"].(string)
		require.NotEmpty(t, name, "%v", c)
		require.NotContains(t, byName, name, "check names are unique:\n%s", res.stdout)
		byName[name] = c
		for k := range c {
			require.Contains(t, []string{"name", "ok", "status", "detail", "fix", "address", "rtt_ms", "http_status", "bgp"}, k, "%v", c)
		}
		require.Contains(t, []any{"ok", "warn", "fail"}, c["status"], "%v", c)
		require.Equal(t, c["status"] != "fail", c["ok"], "ok is false exactly for a failure: %v", c)
		require.NotEmpty(t, c["detail"], "%v", c)
		if c["status"] == "fail" {
			failures++
		}
	}
	if failures > 0 {
		require.Regexp(t, `^ober: test: \d+ of \d+ checks failed\n$`, res.stderr)
		require.Contains(t, res.stderr, " "+strconv.Itoa(failures)+" of "+strconv.Itoa(len(list))+" ")
	} else {
		require.Empty(t, res.stderr)
	}

	text := run(code, "test", "--config", cfgPath)
	lines := strings.Split(strings.TrimSuffix(text.stdout, "\n"), "\n")
	require.Len(t, lines, len(list), "one line per check:\n%s", text.stdout)
	for i, l := range lines {
		require.Regexp(t, testLineRE, l)
		want := map[string]string{"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[list[i]["status"].(string)]
		require.True(t, strings.HasPrefix(l, want+" "+list[i]["name"].(string)+" "), "line %d %q for %v", i, l, list[i])
	}
	return byName, text.stdout
}

// requireCheck requires check name with status, its detail containing
// every string of want.
func requireCheck(t *testing.T, checks map[string]jsonCheck, name, status string, want ...string) jsonCheck {
	t.Helper()
	c, ok := checks[name]
	require.True(t, ok, "no check %q in %v", name, checks)
	require.Equal(t, status, c["status"], "%s: %v", name, c)
	for _, w := range want {
		require.Contains(t, c["detail"], w, "%s: %v", name, c)
	}
	return c
}

// TestTestVRRP: in a three-node VRRP site whose third node has lost its
// link, `ober test` on node1 passes node2 with its round trip, fails
// node3 by name, has keepalived accept the rendered configuration, and
// checks the backend and the certificate; with the link back, it passes.
func TestTestVRRP(t *testing.T) {
	s := vrrptest.New(t, oberBin, vrrptest.Params{Instances: 1})
	n1, n3 := s.Nodes[0], s.Nodes[2]
	n3.LinkDown()
	run := func(code int, args ...string) result { return ober(t, n1.NS, code, args...) }

	checks, text := runTestCmd(t, run, 1, n1.ConfigPath)
	t.Logf("ober test on node1 with node3's link down:\n%s", text)
	requireCheck(t, checks, "config", "ok")
	requireCheck(t, checks, "haproxy", "ok")
	requireCheck(t, checks, "keepalived", "ok")
	requireCheck(t, checks, "vrrp", "ok", "self 10.99.3.11", "eth-sw")
	requireCheck(t, checks, "keepalived config", "ok", "-t accepts", "3 VRRP instances on eth-sw, self 10.99.3.11, 2 peers")
	up := requireCheck(t, checks, "vrrp peer 10.99.3.12", "ok", "answers ICMP echo from eth-sw (10.99.3.11) in ")
	require.Equal(t, "10.99.3.12", up["address"])
	require.Greater(t, up["rtt_ms"], 0.0)
	down := requireCheck(t, checks, "vrrp peer 10.99.3.13", "fail", "10.99.3.13 from eth-sw", "no answer")
	require.Equal(t, "10.99.3.13", down["address"])
	require.NotEmpty(t, down["fix"])
	require.NotContains(t, down, "rtt_ms")
	be := requireCheck(t, checks, "backend s3a", "ok", vrrptest.BackendAddr.String(), "GET / answered 403 Forbidden")
	require.Equal(t, 403.0, be["http_status"])
	requireCheck(t, checks, "tls https", "ok", "s3.vrrp.test")
	requireCheck(t, checks, "iface eth-sw", "ok", "veth: native XDP")
	require.Contains(t, text, "FAIL vrrp peer 10.99.3.13 ")
	for name, c := range checks {
		if name != "vrrp peer 10.99.3.13" {
			require.NotEqual(t, "fail", c["status"], "%s: %v", name, c)
		}
	}

	n3.LinkUp()
	checks, _ = runTestCmd(t, run, 0, n1.ConfigPath)
	requireCheck(t, checks, "vrrp peer 10.99.3.13", "ok", "answers ICMP echo")
}

// testConfig is the configuration of TestTestBackendsAndTLS; TLS and
// BACKENDS are filled in per case.
const testConfig = `node:
  name: t1
  interfaces: [IFACES]
vips: [10.98.0.100]
services:
  - name: https
    port: 443
    mode: tls
    tls:
TLS
backends:
  servers:
BACKENDS
  health:
    path: /health
instances:
  count: 1
  cpus: [0]
`

// TestTestBackendsAndTLS runs `ober test` in a namespace with an S3
// backend reached by name, a backend answering 503 and a closed port,
// and certificates that are fine, mismatched, expired and close to
// expiry.
func TestTestBackendsAndTLS(t *testing.T) {
	s := newSite(t, 1)
	nodetest.Serve(t, s.srv, netip.MustParseAddrPort("127.0.0.1:9000"), nodetest.NewS3())
	nodetest.Serve(t, s.srv, netip.MustParseAddrPort("127.0.0.1:9001"), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "rados down", http.StatusServiceUnavailable)
	}))
	hostsFile(t, s.srv, "127.0.0.1 s3a.test")
	run := func(code int, args ...string) result { return ober(t, s.srv, code, args...) }

	dir := t.TempDir()
	n := 0
	write := func(tls, backends, ifaces string) string {
		n++
		p := filepath.Join(dir, "ober"+strconv.Itoa(n)+".yaml")
		text := strings.NewReplacer("TLS\n", tls, "BACKENDS\n", backends, "IFACES", ifaces).Replace(testConfig)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	certFiles := func(cert, key string) string { return "      cert: " + cert + "\n      key: " + key + "\n" }
	s3Only := "    - name: s3a\n      address: s3a.test:9000\n"
	cert, key := writeCert(t, t.TempDir(), time.Now().Add(200*24*time.Hour))

	t.Run("all good", func(t *testing.T) {
		checks, _ := runTestCmd(t, run, 0, write(certFiles(cert, key), s3Only, "veth-s"))
		requireCheck(t, checks, "config", "ok", "1 VIPs, 1 services, 1 backends")
		requireCheck(t, checks, "haproxy", "ok", "accepts the configuration of 1 instances")
		be := requireCheck(t, checks, "backend s3a", "ok", "s3a.test:9000 (127.0.0.1:9000)", "GET /health answered 403 Forbidden", "counts as up")
		require.Equal(t, "127.0.0.1:9000", be["address"])
		require.Equal(t, 403.0, be["http_status"])
		requireCheck(t, checks, "tls https", "ok", "s3.example.com, expires ")
		requireCheck(t, checks, "iface veth-s", "ok", "veth: native XDP")
		require.Len(t, checks, 5)
	})

	t.Run("backends down", func(t *testing.T) {
		backends := s3Only + "    - name: sick\n      address: 127.0.0.1:9001\n    - name: gone\n      address: 127.0.0.1:9\n"
		checks, text := runTestCmd(t, run, 1, write("      self_signed: true\n", backends, "veth-s, nope0"))
		t.Logf("ober test with two backends down and a missing interface:\n%s", text)
		requireCheck(t, checks, "backend s3a", "ok")
		sick := requireCheck(t, checks, "backend sick", "fail", "127.0.0.1:9001: ", "503 Service Unavailable", "counts it as down")
		require.Equal(t, 503.0, sick["http_status"])
		requireCheck(t, checks, "backend gone", "fail", "127.0.0.1:9: TCP connect: connection refused")
		requireCheck(t, checks, "tls https", "ok", "self-signed")
		requireCheck(t, checks, "iface nope0", "fail", "no interface nope0")
		require.Regexp(t, `(?m)^FAIL backend gone +127\.0\.0\.1:9: TCP connect: connection refused`, text)
	})

	t.Run("key mismatch", func(t *testing.T) {
		_, otherKey := writeCert(t, t.TempDir(), time.Now().Add(200*24*time.Hour))
		checks, text := runTestCmd(t, run, 1, write(certFiles(cert, otherKey), s3Only, "veth-s"))
		t.Logf("ober test with a key of another certificate:\n%s", text)
		requireCheck(t, checks, "config", "fail", "services[0].tls.key", "does not match")
		requireCheck(t, checks, "tls https", "fail", "service https", cert, otherKey, "does not match")
		// The configuration is refused, but the checks that need only
		// part of it still say how the rest stands.
		requireCheck(t, checks, "backend s3a", "ok")
		requireCheck(t, checks, "iface veth-s", "ok")
		require.NotContains(t, checks, "haproxy")
	})

	t.Run("expired", func(t *testing.T) {
		expCert, expKey := writeCert(t, t.TempDir(), time.Now().Add(-48*time.Hour))
		checks, _ := runTestCmd(t, run, 1, write(certFiles(expCert, expKey), s3Only, "veth-s"))
		requireCheck(t, checks, "config", "fail", "expired")
		requireCheck(t, checks, "tls https", "fail", "service https", expCert, "expired on "+time.Now().Add(-48*time.Hour).UTC().Format(time.DateOnly))
	})

	t.Run("near expiry", func(t *testing.T) {
		soonCert, soonKey := writeCert(t, t.TempDir(), time.Now().Add(10*24*time.Hour+time.Hour))
		checks, text := runTestCmd(t, run, 0, write(certFiles(soonCert, soonKey), s3Only, "veth-s"))
		c := requireCheck(t, checks, "tls https", "warn", soonCert, "expires in 10 days")
		require.NotEmpty(t, c["fix"])
		require.Equal(t, true, c["ok"])
		require.Regexp(t, `(?m)^warn tls https +`, text)
	})

	t.Run("no config", func(t *testing.T) {
		res := run(1, "test", "--config", filepath.Join(dir, "none.yaml"))
		require.Regexp(t, `^FAIL config +config \S+none.yaml: no such file\n$`, res.stdout)
		require.Equal(t, "ober: test: 1 of 1 checks failed\n", res.stderr)
	})
}
