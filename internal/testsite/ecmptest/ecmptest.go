// Package ecmptest builds a BGP/ECMP site in network namespaces: a real
// router (BIRD or FRR) spreading a VIP over three ober nodes (or as many
// as Params.Nodes says), a client behind the router, an S3 backend and a
// rogue router on the nodes' segment.
//
//	client 10.99.2.2 --- 10.99.2.1 router 10.99.1.1 --+-- switch (bridge) --+-- node1 10.99.1.11
//	                                                   |                    +-- node2 10.99.1.12
//	                                                   |                    +-- node3 10.99.1.13
//	                                                   |                    +-- backend 10.99.1.20:9000
//	                                                   |                    |   (and BackendIP, BackendIP6)
//	                                                   |                    +-- rogue 10.99.1.30
//
// Every node runs the real `ober run` in ha.mode bgp with its per-CPU
// HAProxy instances and peers with the router over IPv4 and IPv6 (the VIPs
// are 10.99.0.100 and fd99::100). The switch is a bridge in its own
// namespace, so a node's link going down leaves the router's carrier up:
// the router learns of it from BFD or the hold timer, as behind a real
// switch. Everything is removed at cleanup, also when the test fails.
package ecmptest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
	"github.com/ober-ingress/ober/internal/testsite/routertest"
	"github.com/ober-ingress/ober/internal/testsite/s3server"
)

// Addresses of the site.
var (
	VIP4        = netip.MustParseAddr("10.99.0.100")
	VIP6        = netip.MustParseAddr("fd99::100")
	routerAddr  = netip.MustParseAddr("10.99.1.1")
	RouterAddr6 = netip.MustParseAddr("fd99:1::1")
	clientAddr  = netip.MustParseAddr("10.99.2.2")
	clientAddr6 = netip.MustParseAddr("fd99:2::2")
	BackendAddr = netip.MustParseAddrPort("10.99.1.20:9000")
	rogueAddr   = netip.MustParseAddr("10.99.1.30")
)

// ASNs: the nodes share one AS, as nodes of one site do.
const (
	routerASN = 65000
	NodeASN   = 65010
)

// Prefix4 and Prefix6 are the VIP routes the router learns.
var (
	Prefix4 = netip.PrefixFrom(VIP4, 32)
	Prefix6 = netip.PrefixFrom(VIP6, 128)
)

// Params shape the site.
type Params struct {
	Router routertest.Kind // default BIRD
	// BFD runs BFD at 100ms x 3 on every session (both sides).
	BFD bool
	// HoldTime of the BGP sessions; default 3s (the least BGP allows).
	HoldTime time.Duration
	// Drain is timeouts.drain; default 3s.
	Drain time.Duration
	// HoldDown is ha.bgp.hold_down; default 1s.
	HoldDown time.Duration
	// Nodes is the number of ober nodes, 1 to maxNodes; default 3.
	Nodes int
	// Handoff lists every node in ha.bgp.handoff.
	Handoff bool
	// Password is the TCP MD5 key of every session, on both sides.
	Password string
	// MinInstances is ha.bgp.announce_when.min_instances; default 1.
	MinInstances int
	// ClientPathMTU, when set, puts the client behind a second router
	// whose path to it carries packets of at most that size although
	// every link carries 1500: it answers bigger ones with
	// "fragmentation needed" (ICMPv6 "packet too big"), as a tunnel on
	// the way would, and the ECMP router forwards those to a node.
	ClientPathMTU int
	// PathMTU is ha.bgp.path_mtu; nil leaves the default.
	PathMTU *int
}

// instances is the number of HAProxy instances of every node.
const instances = 2

// maxNodes keeps the nodes' addresses, 10.99.1.11 up, below the backend's.
const maxNodes = 8

// maxBackendIPs keeps BackendIP's addresses, 10.99.1.21 up, below the
// rogue router's.
const maxBackendIPs = 9

