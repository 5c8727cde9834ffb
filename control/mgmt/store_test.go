package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
)

// head is the part of every fixture that is not about services; the
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
// unnamed), a tcp service's own backends in flow style, and pools[]
// with a name in two of them.
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

// fakeApplier counts the applies; fail, when set, is their error.
type fakeApplier struct {
	calls atomic.Uint64
	fail  error
}

func (f *fakeApplier) Apply(context.Context) (Applied, uint64, error) {
	if f.fail != nil {
		return "", 0, f.fail
	}
	return AppliedReload, f.calls.Add(1), nil
}

func newStore(t *testing.T, text string) (*Store, *fakeApplier) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "ober.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o640))
	require.NoError(t, os.Chmod(path, 0o640))
	a := &fakeApplier{}
	return &Store{Path: path, RuntimeDir: filepath.Join(dir, "run"), StateDir: filepath.Join(dir, "state"), Applier: a}, a
}

func mustMkdir(t *testing.T, s *Store) *Store {
	t.Helper()
	require.NoError(t, os.MkdirAll(s.RuntimeDir, 0o750))
	return s
}

func (s *Store) text(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(s.Path)
	require.NoError(t, err)
	return string(b)
}

func do(t *testing.T, s *Store, ch Change) Result {
	t.Helper()
	res, err := s.Do(context.Background(), ch)
	require.NoError(t, err)
	return res
}

func decoded(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// refused checks that ch fails with status and a message holding want,
// naming field, and that neither the file nor the applier moved.
func refused(t *testing.T, s *Store, a *fakeApplier, ch Change, status int, field, want string) {
	t.Helper()
	before := s.text(t)
	calls := a.calls.Load()
	_, err := s.Do(context.Background(), ch)
	require.Error(t, err)
	var e *Error
	require.True(t, errors.As(err, &e), "%T %v", err, err)
	require.Equal(t, status, e.Status, e.Message)
	require.Contains(t, e.Message, want)
	if field != "" {
		require.Equal(t, field, e.Field)
	}
	require.Equal(t, before, s.text(t), "the file changed")
	require.Equal(t, calls, a.calls.Load(), "applied")
}

// added checks that every line of want is in got, byte for byte and in
// order, and returns the lines got has besides.
func added(t *testing.T, want, got string) []string {
	t.Helper()
	w := strings.Split(want, "\n")
	var extra []string
	for _, l := range strings.Split(got, "\n") {
		if len(w) > 0 && l == w[0] {
			w = w[1:]
			continue
		}
		extra = append(extra, l)
	}
	require.Empty(t, w, "lines of the file lost or changed; got:\n%s", got)
	return extra
}

func TestPutBackendKeepsEveryOtherLine(t *testing.T) {
	s, a := newStore(t, site)
	mustMkdir(t, s)
	res := do(t, s, Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: "pg3",
		Body: json.RawMessage(`{"address": "10.1.0.3:5432", "weight": 20}`)})
	require.Equal(t, AppliedReload, res.Applied)
	require.Equal(t, uint64(1), res.Generation)
	require.Equal(t, map[string]any{"name": "pg3", "address": "10.1.0.3:5432", "weight": float64(20), "generation": float64(1)}, decoded(t, res.Object))
	require.Contains(t, res.Diff, "+")
	require.Equal(t, uint64(1), a.calls.Load())
	require.Equal(t, []string{"      - name: pg3", "        address: 10.1.0.3:5432", "        weight: 20"}, added(t, site, s.text(t)))
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	require.Len(t, cfg.Services[2].Backends, 3)
	st, err := os.Stat(s.Path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), st.Mode().Perm())

	// The same again: nothing to do.
	res = do(t, s, Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: "pg3",
		Body: json.RawMessage(`{"address": "10.1.0.3:5432", "weight": 20, "generation": 1}`)})
	require.Equal(t, AppliedNone, res.Applied)
	require.Equal(t, uint64(1), res.Generation)
	require.Equal(t, uint64(1), a.calls.Load())
}

