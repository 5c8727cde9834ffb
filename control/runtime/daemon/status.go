package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/dataplane"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
	"github.com/ober-ingress/ober/loader"
)

// Status is what GET /status returns and `ober status --json` prints.
// The dataplane's report (dataplane.StatusReport) is inlined at the top
// level, so the document a node without a daemon gives (`ober status`
// reading bpffs) is the same with "daemon" null. Fields are added, never
// renamed.
type Status struct {
	*dataplane.StatusReport
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
	UptimeSeconds int64           `json:"uptime_seconds"`
	Health        HealthStatus    `json:"health"`
	Config        ConfigStatus    `json:"config"`
	HAProxy       HAProxyStatus   `json:"haproxy"`
	Backends      []BackendStatus `json:"backends"`
	// VIPs lists every configured VIP and whether this node takes its
	// traffic now.
	VIPs []VIPHeldStatus `json:"vips"`
	// BGP is set in ha.mode bgp.
	BGP *BGPStatus `json:"bgp,omitempty"`
	// VRRP is set in ha.mode vrrp.
	VRRP *VRRPStatus `json:"vrrp,omitempty"`
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
	Binary     string                      `json:"binary"`
	Version    string                      `json:"version"`
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
}

// BackendStatus is one backend server across the healthy instances: it
// is up when any of them sees it up.
type BackendStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Up      bool   `json:"up"`
	// UpOn counts the healthy instances whose checks pass.
	UpOn int `json:"up_on"`
	// CheckedBy counts the healthy instances that reported it.
	CheckedBy int `json:"checked_by"`
}

func (d *Daemon) status(ctx context.Context) (any, error) {
	rep, err := dataplane.Status(d.dp)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	ds := d.daemonStatus(ctx)
	return &Status{StatusReport: rep, Daemon: ds}, nil
}

func (d *Daemon) daemonStatus(ctx context.Context) *DaemonStatus {
	ok, reason := d.health(ctx)
	d.mu.Lock()
	b := d.cur
	ds := &DaemonStatus{
		Version:   d.opts.Version,
		PID:       os.Getpid(),
		StartedAt: d.startedAt,
		Health:    HealthStatus{OK: ok, Reason: reason},
		Config: ConfigStatus{
			Path: d.opts.ConfigPath, Generation: d.generation, LoadedAt: d.loadedAt,
			LastReloadError: d.reloadErr, ReloadFailures: d.reloadFails,
		},
		HAProxy: HAProxyStatus{Version: d.version.String()},
	}
	switch {
	case d.reloadErr != "":
		ds.Config.LastReload = ReloadRefused
	case d.generation > 1:
		ds.Config.LastReload = ReloadOK
	default:
		ds.Config.LastReload = ReloadNone
	}
	d.mu.Unlock()
	if !ds.StartedAt.IsZero() {
		ds.UptimeSeconds = int64(time.Since(ds.StartedAt).Seconds())
	}
	if b != nil {
		ds.Node = b.cfg.Node.Name
		ds.HAProxy.Binary = b.cfg.HAProxy.Binary
	}
	if d.sup != nil {
		st := d.sup.Status()
		ds.HAProxy.Generation = st.Generation
		ds.HAProxy.Reloads = st.Reloads
		ds.HAProxy.Restarts = st.Restarts
		ds.HAProxy.Draining = st.Draining
		ds.HAProxy.Instances = st.Instances
		ds.HAProxy.OldGenerations = st.OldGenerations
		ds.HAProxy.Retired = st.Retired
		ds.Backends = backends(b, st)
	}
	if d.speaker != nil {
		bs := &BGPStatus{Status: d.speaker.Status(ctx)}
		bs.Announcing = len(bs.Announced) > 0
		if !bs.Announcing && d.ann != nil {
			bs.NotAnnouncing = d.ann.notAnnouncedReason()
		}
		if d.ann != nil {
			bs.BackendOutage = d.ann.backendOutage()
		}
		if d.handoff != nil {
			bs.Handoff = d.handoff.InTransition()
			bs.NodeReports = d.handoff.Peers()
			st := d.handoff.Stats()
			bs.HandoffStats = &st
		}
		ds.BGP = bs
	}
	if d.ka != nil {
		vs := &VRRPStatus{Status: d.ka.Status()}
		if d.tracker != nil {
			if ok, reason := d.tracker.state(); !ok {
				vs.Fault = reason
			}
		}
		ds.VRRP = vs
	}
	ds.VIPs = vipsHeld(b, ds)
	return ds
}

// vipsHeld says for every configured VIP whether the node takes its
// traffic: the address on the node, announced in ha.mode bgp; in ha.mode
// vrrp keepalived's view.
func vipsHeld(b *built, ds *DaemonStatus) []VIPHeldStatus {
	out := []VIPHeldStatus{}
	if b == nil {
		return out
	}
	cfg := b.cfg
	if v := ds.VRRP; v != nil {
		for _, vip := range cfg.VIPs {
			s := VIPHeldStatus{VIP: vip.Addr, State: "unknown"}
			for _, in := range v.Instances {
				if in.VIP == vip.Addr.Unmap() {
					s.Held = in.Held
					if in.State != "" {
						s.State = strings.ToLower(string(in.State))
					}
				}
			}
			out = append(out, s)
		}
		return out
	}
	onLink := addrsOn(cfg.Node.VIPInterface)
	for _, vip := range cfg.VIPs {
		s := VIPHeldStatus{VIP: vip.Addr, Held: onLink[vip.Addr.Unmap()], State: "local"}
		switch {
		case !s.Held:
			s.State = "missing"
		case cfg.HA.Mode == config.HAModeBGP && ds.BGP != nil:
			p := netip.PrefixFrom(vip.Addr, vip.Addr.BitLen()).String()
			if slices.Contains(ds.BGP.Announced, p) {
				s.State = "announced"
			} else {
				s.State, s.Held = "withdrawn", false
			}
		}
		out = append(out, s)
	}
	return out
}