// maxClientIPs keeps ClientIP's addresses, 10.99.2.10 up, in the
// client's subnet.
const maxClientIPs = 200

// Site is the built topology.
type Site struct {
	Client, Rogue *netnstest.NS
	Nodes         []*Node
	R             *routertest.Router

	t                             testing.TB
	p                             Params
	routerNS, switchNS, backendNS *netnstest.NS
	s3                            *s3server.Server
	bin, dir, cert, key           string
	clientDial                    *nodetest.Dialer
	backend                       *http.Server

	extraMu sync.Mutex
	extra   map[netip.Addr]bool // addresses BackendIP, ClientIP and their twins added
}

// Node is one ober node.
type Node struct {
	site       *Site
	Name       string
	NS         *netnstest.NS
	Addr       netip.Addr
	Addr6      netip.Addr
	Dir        string
	ConfigPath string
	Root       string
	// Ober is the node's `ober run`: Stop, Wait, Kill, Reload, Health,
	// Status, Metrics, InstancePIDs.
	*nodetest.Ober

	iface      string // the node's link to the switch
	switchPort string // its peer on the switch
}

// New builds the namespaces, starts the router and the backend, and
// writes every node's configuration. StartNodes runs ober.
func New(t testing.TB, bin string, p Params) *Site {
	t.Helper()
	netnstest.RequireRoot(t)
	if p.Router == "" {
		p.Router = routertest.BIRD
	}
	if p.HoldTime == 0 {
		p.HoldTime = 3 * time.Second
	}
	if p.Drain == 0 {
		p.Drain = 3 * time.Second
	}
	if p.HoldDown == 0 {
		p.HoldDown = time.Second
	}
	if p.Nodes == 0 {
		p.Nodes = 3
	}
	if p.Nodes < 1 || p.Nodes > maxNodes {
		t.Fatalf("ecmptest: %d nodes, want 1 to %d", p.Nodes, maxNodes)
	}
	s := &Site{t: t, p: p, bin: bin, dir: t.TempDir()}
	sw := routertest.NewSwitch(t)
	s.switchNS = sw.NS
	s.routerNS = netnstest.New(t, "rtr")
	s.Client = netnstest.New(t, "cli")
	s.backendNS = netnstest.New(t, "be")
	s.Rogue = netnstest.New(t, "rogue")
	// The segment carries 1600-byte frames so that a client's full-size
	// segment still fits when a node hands it to another in IPIP.
	s.switchNS.IP(t, "link", "set", sw.Bridge, "mtu", "1600")
	port := func(ns *netnstest.NS, iface, swPort string) {
		sw.Attach(t, ns, iface, swPort)
		ns.IP(t, "link", "set", iface, "mtu", "1600")
		s.switchNS.IP(t, "link", "set", swPort, "mtu", "1600")
	}
	port(s.routerNS, "r-sw", "sw-r")
	s.routerNS.IP(t, "addr", "add", routerAddr.String()+"/24", "dev", "r-sw")
	s.routerNS.IP(t, "addr", "add", RouterAddr6.String()+"/64", "dev", "r-sw", "nodad")
	// The client's side: its subnet on the router, or, with a smaller
	// hop, behind a second router (see Params.ClientPathMTU).
	side := s.routerNS
	if p.ClientPathMTU > 0 {
		side = netnstest.New(t, "hop")
		netnstest.Veth(t, side, "h-r", s.routerNS, "r-h", 1)
		side.IP(t, "addr", "add", "10.99.4.2/24", "dev", "h-r")
		side.IP(t, "addr", "add", "fd99:4::2/64", "dev", "h-r", "nodad")
		side.IP(t, "route", "add", "default", "via", "10.99.4.1")
		side.IP(t, "-6", "route", "add", "default", "via", "fd99:4::1")
		s.routerNS.IP(t, "addr", "add", "10.99.4.1/24", "dev", "r-h")
		s.routerNS.IP(t, "addr", "add", "fd99:4::1/64", "dev", "r-h", "nodad")
		s.routerNS.IP(t, "route", "add", "10.99.2.0/24", "via", "10.99.4.2")
		s.routerNS.IP(t, "-6", "route", "add", "fd99:2::/64", "via", "fd99:4::2")
		for _, sysctl := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
			netnstest.Run(t, "ip", "netns", "exec", side.Name, "sysctl", "-qw", sysctl)
		}
	}
	netnstest.Veth(t, s.Client, "c-r", side, "r-c", 1)
	side.IP(t, "addr", "add", "10.99.2.1/24", "dev", "r-c")
	side.IP(t, "addr", "add", "fd99:2::1/64", "dev", "r-c", "nodad")
	s.Client.IP(t, "addr", "add", clientAddr.String()+"/24", "dev", "c-r")
	s.Client.IP(t, "addr", "add", clientAddr6.String()+"/64", "dev", "c-r", "nodad")
	s.Client.IP(t, "route", "add", "default", "via", "10.99.2.1")
	s.Client.IP(t, "-6", "route", "add", "default", "via", "fd99:2::1")
	if m := p.ClientPathMTU; m > 0 {
		// Both links carry 1500; the hop's route to the client, like a
		// tunnel's, carries m, and the hop says so in ICMP errors that
		// the router forwards (and hashes) like any packet.
		side.IP(t, "route", "replace", "10.99.2.0/24", "dev", "r-c", "mtu", "lock", strconv.Itoa(m))
		side.IP(t, "-6", "route", "replace", "fd99:2::/64", "dev", "r-c", "mtu", "lock", strconv.Itoa(m))
	}

	port(s.backendNS, "b-sw", "sw-b")
	s.backendNS.IP(t, "addr", "add", BackendAddr.Addr().String()+"/24", "dev", "b-sw")
	port(s.Rogue, "x-sw", "sw-x")
	s.Rogue.IP(t, "addr", "add", rogueAddr.String()+"/24", "dev", "x-sw")

	for i := range p.Nodes {
		n := &Node{
			site: s, Name: fmt.Sprintf("node%d", i+1), NS: netnstest.New(t, fmt.Sprintf("n%d", i+1)),
			Addr:  netip.AddrFrom4([4]byte{10, 99, 1, byte(11 + i)}),
			Addr6: netip.MustParseAddr(fmt.Sprintf("fd99:1::%d", 11+i)),
			iface: "eth-sw", switchPort: fmt.Sprintf("sw-n%d", i+1),
			Dir: filepath.Join(s.dir, fmt.Sprintf("node%d", i+1)),
		}
		port(n.NS, n.iface, n.switchPort)
		n.NS.IP(t, "addr", "add", n.Addr.String()+"/24", "dev", n.iface)
		n.NS.IP(t, "addr", "add", n.Addr6.String()+"/64", "dev", n.iface, "nodad")
		n.NS.IP(t, "route", "add", "default", "via", routerAddr.String())
		if p.Handoff {
			// Drain handoff forwards through the node's link (its FIB
			// lookup in XDP needs forwarding on there).
			if err := n.NS.Do(func() error {
				return os.WriteFile("/proc/sys/net/ipv4/conf/"+n.iface+"/forwarding", []byte("1"), 0)
			}); err != nil {
				t.Fatal(err)
			}
		}
		n.NS.IP(t, "-6", "route", "add", "default", "via", RouterAddr6.String())
		n.Root = netnstest.BPFFS(t) + "/ober"
		if err := os.MkdirAll(n.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		n.Ober = nodetest.NewOber(t, n.Name, n.NS, bin)
		s.Nodes = append(s.Nodes, n)
	}

	var err error
	s.cert, s.key, err = certs.SelfSigned(filepath.Join(s.dir, "tls"), []string{"s3.ecmp.test"}, []netip.Addr{VIP4, VIP6})
	if err != nil {
		t.Fatal(err)
	}
	if err := handoff.NewKeyFile(filepath.Join(s.dir, "handoff.key")); err != nil {
		t.Fatal(err)
	}
	// The site's nodes share their TLS session ticket seed, as an
	// operator's would: a session resumes on any node.
	if err := handoff.NewKeyFile(filepath.Join(s.dir, "tickets.key")); err != nil {
		t.Fatal(err)
	}
	s.s3 = nodetest.NewS3()
	s.StartBackend()
	t.Cleanup(s.StopBackend)

	var neighbors []routertest.Neighbor
	for _, n := range s.Nodes {
		neighbors = append(neighbors,
			routertest.Neighbor{Addr: n.Addr, ASN: NodeASN, BFD: p.BFD, Password: p.Password},
			routertest.Neighbor{Addr: n.Addr6, ASN: NodeASN, BFD: p.BFD, Password: p.Password})
	}
	s.R = routertest.Start(t, s.routerNS, routertest.Config{
		Kind: p.Router, ASN: routerASN, RouterID: routerAddr, Neighbors: neighbors,
		HoldTime: p.HoldTime, BFDInterval: 100 * time.Millisecond, BFDMultiplier: 3,
	})
	for _, n := range s.Nodes {
		n.WriteConfig(s.Config(n))
	}
	s.clientDial = nodetest.NewDialer(t, s.Client, 16)
	return s
}

