package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// backendSite writes a configuration whose API address nothing listens
// on and whose runtime directory is empty: no daemon runs for it.
func backendSite(t *testing.T) (path, text, listen string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	listen = l.Addr().String()
	require.NoError(t, l.Close())
	dir := t.TempDir()
	text = `# a test node
node: {name: n1, interfaces: [eth1], runtime_dir: ` + filepath.Join(dir, "run") + `}
haproxy: {user: nobody, group: nogroup}
instances: {cpus: [0]}
vips: [10.0.0.1]
api: {listen: "` + listen + `"}
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
  - name: db
    port: 5432
    mode: tcp
    backends:
      - {name: pg1, address: "10.1.0.1:5432", weight: 10}   # primary
backends:
  servers:
    - name: rgw1
      address: 10.30.0.1:7480
    - address: 10.30.0.2:7480
      priority: 2
`
	path = filepath.Join(dir, "ober.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path, text, listen
}

func TestBackendSet(t *testing.T) {
	path, text, listen := backendSite(t)
	res := runInProcess("--config", path, "backend", "set", "https", "s1", "--state", "drain", "--weight", "30", "--no-reload")
	require.Equal(t, 0, res.code, res)
	require.Equal(t, `https s1 (backends.servers[1]): weight 100 -> 30, state enabled -> drain
saved in `+path+` (with its name, s1, written into it)
not reloaded (--no-reload): 'ober reload' applies it
`, res.stdout)
	want := strings.Replace(text, "      priority: 2\n", "      priority: 2\n      name: s1\n      weight: 30\n      state: drain\n", 1)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, want, string(b))

	res = runInProcess("--config", path, "backend", "set", "https", "s1", "--state", "drain")
	require.Equal(t, 0, res.code, res)
	require.Equal(t, "https s1 (backends.servers[1]) has state drain already: nothing to change\n", res.stdout)

	// Without --no-reload and without a daemon, the file is edited and
	// set says so.
	res = runInProcess("--config", path, "backend", "set", "db", "pg1", "--weight", "20")
	require.Equal(t, 0, res.code, res)
	require.Equal(t, `db pg1 (services[1].backends[0]): weight 10 -> 20
saved in `+path+`
note: no daemon answers on `+listen+`: the daemon applies the file when it starts
`, res.stdout)
	want = strings.Replace(want, "weight: 10}   # primary", "weight: 20}   # primary", 1)
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, want, string(b))
}

func TestBackendSetErrors(t *testing.T) {
	path, text, _ := backendSite(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"https", "rgw1", "--weight", "300"}, "backend set: backends.servers[0].weight: 300: must be 0-256"},
		{[]string{"https", "rgw1", "--state", "off"}, `backend set: backends.servers[0].state: "off": must be enabled, drain or disabled`},
		{[]string{"web", "rgw1", "--state", "drain"}, `backend set: services: "web": no such service (have: https, db)`},
		{[]string{"https", "rgw1"}, "backend set: give --weight N or --state enabled|drain|disabled"},
		{[]string{"https"}, `accepts 2 arg(s), received 1`},
	} {
		res := runInProcess(append([]string{"--config", path, "backend", "set", "--no-reload"}, tc.args...)...)
		require.Equal(t, 1, res.code, "%v\n%s", tc.args, res)
		require.Equal(t, "ober: "+tc.want+"\n", res.stderr, "%v", tc.args)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, text, string(b), "%v changed the file", tc.args)
	}
}

func TestBackendList(t *testing.T) {
	path, _, _ := backendSite(t)
	res := runInProcess("--config", path, "backend", "list")
	require.Equal(t, 0, res.code, res)
	require.Equal(t, `SERVICE  POOL              BACKEND  ADDRESS         WEIGHT  PRIORITY  STATE
https    default (shared)  rgw1     10.30.0.1:7480  100     1         enabled
https    default (shared)  s1       10.30.0.2:7480  100     2         enabled
db       default           pg1      10.1.0.1:5432   10      1         enabled
`, res.stdout)

	res = runInProcess("--config", path, "backend", "list", "db")
	require.Equal(t, 0, res.code, res)
	require.Equal(t, 2, strings.Count(res.stdout, "\n"))

	res = runInProcess("--config", path, "backend", "list", "web")
	require.Equal(t, 1, res.code, res)
	require.Equal(t, "ober: backend list: services: \"web\": no such service (have: https, db)\n", res.stderr)
}

func TestReloadWithoutDaemon(t *testing.T) {
	path, _, _ := backendSite(t)
	res := runInProcess("--config", path, "reload", "--direct")
	require.Equal(t, 1, res.code, res)
	require.True(t, strings.HasPrefix(res.stderr, "ober: reload: ober is not running"), res.stderr)
	require.Empty(t, res.stdout)
}
