// Package gorb serves GORB's REST API (github.com/kobolog/gorb, and the
// qk4l/gorb fork's fallback) on top of the management API, so that a
// script written for GORB drives ober unchanged: its routes, its JSON and
// its status codes, mapped onto ober's L4 services: mode tcp, and mode
// udp for GORB's protocol udp.
//
// A GORB virtual service is an ober service of mode tcp named after it,
// its host the service's one VIP (none: the Store allocates one from a
// pool), its scheduler ober's balance through config's alias table. A
// GORB backend is a backend of the service's own pool. GORB checks each
// backend with its own pulse, ober each service with one check: the
// first backend's pulse becomes the service's health, and a later
// backend whose pulse differs is refused (422). What ober cannot do
// (direct routing, tunnels, the port hash flags of TCP, persistence
// without a hash) is refused with a 422 that names the nearest thing it
// does. GORB's 400 (bad input), 404, 409 and 500 keep their meaning; a
// success answers 200 with an empty body, as GORB does.
//
// GORB creates a service first and its backends after. ober writes the
// service to ober.yaml at once, without backends (it closes every
// connection until it has one); its first backend brings the pulse that
// becomes the service's check, in one change (see README, "from GORB").
package gorb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
)

// maxBody bounds a request's body: GORB's objects are a few hundred
// bytes.
const maxBody = 1 << 20

// Options tune a Handler; the zero value is usable.
type Options struct {
	// Logger gets the changes' notes and what could not be read; default
	// slog.Default().
	Logger *slog.Logger
	// Who names the client of a request for the audit log; default
	// "gorb <remote address>".
	Who func(*http.Request) string
	// Now is the clock of the backends' uptimes; default time.Now.
	Now func() time.Time
}

// Handler is GORB's API over an mgmt.API.
type Handler struct {
	api mgmt.API
	log *slog.Logger
	who func(*http.Request) string
	now func() time.Time
	mux *http.ServeMux
	mu  sync.Mutex // serializes writes: a write reads, then changes
}

// New returns GORB's API over a.
func New(a mgmt.API, o Options) *Handler {
	h := &Handler{api: a, log: o.Logger, who: o.Who, now: o.Now, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.who == nil {
		h.who = func(r *http.Request) string { return "gorb " + r.RemoteAddr }
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.mux.HandleFunc("GET /service", h.listServices)
	h.mux.HandleFunc("PUT /service/{vs}", h.createService)
	h.mux.HandleFunc("GET /service/{vs}", h.getService)
	h.mux.HandleFunc("DELETE /service/{vs}", h.deleteService)
	h.mux.HandleFunc("PUT /service/{vs}/{rs}", h.createBackend)
	h.mux.HandleFunc("GET /service/{vs}/{rs}", h.getBackend)
	h.mux.HandleFunc("PATCH /service/{vs}/{rs}", h.patchBackend)
	h.mux.HandleFunc("DELETE /service/{vs}/{rs}", h.deleteBackend)
	// GORB's README lists PATCH of a service, which its code never
	// served: say so in the errors' JSON.
	h.mux.HandleFunc("PATCH /service/{vs}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "DELETE, GET, PUT")
		h.fail(w, r, mgmt.Errorf(http.StatusMethodNotAllowed, "",
			"PATCH /service/%s: GORB never served it; PUT the service again, or use ober's PATCH /api/v1/services/%s", r.PathValue("vs"), r.PathValue("vs")))
	})
	return h
}

// ServeHTTP serves GORB's routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) listServices(w http.ResponseWriter, r *http.Request) {
	raws, err := h.api.Services(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	names := make([]string, 0, len(raws))
	for _, raw := range raws {
		s, _, err := effective(raw)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		names = append(names, s.Name)
	}
	writeJSON(w, names)
}

func (h *Handler) createService(w http.ResponseWriter, r *http.Request) {
	vs := r.PathValue("vs")
	var o ServiceOptions
	if err := decode(w, r, &o); err != nil {
		h.fail(w, r, err)
		return
	}
	body, notes, err := serviceBody(vs, o)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	res, err := h.do(r, mgmt.Change{Verb: mgmt.Create, Kind: mgmt.KindService, Service: vs, Body: mustJSON(body)})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, res, notes)
}

