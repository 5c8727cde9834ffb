package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// vrrpHandoff makes every planned VIP move of VRRP mode lose no
// connection (ha.vrrp.handoff). Keepalived moves a VIP by itself, by
// priority; ober steers it through each VIP's priority file:
//
//   - A node that is not ready (unhealthy, or its peers not yet told)
//     holds every VIP at priority 1: it takes a VIP only when no other
//     node can, and never preempts. Once healthy, it tells the other
//     nodes it joins (they send it their connections and acknowledge),
//     and only then returns to its own priorities: a recovered owner
//     preempts only when the holder's connections can be handed back.
//   - The target of an operator's move rises to 254 in the same way.
//   - A node that loses a VIP it held keeps the VIP on lo, so its sockets
//     stay valid, and drains: the nodes hand the segments of its
//     connections back to it until the last one ends or
//     timeouts.max_transfer passes.
//
// A holder that dies loses its connections: nothing can hand them back.
type vrrpHandoff struct {
	d  *Daemon
	h  *handoff.Handoff
	ka *vrrp.Keepalived

	joinWindow  time.Duration
	maxTransfer time.Duration
	refresh     time.Duration // how often a drain notice is repeated
	startedAt   time.Time

	mu        sync.Mutex
	instances map[netip.Addr]vrrp.Instance // by VIP
	ready     bool
	reason    string // why not ready
	lastTry   time.Time
	moved     map[netip.Addr]bool      // VIPs moved here by an operator
	master    map[netip.Addr]bool      // VIPs keepalived masters here
	draining  map[netip.Addr]time.Time // VIPs lost, until their deadline
	announced bool                     // the peers know this node drains
	lastDrain time.Time
	stopped   bool // ober stops: its own drain took over
	wake      chan struct{}

	// lo holds the VIPs ober put on lo; loOn says whether they should be
	// there: from the first time the node is healthy until it is not.
	lo   []netip.Prefix
	loOn bool
}

// hearPeersFirst is how long after its start a node waits for the other
// nodes' reports before it takes a node that did not acknowledge its join
// for dead.
const hearPeersFirst = 3 * handoff.DefaultHealthEvery

// startVRRPHandoff starts the nodes' channel between ha.vrrp.nodes, puts
// the VIPs on lo (a lost VIP's connections keep a local address) and
// holds every VIP until the node is ready.
func (d *Daemon) startVRRPHandoff(ctx context.Context, p *plan.NodePlan) error {
	cfg := p.Config
	ho := cfg.HA.VRRP.Handoff
	iface := cfg.HA.VRRP.Interface
	// With the VIPs on lo the kernel would answer ARP for them on every
	// interface, and a backup could draw a VIP's traffic from its master.
	if v := max(sysctlInt("net/ipv4/conf/all/arp_ignore"), sysctlInt("net/ipv4/conf/"+iface+"/arp_ignore")); v < 1 {
		return fmt.Errorf("ha.vrrp.handoff: net.ipv4.conf.%s.arp_ignore is 0: a node keeps the VIPs on lo while it hands connections over, and would answer ARP for VIPs it does not hold (sysctl -w net.ipv4.conf.%s.arp_ignore=1)", iface, iface)
	}
	var nodes []netip.Addr
	for _, n := range cfg.HA.VRRP.Nodes {
		nodes = append(nodes, n.Addr)
	}
	vh := &vrrpHandoff{
		d: d, joinWindow: ho.JoinWindow.Duration, maxTransfer: cfg.Timeouts.MaxTransfer.Duration,
		refresh:   max(ho.MaxTransition.Duration/2, 500*time.Millisecond),
		startedAt: time.Now(), instances: map[netip.Addr]vrrp.Instance{},
		moved: map[netip.Addr]bool{}, master: map[netip.Addr]bool{}, draining: map[netip.Addr]time.Time{},
		reason: "starting", wake: make(chan struct{}, 1),
	}
	for _, in := range p.VRRP.Instances {
		vh.instances[in.VIP.Unmap()] = in
	}
	if err := d.runHandoff(cfg, "ha.vrrp.handoff", *ho, nodes, p.VRRP.Self.Unmap(), vh.onMove); err != nil {
		return err
	}
	vh.h = d.handoff
	d.vh = vh
	go vh.run(ctx)
	return nil
}

