package daemon

import (
	"context"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/servers"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/control/runtime/txwatch"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
	"github.com/ober-ingress/ober/loader"
)

// collector reads the dataplane's counters and the supervisor's state at
// scrape time, so metrics never lag the kernel's own numbers.
type collector struct {
	d *Daemon

	packets, bytes                               *prometheus.Desc
	flows, fallbacks                             *prometheus.Desc
	steered, unassigned                          *prometheus.Desc
	instUp, instConns                            *prometheus.Desc
	instRestarts                                 *prometheus.Desc
	backendUp                                    *prometheus.Desc
	reloads, reloadFails                         *prometheus.Desc
	wlEntries, wlGen                             *prometheus.Desc
	attached, configGen                          *prometheus.Desc
	healthy, instanceSlots                       *prometheus.Desc
	bgpUp, bgpBFDUp                              *prometheus.Desc
	bgpFlaps, bgpPrefixes                        *prometheus.Desc
	bgpAnnouncing                                *prometheus.Desc
	bgpWithdraws                                 *prometheus.Desc
	vrrpState, vrrpMaster                        *prometheus.Desc
	vrrpHeld, vrrpTrans                          *prometheus.Desc
	vrrpRestarts                                 *prometheus.Desc
	vrrpHealthy                                  *prometheus.Desc
	hoRefused, hoActive                          *prometheus.Desc
	hoSent, hoReceived                           *prometheus.Desc
	hoPeerBackends                               *prometheus.Desc
	bgpOutage                                    *prometheus.Desc
	tlsReaped                                    *prometheus.Desc
	ticketEpoch, ticketRotations, ticketFailures *prometheus.Desc
	certExpiry                                   *prometheus.Desc

	svcUp, svcConns, svcIn, svcOut     *prometheus.Desc
	sbUp, sbHealth, sbWeight, sbEff    *prometheus.Desc
	sbAdmin, sbState, sbChecks, sbOpen *prometheus.Desc
	sbConns, sbIn, sbOut, vipPoolAddrs *prometheus.Desc

	discBackends, discFetches, discChanges *prometheus.Desc
	discApplied, discLastSuccess, discOK   *prometheus.Desc

	linkStalled, linkStalls *prometheus.Desc
}