func TestPutServiceIdempotentAndReplaces(t *testing.T) {
	s, a := newStore(t, site)
	mustMkdir(t, s)
	raw, err := s.Service(context.Background(), "db")
	require.NoError(t, err)
	obj := decoded(t, raw)
	require.Equal(t, float64(1), obj["generation"])
	// A GET sent back as a PUT changes nothing.
	res := do(t, s, Change{Verb: Put, Kind: KindService, Service: "db", Body: raw})
	require.Equal(t, AppliedNone, res.Applied)
	require.Equal(t, uint64(1), res.Generation)
	require.Equal(t, site, s.text(t))
	require.Zero(t, a.calls.Load())

	// A new port; the backends (and their comment) stay.
	obj["port"] = 5433
	body, _ := json.Marshal(obj)
	res = do(t, s, Change{Verb: Put, Kind: KindService, Service: "db", Body: body})
	require.Equal(t, uint64(2), res.Generation)
	require.Equal(t, strings.Replace(site, "    port: 5432", "    port: 5433", 1), s.text(t))

	// A PUT without a key drops it.
	res = do(t, s, Change{Verb: Put, Kind: KindService, Service: "db",
		Body: json.RawMessage(`{"port": 5433, "mode": "tcp", "backends": [{"name": "pg1", "address": "10.1.0.1:5432", "weight": 10}]}`)})
	require.Equal(t, uint64(3), res.Generation)
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	require.Len(t, cfg.Services[2].Backends, 1)
	require.Contains(t, s.text(t), "# primary")
}

func TestCreateService(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	res := do(t, s, Change{Verb: Create, Kind: KindService,
		Body: json.RawMessage(`{"name": "cache", "port": 6379, "mode": "tcp", "backends": [{"name": "r1", "address": "10.5.0.1:6379"}]}`)})
	require.Equal(t, uint64(1), res.Generation)
	require.Equal(t, "cache", decoded(t, res.Object)["name"])
	require.Equal(t, []string{"  - name: cache", "    port: 6379", "    mode: tcp", "    backends:", "      - name: r1", "        address: 10.5.0.1:6379"}, added(t, site, s.text(t)))
	_, err := config.Load(s.Path)
	require.NoError(t, err)
	// Twice: a conflict.
	refused(t, s, &fakeApplier{}, Change{Verb: Create, Kind: KindService,
		Body: json.RawMessage(`{"name": "cache", "port": 6380, "mode": "tcp"}`)}, http.StatusConflict, "services[cache]", "exists already")
	// A port a service has on the same VIP: 409 with the validator's words.
	refused(t, s, &fakeApplier{}, Change{Verb: Create, Kind: KindService,
		Body: json.RawMessage(`{"name": "other", "port": 5432, "mode": "tcp", "backends": [{"address": "10.5.0.1:1"}]}`)},
		http.StatusConflict, "services[other].port", "services[other].port: 5432: already used by services[db] (\"db\") on VIP 10.0.0.1")
}

