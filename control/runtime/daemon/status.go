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

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/ipam"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/loader"
)

// status is /status: the dataplane as pinned and the daemon's own part.
func (d *Daemon) status(ctx context.Context) (*api.Status, error) {
	rep, err := api.ReadDataplane(d.dp)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return &api.Status{DataplaneStatus: rep, Daemon: d.daemonStatus(ctx)}, nil
}

func (d *Daemon) daemonStatus(ctx context.Context) *api.DaemonStatus {
	ok, reason := d.health(ctx)
	d.mu.Lock()
	b := d.cur
	ds := &api.DaemonStatus{
		Version:   d.opts.Version,
		PID:       os.Getpid(),
		StartedAt: d.startedAt,
		Health:    api.HealthStatus{OK: ok, Reason: reason},
		Config: api.ConfigStatus{
			Path: d.opts.ConfigPath, Generation: d.generation, LoadedAt: d.loadedAt,
			LastReloadError: d.reloadErr, ReloadFailures: d.reloadFails,
		},
		HAProxy: api.HAProxyStatus{Version: d.version.String()},
	}
	for _, f := range haproxy.FeaturesFor(d.version).List() {
		ds.HAProxy.Features = append(ds.HAProxy.Features,
			api.HAProxyFeature{Name: f.Name, Directive: f.Directive, Since: f.Since, Enabled: f.Enabled})
	}
	switch {
	case d.reloadErr != "":
		ds.Config.LastReload = api.ReloadRefused
	case d.generation > 1:
		ds.Config.LastReload = api.ReloadOK
	default:
		ds.Config.LastReload = api.ReloadNone
	}
	d.mu.Unlock()
	if !ds.StartedAt.IsZero() {
		ds.UptimeSeconds = int64(time.Since(ds.StartedAt).Seconds())
	}
	if b != nil {
		ds.Node = b.Config.Node.Name
		ds.HAProxy.Binary = b.Config.HAProxy.Binary
		ds.Steering = &api.SteeringStatus{Mode: string(b.Config.Instances.Steering), On: b.Tables.Steering, Reason: b.SteeringReason}
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
		ds.HAProxy.SessionTickets = d.ticketStatus()
		ds.Backends = d.topLevelBackends(b, st)
	}
	ds.Services = d.serviceStates(b)
	ds.Discovery = d.discoveryStatus()
	ds.Links = d.links.States()
	if b != nil {
		for _, u := range b.IPAM.Usage() {
			ps := api.VIPPoolStatus{Name: u.Name, Size: u.Size, Used: u.Used, Reserved: u.Reserved, Free: u.Free}
			for svc, a := range b.IPAM.Allocations {
				if slices.ContainsFunc(b.IPAM.Pools, func(p ipam.Pool) bool { return p.Name == u.Name && p.Contains(a) }) {
					if ps.Allocations == nil {
						ps.Allocations = map[string]netip.Addr{}
					}
					ps.Allocations[svc] = a
				}
			}
			ds.VIPPools = append(ds.VIPPools, ps)
		}
	}
	if d.speaker != nil {
		bs := &api.BGPStatus{Status: d.speaker.Status(ctx)}
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
		vs := &api.VRRPStatus{Status: d.ka.Status()}
		if d.tracker != nil {
			if ok, reason := d.tracker.state(); !ok {
				vs.Fault = reason
			}
		}
		if d.vh != nil && d.handoff != nil {
			hs := &api.VRRPHandoffStatus{}
			hs.Ready, hs.NotReady, hs.Moved, hs.Draining = d.vh.status()
			hs.Transitions = d.handoff.InTransition()
			hs.NodeReports = d.handoff.Peers()
			st := d.handoff.Stats()
			hs.Stats = &st
			vs.Handoff = hs
		}
		ds.VRRP = vs
	}
	ds.VIPs = vipsHeld(b, ds)
	return ds
}

// vipsHeld says for every configured VIP whether the node takes its
// traffic: the address on the node, announced in ha.mode bgp; in ha.mode
// vrrp keepalived's view.
func vipsHeld(b *plan.NodePlan, ds *api.DaemonStatus) []api.VIPHeldStatus {
	out := []api.VIPHeldStatus{}
	if b == nil {
		return out
	}
	cfg := b.Config
	if v := ds.VRRP; v != nil {
		for _, vip := range cfg.VIPs {
			s := api.VIPHeldStatus{VIP: vip.Addr, State: "unknown"}
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
		s := api.VIPHeldStatus{VIP: vip.Addr, Held: onLink[vip.Addr.Unmap()], State: "local"}
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
	for _, iface := range b.Config.Node.Interfaces {
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
	if d.anyServiceUp(b) {
		return true, ""
	}
	return false, fmt.Sprintf("no backend up: every service's backends are down or disabled (%d backends)", len(b.Servers))
}

// backendsFailing reports whether the node has backends and none takes
// connections: an outage, not a start.
func (d *Daemon) backendsFailing() bool {
	b := d.plan()
	return b != nil && len(b.Servers) > 0 && !d.anyServiceUp(b)
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
	for _, s := range b.Tables.Services {
		if s.Dispatch && s.Proto == loader.ProtoTCP {
			out[netip.AddrPortFrom(s.VIP.Unmap(), s.Port)] = true
		}
	}
	return out
}
