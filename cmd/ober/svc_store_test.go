package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/httpapi"
)

// countingApplier stands for the daemon's reload: every write is live
// at once, one configuration generation each.
type countingApplier struct{ gen uint64 }

func (c *countingApplier) Apply(context.Context) (mgmt.Applied, uint64, error) {
	c.gen++
	return mgmt.AppliedReload, c.gen, nil
}

type noStats struct{}

func (noStats) ServiceStats(_ context.Context, name string) (json.RawMessage, error) {
	return nil, mgmt.Errorf(http.StatusNotFound, "", "%s: no status yet", name)
}
func (noStats) Pools(context.Context) (json.RawMessage, error) { return json.RawMessage(`[]`), nil }

// The CLI against the API's real HTTP layer and Store over a file: what
// the commands send is what the API takes.
func TestServiceCommandsOnStore(t *testing.T) {
	path, text, _ := backendSite(t)
	dir := filepath.Dir(path)
	store := &mgmt.Store{Path: path, RuntimeDir: filepath.Join(dir, "run"), StateDir: filepath.Join(dir, "state"),
		Applier: &countingApplier{}, Reader: noStats{}}
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(httpapi.New(store, nil))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	ober := func(args ...string) result {
		return runInProcess(append(append([]string{"--config", path}, args...), "--socket", sock)...)
	}
	for _, args := range [][]string{
		{"service", "create", "--name", "web", "--mode", "tcp", "--port", "8080", "--backend", "a=10.1.0.1:80"},
		{"backend", "add", "web", "b", "--address", "10.1.0.2:80", "--weight", "50"},
		{"backend", "weight", "web", "a", "200"},
		{"backend", "drain", "web", "a"},
		{"backend", "set", "web", "b", "--state", "disabled"},
		{"service", "set", "web", "--balance", "roundrobin"},
	} {
		res := ober(args...)
		require.Equal(t, 0, res.code, "%v\n%s", args, res)
	}
	res := ober("service", "show", "web")
	require.Equal(t, 0, res.code, res)
	require.Equal(t, `name:        web
mode:        tcp
port:        8080
balance:     roundrobin
generation:  6

POOL     BACKEND  ADDRESS      WEIGHT  PRIORITY  STATE     GENERATION  HEALTH  CONNS
default  a        10.1.0.1:80  200     1         drain     -           -       -
default  b        10.1.0.2:80  50      1         disabled  -           -       -
`, res.stdout)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(b), `  - name: web
    port: 8080
    mode: tcp
    backends:
      - name: a
        address: 10.1.0.1:80
        weight: 200
        state: drain
      - name: b
        address: 10.1.0.2:80
        weight: 50
        state: disabled
    balance: roundrobin
`)

	res = ober("backend", "weight", "web", "b", "300")
	require.Equal(t, 1, res.code, res)
	require.Equal(t, "ober: services[web].backends[b].weight: 300: must be 0-256\n", res.stderr)
	res = ober("backend", "drain", "web", "b", "--if-match", "1")
	require.Equal(t, 1, res.code, res)
	require.Contains(t, res.stderr, "ober: services[web].backends[b]")

	for _, args := range [][]string{
		{"backend", "remove", "web", "a"},
		{"service", "delete", "web"},
	} {
		res := ober(args...)
		require.Equal(t, 0, res.code, "%v\n%s", args, res)
	}
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, text, string(b), "the file as it was")

	// -f keeps the file's order of keys, flags go over it.
	file := filepath.Join(dir, "api.yaml")
	require.NoError(t, os.WriteFile(file, []byte("name: api\nmode: tcp\nport: 9000\nbackends:\n  - {address: 10.1.0.9:80, name: x}\n"), 0o644))
	res = ober("service", "create", "-f", file, "--balance", "source", "--port", "9001")
	require.Equal(t, 0, res.code, res)
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(b), "  - name: api\n    mode: tcp\n    port: 9001\n    backends:\n      - address: 10.1.0.9:80\n        name: x\n    balance: source\n")
}
