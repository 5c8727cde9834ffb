package backends

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
)

// head is the part of every fixture that is not about backends; the
// instances' account must exist on the machine (nobody/nogroup on
// Debian).
const head = `# Test node: every note must survive an edit.
node:
  name: n1   # rack 7
  interfaces: [eth1]
haproxy: {user: nobody, group: nogroup}
instances: {cpus: [0]}
vips: [10.0.0.1]

`

// site has a backend of each kind: the top-level pool (named and
// unnamed, block style), a tcp service's own backends in flow style, and
// pools[] with a name in two of them.
const site = head + `services:
  # S3 for everyone
  - name: https
    port: 443
    mode: tls
    tls: {self_signed: true}
  - port: 80
    mode: http
  # a TCP service of its own
  - name: db
    port: 5432
    mode: tcp
    backends:
      - {name: pg1, address: "10.1.0.1:5432", weight: 10}   # primary
      - {address: "10.1.0.2:5432"}
  - name: sni
    port: 8443
    mode: tcp
    tls_passthrough:
      routes:
        - {names: [a.example], pool: eu}
      default: us
    pools:
      - name: eu
        backends:
          - name: x1
            address: 10.2.0.1:443
          - name: common
            address: 10.2.0.2:443
      - name: us
        backends:
          - address: 10.3.0.1:443   # no name: s0
          - name: common
            address: 10.3.0.2:443

backends:
  servers:
    # the first RGW
    - name: rgw1
      address: 10.30.0.1:7480
    - address: 10.30.0.2:7480   # unnamed: s1

      weight: 50   # older disks
`

func writeConfig(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ober.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), mode))
	require.NoError(t, os.Chmod(path, mode))
	return path
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func weight(n int) *int { return &n }

// replace is text with old replaced by new once; old must be there.
func replace(t *testing.T, text, old, new string) string {
	t.Helper()
	require.Contains(t, text, old)
	return strings.Replace(text, old, new, 1)
}

// unchanged checks that the file is as written and nothing was left
// beside it.
func unchanged(t *testing.T, path, text string) {
	t.Helper()
	require.Equal(t, text, read(t, path))
	left, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".ober.yaml-*"))
	require.NoError(t, err)
	require.Empty(t, left, "a temporary file was left behind")
}

func TestSetTheSharedPool(t *testing.T) {
	path := writeConfig(t, site, 0o640)
	res, err := Set(path, Request{Service: "https", Backend: "rgw1", Weight: weight(20)})
	require.NoError(t, err)
	require.Equal(t, Result{
		Service: "https", Pool: config.DefaultPool, Backend: "rgw1", Path: "backends.servers[0]",
		SharedBy: []string{"https", "http-80"},
		Changes:  []Change{{Field: "weight", Path: "backends.servers[0].weight", Old: "100", New: "20"}},
		Changed:  true,
	}, res)
	require.Equal(t, "weight 100 -> 20", res.Changes[0].String())
	want := replace(t, site, "      address: 10.30.0.1:7480\n", "      address: 10.30.0.1:7480\n      weight: 20\n")
	require.Equal(t, want, read(t, path), "only the new line; every other byte as it was")
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), st.Mode().Perm(), "the file's mode is kept")
	unchanged(t, path, want)

	cfg, err := config.Load(path)
	require.NoError(t, err)
	require.Equal(t, 20, *cfg.Backends.Servers[0].Weight)
}

