package httpsrc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// answer is a handler that answers every request with status, content
// type and body, and keeps the headers of the last request.
type answer struct {
	status int
	ctype  string
	body   string

	mu   sync.Mutex
	last http.Header
}

func (a *answer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.last = r.Header.Clone()
	a.mu.Unlock()
	if a.ctype != "" {
		w.Header().Set("Content-Type", a.ctype)
	}
	w.WriteHeader(cmpOr(a.status, http.StatusOK))
	_, _ = w.Write([]byte(a.body))
}

func (a *answer) header(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last.Get(name)
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

const goodList = `[
	{"host": "10.0.0.1", "port": 7480, "weight": 10, "priority": 1},
	{"host": "10.0.0.2", "port": 7480},
	{"host": "2001:DB8::1", "port": 443, "weight": 0, "priority": 2},
	{"host": "RGW3.example.", "port": 8080, "weight": 256}
]`

var goodBackends = []discovery.Backend{
	{Host: "10.0.0.1", Port: 7480, Weight: 10, Priority: 1},
	{Host: "10.0.0.2", Port: 7480, Weight: -1},
	{Host: "2001:db8::1", Port: 443, Weight: 0, Priority: 2},
	{Host: "rgw3.example", Port: 8080, Weight: 256},
}

// fetch sets up a source for srv (a TLS one through its own client) and
// fetches once.
func fetch(t *testing.T, srv *httptest.Server, opts Options) (discovery.Result, error) {
	t.Helper()
	opts.URL = srv.URL + opts.URL
	if srv.TLS != nil && opts.Client == nil && opts.CAFile == "" {
		opts.Client = srv.Client()
	}
	s, err := New(opts)
	require.NoError(t, err)
	return s.Fetch(context.Background())
}

func TestGoodList(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(http.Handler) *httptest.Server
	}{{"https", httptest.NewTLSServer}, {"http", httptest.NewServer}} {
		t.Run(tc.name, func(t *testing.T) {
			a := &answer{ctype: "application/json", body: goodList}
			srv := tc.start(a)
			defer srv.Close()
			res, err := fetch(t, srv, Options{URL: "/backends"})
			require.NoError(t, err)
			assert.Empty(t, res.Problems)
			assert.Equal(t, goodBackends, res.Backends)
			assert.Equal(t, "application/json", a.header("Accept"))
			assert.Empty(t, a.header("Authorization"), "no token file, no token")
		})
	}
}

func TestListEdges(t *testing.T) {
	for _, c := range []struct {
		name, body string
		want       []discovery.Backend
	}{
		{"empty list", "[]", nil},
		{"byte order mark and blanks", "\xef\xbb\xbf \n [{\"host\":\"10.0.0.1\",\"port\":1}]\n", []discovery.Backend{{Host: "10.0.0.1", Port: 1, Weight: -1}}},
		{"text/plain is fine when the body is a list", `[{"host":"::ffff:10.0.0.1","port":65535}]`, []discovery.Backend{{Host: "10.0.0.1", Port: 65535, Weight: -1}}},
	} {
		srv := httptest.NewServer(&answer{ctype: "text/plain", body: c.body})
		res, err := fetch(t, srv, Options{})
		srv.Close()
		require.NoError(t, err, c.name)
		assert.Equal(t, c.want, res.Backends, c.name)
		assert.Empty(t, res.Problems, c.name)
	}
}

