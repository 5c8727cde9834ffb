package api

import (
	"net/netip"
	"time"

	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/control/runtime/txwatch"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// Status is what GET /status returns and `ober status --json` prints;
// docs/status-json.md documents it field by field. The dataplane's part
// (DataplaneStatus) is inlined at the top level, so the document a node
// without a daemon gives (`ober status` reading bpffs) is the same with
// "daemon" null. Fields are added, never renamed.
type Status struct {
	*DataplaneStatus
	Daemon *DaemonStatus `json:"daemon"`
}

// DaemonStatus is the control process's part of Status.
type DaemonStatus struct {
	Node      string    `json:"node"`
	Version   string    `json:"version"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	// UptimeSeconds is the time since StartedAt when the status was
	// taken, so that a script needs no clock of its own.
	UptimeSeconds int64         `json:"uptime_seconds"`
	Health        HealthStatus  `json:"health"`
	Config        ConfigStatus  `json:"config"`
	HAProxy       HAProxyStatus `json:"haproxy"`
	// Backends are the top-level backends.servers (the default pool of
	// the tls and http services), as ober's health checks see them.
	Backends []BackendStatus `json:"backends"`
	// Services are every service with its backends.
	Services []DaemonServiceStatus `json:"services"`
	// VIPPools are the vip_pools with their used and free addresses.
	VIPPools []VIPPoolStatus `json:"vip_pools,omitempty"`
	// Discovery is every pool whose backends a source finds.
	Discovery []DiscoveryStatus `json:"discovery,omitempty"`
	// VIPs lists every configured VIP and whether this node takes its
	// traffic now.
	VIPs []VIPHeldStatus `json:"vips"`
	// Links are node.interfaces with their transmit verdict: a link up
	// that sends nothing while dropping is "stalled".
	Links []txwatch.State `json:"links"`
	// BGP is set in ha.mode bgp.
	BGP *BGPStatus `json:"bgp,omitempty"`
	// VRRP is set in ha.mode vrrp.
	VRRP *VRRPStatus `json:"vrrp,omitempty"`
	// Steering is instances.steering and what the node made of it.
	Steering *SteeringStatus `json:"steering,omitempty"`
}

// SteeringStatus is the XDP cpumap hop's setting and decision.
type SteeringStatus struct {
	// Mode is instances.steering: auto, on or off.
	Mode string `json:"mode"`
	// On is the decision the running plan wrote to the dataplane.
	On bool `json:"on"`
	// Reason says why, for auto the receive queues it counted.
	Reason string `json:"reason"`
}

// BGPStatus is the speaker's state and whether the node announces.
type BGPStatus struct {
	bgp.Status
	Announcing bool `json:"announcing"`
	// NotAnnouncing says why the routes are withdrawn (the failing health
	// check, the hold-down, stopping).
	NotAnnouncing string `json:"not_announcing,omitempty"`
	// Handoff lists the nodes of ha.bgp.handoff now draining or joining
	// (this one included): while there are any, the dataplanes hand
	// moved connections back to their owners.
	Handoff []handoff.Transition `json:"handoff,omitempty"`
	// BackendOutage says the node announces although no backend is up,
	// because no other node reports one up either: clients get 503s
	// rather than no answer (ha.bgp.announce_when.backend_scope cluster).
	BackendOutage bool `json:"backend_outage,omitempty"`
	// NodeReports are the other nodes' last reports over the handoff
	// channel (ha.bgp.handoff.nodes).
	NodeReports []handoff.PeerHealth `json:"node_reports,omitempty"`
	// HandoffStats counts the channel's traffic and the datagrams it
	// refused (forged, replayed, stale).
	HandoffStats *handoff.Stats `json:"handoff_stats,omitempty"`
}

// VRRPStatus is keepalived's state and the track file's verdict.
type VRRPStatus struct {
	vrrp.Status
	// Fault says why the node is in fault (its instances give up the VIPs).
	Fault string `json:"fault,omitempty"`
	// Handoff is the state of ha.vrrp.handoff; nil without it.
	Handoff *VRRPHandoffStatus `json:"handoff,omitempty"`
}

// VRRPHandoffStatus says whether planned VIP moves keep their
// connections.
type VRRPHandoffStatus struct {
	// Ready: the node may take VIPs at its own priorities. Until then
	// it holds them all at priority 1; NotReady says why.
	Ready    bool   `json:"ready"`
	NotReady string `json:"not_ready,omitempty"`
	// Moved lists the VIPs an operator moved to this node (`ober vip
	// move`); Draining the VIPs this node lost whose connections the
	// new holder still hands back here.
	Moved    []netip.Addr `json:"moved,omitempty"`
	Draining []netip.Addr `json:"draining,omitempty"`
	// Transitions, NodeReports and Stats are the channel's, as in BGP
	// mode.
	Transitions []handoff.Transition `json:"transitions,omitempty"`
	NodeReports []handoff.PeerHealth `json:"node_reports,omitempty"`
	Stats       *handoff.Stats       `json:"stats,omitempty"`
}

// HealthStatus is /health's answer.
type HealthStatus struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// ConfigStatus describes the configuration in force.
type ConfigStatus struct {
	Path       string    `json:"path"`
	Generation uint64    `json:"generation"`
	LoadedAt   time.Time `json:"loaded_at"`
	// LastReloadError is set when the latest reload was refused; the
	// configuration of Generation is still the one in force.
	LastReloadError string `json:"last_reload_error,omitempty"`
	ReloadFailures  uint64 `json:"reload_failures"`
	// LastReload is the outcome of the latest reload: none (the
	// configuration is the one the daemon started with, and no reload was
	// refused), ok, or refused (LastReloadError says why).
	LastReload string `json:"last_reload"`
}

// The values of ConfigStatus.LastReload.
const (
	ReloadNone    = "none"
	ReloadOK      = "ok"
	ReloadRefused = "refused"
)

// VIPHeldStatus is one VIP on this node.
type VIPHeldStatus struct {
	VIP netip.Addr `json:"vip"`
	// Held is true when the node takes the VIP's traffic now: the address
	// is on the node and, in ha.mode bgp, announced; in ha.mode vrrp, the
	// node is its master.
	Held bool `json:"held"`
	// State says how: "local" (ha.mode none: the address is on
	// node.vip_interface), "missing" (it should be but is not),
	// "announced" or "withdrawn" (bgp), or the VRRP state (master,
	// backup, fault, unknown).
	State string `json:"state"`
}

// HAProxyStatus describes the instances.
type HAProxyStatus struct {
	Binary  string `json:"binary"`
	Version string `json:"version"`
	// Features are the renderer's version-gated directives, each on or
	// off for Version (haproxy.Features).
	Features   []HAProxyFeature            `json:"features"`
	Generation uint64                      `json:"generation"`
	Reloads    uint64                      `json:"reloads"`
	Restarts   uint64                      `json:"restarts"`
	Draining   int                         `json:"draining"`
	Instances  []supervisor.InstanceStatus `json:"instances"`
	// OldGenerations counts the earlier generations still finishing
	// transfers after a reload or a restart handover; Retired lists their
	// instances, each with when it is stopped at the latest
	// (timeouts.max_transfer).
	OldGenerations int                        `json:"old_generations"`
	Retired        []supervisor.RetiredStatus `json:"retired,omitempty"`
	// SessionTickets are the instances' TLS session ticket keys, by
	// epoch (never a key); nil while tls.session_tickets is off or no
	// service terminates TLS.
	SessionTickets *TicketStatus `json:"session_tickets,omitempty"`
}

// TicketStatus is the state of the TLS session ticket keys.
type TicketStatus struct {
	// Epoch numbers the period whose key encrypts: whole periods of
	// RotateSeconds since 1970, the same on every node of a site.
	Epoch         int64 `json:"epoch"`
	RotateSeconds int64 `json:"rotate_seconds"`
	// NextRotation is when the next key takes over.
	NextRotation time.Time `json:"next_rotation"`
	// Shared says the keys derive from tls.session_tickets.key_file,
	// so that the site's nodes accept each other's tickets; false, from
	// the node's own seed.
	Shared bool `json:"shared"`
	// Rotations counts the epochs this ober moved the instances to;
	// PushFailures the pushes to an instance that failed (retried).
	Rotations    uint64 `json:"rotations"`
	PushFailures uint64 `json:"push_failures"`
}

// HAProxyFeature is one version-gated directive of the rendered
// configuration.
type HAProxyFeature struct {
	Name      string `json:"name"`
	Directive string `json:"directive"`
	Since     string `json:"since"` // oldest release it is used with
	Enabled   bool   `json:"enabled"`
}

// BackendStatus is one server of the top-level pool. ober checks each
// backend once per node and tells every instance, so UpOn and CheckedBy
// count the healthy instances that were told.
type BackendStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Up      bool   `json:"up"`
	// UpOn counts the healthy instances sending it connections.
	UpOn int `json:"up_on"`
	// CheckedBy counts the healthy instances.
	CheckedBy int `json:"checked_by"`
}