func TestSetAnUnnamedBackendWritesItsName(t *testing.T) {
	// The second server of the shared pool is s1 by default; it is found
	// by that name (through a service that names no backends of its own)
	// and gets the name written, after its last key, so that its lines
	// stay as they were.
	path := writeConfig(t, site, 0o600)
	res, err := Set(path, Request{Service: "http-80", Backend: "s1", State: config.StateDrain, Weight: weight(50)})
	require.NoError(t, err)
	require.True(t, res.Changed)
	require.True(t, res.Named)
	require.Equal(t, []Change{{Field: "state", Path: "backends.servers[1].state", Old: "enabled", New: "drain"}}, res.Changes,
		"the weight is 50 already: only the state changes")
	want := replace(t, site, "      weight: 50   # older disks\n", "      weight: 50   # older disks\n      name: s1\n      state: drain\n")
	require.Equal(t, want, read(t, path))
	rows, err := List(path, "https")
	require.NoError(t, err)
	require.Equal(t, Row{Service: "https", Pool: "default", Shared: true, Name: "s1", Address: "10.30.0.2:7480",
		Weight: 50, Priority: 1, State: "drain", Path: "backends.servers[1]"}, rows[1])
}

func TestSetFlowStyleItems(t *testing.T) {
	path := writeConfig(t, site, 0o644)
	res, err := Set(path, Request{Service: "db", Backend: "pg1", Weight: weight(0), State: config.StateDisabled})
	require.NoError(t, err)
	require.Equal(t, []Change{
		{Field: "weight", Path: "services[2].backends[0].weight", Old: "10", New: "0"},
		{Field: "state", Path: "services[2].backends[0].state", Old: "enabled", New: "disabled"},
	}, res.Changes)
	// A flow item is written again on its line; its comment keeps its
	// column.
	want := replace(t, site, `      - {name: pg1, address: "10.1.0.1:5432", weight: 10}   # primary`,
		`      - {name: pg1, address: "10.1.0.1:5432", weight: 0, state: disabled}   # primary`)
	require.Equal(t, want, read(t, path))

	res, err = Set(path, Request{Service: "db", Backend: "s1", Weight: weight(7)})
	require.NoError(t, err)
	require.True(t, res.Named)
	want = replace(t, want, `      - {address: "10.1.0.2:5432"}`, `      - {address: "10.1.0.2:5432", name: s1, weight: 7}`)
	require.Equal(t, want, read(t, path))
}

func TestSetAFileInFlowStyle(t *testing.T) {
	text := head + `services: [{name: https, port: 443, mode: tls, tls: {self_signed: true}}]
backends: {servers: [{name: a, address: "10.0.0.5:80", weight: 300}, {address: "10.0.0.6:80"}]}   # all flow
`
	path := writeConfig(t, text, 0o644)
	// The file does not load (a weight of 300); the edit that repairs it
	// is allowed, and the other backend cannot be changed before it is.
	_, err := Set(path, Request{Service: "https", Backend: "s1", State: config.StateDrain})
	require.EqualError(t, err, "the edited file does not load, nothing was written:\nconfig "+path+": backends.servers[0].weight: 300: must be 0-256")
	unchanged(t, path, text)

	res, err := Set(path, Request{Service: "https", Backend: "a", Weight: weight(100)})
	require.NoError(t, err)
	require.Equal(t, "weight 300 -> 100", res.Changes[0].String())
	require.Equal(t, replace(t, text, "weight: 300}", "weight: 100}"), read(t, path))
}

func TestSetPools(t *testing.T) {
	path := writeConfig(t, site, 0o644)
	_, err := Set(path, Request{Service: "sni", Backend: "common", State: config.StateDrain})
	require.EqualError(t, err, `services[3]: "common": a backend of that name is in pools "eu" and "us" of service "sni": give the pool (--pool)`)
	unchanged(t, path, site)

	res, err := Set(path, Request{Service: "sni", Pool: "us", Backend: "common", State: config.StateDrain})
	require.NoError(t, err)
	require.Equal(t, "services[3].pools[1].backends[1]", res.Path)
	require.Equal(t, "us", res.Pool)
	require.Empty(t, res.SharedBy)
	want := replace(t, site, "            address: 10.3.0.2:443\n", "            address: 10.3.0.2:443\n            state: drain\n")
	require.Equal(t, want, read(t, path))

	res, err = Set(path, Request{Service: "sni", Backend: "s0", Weight: weight(256)})
	require.NoError(t, err)
	require.True(t, res.Named)
	want = replace(t, want, "          - address: 10.3.0.1:443   # no name: s0\n",
		"          - address: 10.3.0.1:443   # no name: s0\n            name: s0\n            weight: 256\n")
	require.Equal(t, want, read(t, path))
}

