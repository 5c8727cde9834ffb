package gorb

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
)

var testNow = time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC)

type client struct {
	t   *testing.T
	srv *httptest.Server
}

func serve(t *testing.T, f *fakeAPI) *client {
	t.Helper()
	h := New(f, Options{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return testNow }, Who: func(*http.Request) string { return "test" }})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &client{t: t, srv: srv}
}

// do is what `curl -X method -d body http://.../path` does.
func (c *client) do(method, path, body string) (int, string, http.Header) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.srv.URL+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// must is do, failing the test on another status than want.
func (c *client) must(want int, method, path, body string) string {
	c.t.Helper()
	st, b, _ := c.do(method, path, body)
	if st != want {
		c.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, st, want, b)
	}
	return b
}

func decodeInto[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
	return v
}

// bodyOf decodes a change's body for comparison.
func bodyOf(t *testing.T, ch mgmt.Change) map[string]any {
	t.Helper()
	return decodeInto[map[string]any](t, string(ch.Body))
}

func wantChanges(t *testing.T, got []mgmt.Change, want ...mgmt.Change) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d changes, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Verb != w.Verb || g.Kind != w.Kind || g.Service != w.Service || g.Backend != w.Backend || g.Pool != w.Pool || g.Who != "test" {
			t.Errorf("change %d: %s %s %s/%s pool %q by %q, want %s %s %s/%s pool %q", i, g.Verb, g.Kind, g.Service, g.Backend, g.Pool, g.Who, w.Verb, w.Kind, w.Service, w.Backend, w.Pool)
		}
		if (g.IfMatch == nil) != (w.IfMatch == nil) || g.IfMatch != nil && *g.IfMatch != *w.IfMatch {
			t.Errorf("change %d: If-Match %v, want %v", i, g.IfMatch, w.IfMatch)
		}
		if w.Body != nil && !reflect.DeepEqual(bodyOf(t, g), bodyOf(t, w)) {
			t.Errorf("change %d: body\n %s\nwant\n %s", i, g.Body, w.Body)
		}
	}
}

// The examples of the GORB seed's README (qk4l/gorb), in the order a
// client script uses them, with one value of each alternative the README
// lists.
const (
	seedService = `{
    "host": "10.0.0.1",
    "port": 12345,
    "protocol": "tcp",
    "method": "sh",
    "persistent": true,
    "flags": "sh-fallback",
    "fallback": "fb-zero-to-one"
}`
	seedBackend = `{
    "host": "10.1.0.1",
    "port": 12346,
    "method": "nat",
    "pulse": {
        "type": "http",
        "args": {
            "method": "GET",
            "scheme": "http",
            "timeout": 2,
            "port": 54321,
            "path": "/health",
            "expect": 200
        },
        "interval": "5s"
    },
    "weight": 100
}`
)