func TestPatchMergesAndDeletesKeys(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	res := do(t, s, Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": 30, "state": "drain"}`)})
	require.Equal(t, map[string]any{"name": "pg1", "address": "10.1.0.1:5432", "weight": float64(30), "state": "drain", "generation": float64(2)}, decoded(t, res.Object))
	res = do(t, s, Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": null}`)})
	require.Equal(t, map[string]any{"name": "pg1", "address": "10.1.0.1:5432", "state": "drain", "generation": float64(3)}, decoded(t, res.Object))
	require.Contains(t, s.text(t), "# primary")
	// A nested object merges: tls keeps self_signed.
	before := s.text(t)
	res = do(t, s, Change{Verb: Patch, Kind: KindService, Service: "https", Body: json.RawMessage(`{"tls": {"key": null}, "balance": "roundrobin"}`)})
	obj := decoded(t, res.Object)
	require.Equal(t, map[string]any{"self_signed": true}, obj["tls"])
	require.Equal(t, "roundrobin", obj["balance"])
	require.Equal(t, []string{"    balance: roundrobin"}, added(t, before, s.text(t)))
	// A list in a patch replaces the list, keeping the items that stay.
	before = s.text(t)
	do(t, s, Change{Verb: Patch, Kind: KindService, Service: "db", Body: json.RawMessage(
		`{"backends": [{"name": "pg1", "address": "10.1.0.1:5432", "weight": 40}, {"address": "10.1.0.2:5432"}]}`)})
	require.Equal(t, strings.Replace(before, "state: drain}", "weight: 40}", 1), s.text(t))
	// The unnamed backend gets its name written when it changes.
	do(t, s, Change{Verb: Patch, Kind: KindBackend, Service: "sni", Pool: "us", Backend: "s0", Body: json.RawMessage(`{"weight": 5}`)})
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	require.Equal(t, "s0", cfg.Services[3].Pools[1].Backends[0].Name)
	require.Equal(t, 5, *cfg.Services[3].Pools[1].Backends[0].Weight)
}

func TestDeleteAndNotFound(t *testing.T) {
	s, a := newStore(t, site)
	mustMkdir(t, s)
	res := do(t, s, Change{Verb: Delete, Kind: KindBackend, Service: "sni", Pool: "eu", Backend: "common"})
	require.Nil(t, res.Object)
	_, err := s.Backend(context.Background(), "sni", "common", "eu")
	require.Equal(t, http.StatusNotFound, StatusOf(err))
	// Only one "common" is left: found without its pool.
	_, err = s.Backend(context.Background(), "sni", "common", "")
	require.NoError(t, err)

	refused(t, s, a, Change{Verb: Delete, Kind: KindService, Service: "nope"}, http.StatusNotFound, "services[nope]", "no such service")
	refused(t, s, a, Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "nope", Body: json.RawMessage(`{}`)}, http.StatusNotFound, "services[db].backends[nope]", "no such backend")
	refused(t, s, a, Change{Verb: Drain, Kind: KindBackend, Service: "sni", Pool: "zz", Backend: "x1"}, http.StatusNotFound, "pool", "no pool")
	_, err = s.Service(context.Background(), "nope")
	require.Equal(t, http.StatusNotFound, StatusOf(err))

	do(t, s, Change{Verb: Delete, Kind: KindService, Service: "db"})
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	require.Len(t, cfg.Services, 3)
	require.NotContains(t, s.text(t), "primary")
	require.Contains(t, s.text(t), "# S3 for everyone")

	list, err := s.Services(context.Background())
	require.NoError(t, err)
	require.Len(t, list, 3)
	require.Equal(t, "http-80", decoded(t, list[1])["name"])
}

func TestDeleteLastBackendRefused(t *testing.T) {
	s, a := newStore(t, site)
	mustMkdir(t, s)
	do(t, s, Change{Verb: Put, Kind: KindService, Service: "web", Body: json.RawMessage(`{"port": 8080, "mode": "http", "backends": [{"name": "w1", "address": "10.7.0.1:80"}]}`)})
	refused(t, s, a, Change{Verb: Delete, Kind: KindBackend, Service: "web", Backend: "w1"}, http.StatusConflict, "services[web].backends[w1]", "the last backend")
}

func TestSharedBackend(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	res := do(t, s, Change{Verb: Drain, Kind: KindBackend, Service: "https", Backend: "rgw1"})
	require.Equal(t, []string{"https", "http-80"}, res.SharedBy)
	require.Equal(t, []string{"      state: drain"}, added(t, site, s.text(t)))
	// Read through the other service: the same backend.
	raw, err := s.Backend(context.Background(), "http-80", "rgw1", "")
	require.NoError(t, err)
	require.Equal(t, "drain", decoded(t, raw)["state"])
	require.Equal(t, float64(2), decoded(t, raw)["generation"])
	// Enable writes the state back; enable again is nothing.
	do(t, s, Change{Verb: Enable, Kind: KindBackend, Service: "https", Backend: "rgw1"})
	res = do(t, s, Change{Verb: Enable, Kind: KindBackend, Service: "https", Backend: "rgw1"})
	require.Equal(t, AppliedNone, res.Applied)
	// A new backend of a tls service without its own joins the top-level pool.
	res = do(t, s, Change{Verb: Put, Kind: KindBackend, Service: "https", Backend: "rgw3", Body: json.RawMessage(`{"address": "10.30.0.3:7480"}`)})
	require.Equal(t, []string{"https", "http-80"}, res.SharedBy)
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	require.Len(t, cfg.Backends.Servers, 3)
	require.Empty(t, cfg.Services[0].Backends)
}

func TestIfMatch(t *testing.T) {
	s, a := newStore(t, site)
	mustMkdir(t, s)
	one, two := uint64(1), uint64(2)
	do(t, s, Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": 11}`), IfMatch: &one})
	refused(t, s, a, Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": 12}`), IfMatch: &one},
		http.StatusPreconditionFailed, "services[db].backends[pg1]", "its generation is 2")
	do(t, s, Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": 12}`), IfMatch: &two})
	refused(t, s, a, Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: "new", Body: json.RawMessage(`{"address": "10.1.0.9:1"}`), IfMatch: &one},
		http.StatusPreconditionFailed, "", "does not exist")
}

func TestManualEditCounts(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	raw, err := s.Backend(context.Background(), "db", "pg1", "")
	require.NoError(t, err)
	require.Equal(t, float64(1), decoded(t, raw)["generation"])
	text := strings.Replace(site, `weight: 10}`, `weight: 15}`, 1)
	require.NoError(t, os.WriteFile(s.Path, []byte(text), 0o640))
	raw, err = s.Backend(context.Background(), "db", "pg1", "")
	require.NoError(t, err)
	require.Equal(t, float64(2), decoded(t, raw)["generation"])
	raw, err = s.Backend(context.Background(), "db", "pg1", "")
	require.NoError(t, err)
	require.Equal(t, float64(2), decoded(t, raw)["generation"], "a second read counts nothing")
	// The other backend of the service did not change.
	raw, err = s.Backend(context.Background(), "db", "s1", "")
	require.NoError(t, err)
	require.Equal(t, float64(1), decoded(t, raw)["generation"])
	// A deleted and recreated object counts on: a stale If-Match fails.
	do(t, s, Change{Verb: Delete, Kind: KindBackend, Service: "db", Backend: "s1"})
	res := do(t, s, Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: "s1", Body: json.RawMessage(`{"address": "10.1.0.2:5432"}`)})
	require.Equal(t, uint64(3), res.Generation)
}

func TestBadInput(t *testing.T) {
	s, a := newStore(t, site)
	mustMkdir(t, s)
	bk := func(body string) Change {
		return Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: "pg9", Body: json.RawMessage(body)}
	}
	refused(t, s, a, bk(`{"address": "10.1.0.9:1"`), http.StatusBadRequest, "", "malformed JSON")
	refused(t, s, a, bk(`[1]`), http.StatusBadRequest, "", "must be a JSON object")
	refused(t, s, a, bk(`{"adress": "10.1.0.9:1"}`), http.StatusBadRequest, "services[db].backends[pg9].adress",
		`services[db].backends[pg9].adress: unknown key; did you mean "address"?`)
	refused(t, s, a, bk(`{"address": "10.1.0.9:1", "weight": "heavy"}`), http.StatusBadRequest, "services[db].backends[pg9].weight",
		`services[db].backends[pg9].weight: "heavy": must be a whole number`)
	refused(t, s, a, bk(`{"address": "10.1.0.9:1", "weight": "7"}`), http.StatusBadRequest, "services[db].backends[pg9].weight", "must be a number, not a quoted string")
	refused(t, s, a, bk(`{"address": "10.1.0.9:1", "tls": "maybe"}`), http.StatusBadRequest, "services[db].backends[pg9].tls", "must be true or false")
	refused(t, s, a, bk(`{"name": "other", "address": "10.1.0.9:1"}`), http.StatusBadRequest, "services[db].backends[pg9].name", "a rename")
	refused(t, s, a, Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: "..", Body: json.RawMessage(`{}`)}, http.StatusBadRequest, "services[db].backends[..]", "not a usable name")
	refused(t, s, a, Change{Verb: Put, Kind: KindBackend, Service: "a/b", Backend: "x", Body: json.RawMessage(`{}`)}, http.StatusBadRequest, "services[]", "not a usable name")
	refused(t, s, a, Change{Verb: Put, Kind: KindService, Service: "", Body: json.RawMessage(`{}`)}, http.StatusBadRequest, "services[]", "a name is required")
	refused(t, s, a, Change{Verb: Put, Kind: KindService, Service: "bad name", Body: json.RawMessage(`{}`)}, http.StatusBadRequest, "services[]", "may contain only")
	refused(t, s, a, Change{Verb: Put, Kind: KindService, Service: "w", Body: json.RawMessage(`{"port": 99999, "mode": "tcp"}`)}, http.StatusBadRequest, "services[w].port", "must be a number from 1 to 65535")

	// The whole file's validation: 422 with the validator's words.
	refused(t, s, a, bk(`{"address": "10.1.0.9:1", "weight": 300}`), http.StatusUnprocessableEntity, "services[db].backends[pg9].weight",
		"services[db].backends[pg9].weight: 300: must be 0-256")
	refused(t, s, a, Change{Verb: Patch, Kind: KindBackend, Service: "sni", Pool: "eu", Backend: "x1", Body: json.RawMessage(`{"state": "sleepy"}`)},
		http.StatusUnprocessableEntity, "services[sni].pools[eu].backends[x1].state", `services[sni].pools[eu].backends[x1].state: "sleepy": must be enabled, drain or disabled`)
	refused(t, s, a, Change{Verb: Patch, Kind: KindService, Service: "db", Body: json.RawMessage(`{"fallback": "pray"}`)},
		http.StatusUnprocessableEntity, "services[db].fallback", "must be serve_503, keep_last or reject")
	// A name in two pools needs the pool.
	refused(t, s, a, Change{Verb: Drain, Kind: KindBackend, Service: "sni", Backend: "common"}, http.StatusConflict, "pool", "give the pool")
}

