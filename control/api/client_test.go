package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/runtime/supervisor"
)

// serve runs the API's own Server with h on a loopback port and returns
// a client of it.
func serve(t *testing.T, h Handlers) *Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := New(h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Shutdown(context.Background()))
		require.NoError(t, <-done)
	})
	return NewClient(ln.Addr().String(), ClientOptions{})
}

// fake answers every request with code and body.
func fake(t *testing.T, code int, body string) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return NewClient(strings.TrimPrefix(srv.URL, "http://"), ClientOptions{})
}

// What the server encodes is what the client decodes, both parts
// included.
func TestClientStatusRoundTrip(t *testing.T) {
	started := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	want := &Status{
		DataplaneStatus: &DataplaneStatus{
			Root:        "/sys/fs/bpf/ober",
			Attachments: []AttachmentStatus{{Iface: "eth1", Ifindex: 3, Mode: "native", ProgramID: 57}},
			VIPs:        []VIPStatus{{Addr: netip.MustParseAddr("192.0.2.10")}},
			Whitelists:  []WhitelistStatus{},
			Counters:    CountersStatus{Unassigned: 4},
		},
		Daemon: &DaemonStatus{
			Node: "n1", Version: "1.2.3", PID: 42, StartedAt: started, UptimeSeconds: 9,
			Health: HealthStatus{OK: true},
			Config: ConfigStatus{Path: "/etc/ober/ober.yaml", Generation: 2, LoadedAt: started, LastReload: ReloadOK},
			HAProxy: HAProxyStatus{Instances: []supervisor.InstanceStatus{
				{Index: 0, CPU: 1, PID: 100, State: supervisor.StateHealthy},
			}},
			Backends: []BackendStatus{{Name: "s3a", Address: "10.0.0.1:80", Up: true, UpOn: 1, CheckedBy: 1}},
			VIPs:     []VIPHeldStatus{{VIP: netip.MustParseAddr("192.0.2.10"), Held: true, State: "local"}},
			VRRP:     &VRRPStatus{Fault: "track file says unhealthy"},
		},
	}
	c := serve(t, Handlers{
		Health: func(context.Context) (bool, string) { return true, "" },
		Status: func(context.Context) (*Status, error) { return want, nil },
	})
	got, err := c.Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, want, got)
}

// /health's 503 is an answer with its reason, not an error.
func TestClientHealth(t *testing.T) {
	var failing atomic.Bool
	c := serve(t, Handlers{
		Health: func(context.Context) (bool, string) {
			if !failing.Load() {
				return true, ""
			}
			return false, "no backend up"
		},
		Status: func(context.Context) (*Status, error) { return nil, errors.New("unused") },
	})
	h, err := c.Health(context.Background())
	require.NoError(t, err)
	require.Equal(t, Health{Code: http.StatusOK, Body: "ok"}, h)
	require.True(t, h.OK())

	failing.Store(true)
	h, err = c.Health(context.Background())
	require.NoError(t, err)
	require.Equal(t, Health{Code: http.StatusServiceUnavailable, Body: "no backend up"}, h)
	require.False(t, h.OK())
}

func TestClientMetrics(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ober_healthy", Help: "test"})
	g.Set(1)
	c := serve(t, Handlers{
		Health:  func(context.Context) (bool, string) { return true, "" },
		Status:  func(context.Context) (*Status, error) { return nil, errors.New("unused") },
		Metrics: g,
	})
	m, err := c.Metrics(context.Background())
	require.NoError(t, err)
	require.Contains(t, m, "\nober_healthy 1\n")
}

// A daemon that fails to build its status: the error names the URL, the
// HTTP status and what the daemon said.
func TestClientStatusServerError(t *testing.T) {
	c := serve(t, Handlers{
		Health: func(context.Context) (bool, string) { return true, "" },
		Status: func(context.Context) (*Status, error) { return nil, errors.New("read dataplane: map gone") },
	})
	_, err := c.Status(context.Background())
	var he *HTTPError
	require.ErrorAs(t, err, &he)
	require.Equal(t, http.StatusInternalServerError, he.Code)
	require.Equal(t, "GET "+c.base+"/status: 500 Internal Server Error: read dataplane: map gone", err.Error())
}

func TestClientRefusesBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
		body string
		want string
	}{
		{"not found", http.StatusNotFound, "404 page not found\n", `/status: 404 Not Found: 404 page not found$`},
		{"bad JSON", http.StatusOK, `{"root": `, `/status: decode: unexpected EOF$`},
		{"wrong type", http.StatusOK, `{"root": 7}`, `/status: decode: json: cannot unmarshal number`},
		{"no daemon part", http.StatusOK, `{"root": "/x"}`, `/status: incomplete answer`},
		{"someone else", http.StatusOK, `{"daemon": {"pid": 1}}`, `/status: incomplete answer`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake(t, tc.code, tc.body)
			st, err := c.Status(context.Background())
			require.Nil(t, st)
			require.Error(t, err)
			require.Regexp(t, `^GET http://127\.0\.0\.1:\d+`+tc.want, err.Error())
		})
	}
	_, err := fake(t, http.StatusServiceUnavailable, "").Metrics(context.Background())
	require.Regexp(t, `^GET http://127\.0\.0\.1:\d+/metrics: 503 Service Unavailable$`, err.Error())
}

// A cancelled context ends a request the daemon does not answer.
func TestClientContextCancel(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(func() { close(release); srv.Close() })
	c := NewClient(strings.TrimPrefix(srv.URL, "http://"), ClientOptions{Timeout: time.Minute})

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Status(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), c.base+"/status")
	require.Less(t, time.Since(start), 10*time.Second)
}

// The client's own timeout ends a request when the caller set none.
func TestClientTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(func() { close(release); srv.Close() })
	c := NewClient(strings.TrimPrefix(srv.URL, "http://"), ClientOptions{Timeout: 100 * time.Millisecond})
	_, err := c.Health(context.Background())
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "%v", err)
}

func TestClientDialAndAddress(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:8404":  "http://127.0.0.1:8404",
		"0.0.0.0:8404":    "http://127.0.0.1:8404",
		":8404":           "http://127.0.0.1:8404",
		"[::]:8404":       "http://[::1]:8404",
		"[2001:db8::1]:9": "http://[2001:db8::1]:9",
		"node1:8404":      "http://node1:8404",
	} {
		require.Equal(t, want, NewClient(listen, ClientOptions{}).base, listen)
	}

	// Dial decides where the connection goes, whatever the address says:
	// the harnesses dial inside a node's namespace.
	target := fake(t, http.StatusOK, "ok\n")
	var dialled []string
	c := NewClient("192.0.2.1:8404", ClientOptions{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialled = append(dialled, addr)
		var d net.Dialer
		return d.DialContext(ctx, network, strings.TrimPrefix(target.base, "http://"))
	}})
	h, err := c.Health(context.Background())
	require.NoError(t, err)
	require.True(t, h.OK())
	require.Equal(t, []string{"192.0.2.1:8404"}, dialled)
}
