package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// defaultTimeout bounds each request of a Client: the daemon answers
// from memory, so a slow answer means it is stuck.
const defaultTimeout = 5 * time.Second

// maxExcerpt bounds how much of an unexpected answer goes into an error
// and how much of /health's reason is read.
const maxExcerpt = 4096

// ClientOptions tune a Client; the zero value suits a daemon on this host.
type ClientOptions struct {
	// Dial makes the connections, for instance from inside another
	// network namespace; nil dials from the caller's.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds each request; 0 means 5s.
	Timeout time.Duration
}

// Client asks one node's API (GET /health, /status, /metrics). It is
// safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the API listening on listen, a
// "host:port" as in api.listen. A wildcard host (0.0.0.0, ::, empty) is
// reached through loopback.
func NewClient(listen string, o ClientOptions) *Client {
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	// No proxy from the environment: the daemon is on the node. No
	// keep-alive either: callers ask now and then, and an idle
	// connection would outlive a daemon that restarts.
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true, DialContext: o.Dial}
	return &Client{base: baseURL(listen), hc: &http.Client{Timeout: o.Timeout, Transport: tr}}
}

// baseURL is the URL of the API listening on listen ("host:port"),
// reaching a wildcard address through loopback.
func baseURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// HTTPError is an answer other than the one expected.
type HTTPError struct {
	URL    string
	Code   int
	Status string // "503 Service Unavailable"
	// Body is the start of the answer, trimmed.
	Body string
}

func (e *HTTPError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("GET %s: %s", e.URL, e.Status)
	}
	return fmt.Sprintf("GET %s: %s: %s", e.URL, e.Status, e.Body)
}

// Health is /health's answer.
type Health struct {
	// Code is the HTTP status: 200 when the node can serve, 503 when it
	// cannot.
	Code int
	// Body is the answer's text, trimmed: "ok", or why the node cannot
	// serve.
	Body string
}

// OK reports whether the node can serve.
func (h Health) OK() bool { return h.Code == http.StatusOK }

// Health asks /health. Any HTTP answer is returned, a 503 included; the
// error is for a request that got none.
func (c *Client) Health(ctx context.Context) (Health, error) {
	resp, url, err := c.get(ctx, "/health")
	if err != nil {
		return Health{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxExcerpt))
	if err != nil {
		return Health{}, fmt.Errorf("GET %s: read: %w", url, err)
	}
	return Health{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}, nil
}

// Status asks /status. A daemon's answer always has both the dataplane's
// and the daemon's part; one without either is an error, as is any
// answer but 200.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	resp, url, err := c.getOK(ctx, "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("GET %s: decode: %w", url, err)
	}
	if st.DataplaneStatus == nil || st.Daemon == nil {
		return nil, fmt.Errorf("GET %s: incomplete answer: no dataplane or no daemon part", url)
	}
	return &st, nil
}

// Metrics asks /metrics and returns the Prometheus text.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, url, err := c.getOK(ctx, "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: read: %w", url, err)
	}
	return string(b), nil
}

func (c *Client) get(ctx context.Context, path string) (*http.Response, string, error) {
	url := c.base + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, url, fmt.Errorf("GET %s: %w", url, err)
	}
	// The error of Do names the method and the URL already.
	resp, err := c.hc.Do(req)
	return resp, url, err
}

// getOK is get, with any answer but 200 an *HTTPError.
func (c *Client) getOK(ctx context.Context, path string) (*http.Response, string, error) {
	resp, url, err := c.get(ctx, path)
	if err != nil {
		return nil, url, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxExcerpt))
		return nil, url, &HTTPError{URL: url, Code: resp.StatusCode, Status: resp.Status, Body: strings.TrimSpace(string(b))}
	}
	return resp, url, nil
}
