// Package client speaks to ober's management API (control/mgmt): over
// the daemon's unix socket, as the CLI does, or over its TCP listener
// with TLS and a bearer token. Its methods mirror the API's routes
// (routes.go); a refused request is an *mgmt.Error with the API's status,
// message and field.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/mgmt"
)

// DefaultSocket is where the daemon serves the API by default.
const DefaultSocket = "/run/ober/api.sock"

// DefaultTimeout bounds one request: a write answers once the change is
// live, which a reload of many instances can take a while to make.
const DefaultTimeout = 2 * time.Minute

// maxAnswer bounds what is read of an answer: a listing of thousands of
// services stays well below it.
const maxAnswer = 64 << 20

// maxExcerpt bounds how much of an answer that is not the API's JSON goes
// into an error.
const maxExcerpt = 512

// ErrNoDaemon matches the error of a request that reached no API: nothing
// listens on the socket, or the socket does not exist.
var ErrNoDaemon = errors.New("no daemon answers")

// Client asks one daemon's management API. It is safe for concurrent use.
type Client struct {
	base  string // scheme://host, without a path
	where string // the socket or URL, for messages
	token string
	hc    *http.Client
}

// New returns a client of the API on the unix socket at socketPath
// (DefaultSocket when empty).
func New(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocket
	}
	var d net.Dialer
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		// An idle connection would outlive a daemon that restarts.
		DisableKeepAlives: true,
	}
	// The host is a placeholder: the transport dials the socket.
	return &Client{base: "http://ober", where: socketPath, hc: &http.Client{Transport: tr, Timeout: DefaultTimeout}}
}

// NewTCP returns a client of the API's TCP listener at rawURL
// ("https://host:port"), authenticating with the bearer token and
// verifying the server's certificate with caFile (PEM; empty: the system's
// roots). The listener requires TLS, so plain http is refused here.
func NewTCP(rawURL, token, caFile string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("API URL %q: %w", rawURL, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("API URL %q: want https://HOST:PORT (the TCP listener requires TLS)", rawURL)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", caFile)
		}
		tc.RootCAs = pool
	}
	tr := &http.Transport{Proxy: nil, TLSClientConfig: tc, DisableKeepAlives: true}
	base := u.Scheme + "://" + u.Host
	return &Client{base: base, where: base, token: token, hc: &http.Client{Transport: tr, Timeout: DefaultTimeout}}, nil
}

// SetTimeout bounds each request; 0 leaves them to the context alone.
func (c *Client) SetTimeout(d time.Duration) { c.hc.Timeout = d }

// Where is the socket or URL the client asks, for messages.
func (c *Client) Where() string { return c.where }

// Option tunes one request.
type Option func(*request)

type request struct {
	ifMatch *uint64
	pool    string
}

// IfMatch makes a write conditional: the API refuses it with 412 when the
// object's generation is not gen.
func IfMatch(gen uint64) Option { return func(r *request) { r.ifMatch = &gen } }

// InPool names the pool a backend is in ("default" or one of the
// service's pools[]); without it the API finds the backend in any pool.
func InPool(pool string) Option { return func(r *request) { r.pool = pool } }

// Result is a write's answer.
type Result struct {
	mgmt.Result
	// Raw is the answer as the API sent it (empty for 204).
	Raw json.RawMessage `json:"-"`
}

// Services lists every service's JSON form, with its generation.
func (c *Client) Services(ctx context.Context) ([]json.RawMessage, error) {
	raw, err := c.Do(ctx, http.MethodGet, PathServices, nil)
	if err != nil {
		return nil, err
	}
	return listOf(raw, "services", http.MethodGet+" "+PathServices)
}

// Service is one service's JSON form.
func (c *Client) Service(ctx context.Context, name string) (json.RawMessage, error) {
	return c.Do(ctx, http.MethodGet, ServicePath(name), nil)
}

// CreateService creates a service (POST): without vips in body, the API
// allocates an address from a pool and returns it in the object.
func (c *Client) CreateService(ctx context.Context, body json.RawMessage, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodPost, PathServices, body, opts)
}

// PutService creates or replaces the service name with body.
func (c *Client) PutService(ctx context.Context, name string, body json.RawMessage, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodPut, ServicePath(name), body, opts)
}

// PatchService merges patch (RFC 7396) into the service name.
func (c *Client) PatchService(ctx context.Context, name string, patch json.RawMessage, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodPatch, ServicePath(name), patch, opts)
}

// DeleteService deletes the service name.
func (c *Client) DeleteService(ctx context.Context, name string, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodDelete, ServicePath(name), nil, opts)
}

// Stats is the service's live status (api.DaemonServiceStatus).
func (c *Client) Stats(ctx context.Context, name string) (json.RawMessage, error) {
	return c.Do(ctx, http.MethodGet, StatsPath(name), nil)
}

// Backend is one backend's JSON form.
func (c *Client) Backend(ctx context.Context, service, backend string, opts ...Option) (json.RawMessage, error) {
	return c.Do(ctx, http.MethodGet, BackendPath(service, backend), nil, opts...)
}

