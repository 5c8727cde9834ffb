package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/client"
	"github.com/ober-ingress/ober/control/mgmt/client/clienttest"
)

// cli runs one command line against the fake API's socket, with a
// configuration file that does not exist (the socket comes from
// --socket).
func cli(fake *clienttest.Server) func(args ...string) result {
	return func(args ...string) result {
		return runInProcess(append(append([]string{"--config", "/nonexistent/ober.yaml"}, args...), "--socket", fake.Socket)...)
	}
}

func ok(t *testing.T, res result, stdout string) {
	t.Helper()
	require.Equal(t, 0, res.code, res)
	require.Empty(t, res.stderr)
	require.Equal(t, stdout, res.stdout)
}

func fails(t *testing.T, res result, stderr string) {
	t.Helper()
	require.Equal(t, 1, res.code, res)
	require.Empty(t, res.stdout)
	require.Equal(t, stderr, res.stderr)
}

// A service's whole life through the CLI alone: create, backends added,
// weighed, drained, removed, the service changed and deleted; the
// refusals on the way change nothing.
func TestServiceLifecycle(t *testing.T) {
	fake := clienttest.New(t)
	ober := cli(fake)

	ok(t, ober("service", "create", "--name", "web", "--mode", "tcp", "--port", "8080", "--backend", "a=10.1.0.1:80"),
		"created service web (vips 10.20.0.1): applied by a reload (generation 1, configuration generation 1)\n")
	ok(t, ober("backend", "add", "web", "b", "--address", "10.1.0.2:80", "--weight", "50", "--priority", "2"),
		"web b (10.1.0.2:80) added: applied by a reload (generation 1, configuration generation 2)\n")
	// Again: the same backend, nothing to change, so that scripts can
	// run add twice.
	ok(t, ober("backend", "add", "web", "b", "--address", "10.1.0.2:80", "--weight", "50", "--priority", "2"),
		"web b (10.1.0.2:80) added: nothing to change (generation 1, configuration generation 2)\n")
	fails(t, ober("backend", "add", "web", "b", "--address", "10.9.9.9:80"),
		"ober: web b is there already, with address 10.1.0.2:80: 'ober backend remove' it first, or give it another name\n")
	ok(t, ober("backend", "weight", "web", "a", "200"),
		"web a: weight 200: applied through the runtime API (generation 2, configuration generation 3)\n")
	ok(t, ober("backend", "drain", "web", "a", "--if-match", "2"),
		"web a: state drain: applied through the runtime API (generation 3, configuration generation 4)\n")

	// Refused: a stale generation, a weight out of range (the field
	// named), a service that is not there.
	fails(t, ober("backend", "enable", "web", "a", "--if-match", "2"),
		"ober: services[web].backends[a]: generation is 3, not 2 (If-Match)\n")
	fails(t, ober("backend", "weight", "web", "a", "300"),
		"ober: services[web].backends[a].weight: 300: must be 0-256\n")
	fails(t, ober("backend", "weight", "web", "a", "lots"), "ober: weight \"lots\": not a number (0-256)\n")
	fails(t, ober("backend", "drain", "api", "a"), "ober: services[api]: services: \"api\": no such service\n")

	ok(t, ober("service", "list"), `NAME  MODE  PORT  VIPS       BALANCE    BACKENDS  GENERATION
web   tcp   8080  10.20.0.1  leastconn  2         4
`)
	ok(t, ober("service", "show", "web"), `name:        web
mode:        tcp
port:        8080
vips:        ["10.20.0.1"]
generation:  4

POOL     BACKEND  ADDRESS      WEIGHT  PRIORITY  STATE    GENERATION  HEALTH  CONNS
default  a        10.1.0.1:80  200     1         drain    3           up      0
default  b        10.1.0.2:80  50      2         enabled  1           up      0
`)

	res := ober("service", "show", "web", "--json")
	require.Equal(t, 0, res.code, res)
	raw, _ := fake.ServiceJSON("web")
	require.JSONEq(t, string(raw), res.stdout)
	require.True(t, strings.HasPrefix(res.stdout, "{\n  \""), "indented: %s", res.stdout)

	res = ober("backend", "weight", "web", "b", "60", "--json")
	require.Equal(t, 0, res.code, res)
	var wrote client.Result
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &wrote))
	require.Equal(t, uint64(2), wrote.Generation)
	require.JSONEq(t, `{"name":"b","address":"10.1.0.2:80","weight":60,"priority":2,"generation":2}`, string(wrote.Object))

	ok(t, ober("backend", "remove", "web", "a"), "web a removed: applied by a reload (configuration generation 6)\n")
	ok(t, ober("service", "set", "web", "--balance", "roundrobin", "--unset", "mode", "--if-match", "6"),
		"service web: applied by a reload (generation 7, configuration generation 7)\n")
	ok(t, ober("service", "set", "web", "--balance", "roundrobin"),
		"service web: nothing to change (generation 7, configuration generation 7)\n")
	ok(t, ober("service", "list", "--json"), "{\n  \"services\": [\n    {\n"+
		"      \"backends\": [\n        {\n          \"address\": \"10.1.0.2:80\",\n          \"generation\": 2,\n          \"name\": \"b\",\n"+
		"          \"priority\": 2,\n          \"weight\": 60\n        }\n      ],\n      \"balance\": \"roundrobin\",\n"+
		"      \"generation\": 7,\n      \"name\": \"web\",\n"+
		"      \"port\": 8080,\n      \"vips\": [\n        \"10.20.0.1\"\n      ]\n    }\n  ]\n}\n")
	ok(t, ober("service", "delete", "web"), "deleted service web: applied by a reload (configuration generation 8)\n")
	fails(t, ober("service", "show", "web"), "ober: services[web]: services: \"web\": no such service\n")
	ok(t, ober("service", "list"), "no services\n")

	require.Equal(t, []string{
		"POST /api/v1/services",
		"GET /api/v1/services/web/backends/b",
		"PUT /api/v1/services/web/backends/b",
		"GET /api/v1/services/web/backends/b",
		"PUT /api/v1/services/web/backends/b",
		"GET /api/v1/services/web/backends/b",
		"PATCH /api/v1/services/web/backends/a",
		"POST /api/v1/services/web/backends/a/drain [If-Match: 2]",
		"POST /api/v1/services/web/backends/a/enable [If-Match: 2]",
		"PATCH /api/v1/services/web/backends/a",
		"POST /api/v1/services/api/backends/a/drain",
		"GET /api/v1/services",
		"GET /api/v1/services/web",
		"GET /api/v1/services/web/stats",
		"GET /api/v1/services/web",
		"PATCH /api/v1/services/web/backends/b",
		"DELETE /api/v1/services/web/backends/a",
		"PATCH /api/v1/services/web [If-Match: 6]",
		"PATCH /api/v1/services/web",
		"GET /api/v1/services",
		"DELETE /api/v1/services/web",
		"GET /api/v1/services/web",
		"GET /api/v1/services",
	}, fake.Requests())
}

