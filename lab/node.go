package lab

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/lab/netsite"
)

// nodeConfig is node i's configuration for the lab's ha mode, as its
// file says it: Load fills in the defaults.
func nodeConfig(ha string, i int, dir, root, cert, key, handoffKey string) *config.Config {
	dur := func(d time.Duration) config.Duration { return config.Duration{Duration: d} }
	addrs := func(as ...netip.Addr) []config.Addr {
		out := make([]config.Addr, len(as))
		for i, a := range as {
			out[i] = config.Addr{Addr: a}
		}
		return out
	}
	h := nodeHost(i)
	c := &config.Config{
		Node: config.Node{
			Name: h.role, Interfaces: []string{h.iface}, XDPMode: config.XDPModeNative,
			BPFFSRoot: root, RuntimeDir: dir + "/run", StateDir: dir + "/state",
		},
		Services: []config.Service{
			{Name: "https", Port: 443, Mode: config.ModeTLS, TLS: &config.TLS{Cert: cert, Key: key}},
			// Plain HTTP for the client namespace only, as Herr Ober serves
			// it to a site's own hosts: XDP drops other sources' SYNs.
			{Name: "http", Port: 80, Mode: config.ModeHTTP},
		},
		Whitelists: config.Whitelists{FrontendHTTP: []string{
			netip.PrefixFrom(ClientAddr, 24).Masked().String(), netip.PrefixFrom(ClientAddr6, 64).Masked().String(),
		}},
		Backends: config.Backends{Health: config.HealthCheck{
			// RGW's Swift health check answers with an empty body.
			Path: "/swift/healthcheck", Interval: dur(500 * time.Millisecond), Fall: 2, Rise: 1,
		}},
		Timeouts: config.Timeouts{Drain: dur(drain)},
		HAProxy:  config.HAProxy{ServedByHeader: true},
	}
	for _, b := range backends {
		c.Backends.Servers = append(c.Backends.Servers, config.BackendServer{Name: b.role, Address: b.listen().String()})
	}
	// The node list doubles as the handoff peers (BGP) and as the
	// VRRP ownership order: VIP i is owned by node i.
	var nodes []config.Addr
	for j := range nodeCount {
		nodes = append(nodes, config.Addr{Addr: nodeHost(j).addr})
	}
	if ha == haVRRP {
		c.VIPs = addrs(VRRPVIPs...)
		// The handoff keeps the connections of planned moves: the owner
		// taking its VIP back, a graceful stop, `ober vip move`.
		c.HA = config.HA{Mode: config.HAModeVRRP, VRRP: &config.VRRP{Nodes: nodes, PreemptDelay: dur(preemptDelay),
			Handoff: &config.Handoff{KeyFile: handoffKey}}}
		return c
	}
	c.VIPs = addrs(VIP4, VIP6)
	var peers []config.BGPPeer
	for _, r := range []netip.Addr{RouterAddr, RouterAddr6} {
		peers = append(peers, config.BGPPeer{Address: config.Addr{Addr: r}, ASN: RouterASN,
			HoldTime: dur(bgpHoldTime), ConnectRetry: dur(time.Second)})
	}
	c.HA = config.HA{Mode: config.HAModeBGP, BGP: &config.BGP{
		ASN: NodeASN, Peers: peers, HoldDown: dur(holdDown),
		Handoff: config.Handoff{Nodes: nodes, KeyFile: handoffKey},
	}}
	return c
}

// nodeConfigText is nodeConfig as the text of node i's file.
func nodeConfigText(ha string, i int, dir, root, cert, key, handoffKey string) (string, error) {
	b, err := config.Marshal(nodeConfig(ha, i, dir, root, cert, key, handoffKey))
	if err != nil {
		return "", err
	}
	mode := "BGP"
	if ha == haVRRP {
		mode = "VRRP"
	}
	return fmt.Sprintf("# written by ober lab: node %s of the lab's %s site\n", nodeHost(i).role, mode) + string(b), nil
}

// startNode writes node i's configuration and spawns `ober run` in its
// namespace. It does not wait: waitHealthy does.
func startNode(site *netsite.Site, ns *netsite.NS, ha string, i int, bin, bpffs, cert, key, handoffKey string) (NodeState, error) {
	h := nodeHost(i)
	dir := filepath.Join(site.Dir, h.role)
	ns0 := NodeState{Name: h.role, NS: ns.Name, Addr: h.addr.String(), Addr6: h.addr6.String(),
		Config: filepath.Join(dir, "ober.yaml"), Log: filepath.Join(dir, "ober.log")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ns0, err
	}
	text, err := nodeConfigText(ha, i, dir, filepath.Join(bpffs, h.role), cert, key, handoffKey)
	if err != nil {
		return ns0, err
	}
	if err := os.WriteFile(ns0.Config, []byte(text), 0o600); err != nil {
		return ns0, fmt.Errorf("write %s: %w", ns0.Config, err)
	}
	ns0.PID, err = spawnNode(site, ns, ns0, bin)
	return ns0, err
}

// spawnNode starts n's `ober run` in ns, recorded in the site's ledger.
func spawnNode(site *netsite.Site, ns *netsite.NS, n NodeState, bin string) (int, error) {
	return site.Spawn(ns, "ober "+n.Name, n.Log, bin, "run", "--config", n.Config, "--log-level", "info")
}

// nodeAPI asks a node's daemon on its default API address, dialled in
// the node's namespace.
type nodeAPI struct {
	d *netsite.Dialer
	c *api.Client
}

func newNodeAPI(nsName string) (*nodeAPI, error) {
	d, err := netsite.NewDialer(&netsite.NS{Name: nsName}, 2)
	if err != nil {
		return nil, err
	}
	return &nodeAPI{d: d, c: api.NewClient(config.DefaultAPIListen, api.ClientOptions{Dial: d.DialContext})}, nil
}

func (a *nodeAPI) Close() { a.d.Close() }

// health returns /health's status code and body.
func (a *nodeAPI) health(ctx context.Context) (int, string, error) {
	h, err := a.c.Health(ctx)
	return h.Code, h.Body, err
}

// status returns /status.
func (a *nodeAPI) status(ctx context.Context) (*api.Status, error) { return a.c.Status(ctx) }

// waitHealthy waits until the node's /health answers 200, failing early
// with its log when ober exits.
func waitHealthy(ctx context.Context, n NodeState, timeout time.Duration) error {
	na, err := newNodeAPI(n.NS)
	if err != nil {
		return err
	}
	defer na.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		code, body, err := na.health(ctx)
		if err == nil && code == http.StatusOK {
			return nil
		}
		if !procstat.Alive(n.PID) {
			return fmt.Errorf("%s: ober exited during start; the end of %s:\n%s", n.Name, n.Log, tail(n.Log, 20))
		}
		select {
		case <-ctx.Done():
			last := fmt.Sprintf("%d %q", code, body)
			if err != nil {
				last = err.Error()
			}
			return fmt.Errorf("%s: not healthy after %v (last answer: %s); the end of %s:\n%s",
				n.Name, timeout, last, n.Log, tail(n.Log, 20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a log file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
