package access

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fixture is a Handler in front of a handler that records who it saw
// and, on writes, fills in the audit record.
type fixture struct {
	h     http.Handler
	log   bytes.Buffer
	calls int
	who   string
	clock *fakeClock
}

type otherWhoKey struct{}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	tok, err := ParseTokens(strings.NewReader(tokensText))
	require.NoError(t, err)
	f := &fixture{clock: newClock()}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls++
		f.who, _ = r.Context().Value(otherWhoKey{}).(string)
		require.Equal(t, f.who, Who(r.Context()))
		if IsWrite(r.Method) {
			a := Audit(r.Context())
			a.Diff = "-    weight: 100\n+    weight: 50\n"
			a.Applied = "runtime"
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "{}\n")
	})
	f.h = Handler(next, Options{
		Tokens: func() *Tokens { return tok },
		SetWho: func(ctx context.Context, who string) context.Context {
			return context.WithValue(ctx, otherWhoKey{}, who)
		},
		Log:     slog.New(slog.NewJSONHandler(&f.log, nil)),
		Limiter: limiterOn(f.clock, DefaultMaxSources),
	})
	return f
}

// do makes a request from addr with the given bearer secret ("" for
// none) and returns the status and the error message.
func (f *fixture) do(method, target, secret, addr string) (int, string) {
	r := httptest.NewRequest(method, target, strings.NewReader("{}"))
	r.RemoteAddr = addr
	if secret != "" {
		r.Header.Set("Authorization", "Bearer "+secret)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	var e struct{ Error string }
	json.Unmarshal(w.Body.Bytes(), &e)
	return w.Code, e.Error
}

// auditLines are the audit log's lines, decoded.
func (f *fixture) auditLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(f.log.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

const client = "192.0.2.7:40000"

func TestTokens(t *testing.T) {
	f := newFixture(t)
	path := "/api/v1/services/web/backends/b1"

	code, msg := f.do("GET", path, "", client)
	require.Equal(t, http.StatusUnauthorized, code)
	require.Equal(t, "authentication required: send Authorization: Bearer <token>, or a client certificate", msg)

	code, msg = f.do("PUT", path, "wrong-0123456789abcdef0123456789abcdef", client)
	require.Equal(t, http.StatusUnauthorized, code)
	require.Equal(t, "unknown token", msg)

	code, msg = f.do("PUT", path, readSecret, client)
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, `token "grafana" has read scope: PUT needs write`, msg)
	code, _ = f.do("POST", path+"/drain", readSecret, client)
	require.Equal(t, http.StatusForbidden, code)
	code, _ = f.do("DELETE", path, readSecret, client)
	require.Equal(t, http.StatusForbidden, code)
	require.Zero(t, f.calls, "nothing refused reaches the API")

	code, _ = f.do("GET", path, readSecret, client)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "grafana", f.who)
	code, _ = f.do("HEAD", path, readSecret, client)
	require.Equal(t, http.StatusOK, code)

	code, _ = f.do("PUT", path, writeSecret, client)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "janitor", f.who)
	require.Equal(t, 3, f.calls)
}

// A token in the URL is refused, even a good one: it ends up in logs.
func TestTokenInURLRefused(t *testing.T) {
	f := newFixture(t)
	code, msg := f.do("GET", "/api/v1/services?access_token="+writeSecret, "", client)
	require.Equal(t, http.StatusUnauthorized, code)
	require.Contains(t, msg, "never in the URL")
	code, _ = f.do("GET", "/api/v1/services?token="+writeSecret, writeSecret, client)
	require.Equal(t, http.StatusUnauthorized, code)
	require.Zero(t, f.calls)

	code, _ = f.do("PUT", "/api/v1/services/web?token="+writeSecret, "", client)
	require.Equal(t, http.StatusUnauthorized, code)
	lines := f.auditLines(t)
	require.Len(t, lines, 1)
	require.Equal(t, "/api/v1/services/web", lines[0]["path"])
	require.NotContains(t, f.log.String(), writeSecret, "the audit log never holds a secret")

	r := httptest.NewRequest("GET", "/api/v1/services", nil)
	r.Header.Set("Authorization", "Basic amFuaXRvcjp4")
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	require.Equal(t, http.StatusUnauthorized, w.Code)
	require.Equal(t, `Bearer realm="ober"`, w.Header().Get("WWW-Authenticate"))
}

