package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// mgmtClient speaks to the daemon's management API over its unix socket.
type mgmtClient struct {
	t  *testing.T
	hc *http.Client
}

func newMgmtClient(t *testing.T, socket string) *mgmtClient {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &mgmtClient{t: t, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// do sends a request and returns the status and the decoded JSON answer.
func (c *mgmtClient) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://ober"+path, rd)
	require.NoError(c.t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	out := map[string]any{}
	if len(bytes.TrimSpace(data)) > 0 {
		require.NoError(c.t, json.Unmarshal(data, &out), "%s %s: %s", method, path, data)
	}
	return resp.StatusCode, out
}

// The management API on a real node: a tcp service created, given a
// backend, its weight changed through the runtime API, and deleted; every
// change in ober.yaml, with its comments kept, and in force when the
// answer comes.
func TestMgmtLifecycle(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	be := s.BackendIP(0)
	tcpSvcListen(t, s.Backend(), netip.AddrPortFrom(be, 9200).String(), func(c net.Conn) { io.WriteString(c, "one\n") })
	c := s.Config(nodetest.Params{Instances: 2})
	s.WriteConfig(c)
	text, err := os.ReadFile(s.ConfigPath)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(s.ConfigPath, append([]byte("# the operator's note\n"), text...), 0o600))
	s.Start()
	api := newMgmtClient(t, filepath.Join(c.Node.RuntimeDir, config.DefaultAPISocketName))

	code, out := api.do("PUT", "/api/v1/services/echo", fmt.Sprintf(
		`{"mode": "tcp", "port": 7700, "backends": [{"name": "b0", "address": "%s:9200"}]}`, be))
	require.Equal(t, http.StatusOK, code, "%v", out)
	require.Equal(t, "reload", out["applied"])
	require.Equal(t, "one", mgmtRead(t, s, 7700), "in force when the answer came")

	code, out = api.do("PATCH", "/api/v1/services/echo/backends/b0", `{"weight": 50}`)
	require.Equal(t, http.StatusOK, code, "%v", out)
	require.Equal(t, "runtime", out["applied"], "a weight goes through the runtime API")

	code, out = api.do("PATCH", "/api/v1/services/echo/backends/b0", `{"weight": 300}`)
	require.Equal(t, http.StatusUnprocessableEntity, code, "%v", out)
	require.Equal(t, "services[echo].backends[b0].weight", out["field"])

	code, out = api.do("GET", "/api/v1/services/echo", "")
	require.Equal(t, http.StatusOK, code, "%v", out)

	file, err := os.ReadFile(s.ConfigPath)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(file), "# the operator's note\n"), "comments kept:\n%s", file)
	require.Contains(t, string(file), "weight: 50")

	code, out = api.do("DELETE", "/api/v1/services/echo", "")
	require.Equal(t, http.StatusOK, code, "%v", out)
	_, err = mgmtDial(t, s, 7700)
	require.Error(t, err, "the deleted service no longer answers")
}

func mgmtDial(t *testing.T, s *nodetest.Site, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.ClientDialer().DialContext(ctx, "tcp", netip.AddrPortFrom(nodetest.VIP, port).String())
}

// mgmtRead reads what the service's backend says first.
func mgmtRead(t *testing.T, s *nodetest.Site, port uint16) string {
	t.Helper()
	text, _ := mgmtReadErr(t, s, port)
	return text
}

// mgmtReadOrClosed is mgmtRead that requires the read to end by the
// service closing (or resetting) the connection, not by the deadline.
func mgmtReadOrClosed(t *testing.T, s *nodetest.Site, port uint16) string {
	t.Helper()
	text, err := mgmtReadErr(t, s, port)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection stayed open: %v", err)
	return text
}

// mgmtReadErr reads up to 64 bytes within 5 s; err is how the read ended.
func mgmtReadErr(t *testing.T, s *nodetest.Site, port uint16) (string, error) {
	t.Helper()
	conn, err := mgmtDial(t, s, port)
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(conn, buf, 1)
	return strings.TrimSpace(string(buf[:n])), err
}

