package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/ober-ingress/ober/control/mgmt"
)

func TestListServices(t *testing.T) {
	f := newFake()
	w := serve(t, New(f, nil), req{method: "GET", path: "/api/v1/services"})
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q; body %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	var got struct {
		Services []struct {
			Name       string `json:"name"`
			Generation uint64 `json:"generation"`
		} `json:"services"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Services) != 2 || got.Services[0].Name != "web" || got.Services[1].Name != "db" || got.Services[0].Generation != 3 {
		t.Fatalf("services %+v, want web (generation 3) then db, in the API's order", got.Services)
	}

	// No services is an empty list, not null.
	f.services = nil
	w = serve(t, New(f, nil), req{method: "GET", path: "/api/v1/services"})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"services": []`) {
		t.Fatalf("status %d, body %s, want an empty list", w.Code, w.Body)
	}
}

func TestGetService(t *testing.T) {
	f := newFake()
	w := serve(t, New(f, nil), req{method: "GET", path: "/api/v1/services/web"})
	if w.Code != 200 {
		t.Fatalf("status %d; body %s", w.Code, w.Body)
	}
	if got := w.Header().Get("ETag"); got != `"3"` {
		t.Errorf("ETag %q, want \"3\" (the service's generation)", got)
	}
	assertJSON(t, w.Body.Bytes(), f.service)
	if !slices.Equal(f.reads, []string{"Service web"}) {
		t.Errorf("reads %q, want the service web", f.reads)
	}
}

func TestGetBackend(t *testing.T) {
	f := newFake()
	h := New(f, nil)
	w := serve(t, h, req{method: "GET", path: "/api/v1/services/web/backends/b1?pool=blue"})
	if w.Code != 200 || w.Header().Get("ETag") != `"9"` {
		t.Fatalf("status %d, ETag %q, want 200 and \"9\"; body %s", w.Code, w.Header().Get("ETag"), w.Body)
	}
	assertJSON(t, w.Body.Bytes(), f.backend)
	serve(t, h, req{method: "GET", path: "/api/v1/services/web/backends/b1"})
	if want := []string{"Backend web b1 blue", "Backend web b1 "}; !slices.Equal(f.reads, want) {
		t.Errorf("reads %q, want %q", f.reads, want)
	}

	// An object without a generation gets no ETag rather than a wrong one.
	f.backend = json.RawMessage(`{"name":"b1"}`)
	w = serve(t, h, req{method: "GET", path: "/api/v1/services/web/backends/b1"})
	if w.Code != 200 || w.Header().Get("ETag") != "" {
		t.Fatalf("status %d, ETag %q, want 200 and none", w.Code, w.Header().Get("ETag"))
	}
}

func TestReadErrorsPassThrough(t *testing.T) {
	for _, path := range []string{
		"/api/v1/services",
		"/api/v1/services/web",
		"/api/v1/services/web/backends/b1",
		"/api/v1/services/web/stats",
		"/api/v1/pools",
	} {
		f := newFake()
		f.err = mgmt.Errorf(http.StatusNotFound, "services[web]", "no service web")
		e := errorBody(t, serve(t, New(f, nil), req{method: "GET", path: path}), 404)
		if e.Message != "no service web" || e.Field != "services[web]" {
			t.Errorf("GET %s: error %+v, want the API's message and field", path, e)
		}
	}
}

func TestStatsAndPools(t *testing.T) {
	f := newFake()
	h := New(f, nil)
	w := serve(t, h, req{method: "GET", path: "/api/v1/services/web/stats"})
	if w.Code != 200 {
		t.Fatalf("stats: status %d; body %s", w.Code, w.Body)
	}
	assertJSON(t, w.Body.Bytes(), f.stats)

	w = serve(t, h, req{method: "GET", path: "/api/v1/pools"})
	if w.Code != 200 {
		t.Fatalf("pools: status %d; body %s", w.Code, w.Body)
	}
	assertJSON(t, w.Body.Bytes(), []byte(`{"pools":`+string(f.pools)+`}`))
	if want := []string{"ServiceStats web", "Pools"}; !slices.Equal(f.reads, want) {
		t.Errorf("reads %q, want %q", f.reads, want)
	}

	f.pools = json.RawMessage("null")
	w = serve(t, h, req{method: "GET", path: "/api/v1/pools"})
	assertJSON(t, w.Body.Bytes(), []byte(`{"pools":[]}`))
}