// addrsOn is the set of addresses on iface; empty when it cannot be read
// (the VIPs are then reported missing, which is what they are to clients).
func addrsOn(iface string) map[netip.Addr]bool {
	set := map[netip.Addr]bool{}
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return set
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return set
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			set[ip.Unmap()] = true
		}
	}
	return set
}

// backends folds the instances' views of each backend server.
func backends(b *built, st supervisor.Status) []BackendStatus {
	if b == nil {
		return nil
	}
	var out []BackendStatus
	for _, s := range b.servers {
		bs := BackendStatus{Name: s.Name, Address: s.Addr.String()}
		for _, in := range st.Instances {
			if in.State != supervisor.StateHealthy {
				continue
			}
			i := slices.IndexFunc(in.Backends, func(x supervisor.BackendState) bool { return x.Name == s.Name })
			if i < 0 {
				continue
			}
			bs.CheckedBy++
			if in.Backends[i].Up {
				bs.UpOn++
			}
		}
		bs.Up = bs.UpOn > 0
		out = append(out, bs)
	}
	return out
}

// health is /health: the node serves when the dataplane is attached, an
// instance is healthy and a backend is up.
func (d *Daemon) health(context.Context) (bool, string) {
	return d.healthFor(1, true)
}

// healthFor is the node's health with a policy: at least minInstances
// healthy instances and, with needBackend, a backend up. The routes are
// announced on it (ha.bgp.announce_when).
func (d *Daemon) healthFor(minInstances int, needBackend bool) (bool, string) {
	d.mu.Lock()
	ready, stopping, b := d.ready, d.stopping, d.cur
	d.mu.Unlock()
	switch {
	case stopping:
		return false, "stopping: draining instances"
	case !ready || b == nil:
		return false, "starting: instances not serving yet"
	}
	atts, sk, err := d.dp.Attachments()
	if err != nil {
		return false, "dataplane: " + err.Error()
	}
	var missing []string
	for _, iface := range b.cfg.Node.Interfaces {
		if !slices.ContainsFunc(atts, func(a loader.Attachment) bool { return a.Iface == iface }) {
			missing = append(missing, iface)
		}
	}
	if len(missing) > 0 {
		return false, "dataplane: XDP not attached to " + strings.Join(missing, ", ")
	}
	if !sk {
		return false, "dataplane: sk_lookup not attached"
	}
	st := d.sup.Status()
	if h := st.Healthy(); h == 0 {
		return false, fmt.Sprintf("no healthy HAProxy instance (of %d)", len(st.Instances))
	} else if h < minInstances {
		return false, fmt.Sprintf("%d healthy HAProxy instances of %d, fewer than the %d required", h, len(st.Instances), minInstances)
	}
	if !needBackend {
		return true, ""
	}
	bs := backends(b, st)
	checked := false
	for _, x := range bs {
		if x.Up {
			d.setBackendsUp(true)
			return true, ""
		}
		checked = checked || x.CheckedBy > 0
	}
	if !checked {
		// A reload's new instances have not checked the backends yet:
		// the last verdict stands, so a reload neither fails /health
		// nor withdraws the routes.
		if d.backendsWereUp() {
			return true, ""
		}
		return false, "backends: no health check result yet"
	}
	d.setBackendsUp(false)
	return false, fmt.Sprintf("no backend up (all %d failing their health checks)", len(bs))
}

// backendsFailing reports whether every backend has been checked by a
// healthy instance and none is up: an outage, not a start.
func (d *Daemon) backendsFailing() bool {
	d.mu.Lock()
	b := d.cur
	d.mu.Unlock()
	if b == nil {
		return false
	}
	bs := backends(b, d.sup.Status())
	checked := false
	for _, x := range bs {
		if x.Up {
			return false
		}
		checked = checked || x.CheckedBy > 0
	}
	return checked
}

// reportHealth is what this node tells the other nodes: whether it has a
// backend up, and whether it serves.
func (d *Daemon) reportHealth() (backendsUp, serving bool) {
	serving, _ = d.healthFor(1, false)
	backendsUp, _ = d.healthFor(1, true)
	return backendsUp, serving
}

// dispatchedServices are the VIP:port pairs whose connections the
// dataplane dispatches to the instances: what the handoff records.
func (d *Daemon) dispatchedServices() map[netip.AddrPort]bool {
	d.mu.Lock()
	b := d.cur
	d.mu.Unlock()
	out := map[netip.AddrPort]bool{}
	if b == nil {
		return out
	}
	for _, s := range b.services {
		if s.Dispatch && s.Proto == loader.ProtoTCP {
			out[netip.AddrPortFrom(s.VIP.Unmap(), s.Port)] = true
		}
	}
	return out
}

func (d *Daemon) setBackendsUp(up bool) {
	d.mu.Lock()
	d.backendsUp = up
	d.mu.Unlock()
}

func (d *Daemon) backendsWereUp() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.backendsUp
}