func sysctlInt(name string) int {
	v, err := procstat.Proc.Sysctl(name)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(v)
	return n
}

// holdAll is the priority offsets keepalived starts with: every VIP held.
func (vh *vrrpHandoff) holdAll() map[int]int {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	out := map[int]int{}
	for _, in := range vh.instances {
		out[in.VRID] = vrrp.HoldOffset
	}
	return out
}

// setInstances follows a reload's instances.
func (vh *vrrpHandoff) setInstances(ins []vrrp.Instance) {
	vh.mu.Lock()
	vh.instances = map[netip.Addr]vrrp.Instance{}
	for _, in := range ins {
		vh.instances[in.VIP.Unmap()] = in
	}
	for v := range vh.moved {
		if _, ok := vh.instances[v]; !ok {
			delete(vh.moved, v)
		}
	}
	vh.mu.Unlock()
	vh.applyOffsets()
}

// offsetLocked is a VIP's priority offset now.
func (vh *vrrpHandoff) offsetLocked(vip netip.Addr) int {
	switch {
	case !vh.ready:
		return vrrp.HoldOffset
	case vh.moved[vip]:
		return vrrp.MoveOffset
	}
	return 0
}

func (vh *vrrpHandoff) applyOffsets() {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	if vh.ka == nil {
		return
	}
	for vip, in := range vh.instances {
		if err := vh.ka.SetOffset(in.VRID, vh.offsetLocked(vip)); err != nil {
			vh.d.log.Error("vrrp: priority file", "vip", vip, "err", err)
		}
	}
}

// health follows the node's health (the tracker, every change and every
// 100 ms): an unhealthy node is not ready; a healthy one becomes ready
// once its peers acknowledged that it joins.
func (vh *vrrpHandoff) health(ok bool, why string) {
	vh.mu.Lock()
	if vh.stopped {
		vh.mu.Unlock()
		return
	}
	if ok != vh.loOn {
		// Healthy, the node keeps every VIP on lo, for the day it loses
		// one on purpose. Unhealthy, its connections died with their
		// instances (or lost their backends): a VIP it no longer holds
		// must not answer locally, where a client would get resets
		// until the new holder's ARP reaches the router.
		vh.loOn = ok
		if err := vh.syncLoLocked(vh.d.config()); err != nil {
			vh.d.log.Error("vrrp handoff", "err", err)
		}
	}
	switch {
	case !ok:
		changed := vh.ready
		vh.ready, vh.reason = false, why
		vh.mu.Unlock()
		if changed {
			vh.applyOffsets()
		}
		return
	case vh.ready:
		vh.mu.Unlock()
		return
	case time.Since(vh.lastTry) < time.Second:
		vh.mu.Unlock()
		return
	}
	vh.lastTry = time.Now()
	vh.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err := vh.activate(ctx)
	cancel()
	vh.mu.Lock()
	if err != nil {
		vh.reason = err.Error()
		vh.mu.Unlock()
		vh.d.log.Warn("vrrp: not taking VIPs back yet", "reason", err)
		return
	}
	vh.ready, vh.reason = true, ""
	vh.mu.Unlock()
	vh.d.log.Info("vrrp: ready; the other nodes hand this node's VIPs over with their connections")
	vh.applyOffsets()
}

// activate tells every node that this one is about to take a VIP, so that
// they record their connections, send them here and forward the segments
// this node has no socket for. It fails while a peer that reports its
// health has not acknowledged: that peer may hold the VIP.
func (vh *vrrpHandoff) activate(ctx context.Context) error {
	vh.mu.Lock()
	draining := len(vh.draining) > 0
	vh.mu.Unlock()
	var err error
	if draining {
		// Already draining: everybody records; the notice renews it.
		err = vh.h.Drain(ctx, vh.refresh*2)
	} else {
		err = vh.h.Join(ctx, vh.joinWindow)
	}
	var na *handoff.NotAckedError
	if !errors.As(err, &na) {
		return err
	}
	if time.Since(vh.startedAt) < hearPeersFirst {
		// Too early to tell a silent node from one not heard yet.
		return fmt.Errorf("waiting to hear from %v", na.Peers)
	}
	var live []netip.Addr
	for _, p := range vh.h.Peers() {
		if a, perr := netip.ParseAddr(p.Node); perr == nil && slices.Contains(na.Peers, a) {
			live = append(live, a)
		}
	}
	if len(live) > 0 {
		return fmt.Errorf("the handoff channel to %v did not acknowledge; they may hold a VIP whose connections would be reset", live)
	}
	return nil
}

