// Package clienttest is a small in-memory stand-in for ober's management
// API on a unix socket, for the tests of the client and of the CLI. It
// keeps services and backends as JSON objects, with generations, merge
// patches, If-Match, pools and the API's error shape; it checks only
// what those tests need (a weight's range, names, existence), not the
// configuration's rules, which the real API shares with ober.yaml.
package clienttest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/client"
)

// Server is the fake API. Its state is guarded by mu: the tests' clients
// run concurrently with their assertions.
type Server struct {
	// Socket is the unix socket it serves on.
	Socket string

	mu        sync.Mutex
	services  []*object
	configGen uint64
	nextVIP   int
	requests  []string
}

// object is a service or a backend: its JSON form, without the generation,
// which is kept apart.
type object struct {
	body map[string]any
	gen  uint64
	// backends of a service, in order, by pool ("default" first).
	backends []*backend
}

type backend struct {
	pool string
	object
}

// New starts a fake API on a socket of its own, stopped at the test's
// end.
func New(t testing.TB) *Server {
	t.Helper()
	// A short directory: a unix socket's path is limited to 107 bytes.
	dir, err := os.MkdirTemp("", "ober-api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{Socket: filepath.Join(dir, "api.sock")}
	l, err := net.Listen("unix", s.Socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.handler())
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return s
}

// Requests are the requests served so far, as "METHOD PATH?QUERY
// [If-Match: N]".
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// ServiceJSON is a service's JSON form, as GET answers it.
func (s *Server) ServiceJSON(name string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.service(name)
	if o == nil {
		return nil, false
	}
	b, _ := json.Marshal(s.serviceForm(o))
	return b, true
}

type handlerFunc func(r *http.Request, body map[string]any) (any, error)

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range client.Routes() {
		h := s.route(rt)
		mux.HandleFunc(rt.String(), func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			defer s.mu.Unlock()
			line := r.Method + " " + r.URL.RequestURI()
			if im := r.Header.Get(client.IfMatchHeader); im != "" {
				line += " [If-Match: " + im + "]"
			}
			s.requests = append(s.requests, line)
			var body map[string]any
			if r.Method == http.MethodPut || r.Method == http.MethodPatch || (r.Method == http.MethodPost && r.URL.Path == client.PathServices) {
				dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
				if err := dec.Decode(&body); err != nil {
					writeJSON(w, http.StatusBadRequest, &mgmt.Error{Message: "malformed JSON: " + err.Error()})
					return
				}
			}
			// The JSON form carries the generation; a client may send back
			// what it read.
			delete(body, "generation")
			out, err := h(r, body)
			if err != nil {
				var e *mgmt.Error
				if !errors.As(err, &e) {
					e = &mgmt.Error{Message: err.Error()}
				}
				writeJSON(w, mgmt.StatusOf(err), e)
				return
			}
			status := http.StatusOK
			if r.Method == http.MethodPost && r.URL.Path == client.PathServices {
				status = http.StatusCreated
			}
			writeJSON(w, status, out)
		})
	}
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) route(rt client.Route) handlerFunc {
	isBackend := strings.Contains(rt.Pattern, "{backend}")
	switch {
	case rt.Pattern == client.PathServices && rt.Method == http.MethodGet:
		return func(*http.Request, map[string]any) (any, error) {
			list := make([]any, len(s.services))
			for i, o := range s.services {
				list[i] = s.serviceForm(o)
			}
			return map[string]any{"services": list}, nil
		}
	case rt.Pattern == client.PathServices:
		return s.create
	case rt.Pattern == client.PathPools:
		return func(*http.Request, map[string]any) (any, error) {
			pool := map[string]any{"name": "lab", "size": 16, "used": s.nextVIP, "reserved": 0, "free": 16 - s.nextVIP}
			return map[string]any{"pools": []any{pool}}, nil
		}
	case strings.HasSuffix(rt.Pattern, "/stats"):
		return s.stats
	case isBackend && rt.Method == http.MethodPost:
		verb := mgmt.Verb(rt.Pattern[strings.LastIndex(rt.Pattern, "/")+1:])
		return func(r *http.Request, _ map[string]any) (any, error) {
			state := map[mgmt.Verb]string{mgmt.Drain: "drain", mgmt.Enable: "enabled", mgmt.Disable: "disabled"}[verb]
			return s.backendWrite(r, mgmt.Patch, map[string]any{"state": state})
		}
	case isBackend && rt.Method == http.MethodGet:
		return func(r *http.Request, _ map[string]any) (any, error) {
			o, b, err := s.findBackend(r)
			if err != nil {
				return nil, err
			}
			return backendForm(o, b), nil
		}
	case isBackend:
		return func(r *http.Request, body map[string]any) (any, error) {
			return s.backendWrite(r, mgmt.Verb(strings.ToLower(r.Method)), body)
		}
	case rt.Method == http.MethodGet:
		return func(r *http.Request, _ map[string]any) (any, error) {
			o := s.service(r.PathValue("name"))
			if o == nil {
				return nil, noService(r.PathValue("name"))
			}
			return s.serviceForm(o), nil
		}
	default:
		return func(r *http.Request, body map[string]any) (any, error) {
			return s.serviceWrite(r, mgmt.Verb(strings.ToLower(r.Method)), body)
		}
	}
}