// DaemonServiceStatus is one service and its backends, as the daemon runs
// them (ServiceStatus is a dataplane services-table row).
type DaemonServiceStatus struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// Port is the service's port; LastPort the end of its range, when it
	// has one.
	Port     uint16       `json:"port"`
	LastPort uint16       `json:"last_port,omitempty"`
	VIPs     []netip.Addr `json:"vips"`
	Balance  string       `json:"balance"`
	Fallback string       `json:"fallback"`
	// Up says a backend takes new connections (ready), or fallback
	// keep_last keeps the last ones in service.
	Up bool `json:"up"`
	// Connections, TotalConnections, BytesIn and BytesOut sum the
	// backends' counters over the serving instances.
	Connections      int64                 `json:"connections"`
	TotalConnections int64                 `json:"total_connections"`
	BytesIn          int64                 `json:"bytes_in"`
	BytesOut         int64                 `json:"bytes_out"`
	Backends         []DaemonBackendStatus `json:"backends"`
}

// DaemonBackendStatus is one backend server of a service's pool.
type DaemonBackendStatus struct {
	Name string `json:"name"`
	// Pool is the service's pool ("default", or one of its pools[]);
	// HAProxyBackend the HAProxy backend it is in (one per priority).
	Pool           string `json:"pool"`
	HAProxyBackend string `json:"haproxy_backend"`
	Address        string `json:"address"`
	Priority       int    `json:"priority"`
	// Weight is the configured weight; EffectiveWeight what HAProxy
	// uses now (slowstart, leastbandwidth, roundrobin's equal weights).
	Weight          int `json:"weight"`
	EffectiveWeight int `json:"effective_weight"`
	// Admin is the operator's state (enabled, drain, disabled); State
	// HAProxy's (ready, drain, maint).
	Admin string `json:"admin"`
	State string `json:"state"`
	// Up is the health checks' verdict, Since when it was reached.
	Up    bool      `json:"up"`
	Since time.Time `json:"since"`
	// Health is the fraction of the last 100 checks that passed (GORB's
	// health).
	Health       float64 `json:"health"`
	ChecksPassed uint64  `json:"checks_passed"`
	ChecksFailed uint64  `json:"checks_failed"`
	LastError    string  `json:"last_error,omitempty"`
	// Connections are open now; the others count since the serving
	// instances started. Rate is bytes per second over the last second.
	Connections      int64   `json:"connections"`
	TotalConnections int64   `json:"total_connections"`
	BytesIn          int64   `json:"bytes_in"`
	BytesOut         int64   `json:"bytes_out"`
	Rate             float64 `json:"bytes_per_second"`
}