func TestBadEntriesLeaveTheRestStanding(t *testing.T) {
	body := `[
		{"host": "10.0.0.1", "port": 7480},
		{"host": "10.0.0.2", "port": 0},
		{"host": "10.0.0.3"},
		{"host": "10.0.0.4", "port": 7480, "weight": 70000},
		{"host": "10.0.0.5", "port": 7480, "wieght": 10},
		{"host": "10.0.0.256", "port": 7480},
		{"host": "10.0.0.7:7480", "port": 7480},
		{"host": "bad host", "port": 7480},
		{"port": 7480},
		{"host": "10.0.0.8", "port": 70000},
		{"host": "10.0.0.9", "port": 7480.5},
		{"host": "10.0.0.10", "port": "7480"},
		{"host": "10.0.0.11", "port": 7480, "priority": 0},
		{"host": "10.0.0.12", "port": 7480, "weight": -1},
		{"host": 10, "port": 7480},
		"10.0.0.13:7480",
		null,
		{"host": "10.0.0.1", "port": 7480, "weight": 5},
		{"host": "rgw.example", "port": 7480, "weight": 256, "priority": 3}
	]`
	srv := httptest.NewServer(&answer{ctype: "application/json", body: body})
	defer srv.Close()
	res, err := fetch(t, srv, Options{})
	require.NoError(t, err)
	assert.Equal(t, []discovery.Backend{
		{Host: "10.0.0.1", Port: 7480, Weight: -1},
		{Host: "rgw.example", Port: 7480, Weight: 256, Priority: 3},
	}, res.Backends)
	want := []string{
		`entry 1 {"host": "10.0.0.2", "port": 0}: port 0`,
		`entry 2 {"host": "10.0.0.3"}: port missing`,
		`entry 3 {"host": "10.0.0.4", "port": 7480, "weight": 70000}: weight 70000: want 0-256`,
		`entry 4 {"host": "10.0.0.5", "port": 7480, "wieght": 10}: unknown field "wieght"`,
		`entry 5 {"host": "10.0.0.256", "port": 7480}: host "10.0.0.256": not an IP address`,
		`entry 6 {"host": "10.0.0.7:7480", "port": 7480}: host "10.0.0.7:7480": not an IP address or host name`,
		`entry 7 {"host": "bad host", "port": 7480}: host "bad host": not an IP address or host name`,
		`entry 8 {"port": 7480}: host missing`,
		`entry 9 {"host": "10.0.0.8", "port": 70000}: port 70000: want 1-65535`,
		`entry 10 {"host": "10.0.0.9", "port": 7480.5}: port: a number 7480.5: want an integer`,
		`entry 11 {"host": "10.0.0.10", "port": "7480"}: port: a string: want an integer`,
		`entry 12 {"host": "10.0.0.11", "port": 7480, "priority": 0}: priority 0: want 1 (best) or more, or leave it out`,
		`entry 13 {"host": "10.0.0.12", "port": 7480, "weight": -1}: weight -1: want 0-256`,
		`entry 14 {"host": 10, "port": 7480}: host: a number: want a string`,
		`entry 15 "10.0.0.13:7480": a string: want an object`,
		`entry 16 null: null: want an object`,
		`entry 17 {"host": "10.0.0.1", "port": 7480, "weight": 5}: 10.0.0.1:7480 is given already by entry 0`,
	}
	assert.Equal(t, want, res.Problems)
}

func TestStatusOtherThan200(t *testing.T) {
	body := "<html><body>\n\n\tInternal\x00 error\x1b[31m " + strings.Repeat("x", 300) + "</body></html>"
	srv := httptest.NewServer(&answer{status: http.StatusInternalServerError, ctype: "text/html", body: body})
	defer srv.Close()
	_, err := fetch(t, srv, Options{URL: "/list"})
	require.Error(t, err)
	msg := err.Error()
	assert.Contains(t, msg, "GET "+srv.URL+"/list")
	assert.Contains(t, msg, "status 500 Internal Server Error")
	// The body's first 200 bytes, with control characters replaced and
	// white space folded.
	assert.Contains(t, msg, `body "<html><body> Internal� error�[31m xxx`)
	assert.Contains(t, msg, strings.Repeat("x", 200-len("<html><body>\n\n\tInternal\x00 error\x1b[31m "))+`…"`)
	assert.NotContains(t, msg, strings.Repeat("x", 201-len("<html><body>\n\n\tInternal\x00 error\x1b[31m ")))
	assert.NotContains(t, msg, "\x00")
	assert.NotContains(t, msg, "\x1b")

	srv2 := httptest.NewServer(&answer{status: http.StatusNotFound})
	defer srv2.Close()
	_, err = fetch(t, srv2, Options{})
	assert.ErrorContains(t, err, `status 404 Not Found, want 200: body ""`)
}

func TestNotJSON(t *testing.T) {
	for _, c := range []struct {
		name, ctype, body string
		want              []string
	}{
		{"html", "text/html; charset=utf-8", "<!DOCTYPE html>\n<html><head><title>Login</title></head></html>",
			[]string{`content type "text/html; charset=utf-8"`, `it starts "<!DOCTYPE html> <html><head><title>Login</title></head></html>"`, "looks like HTML"}},
		{"garbage", "application/octet-stream", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
			[]string{`content type "application/octet-stream"`, `it starts "�PNG �`}},
		{"object", "application/json", `{"backends": []}`,
			[]string{`content type "application/json"`, `it starts "{\"backends\": []}"`, "a JSON object, not a list"}},
		{"broken list", "application/json", `[{"host": "10.0.0.1", "port": 7480},`,
			[]string{`content type "application/json"`, "not valid JSON: unexpected EOF"}},
		{"list and more", "application/json", `[] []`,
			[]string{"more after its JSON list"}},
		{"empty", "application/json", "",
			[]string{"the body is empty"}},
	} {
		srv := httptest.NewServer(&answer{ctype: c.ctype, body: c.body})
		_, err := fetch(t, srv, Options{})
		srv.Close()
		if assert.Error(t, err, c.name) {
			for _, w := range c.want {
				assert.Contains(t, err.Error(), w, c.name)
			}
		}
	}
}