func TestApplyFailurePutsBack(t *testing.T) {
	s, a := newStore(t, site)
	mustMkdir(t, s)
	a.fail = errors.New("plan: vip_pools[lab]: no free address for svc: all 4 addresses are in use")
	_, err := s.Do(context.Background(), Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": 1}`)})
	require.Error(t, err)
	require.Equal(t, http.StatusConflict, StatusOf(err))
	require.Contains(t, err.Error(), "put back")
	require.Equal(t, site, s.text(t))
	a.fail = nil
	raw, err := s.Backend(context.Background(), "db", "pg1", "")
	require.NoError(t, err)
	require.Equal(t, float64(1), decoded(t, raw)["generation"])
}

// TestConcurrentWriters has 50 goroutines each write a backend of one
// service: every write lands, and the service's generation counts them
// all; a write with a stale If-Match among them is refused.
func TestConcurrentWriters(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	svc, err := s.Service(context.Background(), "db")
	require.NoError(t, err)
	gen0 := uint64(decoded(t, svc)["generation"].(float64))
	stale := gen0
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	var staleErr error
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Do(context.Background(), Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: fmt.Sprintf("c%d", i),
				Body: json.RawMessage(fmt.Sprintf(`{"address": "10.8.%d.%d:5432", "weight": %d}`, i/200, i%200+1, i+1))})
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	_, staleErr = s.Do(context.Background(), Change{Verb: Patch, Kind: KindService, Service: "db", Body: json.RawMessage(`{"port": 6000}`), IfMatch: &stale})
	require.Equal(t, http.StatusPreconditionFailed, StatusOf(staleErr))
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	have := map[string]int{}
	for _, b := range cfg.Services[2].Backends {
		have[b.Name] = *b.Weight
	}
	for i := range n {
		require.Equal(t, i+1, have[fmt.Sprintf("c%d", i)], "c%d", i)
	}
	svc, err = s.Service(context.Background(), "db")
	require.NoError(t, err)
	require.Equal(t, float64(gen0+n), decoded(t, svc)["generation"])
}

