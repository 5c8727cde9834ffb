// Package vrrptest builds a VRRP site in network namespaces: three ober
// nodes in ha.mode vrrp with real keepalived and HAProxy on one L2
// segment (a bridge in its own namespace), a client and an S3 backend on
// the same segment.
//
//	client 10.99.3.2 ---+
//	backend 10.99.3.20 -+-- switch (bridge) --+-- node1 10.99.3.11
//	observer (no IP) ---+                     +-- node2 10.99.3.12
//	                                          +-- node3 10.99.3.13
//
// VIP i (10.99.3.101-103) is owned by node i. The observer only asks, with
// ARP, who holds the VIPs (WatchARP). Everything is removed at cleanup,
// also when the test fails.
package vrrptest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
	"github.com/ober-ingress/ober/internal/testsite/routertest"
	"github.com/ober-ingress/ober/internal/testsite/s3server"
	"github.com/ober-ingress/ober/lab/vipwatch"
)

// Addresses of the site.
var (
	clientAddr  = netip.MustParseAddr("10.99.3.2")
	BackendAddr = netip.MustParseAddrPort("10.99.3.20:9000")
	VIPs        = []netip.Addr{
		netip.MustParseAddr("10.99.3.101"), netip.MustParseAddr("10.99.3.102"), netip.MustParseAddr("10.99.3.103"),
	}
)

// Params shape the site.
type Params struct {
	// PreemptDelay is ha.vrrp.preempt_delay; default 2s.
	PreemptDelay time.Duration
	// Instances per node; default 2.
	Instances int
	// Handoff turns ha.vrrp.handoff on: planned moves keep their
	// connections.
	Handoff bool
	// Drain is timeouts.drain; default 2s.
	Drain time.Duration
}

// Timers of every node: ha.vrrp.advert_interval and the default
// timeouts.drain.
const (
	advertInterval = 100 * time.Millisecond
	drain          = 2 * time.Second
)

// Site is the built topology.
type Site struct {
	P      Params
	Client *netnstest.NS
	Nodes  []*Node

	t testing.TB
	// backend serves S3; observer is a host on the segment with no
	// address of its own, from which WatchARP asks who holds the VIPs.
	backend, observer   *netnstest.NS
	s3                  *s3server.Server
	bin, dir, cert, key string
	clientDial          *nodetest.Dialer
}

// Node is one ober node.
type Node struct {
	site       *Site
	Name       string
	NS         *netnstest.NS
	Addr       netip.Addr
	Iface      string
	Dir        string
	ConfigPath string
	Root       string
	nl         *netlink.Handle
	// Ober is the node's `ober run`: Stop, Wait, Kill, Health, Status,
	// Metrics, InstancePIDs.
	*nodetest.Ober
}