// state follows keepalived's report of one VIP.
func (vh *vrrpHandoff) state(in vrrp.Instance, from, to vrrp.State) {
	vip := in.VIP.Unmap()
	vh.mu.Lock()
	if to == vrrp.Unknown && vh.ready {
		// keepalived died; ober starts it again, and it must not preempt
		// before the others were told: held until ready again.
		vh.ready, vh.reason = false, "keepalived restarting"
		defer vh.applyOffsets()
	}
	defer vh.mu.Unlock()
	switch {
	case to == vrrp.Master:
		vh.master[vip] = true
		if _, ok := vh.draining[vip]; ok {
			// Its connections arrive here directly again.
			delete(vh.draining, vip)
			vh.d.log.Info("vrrp handoff: VIP back before its drain ended", "vip", vip)
		}
	case from == vrrp.Master:
		delete(vh.master, vip)
		vh.draining[vip] = time.Now().Add(vh.maxTransfer)
		vh.d.log.Info("vrrp handoff: VIP lost; its connections are handed back here until they end", "vip", vip, "to", to,
			"max_transfer", vh.maxTransfer)
	default:
		delete(vh.master, vip)
	}
	select {
	case vh.wake <- struct{}{}:
	default:
	}
}

// run keeps the drain of lost VIPs: the notice out while one drains and
// renewed, its end once the last of their connections closed.
func (vh *vrrpHandoff) run(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-vh.wake:
		}
		vh.step(ctx)
	}
}

// stop leaves the drain to ober's stop, which drains every connection
// (the VIPs stay on lo until dropLo), or to the next ober at a restart.
func (vh *vrrpHandoff) stop() {
	vh.mu.Lock()
	vh.stopped = true
	vh.mu.Unlock()
}

// dropLo takes every VIP ober put on lo away: ober has stopped serving.
func (vh *vrrpHandoff) dropLo() {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	vh.loOn = false
	_ = vh.syncLoLocked(nil)
}

// reloaded follows a reload's VIPs on lo.
func (vh *vrrpHandoff) reloaded(cfg *config.Config) error {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	return vh.syncLoLocked(cfg)
}

func (vh *vrrpHandoff) step(ctx context.Context) {
	vh.mu.Lock()
	n, stopped := len(vh.draining), vh.stopped
	vh.mu.Unlock()
	if stopped {
		return
	}
	if n > 0 {
		open, err := vh.d.localFlows.OpenByVIP()
		if err != nil {
			vh.d.log.Error("vrrp handoff: list connections", "err", err)
			open = nil
		}
		now := time.Now()
		vh.mu.Lock()
		for vip, until := range vh.draining {
			switch {
			case err == nil && open[vip] == 0:
				vh.d.log.Info("vrrp handoff: the lost VIP's last connection here ended", "vip", vip)
				delete(vh.draining, vip)
			case now.After(until):
				vh.d.log.Warn("vrrp handoff: timeouts.max_transfer passed; the lost VIP's connections here are no longer handed back", "vip", vip, "open", open[vip])
				delete(vh.draining, vip)
			}
		}
		vh.mu.Unlock()
	}
	vh.mu.Lock()
	n = len(vh.draining)
	renew := n > 0 && (!vh.announced || time.Since(vh.lastDrain) >= vh.refresh)
	end := n == 0 && vh.announced
	vh.mu.Unlock()
	switch {
	case renew:
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		err := vh.h.Drain(hctx, 2*vh.refresh)
		cancel()
		if err != nil {
			vh.d.log.Warn("vrrp handoff: drain not acknowledged by every node", "err", err)
		}
		vh.mu.Lock()
		vh.announced, vh.lastDrain = true, time.Now()
		vh.mu.Unlock()
	case end:
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		if err := vh.h.Done(hctx); err != nil {
			vh.d.log.Warn("vrrp handoff: end of drain not acknowledged by every node", "err", err)
		}
		cancel()
		vh.mu.Lock()
		vh.announced = false
		vh.mu.Unlock()
	}
}

