package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ober-ingress/ober/control/mgmt"
)

// fakeAPI answers what its fields say and records what it was asked.
type fakeAPI struct {
	mu sync.Mutex
	// err, when set, is every call's answer.
	err error
	// The answers of the reads and of Do.
	services         []json.RawMessage
	service, backend json.RawMessage
	stats, pools     json.RawMessage
	result           mgmt.Result
	// changes are the Changes Do got; reads the reads, as
	// "Backend web b1 blue".
	changes []mgmt.Change
	reads   []string
}

func newFake() *fakeAPI {
	return &fakeAPI{
		services: []json.RawMessage{json.RawMessage(`{"name":"web","port":443,"generation":3}`), json.RawMessage(`{"name":"db","port":5432,"generation":1}`)},
		service:  json.RawMessage(`{"name":"web","port":443,"generation":3}`),
		backend:  json.RawMessage(`{"name":"b1","address":"10.0.0.1:80","weight":100,"generation":9}`),
		stats:    json.RawMessage(`{"name":"web","up":true,"backends":[]}`),
		pools:    json.RawMessage(`[{"name":"lan","size":14,"used":1,"reserved":0,"free":13}]`),
		result: mgmt.Result{
			Object:           json.RawMessage(`{"name":"web","port":443,"generation":4}`),
			Generation:       4,
			ConfigGeneration: 12,
			Applied:          mgmt.AppliedReload,
		},
	}
}

func (f *fakeAPI) read(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads = append(f.reads, s)
	return f.err
}

func (f *fakeAPI) Services(context.Context) ([]json.RawMessage, error) {
	if err := f.read("Services"); err != nil {
		return nil, err
	}
	return f.services, nil
}

func (f *fakeAPI) Service(_ context.Context, name string) (json.RawMessage, error) {
	if err := f.read("Service " + name); err != nil {
		return nil, err
	}
	return f.service, nil
}

func (f *fakeAPI) Backend(_ context.Context, service, backend, pool string) (json.RawMessage, error) {
	if err := f.read("Backend " + service + " " + backend + " " + pool); err != nil {
		return nil, err
	}
	return f.backend, nil
}

func (f *fakeAPI) ServiceStats(_ context.Context, name string) (json.RawMessage, error) {
	if err := f.read("ServiceStats " + name); err != nil {
		return nil, err
	}
	return f.stats, nil
}

func (f *fakeAPI) Pools(context.Context) (json.RawMessage, error) {
	if err := f.read("Pools"); err != nil {
		return nil, err
	}
	return f.pools, nil
}

func (f *fakeAPI) Do(_ context.Context, ch mgmt.Change) (mgmt.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes = append(f.changes, ch)
	if f.err != nil {
		return mgmt.Result{}, f.err
	}
	return f.result, nil
}

// lastChange is the one Change Do got; the test fails unless there was
// exactly one.
func (f *fakeAPI) lastChange(t *testing.T) mgmt.Change {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.changes) != 1 {
		t.Fatalf("the API got %d changes, want 1: %+v", len(f.changes), f.changes)
	}
	return f.changes[0]
}

func (f *fakeAPI) noChange(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.changes) != 0 {
		t.Fatalf("the API got changes, want none: %+v", f.changes)
	}
}

// req is one request to the handler.
type req struct {
	method, path string
	body         io.Reader
	header       map[string]string
	who          string
}

func serve(t *testing.T, h http.Handler, q req) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(q.method, q.path, q.body)
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	if q.who != "" {
		r = r.WithContext(WithWho(r.Context(), q.who))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func body(s string) io.Reader { return strings.NewReader(s) }

// errorBody decodes an error answer, checking its status and that it is
// the API's JSON error.
func errorBody(t *testing.T, w *httptest.ResponseRecorder, status int) mgmt.Error {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json; body %s", ct, w.Body)
	}
	var e struct {
		Error *string `json:"error"`
		Field string  `json:"field"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == nil || *e.Error == "" {
		t.Fatalf("body %s is not a JSON error (%v)", w.Body, err)
	}
	return mgmt.Error{Status: w.Code, Message: *e.Error, Field: e.Field}
}

func (f *fakeAPI) MoveVIP(_ context.Context, vip, to string) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads = append(f.reads, "MoveVIP "+vip+" "+to)
	if f.err != nil {
		return nil, f.err
	}
	return json.RawMessage(`{"vip":"` + vip + `","to":"` + to + `","done":true,"message":"moved"}`), nil
}