// New builds the namespaces and the backend and writes every node's
// configuration; StartNodes runs ober.
func New(t testing.TB, bin string, p Params) *Site {
	t.Helper()
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, "keepalived", "keepalived")
	if p.PreemptDelay == 0 {
		p.PreemptDelay = 2 * time.Second
	}
	if p.Instances == 0 {
		p.Instances = 2
	}
	if p.Drain == 0 {
		p.Drain = drain
	}
	s := &Site{t: t, P: p, bin: bin, dir: t.TempDir()}
	sw := routertest.NewSwitch(t)
	s.Client = netnstest.New(t, "vcli")
	s.backend = netnstest.New(t, "vbe")
	sw.Attach(t, s.Client, "c-sw", "sw-c", netip.PrefixFrom(clientAddr, 24))
	sw.Attach(t, s.backend, "b-sw", "sw-b", netip.PrefixFrom(BackendAddr.Addr(), 24))
	s.observer = netnstest.New(t, "vobs")
	sw.Attach(t, s.observer, observerIface, "sw-o")
	for i := range 3 {
		n := &Node{
			site: s, Name: fmt.Sprintf("node%d", i+1), NS: netnstest.New(t, fmt.Sprintf("v%d", i+1)),
			Addr:  netip.AddrFrom4([4]byte{10, 99, 3, byte(11 + i)}),
			Iface: "eth-sw", Dir: filepath.Join(s.dir, fmt.Sprintf("node%d", i+1)),
		}
		sw.Attach(t, n.NS, n.Iface, fmt.Sprintf("sw-n%d", i+1), netip.PrefixFrom(n.Addr, 24))
		n.Root = netnstest.BPFFS(t) + "/ober"
		if err := os.MkdirAll(n.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		h, err := netlink.NewHandleAt(n.NS.Handle)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		n.nl = h
		n.Ober = nodetest.NewOber(t, n.Name, n.NS, bin)
		s.Nodes = append(s.Nodes, n)
		if p.Handoff {
			// The dataplane forwards handed-back segments out of the
			// segment's interface, and only the VIP's holder may answer
			// ARP for it (every node keeps the VIPs on lo).
			if err := n.NS.Do(func() error {
				for _, k := range []string{"forwarding", "arp_ignore"} {
					if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+n.Iface+"/"+k, []byte("1"), 0); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if p.Handoff {
		if err := handoff.NewKeyFile(filepath.Join(s.dir, "handoff.key")); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	s.cert, s.key, err = certs.SelfSigned(filepath.Join(s.dir, "tls"), []string{"s3.vrrp.test"}, VIPs)
	if err != nil {
		t.Fatal(err)
	}
	s.s3 = nodetest.NewS3()
	mux := http.NewServeMux()
	mux.HandleFunc(nodetest.BytesPath, nodetest.ServeBytes)
	mux.Handle("/", s.s3)
	nodetest.Serve(t, s.backend, BackendAddr, mux)
	for _, n := range s.Nodes {
		n.writeConfig(s.config(n))
	}
	s.clientDial = nodetest.NewDialer(t, s.Client, 16)
	return s
}

// config is n's configuration, as its file says it: Load fills in the
// defaults.
func (s *Site) config(n *Node) *config.Config {
	dur := func(d time.Duration) config.Duration { return config.Duration{Duration: d} }
	vrrp := &config.VRRP{AdvertInterval: dur(advertInterval), PreemptDelay: dur(s.P.PreemptDelay)}
	if s.P.Handoff {
		vrrp.Handoff = &config.Handoff{KeyFile: filepath.Join(s.dir, "handoff.key")}
	}
	for _, m := range s.Nodes {
		vrrp.Nodes = append(vrrp.Nodes, config.Addr{Addr: m.Addr})
	}
	c := &config.Config{
		Node: config.Node{
			Name: n.Name, Interfaces: []string{n.Iface}, XDPMode: config.XDPModeNative,
			BPFFSRoot: n.Root, RuntimeDir: n.Dir + "/run", StateDir: n.Dir + "/state",
		},
		Services: []config.Service{
			{Name: "https", Port: 443, Mode: config.ModeTLS, TLS: &config.TLS{Cert: s.cert, Key: s.key}},
		},
		Backends: config.Backends{
			Servers: []config.BackendServer{{Name: "s3a", Address: BackendAddr.String()}},
			Health:  config.HealthCheck{Interval: dur(200 * time.Millisecond), Fall: 2, Rise: 1},
		},
		Instances: config.Instances{Count: s.P.Instances},
		Timeouts:  config.Timeouts{Drain: dur(s.P.Drain)},
		HAProxy:   config.HAProxy{ServedByHeader: true},
		HA:        config.HA{Mode: config.HAModeVRRP, VRRP: vrrp},
	}
	for _, v := range VIPs {
		c.VIPs = append(c.VIPs, config.Addr{Addr: v})
	}
	return c
}

// writeConfig writes c as n's configuration file.
func (n *Node) writeConfig(c *config.Config) {
	n.ConfigPath = filepath.Join(n.Dir, "ober.yaml")
	if err := os.WriteFile(n.ConfigPath, []byte(nodetest.YAML(n.site.t, c)), 0o600); err != nil {
		n.site.t.Fatal(err)
	}
}

// StartNodes runs ober on every node and waits until each VIP is on its
// owner and nowhere else.
func (s *Site) StartNodes() {
	s.t.Helper()
	for _, n := range s.Nodes {
		n.Start()
	}
	s.waitOwners(30 * time.Second)
}

// waitOwners waits until VIP i is held by node i alone.
func (s *Site) waitOwners(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		held := s.holders()
		ok := true
		for i, v := range VIPs {
			if h := held[v]; len(h) != 1 || h[0] != s.Nodes[i] {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("VIPs not on their owners after %v: %s", timeout, s.HoldersString())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holders maps every VIP to the nodes whose interface holds it now.
func (s *Site) holders() map[netip.Addr][]*Node {
	out := map[netip.Addr][]*Node{}
	for _, n := range s.Nodes {
		for _, v := range n.HeldVIPs() {
			out[v] = append(out[v], n)
		}
	}
	return out
}

// HoldersString says which nodes hold each VIP, for failure messages.
func (s *Site) HoldersString() string {
	h := s.holders()
	var b bytes.Buffer
	for _, v := range VIPs {
		fmt.Fprintf(&b, "%s:", v)
		for _, n := range h[v] {
			fmt.Fprintf(&b, " %s", n.Name)
		}
		b.WriteString("; ")
	}
	return b.String()
}

// HeldVIPs lists the VIPs on n's interface (one netlink dump).
func (n *Node) HeldVIPs() []netip.Addr {
	link, err := n.nl.LinkByName(n.Iface)
	if err != nil {
		return nil
	}
	addrs, err := n.nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		for _, v := range VIPs {
			if v == ip {
				out = append(out, v)
			}
		}
	}
	return out
}

// observerIface is the observer's interface on the segment.
const observerIface = "o-sw"

// WatchARP starts asking, from the observer, who has each VIP every
// 5 ms, naming the nodes that answer; it is stopped at cleanup if the
// test does not stop it first.
func (s *Site) WatchARP() *vipwatch.ARPObserver {
	s.t.Helper()
	macs := map[string]net.HardwareAddr{}
	for _, n := range s.Nodes {
		mac, err := n.mac()
		if err != nil {
			s.t.Fatal(err)
		}
		macs[n.Name] = mac
	}
	o, err := vipwatch.StartARP(s.observer.Handle, vipwatch.ARPConfig{
		Iface: observerIface, VIPs: VIPs, Nodes: macs, Every: 5 * time.Millisecond,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(o.Stop)
	return o
}

// mac is the address of n's interface on the segment.
func (n *Node) mac() (net.HardwareAddr, error) {
	link, err := n.nl.LinkByName(n.Iface)
	if err != nil {
		return nil, fmt.Errorf("%s: interface %s: %w", n.Name, n.Iface, err)
	}
	return link.Attrs().HardwareAddr, nil
}

// Start runs `ober run` with the node's configuration and waits until
// it is healthy.
func (n *Node) Start() { n.Ober.Start(n.ConfigPath) }

// KeepalivedPID is the PID of the node's keepalived.
func (n *Node) KeepalivedPID() (int, error) {
	st, err := n.Status()
	if err != nil {
		return 0, err
	}
	if st.Daemon.VRRP == nil || st.Daemon.VRRP.PID == 0 {
		return 0, fmt.Errorf("%s: no keepalived in /status", n.Name)
	}
	return st.Daemon.VRRP.PID, nil
}

// LinkIsUp reports whether the node's link is up (one netlink call).
func (n *Node) LinkIsUp() bool {
	link, err := n.nl.LinkByName(n.Iface)
	return err == nil && link.Attrs().Flags&net.FlagUp != 0
}

// LinkDown cuts the node's cable on the node's side; LinkUp restores it.
func (n *Node) LinkDown() { n.NS.IP(n.site.t, "link", "set", n.Iface, "down") }

// LinkUp puts the node's link back.
func (n *Node) LinkUp() { n.NS.IP(n.site.t, "link", "set", n.Iface, "up") }

// ClientDialer dials from the client namespace.
func (s *Site) ClientDialer() *nodetest.Dialer { return s.clientDial }

// TLSConfig trusts the site's certificate.
func (s *Site) TLSConfig(vip netip.Addr) *tls.Config {
	pem, err := os.ReadFile(s.cert)
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, ServerName: vip.String(), NextProtos: []string{"http/1.1"}}
}
