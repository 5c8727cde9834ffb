package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

const checkBase = `node:
  name: node1
  interfaces: [veth-n]
vips: [10.98.0.100]
services:
  - name: https
    port: 443
    mode: tls
    tls:
      self_signed: true
  - name: http
    port: 80
    mode: http
backends:
  servers:
    - name: s3a
      address: 10.98.2.1:9000
instances:
  count: 2
  cpus: [0, 1]
whitelists:
  frontend_http: [10.98.1.1]
`

// TestRunCheck: `ober run --check` renders a valid configuration and
// refuses each class of mistake with one line naming the field and the
// value. It runs in an empty namespace, so the name lookup of the
// unresolvable backend cannot leave the machine.
func TestRunCheck(t *testing.T) {
	ns := netnstest.New(t, "chk")
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	res := ober(t, ns, 0, "run", "--check", "--config", write("ok.yaml", checkBase))
	require.Contains(t, res.stdout, "is valid: 1 VIPs, 2 services, 1 backends, 2 instances")
	require.Contains(t, res.stdout, "bind fd@3 ssl crt ")
	require.Contains(t, res.stdout, "alpn h2,http/1.1")
	for _, l := range []string{"user ober-haproxy", "group ober-haproxy", "chroot /run/ober/empty"} {
		require.Contains(t, res.stdout, "\n    "+l+"\n", "the instances drop root's privileges")
	}
	require.NoDirExists(t, "/var/lib/ober/tls", "a check writes no certificate where a node keeps it")

	for _, c := range []struct{ name, from, to, want string }{
		{"missing-cert", "self_signed: true", "cert: /etc/ober/missing.pem",
			`services[0].tls.cert: "/etc/ober/missing.pem": no such file`},
		{"bad-cidr", "[10.98.1.1]", "[10.98.1.1, 10.0.0.0/33]",
			`whitelists.frontend_http[1]: "10.0.0.0/33": invalid CIDR`},
		{"unknown-key", "    port: 80", "    prot: 80",
			`services[1].prot: unknown key (line 12); did you mean "protocol"?`},
		{"port-clash", "    port: 80", "    port: 443",
			`services[1].port: 443: already used by services[0] ("https") on VIP 10.98.0.100`},
		{"unresolvable", "10.98.2.1:9000", "rgw9.invalid:7480",
			`backends.servers[0].address: "rgw9.invalid:7480": does not resolve: `},
		{"missing-user", "whitelists:", "haproxy: {user: ober-nosuch}\nwhitelists:",
			"haproxy.user: \"ober-nosuch\": no such user on this machine: create it with `useradd --system --user-group "},
		{"root-user", "whitelists:", "haproxy: {user: root}\nwhitelists:",
			`haproxy.user: "root": HAProxy must not run as root: use an unprivileged system user such as ober-haproxy`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := write(c.name+".yaml", strings.Replace(checkBase, c.from, c.to, 1))
			res := ober(t, ns, 1, "run", "--check", "--config", path)
			require.True(t, strings.HasPrefix(res.stderr, "ober: config "+path+": "+c.want), "got:\n%s", res.stderr)
			require.Equal(t, 1, strings.Count(res.stderr, "\n"), "one line:\n%s", res.stderr)
			require.Empty(t, res.stdout)
		})
	}
}