func newCollector(d *Daemon) *collector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ober_"+name, help, labels, nil)
	}
	return &collector{
		d:            d,
		packets:      desc("dataplane_packets_total", "Packets the XDP program saw, by verdict reason and XDP action.", "reason", "action"),
		bytes:        desc("dataplane_bytes_total", "Bytes the XDP program saw, by verdict reason and XDP action.", "reason", "action"),
		flows:        desc("instance_flows_total", "Connections sk_lookup handed to an instance.", "instance"),
		fallbacks:    desc("instance_fallback_flows_total", "Connections an instance took because their preferred instance had no socket.", "instance"),
		steered:      desc("instance_steered_packets_total", "Packets the XDP program redirected to an instance's CPU.", "instance"),
		unassigned:   desc("dataplane_unassigned_flows_total", "Connections to a dispatched service that found no instance socket."),
		instUp:       desc("instance_up", "1 when the HAProxy instance is serving.", "instance", "cpu"),
		instConns:    desc("instance_connections", "Client connections open on the instance.", "instance"),
		instRestarts: desc("instance_restarts_total", "Restarts of the instance after it exited.", "instance"),
		backendUp:    desc("backend_up", "1 when ober's health checks see the server of the top-level backends up.", "backend", "address"),
		svcUp:        desc("service_up", "1 when a backend of the service takes new connections (or fallback keep_last keeps the last ones).", "service"),
		svcConns:     desc("service_connections_total", "Connections the service's backends took, summed over the serving instances.", "service"),
		svcIn:        desc("service_bytes_in_total", "Bytes from clients to the service's backends.", "service"),
		svcOut:       desc("service_bytes_out_total", "Bytes from the service's backends to clients.", "service"),
		sbUp:         desc("service_backend_up", "1 when ober's health checks see the backend up.", "service", "pool", "backend"),
		sbHealth:     desc("service_backend_health", "Fraction of the backend's last 100 health checks that passed.", "service", "pool", "backend"),
		sbWeight:     desc("service_backend_weight", "The backend's configured weight.", "service", "pool", "backend"),
		sbEff:        desc("service_backend_effective_weight", "The weight HAProxy uses now (slowstart, leastbandwidth); 0 when out of service.", "service", "pool", "backend"),
		sbAdmin:      desc("service_backend_admin_state", "1 for the backend's admin state: enabled, drain or disabled.", "service", "pool", "backend", "state"),
		sbState:      desc("service_backend_state", "1 for the backend's state: in HAProxy ready, drain or maint; for a udp or nat service (nftables) rotation or out.", "service", "pool", "backend", "state"),
		sbChecks:     desc("service_backend_checks_total", "Health checks of the backend, by result (passed, failed).", "service", "pool", "backend", "result"),
		sbOpen:       desc("service_backend_connections", "Connections open to the backend now.", "service", "pool", "backend"),
		sbConns:      desc("service_backend_connections_total", "Connections the backend took, summed over the serving instances; for a udp or nat service, the new flows nftables sent it.", "service", "pool", "backend"),
		sbIn:         desc("service_backend_bytes_in_total", "Bytes from clients to the backend.", "service", "pool", "backend"),
		sbOut:        desc("service_backend_bytes_out_total", "Bytes from the backend to clients.", "service", "pool", "backend"),
		vipPoolAddrs: desc("vip_pool_addresses", "Addresses of a vip_pools entry, by state (used, reserved, free).", "pool", "state"),

		discBackends:    desc("discovery_backends", "Backends of a discovering pool, by state: found (the source names it) or draining (gone from the source, its connections finishing).", "pool", "kind", "state"),
		discFetches:     desc("discovery_fetches_total", "Fetches of a pool's source, by result (ok, failed).", "pool", "kind", "result"),
		discChanges:     desc("discovery_changes_total", "Fetches that changed a pool's backends.", "pool", "kind"),
		discApplied:     desc("discovery_applied_total", "Reloads that carried a pool's changes; changes_total minus this were coalesced.", "pool", "kind"),
		discLastSuccess: desc("discovery_last_success_timestamp_seconds", "When a pool's source last answered.", "pool", "kind"),
		linkStalled:     desc("link_transmit_stalled", "1 while a node.interfaces link is up but sends nothing while dropping: its transmit queue is stopped.", "iface"),
		linkStalls:      desc("link_transmit_stalls_total", "Times a node.interfaces link went stalled.", "iface"),
		discOK:          desc("discovery_up", "1 while a pool's last fetch succeeded, 0 while it fails (the pool keeps its backends under keeplast).", "pool", "kind"),
		reloads:         desc("reloads_total", "Configuration reloads applied."),
		reloadFails:     desc("reload_failures_total", "Configuration reloads refused; the previous configuration stayed."),
		wlEntries:       desc("whitelist_entries", "Prefixes in a whitelist.", "list"),
		wlGen:           desc("whitelist_generation", "Times a whitelist was replaced since the dataplane was created.", "list"),
		attached:        desc("dataplane_attached", "1 for each interface running ober's XDP program.", "interface", "mode"),
		configGen:       desc("config_generation", "Configuration generation in force (1 at start, +1 per applied reload)."),
		healthy:         desc("healthy", "1 when /health answers 200."),
		instanceSlots:   desc("instances", "Configured HAProxy instances."),
		bgpUp:           desc("bgp_session_up", "1 when the BGP session to the router is established.", "peer", "asn"),
		bgpBFDUp:        desc("bgp_bfd_up", "1 when the BFD session to the router is up (only peers with BFD).", "peer"),
		bgpFlaps:        desc("bgp_session_flaps_total", "Times the established BGP session to the router went down.", "peer"),
		bgpPrefixes:     desc("bgp_announced_prefixes", "VIP prefixes the node announces to its routers (0 while withdrawn)."),
		bgpAnnouncing:   desc("bgp_announcing", "1 while the node announces its VIPs."),
		bgpWithdraws:    desc("bgp_withdraws_total", "Times the node withdrew its VIPs (unhealthy or stopping)."),
		vrrpState:       desc("vrrp_state", "1 for the VRRP state keepalived last reported for the VIP's instance (MASTER, BACKUP, FAULT, STOP, UNKNOWN).", "vip", "vrid", "state"),
		vrrpMaster:      desc("vrrp_master", "1 while this node is the VIP's master.", "vip", "owner"),
		vrrpHeld:        desc("vrrp_vip_held", "1 while the VIP's address is on this node's interface.", "vip"),
		vrrpTrans:       desc("vrrp_transitions_total", "State changes keepalived reported for the VIP's instance.", "vip"),
		vrrpRestarts:    desc("vrrp_keepalived_restarts_total", "Restarts of keepalived after it exited."),
		vrrpHealthy:     desc("vrrp_healthy", "1 while the track file tells keepalived the node is healthy (0: fault, the VIPs go to the backups)."),
		hoRefused:       desc("handoff_refused_total", "Datagrams of the nodes' handoff channel refused, by reason (authentication, replay, stale, stranger, malformed, body).", "reason"),
		hoActive:        desc("handoff_active", "1 while a node is in transition and the dataplane hands orphans to their owners."),
		hoSent:          desc("handoff_flows_sent_total", "Connection records sent to the other nodes."),
		hoReceived:      desc("handoff_flows_received_total", "Connection records received from the other nodes."),
		hoPeerBackends:  desc("handoff_peer_backends_up", "For each other node heard from in the last 1.5 s: 1 when it reports a backend up.", "node"),
		ticketEpoch:     desc("tls_ticket_key_epoch", "The epoch whose TLS session ticket key encrypts (whole periods of tls.session_tickets.rotate since 1970; the same on every node of a site); absent while tickets are off."),
		certExpiry:      desc("tls_cert_expiry_seconds", "When the TLS service's certificate expires, as a Unix time in seconds: the earliest of its chain's (subtract time() for what is left).", "service"),
		ticketRotations: desc("tls_ticket_key_rotations_total", "Epochs this ober moved the instances' ticket keys to."),
		ticketFailures:  desc("tls_ticket_key_push_failures_total", "Pushes of ticket keys to an instance that failed (retried)."),
		tlsReaped:       desc("tls_handshake_timeouts_total", "Connections ober ended because their TLS handshake outlasted timeouts.tls_handshake (HAProxy before 3.0, which has no handshake timeout of its own)."),
		bgpOutage:       desc("bgp_backend_outage", "1 while the node announces although no backend is up, because no other node reports one up (clients get 503)."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.bytes, c.flows, c.fallbacks, c.steered, c.unassigned,
		c.instUp, c.instConns, c.instRestarts, c.backendUp, c.reloads, c.reloadFails, c.wlEntries, c.wlGen,
		c.attached, c.configGen, c.healthy, c.instanceSlots,
		c.bgpUp, c.bgpBFDUp, c.bgpFlaps, c.bgpPrefixes, c.bgpAnnouncing, c.bgpWithdraws,
		c.vrrpState, c.vrrpMaster, c.vrrpHeld, c.vrrpTrans, c.vrrpRestarts, c.vrrpHealthy,
		c.hoRefused, c.hoActive, c.hoSent, c.hoReceived, c.hoPeerBackends, c.bgpOutage, c.tlsReaped,
		c.ticketEpoch, c.ticketRotations, c.ticketFailures, c.certExpiry,
		c.svcUp, c.svcConns, c.svcIn, c.svcOut, c.sbUp, c.sbHealth, c.sbWeight, c.sbEff,
		c.sbAdmin, c.sbState, c.sbChecks, c.sbOpen, c.sbConns, c.sbIn, c.sbOut, c.vipPoolAddrs,
		c.discBackends, c.discFetches, c.discChanges, c.discApplied, c.discLastSuccess, c.discOK,
		c.linkStalled, c.linkStalls} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	if ts := d.ticketStatus(); ts != nil {
		gauge(c.ticketEpoch, float64(ts.Epoch))
		counter(c.ticketRotations, float64(ts.Rotations))
		counter(c.ticketFailures, float64(ts.PushFailures))
	}
	for _, l := range d.links.States() {
		gauge(c.linkStalled, b2f(l.Transmit == txwatch.Stalled), l.Iface)
		counter(c.linkStalls, float64(l.Stalls), l.Iface)
	}
	for _, ds := range d.discoveryStatus() {
		gauge(c.discBackends, float64(len(ds.Backends)), ds.Pool, ds.Kind, "found")
		gauge(c.discBackends, float64(len(ds.Draining)), ds.Pool, ds.Kind, "draining")
		counter(c.discFetches, float64(ds.Fetches-ds.Failures), ds.Pool, ds.Kind, "ok")
		counter(c.discFetches, float64(ds.Failures), ds.Pool, ds.Kind, "failed")
		counter(c.discChanges, float64(ds.Changes), ds.Pool, ds.Kind)
		counter(c.discApplied, float64(ds.Applied), ds.Pool, ds.Kind)
		if !ds.LastSuccess.IsZero() {
			gauge(c.discLastSuccess, float64(ds.LastSuccess.UnixMilli())/1000, ds.Pool, ds.Kind)
		}
		gauge(c.discOK, b2f(ds.LastError == "" && !ds.LastSuccess.IsZero()), ds.Pool, ds.Kind)
	}
	if cs, err := d.dp.Counters(); err == nil {
		for _, v := range cs.Verdicts {
			counter(c.packets, float64(v.Packets), v.Reason.String(), v.Action.String())
			counter(c.bytes, float64(v.Bytes), v.Reason.String(), v.Action.String())
		}
		for i := range loader.MaxInstances {
			a, s := cs.Assigned[i], cs.Steered[i]
			if a.Flows == 0 && a.Fallback == 0 && s.Packets == 0 {
				continue
			}
			l := strconv.Itoa(i)
			counter(c.flows, float64(a.Flows), l)
			counter(c.fallbacks, float64(a.Fallback), l)
			counter(c.steered, float64(s.Packets), l)
		}
		counter(c.unassigned, float64(cs.Unassigned))
	}
	for _, id := range []loader.WhitelistID{loader.WhitelistFrontendHTTP, loader.WhitelistRouters, loader.WhitelistBackendHTTP} {
		if info, err := d.dp.WhitelistInfo(id); err == nil {
			gauge(c.wlEntries, float64(info.Entries), id.String())
			gauge(c.wlGen, float64(info.Generation), id.String())
		}
	}
	if atts, _, err := d.dp.Attachments(); err == nil {
		for _, a := range atts {
			gauge(c.attached, 1, a.Iface, string(a.Mode))
		}
	}
	if d.sup != nil {
		st := d.sup.Status()
		gauge(c.instanceSlots, float64(len(st.Instances)))
		for _, in := range st.Instances {
			l := strconv.Itoa(in.Index)
			gauge(c.instUp, b2f(in.State == supervisor.StateHealthy), l, strconv.Itoa(in.CPU))
			gauge(c.instConns, float64(in.Connections), l)
			counter(c.instRestarts, float64(in.Restarts), l)
		}
		counter(c.reloads, float64(st.Reloads))
		d.mu.Lock()
		b := d.cur
		fails, gen := d.reloadFails, d.generation
		d.mu.Unlock()
		for _, bs := range d.topLevelBackends(b, st) {
			gauge(c.backendUp, b2f(bs.Up), bs.Name, bs.Address)
		}
		c.collectServices(b, counter, gauge)
		if b != nil {
			for svc, at := range b.CertNotAfter {
				gauge(c.certExpiry, float64(at.Unix()), svc)
			}
		}
		counter(c.reloadFails, float64(fails))
		gauge(c.configGen, float64(gen))
	}
	ok, _ := d.health(context.Background())
	gauge(c.healthy, b2f(ok))
	if d.speaker != nil {
		st := d.speaker.Status(context.Background())
		for _, p := range st.Peers {
			gauge(c.bgpUp, b2f(p.Up()), p.Address, strconv.FormatUint(uint64(p.ASN), 10))
			counter(c.bgpFlaps, float64(p.Flaps), p.Address)
			if p.BFD != "" {
				gauge(c.bgpBFDUp, b2f(p.BFD == "up"), p.Address)
			}
		}
		gauge(c.bgpPrefixes, float64(len(st.Announced)))
		gauge(c.bgpAnnouncing, b2f(len(st.Announced) > 0))
		counter(c.bgpWithdraws, float64(st.Withdraws))
		if d.ann != nil {
			gauge(c.bgpOutage, b2f(d.ann.backendOutage()))
		}
	}
	if d.reaper != nil {
		counter(c.tlsReaped, float64(d.reaper.Reaped()))
	}
	if d.handoff != nil {
		st := d.handoff.Stats()
		for r, n := range st.Refused {
			counter(c.hoRefused, float64(n), r)
		}
		gauge(c.hoActive, b2f(st.Active))
		counter(c.hoSent, float64(st.FlowsSent))
		counter(c.hoReceived, float64(st.FlowsReceived))
		for _, p := range d.handoff.Peers() {
			gauge(c.hoPeerBackends, b2f(p.BackendsUp), p.Node)
		}
	}
	if d.ka != nil {
		st := d.ka.Status()
		for _, in := range st.Instances {
			vip := in.VIP.String()
			state := string(in.State)
			if state == "" {
				state = "UNKNOWN"
			}
			for _, s := range []string{"MASTER", "BACKUP", "FAULT", "STOP", "UNKNOWN"} {
				gauge(c.vrrpState, b2f(s == state), vip, strconv.Itoa(in.VRID), s)
			}
			gauge(c.vrrpMaster, b2f(in.State == vrrp.State("MASTER")), vip, in.Owner.String())
			gauge(c.vrrpHeld, b2f(in.Held), vip)
			counter(c.vrrpTrans, float64(in.Transitions), vip)
		}
		counter(c.vrrpRestarts, float64(st.Restarts))
		gauge(c.vrrpHealthy, b2f(st.Healthy))
	}
}