// PutBackend creates or replaces a backend of service with body.
func (c *Client) PutBackend(ctx context.Context, service, backend string, body json.RawMessage, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodPut, BackendPath(service, backend), body, opts)
}

// PatchBackend merges patch (RFC 7396) into a backend of service.
func (c *Client) PatchBackend(ctx context.Context, service, backend string, patch json.RawMessage, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodPatch, BackendPath(service, backend), patch, opts)
}

// DeleteBackend removes a backend from service.
func (c *Client) DeleteBackend(ctx context.Context, service, backend string, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodDelete, BackendPath(service, backend), nil, opts)
}

// Drain stops new connections to a backend; the open ones finish.
func (c *Client) Drain(ctx context.Context, service, backend string, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodPost, ActionPath(service, backend, mgmt.Drain), nil, opts)
}

// Enable puts a backend back in service.
func (c *Client) Enable(ctx context.Context, service, backend string, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodPost, ActionPath(service, backend, mgmt.Enable), nil, opts)
}

// Disable takes a backend out at once.
func (c *Client) Disable(ctx context.Context, service, backend string, opts ...Option) (*Result, error) {
	return c.write(ctx, http.MethodPost, ActionPath(service, backend, mgmt.Disable), nil, opts)
}

// Pools lists every vip_pools entry's usage (api.VIPPoolStatus).
func (c *Client) Pools(ctx context.Context) ([]json.RawMessage, error) {
	raw, err := c.Do(ctx, http.MethodGet, PathPools, nil)
	if err != nil {
		return nil, err
	}
	return listOf(raw, "pools", http.MethodGet+" "+PathPools)
}

// MoveVIP moves vip to the node at address to, or back to its owner
// ("owner"), in VRRP mode.
func (c *Client) MoveVIP(ctx context.Context, vip, to string) (*mgmt.VIPMove, error) {
	body, err := json.Marshal(map[string]string{"to": to})
	if err != nil {
		return nil, err
	}
	raw, err := c.Do(ctx, http.MethodPost, MovePath(vip), body)
	if err != nil {
		return nil, err
	}
	var m mgmt.VIPMove
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("POST %s: decode the answer: %w", MovePath(vip), err)
	}
	return &m, nil
}

func (c *Client) write(ctx context.Context, method, path string, body json.RawMessage, opts []Option) (*Result, error) {
	raw, err := c.Do(ctx, method, path, body, opts...)
	if err != nil {
		return nil, err
	}
	res := &Result{Raw: raw}
	if len(raw) == 0 {
		return res, nil
	}
	if err := json.Unmarshal(raw, res); err != nil {
		return nil, fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return res, nil
}

// Do sends one request and returns the answer's body when its status is
// 2xx. Any other answer is an *mgmt.Error; a request that reached no API
// matches ErrNoDaemon.
func (c *Client) Do(ctx context.Context, method, path string, body json.RawMessage, opts ...Option) (json.RawMessage, error) {
	var r request
	for _, o := range opts {
		o(&r)
	}
	target := c.base + path
	if r.pool != "" {
		target += "?" + url.Values{PoolParam: {r.pool}}.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		ct := "application/json"
		if method == http.MethodPatch {
			ct = "application/merge-patch+json"
		}
		req.Header.Set("Content-Type", ct)
	}
	if r.ifMatch != nil {
		req.Header.Set(IfMatchHeader, strconv.FormatUint(*r.ifMatch, 10))
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			// No socket, or nobody behind it: no daemon. Anything else
			// (a socket only root may use) is for the caller to see.
			if errors.Is(op.Err, syscall.ENOENT) || errors.Is(op.Err, syscall.ECONNREFUSED) {
				return nil, fmt.Errorf("%w on %s: %w", ErrNoDaemon, c.where, op.Err)
			}
			return nil, fmt.Errorf("%s: %w", c.where, op.Err)
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, apiError(method, path, resp, b)
	}
	return bytes.TrimSpace(b), nil
}

// apiError is the *mgmt.Error of a refused request: the API's own
// {"error", "field"} when the answer is that, else the status and the
// start of the answer.
func apiError(method, path string, resp *http.Response, b []byte) *mgmt.Error {
	var e mgmt.Error
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		e.Status = resp.StatusCode
		return &e
	}
	msg := fmt.Sprintf("%s %s: %s", method, path, resp.Status)
	if s := strings.TrimSpace(string(b)); s != "" {
		if len(s) > maxExcerpt {
			s = s[:maxExcerpt] + "..."
		}
		msg += ": " + s
	}
	return &mgmt.Error{Status: resp.StatusCode, Message: msg}
}

// listOf is the list in raw: a JSON array, or an object holding it
// under key.
func listOf(raw json.RawMessage, key, what string) ([]json.RawMessage, error) {
	var list []json.RawMessage
	if len(raw) > 0 && raw[0] == '{' {
		var wrapped map[string]json.RawMessage
		if err := json.Unmarshal(raw, &wrapped); err != nil {
			return nil, fmt.Errorf("%s: decode the answer: %w", what, err)
		}
		raw = wrapped[key]
		if raw == nil {
			return nil, fmt.Errorf("%s: the answer has no %q", what, key)
		}
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%s: decode the answer: %w", what, err)
	}
	return list, nil
}
