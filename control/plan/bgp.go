package plan

import (
	"fmt"
	"net/netip"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/loader"
)

// Ports the routers whitelist guards on the node's own addresses: BGP and
// single-hop and multihop BFD (RFC 5881, 5883).
const (
	portBFD         = 3784
	portBFDMultihop = 4784
)

// routerServices puts the node's own addresses (of node.interfaces) into
// the dataplane as host entries whose BGP and BFD ports admit only the
// routers whitelist; everything else to those addresses passes untouched.
func (p *NodePlan) routerServices(addrs map[string][]netip.Addr) {
	bg := p.Config.HA.BGP
	t := &p.Tables
	isVIP := map[netip.Addr]bool{}
	for _, v := range t.VIPs {
		isVIP[v.Addr] = true
	}
	for _, a := range ifaceAddrs(p.Config.Node.Interfaces, addrs) {
		if isVIP[a] {
			continue
		}
		isVIP[a] = true
		t.VIPs = append(t.VIPs, loader.VIP{Addr: a, Host: true})
		add := func(proto loader.Proto, port uint16) {
			t.Services = append(t.Services, loader.Service{VIP: a, Proto: proto, Port: port,
				Enforce: true, Whitelist: loader.WhitelistRouters})
		}
		if bg.ListenPort > 0 {
			add(loader.ProtoTCP, uint16(bg.ListenPort))
		}
		add(loader.ProtoUDP, portBFD)
		add(loader.ProtoUDP, portBFDMultihop)
	}
}

// ifaceAddrs lists the addresses of ifaces in order.
func ifaceAddrs(ifaces []string, addrs map[string][]netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, name := range ifaces {
		out = append(out, addrs[name]...)
	}
	return out
}

// Speaker turns ha.bgp into the speaker's configuration; addrs are the
// addresses of node.interfaces (Facts.Addrs), the router ID's default
// being the first IPv4 one.
func Speaker(cfg *config.Config, addrs map[string][]netip.Addr) (bgp.Config, error) {
	bg := cfg.HA.BGP
	out := bgp.Config{ASN: bg.ASN, RouterID: bg.RouterID.Addr, ListenPort: int32(bg.ListenPort)}
	if !out.RouterID.IsValid() {
		for _, a := range ifaceAddrs(cfg.Node.Interfaces, addrs) {
			if a.Is4() {
				out.RouterID = a
				break
			}
		}
		if !out.RouterID.IsValid() {
			return out, fmt.Errorf("ha.bgp.router_id: not set, and node.interfaces have no IPv4 address to take it from")
		}
	}
	out.Peers = Peers(bg)
	return out, nil
}

// Peers are ha.bgp.peers as a speaker takes them.
func Peers(bg *config.BGP) []bgp.Peer {
	var out []bgp.Peer
	for _, p := range bg.Peers {
		sp := bgp.Peer{
			Address: p.Address.Addr, ASN: p.ASN, Port: p.Port, Password: p.Password,
			HoldTime: p.HoldTime.Duration, Keepalive: p.Keepalive.Duration,
			ConnectRetry: p.ConnectRetry.Duration, Multihop: uint8(p.Multihop), Passive: p.Passive,
		}
		if p.BFD.Enabled {
			sp.BFD = &bgp.BFD{Interval: p.BFD.Interval.Duration, Multiplier: p.BFD.Multiplier}
		}
		out = append(out, sp)
	}
	return out
}

// withGracefulRestart has the daemon's peers keep its routes across a
// restart handover (ha.bgp.graceful_restart); a probe of `ober test`
// asks for no such thing.
func withGracefulRestart(bg *config.BGP, peers []bgp.Peer) []bgp.Peer {
	if bg.GracefulRestart.Enabled {
		for i := range peers {
			peers[i].GracefulRestart = bg.GracefulRestart.RestartTime.Duration
		}
	}
	return peers
}

// Routes are the VIPs with the attributes ha.bgp gives them.
func Routes(cfg *config.Config) []bgp.Route {
	bg := cfg.HA.BGP
	over := map[netip.Addr]config.BGPVIP{}
	for _, v := range bg.VIPs {
		over[v.VIP.Addr] = v
	}
	var out []bgp.Route
	for _, v := range cfg.VIPs {
		cs, lcs, med := bg.Communities, bg.LargeCommunities, bg.MED
		if o, ok := over[v.Addr]; ok {
			if o.Communities != nil {
				cs = o.Communities
			}
			if o.LargeCommunities != nil {
				lcs = o.LargeCommunities
			}
			if o.MED != nil {
				med = o.MED
			}
		}
		r := bgp.Route{Prefix: netip.PrefixFrom(v.Addr, v.Addr.BitLen()), MED: med}
		for _, c := range cs {
			n, _ := config.ParseCommunity(c) // validated
			r.Communities = append(r.Communities, n)
		}
		for _, c := range lcs {
			l, _ := config.ParseLargeCommunity(c)
			r.LargeCommunities = append(r.LargeCommunities, bgp.LargeCommunity{Global: l[0], Local1: l[1], Local2: l[2]})
		}
		out = append(out, r)
	}
	return out
}