func TestAnchorRefused(t *testing.T) {
	s, a := newStore(t, head+`services:
  - name: a
    port: 7000
    mode: tcp
    backends:
      - &shared {name: b1, address: "10.4.0.1:7000"}
  - name: b
    port: 7001
    mode: tcp
    backends:
      - *shared
`)
	mustMkdir(t, s)
	for _, svc := range []string{"a", "b"} {
		refused(t, s, a, Change{Verb: Patch, Kind: KindBackend, Service: svc, Backend: "b1", Body: json.RawMessage(`{"weight": 1}`)},
			http.StatusConflict, "services["+svc+"].backends[b1]", "shared through a YAML anchor (&shared)")
	}
}

// gateApplier fails its first Apply once released, and lets the others
// through.
type gateApplier struct {
	first   atomic.Bool
	started chan struct{}
	release chan struct{}
}

func (g *gateApplier) Apply(context.Context) (Applied, uint64, error) {
	if g.first.CompareAndSwap(false, true) {
		close(g.started)
		<-g.release
		return "", 0, errors.New("reload failed")
	}
	return AppliedReload, 2, nil
}

// TestApplyFailureQueuesLaterWrite: a write that arrives while another's
// Apply runs waits for it; when that Apply fails, its change is put back
// and the later one is made on the file as it was.
func TestApplyFailureQueuesLaterWrite(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	g := &gateApplier{started: make(chan struct{}), release: make(chan struct{})}
	s.Applier = g
	first := make(chan error)
	go func() {
		_, err := s.Do(context.Background(), Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": 1}`)})
		first <- err
	}()
	<-g.started
	second := make(chan error)
	go func() {
		_, err := s.Do(context.Background(), Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "s1", Body: json.RawMessage(`{"weight": 2}`)})
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("the later write was answered (%v) while the earlier one's Apply ran", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(g.release)
	err := <-first
	require.Error(t, err)
	require.Contains(t, err.Error(), "not applied: reload failed; ober.yaml was put back as it was")
	require.NoError(t, <-second)
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	require.Equal(t, 10, *cfg.Services[2].Backends[0].Weight, "the failed change is put back")
	require.Equal(t, 2, *cfg.Services[2].Backends[1].Weight)
}

// TestApplyFailureAfterOtherWriter: a failed Apply cannot put the file
// back when something else wrote it since (a hand edit, ober sync); the
// error says the file keeps the change.
func TestApplyFailureAfterOtherWriter(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	g := &gateApplier{started: make(chan struct{}), release: make(chan struct{})}
	s.Applier = g
	done := make(chan error)
	go func() {
		_, err := s.Do(context.Background(), Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": 1}`)})
		done <- err
	}()
	<-g.started
	edited := strings.Replace(s.text(t), "# primary", "# primary, by hand", 1)
	require.NoError(t, os.WriteFile(s.Path, []byte(edited), 0o640))
	close(g.release)
	err := <-done
	require.Error(t, err)
	require.Contains(t, err.Error(), "not applied: reload failed; ober.yaml keeps the change")
	require.Equal(t, edited, s.text(t))
}

// holdApplier holds its first Apply until release is closed, and counts
// them all.
type holdApplier struct {
	calls   atomic.Uint64
	started chan struct{}
	release chan struct{}
}

func (h *holdApplier) Apply(context.Context) (Applied, uint64, error) {
	if n := h.calls.Add(1); n == 1 {
		close(h.started)
		<-h.release
	}
	return AppliedReload, h.calls.Load(), nil
}

func (s *Store) queued() int {
	s.q.mu.Lock()
	defer s.q.mu.Unlock()
	return len(s.q.waiting)
}

// queueBehind starts a write that holds the queue in its Apply, then the
// changes chs, in order, queued behind it; it returns their answers once
// the hold is released.
func queueBehind(t *testing.T, s *Store, h *holdApplier, chs []Change) ([]Result, []error) {
	t.Helper()
	first := make(chan error, 1)
	go func() {
		_, err := s.Do(context.Background(), Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "pg1", Body: json.RawMessage(`{"weight": 11}`)})
		first <- err
	}()
	<-h.started
	res := make([]Result, len(chs))
	errs := make([]error, len(chs))
	var wg sync.WaitGroup
	for i, ch := range chs {
		wg.Go(func() { res[i], errs[i] = s.Do(context.Background(), ch) })
		require.Eventually(t, func() bool { return s.queued() == i+1 }, 5*time.Second, time.Millisecond)
	}
	close(h.release)
	wg.Wait()
	require.NoError(t, <-first)
	return res, errs
}

// TestQueuedWritesGoTogether: backend changes queued behind a running
// write are made as one write of the file and one Apply; one refused on
// its own does not stop the others, and each is answered with its own
// generation as if it had gone alone. A second change of the same
// backend waits for a group of its own.
func TestQueuedWritesGoTogether(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	h := &holdApplier{started: make(chan struct{}), release: make(chan struct{})}
	s.Applier = h
	svc := decoded(t, must(s.Service(context.Background(), "db")))
	gen0 := uint64(svc["generation"].(float64))
	var chs []Change
	for i := range 10 {
		chs = append(chs, Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: fmt.Sprintf("q%d", i),
			Body: json.RawMessage(fmt.Sprintf(`{"address": "10.7.0.%d:5432", "weight": %d}`, i+1, i+1))})
	}
	// Refused alone: an unknown service, and a bad name.
	chs = append(chs, Change{Verb: Put, Kind: KindBackend, Service: "nope", Backend: "x", Body: json.RawMessage(`{"address": "10.7.1.1:5432"}`)})
	chs = append(chs, Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: "../x", Body: json.RawMessage(`{"address": "10.7.1.2:5432"}`)})
	// q0 again: a group of its own.
	chs = append(chs, Change{Verb: Patch, Kind: KindBackend, Service: "db", Backend: "q0", Body: json.RawMessage(`{"weight": 200}`)})
	res, errs := queueBehind(t, s, h, chs)
	for i := range 10 {
		require.NoError(t, errs[i], "q%d", i)
		require.Equal(t, uint64(1), res[i].Generation, "q%d", i)
		require.Equal(t, AppliedReload, res[i].Applied)
		require.Equal(t, float64(i+1), decoded(t, res[i].Object)["weight"])
		require.Equal(t, res[0].ConfigGeneration, res[i].ConfigGeneration, "one Apply carries the group")
	}
	require.Equal(t, http.StatusNotFound, StatusOf(errs[10]), "%v", errs[10])
	require.Equal(t, http.StatusBadRequest, StatusOf(errs[11]), "%v", errs[11])
	require.NoError(t, errs[12])
	require.Equal(t, uint64(2), res[12].Generation)
	require.Equal(t, float64(200), decoded(t, res[12].Object)["weight"])
	require.Equal(t, uint64(3), h.calls.Load(), "the held write, the group, and q0's second change")

	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	have := map[string]int{}
	for _, b := range cfg.Services[2].Backends {
		have[b.Name] = *b.Weight
	}
	require.Equal(t, 200, have["q0"])
	for i := 1; i < 10; i++ {
		require.Equal(t, i+1, have[fmt.Sprintf("q%d", i)])
	}
	svc = decoded(t, must(s.Service(context.Background(), "db")))
	require.Equal(t, float64(gen0+1+11), svc["generation"], "the held write and each of the 11 changes count one")
}