func TestBounds(t *testing.T) {
	// Too big: one byte over MaxBytes is refused, never read whole.
	big := "[" + strings.Repeat(" ", discovery.MaxBytes) + "]"
	srv := httptest.NewServer(&answer{ctype: "application/json", body: big})
	_, err := fetch(t, srv, Options{})
	srv.Close()
	assert.ErrorContains(t, err, fmt.Sprintf("larger than %d bytes", discovery.MaxBytes))

	// Exactly MaxBytes is fine.
	fits := "[" + strings.Repeat(" ", discovery.MaxBytes-2) + "]"
	srv = httptest.NewServer(&answer{ctype: "application/json", body: fits})
	_, err = fetch(t, srv, Options{})
	srv.Close()
	assert.NoError(t, err)

	// Too many entries, even if each is fine.
	var sb strings.Builder
	sb.WriteString("[")
	for i := range discovery.MaxBackends + 1 {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"host":"10.%d.%d.1","port":80}`, i/256, i%256)
	}
	sb.WriteString("]")
	srv = httptest.NewServer(&answer{ctype: "application/json", body: sb.String()})
	_, err = fetch(t, srv, Options{})
	srv.Close()
	assert.ErrorContains(t, err, fmt.Sprintf("%d entries, more than %d", discovery.MaxBackends+1, discovery.MaxBackends))
}

func TestTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	_, err := fetch(t, srv, Options{Timeout: 300 * time.Millisecond})
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "GET "+srv.URL+": no answer within 300ms")

	// A body that starts and then stalls is bounded as well.
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`[{"host": "10.0.0.1",`))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv2.Close()
	_, err = fetch(t, srv2, Options{Timeout: 300 * time.Millisecond})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func writeToken(t *testing.T, token string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(p, []byte(token), 0o600))
	require.NoError(t, os.Chmod(p, mode))
	return p
}

func TestToken(t *testing.T) {
	a := &answer{ctype: "application/json", body: "[]"}
	srv := httptest.NewTLSServer(a)
	defer srv.Close()
	tok := writeToken(t, "s3cr3t.tok-en_1\n", 0o600)
	s, err := New(Options{URL: srv.URL, TokenFile: tok, Client: srv.Client()})
	require.NoError(t, err)
	_, err = s.Fetch(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Bearer s3cr3t.tok-en_1", a.header("Authorization"))

	// Read on every fetch: a rotated token is sent at once.
	require.NoError(t, os.WriteFile(tok, []byte("rotated"), 0o600))
	_, err = s.Fetch(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Bearer rotated", a.header("Authorization"))

	// A file others can read is refused, at New and at Fetch.
	loose := writeToken(t, "s3cr3t", 0o644)
	_, err = New(Options{URL: srv.URL, TokenFile: loose, Client: srv.Client()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "mode 0644: want 0600 or less")
	assert.Contains(t, err.Error(), loose)
	assert.NotContains(t, err.Error(), "s3cr3t")
	require.NoError(t, os.Chmod(tok, 0o640))
	_, err = s.Fetch(context.Background())
	assert.ErrorContains(t, err, "mode 0640")

	// Never over plain http, where anyone on the path reads it.
	_, err = New(Options{URL: "http://lists.example/backends", TokenFile: tok})
	assert.ErrorContains(t, err, "needs an https:// url")

	for _, c := range []struct {
		name string
		path func() string
		want string
	}{
		{"0400 is fine", func() string { return writeToken(t, "x", 0o400) }, ""},
		{"executable", func() string { return writeToken(t, "x", 0o700) }, "mode 0700"},
		{"someone else's", func() string {
			p := writeToken(t, "x", 0o600)
			require.NoError(t, os.Chown(p, 65534, 65534), "tests run as root")
			return p
		}, "owned by uid 65534"},
		{"empty", func() string { return writeToken(t, " \n", 0o600) }, "empty"},
		{"two lines", func() string { return writeToken(t, "s3cr3t\nmore", 0o600) }, "byte 6 is not a visible ASCII character"},
		{"missing", func() string { return filepath.Join(t.TempDir(), "none") }, "no such file"},
		{"a directory", func() string {
			d := filepath.Join(t.TempDir(), "d")
			require.NoError(t, os.Mkdir(d, 0o700))
			return d
		}, "not a regular file"},
	} {
		_, err := New(Options{URL: srv.URL, TokenFile: c.path(), Client: srv.Client()})
		if c.want == "" {
			assert.NoError(t, err, c.name)
			continue
		}
		if assert.Error(t, err, c.name) {
			assert.Contains(t, err.Error(), c.want, c.name)
			assert.NotContains(t, err.Error(), "s3cr3t", c.name)
		}
	}
}

// caFile writes srv's certificate as a PEM file.
func caFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644))
	return p
}

// otherCA writes a CA certificate of its own, not the test server's.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "other test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "other.pem")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	return p
}

func TestTLSVerification(t *testing.T) {
	srv := httptest.NewUnstartedServer(&answer{ctype: "application/json", body: goodList})
	// The handshakes refused below are the point, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()

	// The server's CA in CAFile: verified and trusted.
	res, err := fetch(t, srv, Options{CAFile: caFile(t, srv)})
	require.NoError(t, err)
	assert.Equal(t, goodBackends, res.Backends)

	// With the system's roots alone, the test CA is unknown.
	s, err := New(Options{URL: srv.URL})
	require.NoError(t, err)
	_, err = s.Fetch(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")

	// Another CA is no better.
	s, err = New(Options{URL: srv.URL, CAFile: otherCA(t)})
	require.NoError(t, err)
	_, err = s.Fetch(context.Background())
	assert.ErrorContains(t, err, "certificate")

	// A CA file with no certificate is refused at New.
	empty := filepath.Join(t.TempDir(), "empty.pem")
	require.NoError(t, os.WriteFile(empty, []byte("not a certificate\n"), 0o644))
	_, err = New(Options{URL: srv.URL, CAFile: empty})
	assert.ErrorContains(t, err, "no PEM certificate")
}

func TestNoRedirectFromHTTPSToHTTP(t *testing.T) {
	plain := httptest.NewServer(&answer{ctype: "application/json", body: goodList})
	defer plain.Close()
	srv := httptest.NewTLSServer(http.RedirectHandler(plain.URL+"/list", http.StatusFound))
	defer srv.Close()
	_, err := fetch(t, srv, Options{})
	assert.ErrorContains(t, err, "refused a redirect from https to "+plain.URL+"/list")

	// From http, a redirect is followed.
	from := httptest.NewServer(http.RedirectHandler(plain.URL+"/list", http.StatusFound))
	defer from.Close()
	res, err := fetch(t, from, Options{})
	require.NoError(t, err)
	assert.Equal(t, goodBackends, res.Backends)
}

func TestBadOptions(t *testing.T) {
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{URL: "ftp://example.com/list"}, `scheme "ftp": want https or http`},
		{Options{URL: "example.com/list"}, `scheme "": want https or http`},
		{Options{URL: "https:///list"}, "no host"},
		{Options{URL: "https://user:pass@example.com/list", Timeout: -time.Second}, "https://user:xxxxx@example.com/list: timeout -1s"},
		{Options{URL: "https://example.com/%zz"}, "invalid URL escape"},
		{Options{URL: "https://user:pass@example.com/%zz"}, "invalid URL escape"},
		{Options{URL: "https://example.com/list", CAFile: "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
	} {
		_, err := New(c.opts)
		if assert.ErrorContains(t, err, c.want, c.opts.URL) {
			assert.NotContains(t, err.Error(), "pass", "a password in the URL is never in an error")
		}
	}
}

func TestSanitize(t *testing.T) {
	assert.Equal(t, "a b c", sanitize([]byte(" a\r\n\tb  c "), 100))
	assert.Equal(t, "a\uFFFDb\uFFFDc", sanitize([]byte("a\x00b\xffc"), 100))
	assert.Equal(t, "ab…", sanitize([]byte("abcdef"), 2))
	// A character cut by the bound is left out, not replaced.
	assert.Equal(t, "a…", sanitize([]byte("aé"), 2))
	assert.Equal(t, "aé", sanitize([]byte("aé"), 3))
}
