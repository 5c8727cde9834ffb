package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/runtime/daemon"
	"github.com/ober-ingress/ober/lab/netsite"
)

var configTmpl = template.Must(template.New("cfg").Parse(`# written by ober lab (lab): node {{.Name}} of the lab's {{.Mode}} site
node:
  name: {{.Name}}
  interfaces: [{{.Iface}}]
  xdp_mode: native
  bpffs_root: {{.Root}}
  runtime_dir: {{.Dir}}/run
  state_dir: {{.Dir}}/state
vips: [{{.VIPs}}]
services:
  - name: https
    port: 443
    mode: tls
    tls:
      cert: {{.Cert}}
      key: {{.Key}}
backends:
  servers:
{{- range .Backends}}
    - name: {{.Name}}
      address: {{.Addr}}
{{- end}}
  health:
    # RGW's Swift health check answers with an empty body.
    path: /swift/healthcheck
    interval: 500ms
    fall: 2
    rise: 1
timeouts:
  drain: {{.Drain}}
haproxy:
  served_by_header: true
{{- if .VRRP}}
ha:
  mode: vrrp
  vrrp:
    nodes: [{{.VRRPNodes}}]
    preempt_delay: {{.Preempt}}
{{- else}}
ha:
  mode: bgp
  bgp:
    asn: {{.NodeASN}}
    hold_down: {{.HoldDown}}
    peers:
{{- range .Routers}}
      - address: {{.}}
        asn: {{$.RouterASN}}
        hold_time: {{$.Hold}}
        connect_retry: 1s
{{- end}}
    handoff:
      nodes: [{{.Handoff}}]
      key_file: {{.HandoffKey}}
{{- end}}
`))

// nodeConfig renders node i's configuration for the lab's ha mode.
func nodeConfig(ha string, i int, dir, root, cert, key, handoffKey string) (string, error) {
	type be struct {
		Name string
		Addr netip.AddrPort
	}
	var bes []be
	for _, b := range backends {
		bes = append(bes, be{b.role, b.listen()})
	}
	// The node list doubles as the handoff peers (BGP) and as the
	// VRRP ownership order: VIP i is owned by node i.
	var nodes []string
	for j := range nodeCount {
		nodes = append(nodes, nodeHost(j).addr.String())
	}
	h := nodeHost(i)
	mode, vips := "BGP", joinAddrs([]netip.Addr{VIP4, VIP6})
	if ha == haVRRP {
		mode, vips = "VRRP", joinAddrs(VRRPVIPs)
	}
	var b bytes.Buffer
	err := configTmpl.Execute(&b, map[string]any{
		"Name": h.role, "Mode": mode, "Iface": h.iface, "Root": root, "Dir": dir, "VIPs": vips,
		"Cert": cert, "Key": key, "Backends": bes, "Drain": drain, "NodeASN": NodeASN,
		"HoldDown": holdDown, "Routers": []netip.Addr{RouterAddr, RouterAddr6}, "RouterASN": RouterASN,
		"Hold": bgpHoldTime, "Handoff": strings.Join(nodes, ", "), "HandoffKey": handoffKey,
		"VRRP": ha == haVRRP, "VRRPNodes": strings.Join(nodes, ", "), "Preempt": preemptDelay,
	})
	return b.String(), err
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
	text, err := nodeConfig(ha, i, dir, filepath.Join(bpffs, h.role), cert, key, handoffKey)
	if err != nil {
		return ns0, err
	}
	if err := os.WriteFile(ns0.Config, []byte(text), 0o600); err != nil {
		return ns0, fmt.Errorf("write %s: %w", ns0.Config, err)
	}
	ns0.PID, err = site.Spawn(ns, "ober "+h.role, ns0.Log, bin, "run", "--config", ns0.Config, "--log-level", "info")
	return ns0, err
}

// nodeAPI asks a node's daemon on its default API address, dialled in
// the node's namespace.
type nodeAPI struct {
	d  *netsite.Dialer
	hc *http.Client
}

func newNodeAPI(nsName string) (*nodeAPI, error) {
	d, err := netsite.NewDialer(&netsite.NS{Name: nsName}, 2)
	if err != nil {
		return nil, err
	}
	return &nodeAPI{d: d, hc: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}}, nil
}

func (a *nodeAPI) Close() { a.d.Close() }

func (a *nodeAPI) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:8404"+path, nil)
	if err != nil {
		return nil, err
	}
	return a.hc.Do(req)
}

// health returns /health's status code and body.
func (a *nodeAPI) health(ctx context.Context) (int, string, error) {
	resp, err := a.get(ctx, "/health")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// status returns /status.
func (a *nodeAPI) status(ctx context.Context) (*daemon.Status, error) {
	resp, err := a.get(ctx, "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/status answered %s", resp.Status)
	}
	var st daemon.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decode /status: %w", err)
	}
	if st.Daemon == nil {
		return nil, fmt.Errorf("/status without the daemon's part")
	}
	return &st, nil
}

// waitHealthy waits until the node's /health answers 200, failing early
// with its log when ober exits.
func waitHealthy(ctx context.Context, n NodeState, timeout time.Duration) error {
	api, err := newNodeAPI(n.NS)
	if err != nil {
		return err
	}
	defer api.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		code, body, err := api.health(ctx)
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