// TestQueuedGroupThatDoesNotValidate: when the group's result does not
// validate, each change is made alone, and only the bad one is refused,
// with the validator's message.
func TestQueuedGroupThatDoesNotValidate(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	h := &holdApplier{started: make(chan struct{}), release: make(chan struct{})}
	s.Applier = h
	before := s.text(t)
	chs := []Change{
		{Verb: Put, Kind: KindBackend, Service: "db", Backend: "v1", Body: json.RawMessage(`{"address": "10.7.0.1:5432"}`)},
		{Verb: Put, Kind: KindBackend, Service: "db", Backend: "bad", Body: json.RawMessage(`{"address": "10.7.0.2:5432", "weight": 999}`)},
		{Verb: Put, Kind: KindBackend, Service: "db", Backend: "v2", Body: json.RawMessage(`{"address": "10.7.0.3:5432"}`)},
	}
	res, errs := queueBehind(t, s, h, chs)
	require.NoError(t, errs[0])
	require.NoError(t, errs[2])
	require.Equal(t, http.StatusUnprocessableEntity, StatusOf(errs[1]), "%v", errs[1])
	require.Contains(t, errs[1].Error(), "services[db].backends[bad].weight")
	require.Equal(t, uint64(1), res[0].Generation)
	require.Equal(t, uint64(1), res[2].Generation)
	text := s.text(t)
	require.NotContains(t, text, "10.7.0.2")
	require.Contains(t, text, "10.7.0.1")
	require.Contains(t, text, "10.7.0.3")
	require.NotEqual(t, before, text)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// slowApplier takes a while to apply, as a reload does, and counts.
type slowApplier struct{ calls atomic.Uint64 }

func (a *slowApplier) Apply(context.Context) (Applied, uint64, error) {
	time.Sleep(20 * time.Millisecond)
	return AppliedReload, a.calls.Add(1), nil
}

// TestBurstTakesFewApplies: 300 backend adds sent at once are written in
// a few groups, each one write of the file and one Apply (the burst of
// BENCHMARKS.md took 2 reloads for 1,000), and every one is in the file
// and counted.
func TestBurstTakesFewApplies(t *testing.T) {
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	a := &slowApplier{}
	s.Applier = a
	gen0 := uint64(decoded(t, must(s.Service(context.Background(), "db")))["generation"].(float64))
	const n = 300
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Do(context.Background(), Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: fmt.Sprintf("u%d", i),
				Body: json.RawMessage(fmt.Sprintf(`{"address": "10.9.%d.%d:5432"}`, i/200, i%200+1))})
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "u%d", i)
	}
	t.Logf("%d adds in %d applies", n, a.calls.Load())
	require.LessOrEqual(t, a.calls.Load(), uint64(6), "queued adds share a write and an Apply")
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	require.Len(t, cfg.Services[2].Backends, 2+n)
	require.Equal(t, float64(gen0+n), decoded(t, must(s.Service(context.Background(), "db")))["generation"])
}