// collectServices writes the services' and their backends' metrics.
func (c *collector) collectServices(b *plan.NodePlan, counter, gauge func(*prometheus.Desc, float64, ...string)) {
	for _, ss := range c.d.serviceStates(b) {
		gauge(c.svcUp, b2f(ss.Up), ss.Name)
		counter(c.svcConns, float64(ss.TotalConnections), ss.Name)
		counter(c.svcIn, float64(ss.BytesIn), ss.Name)
		counter(c.svcOut, float64(ss.BytesOut), ss.Name)
		for _, bs := range ss.Backends {
			l := []string{ss.Name, bs.Pool, bs.Name}
			gauge(c.sbUp, b2f(bs.Up), l...)
			gauge(c.sbHealth, bs.Health, l...)
			gauge(c.sbWeight, float64(bs.Weight), l...)
			gauge(c.sbEff, float64(bs.EffectiveWeight), l...)
			for _, st := range []string{config.StateEnabled, config.StateDrain, config.StateDisabled} {
				gauge(c.sbAdmin, b2f(bs.Admin == st), append(l, st)...)
			}
			states := []string{servers.Ready, servers.Drain, servers.Maint}
			if bs.State == KernelRotation || bs.State == KernelOut {
				states = []string{KernelRotation, KernelOut}
			}
			for _, st := range states {
				gauge(c.sbState, b2f(bs.State == st), append(l, st)...)
			}
			counter(c.sbChecks, float64(bs.ChecksPassed), append(l, "passed")...)
			counter(c.sbChecks, float64(bs.ChecksFailed), append(l, "failed")...)
			gauge(c.sbOpen, float64(bs.Connections), l...)
			counter(c.sbConns, float64(bs.TotalConnections), l...)
			counter(c.sbIn, float64(bs.BytesIn), l...)
			counter(c.sbOut, float64(bs.BytesOut), l...)
		}
	}
	if b == nil {
		return
	}
	for _, u := range b.IPAM.Usage() {
		gauge(c.vipPoolAddrs, float64(u.Used), u.Name, "used")
		gauge(c.vipPoolAddrs, float64(u.Reserved), u.Name, "reserved")
		gauge(c.vipPoolAddrs, float64(u.Free), u.Name, "free")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