func (h *Handler) getService(w http.ResponseWriter, r *http.Request) {
	vs := r.PathValue("vs")
	s, _, err := h.service(r.Context(), vs)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	stats := h.stats(r.Context(), vs)
	info := ServiceInfo{Options: optionsOf(s), Backends: []string{}}
	info.Fallback = info.Options.Fallback
	for _, b := range s.Backends {
		info.Backends = append(info.Backends, b.Name)
		info.Health += h.metrics(b.Name, stats, *s.Health).Health
	}
	if info.BackendsCount = len(s.Backends); info.BackendsCount > 0 {
		info.Health /= float64(info.BackendsCount)
	}
	writeJSON(w, info)
}

func (h *Handler) deleteService(w http.ResponseWriter, r *http.Request) {
	vs := r.PathValue("vs")
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, _, err := h.tcpService(r.Context(), vs); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.do(r, mgmt.Change{Verb: mgmt.Delete, Kind: mgmt.KindService, Service: vs})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, res, nil)
}

func (h *Handler) createBackend(w http.ResponseWriter, r *http.Request) {
	vs, rs := r.PathValue("vs"), r.PathValue("rs")
	var o BackendOptions
	if err := decode(w, r, &o); err != nil {
		h.fail(w, r, err)
		return
	}
	b, err := backendBody(rs, o)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var hc *config.ServiceHealth
	if o.Pulse != nil {
		if hc, err = health(o.Pulse); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, gen, err := h.tcpService(r.Context(), vs)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if _, ok := findBackend(s, rs); ok {
		h.fail(w, r, exists("services["+vs+"].backends["+rs+"]"))
		return
	}
	if hc != nil && len(s.Backends) == 0 {
		// The first backend: its pulse becomes the service's check, in
		// the same change.
		patch := map[string]any{"health": healthJSON(hc), "backends": []any{b}}
		res, err := h.do(r, mgmt.Change{Verb: mgmt.Patch, Kind: mgmt.KindService, Service: vs, Body: mustJSON(patch), IfMatch: &gen})
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.ok(w, res, nil)
		return
	}
	if hc != nil && !sameHealth(*hc, *s.Health) {
		h.fail(w, r, unprocessable("pulse",
			"pulse: services[%s] checks its backends with %s, which its first backend's pulse set; ober checks every backend of a service the same way (GORB's pulse is per backend): give this backend the same pulse, or none", vs, describeHealth(*s.Health)))
		return
	}
	res, err := h.do(r, mgmt.Change{Verb: mgmt.Put, Kind: mgmt.KindBackend, Service: vs, Backend: rs, Pool: config.DefaultPool, Body: mustJSON(b)})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, res, nil)
}

func (h *Handler) getBackend(w http.ResponseWriter, r *http.Request) {
	vs, rs := r.PathValue("vs"), r.PathValue("rs")
	s, _, err := h.service(r.Context(), vs)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b, ok := findBackend(s, rs)
	if !ok {
		h.fail(w, r, noBackend(vs, rs))
		return
	}
	writeJSON(w, BackendInfo{Options: backendOptionsOf(b, *s.Health), Metrics: h.metrics(rs, h.stats(r.Context(), vs), *s.Health)})
}

func (h *Handler) patchBackend(w http.ResponseWriter, r *http.Request) {
	vs, rs := r.PathValue("vs"), r.PathValue("rs")
	var o BackendOptions
	if err := decode(w, r, &o); err != nil {
		h.fail(w, r, err)
		return
	}
	// GORB's PATCH changes the weight and nothing else.
	if o.Weight == nil {
		h.fail(w, r, badRequest("weight", "weight: required (GORB's PATCH changes a backend's weight only)"))
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.writableBackend(r.Context(), vs, rs); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.do(r, mgmt.Change{Verb: mgmt.Patch, Kind: mgmt.KindBackend, Service: vs, Backend: rs,
		Body: mustJSON(map[string]any{"weight": *o.Weight})})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, res, nil)
}

func (h *Handler) deleteBackend(w http.ResponseWriter, r *http.Request) {
	vs, rs := r.PathValue("vs"), r.PathValue("rs")
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.writableBackend(r.Context(), vs, rs); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.do(r, mgmt.Change{Verb: mgmt.Delete, Kind: mgmt.KindBackend, Service: vs, Backend: rs})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, res, nil)
}

// writableBackend checks that rs is a backend of vs, an L4 service.
func (h *Handler) writableBackend(ctx context.Context, vs, rs string) error {
	s, _, err := h.tcpService(ctx, vs)
	if err != nil {
		return err
	}
	if _, ok := findBackend(s, rs); !ok {
		return noBackend(vs, rs)
	}
	return nil
}

func (h *Handler) do(r *http.Request, ch mgmt.Change) (mgmt.Result, error) {
	ch.Who = h.who(r)
	return h.api.Do(r.Context(), ch)
}

