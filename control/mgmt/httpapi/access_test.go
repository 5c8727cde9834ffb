package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/access"
)

const (
	writeSecret = "0123456789abcdef0123456789abcdef"
	readSecret  = "fedcba9876543210fedcba9876543210"
)

// behindAccess is the handler as the daemon serves it: behind the access
// layer, with a write token "janitor" and a read token "grafana"; log
// is its audit log, one JSON object a line.
func behindAccess(t *testing.T, f mgmt.API) (http.Handler, *bytes.Buffer) {
	t.Helper()
	toks, err := access.ParseTokens(strings.NewReader("janitor write " + writeSecret + "\ngrafana read " + readSecret + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	return access.Handler(New(f, nil), access.Options{
		Tokens: func() *access.Tokens { return toks },
		Log:    slog.New(slog.NewJSONHandler(&log, nil)),
	}), &log
}

func auditLines(t *testing.T, log *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(log.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// The access layer's caller is the Change's Who, and its audit line of
// the write has the Store's diff and how it was applied.
func TestBehindAccessWhoAndAudit(t *testing.T) {
	f := newFake()
	f.result.Diff = "-    weight: 10\n+    weight: 5\n"
	f.result.Applied = mgmt.AppliedRuntime
	h, log := behindAccess(t, f)
	w := serve(t, h, req{method: "PATCH", path: "/api/v1/services/web/backends/b1", body: body(`{"weight":5}`),
		header: map[string]string{"Content-Type": "application/merge-patch+json", "Authorization": "Bearer " + writeSecret}})
	if w.Code != 200 {
		t.Fatalf("status %d; body %s", w.Code, w.Body)
	}
	if who := f.lastChange(t).Who; who != "janitor" {
		t.Errorf("Who %q, want the token's name janitor", who)
	}
	lines := auditLines(t, log)
	if len(lines) != 1 {
		t.Fatalf("audit log %q, want one line", log)
	}
	if l := lines[0]; l["who"] != "janitor" || l["diff"] != f.result.Diff || l["applied"] != "runtime" || l["status"] != float64(200) || l["error"] != nil {
		t.Errorf("audit line %v, want janitor's write with its diff, applied runtime, status 200", l)
	}
}

// A write refused by the HTTP layer or by the Store is in the audit log
// with the reason.
func TestBehindAccessRefusedWritesAudited(t *testing.T) {
	f := newFake()
	h, log := behindAccess(t, f)
	w := serve(t, h, req{method: "PATCH", path: "/api/v1/services/web", body: body(`{}`),
		header: map[string]string{"Content-Type": "text/plain", "Authorization": "Bearer " + writeSecret}})
	errorBody(t, w, 415)
	f.err = mgmt.Errorf(412, "services[web]", "services[web]: If-Match 3: its generation is 4")
	w = serve(t, h, req{method: "DELETE", path: "/api/v1/services/web",
		header: map[string]string{"If-Match": `"3"`, "Authorization": "Bearer " + writeSecret}})
	errorBody(t, w, 412)

	lines := auditLines(t, log)
	if len(lines) != 2 {
		t.Fatalf("audit log %q, want two lines", log)
	}
	if l := lines[0]; l["status"] != float64(415) || !strings.Contains(fmt.Sprint(l["error"]), "text/plain") {
		t.Errorf("audit line %v, want the 415 and its reason", l)
	}
	if l := lines[1]; l["status"] != float64(412) || l["error"] != f.err.Error() || l["diff"] != nil {
		t.Errorf("audit line %v, want the 412 and the Store's reason", l)
	}
}

// A read token reads, and its writes never reach the API.
func TestBehindAccessReadScope(t *testing.T) {
	f := newFake()
	h, _ := behindAccess(t, f)
	auth := map[string]string{"Authorization": "Bearer " + readSecret}
	if w := serve(t, h, req{method: "GET", path: "/api/v1/services/web", header: auth}); w.Code != 200 {
		t.Fatalf("GET with a read token: status %d", w.Code)
	}
	if w := serve(t, h, req{method: "POST", path: "/api/v1/services/web/backends/b1/drain", header: auth}); w.Code != 403 {
		t.Fatalf("POST with a read token: status %d, want 403", w.Code)
	}
	f.noChange(t)
}