// create takes a YAML file, with flags over it; set --replace a whole one.
func TestServiceCreateFromFile(t *testing.T) {
	fake := clienttest.New(t)
	ober := cli(fake)
	dir := t.TempDir()
	file := filepath.Join(dir, "db.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`# the database
name: db
mode: tcp
port: 5432
vips: [10.0.0.5]
backends:
  - {name: pg1, address: "10.1.0.1:5432", weight: 10}
health: {kind: tcp, interval: 5s}
`), 0o644))
	ok(t, ober("service", "create", "-f", file, "--balance", "source", "--vip", "10.0.0.6,10.0.0.7"),
		"created service db (vips 10.0.0.6,10.0.0.7): applied by a reload (generation 1, configuration generation 1)\n")
	raw, ok := fake.ServiceJSON("db")
	require.True(t, ok)
	require.JSONEq(t, `{"name":"db","mode":"tcp","port":5432,"vips":["10.0.0.6","10.0.0.7"],"balance":"source",
		"health":{"kind":"tcp","interval":"5s"},"generation":1,
		"backends":[{"name":"pg1","address":"10.1.0.1:5432","weight":10,"generation":1}]}`, string(raw))

	js := filepath.Join(dir, "db.json")
	require.NoError(t, os.WriteFile(js, []byte(`{"mode":"tcp","port":5433,"vips":["10.0.0.5"]}`), 0o644))
	res := ober("service", "set", "db", "-f", js, "--replace")
	require.Equal(t, 0, res.code, res)
	raw, _ = fake.ServiceJSON("db")
	require.JSONEq(t, `{"name":"db","mode":"tcp","port":5433,"vips":["10.0.0.5"],"generation":2}`, string(raw))

	require.NoError(t, os.WriteFile(js, []byte(`[1, 2]`), 0o644))
	fails(t, ober("service", "create", "-f", js),
		"ober: -f "+js+": want one service, a mapping of its keys (as an item of ober.yaml's services)\n")
	fails(t, ober("service", "set", "db"), "ober: nothing to set: give flags, --unset KEY or -f FILE\n")
	fails(t, ober("service", "set", "db", "--port", "1", "--replace"), "ober: --replace needs -f FILE: the whole service\n")
	fails(t, ober("service", "create", "--backend", "=10.0.0.1:80"), "ober: --backend \"=10.0.0.1:80\": want [NAME=]HOST:PORT\n")
	fails(t, ober("backend", "add", "db", "pg2"), "ober: required flag(s) \"address\" not set\n")
}

// set goes through the API when the daemon answers there: the file is the
// API's to write, and set leaves it alone.
func TestBackendSetThroughAPI(t *testing.T) {
	fake := clienttest.New(t)
	_, err := client.New(fake.Socket).PutService(context.Background(), "db",
		json.RawMessage(`{"mode":"tcp","port":5432,"vips":["10.0.0.1"],"backends":[{"name":"pg1","address":"10.1.0.1:5432"}]}`))
	require.NoError(t, err)
	path, text, _ := backendSite(t)

	res := runInProcess("--config", path, "backend", "set", "db", "pg1", "--weight", "20", "--state", "drain", "--socket", fake.Socket)
	require.Equal(t, 0, res.code, res)
	require.Equal(t, "db pg1: weight 20, state drain: applied through the runtime API (generation 2, configuration generation 2)\n", res.stdout)
	res = runInProcess("--config", path, "backend", "set", "db", "pg1", "--weight", "300", "--pool", "default", "--socket", fake.Socket)
	require.Equal(t, 1, res.code, res)
	require.Equal(t, "ober: backend set: services[db].backends[pg1].weight: 300: must be 0-256\n", res.stderr)
	require.Equal(t, []string{
		"PUT /api/v1/services/db",
		"PATCH /api/v1/services/db/backends/pg1",
		"PATCH /api/v1/services/db/backends/pg1?pool=default",
	}, fake.Requests())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, text, string(b))

	// The API named but not there: an error, not an edit of the file.
	gone := filepath.Join(t.TempDir(), "api.sock")
	res = runInProcess("--config", path, "backend", "set", "db", "pg1", "--weight", "20", "--socket", gone)
	require.Equal(t, 1, res.code, res)
	require.True(t, strings.HasPrefix(res.stderr, "ober: backend set: no daemon answers on "+gone+": "), res.stderr)
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, text, string(b))

	// --if-match is the API's: without a daemon there is none to check.
	res = runInProcess("--config", path, "backend", "set", "db", "pg1", "--weight", "20", "--if-match", "1")
	require.Equal(t, 1, res.code, res)
	require.Equal(t, "ober: backend set: --if-match needs the management API, and no daemon answers on it\n", res.stderr)
	res = runInProcess("--config", path, "backend", "set", "db", "pg1", "--weight", "20", "--if-match", "1", "--no-reload")
	require.Equal(t, 1, res.code, res)
	require.Equal(t, "ober: backend set: --if-match is the management API's: it does not go with --no-reload\n", res.stderr)
}

func TestServiceNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	res := runInProcess("service", "list", "--socket", sock)
	fails(t, res, "ober: no daemon answers on "+sock+": connect: no such file or directory (is the daemon running? 'ober start' starts it)\n")

	// The socket comes from the configuration file's api.socket.
	path, _, _ := backendSite(t)
	res = runInProcess("--config", path, "backend", "drain", "db", "pg1")
	require.Equal(t, 1, res.code, res)
	require.Contains(t, res.stderr, "ober: no daemon answers on "+filepath.Join(filepath.Dir(path), "run", "api.sock")+": ")
}

// A change of the shared backends.servers says which services it reaches.
func TestReportShared(t *testing.T) {
	var out bytes.Buffer
	a := &app{out: &out}
	res := &client.Result{Result: mgmt.Result{Object: json.RawMessage(`{}`), Generation: 4, ConfigGeneration: 9,
		Applied: mgmt.AppliedRuntime, SharedBy: []string{"https", "s3"}}}
	require.NoError(t, a.report(&apiFlags{}, res, "%s %s: weight %d", "https", "rgw1", 5))
	require.Equal(t, `https rgw1: weight 5: applied through the runtime API (generation 4, configuration generation 9)
note: backends.servers is the pool of services https, s3: the change applies to each
`, out.String())
}
