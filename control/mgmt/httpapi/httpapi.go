// Package httpapi is the management API's HTTP layer: the /api/v1 routes
// over mgmt.API, their errors as JSON, and the OpenAPI document
// (openapi.json, committed and served at /api/v1/openapi.json).
//
// It translates and nothing more: a request becomes one mgmt.Change (or
// one read), the Store decides, and its answer or *mgmt.Error becomes the
// response. What the HTTP layer itself refuses is what the Store never
// sees: a body over MaxBodyBytes (413), a body of another media type
// (415), a body that is not a JSON object (400), an If-Match that is
// not one generation (400) and a path with a "." or ".." segment (400,
// where the mux would redirect a write elsewhere). Authentication is the access layer's, which
// wraps this handler and says who is asking (WithWho, or access.Who);
// the handler fills in the access layer's audit record of each write
// (access.Audit): the diff, how it was applied, or why it was refused.
//
// Choices a client can rely on, also written in openapi.json:
//   - ETag is the object's generation as a strong entity tag ("7"), on
//     every answer that carries an object. If-Match takes it quoted or
//     bare (7); "*" is no condition; a weak tag or a list is refused,
//     since a write is conditional on exactly one generation.
//   - PATCH is a JSON merge patch (RFC 7396), sent as
//     application/merge-patch+json or application/json: it is the API's
//     only patch format, so the plain type has one meaning. JSON Patch
//     (application/json-patch+json) and anything else get 415 and an
//     Accept-Patch header.
//   - PUT and POST take application/json, or a body without a
//     Content-Type.
//   - GET /api/v1/services answers {"services": [...]} and GET
//     /api/v1/pools {"pools": [...]}, so that either can grow fields.
//   - POST /api/v1/services of a service without vips answers, besides
//     the Result, allocated_vips: the addresses the daemon gave it from
//     its pool (the object is the file's, which names none).
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/access"
)

// Prefix is the path every route of the API starts with.
const Prefix = "/api/v1"

// MaxBodyBytes is the largest request body taken: a service with
// thousands of backends fits, and a runaway client cannot make the
// daemon buffer more.
const MaxBodyBytes = 1 << 20

// Media types of request bodies.
const (
	mediaJSON       = "application/json"
	mediaMergePatch = "application/merge-patch+json"
)

//go:embed openapi.json
var openapiDoc []byte

// OpenAPI returns the OpenAPI 3.0 document of the routes (a copy).
func OpenAPI() []byte { return slices.Clone(openapiDoc) }

type whoKey struct{}

// WithWho returns ctx saying who makes the request: a token's name or
// "uid 0". The access layer sets it; every Change carries it to the
// audit log.
func WithWho(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, whoKey{}, who)
}

// WhoFrom is who WithWho said makes the request, else who the access
// layer authenticated (access.Who), else "".
func WhoFrom(ctx context.Context) string {
	if who, ok := ctx.Value(whoKey{}).(string); ok {
		return who
	}
	return access.Who(ctx)
}

// handler serves the routes over one mgmt.API.
type handler struct {
	api mgmt.API
	log *slog.Logger
	mux *http.ServeMux
}

// route is one method and path of the API, as an http.ServeMux pattern
// (whose {wildcards} are OpenAPI's path parameters too).
type route struct {
	method, path string
	serve        http.HandlerFunc
}

// New returns the handler of every /api/v1 route over api. log gets the
// internal errors (5xx) it answers; nil discards them.
func New(api mgmt.API, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{api: api, log: log, mux: http.NewServeMux()}
	for _, rt := range h.routes() {
		h.mux.HandleFunc(rt.method+" "+rt.path, rt.serve)
	}
	return h
}