// A whole lifecycle through the CLI alone, against a real node: the
// commands speak to the daemon's socket, and each change is in force when
// the command returns.
func TestMgmtCLILifecycle(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	b0, b1 := s.BackendIP(0), s.BackendIP(1)
	tcpSvcListen(t, s.Backend(), netip.AddrPortFrom(b0, 9200).String(), func(c net.Conn) { io.WriteString(c, "b0\n") })
	tcpSvcListen(t, s.Backend(), netip.AddrPortFrom(b1, 9200).String(), func(c net.Conn) { io.WriteString(c, "b1\n") })
	c := s.Config(nodetest.Params{Instances: 1})
	s.WriteConfig(c)
	s.Start()
	socket := filepath.Join(c.Node.RuntimeDir, config.DefaultAPISocketName)
	ober := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(oberBin, append(args, "--socket", socket)...).CombinedOutput()
		require.NoError(t, err, "ober %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	ober("service", "create", "--name", "web", "--mode", "tcp", "--port", "7800", "--vip", nodetest.VIP.String(),
		"--backend", fmt.Sprintf("b0=%s:9200", b0))
	require.Equal(t, "b0", mgmtRead(t, s, 7800))
	ober("backend", "add", "web", "b1", "--address", fmt.Sprintf("%s:9200", b1))
	ober("backend", "drain", "web", "b0")
	for range 10 {
		require.Equal(t, "b1", mgmtRead(t, s, 7800), "b0 drains: new connections go to b1")
	}
	out := ober("backend", "weight", "web", "b1", "50")
	require.Contains(t, out, "runtime API")
	require.Contains(t, ober("service", "show", "web"), "b1")
	require.Contains(t, ober("service", "list"), "web")
	ober("backend", "remove", "web", "b0")
	ober("service", "delete", "web")
	_, err := mgmtDial(t, s, 7800)
	require.Error(t, err, "the deleted service no longer answers")
	file, err := os.ReadFile(s.ConfigPath)
	require.NoError(t, err)
	require.NotContains(t, string(file), "web", "nothing of the service is left in ober.yaml")
}

// GORB's own REST calls, sent with curl on the node as a GORB script
// would, against a real ober with api.gorb_compat: the seed's examples
// create a service and a backend that serve, a weight change, a refused
// IPVS-only method, and the deletes.
func TestMgmtGORB(t *testing.T) {
	netnstest.RequireTool(t, "curl", "curl")
	s := nodetest.New(t, oberBin, 1)
	be := s.BackendIP(0)
	tcpSvcListen(t, s.Backend(), netip.AddrPortFrom(be, 9300).String(), func(c net.Conn) { io.WriteString(c, "gorb\n") })
	c := s.Config(nodetest.Params{Instances: 1})
	c.API.GORBCompat = "127.0.0.1:4672"
	s.WriteConfig(c)
	s.Start()
	curl := func(method, path, body string) (int, string) {
		t.Helper()
		args := []string{"-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "http://127.0.0.1:4672" + path}
		if body != "" {
			args = append(args, "-H", "Content-Type: application/json", "-d", body)
		}
		out, err := s.Node.Exec(context.Background(), "curl", args...).Output()
		require.NoError(t, err)
		text := strings.TrimSpace(string(out))
		i := strings.LastIndex(text, "\n")
		code := 0
		fmt.Sscanf(text[i+1:], "%d", &code)
		return code, text[:max(i, 0)]
	}
	code, out := curl("PUT", "/service/web", fmt.Sprintf(`{"host": "%s", "port": 7900, "protocol": "tcp", "method": "wrr", "persistent": false}`, nodetest.VIP))
	require.Equal(t, http.StatusOK, code, out)
	// Without backends yet, the service closes what it is given, and a
	// crash before its first backend keeps it (it is in ober.yaml).
	require.Equal(t, "", mgmtReadOrClosed(t, s, 7900), "a service without backends closes the connection")
	s.Kill()
	s.Start()
	code, out = curl("GET", "/service/web", "")
	require.Equal(t, http.StatusOK, code, "the service without backends survives kill -9: %s", out)
	require.Regexp(t, `"port": ?7900`, out)
	code, out = curl("PUT", "/service/web/b0", fmt.Sprintf(
		`{"host": "%s", "port": 9300, "method": "nat", "weight": 100, "pulse": {"type": "tcp", "interval": "1s"}}`, be))
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, "gorb", mgmtRead(t, s, 7900), "the GORB service serves")

	code, out = curl("PATCH", "/service/web/b0", `{"weight": 50}`)
	require.Equal(t, http.StatusOK, code, out)
	code, out = curl("GET", "/service/web/b0", "")
	require.Equal(t, http.StatusOK, code, out)
	require.Regexp(t, `"weight": ?50`, out)

	code, out = curl("PUT", "/service/web/b1", fmt.Sprintf(`{"host": "%s", "port": 9301, "method": "dr"}`, be))
	require.Equal(t, http.StatusUnprocessableEntity, code, out)
	require.Contains(t, out, "nat", "the refusal names ober's nearest method")

	code, out = curl("DELETE", "/service/web", "")
	require.Equal(t, http.StatusOK, code, out)
	_, err := mgmtDial(t, s, 7900)
	require.Error(t, err)
}