// A udp service goes through the API as any other: created with its UDP
// probe, its backends changed one by one, its last backend kept (409, not
// the top-level pool's message: a kernel service never takes that pool),
// and what the kernel cannot do refused with the validator's words.
func TestUDPService(t *testing.T) {
	s, a := newStore(t, site)
	mustMkdir(t, s)
	do(t, s, Change{Verb: Create, Kind: KindService, Body: json.RawMessage(`{"name": "dns", "port": 53, "mode": "udp", "balance": "consistent",
		"health": {"kind": "probe", "protocol": "udp", "send": "ping", "expect": "pong"},
		"backends": [{"name": "ns1", "address": "10.6.0.1:53"}]}`)})
	do(t, s, Change{Verb: Put, Kind: KindBackend, Service: "dns", Backend: "ns2", Pool: config.DefaultPool, Body: json.RawMessage(`{"address": "10.6.0.2:53", "weight": 3}`)})
	do(t, s, Change{Verb: Drain, Kind: KindBackend, Service: "dns", Backend: "ns1"})
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	svc := cfg.Services[len(cfg.Services)-1]
	require.Equal(t, config.ModeUDP, svc.Mode)
	require.Equal(t, config.ForwardFullNAT, svc.Forward)
	require.Len(t, svc.Backends, 2)
	require.Equal(t, config.StateDrain, svc.Backends[0].State)

	do(t, s, Change{Verb: Delete, Kind: KindBackend, Service: "dns", Backend: "ns1"})
	refused(t, s, a, Change{Verb: Delete, Kind: KindBackend, Service: "dns", Backend: "ns2"}, http.StatusConflict,
		"services[dns].backends[ns2]", "a udp service without backends cannot serve")
	refused(t, s, a, Change{Verb: Patch, Kind: KindService, Service: "dns", Body: json.RawMessage(`{"proxy_protocol": "v2"}`)},
		http.StatusUnprocessableEntity, "services[dns].proxy_protocol", "not for mode udp, which the kernel forwards without a proxy")
	refused(t, s, a, Change{Verb: Patch, Kind: KindService, Service: "dns", Body: json.RawMessage(`{"health": {"kind": "tcp"}}`)},
		http.StatusUnprocessableEntity, "services[dns].health.kind", "a UDP backend answers no TCP check")
}

