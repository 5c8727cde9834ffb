package vrrp

import (
	"net/netip"
	"slices"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestPlanOwnersRotateAndAgree(t *testing.T) {
	nodes := addrs("10.0.0.1", "10.0.0.2", "10.0.0.3")
	vips := addrs("10.98.0.1", "10.98.0.2", "10.98.0.3", "10.98.0.4", "10.98.0.5", "10.98.0.6", "10.98.0.7")
	plans := map[netip.Addr][]Instance{}
	for _, self := range nodes {
		p, err := Plan(nodes, self, vips, 51)
		if err != nil {
			t.Fatalf("Plan(self=%s): %v", self, err)
		}
		if len(p) != len(vips) {
			t.Fatalf("Plan(self=%s): %d instances, want %d", self, len(p), len(vips))
		}
		plans[self] = p
	}
	vrids := map[int]bool{}
	for i, vip := range vips {
		ref := plans[nodes[0]][i]
		if ref.VIP != vip || ref.VRID != 51+i || ref.Name != InstanceName(51+i) {
			t.Errorf("VIP %d: got %s vrid %d name %s", i, ref.VIP, ref.VRID, ref.Name)
		}
		if vrids[ref.VRID] {
			t.Errorf("VIP %d: vrid %d used twice", i, ref.VRID)
		}
		vrids[ref.VRID] = true
		if want := nodes[i%len(nodes)]; ref.Owner != want {
			t.Errorf("VIP %s: owner %s, want %s (round robin)", vip, ref.Owner, want)
		}
		prios := map[int]netip.Addr{}
		top := 0
		for _, self := range nodes {
			in := plans[self][i]
			if in.Owner != ref.Owner || !slices.Equal(in.Order, ref.Order) || in.VRID != ref.VRID {
				t.Errorf("VIP %s: node %s computes owner %s order %v, node %s computes %s %v",
					vip, self, in.Owner, in.Order, nodes[0], ref.Owner, ref.Order)
			}
			if other, dup := prios[in.Priority]; dup {
				t.Errorf("VIP %s: priority %d on both %s and %s", vip, in.Priority, other, self)
			}
			prios[in.Priority] = self
			if in.Priority == TopPriority {
				top++
				if self != ref.Owner {
					t.Errorf("VIP %s: %s has the top priority but %s owns it", vip, self, ref.Owner)
				}
			}
			// Priority falls along the takeover order.
			pos := slices.Index(in.Order, self)
			if want := TopPriority - pos*PriorityStep; in.Priority != want {
				t.Errorf("VIP %s: %s at position %d has priority %d, want %d", vip, self, pos, in.Priority, want)
			}
		}
		if top != 1 {
			t.Errorf("VIP %s: %d nodes with the top priority, want 1", vip, top)
		}
		// Backups follow the owner in list order, wrapping.
		for k := range nodes {
			if want := nodes[(i+k)%len(nodes)]; ref.Order[k] != want {
				t.Errorf("VIP %s: order[%d] = %s, want %s", vip, k, ref.Order[k], want)
			}
		}
	}
}

func TestPlanSingleNodeAndIPv6(t *testing.T) {
	p, err := Plan(addrs("fd00::1", "fd00::2"), netip.MustParseAddr("fd00::2"), addrs("fd00:98::1", "fd00:98::2"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if p[0].Priority != 190 || p[1].Priority != 200 || p[1].Owner != netip.MustParseAddr("fd00::2") {
		t.Errorf("got %+v", p)
	}
	p, err = Plan(addrs("10.0.0.1"), netip.MustParseAddr("10.0.0.1"), addrs("10.98.0.1"), 255)
	if err != nil || len(p) != 1 || p[0].Priority != TopPriority || p[0].VRID != 255 {
		t.Errorf("single node: %+v, %v", p, err)
	}
}

func TestPlanErrors(t *testing.T) {
	many := make([]netip.Addr, MaxNodes+1)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})
	}
	for _, tc := range []struct {
		name  string
		nodes []netip.Addr
		self  string
		vips  []netip.Addr
		first int
		want  string
	}{
		{"no nodes", nil, "10.0.0.1", addrs("10.98.0.1"), 51,
			"ha.vrrp.nodes: empty: at least 1 node is needed"},
		{"self missing", addrs("10.0.0.1", "10.0.0.2"), "10.0.0.9", addrs("10.98.0.1"), 51,
			"ha.vrrp.self: 10.0.0.9 is not in ha.vrrp.nodes"},
		{"duplicate node", addrs("10.0.0.1", "10.0.0.2", "10.0.0.1"), "10.0.0.1", addrs("10.98.0.1"), 51,
			"ha.vrrp.nodes[2]: 10.0.0.1: duplicate of ha.vrrp.nodes[0]"},
		{"mixed nodes", addrs("10.0.0.1", "fd00::2"), "10.0.0.1", addrs("10.98.0.1"), 51,
			"ha.vrrp.nodes[1]: fd00::2: IPv6, but ha.vrrp.nodes[0] 10.0.0.1 is IPv4: all nodes must be of one address family"},
		{"mixed vip", addrs("10.0.0.1", "10.0.0.2"), "10.0.0.1", addrs("10.98.0.1", "fd00:98::1"), 51,
			"vips[1]: fd00:98::1: IPv6, but ha.vrrp.nodes are IPv4: a VRRP instance and its peers are of one address family"},
		{"duplicate vip", addrs("10.0.0.1"), "10.0.0.1", addrs("10.98.0.1", "10.98.0.1"), 51,
			"vips[1]: 10.98.0.1: duplicate of vips[0]"},
		{"vrid zero", addrs("10.0.0.1"), "10.0.0.1", addrs("10.98.0.1"), 0,
			"ha.vrrp.first_vrid: 0: must be 1-255"},
		{"vrid range", addrs("10.0.0.1"), "10.0.0.1", addrs("10.98.0.1", "10.98.0.2", "10.98.0.3"), 254,
			"ha.vrrp.first_vrid: 254: 3 VIPs need virtual_router_ids 254-256, beyond 255"},
		{"too many nodes", many, "10.0.0.1", addrs("10.98.0.1"), 51,
			"ha.vrrp.nodes: 17 nodes: at most 16, so that every node gets a distinct priority (200 down to 50 in steps of 10)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Plan(tc.nodes, netip.MustParseAddr(tc.self), tc.vips, tc.first)
			if err == nil || err.Error() != tc.want {
				t.Errorf("Plan error:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}