// The file is the single source of truth: a manual edit and a SIGHUP come
// through the API as they are, counted as a change of the object, and a
// write that read the object before the edit is refused.
func TestMgmtManualEdit(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	be := s.BackendIP(0)
	tcpSvcListen(t, s.Backend(), netip.AddrPortFrom(be, 9200).String(), func(c net.Conn) { io.WriteString(c, "one\n") })
	c := s.Config(nodetest.Params{Instances: 1})
	s.WriteConfig(c)
	s.Start()
	api := newMgmtClient(t, filepath.Join(c.Node.RuntimeDir, config.DefaultAPISocketName))
	code, out := api.do("PUT", "/api/v1/services/echo", fmt.Sprintf(
		`{"mode": "tcp", "port": 7700, "backends": [{"name": "b0", "address": "%s:9200", "weight": 100}]}`, be))
	require.Equal(t, http.StatusOK, code, "%v", out)
	gen := out["generation"].(float64)

	file, err := os.ReadFile(s.ConfigPath)
	require.NoError(t, err)
	edited := strings.Replace(string(file), "weight: 100", "weight: 70 # by hand", 1)
	require.NotEqual(t, string(file), edited)
	require.NoError(t, os.WriteFile(s.ConfigPath, []byte(edited), 0o600))
	before := s.Status().Daemon.Config.Generation
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.Generation > before }, 10*time.Second, 50*time.Millisecond)

	code, out = api.do("GET", "/api/v1/services/echo/backends/b0", "")
	require.Equal(t, http.StatusOK, code, "%v", out)
	require.EqualValues(t, 70, out["weight"], "the API reads the file as it is")
	code, out = api.do("GET", "/api/v1/services/echo", "")
	require.Equal(t, http.StatusOK, code, "%v", out)
	require.Greater(t, out["generation"].(float64), gen, "the manual edit counts as a change")

	req := func(ifMatch float64) int {
		r, err := http.NewRequest("PATCH", "http://ober/api/v1/services/echo", strings.NewReader(`{"max_connections": 100}`))
		require.NoError(t, err)
		r.Header.Set("Content-Type", "application/merge-patch+json")
		r.Header.Set("If-Match", fmt.Sprintf("%d", int(ifMatch)))
		resp, err := api.hc.Do(r)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusPreconditionFailed, req(gen), "a write based on the object before the edit")
	require.Equal(t, http.StatusOK, req(out["generation"].(float64)))
	file, err = os.ReadFile(s.ConfigPath)
	require.NoError(t, err)
	require.Contains(t, string(file), "# by hand", "the operator's comment stays")
}

// 50 clients at once, each adding its own backend to one service on a real
// node: every write lands, the service's generation counts them all, the
// daemon batches them into few reloads, and a write with a stale If-Match
// is refused.
func TestMgmtConcurrentWriters(t *testing.T) {
	const writers = 50
	s := nodetest.New(t, oberBin, 1)
	be := s.BackendIP(0)
	c := s.Config(nodetest.Params{Instances: 1})
	s.WriteConfig(c)
	s.Start()
	api := newMgmtClient(t, filepath.Join(c.Node.RuntimeDir, config.DefaultAPISocketName))
	code, out := api.do("PUT", "/api/v1/services/many", fmt.Sprintf(
		`{"mode": "tcp", "port": 7700, "health": {"kind": "none"}, "backends": [{"name": "b00", "address": "%s:9000"}]}`, be))
	require.Equal(t, http.StatusOK, code, "%v", out)
	gen0 := out["generation"].(float64)
	cfgGen0 := s.Status().Daemon.Config.Generation

	errs := make(chan error, writers)
	for i := 1; i <= writers; i++ {
		go func() {
			code, out := api.do("PUT", fmt.Sprintf("/api/v1/services/many/backends/w%02d", i),
				fmt.Sprintf(`{"address": "%s:%d"}`, be, 10000+i))
			if code != http.StatusOK {
				errs <- fmt.Errorf("w%02d: %d %v", i, code, out)
				return
			}
			errs <- nil
		}()
	}
	for range writers {
		require.NoError(t, <-errs)
	}
	code, out = api.do("GET", "/api/v1/services/many", "")
	require.Equal(t, http.StatusOK, code, "%v", out)
	require.Len(t, out["backends"], writers+1, "every write is there")
	require.Equal(t, gen0+writers, out["generation"].(float64), "the generation counts every write")
	reloads := s.Status().Daemon.Config.Generation - cfgGen0
	t.Logf("%d writes applied in %d reloads", writers, reloads)
	// The first write goes alone, the ones queued meanwhile as one group
	// (2 reloads in the runs of BENCHMARKS.md's burst); a client that
	// connects late may make a third.
	require.LessOrEqual(t, reloads, uint64(4), "writes queued together share a reload")

	r, err := http.NewRequest("PATCH", "http://ober/api/v1/services/many", strings.NewReader(`{"max_connections": 10}`))
	require.NoError(t, err)
	r.Header.Set("Content-Type", "application/merge-patch+json")
	r.Header.Set("If-Match", fmt.Sprintf("%d", int(gen0)))
	resp, err := api.hc.Do(r)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusPreconditionFailed, resp.StatusCode)
}