func TestReplayGORBSeedExamples(t *testing.T) {
	f := newFake()
	c := serve(t, f)

	// PUT /service/<service>: the service is created, without backends
	// (it is kept in ober.yaml, and closes connections until it has one).
	c.must(200, "PUT", "/service/web", seedService)
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Create, Kind: mgmt.KindService, Service: "web", Body: json.RawMessage(`{
		"name": "web", "mode": "tcp", "port": 12345, "vips": ["10.0.0.1"], "balance": "source", "fallback": "keep_last"}`)})
	info := decodeInto[ServiceInfo](t, c.must(200, "GET", "/service/web", ""))
	// ober keeps no flags: the fallback ones are what it always does.
	want := ServiceOptions{Host: "10.0.0.1", Port: 12345, Protocol: "tcp", Method: "sh", Persistent: true, Fallback: "fb-zero-to-one"}
	if info.Options != want || len(info.Backends) != 0 || info.Health != 0 {
		t.Errorf("GET of the service without backends: %+v", info)
	}
	if got := decodeInto[[]string](t, c.must(200, "GET", "/service", "")); !reflect.DeepEqual(got, []string{"web"}) {
		t.Errorf("GET /service: %v", got)
	}

	// PUT /service/<service>/<backend>: the first backend comes with the
	// pulse that becomes the service's health check, in one change.
	c.must(200, "PUT", "/service/web/b1", seedBackend)
	gen := uint64(1)
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Patch, Kind: mgmt.KindService, Service: "web", IfMatch: &gen, Body: json.RawMessage(`{
		"backends": [{"name": "b1", "address": "10.1.0.1:12346", "weight": 100}],
		"health": {"kind": "http", "interval": "5s", "timeout": "2s", "port": 54321, "method": "GET", "path": "/health", "status": "200"}}`)})

	// A second backend with the same pulse is a backend of the pool.
	c.must(200, "PUT", "/service/web/b2", strings.Replace(seedBackend, "10.1.0.1", "10.1.0.2", 1))
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Put, Kind: mgmt.KindBackend, Service: "web", Backend: "b2", Pool: config.DefaultPool,
		Body: json.RawMessage(`{"name": "b2", "address": "10.1.0.2:12346", "weight": 100}`)})

	// GET /service/<service>: the options, the backends, their mean
	// health from the daemon's status.
	f.stats["web"] = api.DaemonServiceStatus{Name: "web", Backends: []api.DaemonBackendStatus{
		{Name: "b1", Pool: "default", Up: true, Since: testNow.Add(-90 * time.Second), Health: 1},
		{Name: "b2", Pool: "default", Up: false, Health: 0.5},
	}}
	info = decodeInto[ServiceInfo](t, c.must(200, "GET", "/service/web", ""))
	if info.Options != want || !reflect.DeepEqual(info.Backends, []string{"b1", "b2"}) || info.Health != 0.75 || info.BackendsCount != 2 || info.Fallback != "fb-zero-to-one" {
		t.Errorf("GET /service/web: %+v", info)
	}

	// GET /service/<service>/<backend>: the backend, its pulse and
	// metrics as GORB reports them.
	bi := decodeInto[BackendInfo](t, c.must(200, "GET", "/service/web/b1", ""))
	w100 := int32(100)
	wantB := BackendInfo{
		Options: BackendOptions{Host: "10.1.0.1", Port: 12346, Weight: &w100, Method: "nat", Pulse: &PulseOptions{
			Type: "http", Interval: "5s",
			Args: map[string]any{"method": "GET", "scheme": "http", "timeout": 2.0, "port": 54321.0, "path": "/health", "expect": 200.0}}},
		Metrics: Metrics{Status: 0, Health: 1, Uptime: 90},
	}
	if !reflect.DeepEqual(bi, wantB) {
		t.Errorf("GET /service/web/b1:\n %+v %+v\nwant\n %+v %+v", bi.Options, bi.Metrics, wantB.Options, wantB.Metrics)
	}
	if bi := decodeInto[BackendInfo](t, c.must(200, "GET", "/service/web/b2", "")); bi.Metrics != (Metrics{Status: 1, Health: 0.5}) {
		t.Errorf("GET /service/web/b2 metrics: %+v", bi.Metrics)
	}

	// PATCH /service/<service>/<backend> changes the weight.
	_, _, hdr := c.do("PATCH", "/service/web/b1", `{"weight": 50}`)
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Patch, Kind: mgmt.KindBackend, Service: "web", Backend: "b1", Body: json.RawMessage(`{"weight": 50}`)})
	if hdr.Get("X-Ober-Applied") != "runtime" {
		t.Errorf("X-Ober-Applied: %q", hdr.Get("X-Ober-Applied"))
	}
	if bi := decodeInto[BackendInfo](t, c.must(200, "GET", "/service/web/b1", "")); *bi.Options.Weight != 50 {
		t.Errorf("weight after PATCH: %d", *bi.Options.Weight)
	}

	// DELETE /service/<service>/<backend>, then DELETE /service/<service>.
	c.must(200, "DELETE", "/service/web/b2", "")
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Delete, Kind: mgmt.KindBackend, Service: "web", Backend: "b2"})
	c.must(404, "GET", "/service/web/b2", "")
	c.must(200, "DELETE", "/service/web", "")
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Delete, Kind: mgmt.KindService, Service: "web"})
	c.must(404, "GET", "/service/web", "")
	if got := decodeInto[[]string](t, c.must(200, "GET", "/service", "")); len(got) != 0 {
		t.Errorf("GET /service after the delete: %v", got)
	}
}