// A backend a source found is changed by its name (its address): drain,
// enable, disable and a weight go to discovery.overrides in ober.yaml,
// kept there while the backend is gone; adding or removing one is the
// source's, and what else a source says is refused.
func TestFoundBackend(t *testing.T) {
	s, a := newStore(t, head+`services:
  - name: s3
    mode: tcp
    port: 7480
    discovery: {kind: srv, name: _s3._tcp.rgw.example}
`)
	mustMkdir(t, s)
	res := do(t, s, Change{Verb: Drain, Kind: KindBackend, Service: "s3", Backend: "10.1.0.2_7480"})
	require.Equal(t, "10.1.0.2_7480", decoded(t, res.Object)["name"])
	do(t, s, Change{Verb: Patch, Kind: KindBackend, Service: "s3", Backend: "fd00..3_7480", Body: json.RawMessage(`{"weight": 7}`)})
	do(t, s, Change{Verb: Patch, Kind: KindBackend, Service: "s3", Backend: "10.1.0.2_7480", Body: json.RawMessage(`{"weight": 20}`)})
	cfg, err := config.Load(s.Path)
	require.NoError(t, err)
	w7, w20 := 7, 20
	require.Equal(t, []config.DiscoveryOverride{
		{Address: "10.1.0.2:7480", State: config.StateDrain, Weight: &w20},
		{Address: "[fd00::3]:7480", Weight: &w7},
	}, cfg.Services[0].Discovery.Overrides)
	do(t, s, Change{Verb: Enable, Kind: KindBackend, Service: "s3", Backend: "10.1.0.2_7480"})
	cfg, err = config.Load(s.Path)
	require.NoError(t, err)
	require.Equal(t, config.StateEnabled, cfg.Services[0].Discovery.Overrides[0].State)

	refused(t, s, a, Change{Verb: Put, Kind: KindBackend, Service: "s3", Backend: "10.1.0.9_7480", Body: json.RawMessage(`{"address": "10.1.0.9:7480"}`)},
		http.StatusConflict, "services[s3].backends[10.1.0.9_7480]", "discovery kind srv, which adds and removes them")
	refused(t, s, a, Change{Verb: Delete, Kind: KindBackend, Service: "s3", Backend: "10.1.0.2_7480"},
		http.StatusConflict, "services[s3].backends[10.1.0.2_7480]", "adds and removes them")
	refused(t, s, a, Change{Verb: Patch, Kind: KindBackend, Service: "s3", Backend: "10.1.0.2_7480", Body: json.RawMessage(`{"priority": 2}`)},
		http.StatusUnprocessableEntity, "services[s3].backends[10.1.0.2_7480].priority", "comes from its source")
	refused(t, s, a, Change{Verb: Drain, Kind: KindBackend, Service: "s3", Backend: "rgw1"},
		http.StatusNotFound, "services[s3].backends[rgw1]", "named after its address")
	refused(t, s, a, Change{Verb: Patch, Kind: KindBackend, Service: "s3", Backend: "10.1.0.2_7480", Body: json.RawMessage(`{"weight": 300}`)},
		http.StatusUnprocessableEntity, "", "must be 0-256")
}