// StartBackend starts the S3 backend (New does), after StopBackend.
func (s *Site) StartBackend() {
	s.t.Helper()
	var ln net.Listener
	if err := s.backendNS.Do(func() (err error) {
		ln, err = net.Listen("tcp", BackendAddr.String())
		return err
	}); err != nil {
		s.t.Fatalf("listen %s in %s: %v", BackendAddr, s.backendNS.Name, err)
	}
	s.backend = &http.Server{Handler: http.HandlerFunc(s.serve), ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	go s.backend.Serve(ln)
}

// StopBackend stops the S3 backend, as a stopped gateway: connections
// to it are refused.
func (s *Site) StopBackend() {
	if s.backend != nil {
		s.backend.Close()
		s.backend = nil
	}
}

// SlowPath answers a 640 KiB download spread over two seconds: a
// connection that is under way when a node stops.
const SlowPath = "/slow"

// BytesPath answers nodetest.Bytes(n) for "?n=<n>" (nodetest.ServeBytes).
const BytesPath = nodetest.BytesPath

// Bytes is what BytesPath sends.
func Bytes(n int) []byte { return nodetest.Bytes(n) }

func (s *Site) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == BytesPath {
		nodetest.ServeBytes(w, r)
		return
	}
	if r.URL.Path != SlowPath {
		s.s3.ServeHTTP(w, r)
		return
	}
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	w.Header().Set("Content-Length", fmt.Sprint(20*len(chunk)))
	for range 20 {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		time.Sleep(100 * time.Millisecond)
	}
}

