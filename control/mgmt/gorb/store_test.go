package gorb

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
)

type countApplier struct{ n uint64 }

func (a *countApplier) Apply(context.Context) (mgmt.Applied, uint64, error) {
	a.n++
	return mgmt.AppliedReload, a.n, nil
}

// base is an ober.yaml without services; the instances' account must
// exist on the machine (nobody/nogroup on Debian).
const base = `# written by hand
node:
  name: n1
  interfaces: [eth1]
haproxy: {user: nobody, group: nogroup}
instances: {cpus: [0]}
vips: [10.0.0.1]
services:
  - name: db   # the one service ober.yaml had
    port: 5432
    mode: tcp
    backends: [{address: "10.2.0.1:5432"}]
`

// The seed's flow through the real Store: what GORB's JSON becomes is a
// file config loads, saying what the client asked.
func TestSeedFlowThroughTheStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ober.yaml")
	if err := os.WriteFile(path, []byte(base), 0o640); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	if err := os.MkdirAll(run, 0o750); err != nil {
		t.Fatal(err)
	}
	st := &mgmt.Store{Path: path, RuntimeDir: run, StateDir: filepath.Join(dir, "state"), Applier: &countApplier{}, Log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(New(st, Options{Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	c := &client{t: t, srv: srv}

	// A service's problem is reported when it is created.
	if st, body, _ := c.do("PUT", "/service/clash", `{"port": 5432}`); st != 409 || !strings.Contains(body, "already used by services[db]") {
		t.Errorf("PUT of a service on db's port: %d %s", st, body)
	}
	c.must(404, "GET", "/service/clash", "")
	// A service without backends is kept in the file at once: a
	// restart before its first backend keeps it.
	c.must(200, "PUT", "/service/web", seedService)
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), "- name: web") {
		t.Errorf("the service without backends is not in the file:\n%s", data)
	} else if cfg, err := config.Parse(data); err != nil || len(cfg.Services) != 2 || len(cfg.Services[1].Backends) != 0 {
		t.Errorf("the file with the service without backends: %v\n%s", err, data)
	}
	c.must(200, "PUT", "/service/web/b1", seedBackend)
	c.must(200, "PUT", "/service/web/b2", strings.Replace(seedBackend, "10.1.0.1", "10.1.0.2", 1))
	c.must(200, "PATCH", "/service/web/b1", `{"weight": 50}`)
	c.must(409, "PUT", "/service/web", seedService)
	// IPVS takes weights ober does not; the validator's words say so.
	if st, body, _ := c.do("PATCH", "/service/web/b2", `{"weight": 1000}`); st != 422 || !strings.Contains(body, "services[web].backends[b2].weight") {
		t.Errorf("PATCH of weight 1000: %d %s", st, body)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !strings.HasPrefix(string(data), "# written by hand\n") {
		t.Errorf("the operator's comment is gone:\n%s", data)
	}
	s := cfg.Services[1]
	if s.Name != "web" || s.Mode != "tcp" || s.Port != 12345 || s.Balance != config.BalanceSource || s.Fallback != config.FallbackKeepLast ||
		len(s.VIPs) != 1 || s.VIPs[0].String() != "10.0.0.1" || len(s.Backends) != 2 || *s.Backends[0].Weight != 50 ||
		s.Backends[1].Address != "10.1.0.2:12346" || s.Health.Kind != "http" || s.Health.Path != "/health" || s.Health.Port != 54321 ||
		s.Health.Status != "200" || s.Health.Interval.String() != "5s" || s.Health.Timeout.String() != "2s" {
		t.Errorf("the file says %+v %+v\n%s", s, *s.Health, data)
	}
	info := decodeInto[ServiceInfo](t, c.must(200, "GET", "/service/web", ""))
	if info.Options.Method != "sh" || info.Options.Host != "10.0.0.1" || len(info.Backends) != 2 {
		t.Errorf("GET /service/web: %+v", info)
	}

	// The last backend of a service stays: without it the service would
	// close every connection.
	c.must(200, "DELETE", "/service/web/b2", "")
	if st, body, _ := c.do("DELETE", "/service/web/b1", ""); st != 409 || !strings.Contains(body, "add another backend first") {
		t.Errorf("DELETE of the last backend: %d %s", st, body)
	}
	c.must(200, "PUT", "/service/web/g1", `{"host": "10.1.0.9", "port": 80}`)
	c.must(200, "DELETE", "/service/web/b1", "")
	c.must(200, "DELETE", "/service/web", "")
	if st, _, _ := c.do("GET", "/service/web", ""); st != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d", st)
	}
	if data, _ := os.ReadFile(path); string(data) != base {
		t.Errorf("the file is not as it was:\n%s", data)
	}
}
