// Package mgmt is the management API's core: services and backends as
// resources that an orchestrator creates, changes and deletes at run time.
//
// It is a thin layer over ober.yaml. A change is an edit of the file's
// YAML tree (control/lib/yamledit, so the operator's comments and layout
// stay), validated by the same code as the file (config.Parse), written
// atomically under the lock `ober sync` and reloads take, and then applied
// by the daemon's one reload path (weights and admin states through the
// runtime API, anything else by renewing the instances). The file is the
// single source of truth: what the API acknowledged is in it, and survives
// a restart; a SIGHUP after a manual edit reads it as it is.
//
// The pieces:
//   - resource.go: the JSON form of services and backends (the ober.yaml
//     keys), merge patches, names (Edit, the pure edit of a document).
//   - store.go: Store, the file's one API writer: lock, edit, validate,
//     write, generations.
//   - httpapi/: the HTTP routes, their errors and the OpenAPI document.
//   - access/: the listeners (unix socket, TCP with TLS), tokens, scopes,
//     rate limits of failed authentications, the audit log.
//   - gorb/: GORB's routes and JSON mapped onto Changes.
//   - client/: the CLI's client over the unix socket.
package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Kind is what a Change acts on.
type Kind string

const (
	KindService Kind = "service"
	KindBackend Kind = "backend"
)

// Verb is what a Change does.
type Verb string

const (
	// Put creates or replaces the object with Body (idempotent).
	Put Verb = "put"
	// Patch merges Body into the object (RFC 7396 JSON merge patch).
	Patch Verb = "patch"
	// Delete removes the object.
	Delete Verb = "delete"
	// Create is POST /services: Put of a new service, which gets an
	// address from a pool when Body has no vips.
	Create Verb = "create"
	// Drain, Enable and Disable set a backend's admin state.
	Drain   Verb = "drain"
	Enable  Verb = "enable"
	Disable Verb = "disable"
)

// Change is one write of the API.
type Change struct {
	Verb Verb
	Kind Kind
	// Service names the service; Backend the backend for KindBackend.
	// Pool, when set, names the service's pool ("default" or one of its
	// pools[]) a backend is in; empty finds it in any pool (an error
	// when two pools have it).
	Service, Backend, Pool string
	// Body is the object's JSON (Put, Create) or the merge patch (Patch),
	// with the ober.yaml keys as field names.
	Body json.RawMessage
	// IfMatch, when set, is the generation the client last read: the
	// change is refused with 412 when the object's is another.
	IfMatch *uint64
	// Who made it, for the audit log: a token's name or "uid 0".
	Who string
}

// Applied says how a change came into force.
type Applied string

const (
	// AppliedNone: nothing changed (a Put of what is there).
	AppliedNone Applied = "none"
	// AppliedRuntime: weights and admin states, through HAProxy's runtime
	// API, no instance renewed.
	AppliedRuntime Applied = "runtime"
	// AppliedReload: the instances were renewed.
	AppliedReload Applied = "reload"
)

// Result is what a successful Change answers.
type Result struct {
	// Object is the object as it is now (nil after Delete), in its JSON
	// form, with its generation.
	Object json.RawMessage `json:"object,omitempty"`
	// Generation is the object's generation after the change.
	Generation uint64 `json:"generation"`
	// ConfigGeneration is the daemon's configuration generation that
	// carries the change.
	ConfigGeneration uint64 `json:"config_generation"`
	// Applied says how.
	Applied Applied `json:"applied"`
	// SharedBy lists, for a backend of the top-level backends.servers,
	// every service that uses that pool: the change applies to all of
	// them.
	SharedBy []string `json:"shared_by,omitempty"`
	// Diff is the change to ober.yaml, unified, for the audit log.
	Diff string `json:"-"`
}

// Error is a refused change or request: an HTTP status, the message (the
// config validator's text where it comes from there) and the field it
// names, as "services[web].backends[b1].weight".
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" && !startsWith(e.Message, e.Field) {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

func startsWith(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// Errorf makes an *Error.
func Errorf(status int, field, format string, args ...any) *Error {
	return &Error{Status: status, Field: field, Message: fmt.Sprintf(format, args...)}
}

// StatusOf is the HTTP status of err: an *Error's, else 500.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) && e.Status != 0 {
		return e.Status
	}
	return http.StatusInternalServerError
}

// Applier brings the file's configuration into force and says how: the
// daemon's reload. Apply returns once the change is live on this node.
// Several calls may be batched into one reload.
type Applier interface {
	Apply(ctx context.Context) (Applied, uint64, error)
}

// Reader is what the API reads besides the file: the daemon's status, for
// GET .../stats and GET /pools.
type Reader interface {
	// ServiceStats is the status of one service (api.DaemonServiceStatus
	// as JSON), or an *Error 404.
	ServiceStats(ctx context.Context, name string) (json.RawMessage, error)
	// Pools is every vip_pools entry's usage (api.VIPPoolStatus list as
	// JSON).
	Pools(ctx context.Context) (json.RawMessage, error)
}

// Mover changes what lives outside the file: where a VIP is held (VRRP
// mode). It answers a VIPMove as JSON, or an *Error.
type Mover interface {
	// MoveVIP moves vip to the node whose address is to, or back to its
	// owner when to is "owner".
	MoveVIP(ctx context.Context, vip, to string) (json.RawMessage, error)
}

// VIPMove is the answer to a move.
type VIPMove struct {
	VIP string `json:"vip"`
	// To is the target node's address, or "owner".
	To string `json:"to"`
	// Done says this node saw the move happen (it took the VIP, or gave
	// it up) before answering; otherwise Message says what is pending.
	Done    bool   `json:"done"`
	Message string `json:"message"`
}

// API is what the HTTP layer (httpapi), the GORB layer (gorb) and the
// tests drive: the Store, with the daemon's Reader and Mover.
type API interface {
	// Services lists every service's JSON form, with its generation, in
	// the file's order.
	Services(ctx context.Context) ([]json.RawMessage, error)
	// Service is one service's JSON form, or an *Error 404.
	Service(ctx context.Context, name string) (json.RawMessage, error)
	// Backend is one backend of a service (pool as in Change.Pool), or an
	// *Error 404.
	Backend(ctx context.Context, service, backend, pool string) (json.RawMessage, error)
	// Do makes a change: edited, validated, written and in force when it
	// returns without error; nothing changed when it returns one.
	Do(ctx context.Context, ch Change) (Result, error)
	Reader
	Mover
}