func TestSetRefusesBadValues(t *testing.T) {
	path := writeConfig(t, site, 0o644)
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Service: "sni", Pool: "us", Backend: "s0", Weight: weight(300)}, "services[3].pools[1].backends[0].weight: 300: must be 0-256"},
		{Request{Service: "db", Backend: "pg1", Weight: weight(-1)}, "services[2].backends[0].weight: -1: must be 0-256"},
		{Request{Service: "https", Backend: "rgw1", State: "paused"}, `backends.servers[0].state: "paused": must be enabled, drain or disabled`},
		{Request{Service: "web", Backend: "s0", State: "drain"}, `services: "web": no such service (have: https, http-80, db, sni)`},
		{Request{Service: "https", Backend: "rgw9", State: "drain"}, `backends.servers: "rgw9": no such backend (have: rgw1, s1)`},
		{Request{Service: "sni", Backend: "x9", State: "drain"}, `services[3]: "x9": no such backend in the pools of service "sni" (have eu: x1, common; us: s0, common)`},
		{Request{Service: "sni", Pool: "asia", Backend: "x1", State: "drain"}, `services[3].pools: "asia": no such pool in service "sni" (have: eu, us)`},
		{Request{Service: "https", Backend: "rgw1"}, "nothing to set: give a weight or a state"},
	} {
		_, err := Set(path, tc.req)
		require.EqualError(t, err, tc.want, "%+v", tc.req)
		unchanged(t, path, site)
	}
}

func TestSetTheSameValueWritesNothing(t *testing.T) {
	path := writeConfig(t, site, 0o644)
	before, err := os.Stat(path)
	require.NoError(t, err)
	res, err := Set(path, Request{Service: "https", Backend: "s1", Weight: weight(50), State: config.StateEnabled})
	require.NoError(t, err)
	require.False(t, res.Changed)
	require.Empty(t, res.Changes)
	require.False(t, res.Named, "a no-op writes no name either")
	after, err := os.Stat(path)
	require.NoError(t, err)
	require.True(t, os.SameFile(before, after), "the file was not replaced")
	unchanged(t, path, site)
}

func TestSetTheEditedFileMustLoad(t *testing.T) {
	// Something else in the file is wrong: the edit would give a file
	// the daemon refuses, so nothing is written.
	text := replace(t, site, "vips: [10.0.0.1]\n", "vips: [10.0.0.1]\napi: {listen: nowhere}\n")
	path := writeConfig(t, text, 0o644)
	_, err := Set(path, Request{Service: "https", Backend: "rgw1", State: config.StateDrain})
	var le *LoadError
	require.ErrorAs(t, err, &le)
	require.Equal(t, path, le.Path)
	require.Contains(t, err.Error(), "the edited file does not load, nothing was written:\nconfig "+path+": api.listen: ")
	unchanged(t, path, text)

	// A file that does not even decode has no backend to find.
	text = replace(t, site, "vips: [10.0.0.1]\n", "vips: [10.0.0.1\n")
	path = writeConfig(t, text, 0o644)
	_, err = Set(path, Request{Service: "https", Backend: "rgw1", State: config.StateDrain})
	require.ErrorAs(t, err, &le)
	require.True(t, strings.HasPrefix(err.Error(), "the file does not load, nothing was written:\nconfig "+path+": line "), err.Error())
	unchanged(t, path, text)
}

