package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/handoff"
)

// routersConverge is how long a stopping node keeps accepting new
// connections after its withdraw: SYNs the routers sent before they
// processed the withdraw are still served instead of being retried a
// second later elsewhere.
const routersConverge = 500 * time.Millisecond

// announcer keeps the routes in step with the node's health: withdrawn
// the moment the supervisor reports a change that makes the node
// unhealthy, announced again once it has been healthy for ha.bgp.hold_down.
type announcer struct {
	d  *Daemon
	sp *bgp.Speaker

	mu           sync.Mutex
	announced    bool
	ever         bool
	healthySince time.Time
	reason       string // why the routes are not announced
	stopped      bool
	// outage: announced although no backend is up, because no node has
	// one up (backendScope); downSince: when this node's backends went
	// down, zero while it is healthy.
	outage    bool
	downSince time.Time
}

// backendOutage reports whether the node announces through a cluster-wide
// backend outage.
func (a *announcer) backendOutage() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.outage
}

func (a *announcer) run(ctx context.Context, kick <-chan struct{}) {
	// The tick ends hold-downs and notices what sends no event (an XDP
	// program detached from outside, say).
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		a.evaluate()
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-tick.C:
		}
	}
}

func (a *announcer) evaluate() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	p := a.d.plan()
	if p == nil {
		return
	}
	cfg := p.Config
	w := cfg.HA.BGP.AnnounceWhen
	ok, reason := a.d.healthFor(w.MinInstances, *w.BackendUp)
	now := time.Now()
	scope := scopeLocal
	if !ok {
		scope = a.backendScope(cfg, now)
	} else {
		a.downSince = time.Time{}
	}
	if outage := scope == scopeOutage; outage != a.outage {
		a.outage = outage
		if outage {
			a.d.log.Warn("no backend up on any node: announcing anyway, clients get 503 instead of no answer", "reason", reason)
		} else {
			a.d.log.Info("backend outage over")
		}
	}
	switch {
	case scope == scopeOutage:
		ok = true
	case scope == scopeUndecided && a.announced:
		// Keep the route while the other nodes' reports catch up.
		return
	}
	if !ok {
		a.healthySince, a.reason = time.Time{}, reason
		if a.announced {
			a.announced = false
			if err := a.sp.Withdraw(reason); err != nil {
				a.d.log.Error("bgp withdraw", "err", err)
			}
		}
		return
	}
	if a.healthySince.IsZero() {
		a.healthySince = now
	}
	if !a.announced && a.ever {
		if hold := cfg.HA.BGP.HoldDown.Duration; now.Sub(a.healthySince) < hold {
			a.reason = fmt.Sprintf("hold-down: healthy for %s of %s", now.Sub(a.healthySince).Truncate(time.Millisecond), hold)
			return
		}
	}
	if !a.announced && a.d.handoff != nil && cfg.HA.BGP.Handoff.JoinWindow.Duration > 0 {
		// The routers will move some of the other nodes' connections
		// here; they hand them back from before the first of them moves.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		if err := a.d.handoff.Join(ctx, cfg.HA.BGP.Handoff.JoinWindow.Duration); err != nil {
			a.d.log.Warn("drain handoff: join not acknowledged by every node; connections moved to this node from them will be reset", "err", err)
		}
		cancel()
	}
	// Announce is a diff: unchanged routes send nothing.
	if err := a.sp.Announce(p.BGP.Routes); err != nil {
		a.d.log.Error("bgp announce", "err", err)
		return
	}
	a.announced, a.ever, a.reason = true, true, ""
}

// How an unhealthy node's backend failure weighs (backend_scope cluster).
type scopeVerdict int

const (
	// scopeLocal: withdraw, as the node's own health says.
	scopeLocal scopeVerdict = iota
	// scopeOutage: no node has a backend up; withdrawing would leave the
	// clients without an answer, so announce and answer 503.
	scopeOutage
	// scopeUndecided: other nodes still report backends up, but their
	// checks may not have seen the failure yet: hold the route as it is.
	scopeUndecided
)

