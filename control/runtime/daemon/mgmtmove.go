package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// MoveVIP moves a VIP to another VRRP node, or back to its owner, without
// losing its connections (mgmt.Mover): every node applies its part over
// the handoff channel, then this one waits, at most preempt_delay and 3 s
// more, to see its own part of the move happen.
func (d *Daemon) MoveVIP(ctx context.Context, vipText, to string) (json.RawMessage, error) {
	cfg := d.config()
	if cfg == nil || cfg.HA.Mode != config.HAModeVRRP || d.vh == nil || d.handoff == nil {
		return nil, mgmt.Errorf(http.StatusConflict, "",
			"moving a VIP needs ha.mode vrrp with ha.vrrp.handoff (the new holder hands the old one's connections back)")
	}
	vip, err := netip.ParseAddr(vipText)
	if err != nil {
		return nil, mgmt.Errorf(http.StatusBadRequest, "vip", "%q: not an IP address", vipText)
	}
	vip = vip.Unmap()
	if !slices.ContainsFunc(cfg.VIPs, func(v config.Addr) bool { return v.Addr == vip }) {
		return nil, mgmt.Errorf(http.StatusNotFound, "vip", "%s: not one of the VIPs", vip)
	}
	var target netip.Addr
	if to != "owner" {
		if target, err = netip.ParseAddr(to); err != nil {
			return nil, mgmt.Errorf(http.StatusUnprocessableEntity, "to", "%q: not a node's address of ha.vrrp.nodes, nor \"owner\"", to)
		}
		target = target.Unmap()
		if !slices.ContainsFunc(cfg.HA.VRRP.Nodes, func(n config.Addr) bool { return n.Addr == target }) {
			return nil, mgmt.Errorf(http.StatusUnprocessableEntity, "to", "%s: not one of ha.vrrp.nodes %v", target, cfg.HA.VRRP.Nodes)
		}
	}
	wasMaster := d.isMaster(vip)
	if err := d.handoff.Move(ctx, vip, target); err != nil {
		var me *handoff.MoveError
		if errors.As(err, &me) {
			return nil, mgmt.Errorf(http.StatusServiceUnavailable, "", "%v; the nodes that applied it keep it, so repeat the move (or move to \"owner\") once they answer", err)
		}
		return nil, mgmt.Errorf(http.StatusServiceUnavailable, "", "%v", err)
	}
	self := d.handoff.Self()
	res := mgmt.VIPMove{VIP: vip.String(), To: to}
	wait := cfg.HA.VRRP.PreemptDelay.Duration + 3*time.Second
	switch {
	case target == self:
		res.Done = d.waitMaster(ctx, vip, true, wait)
		res.Message = fmt.Sprintf("%s is held by this node (%s) until it is moved again or this node fails", vip, self)
		if !res.Done {
			res.Message = fmt.Sprintf("every node applied the move; this node (%s) did not take %s within %s: see `ober status`", self, vip, wait)
		}
	case wasMaster:
		res.Done = d.waitMaster(ctx, vip, false, wait)
		res.Message = fmt.Sprintf("%s left this node for %s; the connections it holds here are handed back until they end", vip, targetText(target))
		if !res.Done {
			res.Message = fmt.Sprintf("every node applied the move; this node still holds %s after %s: see `ober status`", vip, wait)
		}
	default:
		res.Message = fmt.Sprintf("every node applied the move; %s takes %s within ha.vrrp.preempt_delay (%s)", targetText(target), vip, cfg.HA.VRRP.PreemptDelay.Duration)
	}
	d.log.Info("vip move", "vip", vip, "to", targetText(target), "done", res.Done)
	return json.Marshal(res)
}

func (d *Daemon) isMaster(vip netip.Addr) bool {
	if d.ka == nil {
		return false
	}
	for _, in := range d.ka.Status().Instances {
		if in.VIP == vip {
			return in.State == vrrp.Master
		}
	}
	return false
}

// waitMaster waits until this node is (or is not) vip's master.
func (d *Daemon) waitMaster(ctx context.Context, vip netip.Addr, master bool, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		if d.isMaster(vip) == master {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}