func TestSetRefusesWhatItCannotEditInPlace(t *testing.T) {
	svc := "services:\n  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}\n"
	for _, tc := range []struct{ text, want string }{{
		// Editing the anchored list would change the other service too.
		head + `backends:
  servers: &pool
    - {name: a, address: "10.0.0.5:80"}
` + svc + `  - {name: t, port: 9000, mode: tcp, backends: *pool}
`,
		`backends.servers[0]: line 10: servers is shared through a YAML anchor (&pool); edit the file by hand; nothing was written`,
	}, {
		head + svc + `backends:
  servers: [
    {name: a, address: "10.0.0.5:80"},  # left
    {name: b, address: "10.0.0.6:80"}
  ]
`,
		`backends.servers[0]: line 12: a flow-style list or mapping ([...] or {...}) over several lines; write it on one line or in block style to let ober edit it; nothing was written`,
	}, {
		head + svc + `backends:
  servers:
    - {name: a, address: "10.0.0.5:80", weight: &w 7}
    - {name: b, address: "10.0.0.6:80", weight: *w}
`,
		`backends.servers[0]: line 13: weight is shared through a YAML anchor (&w); edit the file by hand; nothing was written`,
	}} {
		path := writeConfig(t, tc.text, 0o644)
		_, err := Set(path, Request{Service: "https", Backend: "a", Weight: weight(5)})
		require.EqualError(t, err, tc.want)
		unchanged(t, path, tc.text)
	}

	// An alias's place can take a value of its own: the anchor's stays.
	text := head + svc + `backends:
  servers:
    - {name: a, address: "10.0.0.5:80", weight: &w 7}
    - {name: b, address: "10.0.0.6:80", weight: *w}
`
	path := writeConfig(t, text, 0o644)
	_, err := Set(path, Request{Service: "https", Backend: "b", Weight: weight(5)})
	require.NoError(t, err)
	require.Equal(t, replace(t, text, "weight: *w}", "weight: 5}"), read(t, path))
}

func TestSetThroughASymlink(t *testing.T) {
	path := writeConfig(t, site, 0o640)
	link := filepath.Join(t.TempDir(), "link.yaml")
	require.NoError(t, os.Symlink(path, link))
	_, err := Set(link, Request{Service: "https", Backend: "rgw1", State: config.StateDisabled})
	require.NoError(t, err)
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSymlink, "the link stays a link")
	require.Contains(t, read(t, path), "      address: 10.30.0.1:7480\n      state: disabled\n")
}

func TestList(t *testing.T) {
	path := writeConfig(t, site, 0o644)
	rows, err := List(path, "")
	require.NoError(t, err)
	var got []string
	for _, r := range rows {
		got = append(got, strings.Join([]string{r.Service, r.Pool, r.Name, r.Address, r.State, r.Path}, " "))
	}
	require.Equal(t, []string{
		"https default rgw1 10.30.0.1:7480 enabled backends.servers[0]",
		"https default s1 10.30.0.2:7480 enabled backends.servers[1]",
		"http-80 default rgw1 10.30.0.1:7480 enabled backends.servers[0]",
		"http-80 default s1 10.30.0.2:7480 enabled backends.servers[1]",
		"db default pg1 10.1.0.1:5432 enabled services[2].backends[0]",
		"db default s1 10.1.0.2:5432 enabled services[2].backends[1]",
		"sni eu x1 10.2.0.1:443 enabled services[3].pools[0].backends[0]",
		"sni eu common 10.2.0.2:443 enabled services[3].pools[0].backends[1]",
		"sni us s0 10.3.0.1:443 enabled services[3].pools[1].backends[0]",
		"sni us common 10.3.0.2:443 enabled services[3].pools[1].backends[1]",
	}, got)
	require.Equal(t, 10, rows[4].Weight)
	require.Equal(t, 50, rows[1].Weight)
	require.Equal(t, 100, rows[0].Weight)
	require.True(t, rows[0].Shared)
	require.False(t, rows[4].Shared)

	rows, err = List(path, "db")
	require.NoError(t, err)
	require.Len(t, rows, 2)
	_, err = List(path, "web")
	require.EqualError(t, err, `services: "web": no such service (have: https, http-80, db, sni)`)
}
