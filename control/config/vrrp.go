package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// VRRP is ha.vrrp: every node runs keepalived (VRRPv3) for every VIP;
// each VIP has one owner among Nodes and the others back it up in list
// order. Clients reach the VIPs by DNS round robin.
type VRRP struct {
	// Nodes lists every node's address on the VRRP segment, in the same
	// order on every node: VIP i is owned by Nodes[i % len(Nodes)], so
	// ownership never depends on name resolution.
	Nodes []Addr `yaml:"nodes"`
	// Self is this node's entry in Nodes; default the one address of
	// Nodes found on Interface when ober starts.
	Self Addr `yaml:"self"`
	// Interface carries the VRRP adverts and the VIPs; default the first
	// of node.interfaces.
	Interface string `yaml:"interface"`
	// FirstVRID is the virtual_router_id of the first VIP; the others
	// follow (FirstVRID+i). Default 51. Must not clash with another VRRP
	// group on the segment.
	FirstVRID int `yaml:"first_vrid"`
	// AdvertInterval between adverts; default 100ms. VRRPv3 counts in
	// centiseconds: 10ms-40s.
	AdvertInterval Duration `yaml:"advert_interval"`
	// PreemptDelay is how long a recovered owner waits before it takes
	// its VIP back; default 5s.
	PreemptDelay Duration `yaml:"preempt_delay"`
	// Multicast sends adverts to 224.0.0.18 / ff02::12 instead of to
	// the other nodes (unicast, the default).
	Multicast bool `yaml:"multicast"`
	// GARP is what a new master sends so that switches and neighbours
	// learn the VIP's new place.
	GARP GARP `yaml:"garp"`
	// Keepalived is the binary; default "keepalived".
	Keepalived string `yaml:"keepalived"`
	// Handoff, when set, keeps the connections of a planned VIP move
	// (preempt back, a graceful stop or restart, `ober vip move`) alive:
	// the new holder forwards the segments it has no socket for to the
	// previous holder, which keeps serving them. Its nodes are Nodes.
	Handoff *Handoff `yaml:"handoff"`
	// PathMTU is the largest packet the VIPs' TCP connections are sent
	// with the handoff on: their MSS is clamped to it (IPv4 PathMTU-40,
	// IPv6 PathMTU-60), so that a segment the new holder hands back
	// fits with the 20 bytes of its IP-in-IP header. Default 1400 with
	// Handoff, 0 turns the clamp off; unused without Handoff.
	PathMTU *int `yaml:"path_mtu"`
}

// GARP shapes the gratuitous ARPs (IPv4) and unsolicited neighbour
// advertisements (IPv6) of a new master.
type GARP struct {
	// Repeat is how many are sent on becoming master; default 5.
	Repeat int `yaml:"repeat"`
	// Refresh repeats them periodically while master; default 0 (off).
	Refresh Duration `yaml:"refresh"`
}

// VRRP defaults and limits.
const (
	DefaultFirstVRID      = 51
	DefaultAdvertInterval = 100 * time.Millisecond
	DefaultPreemptDelay   = 5 * time.Second
	DefaultGARPRepeat     = 5
	MaxVRRPNodes          = 16
)

func (c *Config) applyVRRPDefaults() {
	v := c.HA.VRRP
	if v == nil {
		return
	}
	if v.Interface == "" && len(c.Node.Interfaces) > 0 {
		v.Interface = c.Node.Interfaces[0]
	}
	setInt(&v.FirstVRID, DefaultFirstVRID)
	setDuration(&v.AdvertInterval, DefaultAdvertInterval)
	setDuration(&v.PreemptDelay, DefaultPreemptDelay)
	setInt(&v.GARP.Repeat, DefaultGARPRepeat)
	if v.Keepalived == "" {
		v.Keepalived = "keepalived"
	}
	if v.Handoff != nil {
		v.Handoff.applyDefaults()
		if v.PathMTU == nil {
			m := DefaultPathMTU
			v.PathMTU = &m
		}
	}
}

