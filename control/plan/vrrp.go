package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// VRRP turns ha.vrrp into keepalived's configuration for this node.
// Self defaults to the one of ha.vrrp.nodes found among addrs of the VRRP
// interface (Facts.Addrs).
func VRRP(cfg *config.Config, addrs map[string][]netip.Addr) (vrrp.Config, error) {
	v := cfg.HA.VRRP
	nodes := make([]netip.Addr, len(v.Nodes))
	for i, n := range v.Nodes {
		nodes[i] = n.Addr
	}
	self := v.Self.Addr
	if !self.IsValid() {
		have := addrs[v.Interface]
		var found []netip.Addr
		for _, n := range nodes {
			if slices.Contains(have, n) {
				found = append(found, n)
			}
		}
		switch len(found) {
		case 1:
			self = found[0]
		case 0:
			return vrrp.Config{}, &config.FieldError{Path: "ha.vrrp.self", Msg: fmt.Sprintf(
				"none of ha.vrrp.nodes is an address of %s (it has %s); set ha.vrrp.self or add the address",
				v.Interface, addrList(have))}
		default:
			return vrrp.Config{}, &config.FieldError{Path: "ha.vrrp.self", Msg: fmt.Sprintf(
				"%s holds several of ha.vrrp.nodes (%s); set ha.vrrp.self", v.Interface, addrList(found))}
		}
	}
	vips := make([]netip.Addr, len(cfg.VIPs))
	for i, x := range cfg.VIPs {
		vips[i] = x.Addr
	}
	ins, err := vrrp.Plan(nodes, self, vips, v.FirstVRID)
	if err != nil {
		return vrrp.Config{}, err
	}
	var peers []netip.Addr
	for _, n := range nodes {
		if n != self {
			peers = append(peers, n)
		}
	}
	return vrrp.Config{
		Interface: v.Interface, Self: self, Peers: peers, Instances: ins,
		AdvertInterval: v.AdvertInterval.Duration, PreemptDelay: v.PreemptDelay.Duration,
		Multicast: v.Multicast, GARPRepeat: v.GARP.Repeat, GARPRefresh: v.GARP.Refresh.Duration,
	}, nil
}

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "no address"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