func TestWrites(t *testing.T) {
	const svc = `{"name":"web","port":443}`
	const be = `{"address":"10.0.0.1:80","weight":50}`
	for _, tc := range []struct {
		method, path, body, contentType string
		want                            mgmt.Change
		status                          int
	}{
		{"POST", "/api/v1/services", svc, "application/json",
			mgmt.Change{Verb: mgmt.Create, Kind: mgmt.KindService, Body: json.RawMessage(svc)}, 201},
		{"PUT", "/api/v1/services/web", svc, "application/json",
			mgmt.Change{Verb: mgmt.Put, Kind: mgmt.KindService, Service: "web", Body: json.RawMessage(svc)}, 200},
		{"PATCH", "/api/v1/services/web", `{"balance":null}`, "application/merge-patch+json",
			mgmt.Change{Verb: mgmt.Patch, Kind: mgmt.KindService, Service: "web", Body: json.RawMessage(`{"balance":null}`)}, 200},
		{"DELETE", "/api/v1/services/web", "", "",
			mgmt.Change{Verb: mgmt.Delete, Kind: mgmt.KindService, Service: "web"}, 200},
		{"PUT", "/api/v1/services/web/backends/b1", be, "application/json",
			mgmt.Change{Verb: mgmt.Put, Kind: mgmt.KindBackend, Service: "web", Backend: "b1", Body: json.RawMessage(be)}, 200},
		{"PUT", "/api/v1/services/web/backends/b1?pool=blue", be, "",
			mgmt.Change{Verb: mgmt.Put, Kind: mgmt.KindBackend, Service: "web", Backend: "b1", Pool: "blue", Body: json.RawMessage(be)}, 200},
		{"PATCH", "/api/v1/services/web/backends/b1", `{"weight":5}`, "application/merge-patch+json",
			mgmt.Change{Verb: mgmt.Patch, Kind: mgmt.KindBackend, Service: "web", Backend: "b1", Body: json.RawMessage(`{"weight":5}`)}, 200},
		{"DELETE", "/api/v1/services/web/backends/b1?pool=default", "", "",
			mgmt.Change{Verb: mgmt.Delete, Kind: mgmt.KindBackend, Service: "web", Backend: "b1", Pool: "default"}, 200},
		{"POST", "/api/v1/services/web/backends/b1/drain", "", "",
			mgmt.Change{Verb: mgmt.Drain, Kind: mgmt.KindBackend, Service: "web", Backend: "b1"}, 200},
		{"POST", "/api/v1/services/web/backends/b1/enable?pool=blue", "", "",
			mgmt.Change{Verb: mgmt.Enable, Kind: mgmt.KindBackend, Service: "web", Backend: "b1", Pool: "blue"}, 200},
		{"POST", "/api/v1/services/web/backends/b1/disable", "", "",
			mgmt.Change{Verb: mgmt.Disable, Kind: mgmt.KindBackend, Service: "web", Backend: "b1"}, 200},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			f := newFake()
			hdr := map[string]string{}
			if tc.contentType != "" {
				hdr["Content-Type"] = tc.contentType
			}
			w := serve(t, New(f, nil), req{method: tc.method, path: tc.path, body: body(tc.body), header: hdr, who: "token ci"})
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			got := f.lastChange(t)
			tc.want.Who = "token ci"
			if got.Body == nil && tc.want.Body == nil {
				got.Body, tc.want.Body = json.RawMessage{}, json.RawMessage{}
			}
			if got.Verb != tc.want.Verb || got.Kind != tc.want.Kind || got.Service != tc.want.Service ||
				got.Backend != tc.want.Backend || got.Pool != tc.want.Pool || got.Who != tc.want.Who ||
				!bytes.Equal(got.Body, tc.want.Body) || got.IfMatch != nil {
				t.Fatalf("change %+v (body %s), want %+v (body %s)", got, got.Body, tc.want, tc.want.Body)
			}
			var res struct {
				Object           json.RawMessage `json:"object"`
				Generation       *uint64         `json:"generation"`
				ConfigGeneration *uint64         `json:"config_generation"`
				Applied          string          `json:"applied"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			if res.Generation == nil || *res.Generation != 4 || res.ConfigGeneration == nil || *res.ConfigGeneration != 12 || res.Applied != "reload" {
				t.Fatalf("body %s, want generation 4, config_generation 12, applied reload", w.Body)
			}
			assertJSON(t, res.Object, f.result.Object)
			if got := w.Header().Get("ETag"); got != `"4"` {
				t.Errorf("ETag %q, want \"4\"", got)
			}
			if loc := w.Header().Get("Location"); (tc.status == 201) != (loc == "/api/v1/services/web") {
				t.Errorf("Location %q", loc)
			}
		})
	}
}

func TestDeleteAnswer(t *testing.T) {
	f := newFake()
	f.result = mgmt.Result{Generation: 5, ConfigGeneration: 13, Applied: mgmt.AppliedReload, Diff: "-  - name: b1"}
	w := serve(t, New(f, nil), req{method: "DELETE", path: "/api/v1/services/web/backends/b1"})
	if w.Code != 200 || w.Header().Get("ETag") != "" {
		t.Fatalf("status %d, ETag %q, want 200 and no ETag (the object is gone)", w.Code, w.Header().Get("ETag"))
	}
	assertJSON(t, w.Body.Bytes(), []byte(`{"generation":5,"config_generation":13,"applied":"reload"}`))
}

func TestCreateLocationEscapesName(t *testing.T) {
	f := newFake()
	f.result.Object = json.RawMessage(`{"name":"tcp-80 x","generation":1}`)
	w := serve(t, New(f, nil), req{method: "POST", path: "/api/v1/services", body: body(`{"port":80,"mode":"tcp"}`)})
	if w.Code != 201 || w.Header().Get("Location") != "/api/v1/services/tcp-80%20x" {
		t.Fatalf("status %d, Location %q", w.Code, w.Header().Get("Location"))
	}
}

// SLB's flow: a service created without vips gets an address from a
// pool, and the answer gives it.
func TestCreateAllocatedVIPs(t *testing.T) {
	create := func() req {
		return req{method: "POST", path: "/api/v1/services", body: body(`{"name":"web","port":443,"mode":"tcp"}`)}
	}
	f := newFake()
	f.pools = json.RawMessage(`[{"name":"lan","allocations":{"db":"10.20.0.1"}},{"name":"wan","allocations":{"web":"192.0.2.7"}}]`)
	w := serve(t, New(f, nil), create())
	var ans struct {
		Object        json.RawMessage `json:"object"`
		AllocatedVIPs []string        `json:"allocated_vips"`
		Generation    uint64          `json:"generation"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil || w.Code != 201 {
		t.Fatalf("status %d, body %s (%v)", w.Code, w.Body, err)
	}
	if !slices.Equal(ans.AllocatedVIPs, []string{"192.0.2.7"}) || ans.Generation != 4 {
		t.Fatalf("answer %s, want allocated_vips [192.0.2.7] and generation 4", w.Body)
	}
	assertJSON(t, ans.Object, f.result.Object)

	// A service with its own vips allocates nothing: the pools are not read.
	f = newFake()
	f.result.Object = json.RawMessage(`{"name":"web","port":443,"vips":["10.0.0.1"],"generation":1}`)
	w = serve(t, New(f, nil), create())
	if w.Code != 201 || strings.Contains(w.Body.String(), "allocated_vips") || len(f.reads) != 0 {
		t.Fatalf("status %d, body %s, reads %q", w.Code, w.Body, f.reads)
	}

	// The change is made: a failure to read the pools still answers 201.
	f = newFake()
	pools := &failingPools{fakeAPI: f}
	w = serve(t, New(pools, nil), create())
	if w.Code != 201 || strings.Contains(w.Body.String(), "allocated_vips") {
		t.Fatalf("status %d, body %s", w.Code, w.Body)
	}
	f.lastChange(t)
}

type failingPools struct{ *fakeAPI }

func (failingPools) Pools(context.Context) (json.RawMessage, error) {
	return nil, errors.New("no daemon status to read")
}

func TestIfMatch(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   *uint64
		status int
	}{
		{nil, nil, 200},
		{[]string{`"7"`}, ptr(7), 200},
		{[]string{`7`}, ptr(7), 200},
		{[]string{` "0" `}, ptr(0), 200},
		{[]string{`*`}, nil, 200},
		{[]string{`W/"7"`}, nil, 400},
		{[]string{`"7", "8"`}, nil, 400},
		{[]string{`"7"`, `"8"`}, nil, 400},
		{[]string{`"seven"`}, nil, 400},
		{[]string{`-1`}, nil, 400},
		{[]string{`"7`}, nil, 400},
	} {
		f := newFake()
		r := req{method: "PATCH", path: "/api/v1/services/web/backends/b1", body: body(`{"weight":1}`),
			header: map[string]string{"Content-Type": "application/merge-patch+json"}}
		rq := newRequest(r)
		for _, v := range tc.header {
			rq.Header.Add("If-Match", v)
		}
		w := record(New(f, nil), rq)
		if w.Code != tc.status {
			t.Errorf("If-Match %q: status %d, want %d; body %s", tc.header, w.Code, tc.status, w.Body)
			continue
		}
		if tc.status != 200 {
			if e := errorBody(t, w, tc.status); e.Field != "If-Match" || !strings.Contains(e.Message, "If-Match") {
				t.Errorf("If-Match %q: error %+v, want one naming If-Match", tc.header, e)
			}
			f.noChange(t)
			continue
		}
		got := f.lastChange(t).IfMatch
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("If-Match %q: Change.IfMatch %v, want %v", tc.header, deref(got), deref(tc.want))
		}
	}
}