// VIPPoolStatus is one vip_pools entry.
type VIPPoolStatus struct {
	Name string `json:"name"`
	// Size counts the addresses the pool hands out; Used those services
	// hold, Reserved the configured VIPs in it, Free the rest.
	Size     uint64 `json:"size"`
	Used     uint64 `json:"used"`
	Reserved uint64 `json:"reserved"`
	Free     uint64 `json:"free"`
	// Allocations are the addresses given to services, by service.
	Allocations map[string]netip.Addr `json:"allocations,omitempty"`
}

// DiscoveryStatus is one pool's discovery.
type DiscoveryStatus struct {
	// Pool is "backends", "services[s3]" or "services[s3].pools[eu]".
	Pool string `json:"pool"`
	Kind string `json:"kind"`
	// Backends are the host:port the source names now; Draining those it
	// no longer names whose connections may still run.
	Backends []string `json:"backends"`
	Draining []string `json:"draining,omitempty"`
	// Problems are the last fetch's refused entries, with why.
	Problems    []string  `json:"problems,omitempty"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// LastError is set while the last fetch failed (the pool keeps its
	// backends under failpolicy keeplast).
	LastError string    `json:"last_error,omitempty"`
	ErrorAt   time.Time `json:"error_at,omitzero"`
	Fetches   uint64    `json:"fetches"`
	Failures  uint64    `json:"failures"`
	// Changes counts the fetches that changed the backends, Applied the
	// reloads that carried them: the difference was coalesced.
	Changes uint64 `json:"changes"`
	Applied uint64 `json:"applied"`
}
