// Package access decides who may use the management API and records what
// they did: the listeners (a unix socket for root on the node, a TCP
// listener that speaks TLS only), the callers' authentication (a unix
// peer's uid, a bearer token from the tokens file, a client certificate),
// their scope (read or write), a limit on failed authentications per
// source, and the audit log of every write.
//
// Who is let in, and as whom:
//   - over the unix socket (0600, root's): uid 0, named "uid 0", with
//     write scope. Other uids cannot open the socket; if one does (a
//     wider mode set by hand), it gets 403.
//   - over plain TCP from a loopback address (the GORB listener): the uid
//     that owns the client's socket, with the same rule as the unix
//     socket.
//   - with "Authorization: Bearer <secret>", on any listener: the token's
//     name and scope. A token in the URL is refused: URLs end up in logs.
//   - with a client certificate verified against api.manage.tls.client_ca:
//     "cert <CN>", with write scope (give monitoring a read token).
//
// A read scope may GET and HEAD; anything else needs write.
package access

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/mgmt"
)

// Options configure Handler.
type Options struct {
	// Tokens gives the bearer tokens in force (an atomic pointer's Load,
	// so that a reload can swap them); nil, or a nil result, accepts none.
	Tokens func() *Tokens
	// SetWho, when set, stores the caller's name in the context the next
	// handler gets (httpapi.WithWho). Who reads it back either way.
	SetWho func(ctx context.Context, who string) context.Context
	// Log is the audit log; default slog.Default().
	Log *slog.Logger
	// Limiter limits failed authentications; default a limiter of
	// DefaultFailRate, DefaultFailBurst and DefaultMaxSources. Listeners
	// may share one.
	Limiter *Limiter
}

// Record is what the audit log line of a write says besides who, what and
// the status: the API's handler fills it in through Audit.
type Record struct {
	// Diff is the change to ober.yaml (mgmt.Result.Diff).
	Diff string
	// Applied says how it came into force (mgmt.Applied).
	Applied string
	// Error is why the change was refused, when it was.
	Error string
}

type recordKey struct{}
type whoKey struct{}

// Audit is the request's audit record, for the API's handler to fill in.
// Outside Handler it is a throwaway, never nil.
func Audit(ctx context.Context) *Record {
	if r, ok := ctx.Value(recordKey{}).(*Record); ok {
		return r
	}
	return &Record{}
}

// WithWho is ctx saying that who makes the request.
func WithWho(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, whoKey{}, who)
}

// Who is the authenticated caller's name: a token's name, "uid 0" or
// "cert <CN>"; "" outside Handler.
func Who(ctx context.Context) string {
	s, _ := ctx.Value(whoKey{}).(string)
	return s
}

// IsWrite reports whether a method needs the write scope.
func IsWrite(method string) bool {
	return method != http.MethodGet && method != http.MethodHead
}

// Handler authenticates every request before next sees it, refuses the
// ones whose scope does not allow them, and logs every write, refused or
// not: who, the source, the method, the path, the status, the duration,
// and what next put in Audit. Reads are not logged, nor are the writes a
// limited source is refused (429): one warning says the limit started.
func Handler(next http.Handler, o Options) http.Handler {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Limiter == nil {
		o.Limiter = NewLimiter(DefaultFailRate, DefaultFailBurst, DefaultMaxSources)
	}
	return &handler{next: next, o: o}
}

type handler struct {
	next http.Handler
	o    Options
}

// caller is who authenticated, and what they may do.
type caller struct {
	name  string
	scope Scope
}

