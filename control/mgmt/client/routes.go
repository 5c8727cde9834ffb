package client

import (
	"net/http"
	"net/url"

	"github.com/ober-ingress/ober/control/mgmt"
)

// The API's paths, in one place: the client builds its requests from
// them, and Routes lists them as net/http.ServeMux patterns for servers
// and tests.
const (
	// Prefix is the versioned root of every route.
	Prefix = "/api/v1"
	// PathServices lists services (GET) and creates one (POST).
	PathServices = Prefix + "/services"
	// PathPools is the vip_pools' usage.
	PathPools = Prefix + "/pools"
	// PathOpenAPI is the OpenAPI 3 document.
	PathOpenAPI = Prefix + "/openapi.json"

	// PoolParam is the query parameter naming the pool a backend is in
	// (mgmt.Change.Pool): "default" or one of the service's pools[].
	PoolParam = "pool"
	// IfMatchHeader carries the generation a write expects the object to
	// have (mgmt.Change.IfMatch), as a decimal number.
	IfMatchHeader = "If-Match"
)

// ServicePath is the path of one service.
func ServicePath(name string) string {
	return PathServices + "/" + url.PathEscape(name)
}

// StatsPath is the path of one service's live status.
func StatsPath(name string) string { return ServicePath(name) + "/stats" }

// BackendPath is the path of one backend of a service.
func BackendPath(service, backend string) string {
	return ServicePath(service) + "/backends/" + url.PathEscape(backend)
}

// ActionPath is the path that sets a backend's admin state: verb is
// mgmt.Drain, mgmt.Enable or mgmt.Disable.
func ActionPath(service, backend string, verb mgmt.Verb) string {
	return BackendPath(service, backend) + "/" + string(verb)
}

// MovePath is the path that moves a VIP between VRRP nodes.
func MovePath(vip string) string { return Prefix + "/vips/" + url.PathEscape(vip) + "/move" }

// Route is one method and path pattern of the API.
type Route struct {
	Method string
	// Pattern is in net/http.ServeMux's syntax: {name} is the service,
	// {backend} the backend.
	Pattern string
}

// String is the ServeMux pattern with its method, "GET /api/v1/pools".
func (r Route) String() string { return r.Method + " " + r.Pattern }

// Routes lists every route of the API but the OpenAPI document's.
func Routes() []Route {
	const (
		svc     = PathServices + "/{name}"
		backend = svc + "/backends/{backend}"
	)
	return []Route{
		{http.MethodGet, PathServices},
		{http.MethodPost, PathServices},
		{http.MethodGet, svc},
		{http.MethodPut, svc},
		{http.MethodPatch, svc},
		{http.MethodDelete, svc},
		{http.MethodGet, svc + "/stats"},
		{http.MethodGet, backend},
		{http.MethodPut, backend},
		{http.MethodPatch, backend},
		{http.MethodDelete, backend},
		{http.MethodPost, backend + "/" + string(mgmt.Drain)},
		{http.MethodPost, backend + "/" + string(mgmt.Enable)},
		{http.MethodPost, backend + "/" + string(mgmt.Disable)},
		{http.MethodGet, PathPools},
		{http.MethodPost, Prefix + "/vips/{vip}/move"},
	}
}