func (h *handler) routes() []route {
	const (
		services = Prefix + "/services"
		service  = services + "/{name}"
		backend  = service + "/backends/{backend}"
	)
	return []route{
		{"GET", services, h.listServices},
		{"POST", services, h.write(mgmt.Create, mgmt.KindService)},
		{"GET", service, h.getService},
		{"PUT", service, h.write(mgmt.Put, mgmt.KindService)},
		{"PATCH", service, h.write(mgmt.Patch, mgmt.KindService)},
		{"DELETE", service, h.write(mgmt.Delete, mgmt.KindService)},
		{"GET", service + "/stats", h.serviceStats},
		{"GET", backend, h.getBackend},
		{"PUT", backend, h.write(mgmt.Put, mgmt.KindBackend)},
		{"PATCH", backend, h.write(mgmt.Patch, mgmt.KindBackend)},
		{"DELETE", backend, h.write(mgmt.Delete, mgmt.KindBackend)},
		{"POST", backend + "/drain", h.write(mgmt.Drain, mgmt.KindBackend)},
		{"POST", backend + "/enable", h.write(mgmt.Enable, mgmt.KindBackend)},
		{"POST", backend + "/disable", h.write(mgmt.Disable, mgmt.KindBackend)},
		{"GET", Prefix + "/pools", h.pools},
		{"POST", Prefix + "/vips/{vip}/move", h.moveVIP},
		{"GET", Prefix + "/openapi.json", h.openapi},
	}
}

// ServeHTTP answers the mux's own 404 and 405 (plain text) as JSON
// errors, like every other error of the API.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The mux would redirect such a path to its clean form, with a 307
	// that repeats a write elsewhere: a name of "." or ".." is refused
	// instead, as the Store refuses it in a body.
	if p := r.URL.EscapedPath(); !isClean(p) {
		h.fail(w, r, mgmt.Errorf(http.StatusBadRequest, "",
			"path %s is not usable: it has an empty, \".\" or \"..\" segment", p))
		return
	}
	if inner, pattern := h.mux.Handler(r); pattern == "" {
		rec := &recorder{header: http.Header{}}
		inner.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			allow := rec.header.Get("Allow")
			w.Header().Set("Allow", allow)
			h.fail(w, r, mgmt.Errorf(http.StatusMethodNotAllowed, "",
				"method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
			return
		}
		h.fail(w, r, mgmt.Errorf(http.StatusNotFound, "", "no such route: %s %s", r.Method, r.URL.Path))
		return
	}
	// The mux again, not inner: it is what sets the path values.
	h.mux.ServeHTTP(w, r)
}

func isClean(p string) bool {
	for seg := range strings.SplitSeq(strings.TrimPrefix(p, "/"), "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return !strings.Contains(p, "//")
}

// recorder keeps the status and headers of the mux's 404 and 405
// handlers, and drops their text.
type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return len(b), nil
}

