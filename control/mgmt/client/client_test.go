package client_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/client"
	"github.com/ober-ingress/ober/control/mgmt/client/clienttest"
)

type svcForm struct {
	Name       string   `json:"name"`
	VIPs       []string `json:"vips"`
	Generation uint64   `json:"generation"`
	Backends   []struct {
		Name    string `json:"name"`
		Address string `json:"address"`
		Weight  int    `json:"weight"`
		State   string `json:"state"`
	} `json:"backends"`
}

func decode[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(raw, &v), "%s", raw)
	return v
}

func apiErr(t *testing.T, err error) *mgmt.Error {
	t.Helper()
	var e *mgmt.Error
	require.ErrorAs(t, err, &e)
	return e
}

// A service's whole life through the client, as an orchestrator drives it.
func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	fake := clienttest.New(t)
	c := client.New(fake.Socket)

	res, err := c.CreateService(ctx, json.RawMessage(`{"name":"web","mode":"tcp","port":8080}`))
	require.NoError(t, err)
	require.Equal(t, mgmt.AppliedReload, res.Applied)
	created := decode[svcForm](t, res.Object)
	require.Equal(t, []string{"10.20.0.1"}, created.VIPs, "an address from the pool")
	require.Equal(t, res.Generation, created.Generation)
	require.JSONEq(t, string(res.Raw), mustJSON(t, res.Result))

	_, err = c.PutBackend(ctx, "web", "b1", json.RawMessage(`{"address":"10.1.0.1:80","weight":10}`))
	require.NoError(t, err)
	res, err = c.PatchBackend(ctx, "web", "b1", json.RawMessage(`{"weight":50}`))
	require.NoError(t, err)
	require.Equal(t, mgmt.AppliedRuntime, res.Applied)
	gen := res.Generation

	res, err = c.Drain(ctx, "web", "b1", client.IfMatch(gen))
	require.NoError(t, err)
	require.Equal(t, gen+1, res.Generation)

	// A write that read an older generation is refused, and nothing changes.
	_, err = c.PatchBackend(ctx, "web", "b1", json.RawMessage(`{"weight":1}`), client.IfMatch(gen))
	require.Equal(t, http.StatusPreconditionFailed, apiErr(t, err).Status)

	_, err = c.PatchBackend(ctx, "web", "b1", json.RawMessage(`{"weight":300}`))
	e := apiErr(t, err)
	require.Equal(t, http.StatusUnprocessableEntity, e.Status)
	require.Equal(t, "services[web].backends[b1].weight", e.Field)
	require.Equal(t, "services[web].backends[b1].weight: 300: must be 0-256", e.Error())

	raw, err := c.Backend(ctx, "web", "b1")
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"b1","address":"10.1.0.1:80","weight":50,"state":"drain","generation":3}`, string(raw))

	list, err := c.Services(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	got := decode[svcForm](t, list[0])
	require.Equal(t, "web", got.Name)
	require.Len(t, got.Backends, 1)

	pools, err := c.Pools(ctx)
	require.NoError(t, err)
	require.Len(t, pools, 1)
	stats, err := c.Stats(ctx, "web")
	require.NoError(t, err)
	require.Contains(t, string(stats), `"b1"`)

	_, err = c.DeleteBackend(ctx, "web", "b1")
	require.NoError(t, err)
	_, err = c.DeleteService(ctx, "web")
	require.NoError(t, err)
	_, err = c.Service(ctx, "web")
	e = apiErr(t, err)
	require.Equal(t, http.StatusNotFound, e.Status)
	require.Equal(t, `services: "web": no such service`, e.Message)
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// What goes on the wire: the routes, names escaped, the pool as a query
// parameter and If-Match as the generation.
func TestRequests(t *testing.T) {
	ctx := context.Background()
	fake := clienttest.New(t)
	c := client.New(fake.Socket)
	_, err := c.PutService(ctx, "a b", json.RawMessage(`{"mode":"tcp","port":1}`))
	require.Error(t, err, "the fake refuses a space, as the API does")
	_, err = c.PutService(ctx, "db", json.RawMessage(`{"mode":"tcp","port":5432,"vips":["10.0.0.1"]}`))
	require.NoError(t, err)
	_, err = c.PutBackend(ctx, "db", "pg1", json.RawMessage(`{"address":"10.1.0.1:5432"}`), client.InPool("eu"))
	require.NoError(t, err)
	_, err = c.Disable(ctx, "db", "pg1", client.InPool("eu"), client.IfMatch(1))
	require.NoError(t, err)
	_, err = c.Enable(ctx, "db", "pg1")
	require.NoError(t, err)
	_, err = c.PatchService(ctx, "db", json.RawMessage(`{"balance":"roundrobin"}`))
	require.NoError(t, err)
	require.Equal(t, []string{
		"PUT /api/v1/services/a%20b",
		"PUT /api/v1/services/db",
		"PUT /api/v1/services/db/backends/pg1?pool=eu",
		"POST /api/v1/services/db/backends/pg1/disable?pool=eu [If-Match: 1]",
		"POST /api/v1/services/db/backends/pg1/enable",
		"PATCH /api/v1/services/db",
	}, fake.Requests())
	raw, ok := fake.ServiceJSON("db")
	require.True(t, ok)
	require.JSONEq(t, `{"name":"db","mode":"tcp","port":5432,"vips":["10.0.0.1"],"balance":"roundrobin","generation":5,
		"pools":[{"name":"eu","backends":[{"name":"pg1","address":"10.1.0.1:5432","state":"enabled","generation":3}]}]}`, string(raw))
}

func TestNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	_, err := client.New(sock).Services(context.Background())
	require.ErrorIs(t, err, client.ErrNoDaemon)
	require.Contains(t, err.Error(), "no daemon answers on "+sock+": ")

	// A socket file nobody listens on any more.
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	_, err = client.New(sock).Service(context.Background(), "web")
	require.ErrorIs(t, err, client.ErrNoDaemon)
}

// serveUnix serves h on a socket of its own.
func serveUnix(t *testing.T, h http.Handler) string {
	dir, err := os.MkdirTemp("", "ober-api")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return sock
}

// Answers that are not the API's own JSON still give an *mgmt.Error with
// the status; a listing may come as a bare array.
func TestOtherAnswers(t *testing.T) {
	sock := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case client.PathServices:
			_, _ = w.Write([]byte(`[{"name":"a"},{"name":"b"}]`))
		case client.PathPools:
			_, _ = w.Write([]byte(`{"pool":[]}`))
		default:
			http.Error(w, "go away", http.StatusUnauthorized)
		}
	}))
	c := client.New(sock)
	list, err := c.Services(context.Background())
	require.NoError(t, err)
	require.Len(t, list, 2)
	_, err = c.Pools(context.Background())
	require.EqualError(t, err, `GET /api/v1/pools: the answer has no "pools"`)
	_, err = c.DeleteService(context.Background(), "a")
	e := apiErr(t, err)
	require.Equal(t, http.StatusUnauthorized, e.Status)
	require.Equal(t, "DELETE /api/v1/services/a: 401 Unauthorized: go away", e.Error())
}

func TestTCP(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"a valid bearer token is required"}`))
			return
		}
		_, _ = w.Write([]byte(`[]`))
	}))
	// The handshake the untrusting client aborts is expected.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))

	c, err := client.NewTCP(srv.URL, "s3cret", ca)
	require.NoError(t, err)
	list, err := c.Services(context.Background())
	require.NoError(t, err)
	require.Empty(t, list)

	c, err = client.NewTCP(srv.URL, "wrong", ca)
	require.NoError(t, err)
	_, err = c.Services(context.Background())
	require.Equal(t, &mgmt.Error{Status: http.StatusUnauthorized, Message: "a valid bearer token is required"}, apiErr(t, err))

	// Without the CA, the server's certificate is not trusted.
	c, err = client.NewTCP(srv.URL, "s3cret", "")
	require.NoError(t, err)
	_, err = c.Services(context.Background())
	require.Error(t, err)
	require.False(t, errors.Is(err, client.ErrNoDaemon))
	require.Contains(t, err.Error(), "certificate")

	_, err = client.NewTCP("http://127.0.0.1:8405", "s3cret", ca)
	require.EqualError(t, err, `API URL "http://127.0.0.1:8405": want https://HOST:PORT (the TCP listener requires TLS)`)
	_, err = client.NewTCP(srv.URL, "s3cret", filepath.Join(t.TempDir(), "none.pem"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