func noService(name string) error {
	return mgmt.Errorf(http.StatusNotFound, "services["+name+"]", "services: %q: no such service", name)
}

func (s *Server) service(name string) *object {
	for _, o := range s.services {
		if o.body["name"] == name {
			return o
		}
	}
	return nil
}

// serviceForm is a service's JSON form: its body, its backends by pool,
// its generation.
func (s *Server) serviceForm(o *object) map[string]any {
	form := map[string]any{}
	for k, v := range o.body {
		form[k] = v
	}
	var own []any
	pools := map[string][]any{}
	var order []string
	for _, b := range o.backends {
		if b.pool == "default" {
			own = append(own, backendForm(o, b))
			continue
		}
		if _, ok := pools[b.pool]; !ok {
			order = append(order, b.pool)
		}
		pools[b.pool] = append(pools[b.pool], backendForm(o, b))
	}
	if own != nil {
		form["backends"] = own
	}
	if order != nil {
		var ps []any
		for _, p := range order {
			ps = append(ps, map[string]any{"name": p, "backends": pools[p]})
		}
		form["pools"] = ps
	}
	form["generation"] = o.gen
	return form
}

func backendForm(_ *object, b *backend) map[string]any {
	form := map[string]any{}
	for k, v := range b.body {
		form[k] = v
	}
	form["generation"] = b.gen
	return form
}

func ifMatch(r *http.Request, gen uint64, field string) error {
	h := r.Header.Get(client.IfMatchHeader)
	if h == "" {
		return nil
	}
	want, err := strconv.ParseUint(strings.Trim(h, `"`), 10, 64)
	if err != nil {
		return mgmt.Errorf(http.StatusBadRequest, "", "If-Match: %q is not a generation", h)
	}
	if want != gen {
		return mgmt.Errorf(http.StatusPreconditionFailed, field, "generation is %d, not %d (If-Match)", gen, want)
	}
	return nil
}

// check is the few rules the fake enforces, in the real API's shape.
func check(field string, body map[string]any) error {
	if w, ok := body["weight"]; ok {
		n, isNum := w.(float64)
		if !isNum || n < 0 || n > 256 || n != float64(int(n)) {
			return mgmt.Errorf(http.StatusUnprocessableEntity, field+".weight", "%s.weight: %v: must be 0-256", field, w)
		}
	}
	if name, ok := body["name"].(string); ok && (name == "" || strings.ContainsAny(name, "/ ") || strings.Contains(name, "..")) {
		return mgmt.Errorf(http.StatusUnprocessableEntity, field+".name", "%s.name: %q: must be letters, digits, '-', '_' and '.'", field, name)
	}
	return nil
}

func (s *Server) result(obj map[string]any, gen uint64, applied mgmt.Applied) mgmt.Result {
	if applied != mgmt.AppliedNone {
		s.configGen++
	}
	res := mgmt.Result{Generation: gen, ConfigGeneration: s.configGen, Applied: applied}
	if obj != nil {
		res.Object, _ = json.Marshal(obj)
	}
	return res
}

func (s *Server) create(r *http.Request, body map[string]any) (any, error) {
	name, _ := body["name"].(string)
	if name == "" {
		name = fmt.Sprintf("%v-%v", body["mode"], body["port"])
		body["name"] = name
	}
	if s.service(name) != nil {
		return nil, mgmt.Errorf(http.StatusConflict, "services["+name+"]", "services[%s]: exists already", name)
	}
	return s.put(r, name, body)
}

func (s *Server) put(_ *http.Request, name string, body map[string]any) (any, error) {
	field := "services[" + name + "]"
	if err := check(field, body); err != nil {
		return nil, err
	}
	if vips, _ := body["vips"].([]any); len(vips) == 0 {
		if s.nextVIP == 16 {
			return nil, mgmt.Errorf(http.StatusConflict, field+".vip_pool", "vip_pools[lab]: exhausted")
		}
		s.nextVIP++
		body["vips"] = []any{fmt.Sprintf("10.20.0.%d", s.nextVIP)}
	}
	o := &object{}
	if old := s.service(name); old != nil {
		o = old
	} else {
		s.services = append(s.services, o)
	}
	o.backends = nil
	if list, ok := body["backends"].([]any); ok {
		for i, b := range list {
			m, _ := b.(map[string]any)
			if m == nil {
				return nil, mgmt.Errorf(http.StatusUnprocessableEntity, fmt.Sprintf("%s.backends[%d]", field, i), "not an object")
			}
			o.backends = append(o.backends, &backend{pool: "default", object: object{body: m, gen: 1}})
		}
	}
	delete(body, "backends")
	o.body = body
	o.gen++
	return s.result(s.serviceForm(o), o.gen, mgmt.AppliedReload), nil
}