func (h *handler) listServices(w http.ResponseWriter, r *http.Request) {
	list, err := h.api.Services(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if list == nil {
		list = []json.RawMessage{}
	}
	writeJSON(w, http.StatusOK, struct {
		Services []json.RawMessage `json:"services"`
	}{list})
}

func (h *handler) getService(w http.ResponseWriter, r *http.Request) {
	obj, err := h.api.Service(r.Context(), r.PathValue("name"))
	h.object(w, r, obj, err)
}

func (h *handler) getBackend(w http.ResponseWriter, r *http.Request) {
	obj, err := h.api.Backend(r.Context(), r.PathValue("name"), r.PathValue("backend"), r.URL.Query().Get("pool"))
	h.object(w, r, obj, err)
}

func (h *handler) object(w http.ResponseWriter, r *http.Request, obj json.RawMessage, err error) {
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if g, ok := generationOf(obj); ok {
		w.Header().Set("ETag", etag(g))
	}
	writeJSON(w, http.StatusOK, obj)
}

func (h *handler) serviceStats(w http.ResponseWriter, r *http.Request) {
	st, err := h.api.ServiceStats(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) pools(w http.ResponseWriter, r *http.Request) {
	p, err := h.api.Pools(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(p) == 0 || string(p) == "null" {
		p = json.RawMessage("[]")
	}
	writeJSON(w, http.StatusOK, struct {
		Pools json.RawMessage `json:"pools"`
	}{p})
}

// moveVIP moves a VIP between VRRP nodes: {"to": "<node address>"} or
// {"to": "owner"}.
func (h *handler) moveVIP(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var req struct {
		To *string `json:"to"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		h.fail(w, r, mgmt.Errorf(http.StatusBadRequest, "", "body: %v (want {\"to\": \"<node address>\" or \"owner\"})", err))
		return
	}
	if req.To == nil || *req.To == "" {
		h.fail(w, r, mgmt.Errorf(http.StatusUnprocessableEntity, "to", "required: a node's address of ha.vrrp.nodes, or \"owner\""))
		return
	}
	vip := r.PathValue("vip")
	res, err := h.api.MoveVIP(r.Context(), vip, *req.To)
	audit := access.Audit(r.Context())
	audit.Diff = fmt.Sprintf("vip %s: move to %s", vip, *req.To)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	audit.Applied = "vrrp"
	w.Header().Set("Content-Type", mediaJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res)
}

func (h *handler) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", mediaJSON)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(openapiDoc)
}

// write is the handler of one kind of Change: the request's path,
// query, If-Match, body and who, to the Store, and its Result back.
func (h *handler) write(verb mgmt.Verb, kind mgmt.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ch := mgmt.Change{
			Verb:    verb,
			Kind:    kind,
			Service: r.PathValue("name"),
			Who:     WhoFrom(r.Context()),
		}
		if kind == mgmt.KindBackend {
			ch.Backend = r.PathValue("backend")
			ch.Pool = r.URL.Query().Get("pool")
		}
		var err error
		if ch.IfMatch, err = parseIfMatch(r.Header.Values("If-Match")); err != nil {
			h.fail(w, r, err)
			return
		}
		switch verb {
		case mgmt.Put, mgmt.Create, mgmt.Patch:
			if ch.Body, err = readBody(w, r, verb == mgmt.Patch); err != nil {
				h.fail(w, r, err)
				return
			}
		}
		res, err := h.api.Do(r.Context(), ch)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		audit := access.Audit(r.Context())
		audit.Diff, audit.Applied = res.Diff, string(res.Applied)
		if res.Object != nil {
			w.Header().Set("ETag", etag(res.Generation))
		}
		if verb != mgmt.Create {
			writeJSON(w, http.StatusOK, res)
			return
		}
		ans := created{Result: res}
		if name := nameOf(res.Object); name != "" {
			w.Header().Set("Location", Prefix+"/services/"+url.PathEscape(name))
			if !hasVIPs(res.Object) {
				ans.AllocatedVIPs = h.allocated(r, name)
			}
		}
		writeJSON(w, http.StatusCreated, ans)
	}
}

// created is the answer to POST /services: the Result and, for a
// service without vips, the addresses it got from its pool. The Store's
// object is the file's, which names none: the daemon's plan allocated
// them when it applied the change.
type created struct {
	mgmt.Result
	AllocatedVIPs []string `json:"allocated_vips,omitempty"`
}

// allocated reads the addresses the daemon gave a service from the
// vip_pools. The change is made by then: a failure to read them is
// logged, not answered.
func (h *handler) allocated(r *http.Request, service string) []string {
	raw, err := h.api.Pools(r.Context())
	var pools []struct {
		Allocations map[string]string `json:"allocations"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &pools)
	}
	if err != nil {
		h.log.Warn("reading the address allocated to a new service", "service", service, "err", err)
		return nil
	}
	var out []string
	for _, p := range pools {
		if a, ok := p.Allocations[service]; ok {
			out = append(out, a)
		}
	}
	return out
}

func hasVIPs(obj json.RawMessage) bool {
	var o struct {
		VIPs []json.RawMessage `json:"vips"`
	}
	_ = json.Unmarshal(obj, &o)
	return len(o.VIPs) > 0
}

// readBody reads a write's body: of an accepted media type, at most
// MaxBodyBytes, a JSON object.
func readBody(w http.ResponseWriter, r *http.Request, patch bool) (json.RawMessage, error) {
	if err := checkMediaType(w, r.Header.Get("Content-Type"), patch); err != nil {
		return nil, err
	}
	tooLarge := mgmt.Errorf(http.StatusRequestEntityTooLarge, "",
		"request body is larger than %d bytes (1 MiB)", MaxBodyBytes)
	if r.ContentLength > MaxBodyBytes {
		return nil, tooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge
		}
		return nil, mgmt.Errorf(http.StatusBadRequest, "", "reading the request body: %v", err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		if len(strings.TrimSpace(string(b))) == 0 {
			return nil, mgmt.Errorf(http.StatusBadRequest, "", "request body is empty: send a JSON object")
		}
		return nil, mgmt.Errorf(http.StatusBadRequest, "", "request body is not valid JSON: %v", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, mgmt.Errorf(http.StatusBadRequest, "", "request body must be a JSON object, not %s", jsonKind(v))
	}
	return b, nil
}

func checkMediaType(w http.ResponseWriter, ct string, patch bool) error {
	mt := ""
	if ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			mt = ct
		}
	}
	if patch {
		if mt == mediaMergePatch || mt == mediaJSON {
			return nil
		}
		w.Header().Set("Accept-Patch", mediaMergePatch+", "+mediaJSON)
		if mt == "" {
			return mgmt.Errorf(http.StatusUnsupportedMediaType, "",
				"PATCH needs a Content-Type: %s (a JSON merge patch, RFC 7396)", mediaMergePatch)
		}
		return mgmt.Errorf(http.StatusUnsupportedMediaType, "",
			"Content-Type %s is not supported: PATCH takes %s (a JSON merge patch, RFC 7396) or %s", mt, mediaMergePatch, mediaJSON)
	}
	if mt == "" || mt == mediaJSON {
		return nil
	}
	return mgmt.Errorf(http.StatusUnsupportedMediaType, "", "Content-Type %s is not supported: send %s", mt, mediaJSON)
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// parseIfMatch reads If-Match: nil when absent or "*", else the one
// generation it names, as "7" (an ETag) or 7.
func parseIfMatch(values []string) (*uint64, error) {
	var tags []string
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	switch {
	case len(tags) == 0:
		return nil, nil
	case len(tags) > 1:
		return nil, mgmt.Errorf(http.StatusBadRequest, "If-Match",
			"If-Match names %d entity tags (%s): send the one generation the change is based on", len(tags), strings.Join(tags, ", "))
	case tags[0] == "*":
		return nil, nil
	}
	t := tags[0]
	if strings.HasPrefix(t, "W/") {
		return nil, mgmt.Errorf(http.StatusBadRequest, "If-Match",
			"If-Match %s is a weak entity tag: send the generation, as %s", t, strings.TrimPrefix(t, "W/"))
	}
	s := t
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	g, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, mgmt.Errorf(http.StatusBadRequest, "If-Match",
			"If-Match %s is not a generation (such as \"7\" or 7)", t)
	}
	return &g, nil
}

func etag(g uint64) string { return `"` + strconv.FormatUint(g, 10) + `"` }

// generationOf reads an object's generation, which the Store writes in
// its JSON form.
func generationOf(obj json.RawMessage) (uint64, bool) {
	var o struct {
		Generation *uint64 `json:"generation"`
	}
	if json.Unmarshal(obj, &o) != nil || o.Generation == nil {
		return 0, false
	}
	return *o.Generation, true
}

func nameOf(obj json.RawMessage) string {
	var o struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(obj, &o)
	return o.Name
}

// fail answers err, puts it in the request's audit record, and logs it
// when it is the server's fault.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	access.Audit(r.Context()).Error = err.Error()
	if mgmt.StatusOf(err) >= 500 {
		h.log.Error("management API request failed", "method", r.Method, "path", r.URL.Path,
			"who", WhoFrom(r.Context()), "err", err)
	}
	writeError(w, err)
}

// writeError answers {"error": ..., "field": ...} with mgmt.StatusOf(err).
func writeError(w http.ResponseWriter, err error) {
	body, ok := errors.AsType[*mgmt.Error](err)
	if !ok {
		body = &mgmt.Error{Message: err.Error()}
	}
	writeJSON(w, mgmt.StatusOf(err), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(mgmt.Error{Message: "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", mediaJSON)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