// Config is n's configuration, as its file says it: Load fills in the
// defaults.
func (s *Site) Config(n *Node) *config.Config {
	p := s.p
	dur := func(d time.Duration) config.Duration { return config.Duration{Duration: d} }
	var peers []config.BGPPeer
	for _, r := range []netip.Addr{routerAddr, RouterAddr6} {
		peers = append(peers, config.BGPPeer{
			Address: config.Addr{Addr: r}, ASN: routerASN, Password: p.Password,
			HoldTime: dur(p.HoldTime), ConnectRetry: dur(time.Second),
			BFD: config.BFD{Enabled: p.BFD, Interval: dur(100 * time.Millisecond), Multiplier: 3},
		})
	}
	med := uint32(50)
	bgp := &config.BGP{
		ASN:          NodeASN,
		Peers:        peers,
		Communities:  []string{"65010:100"},
		VIPs:         []config.BGPVIP{{VIP: config.Addr{Addr: VIP6}, MED: &med}},
		AnnounceWhen: config.AnnounceWhen{MinInstances: p.MinInstances},
		HoldDown:     dur(p.HoldDown),
	}
	if p.PathMTU != nil {
		mtu := *p.PathMTU
		bgp.PathMTU = &mtu
	}
	if p.Handoff {
		bgp.Handoff.KeyFile = filepath.Join(s.dir, "handoff.key")
		for _, m := range s.Nodes {
			bgp.Handoff.Nodes = append(bgp.Handoff.Nodes, config.Addr{Addr: m.Addr})
		}
	}
	return &config.Config{
		Node: config.Node{
			Name: n.Name, Interfaces: []string{n.iface}, XDPMode: config.XDPModeNative,
			BPFFSRoot: n.Root, RuntimeDir: n.Dir + "/run", StateDir: n.Dir + "/state",
		},
		VIPs: []config.Addr{{Addr: VIP4}, {Addr: VIP6}},
		Services: []config.Service{
			{Name: "https", Port: 443, Mode: config.ModeTLS, TLS: &config.TLS{Cert: s.cert, Key: s.key}},
		},
		Backends: config.Backends{
			Servers: []config.BackendServer{{Name: "s3a", Address: BackendAddr.String()}},
			// Three failures of 500 ms checks in a row: under the tests'
			// 64 MiB transfers on 2 vCPUs, two 200 ms checks in a row
			// timed out and withdrew a node, and so did three: the
			// router then rehashed its multipath, moving other nodes'
			// transfers to nodes that had no socket for them (reset).
			Health: config.HealthCheck{Interval: dur(500 * time.Millisecond), Fall: 3, Rise: 1},
		},
		Instances: config.Instances{Count: instances},
		Timeouts:  config.Timeouts{Drain: dur(p.Drain)},
		HAProxy:   config.HAProxy{ServedByHeader: true},
		HA:        config.HA{Mode: config.HAModeBGP, BGP: bgp},
		TLS: config.TLSSettings{SessionTickets: config.SessionTickets{
			KeyFile: filepath.Join(s.dir, "tickets.key")}},
	}
}

