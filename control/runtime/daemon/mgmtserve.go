package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/access"
	"github.com/ober-ingress/ober/control/mgmt/gorb"
	"github.com/ober-ingress/ober/control/mgmt/httpapi"
)

// management is the management API as the daemon serves it.
type management struct {
	store   *mgmt.Store
	tokens  atomic.Pointer[access.Tokens]
	tls     *access.TLSFiles // nil without api.manage.listen
	servers []*http.Server
}

// startManagement serves the management API on its listeners: the unix
// socket (root only), the TLS listener with tokens or client
// certificates, and GORB's routes on loopback. Every write goes through
// the Store to ober.yaml and into force through Apply.
func (d *Daemon) startManagement(cfg *config.Config) error {
	log := d.log.With("part", "api")
	m := &management{store: &mgmt.Store{
		Path: d.opts.ConfigPath, RuntimeDir: cfg.Node.RuntimeDir, StateDir: cfg.Node.StateDir,
		Applier: d, Reader: d, Mover: d, Log: log,
	}}
	if err := m.loadTokens(cfg); err != nil {
		return err
	}
	opts := access.Options{
		Tokens:  m.tokens.Load,
		SetWho:  httpapi.WithWho,
		Log:     log,
		Limiter: access.NewLimiter(access.DefaultFailRate, access.DefaultFailBurst, access.DefaultMaxSources),
	}
	api := access.Handler(httpapi.New(m.store, log), opts)
	serve := func(what string, l net.Listener, h http.Handler) {
		srv := access.Server(h)
		m.servers = append(m.servers, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("management API listener stopped", "listener", what, "err", err)
			}
		}()
		log.Info("management API listening", "listener", what, "addr", l.Addr().String())
	}
	fail := func(err error) error {
		m.close()
		return err
	}
	if cfg.API.Socket != config.APISocketOff {
		l, err := access.ListenUnix(cfg.API.Socket)
		if err != nil {
			return fail(fmt.Errorf("api.socket: %q: %w", cfg.API.Socket, err))
		}
		serve("socket", l, api)
	}
	if addr := cfg.API.Manage.Listen; addr != "" {
		tf, err := access.NewTLSFiles(cfg.API.Manage)
		if err != nil {
			return fail(fmt.Errorf("api.manage: %w", err))
		}
		m.tls = tf
		l, err := access.ListenTLS(addr, tf.Config())
		if err != nil {
			return fail(fmt.Errorf("api.manage.listen: %q: %w", addr, err))
		}
		serve("tls", l, api)
	}
	if addr := cfg.API.GORBCompat; addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("api.gorb_compat: %q: %w", addr, err))
		}
		g := gorb.New(m.store, gorb.Options{Logger: log, Who: func(r *http.Request) string { return httpapi.WhoFrom(r.Context()) }})
		serve("gorb", l, access.Handler(g, opts))
	}
	d.mgmt = m
	return nil
}

// reloadFiles reads the tokens file and the TLS listener's certificate,
// key and client CA again; a reload calls it, so that a revoked token or
// a renewed certificate takes effect without a restart. On an error
// nothing changes.
func (m *management) reloadFiles(cfg *config.Config) error {
	if m.tls != nil {
		// Read first: a bad certificate leaves the tokens as they were.
		probe, err := access.NewTLSFiles(cfg.API.Manage)
		if err != nil {
			return fmt.Errorf("api.manage: %w", err)
		}
		if err := m.loadTokens(cfg); err != nil {
			return err
		}
		m.tls.Swap(probe)
		return nil
	}
	return m.loadTokens(cfg)
}

// loadTokens reads api.manage.tokens_file; a reload calls it again.
func (m *management) loadTokens(cfg *config.Config) error {
	if cfg.API.Manage.TokensFile == "" {
		m.tokens.Store(nil)
		return nil
	}
	t, err := access.LoadTokens(cfg.API.Manage.TokensFile)
	if err != nil {
		return fmt.Errorf("api.manage.tokens_file: %w", err)
	}
	m.tokens.Store(t)
	return nil
}

// close stops the listeners; requests in flight get a second to end.
func (m *management) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, s := range m.servers {
		_ = s.Shutdown(ctx)
	}
}