// After a burst of failures a source gets 429, even with a good token,
// other sources are not affected, and it recovers as time passes.
func TestFailedAuthenticationsAreLimited(t *testing.T) {
	f := newFixture(t)
	for range DefaultFailBurst {
		code, _ := f.do("GET", "/api/v1/services", "guess-0123456789abcdef0123456789abcdef", client)
		require.Equal(t, http.StatusUnauthorized, code)
	}
	r := httptest.NewRequest("GET", "/api/v1/services", nil)
	r.RemoteAddr = client
	r.Header.Set("Authorization", "Bearer "+writeSecret)
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	require.Equal(t, http.StatusTooManyRequests, w.Code)
	require.Equal(t, "1", w.Header().Get("Retry-After"))
	require.Zero(t, f.calls)

	code, _ := f.do("GET", "/api/v1/services", writeSecret, "192.0.2.8:40000")
	require.Equal(t, http.StatusOK, code, "another address is not limited")

	// Successes cost nothing: a good client is never limited.
	for range 3 * DefaultFailBurst {
		code, _ = f.do("GET", "/api/v1/services", readSecret, "192.0.2.9:1")
		require.Equal(t, http.StatusOK, code)
	}

	f.clock.add(time.Second)
	code, _ = f.do("GET", "/api/v1/services", writeSecret, client)
	require.Equal(t, http.StatusOK, code)
	// A second's worth of failures, then limited again.
	for range DefaultFailRate {
		code, _ = f.do("GET", "/api/v1/services", "guess-0123456789abcdef0123456789abcdef", client)
		require.Equal(t, http.StatusUnauthorized, code)
	}
	code, _ = f.do("GET", "/api/v1/services", writeSecret, client)
	require.Equal(t, http.StatusTooManyRequests, code)
}

// Every write is logged with who, what, the outcome and the diff,
// refused ones included; reads are not.
func TestAuditLog(t *testing.T) {
	f := newFixture(t)
	f.do("GET", "/api/v1/services", writeSecret, client)
	f.do("HEAD", "/api/v1/services", readSecret, client)
	f.do("GET", "/api/v1/services", "", client)
	require.Empty(t, f.auditLines(t), "reads are not logged")

	f.do("PATCH", "/api/v1/services/web/backends/b1", writeSecret, client)
	f.do("PUT", "/api/v1/services/web", readSecret, client)
	f.do("DELETE", "/api/v1/services/web", "", client)

	lines := f.auditLines(t)
	require.Len(t, lines, 3)
	for _, l := range lines {
		require.Equal(t, "api write", l["msg"])
		require.Equal(t, "192.0.2.7", l["source"])
	}
	require.Equal(t, "janitor", lines[0]["who"])
	require.Equal(t, "PATCH", lines[0]["method"])
	require.Equal(t, "/api/v1/services/web/backends/b1", lines[0]["path"])
	require.EqualValues(t, 200, lines[0]["status"])
	require.Equal(t, "-    weight: 100\n+    weight: 50\n", lines[0]["diff"])
	require.Equal(t, "runtime", lines[0]["applied"])

	require.Equal(t, "grafana", lines[1]["who"])
	require.EqualValues(t, 403, lines[1]["status"])
	require.Equal(t, `token "grafana" has read scope: PUT needs write`, lines[1]["error"])
	require.NotContains(t, lines[1], "diff")

	require.Equal(t, "", lines[2]["who"])
	require.Equal(t, "DELETE", lines[2]["method"])
	require.EqualValues(t, 401, lines[2]["status"])
}

// Audit outside the middleware is harmless.
func TestAuditWithoutHandler(t *testing.T) {
	Audit(context.Background()).Diff = "x"
	require.Equal(t, "", Who(context.Background()))
}

// Refusals of a limited source are not logged one by one; one warning
// marks the start of the limit.
func TestLimitedWritesLogOnce(t *testing.T) {
	f := newFixture(t)
	for range 3 * DefaultFailBurst {
		f.do("PUT", "/api/v1/services/web", "guess-0123456789abcdef0123456789abcdef", client)
	}
	var refused, warnings int
	for _, l := range f.auditLines(t) {
		switch l["msg"] {
		case "api write":
			require.EqualValues(t, 401, l["status"])
			refused++
		case "api authentication failures limited":
			require.Equal(t, "192.0.2.7", l["source"])
			warnings++
		}
	}
	require.Equal(t, DefaultFailBurst, refused)
	require.Equal(t, 1, warnings)
}
