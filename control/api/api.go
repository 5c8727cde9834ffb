// Package api is a node's HTTP API, both ends of it:
//
//	GET /health   200 "ok" when the node can serve, else 503 and the reason
//	GET /status   the node's state as JSON (Status)
//	GET /metrics  Prometheus metrics
//
// Server answers them in `ober run`; Client is how everything else (ober
// status, upgrade and test, the lab, the bench, the test harnesses) asks
// them. Status and its parts are the one definition of the /status
// document (docs/status-json.md), and ReadDataplane fills its dataplane
// part from the pinned maps, with or without a daemon. ExitRestart is the
// other contract of `ober run` with whoever supervises it.
//
// The server binds to loopback by default; it has no authentication and
// changes nothing, so exposing it further is an operator's choice.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handlers supply the answers.
type Handlers struct {
	// Health reports whether the node can serve and, if not, why.
	Health func(ctx context.Context) (ok bool, reason string)
	// Status returns the document /status encodes as JSON.
	Status func(ctx context.Context) (*Status, error)
	// Metrics collects the node's metrics at scrape time.
	Metrics prometheus.Collector
}

// Server is the HTTP server.
type Server struct {
	srv *http.Server
}

// New builds the server; Serve starts it.
func New(h Handlers, log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if h.Metrics != nil {
		reg.MustRegister(h.Metrics)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		ok, reason := h.Health(r.Context())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, reason)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := h.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}))
	return &Server{srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
}

// Serve answers on ln until Shutdown; it returns nil after a Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server, letting requests in flight finish.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