// service is service vs with its defaults, and its generation.
func (h *Handler) service(ctx context.Context, vs string) (config.Service, uint64, error) {
	raw, err := h.api.Service(ctx, vs)
	if err != nil {
		return config.Service{}, 0, err
	}
	return effective(raw)
}

// tcpService is service vs when GORB may change it: GORB is L4.
func (h *Handler) tcpService(ctx context.Context, vs string) (config.Service, uint64, error) {
	s, gen, err := h.service(ctx, vs)
	if err == nil && s.Mode != config.ModeTCP && !config.IsKernelMode(s.Mode) {
		err = unprocessable("services["+vs+"].mode", "services[%s].mode is %s: GORB's API changes mode tcp, udp and nat services only (GORB is L4); use ober's API (/api/v1) for this one", vs, s.Mode)
	}
	return s, gen, err
}

// findBackend finds rs in s's own pool, else in its other pools.
func findBackend(s config.Service, rs string) (config.BackendServer, bool) {
	for _, b := range s.Backends {
		if b.Name == rs {
			return b, true
		}
	}
	for _, p := range s.Pools {
		for _, b := range p.Backends {
			if b.Name == rs {
				return b, true
			}
		}
	}
	return config.BackendServer{}, false
}

// stats is the daemon's status of the backends of vs's own pool, by
// name; nil when it has none (the daemon has not applied the service
// yet, or is not running).
func (h *Handler) stats(ctx context.Context, vs string) map[string]api.DaemonBackendStatus {
	raw, err := h.api.ServiceStats(ctx, vs)
	if err != nil {
		h.log.Debug("gorb: no status of the service", "service", vs, "err", err)
		return nil
	}
	var st api.DaemonServiceStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		h.log.Warn("gorb: the service's status does not read", "service", vs, "err", err)
		return nil
	}
	out := make(map[string]api.DaemonBackendStatus, len(st.Backends))
	for _, b := range st.Backends {
		if b.Pool == "" || b.Pool == config.DefaultPool {
			out[b.Name] = b
		}
	}
	return out
}

// metrics is GORB's pulse metrics of backend rs: the daemon's, or before
// its first verdict what ober assumes (the check's initial_state).
func (h *Handler) metrics(rs string, stats map[string]api.DaemonBackendStatus, hc config.ServiceHealth) Metrics {
	st, ok := stats[rs]
	if !ok {
		if hc.InitialState == config.HealthDown {
			return Metrics{Status: statusDown}
		}
		return Metrics{Status: statusUp, Health: 1}
	}
	m := Metrics{Status: statusDown, Health: st.Health}
	if st.Up {
		m.Status = statusUp
		if !st.Since.IsZero() {
			m.Uptime = int64(h.now().Sub(st.Since) / time.Second)
		}
	}
	return m
}

func exists(field string) *mgmt.Error {
	return mgmt.Errorf(http.StatusConflict, field, "%s: specified object already exists", field)
}

func noBackend(vs, rs string) *mgmt.Error {
	f := "services[" + vs + "].backends[" + rs + "]"
	return mgmt.Errorf(http.StatusNotFound, f, "%s: no such backend", f)
}

// decode reads a GORB object; a field GORB does not have is refused, so
// that a misspelt one does not go unnoticed.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		return mgmt.Errorf(http.StatusRequestEntityTooLarge, "", "the body is larger than %d bytes", maxBody)
	case errors.Is(err, io.EOF):
		return badRequest("", "the body is empty: a JSON object is required")
	}
	return badRequest("", "malformed JSON: %v", err)
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		// Only maps of strings, numbers and lists get here.
		panic(fmt.Sprintf("gorb: %v", err))
	}
	return b
}

// ok answers a successful write as GORB does, 200 and no body; how ober
// applied it and the mapping's notes go in headers.
func (h *Handler) ok(w http.ResponseWriter, res mgmt.Result, notes []string) {
	for _, n := range notes {
		w.Header().Add("X-Ober-Note", n)
		h.log.Info("gorb: "+n, "component", "gorb")
	}
	if res.Applied != "" {
		w.Header().Set("X-Ober-Applied", string(res.Applied))
	}
	w.WriteHeader(http.StatusOK)
}

// fail answers err as GORB does, {"error": "..."}, with ober's field.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *mgmt.Error
	if !errors.As(err, &e) {
		h.log.Error("gorb: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		e = &mgmt.Error{Status: http.StatusInternalServerError, Message: err.Error()}
	}
	status := mgmt.StatusOf(e)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.MarshalIndent(e, "", "  ")
	_, _ = w.Write(append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}