func (s *Server) serviceWrite(r *http.Request, verb mgmt.Verb, body map[string]any) (any, error) {
	name := r.PathValue("name")
	o := s.service(name)
	if o == nil && verb != mgmt.Put {
		return nil, noService(name)
	}
	if o != nil {
		if err := ifMatch(r, o.gen, "services["+name+"]"); err != nil {
			return nil, err
		}
	}
	switch verb {
	case mgmt.Put:
		body["name"] = name
		return s.put(r, name, body)
	case mgmt.Delete:
		for i, x := range s.services {
			if x == o {
				s.services = append(s.services[:i], s.services[i+1:]...)
			}
		}
		return s.result(nil, o.gen+1, mgmt.AppliedReload), nil
	}
	if err := check("services["+name+"]", body); err != nil {
		return nil, err
	}
	merged := mergePatch(o.body, body).(map[string]any)
	if reflect.DeepEqual(merged, o.body) {
		return s.result(s.serviceForm(o), o.gen, mgmt.AppliedNone), nil
	}
	o.body = merged
	o.gen++
	return s.result(s.serviceForm(o), o.gen, mgmt.AppliedReload), nil
}

// findBackend is the backend of the request's path, in its ?pool= or in
// any pool.
func (s *Server) findBackend(r *http.Request) (*object, *backend, error) {
	name, bname, pool := r.PathValue("name"), r.PathValue("backend"), r.URL.Query().Get(client.PoolParam)
	o := s.service(name)
	if o == nil {
		return nil, nil, noService(name)
	}
	var found *backend
	for _, b := range o.backends {
		if b.body["name"] == bname && (pool == "" || b.pool == pool) {
			if found != nil {
				return nil, nil, mgmt.Errorf(http.StatusConflict, "services["+name+"].backends["+bname+"]", "in pools %s and %s: give ?pool=", found.pool, b.pool)
			}
			found = b
		}
	}
	if found == nil {
		return o, nil, mgmt.Errorf(http.StatusNotFound, "services["+name+"].backends["+bname+"]", "services[%s]: %q: no such backend", name, bname)
	}
	return o, found, nil
}

func (s *Server) backendWrite(r *http.Request, verb mgmt.Verb, body map[string]any) (any, error) {
	o, b, err := s.findBackend(r)
	if o == nil || (err != nil && !(verb == mgmt.Put && b == nil && mgmt.StatusOf(err) == http.StatusNotFound)) {
		return nil, err
	}
	bname := r.PathValue("backend")
	field := "services[" + r.PathValue("name") + "].backends[" + bname + "]"
	if b != nil {
		if err := ifMatch(r, b.gen, field); err != nil {
			return nil, err
		}
	}
	if err := check(field, body); err != nil {
		return nil, err
	}
	applied := mgmt.AppliedReload
	switch {
	case verb == mgmt.Delete:
		for i, x := range o.backends {
			if x == b {
				o.backends = append(o.backends[:i], o.backends[i+1:]...)
			}
		}
		o.gen++
		return s.result(nil, b.gen+1, applied), nil
	case b == nil:
		pool := r.URL.Query().Get(client.PoolParam)
		if pool == "" {
			pool = "default"
		}
		body["name"] = bname
		b = &backend{pool: pool}
		b.body = body
		o.backends = append(o.backends, b)
	case verb == mgmt.Put:
		body["name"] = bname
		if reflect.DeepEqual(body, b.body) {
			return s.result(backendForm(o, b), b.gen, mgmt.AppliedNone), nil
		}
		if body["address"] == b.body["address"] {
			applied = mgmt.AppliedRuntime
		}
		b.body = body
	default:
		merged := mergePatch(b.body, body).(map[string]any)
		if reflect.DeepEqual(merged, b.body) {
			return s.result(backendForm(o, b), b.gen, mgmt.AppliedNone), nil
		}
		if merged["address"] == b.body["address"] {
			applied = mgmt.AppliedRuntime
		}
		b.body = merged
	}
	b.gen++
	o.gen++
	return s.result(backendForm(o, b), b.gen, applied), nil
}

func (s *Server) stats(r *http.Request, _ map[string]any) (any, error) {
	o := s.service(r.PathValue("name"))
	if o == nil {
		return nil, noService(r.PathValue("name"))
	}
	var bs []any
	for _, b := range o.backends {
		bs = append(bs, map[string]any{"name": b.body["name"], "pool": b.pool, "address": b.body["address"], "up": true, "connections": 0})
	}
	return map[string]any{"name": o.body["name"], "up": len(bs) > 0, "backends": bs}, nil
}

// mergePatch applies an RFC 7396 merge patch.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	out := map[string]any{}
	if ok {
		for k, v := range t {
			out[k] = v
		}
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = mergePatch(out[k], v)
	}
	return out
}
