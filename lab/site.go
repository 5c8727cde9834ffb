// Package lab builds, on one machine, a complete ober site in network
// namespaces that outlives the command that built it (`ober lab up`): a
// BIRD router spreading the VIPs over three ober nodes by ECMP, the nodes
// (XDP, per-CPU HAProxy, BGP) behind a switch, two S3 backend hosts
// running Ceph RGW, and a client host. It shows the site working (the
// demo), reports on it (`ober lab status`) and removes all of it (`ober
// lab down`), also after a crash of the builder: everything made is
// recorded in the site's ledger first (lab/netsite).
//
//	client 10.99.2.2 --- 10.99.2.1 router 10.99.1.1 --+-- switch (bridge) --+-- node1 10.99.1.11
//	                                                   |                    +-- node2 10.99.1.12
//	                                                   |                    +-- node3 10.99.1.13
//	                                                   |                    +-- ceph  10.99.1.20 (monitor, OSD)
//	                                                   |                    +-- s3a   10.99.1.21:7480 (radosgw)
//	                                                   |                    +-- s3b   10.99.1.22:7480 (radosgw)
//
// The VIPs are 10.99.0.100 and fd99::100 (HTTPS on 443); the segment
// also carries IPv6 (fd99:1::/64, the client fd99:2::2).
//
// With --ha vrrp the nodes run keepalived instead of BGP and BIRD does
// not run: the VIPs are 10.99.1.101-103 on the nodes' segment, VIP i
// owned by node i and backed up by the others, and the router reaches
// them as directly connected hosts. Clients spread over them by DNS
// round robin.
package lab

import (
	"fmt"
	"net/netip"
	"time"
)

// Addresses of the site.
var (
	// VRRPVIPs are the VIPs of --ha vrrp, on the nodes' segment, which
	// the router reaches directly: VIP i is owned by node i.
	VRRPVIPs = []netip.Addr{
		netip.MustParseAddr("10.99.1.101"), netip.MustParseAddr("10.99.1.102"), netip.MustParseAddr("10.99.1.103"),
	}

	VIP4        = netip.MustParseAddr("10.99.0.100")
	VIP6        = netip.MustParseAddr("fd99::100")
	RouterAddr  = netip.MustParseAddr("10.99.1.1")
	RouterAddr6 = netip.MustParseAddr("fd99:1::1")
	RouterCli   = netip.MustParseAddr("10.99.2.1")
	RouterCli6  = netip.MustParseAddr("fd99:2::1")
	ClientAddr  = netip.MustParseAddr("10.99.2.2")
	ClientAddr6 = netip.MustParseAddr("fd99:2::2")
	MonAddr     = netip.MustParseAddr("10.99.1.20")
)

// ASNs: the nodes share one AS, as nodes of one site do.
const (
	RouterASN = 65000
	NodeASN   = 65010
)

// Timers of the site, short so that the demo's failover is quick.
const (
	bgpHoldTime = 3 * time.Second // the least BGP allows
	holdDown    = 2 * time.Second // ha.bgp.hold_down
	drain       = 2 * time.Second // timeouts.drain: lab down waits this long per node
	// ha.vrrp.preempt_delay: short, so that the demo shows the owner
	// taking its VIP back, long enough to show that it waits.
	preemptDelay = 2 * time.Second
)

// The ways the nodes share the VIPs (--ha).
const (
	haBGP  = "bgp"
	haVRRP = "vrrp"
)

// segmentMTU is the MTU of the nodes' segment: a client's full-size
// segment still fits when drain handoff wraps it in IPIP (20 bytes).
const segmentMTU = "1600"

// host is one host on the switch.
type host struct {
	role  string // namespace suffix
	iface string // its link to the switch
	port  string // the switch's side
	addr  netip.Addr
	addr6 netip.Addr // invalid: no IPv6
}

// nodeHost is node i (0-based).
func nodeHost(i int) host {
	return host{
		role: fmt.Sprintf("node%d", i+1), iface: "eth-sw", port: fmt.Sprintf("sw-n%d", i+1),
		addr:  netip.AddrFrom4([4]byte{10, 99, 1, byte(11 + i)}),
		addr6: netip.MustParseAddr(fmt.Sprintf("fd99:1::%d", 11+i)),
	}
}

// nodeCount is the number of ober nodes.
const nodeCount = 3

// backend is one S3 backend host with its radosgw.
type backend struct {
	host
	gateway string // radosgw instance name
	port    uint16
}

func (b backend) listen() netip.AddrPort { return netip.AddrPortFrom(b.addr, b.port) }

var backends = []backend{
	{host: host{role: "s3a", iface: "eth-sw", port: "sw-s3a", addr: netip.MustParseAddr("10.99.1.21")}, gateway: "rgw1", port: 7480},
	{host: host{role: "s3b", iface: "eth-sw", port: "sw-s3b", addr: netip.MustParseAddr("10.99.1.22")}, gateway: "rgw2", port: 7480},
}

var cephHost = host{role: "ceph", iface: "eth-sw", port: "sw-ceph", addr: MonAddr}

// routerHost is the router's side on the switch.
var routerHost = host{role: "router", iface: "r-sw", port: "sw-r", addr: RouterAddr, addr6: RouterAddr6}

// Namespace roles besides the hosts on the switch.
const (
	roleSwitch = "switch"
	roleClient = "client"
	bridge     = "br0"
)

// Prefixes of the VIP routes the router learns.
var (
	Prefix4 = netip.PrefixFrom(VIP4, 32)
	Prefix6 = netip.PrefixFrom(VIP6, 128)
)