// Without a host the Store picks the VIP; the first pulse is patched
// onto the service with its backend, under If-Match.
func TestServiceCreatedAtOnceWithoutHost(t *testing.T) {
	f := newFake()
	c := serve(t, f)
	c.must(200, "PUT", "/service/app", `{"port": 8080}`)
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Create, Kind: mgmt.KindService, Service: "app",
		Body: json.RawMessage(`{"name": "app", "mode": "tcp", "port": 8080, "balance": "weighted"}`)})

	c.must(200, "PUT", "/service/app/a", `{"host": "10.1.0.1", "port": 80, "pulse": {"type": "tcp", "interval": "1min"}}`)
	gen := uint64(1)
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Patch, Kind: mgmt.KindService, Service: "app", IfMatch: &gen,
		Body: json.RawMessage(`{"health": {"kind": "tcp", "interval": "1m"}, "backends": [{"name": "a", "address": "10.1.0.1:80", "weight": 100}]}`)})

	// No pulse: the service's check; the same pulse; GORB's weight 0 is
	// its default.
	c.must(200, "PUT", "/service/app/b", `{"host": "10.1.0.2", "port": 80, "weight": 0}`)
	c.must(200, "PUT", "/service/app/c", `{"host": "10.1.0.3", "port": 80, "pulse": {"type": "TCP", "interval": "60s"}}`)
	wantChanges(t, f.took(),
		mgmt.Change{Verb: mgmt.Put, Kind: mgmt.KindBackend, Service: "app", Backend: "b", Pool: "default", Body: json.RawMessage(`{"name": "b", "address": "10.1.0.2:80", "weight": 100}`)},
		mgmt.Change{Verb: mgmt.Put, Kind: mgmt.KindBackend, Service: "app", Backend: "c", Pool: "default", Body: json.RawMessage(`{"name": "c", "address": "10.1.0.3:80", "weight": 100}`)})

	// Another pulse would change every backend's check: refused.
	st, body, _ := c.do("PUT", "/service/app/d", `{"host": "10.1.0.4", "port": 80, "pulse": {"type": "http"}}`)
	if st != 422 || !strings.Contains(body, "tcp every 1m") || !strings.Contains(body, `"field": "pulse"`) {
		t.Errorf("conflicting pulse: %d %s", st, body)
	}
	if got := f.took(); len(got) != 0 {
		t.Errorf("a refused pulse made changes: %+v", got)
	}
	info := decodeInto[ServiceInfo](t, c.must(200, "GET", "/service/app", ""))
	if info.Options.Method != "wrr" || info.Options.Host != "" || info.Options.Persistent || info.Health != 1 {
		t.Errorf("GET /service/app (no status yet: ober assumes up): %+v", info)
	}
}

// GORB's protocol udp is a udp service forwarded by the kernel as IPVS
// NAT did (the client's address kept); sh-port, which ober refuses for
// TCP, is the kernel's hash_source_port; GET reports it all back.
func TestUDPService(t *testing.T) {
	f := newFake()
	c := serve(t, f)
	c.must(200, "PUT", "/service/dns", `{"host": "10.0.0.53", "port": 53, "protocol": "udp", "method": "sh", "flags": "sh-fallback|sh-port", "persistent": true}`)
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Create, Kind: mgmt.KindService, Service: "dns",
		Body: json.RawMessage(`{"name": "dns", "mode": "udp", "forward": "dnat", "port": 53, "balance": "source", "hash_source_port": true, "vips": ["10.0.0.53"]}`)})
	c.must(200, "PUT", "/service/dns/ns1", `{"host": "10.1.0.1", "port": 53, "method": "nat"}`)
	wantChanges(t, f.took(), mgmt.Change{Verb: mgmt.Put, Kind: mgmt.KindBackend, Service: "dns", Backend: "ns1", Pool: "default",
		Body: json.RawMessage(`{"name": "ns1", "address": "10.1.0.1:53", "weight": 100}`)})

	f.add("kdns", map[string]any{"name": "kdns", "mode": "udp", "port": 53, "balance": "source", "hash_source_port": true,
		"backends": []any{map[string]any{"name": "ns1", "address": "10.1.0.1:53"}}})
	info := decodeInto[ServiceInfo](t, c.must(200, "GET", "/service/kdns", ""))
	if info.Options.Protocol != "udp" || info.Options.Method != "sh" || info.Options.Flags != "sh-port" || !info.Options.Persistent {
		t.Errorf("GET /service/kdns: %+v", info.Options)
	}
	c.must(200, "PATCH", "/service/kdns/ns1", `{"weight": 5}`)
	if got := f.took(); len(got) != 1 || got[0].Backend != "ns1" {
		t.Errorf("a udp service's backend weight goes through GORB's PATCH: %+v", got)
	}
}