// onMove applies an operator's move of vip to target (zero: back to its
// owner) on this node: the target joins and rises; a node the VIP moved
// to before falls back, telling the others first if it holds the VIP.
func (vh *vrrpHandoff) onMove(ctx context.Context, vip, target netip.Addr) error {
	vip = vip.Unmap()
	vh.mu.Lock()
	_, known := vh.instances[vip]
	ready, reason := vh.ready, vh.reason
	wasMoved, isMaster := vh.moved[vip], vh.master[vip]
	vh.mu.Unlock()
	if !known {
		return fmt.Errorf("%s is not a VRRP VIP of this node", vip)
	}
	self := vh.h.Self()
	if target == self {
		if !ready {
			return fmt.Errorf("node %s is not ready to take %s: %s", self, vip, reason)
		}
		if err := vh.activate(ctx); err != nil {
			return err
		}
		vh.mu.Lock()
		vh.moved[vip] = true
		vh.mu.Unlock()
		vh.applyOffsets()
		vh.d.log.Info("vrrp: VIP moved here by an operator", "vip", vip)
		return nil
	}
	if !wasMoved {
		return nil
	}
	if isMaster {
		// The VIP leaves: the others record first.
		if err := vh.activate(ctx); err != nil {
			return err
		}
	}
	vh.mu.Lock()
	delete(vh.moved, vip)
	vh.mu.Unlock()
	vh.applyOffsets()
	vh.d.log.Info("vrrp: operator's move of the VIP to this node ended", "vip", vip, "to", targetText(target))
	return nil
}

func targetText(t netip.Addr) string {
	if !t.IsValid() {
		return "its owner"
	}
	return t.String()
}

// status is the handoff's view for `ober status`.
func (vh *vrrpHandoff) status() (ready bool, reason string, moved, draining []netip.Addr) {
	vh.mu.Lock()
	defer vh.mu.Unlock()
	for v := range vh.moved {
		moved = append(moved, v)
	}
	for v := range vh.draining {
		draining = append(draining, v)
	}
	slices.SortFunc(moved, netip.Addr.Compare)
	slices.SortFunc(draining, netip.Addr.Compare)
	return vh.ready, vh.reason, moved, draining
}

// syncLoLocked puts every VIP of cfg on lo as a host address while loOn,
// and takes away the ones ober put there that are not wanted. A node that
// lost a VIP's mastership (keepalived removed it from its interface)
// still owns the connections it accepted, and their segments, handed
// back, must be delivered and answered locally. A VIP already on lo (left
// by the previous ober at a restart) is taken over as ober's.
func (vh *vrrpHandoff) syncLoLocked(cfg *config.Config) error {
	link, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	var want []netip.Prefix
	if vh.loOn && cfg != nil {
		for _, v := range cfg.VIPs {
			want = append(want, netip.PrefixFrom(v.Addr, v.Addr.BitLen()))
		}
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("lo: list addresses: %w", err)
	}
	var errs []error
	for _, p := range want {
		if slices.Contains(vh.lo, p) {
			continue
		}
		if !slices.ContainsFunc(have, func(a netlink.Addr) bool { return prefixOf(a) == p }) {
			if err := addHostAddr(link, p); err != nil {
				errs = append(errs, fmt.Errorf("add %s to lo: %w", p, err))
				continue
			}
		}
		vh.lo = append(vh.lo, p)
	}
	var left []netip.Prefix
	for _, p := range vh.lo {
		if slices.Contains(want, p) {
			left = append(left, p)
			continue
		}
		if err := delHostAddr(link, p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s from lo: %w", p, err))
			left = append(left, p)
		}
	}
	vh.lo = left
	return errors.Join(errs...)
}
