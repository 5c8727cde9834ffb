package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/haproxytest"
)

// doctorConfig is a configuration for the namespace of TestDoctor; BACKEND
// and TLS are filled in per case.
const doctorConfig = `node:
  name: doc1
  interfaces: [veth-s]
vips: [10.98.0.100]
services:
  - name: https
    port: 443
    mode: tls
    tls:
TLS
  - name: http
    port: 80
    mode: http
backends:
  servers:
    - name: s3a
      address: BACKEND
instances:
  count: 1
  cpus: [0]
`

// lineRE is the shape of every line of the report: a check, the fix
// under it, a continuation of a multi-line detail, or the summary.
var lineRE = regexp.MustCompile(`^(?:(PASS|WARN|FAIL)  \S.* \S.*|      fix: \S.*|\s{8,}\S.*|\d+ passed, \d+ warnings?, \d+ failed|)$`)

// requireReport checks the report's shape: every WARN and FAIL has a fix
// on the next line and no PASS has one.
func requireReport(t *testing.T, out string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	status := map[string]string{} // check name -> status
	for i, l := range lines {
		require.Regexp(t, lineRE, l, "line %d of\n%s", i+1, out)
		m := regexp.MustCompile(`^(PASS|WARN|FAIL)  (\S+(?: \S+)?)`).FindStringSubmatch(l)
		if m == nil {
			continue
		}
		status[strings.TrimSpace(m[2])] = m[1]
		next := ""
		for _, n := range lines[i+1:] {
			if !strings.HasPrefix(n, "        ") || strings.HasPrefix(n, "      fix:") {
				next = n
				break
			}
		}
		if m[1] == "PASS" {
			require.False(t, strings.HasPrefix(next, "      fix: "), "a pass has no fix:\n%s\n%s", l, next)
		} else {
			require.True(t, strings.HasPrefix(next, "      fix: "), "%s has no fix:\n%s", m[1], out)
		}
	}
	require.Regexp(t, `\n\d+ passed, \d+ warnings?, \d+ failed\n$`, out)
	return status
}

// writeCert writes a self-made certificate and key valid until notAfter.
func writeCert(t *testing.T, dir string, notAfter time.Time) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "s3.example.com"},
		DNSNames: []string{"s3.example.com"}, NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	cert, key := filepath.Join(dir, "s3.crt"), filepath.Join(dir, "s3.key")
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return cert, key
}

// TestDoctor runs `ober doctor` on this machine, in a namespace whose
// veth is node.interfaces and whose loopback holds a backend.
func TestDoctor(t *testing.T) {
	s := newSite(t, 2)
	var ln net.Listener
	require.NoError(t, s.srv.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dir := t.TempDir()
	write := func(name, backend, tls string) string {
		p := filepath.Join(dir, name)
		text := strings.NewReplacer("BACKEND", backend, "TLS\n", tls).Replace(doctorConfig)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	cert, key := writeCert(t, dir, time.Now().Add(200*24*time.Hour))
	good := write("good.yaml", ln.Addr().String(), "      cert: "+cert+"\n      key: "+key+"\n")

	res := ober(t, s.srv, 0, "doctor", "--config", good)
	t.Logf("ober doctor on this machine (veth-s in a namespace):\n%s", res.stdout)
	st := requireReport(t, res.stdout)
	for name, want := range map[string]string{
		"config": "PASS", "kernel": "PASS", "btf": "PASS", "iface veth-s": "PASS", "ha": "PASS",
		"api port": "PASS", "service ports": "PASS", "cert https": "PASS", "backends": "PASS",
	} {
		require.Equal(t, want, st[name], "%s in\n%s", name, res.stdout)
	}
	require.Contains(t, res.stdout, "veth: native XDP")
	require.Regexp(t, `(?m)^(PASS|WARN)  haproxy +HAProxy \d+\.\d+\.\d+, `, res.stdout)
	require.Empty(t, res.stderr)

	// HAProxy 3.0 through the wrapper of `make deps` (the trixie loader
	// and libraries): a pass, with the OpenSSL it runs on.
	v30 := write("v30.yaml", ln.Addr().String(), "      cert: "+cert+"\n      key: "+key+"\n")
	f, err := os.OpenFile(v30, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fmt.Fprintf(f, "haproxy:\n  binary: %s\n", haproxytest.V30(t))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	res = ober(t, s.srv, 0, "doctor", "--config", v30)
	require.Regexp(t, `(?m)^PASS  haproxy +HAProxy 3\.0\.\d+, OpenSSL 3\.`, res.stdout)

	// --json: the same results as an array of objects.
	res = ober(t, s.srv, 0, "doctor", "--config", good, "--json")
	var rs []map[string]string
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &rs), res.stdout)
	require.NotEmpty(t, rs)
	require.Equal(t, "config", rs[0]["name"])
	for _, r := range rs {
		require.NotEmpty(t, r["name"])
		require.NotEmpty(t, r["detail"], "%v", r)
		require.Contains(t, []string{"pass", "warn", "fail"}, r["status"], "%v", r)
		for k := range r {
			require.Contains(t, []string{"name", "status", "detail", "fix"}, k)
		}
		if r["status"] != "pass" {
			require.NotEmpty(t, r["fix"], "%v", r)
		}
	}

	// A backend nothing listens on: the check fails, so does doctor.
	ln2, err := net.Listen("tcp", "127.0.0.1:0") // a port surely free in the namespace too
	require.NoError(t, err)
	free := ln2.Addr().String()
	ln2.Close()
	res = ober(t, s.srv, 1, "doctor", "--config", write("down.yaml", free, "      self_signed: true\n"))
	st = requireReport(t, res.stdout)
	require.Equal(t, "FAIL", st["backends"], res.stdout)
	require.Equal(t, "PASS", st["cert https"], res.stdout)
	require.Regexp(t, `(?m)^FAIL  backends +none of 1 reachable: s3a `, res.stdout)
	require.Equal(t, "ober: doctor: 1 check failed\n", res.stderr)

	// An expired certificate: the configuration does not load, which is
	// a failure, and the checks that need it say they were skipped.
	cert, key = writeCert(t, dir, time.Now().Add(-24*time.Hour))
	res = ober(t, s.srv, 1, "doctor", "--config", write("expired.yaml", ln.Addr().String(), "      cert: "+cert+"\n      key: "+key+"\n"))
	st = requireReport(t, res.stdout)
	require.Equal(t, "FAIL", st["config"], res.stdout)
	require.Contains(t, res.stdout, "expired")
	require.Contains(t, res.stdout, "skipped: no valid configuration")
	require.Equal(t, "ober: doctor: 1 check failed\n", res.stderr)

	// No configuration file at all.
	res = ober(t, s.srv, 1, "doctor", "--config", filepath.Join(dir, "none.yaml"))
	require.Regexp(t, `(?m)^FAIL  config +\S+none.yaml: no such file$`, res.stdout)
	require.NotContains(t, res.stderr, "goroutine")
}