// backendScope weighs a node that is unhealthy. Only a node whose sole
// fault is that no backend is up is judged by the other nodes' reports
// over the handoff channel: with none of them reporting one up (every
// backend down, or every other node silent, which leaves nobody to take
// the traffic either), no node can do better, and the node keeps
// announcing. While some report one up, the node withdraws, but only once
// a check interval and two reports have passed since its own backends
// went down: the nodes' checks do not run in step, and a node that
// withdrew first would flap its route in a failure every node sees.
func (a *announcer) backendScope(cfg *config.Config, now time.Time) scopeVerdict {
	w := cfg.HA.BGP.AnnounceWhen
	if !*w.BackendUp || w.BackendScope != config.BackendScopeCluster || a.d.handoff == nil {
		return scopeLocal
	}
	if ok, _ := a.d.healthFor(w.MinInstances, false); !ok || !a.d.backendsFailing() {
		return scopeLocal
	}
	if a.downSince.IsZero() {
		a.downSince = now
	}
	if !a.d.handoff.BackendsUpElsewhere() {
		return scopeOutage
	}
	if a.outage {
		// The outage ends, seen first by another node's checks: this
		// node's get the same time to see the backends back before its
		// own view counts, or the end of every outage would flap it.
		a.downSince = now
	}
	if now.Sub(a.downSince) < longestCheckInterval(a.d.plan())+2*handoff.DefaultHealthEvery {
		return scopeUndecided
	}
	return scopeLocal
}

// withdraw takes the routes back for good (ober is stopping).
func (a *announcer) withdraw(reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped, a.reason = true, reason
	if a.announced {
		a.announced = false
		if err := a.sp.Withdraw(reason); err != nil {
			a.d.log.Error("bgp withdraw", "err", err)
		}
	}
}

func (a *announcer) notAnnouncedReason() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.announced {
		return ""
	}
	return a.reason
}

// startHandoff joins the drain handoff of ha.bgp.handoff.nodes: this
// node's address is the one of them on node.interfaces. The same channel
// carries each node's backend view (announce_when.backend_scope).
func (d *Daemon) startHandoff(cfg *config.Config) error {
	ho := cfg.HA.BGP.Handoff
	if len(ho.Nodes) == 0 {
		return nil
	}
	addrs, err := plan.HostAddrs(cfg.Node.Interfaces)
	if err != nil {
		return err
	}
	var nodes []netip.Addr
	var self netip.Addr
	for _, n := range ho.Nodes {
		nodes = append(nodes, n.Addr)
		for _, iface := range cfg.Node.Interfaces {
			if slices.Contains(addrs[iface], n.Addr) {
				self = n.Addr
			}
		}
	}
	if !self.IsValid() {
		return fmt.Errorf("ha.bgp.handoff.nodes: none of %v is an address of node.interfaces %v", nodes, cfg.Node.Interfaces)
	}
	return d.runHandoff(cfg, "ha.bgp.handoff", ho, nodes, self, nil)
}

// runHandoff starts the nodes' channel of the handoff block at key.
func (d *Daemon) runHandoff(cfg *config.Config, key string, ho config.Handoff, nodes []netip.Addr, self netip.Addr,
	onMove func(context.Context, netip.Addr, netip.Addr) error) error {
	// XDP's FIB lookup forwards nothing out of an interface whose
	// forwarding is off; say so instead of failing quietly later.
	for _, iface := range cfg.Node.Interfaces {
		v, err := procstat.Proc.Sysctl("net/ipv4/conf/" + iface + "/forwarding")
		if err == nil && v != "1" {
			return fmt.Errorf("%s: IPv4 forwarding is off on %s; the dataplane hands connections to other nodes through it (sysctl -w net.ipv4.conf.%s.forwarding=1)", key, iface, iface)
		}
	}
	hkey, err := config.ReadSharedKey(ho.KeyFile)
	if err != nil {
		return fmt.Errorf("%s.key_file: %q: %w", key, ho.KeyFile, err)
	}
	reader, err := d.dp.NewFlows()
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	d.localFlows = handoff.NewLocalFlows(d.dispatchedServices, reader)
	d.handoff, err = handoff.Start(handoff.Options{
		Self: self, Nodes: nodes, Port: ho.Port, Key: hkey,
		MaxTransition: ho.MaxTransition.Duration, Rate: *ho.Rate, Burst: ho.Burst,
		Dataplane: d.tables,
		Flows:     d.localFlows,
		Health:    d.reportHealth,
		OnMove:    onMove,
		Logger:    d.log.With("part", "handoff"),
	})
	if err != nil {
		reader.Close()
		return fmt.Errorf("%s: %w", key, err)
	}
	d.flowReader = reader
	d.log.Info("handoff on", "self", self, "nodes", len(nodes))
	return nil
}