// WriteConfig writes c as n's configuration file.
func (n *Node) WriteConfig(c *config.Config) {
	n.ConfigPath = filepath.Join(n.Dir, "ober.yaml")
	if err := os.WriteFile(n.ConfigPath, []byte(nodetest.YAML(n.site.t, c)), 0o600); err != nil {
		n.site.t.Fatal(err)
	}
}

// StartNodes runs ober on every node, waits until each is healthy and the
// router has a multipath route to both VIPs through every node.
func (s *Site) StartNodes() {
	s.t.Helper()
	for _, n := range s.Nodes {
		n.Start()
	}
	s.WaitPaths(len(s.Nodes), 30*time.Second)
}

// WaitPaths waits until the router's routes to both VIPs have want next
// hops.
func (s *Site) WaitPaths(want int, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		nh4, err4 := s.R.Nexthops(Prefix4)
		nh6, err6 := s.R.Nexthops(Prefix6)
		if err4 == nil && err6 == nil && len(nh4) == want && len(nh6) == want {
			return
		}
		if time.Now().After(deadline) {
			sess, _ := s.R.Sessions(context.Background())
			s.t.Fatalf("router: want %d paths to each VIP, have %v and %v (%v %v); sessions %v\n%s", want, nh4, nh6, err4, err6, sess, s.R.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Start runs `ober run` with the node's configuration and waits until
// it is healthy.
func (n *Node) Start() { n.Ober.Start(n.ConfigPath) }

// LinkDown cuts the node's cable on the node's side.
func (n *Node) LinkDown() { n.NS.IP(n.site.t, "link", "set", n.iface, "down") }

// LinkUp puts it back, with the default routes the kernel removed with
// the link (a host's network manager would restore them).
func (n *Node) LinkUp() {
	n.NS.IP(n.site.t, "link", "set", n.iface, "up")
	n.NS.IP(n.site.t, "route", "replace", "default", "via", routerAddr.String())
	n.NS.IP(n.site.t, "-6", "route", "replace", "default", "via", RouterAddr6.String())
}

// Backend is the backend host's namespace, on the nodes' segment, for
// tests that run their own servers there (at BackendIP and BackendIP6).
func (s *Site) Backend() *netnstest.NS { return s.backendNS }

// BackendIP is the i-th further IPv4 address of the backend host,
// 10.99.1.<21+i> (i < 9), added on first use: one per server a test runs
// there. The nodes reach it on their segment, without a router.
func (s *Site) BackendIP(i int) netip.Addr {
	s.t.Helper()
	if i < 0 || i >= maxBackendIPs {
		s.t.Fatalf("ecmptest: backend address %d, want 0 to %d", i, maxBackendIPs-1)
	}
	a := netip.AddrFrom4([4]byte{10, 99, 1, byte(21 + i)})
	s.addOnce(s.backendNS, "b-sw", a, "/24")
	return a
}

// BackendIP6 is BackendIP's IPv6 twin, fd99:1::<21+i> (the number read
// as hexadecimal digits, as the nodes' addresses are).
func (s *Site) BackendIP6(i int) netip.Addr {
	s.t.Helper()
	if i < 0 || i >= maxBackendIPs {
		s.t.Fatalf("ecmptest: backend address %d, want 0 to %d", i, maxBackendIPs-1)
	}
	a := netip.MustParseAddr(fmt.Sprintf("fd99:1::%d", 21+i))
	// nodad: a server cannot bind an address under duplicate address
	// detection.
	s.addOnce(s.backendNS, "b-sw", a, "/64", "nodad")
	return a
}

// ClientIP is the i-th further IPv4 address of the client host,
// 10.99.2.<10+i> (i < 200), added on first use: for tests that need
// flows from several client addresses.
func (s *Site) ClientIP(i int) netip.Addr {
	s.t.Helper()
	if i < 0 || i >= maxClientIPs {
		s.t.Fatalf("ecmptest: client address %d, want 0 to %d", i, maxClientIPs-1)
	}
	a := netip.AddrFrom4([4]byte{10, 99, 2, byte(10 + i)})
	s.addOnce(s.Client, "c-r", a, "/24")
	return a
}

// ClientIP6 is ClientIP's IPv6 twin, fd99:2::<10+i> (the number read as
// hexadecimal digits, as the nodes' addresses are).
func (s *Site) ClientIP6(i int) netip.Addr {
	s.t.Helper()
	if i < 0 || i >= maxClientIPs {
		s.t.Fatalf("ecmptest: client address %d, want 0 to %d", i, maxClientIPs-1)
	}
	a := netip.MustParseAddr(fmt.Sprintf("fd99:2::%d", 10+i))
	s.addOnce(s.Client, "c-r", a, "/64", "nodad")
	return a
}

// addOnce adds a to dev in ns unless it did so before.
func (s *Site) addOnce(ns *netnstest.NS, dev string, a netip.Addr, length string, flags ...string) {
	s.t.Helper()
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	if s.extra[a] {
		return
	}
	if s.extra == nil {
		s.extra = map[netip.Addr]bool{}
	}
	ns.IP(s.t, append([]string{"addr", "add", a.String() + length, "dev", dev}, flags...)...)
	s.extra[a] = true
}

// ClientDialer dials from the client namespace.
func (s *Site) ClientDialer() *nodetest.Dialer { return s.clientDial }

// TLSConfig trusts the site's certificate.
func (s *Site) TLSConfig() *tls.Config {
	pem, err := os.ReadFile(s.cert)
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, ServerName: VIP4.String(), NextProtos: []string{"http/1.1"}}
}