func (c *Config) validateVRRP(p *problems) {
	v := c.HA.VRRP
	switch {
	case c.HA.Mode == HAModeVRRP && v == nil:
		p.add("ha.vrrp", "", "required for ha.mode vrrp (nodes at least)")
		return
	case v == nil:
		return
	case c.HA.Mode != HAModeVRRP:
		mode := c.HA.Mode
		if mode == "" {
			mode = DefaultHAMode
		}
		p.add("ha.vrrp", "", "set, but ha.mode is %s; set ha.mode: vrrp or remove ha.vrrp", mode)
		return
	}
	if len(v.Nodes) == 0 {
		p.add("ha.vrrp.nodes", "", "at least one node is required (every node's address, in the same order on every node)")
	}
	if len(v.Nodes) > MaxVRRPNodes {
		p.add("ha.vrrp.nodes", strconv.Itoa(len(v.Nodes)), "at most %d nodes", MaxVRRPNodes)
	}
	vips := map[netip.Addr]bool{}
	for _, x := range c.VIPs {
		vips[x.Addr] = true
	}
	seen := map[netip.Addr]int{}
	var family netip.Addr
	for i, n := range v.Nodes {
		key := fmt.Sprintf("ha.vrrp.nodes[%d]", i)
		a := n.Addr
		switch {
		case !a.IsValid():
			p.add(key, "", "an address is required")
			continue
		case a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.Is4In6():
			p.add(key, a.String(), "must be a node's unicast address without zone")
			continue
		case vips[a]:
			p.add(key, a.String(), "is one of the VIPs")
		}
		if j, dup := seen[a]; dup {
			p.add(key, a.String(), "duplicate of ha.vrrp.nodes[%d]", j)
		}
		seen[a] = i
		if !family.IsValid() {
			family = a
		} else if a.Is4() != family.Is4() {
			p.add(key, a.String(), "mixes address families with ha.vrrp.nodes[0] %s (a VRRP instance is IPv4 or IPv6)", family)
		}
	}
	if family.IsValid() {
		// A VRRPv3 instance speaks one family, to peers of that family.
		for i, x := range c.VIPs {
			if x.Addr.Is4() != family.Is4() {
				p.add(fmt.Sprintf("vips[%d]", i), x.Addr.String(),
					"is not of the family of ha.vrrp.nodes (%s): VRRP moves a VIP among nodes of its own family", familyName(family))
			}
		}
	}
	if v.Self.IsValid() {
		if _, ok := seen[v.Self.Addr]; !ok {
			p.add("ha.vrrp.self", v.Self.String(), "is not one of ha.vrrp.nodes")
		}
	}
	if v.Interface == "" {
		p.add("ha.vrrp.interface", "", "required when node.interfaces is empty")
	}
	if v.FirstVRID < 1 || v.FirstVRID > 255 {
		p.add("ha.vrrp.first_vrid", strconv.Itoa(v.FirstVRID), "must be 1-255")
	} else if last := v.FirstVRID + len(c.VIPs) - 1; last > 255 {
		p.add("ha.vrrp.first_vrid", strconv.Itoa(v.FirstVRID),
			"with %d VIPs the last virtual_router_id would be %d; VRRP allows 1-255", len(c.VIPs), last)
	}
	ai := v.AdvertInterval.Duration
	switch {
	case ai < 10*time.Millisecond || ai > 40*time.Second:
		p.add("ha.vrrp.advert_interval", fmtDuration(ai), "must be 10ms-40s (VRRPv3 counts in centiseconds)")
	case ai%(10*time.Millisecond) != 0:
		p.add("ha.vrrp.advert_interval", fmtDuration(ai), "must be a whole number of centiseconds (10ms steps)")
	}
	if d := v.PreemptDelay.Duration; d < 0 || d > 1000*time.Second {
		p.add("ha.vrrp.preempt_delay", fmtDuration(d), "must be 0s-1000s (keepalived's limit)")
	}
	if v.GARP.Repeat < 1 || v.GARP.Repeat > 100 {
		p.add("ha.vrrp.garp.repeat", strconv.Itoa(v.GARP.Repeat), "must be 1-100")
	}
	if d := v.GARP.Refresh.Duration; d < 0 || (d > 0 && d < time.Second) {
		p.add("ha.vrrp.garp.refresh", fmtDuration(d), "must be 0s (off) or at least 1s")
	}
	if h := v.Handoff; h != nil {
		if len(h.Nodes) > 0 {
			p.add("ha.vrrp.handoff.nodes", fmt.Sprint(h.Nodes), "the VRRP handoff runs between ha.vrrp.nodes; remove it")
		}
		// ha.vrrp.nodes were checked above; the handoff adds that its
		// tunnels are IPv4 and that a node needs a peer.
		if family.IsValid() && !family.Is4() {
			p.add("ha.vrrp.handoff", "", "needs IPv4 ha.vrrp.nodes (its tunnels are IPv4); these are IPv6")
		}
		if len(v.Nodes) == 1 {
			p.add("ha.vrrp.handoff", "", "one node has nobody to hand off to; remove it")
		}
		h.validateRest(p, "ha.vrrp.handoff", "ha.vrrp.nodes", v.Nodes)
	}
	if m := v.PathMTU; m != nil && *m != 0 && (*m < MinPathMTU || *m > 65535) {
		p.add("ha.vrrp.path_mtu", strconv.Itoa(*m), "must be 1280 to 65535 bytes, or 0 to leave the MSS alone")
	}
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