// Everything GORB takes that ober cannot do is refused before any
// change, with the status and the words a user needs.
func TestRefusals(t *testing.T) {
	f := newFake()
	f.add("web", map[string]any{"name": "web", "mode": "tcp", "port": 80,
		"backends": []any{map[string]any{"name": "b1", "address": "10.1.0.1:80"}}})
	f.add("s3", map[string]any{"name": "s3", "mode": "tls", "port": 443})
	c := serve(t, f)
	big := `{"host": "` + strings.Repeat("x", 2<<20) + `"}`
	for _, tc := range []struct {
		method, path, body string
		status             int
		words              []string
	}{
		{"PUT", "/service/u", `{"port": 53, "protocol": "udp", "method": "rr", "flags": "sh-port"}`, 422, []string{"flags sh-port", "method sh only", "roundrobin"}},
		{"PUT", "/service/u", `{"port": 53, "protocol": "udp", "flags": "sh-sideways"}`, 400, []string{"specified flag is unknown"}},
		{"PUT", "/service/u", `{"port": 53, "protocol": "tcp|udp"}`, 400, []string{"specified protocol is unknown"}},
		{"PUT", "/service/u", `{"port": 80, "method": "rr|wrr"}`, 400, []string{"unknown scheduler", "wlc"}},
		{"PUT", "/service/u", `{"port": 80, "method": "sh-port"}`, 400, []string{"give it in flags"}},
		{"PUT", "/service/u", `{"port": 80, "method": "sh", "flags": "sh-fallback|sh-port"}`, 422, []string{"flags sh-port", "never its port", "method sh"}},
		{"PUT", "/service/u", `{"port": 80, "flags": "sh-loud"}`, 400, []string{"specified flag is unknown"}},
		{"PUT", "/service/u", `{"port": 80, "method": "rr", "persistent": true}`, 422, []string{"persistent", "use method sh", "instead of rr"}},
		{"PUT", "/service/u", `{"port": 80, "fallback": "fb-never"}`, 400, []string{"fallback flag is unknown"}},
		{"PUT", "/service/u", `{"host": "lb.example.com", "port": 80}`, 422, []string{"not names"}},
		{"PUT", "/service/u", `{"host": "10.0.0.1"}`, 400, []string{"endpoint information is missing"}},
		{"PUT", "/service/u", `{"port": 80, "lb_method": "rr"}`, 400, []string{`unknown field \"lb_method\"`}},
		{"PUT", "/service/u", `{"port": 80,`, 400, []string{"malformed JSON"}},
		{"PUT", "/service/u", ``, 400, []string{"body is empty"}},
		{"PUT", "/service/u", big, 413, []string{"larger than"}},
		{"PUT", "/service/web", `{"port": 80}`, 409, []string{"exists already"}},
		{"PATCH", "/service/web", `{"port": 81}`, 405, nil},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "method": "dr"}`, 422, []string{"method dr", "use method nat"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "method": "tunnel"}`, 422, []string{"method tunnel", "use method nat"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "method": "ipip"}`, 422, []string{"use method nat"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "method": "nat|tunnel"}`, 400, []string{"forwarding method is unknown"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2"}`, 400, []string{"endpoint information is missing"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "pulse": {"type": "icmp"}}`, 400, []string{"pulse type is unknown"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "pulse": {"interval": "0s"}}`, 400, []string{"must be positive"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "pulse": {"interval": "soon"}}`, 400, []string{"not an interval"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "pulse": {"type": "http", "args": {"host": "10.9.9.9"}}}`, 422, []string{"pulse.args.host"}},
		{"PUT", "/service/web/b2", `{"host": "10.1.0.2", "port": 80, "pulse": {"type": "http", "args": {"expect": "OK"}}}`, 400, []string{"pulse.args.expect"}},
		{"PUT", "/service/web/b1", `{"host": "10.1.0.1", "port": 80}`, 409, []string{"already exists"}},
		{"PUT", "/service/none/b1", `{"host": "10.1.0.1", "port": 80}`, 404, []string{"no such service"}},
		{"PUT", "/service/s3/b1", `{"host": "10.1.0.1", "port": 80}`, 422, []string{"mode is tls", "mode tcp, udp and nat services only"}},
		{"DELETE", "/service/s3", ``, 422, []string{"mode tcp, udp and nat services only"}},
		{"PATCH", "/service/web/b1", `{"host": "10.1.0.1"}`, 400, []string{"weight: required"}},
		{"PATCH", "/service/web/nope", `{"weight": 1}`, 404, []string{"no such backend"}},
		{"DELETE", "/service/web/nope", ``, 404, []string{"no such backend"}},
		{"DELETE", "/service/nope", ``, 404, []string{"no such service"}},
		{"GET", "/service/nope/b1", ``, 404, []string{"no such service"}},
	} {
		st, body, _ := c.do(tc.method, tc.path, tc.body)
		if st != tc.status {
			t.Errorf("%s %s %.60s: status %d, want %d; %s", tc.method, tc.path, tc.body, st, tc.status, body)
			continue
		}
		for _, w := range tc.words {
			if !strings.Contains(body, w) {
				t.Errorf("%s %s %.60s: %s does not say %q", tc.method, tc.path, tc.body, body, w)
			}
		}
		if tc.status != 405 && !strings.HasPrefix(body, `{`) {
			t.Errorf("%s %s: not GORB's error JSON: %s", tc.method, tc.path, body)
		}
		for _, ch := range f.took() {
			// Only the Store may refuse what it is given (409 exists).
			if tc.status != 409 || ch.Verb != mgmt.Create {
				t.Errorf("%s %s %.60s: made change %s %s", tc.method, tc.path, tc.body, ch.Verb, ch.Kind)
			}
		}
	}
}