// refusal is an authentication or authorisation failure.
type refusal struct {
	status int
	msg    string
	// failed counts against the source's limit.
	failed bool
	after  time.Duration
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &Record{}
	ctx := context.WithValue(r.Context(), recordKey{}, rec)
	sw := &statusWriter{ResponseWriter: w}
	src := source(r)

	c, ref := h.authenticate(r, src)
	if ref == nil && IsWrite(r.Method) && c.scope < ScopeWrite {
		ref = &refusal{status: http.StatusForbidden, msg: "token " + strconv.Quote(c.name) + " has read scope: " + r.Method + " needs write"}
	}
	if ref != nil {
		if ref.failed && h.o.Limiter.Fail(src) {
			h.o.Log.LogAttrs(ctx, slog.LevelWarn, "api authentication failures limited",
				slog.String("source", src), slog.String("last", ref.msg))
		}
		refuse(sw, ref)
		if ref.status == http.StatusTooManyRequests {
			// Not logged one by one: a flood would drown the log. The
			// warning above marks the start.
			return
		}
		rec.Error = ref.msg
	} else {
		ctx = WithWho(ctx, c.name)
		if h.o.SetWho != nil {
			ctx = h.o.SetWho(ctx, c.name)
		}
		h.next.ServeHTTP(sw, r.WithContext(ctx))
	}
	if !IsWrite(r.Method) {
		return
	}
	attrs := []slog.Attr{
		slog.String("who", c.name),
		slog.String("source", src),
		slog.String("method", r.Method),
		// Not the query: it may hold a misplaced token.
		slog.String("path", r.URL.Path),
		slog.Int("status", sw.code()),
		slog.Duration("duration", time.Since(start)),
	}
	if rec.Applied != "" {
		attrs = append(attrs, slog.String("applied", rec.Applied))
	}
	if rec.Diff != "" {
		attrs = append(attrs, slog.String("diff", rec.Diff))
	}
	if rec.Error != "" {
		attrs = append(attrs, slog.String("error", rec.Error))
	}
	h.o.Log.LogAttrs(ctx, slog.LevelInfo, "api write", attrs...)
}

func (h *handler) authenticate(r *http.Request, src string) (caller, *refusal) {
	if ok, after := h.o.Limiter.Allow(src); !ok {
		return caller{}, &refusal{status: http.StatusTooManyRequests, msg: "too many failed authentications from " + src + ": retry later", after: after}
	}
	q := r.URL.Query()
	for _, k := range []string{"token", "access_token"} {
		if q.Has(k) {
			return caller{}, &refusal{status: http.StatusUnauthorized, failed: true,
				msg: "a token goes in the Authorization header (Bearer), never in the URL: URLs end up in logs; replace this one"}
		}
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, secret, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return caller{}, &refusal{status: http.StatusUnauthorized, failed: true, msg: "Authorization: only Bearer tokens are accepted"}
		}
		var tokens *Tokens
		if h.o.Tokens != nil {
			tokens = h.o.Tokens()
		}
		tok, ok := tokens.Lookup(strings.TrimSpace(secret))
		if !ok {
			return caller{}, &refusal{status: http.StatusUnauthorized, failed: true, msg: "unknown token"}
		}
		return caller{name: tok.Name, scope: tok.Scope}, nil
	}
	if p, ok := peerOf(r.Context()); ok {
		if p.uid != 0 {
			return caller{name: "uid " + strconv.Itoa(p.uid)}, &refusal{status: http.StatusForbidden,
				msg: "only root may use the management API without a token (peer uid " + strconv.Itoa(p.uid) + ")"}
		}
		return caller{name: "uid 0", scope: ScopeWrite}, nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		leaf := r.TLS.VerifiedChains[0][0]
		name := leaf.Subject.CommonName
		if name == "" {
			name = leaf.Subject.String()
		}
		return caller{name: "cert " + name, scope: ScopeWrite}, nil
	}
	return caller{}, &refusal{status: http.StatusUnauthorized, failed: true,
		msg: "authentication required: send Authorization: Bearer <token>, or a client certificate"}
}

// source is what failed authentications are counted against: the client's
// IP address, or the unix peer's uid.
func source(r *http.Request) string {
	if p, ok := peerOf(r.Context()); ok && p.unix {
		return "uid " + strconv.Itoa(p.uid)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return "unix"
}

func refuse(w http.ResponseWriter, ref *refusal) {
	switch ref.status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="ober"`)
	case http.StatusTooManyRequests:
		secs := int(ref.after/time.Second) + 1
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	body, _ := json.Marshal(&mgmt.Error{Message: ref.msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(ref.status)
	w.Write(append(body, '\n'))
}

// statusWriter remembers the status the handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (Flush,
// deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
