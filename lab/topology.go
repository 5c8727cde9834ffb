package lab

import (
	"context"
	"fmt"

	"github.com/ober-ingress/ober/lab/netsite"
)

// topology is the lab's namespaces, linked and addressed.
type topology struct {
	site     *netsite.Site
	sw       *netsite.NS
	router   *netsite.NS
	client   *netsite.NS
	ceph     *netsite.NS
	nodes    []*netsite.NS
	backends []*netsite.NS
}

// buildTopology makes every namespace, the switch, the links and the
// addresses and routes. Every link is made inside lab namespaces.
func buildTopology(ctx context.Context, site *netsite.Site, st *State) (*topology, error) {
	t := &topology{site: site}
	mk := func(role string) (*netsite.NS, error) {
		ns, err := site.Namespace(ctx, role)
		if err != nil {
			return nil, fmt.Errorf("namespace %s%s: %w", site.Prefix, role, err)
		}
		st.Namespaces = append(st.Namespaces, ns.Name)
		return ns, nil
	}
	var err error
	if t.sw, err = mk(roleSwitch); err != nil {
		return nil, err
	}
	if t.router, err = mk(routerHost.role); err != nil {
		return nil, err
	}
	if t.client, err = mk(roleClient); err != nil {
		return nil, err
	}
	for i := range nodeCount {
		ns, err := mk(nodeHost(i).role)
		if err != nil {
			return nil, err
		}
		t.nodes = append(t.nodes, ns)
	}
	if t.ceph, err = mk(cephHost.role); err != nil {
		return nil, err
	}
	for _, b := range backends {
		ns, err := mk(b.role)
		if err != nil {
			return nil, err
		}
		t.backends = append(t.backends, ns)
	}
	if err := st.save(); err != nil {
		return nil, err
	}

	// The switch is a bridge in its own namespace, so that a node's link
	// going down leaves the router's carrier up, as behind a real switch.
	// Snooping without a querier can stop neighbour solicitations, and STP
	// would hold new ports back: a dumb switch forwards at once.
	if err := t.sw.IP(ctx, "link", "add", bridge, "mtu", segmentMTU, "type", "bridge",
		"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
		return nil, err
	}
	if err := t.sw.IP(ctx, "link", "set", bridge, "up"); err != nil {
		return nil, err
	}
	type port struct {
		ns *netsite.NS
		h  host
	}
	ports := []port{{t.router, routerHost}, {t.ceph, cephHost}}
	for i, ns := range t.nodes {
		ports = append(ports, port{ns, nodeHost(i)})
	}
	for i, ns := range t.backends {
		ports = append(ports, port{ns, backends[i].host})
	}
	for _, a := range ports {
		if err := t.attach(ctx, a.ns, a.h); err != nil {
			return nil, fmt.Errorf("attach %s to the switch: %w", a.ns.Name, err)
		}
	}
	if err := t.clientLink(ctx); err != nil {
		return nil, fmt.Errorf("client link: %w", err)
	}
	if err := routerSysctls(t.router); err != nil {
		return nil, err
	}
	for i, ns := range t.nodes {
		h := nodeHost(i)
		// The nodes reach the client through the router; drain handoff's
		// XDP FIB lookup needs forwarding on the node's link.
		if err := setNodeRoutes(ctx, ns); err != nil {
			return nil, err
		}
		if err := ns.Sysctl("net/ipv4/conf/"+h.iface+"/forwarding", "1"); err != nil {
			return nil, err
		}
		// VRRP's handoff keeps the VIPs on lo: only their holder (the
		// VIP on its link) may answer ARP for them.
		if err := ns.Sysctl("net/ipv4/conf/"+h.iface+"/arp_ignore", "1"); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// ipv6Quiet makes IPv6 addresses made from now on in ns skip duplicate
// address detection (which keeps them, and the link-local address BGP
// needs, tentative for a second or two) and survive their link going
// down.
func ipv6Quiet(ns *netsite.NS) error {
	for _, set := range [][2]string{{"accept_dad", "0"}, {"keep_addr_on_down", "1"}} {
		for _, scope := range []string{"all", "default"} {
			if err := ns.Sysctl("net/ipv6/conf/"+scope+"/"+set[0], set[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// attach links h's namespace to a new switch port and gives it its
// addresses, on the segment's MTU.
func (t *topology) attach(ctx context.Context, ns *netsite.NS, h host) error {
	if err := ipv6Quiet(ns); err != nil {
		return err
	}
	if err := netsite.Veth(ctx, ns, h.iface, t.sw, h.port, 1); err != nil {
		return err
	}
	// Every port, as the nodes run ober's XDP, which sends with XDP_TX.
	if err := netsite.WakeOnXDPTX(t.sw, h.port); err != nil {
		return err
	}
	steps := [][]string{
		{"link", "set", h.iface, "mtu", segmentMTU},
		{"addr", "add", h.addr.String() + "/24", "dev", h.iface},
	}
	if h.addr6.IsValid() {
		steps = append(steps, []string{"addr", "add", h.addr6.String() + "/64", "dev", h.iface, "nodad"})
	}
	for _, args := range steps {
		if err := ns.IP(ctx, args...); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"link", "set", h.port, "mtu", segmentMTU},
		{"link", "set", h.port, "master", bridge},
	} {
		if err := t.sw.IP(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// clientLink joins the client to the router.
func (t *topology) clientLink(ctx context.Context) error {
	for _, ns := range []*netsite.NS{t.client, t.router} {
		if err := ipv6Quiet(ns); err != nil {
			return err
		}
	}
	if err := netsite.Veth(ctx, t.client, "c-r", t.router, "r-c", 1); err != nil {
		return err
	}
	for _, s := range []struct {
		ns   *netsite.NS
		args []string
	}{
		{t.router, []string{"addr", "add", RouterCli.String() + "/24", "dev", "r-c"}},
		{t.router, []string{"addr", "add", RouterCli6.String() + "/64", "dev", "r-c", "nodad"}},
		{t.client, []string{"addr", "add", ClientAddr.String() + "/24", "dev", "c-r"}},
		{t.client, []string{"addr", "add", ClientAddr6.String() + "/64", "dev", "c-r", "nodad"}},
		{t.client, []string{"route", "add", "default", "via", RouterCli.String()}},
		{t.client, []string{"-6", "route", "add", "default", "via", RouterCli6.String()}},
	} {
		if err := s.ns.IP(ctx, s.args...); err != nil {
			return err
		}
	}
	return nil
}

// setNodeRoutes sets a node's default routes through the router, which a
// link going down takes away.
func setNodeRoutes(ctx context.Context, ns *netsite.NS) error {
	for _, args := range [][]string{
		{"route", "replace", "default", "via", RouterAddr.String()},
		{"-6", "route", "replace", "default", "via", RouterAddr6.String()},
	} {
		if err := ns.IP(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// routerSysctls make the router forward and spread flows over all paths
// of a multipath route by a hash of the 5-tuple. They are the router
// namespace's own. Policy 3 with these fields, not policy 1 (L4): under
// policy 1 Linux takes a packet's own L4 hash when it carries one, and
// from the client's veth that is the client socket's hash, which TCP
// changes after a retransmission timeout (net.core.txrehash). The rest
// of the connection then went to another node, whose kernel reset it: a
// 256 MiB transfer broke in 3 of 14 runs of the S3 client tests on a
// loaded machine. A router on a wire hashes the headers, as policy 3 does.
func routerSysctls(ns *netsite.NS) error {
	for _, s := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		{"net/ipv4/fib_multipath_hash_policy", "3"},
		{"net/ipv6/fib_multipath_hash_policy", "3"},
		// source and destination address, protocol, source and
		// destination port; not the IPv6 flow label, which TCP changes
		// on a rehash too.
		{"net/ipv4/fib_multipath_hash_fields", "0x0037"},
		{"net/ipv6/fib_multipath_hash_fields", "0x0037"},
	} {
		if err := ns.Sysctl(s[0], s[1]); err != nil {
			return err
		}
	}
	return nil
}