// The Store's refusals come back as they are; other failures as GORB's
// 500.
func TestStoreErrorsPassThrough(t *testing.T) {
	f := newFake()
	c := serve(t, f)
	f.failNext = mgmt.Errorf(http.StatusConflict, "services[app].vips[0]", "services[app].vips[0]: 10.0.0.9: port 80 already used by services[web]")
	st, body, _ := c.do("PUT", "/service/app", `{"host": "10.0.0.9", "port": 80}`)
	e := decodeInto[mgmt.Error](t, body)
	if st != 409 || e.Field != "services[app].vips[0]" || !strings.Contains(e.Message, "already used") {
		t.Errorf("Store's 409: %d %s", st, body)
	}
	f.failNext = io.ErrUnexpectedEOF
	if st, body, _ := c.do("PUT", "/service/app", `{"host": "10.0.0.9", "port": 80}`); st != 500 || !strings.Contains(body, "unexpected EOF") {
		t.Errorf("Store's failure: %d %s", st, body)
	}
	if got := decodeInto[[]string](t, c.must(200, "GET", "/service", "")); len(got) != 0 {
		t.Errorf("a refused service is listed: %v", got)
	}
}

// Every scheduler config's table has for GORB becomes its ober method;
// GET names each ober method by one of its GORB aliases.
func TestSchedulersFollowConfigsAliasTable(t *testing.T) {
	methods := map[string]bool{}
	for _, a := range config.BalanceAliases() {
		if a.From != config.AliasFromGORB {
			continue
		}
		if a.Flag {
			if !contains(acceptedFlags, a.Alias) && !contains(refusedFlags, a.Alias) {
				t.Errorf("flag %s: neither accepted nor refused", a.Alias)
			}
			continue
		}
		m, _, err := balance(strings.ToUpper(a.Alias))
		if err != nil || m != a.Method {
			t.Errorf("scheduler %s: %q, %v; want %s", a.Alias, m, err, a.Method)
		}
		methods[a.Method] = true
		if n := gorbName[a.Method]; n == a.Alias || n == "" {
			continue
		}
		found := false
		for _, b := range config.BalanceAliases() {
			found = found || b.From == config.AliasFromGORB && !b.Flag && b.Alias == gorbName[a.Method] && b.Method == a.Method
		}
		if !found {
			t.Errorf("GET names %s %q, which is not a GORB alias of it", a.Method, gorbName[a.Method])
		}
	}
	for m := range methods {
		if gorbName[m] == "" {
			t.Errorf("GET has no GORB name for %s", m)
		}
	}
	if m, _, err := balance(""); err != nil || m != config.BalanceWeighted {
		t.Errorf("GORB's default scheduler: %q, %v", m, err)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestIntervals(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"5s": 5 * time.Second, "10sec": 10 * time.Second, "2minutes": 2 * time.Minute, "1MIN": time.Minute,
		"1h": time.Hour, " 3hours ": 3 * time.Hour, "1500ms": 1500 * time.Millisecond, "+7seconds": 7 * time.Second,
	} {
		if got, err := parseInterval(in); err != nil || got != want {
			t.Errorf("parseInterval(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "s", "5", "-5s", "0m", "5 parsecs"} {
		if got, err := parseInterval(in); err == nil {
			t.Errorf("parseInterval(%q) = %v, want an error", in, got)
		}
	}
	for d, want := range map[time.Duration]string{5 * time.Second: "5s", time.Minute: "1m", 2 * time.Hour: "2h", 1500 * time.Millisecond: "1.5s"} {
		if got := formatInterval(d); got != want {
			t.Errorf("formatInterval(%v) = %q, want %q", d, got, want)
		}
	}
}

// GET of a service that ober.yaml wrote, not GORB: defaults filled, its
// first VIP as host, the backends of its own pool.
func TestGetServiceFromTheFile(t *testing.T) {
	f := newFake()
	f.add("db", map[string]any{"name": "db", "mode": "tcp", "port": 5432, "vips": []any{"192.0.2.10", "192.0.2.11"},
		"backends": []any{map[string]any{"address": "[2001:db8::1]:5432"}, map[string]any{"address": "10.0.0.2:5432", "weight": 7}}})
	c := serve(t, f)
	info := decodeInto[ServiceInfo](t, c.must(200, "GET", "/service/db", ""))
	if info.Options != (ServiceOptions{Host: "192.0.2.10", Port: 5432, Protocol: "tcp", Method: "wlc", Fallback: "fb-default"}) ||
		!reflect.DeepEqual(info.Backends, []string{"s0", "s1"}) {
		t.Errorf("GET /service/db: %+v", info)
	}
	bi := decodeInto[BackendInfo](t, c.must(200, "GET", "/service/db/s0", ""))
	if bi.Options.Host != "2001:db8::1" || bi.Options.Port != 5432 || *bi.Options.Weight != config.DefaultWeight ||
		bi.Options.Pulse.Type != "tcp" || bi.Options.Pulse.Interval != "2s" {
		t.Errorf("GET /service/db/s0: %+v %+v", bi.Options, bi.Options.Pulse)
	}
}

// Backends put at once on a service without any: one brings the
// service's check with it, the others join it; none is lost.
func TestConcurrentFirstBackends(t *testing.T) {
	f := newFake()
	c := serve(t, f)
	c.must(200, "PUT", "/service/web", `{"host": "10.0.0.1", "port": 80}`)
	f.took()
	const n = 10
	errs := make(chan string, n)
	for i := range n {
		go func() {
			st, body, _ := c.do("PUT", fmt.Sprintf("/service/web/b%d", i), fmt.Sprintf(`{"host": "10.1.0.%d", "port": 80, "pulse": {"type": "tcp"}}`, i+1))
			if st != 200 {
				errs <- fmt.Sprintf("b%d: %d %s", i, st, body)
				return
			}
			errs <- ""
		}()
	}
	for range n {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
	patches := 0
	for _, ch := range f.took() {
		if ch.Kind == mgmt.KindService {
			patches++
		}
	}
	info := decodeInto[ServiceInfo](t, c.must(200, "GET", "/service/web", ""))
	if patches != 1 || len(info.Backends) != n {
		t.Errorf("%d changes of the service, backends %v", patches, info.Backends)
	}
}