func TestIfMatchOnEveryWrite(t *testing.T) {
	for _, q := range []req{
		{method: "PUT", path: "/api/v1/services/web", body: body(`{}`)},
		{method: "PATCH", path: "/api/v1/services/web", body: body(`{}`), header: map[string]string{"Content-Type": "application/json"}},
		{method: "DELETE", path: "/api/v1/services/web"},
		{method: "PUT", path: "/api/v1/services/web/backends/b1", body: body(`{}`)},
		{method: "DELETE", path: "/api/v1/services/web/backends/b1"},
		{method: "POST", path: "/api/v1/services/web/backends/b1/drain"},
		{method: "POST", path: "/api/v1/services/web/backends/b1/enable"},
		{method: "POST", path: "/api/v1/services/web/backends/b1/disable"},
	} {
		f := newFake()
		rq := newRequest(q)
		rq.Header.Set("If-Match", `"41"`)
		if w := record(New(f, nil), rq); w.Code != 200 {
			t.Fatalf("%s %s: status %d; body %s", q.method, q.path, w.Code, w.Body)
		}
		if got := f.lastChange(t).IfMatch; got == nil || *got != 41 {
			t.Errorf("%s %s: IfMatch %v, want 41", q.method, q.path, deref(got))
		}
	}
}

func TestWriteErrorsPassThrough(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		field  string
		msg    string
	}{
		{mgmt.Errorf(412, "services[web].backends[b1]", "generation is 8, not 7"), 412, "services[web].backends[b1]", "generation is 8, not 7"},
		{mgmt.Errorf(422, "services[web].backends[b1].weight", "300 must be 0-256"), 422, "services[web].backends[b1].weight", "300 must be 0-256"},
		{mgmt.Errorf(409, "services[web].vips[0]", "10.0.0.1:443 is in use by service api"), 409, "services[web].vips[0]", "10.0.0.1:443 is in use by service api"},
		{mgmt.Errorf(404, "", "no backend b9 in service web"), 404, "", "no backend b9 in service web"},
		// Wrapped, the Store's error keeps its status and its own words.
		{errors.Join(mgmt.Errorf(409, "", "pool lan is exhausted")), 409, "", "pool lan is exhausted"},
		{errors.New("reloading: haproxy exited 1"), 500, "", "reloading: haproxy exited 1"},
	} {
		f := newFake()
		f.err = tc.err
		rq := newRequest(req{method: "PATCH", path: "/api/v1/services/web/backends/b1", body: body(`{"weight":300}`),
			header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"7"`}})
		w := record(New(f, nil), rq)
		e := errorBody(t, w, tc.status)
		if e.Field != tc.field || e.Message != tc.msg {
			t.Errorf("error %+v, want field %q message %q", e, tc.field, tc.msg)
		}
		if w.Header().Get("ETag") != "" {
			t.Errorf("status %d carries ETag %q", tc.status, w.Header().Get("ETag"))
		}
	}
}

func TestPatchMediaTypes(t *testing.T) {
	for _, tc := range []struct {
		contentType string
		status      int
	}{
		{"application/merge-patch+json", 200},
		{"application/merge-patch+json; charset=utf-8", 200},
		{"application/json", 200},
		{"Application/JSON; charset=UTF-8", 200},
		{"", 415},
		{"application/json-patch+json", 415},
		{"text/plain", 415},
		{"application/x-www-form-urlencoded", 415},
		{"not a media type;;", 415},
	} {
		for _, path := range []string{"/api/v1/services/web", "/api/v1/services/web/backends/b1"} {
			f := newFake()
			hdr := map[string]string{}
			if tc.contentType != "" {
				hdr["Content-Type"] = tc.contentType
			}
			w := serve(t, New(f, nil), req{method: "PATCH", path: path, body: body(`{"weight":1}`), header: hdr})
			if w.Code != tc.status {
				t.Errorf("PATCH %s as %q: status %d, want %d; body %s", path, tc.contentType, w.Code, tc.status, w.Body)
				continue
			}
			if tc.status == 415 {
				e := errorBody(t, w, 415)
				if !strings.Contains(e.Message, "application/merge-patch+json") {
					t.Errorf("PATCH as %q: message %q does not say what to send", tc.contentType, e.Message)
				}
				if ap := w.Header().Get("Accept-Patch"); !strings.Contains(ap, "application/merge-patch+json") {
					t.Errorf("PATCH as %q: Accept-Patch %q", tc.contentType, ap)
				}
				f.noChange(t)
			}
		}
	}
}

func TestPutMediaTypes(t *testing.T) {
	for _, tc := range []struct {
		contentType string
		status      int
	}{
		{"", 200},
		{"application/json", 200},
		{"application/json; charset=utf-8", 200},
		{"application/merge-patch+json", 415},
		{"application/x-www-form-urlencoded", 415},
		{"application/yaml", 415},
	} {
		for _, q := range []req{
			{method: "PUT", path: "/api/v1/services/web"},
			{method: "POST", path: "/api/v1/services"},
			{method: "PUT", path: "/api/v1/services/web/backends/b1"},
		} {
			f := newFake()
			q.body = body(`{"port":443}`)
			q.header = map[string]string{}
			if tc.contentType != "" {
				q.header["Content-Type"] = tc.contentType
			}
			w := serve(t, New(f, nil), q)
			ok := w.Code == 200 || w.Code == 201
			if ok != (tc.status == 200) {
				t.Errorf("%s %s as %q: status %d, want %d; body %s", q.method, q.path, tc.contentType, w.Code, tc.status, w.Body)
				continue
			}
			if !ok {
				if e := errorBody(t, w, 415); !strings.Contains(e.Message, "application/json") {
					t.Errorf("message %q does not say what to send", e.Message)
				}
				f.noChange(t)
			}
		}
	}
}

func TestBodyLimit(t *testing.T) {
	// The largest body taken: a JSON object of exactly MaxBodyBytes.
	pad := MaxBodyBytes - len(`{"x":""}`)
	exact := `{"x":"` + strings.Repeat("a", pad) + `"}`
	f := newFake()
	w := serve(t, New(f, nil), req{method: "PUT", path: "/api/v1/services/web", body: body(exact)})
	if w.Code != 200 {
		t.Fatalf("a body of %d bytes: status %d; body %.300s", len(exact), w.Code, w.Body)
	}
	if got := len(f.lastChange(t).Body); got != MaxBodyBytes {
		t.Fatalf("the API got a body of %d bytes, want %d", got, MaxBodyBytes)
	}

	over := `{"x":"` + strings.Repeat("a", pad+1) + `"}`
	tenMiB := `{"x":"` + strings.Repeat("a", 10<<20) + `"}`
	for _, tc := range []struct {
		name          string
		body          string
		contentLength bool
	}{
		{"1 MiB + 1 with Content-Length", over, true},
		{"1 MiB + 1 without Content-Length", over, false},
		{"10 MiB with Content-Length", tenMiB, true},
		{"10 MiB without Content-Length", tenMiB, false},
	} {
		for _, q := range []req{
			{method: "PUT", path: "/api/v1/services/web"},
			{method: "POST", path: "/api/v1/services"},
			{method: "PATCH", path: "/api/v1/services/web/backends/b1", header: map[string]string{"Content-Type": "application/merge-patch+json"}},
		} {
			f := newFake()
			q.body = body(tc.body)
			if !tc.contentLength {
				// Not a strings.Reader: the request's length is unknown.
				q.body = io.MultiReader(q.body)
			}
			e := errorBody(t, serve(t, New(f, nil), q), 413)
			if !strings.Contains(e.Message, "1 MiB") {
				t.Errorf("%s, %s %s: message %q does not give the limit", tc.name, q.method, q.path, e.Message)
			}
			f.noChange(t)
		}
	}
}

func TestMalformedBodies(t *testing.T) {
	for _, tc := range []struct {
		body, want string
	}{
		{``, "empty"},
		{"  \n", "empty"},
		{`{"port":`, "not valid JSON"},
		{`{"port":443,}`, "not valid JSON"},
		{`{"port":443} {}`, "not valid JSON"},
		{`{'port':443}`, "not valid JSON"},
		{`[{"port":443}]`, "must be a JSON object, not an array"},
		{`"web"`, "must be a JSON object, not a string"},
		{`443`, "must be a JSON object, not a number"},
		{`null`, "must be a JSON object, not null"},
	} {
		for _, q := range []req{
			{method: "PUT", path: "/api/v1/services/web"},
			{method: "POST", path: "/api/v1/services"},
			{method: "PUT", path: "/api/v1/services/web/backends/b1"},
			{method: "PATCH", path: "/api/v1/services/web", header: map[string]string{"Content-Type": "application/merge-patch+json"}},
			{method: "PATCH", path: "/api/v1/services/web/backends/b1", header: map[string]string{"Content-Type": "application/json"}},
		} {
			f := newFake()
			q.body = body(tc.body)
			e := errorBody(t, serve(t, New(f, nil), q), 400)
			if !strings.Contains(e.Message, tc.want) {
				t.Errorf("%s %s with %q: message %q, want it to say %q", q.method, q.path, tc.body, e.Message, tc.want)
			}
			f.noChange(t)
		}
	}
}

func TestUnknownRoutes(t *testing.T) {
	for _, path := range []string{
		"/",
		"/api/v1",
		"/api/v1/",
		"/api/v2/services",
		"/api/v1/services/",
		"/api/v1/service",
		"/api/v1/services/web/backends",
		"/api/v1/services/web/backends/",
		"/api/v1/services/web/backends/b1/weight",
		"/api/v1/services/web/backends/b1/drain/now",
	} {
		f := newFake()
		e := errorBody(t, serve(t, New(f, nil), req{method: "GET", path: path}), 404)
		if !strings.Contains(e.Message, path) {
			t.Errorf("GET %s: message %q does not name the path", path, e.Message)
		}
		if len(f.reads) != 0 {
			t.Errorf("GET %s: reads %q", path, f.reads)
		}
		f.noChange(t)
	}
}

func TestWrongMethods(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		allow        []string
	}{
		{"DELETE", "/api/v1/services", []string{"GET", "HEAD", "POST"}},
		{"PUT", "/api/v1/services", []string{"GET", "HEAD", "POST"}},
		{"POST", "/api/v1/services/web", []string{"DELETE", "GET", "HEAD", "PATCH", "PUT"}},
		{"POST", "/api/v1/services/web/backends/b1", []string{"DELETE", "GET", "HEAD", "PATCH", "PUT"}},
		{"GET", "/api/v1/services/web/backends/b1/drain", []string{"POST"}},
		{"PUT", "/api/v1/services/web/backends/b1/enable", []string{"POST"}},
		{"DELETE", "/api/v1/services/web/stats", []string{"GET", "HEAD"}},
		{"POST", "/api/v1/pools", []string{"GET", "HEAD"}},
		{"PUT", "/api/v1/openapi.json", []string{"GET", "HEAD"}},
	} {
		f := newFake()
		w := serve(t, New(f, nil), req{method: tc.method, path: tc.path, body: body(`{}`)})
		e := errorBody(t, w, 405)
		var allow []string
		for a := range strings.SplitSeq(w.Header().Get("Allow"), ",") {
			allow = append(allow, strings.TrimSpace(a))
		}
		slices.Sort(allow)
		if !slices.Equal(allow, tc.allow) {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, w.Header().Get("Allow"), tc.allow)
		}
		if !strings.Contains(e.Message, tc.method) || !strings.Contains(e.Message, tc.path) {
			t.Errorf("%s %s: message %q does not name the method and path", tc.method, tc.path, e.Message)
		}
		f.noChange(t)
	}
}

// Names reach the API as the client wrote them, decoded, whatever they
// hold: refusing them is the Store's, with the validator's words.
func TestNamesAreDecoded(t *testing.T) {
	f := newFake()
	serve(t, New(f, nil), req{method: "DELETE", path: "/api/v1/services/a%2Fb/backends/..%2Fx"})
	if ch := f.lastChange(t); ch.Service != "a/b" || ch.Backend != "../x" {
		t.Fatalf("service %q backend %q, want a/b and ../x", ch.Service, ch.Backend)
	}
}

// A path the mux would redirect to its clean form is refused: a
// redirect of a write is a write somewhere else.
func TestUncleanPaths(t *testing.T) {
	for _, q := range []req{
		{method: "GET", path: "/api/v1/services/.."},
		{method: "GET", path: "/api/v1/services/."},
		{method: "PUT", path: "/api/v1/services/web/../api", body: body(`{}`)},
		{method: "DELETE", path: "/api/v1/services/web/backends/./b1"},
		{method: "DELETE", path: "/api/v1//services/web"},
		{method: "POST", path: "/api/v1/services/web/backends/b1/../b2/drain"},
	} {
		f := newFake()
		w := serve(t, New(f, nil), q)
		e := errorBody(t, w, 400)
		if !strings.Contains(e.Message, q.path) || !strings.Contains(e.Message, "not usable") {
			t.Errorf("%s %s: message %q", q.method, q.path, e.Message)
		}
		if w.Header().Get("Location") != "" || len(f.reads) != 0 {
			t.Errorf("%s %s: Location %q, reads %q", q.method, q.path, w.Header().Get("Location"), f.reads)
		}
		f.noChange(t)
	}
}

func TestOpenAPIServed(t *testing.T) {
	w := serve(t, New(newFake(), nil), req{method: "GET", path: "/api/v1/openapi.json"})
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", w.Code, w.Header().Get("Content-Type"))
	}
	if !bytes.Equal(w.Body.Bytes(), openapiDoc) || !json.Valid(w.Body.Bytes()) {
		t.Fatal("the served document is not the committed openapi.json")
	}
	// OpenAPI hands out a copy: changing it does not change what is served.
	doc := OpenAPI()
	doc[0] = 'x'
	if w := serve(t, New(newFake(), nil), req{method: "GET", path: "/api/v1/openapi.json"}); !json.Valid(w.Body.Bytes()) {
		t.Fatal("OpenAPI's copy is the served document")
	}
}

func TestWho(t *testing.T) {
	if got := WhoFrom(context.Background()); got != "" {
		t.Errorf("WhoFrom of a bare context: %q", got)
	}
	if got := WhoFrom(WithWho(context.Background(), "uid 0")); got != "uid 0" {
		t.Errorf("WhoFrom(WithWho(uid 0)) = %q", got)
	}
	// A request without one makes a change by nobody in particular; the
	// access layer always sets it.
	f := newFake()
	serve(t, New(f, nil), req{method: "POST", path: "/api/v1/services/web/backends/b1/drain"})
	if who := f.lastChange(t).Who; who != "" {
		t.Errorf("Who %q", who)
	}
}

func newRequest(q req) *http.Request {
	r, _ := http.NewRequest(q.method, "http://ober"+q.path, q.body)
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	if q.who != "" {
		r = r.WithContext(WithWho(r.Context(), q.who))
	}
	return r
}

func record(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func ptr(v uint64) *uint64 { return &v }

func deref(p *uint64) any {
	if p == nil {
		return nil
	}
	return *p
}

// assertJSON fails unless got and want are the same JSON value.
func assertJSON(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("got %s, want %s", gb, wb)
	}
}

// A VIP move's body is checked here: the target is required, and a body
// with another field is refused before the daemon sees it.
func TestMoveVIPBody(t *testing.T) {
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"to":"10.0.0.2"}`, 200, `"done":true`},
		{`{}`, 422, `"field": "to"`},
		{`{"to":""}`, 422, `"field": "to"`},
		{`{"to":"owner","now":true}`, 400, `unknown field \"now\"`},
		{`[1]`, 400, `must be a JSON object`},
	} {
		f := newFake()
		w := serve(t, New(f, nil), req{method: "POST", path: "/api/v1/vips/10.0.0.10/move", body: body(c.body),
			header: map[string]string{"Content-Type": "application/json"}})
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.want) {
			t.Errorf("%s: %d %s, want %d with %s", c.body, w.Code, w.Body, c.code, c.want)
		}
		switch {
		case c.code == 200 && !slices.Equal(f.reads, []string{"MoveVIP 10.0.0.10 10.0.0.2"}):
			t.Errorf("%s: the daemon got %q", c.body, f.reads)
		case c.code != 200 && len(f.reads) > 0:
			t.Errorf("%s: a refused body reached the daemon: %q", c.body, f.reads)
		}
	}
}
