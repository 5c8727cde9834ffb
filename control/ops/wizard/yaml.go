package wizard

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/yamledit"
)

// header opens a file the wizard writes from scratch.
const header = `# ober.yaml, written by 'ober config'. Every key is described in ober's
# control/config/SCHEMA.md; keys left out take their defaults. Run
# 'ober config' again to change the answers: other keys and comments stay.`

// parseDocument reads an existing file; empty data gives a fresh one,
// which starts with the header.
func parseDocument(data []byte) (*yamledit.Document, error) {
	doc, err := yamledit.Parse(data)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Root() == nil {
		return nil, errors.New("the file is not a mapping of keys (node, vips, services, ...)")
	}
	doc.SetHeader(header)
	return doc, nil
}

// setLine is set with a comment on the value's line for a new key.
func setLine(m *yaml.Node, key string, v *yaml.Node, line string) {
	if yamledit.Find(m, key) < 0 {
		v.LineComment = line
	}
	yamledit.Set(m, key, v, "")
}

// list makes a list of scalars in the style the file's list has (flow
// when it has none and flow is set), reusing the old list's items that
// stay, so their comments stay too.
func list(old *yaml.Node, items []string, flow bool) *yaml.Node {
	var style yaml.Style
	if flow {
		style = yaml.FlowStyle
	}
	if old != nil && old.Kind == yaml.SequenceNode {
		style = old.Style & yaml.FlowStyle
	}
	return yamledit.List(old, items, style)
}

func setList(m *yaml.Node, key string, items []string, flow bool, comment string) {
	yamledit.Set(m, key, list(yamledit.Get(m, key), items, flow), comment)
}

func addrStrings(as []netip.Addr) []string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return s
}

// apply writes the answers into the tree.
func apply(doc *yamledit.Document, a *answers) {
	r := doc.Root()
	node := yamledit.Mapping(r, "node", "")
	setLine(node, "name", yamledit.Str(a.NodeName), "# logs, metrics, X-Served-By")
	setLine(node, "interfaces", list(yamledit.Get(node, "interfaces"), a.Interfaces, true), "# NICs that get the XDP program")
	for _, f := range []struct{ key, v string }{{"bpffs_root", a.BPFFSRoot}, {"runtime_dir", a.RuntimeDir}, {"state_dir", a.StateDir}} {
		if f.v != "" {
			yamledit.Set(node, f.key, yamledit.Str(f.v), "")
		}
	}

	setList(r, "vips", addrStrings(a.VIPs), false, "Addresses clients connect to.")
	applyServices(r, a)
	applyBackends(r, a)
	applyHA(r, a)

	// An empty list is what a missing key means: it is written only to
	// empty a list the file has.
	wl := yamledit.Get(r, "whitelists")
	for _, l := range []struct {
		key     string
		entries *[]string
		comment string
	}{
		{"frontend_http", a.FrontendHTTP, ""},
		{"backend_http", a.BackendHTTP, ""},
		{"routers", a.Routers, "Only these reach BGP and BFD on the node's own addresses."},
	} {
		if l.entries == nil || len(*l.entries) == 0 && (wl == nil || wl.Kind != yaml.MappingNode || yamledit.Find(wl, l.key) < 0) {
			continue
		}
		if wl == nil || wl.Kind != yaml.MappingNode {
			wl = yamledit.Mapping(r, "whitelists", "Client lists enforced in XDP, in the syntax of 'ober sync': Slurm hostlists,\nnames, IPs and CIDRs.")
		}
		setList(wl, l.key, *l.entries, false, l.comment)
	}
}

// modeOf is the mode of a service item.
func modeOf(svc *yaml.Node) string {
	if svc.Kind != yaml.MappingNode {
		return ""
	}
	if m := yamledit.Get(svc, "mode"); m != nil {
		return m.Value
	}
	return ""
}

// applyServices edits the first TLS service's certificate, making the
// service when there is none, and adds or removes the plain-HTTP one.
func applyServices(root *yaml.Node, a *answers) {
	svcs := yamledit.Get(root, "services")
	if svcs == nil || svcs.Kind != yaml.SequenceNode {
		svcs = &yaml.Node{Kind: yaml.SequenceNode}
		yamledit.Set(root, "services", svcs, "Ports served on the VIPs.")
	}
	var tlsSvc *yaml.Node
	for _, it := range svcs.Content {
		if it = yamledit.Deref(it); modeOf(it) == config.ModeTLS {
			tlsSvc = it
			break
		}
	}
	if tlsSvc == nil {
		tlsSvc = &yaml.Node{Kind: yaml.MappingNode, HeadComment: "S3 over HTTPS for every client; HAProxy terminates TLS."}
		yamledit.Set(tlsSvc, "name", yamledit.Str("https"), "")
		yamledit.Set(tlsSvc, "port", yamledit.Int(443), "")
		yamledit.Set(tlsSvc, "mode", yamledit.Str(config.ModeTLS), "")
		svcs.Content = append([]*yaml.Node{tlsSvc}, svcs.Content...)
	}
	t := yamledit.Mapping(tlsSvc, "tls", "")
	if a.SelfSigned {
		yamledit.Remove(t, "cert")
		yamledit.Remove(t, "key")
		setLine(t, "self_signed", yamledit.Bool(true), "# generated in node.state_dir; not for production")
	} else {
		yamledit.Remove(t, "self_signed")
		setLine(t, "cert", yamledit.Str(a.Cert), "# chain, leaf first")
		if a.Key != "" {
			yamledit.Set(t, "key", yamledit.Str(a.Key), "")
		} else {
			yamledit.Remove(t, "key")
		}
	}

	hasHTTP := slices.ContainsFunc(svcs.Content, func(n *yaml.Node) bool { return modeOf(yamledit.Deref(n)) == config.ModeHTTP })
	switch {
	case a.HTTP && !hasHTTP:
		h := &yaml.Node{Kind: yaml.MappingNode, HeadComment: "Plain S3 for the whitelisted clients only; XDP drops everyone else's SYN."}
		yamledit.Set(h, "name", yamledit.Str("http"), "")
		yamledit.Set(h, "port", yamledit.Int(80), "")
		yamledit.Set(h, "mode", yamledit.Str(config.ModeHTTP), "")
		yamledit.Set(h, "whitelist", yamledit.Str(config.WhitelistFrontendHTTP), "")
		svcs.Content = append(svcs.Content, h)
	case !a.HTTP && hasHTTP:
		svcs.Content = slices.DeleteFunc(svcs.Content, func(n *yaml.Node) bool { return modeOf(yamledit.Deref(n)) == config.ModeHTTP })
	}
}

// serverName names a new backend after its host's first label, so that
// HAProxy's statistics and `ober status` say rgw01 rather than s0.
func serverName(addr string, taken map[string]bool) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	name, _, _ := strings.Cut(host, ".")
	if !config.ValidName(name) || taken[name] {
		return ""
	}
	return name
}

func applyBackends(root *yaml.Node, a *answers) {
	b := yamledit.Mapping(root, "backends", "The S3 servers behind every service, health-checked by each HAProxy instance.")
	old := yamledit.Get(b, "servers")
	byAddr := map[string]*yaml.Node{}
	taken := map[string]bool{}
	if old != nil && old.Kind == yaml.SequenceNode {
		for _, it := range old.Content {
			if it = yamledit.Deref(it); it.Kind == yaml.MappingNode {
				if ad := yamledit.Get(it, "address"); ad != nil {
					byAddr[ad.Value] = it
				}
			}
		}
	}
	for _, addr := range a.Backends {
		if it, ok := byAddr[addr]; ok {
			if n := yamledit.Get(it, "name"); n != nil {
				taken[n.Value] = true
			}
		}
	}
	servers := &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{}}
	for _, addr := range a.Backends {
		it, ok := byAddr[addr]
		if !ok {
			it = &yaml.Node{Kind: yaml.MappingNode}
			if name := serverName(addr, taken); name != "" {
				taken[name] = true
				yamledit.Set(it, "name", yamledit.Str(name), "")
			}
			yamledit.Set(it, "address", yamledit.Str(addr), "")
		}
		servers.Content = append(servers.Content, it)
	}
	yamledit.Set(b, "servers", servers, "")
	h := yamledit.Mapping(b, "health", "")
	setLine(h, "path", yamledit.Str(a.HealthPath), "# any 2xx-4xx answer counts as up")
}

func applyHA(root *yaml.Node, a *answers) {
	ha := yamledit.Mapping(root, "ha", "How the VIPs stay reachable: none, bgp (announced to the routers) or vrrp.")
	yamledit.Set(ha, "mode", yamledit.Str(a.HAMode), "")
	switch a.HAMode {
	case config.HAModeBGP:
		yamledit.Remove(ha, "vrrp")
		bg := yamledit.Mapping(ha, "bgp", "")
		setLine(bg, "asn", yamledit.Int(uint64(a.ASN)), "# this node's AS")
		if a.RouterID.IsValid() {
			yamledit.Set(bg, "router_id", yamledit.Str(a.RouterID.String()), "")
		} else {
			yamledit.Remove(bg, "router_id")
		}
		old := map[netip.Addr]*yaml.Node{}
		if ps := yamledit.Get(bg, "peers"); ps != nil && ps.Kind == yaml.SequenceNode {
			for _, it := range ps.Content {
				if it = yamledit.Deref(it); it.Kind == yaml.MappingNode {
					if ad := yamledit.Get(it, "address"); ad != nil {
						if x, err := netip.ParseAddr(ad.Value); err == nil {
							old[x] = it
						}
					}
				}
			}
		}
		peers := &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{}}
		for _, p := range a.Peers {
			it, ok := old[p.Addr]
			if !ok {
				it = &yaml.Node{Kind: yaml.MappingNode}
				yamledit.Set(it, "address", yamledit.Str(p.Addr.String()), "")
			}
			yamledit.Set(it, "asn", yamledit.Int(uint64(p.ASN)), "")
			switch bfd := yamledit.Get(it, "bfd"); {
			case a.BFD:
				yamledit.Set(yamledit.Mapping(it, "bfd", ""), "enabled", yamledit.Bool(true), "")
			case bfd != nil && bfd.Kind == yaml.MappingNode:
				yamledit.Set(bfd, "enabled", yamledit.Bool(false), "")
			}
			peers.Content = append(peers.Content, it)
		}
		yamledit.Set(bg, "peers", peers, "The routers; each must be on whitelists.routers.")
	case config.HAModeVRRP:
		yamledit.Remove(ha, "bgp")
		v := yamledit.Mapping(ha, "vrrp", "")
		setLine(v, "nodes", list(yamledit.Get(v, "nodes"), addrStrings(a.VRRPNodes), true), "# the same order on every node")
		if a.VRRPSelf.IsValid() {
			yamledit.Set(v, "self", yamledit.Str(a.VRRPSelf.String()), "")
		} else {
			yamledit.Remove(v, "self")
		}
		yamledit.Set(v, "interface", yamledit.Str(a.VRRPInterface), "")
	default:
		yamledit.Remove(ha, "bgp")
		yamledit.Remove(ha, "vrrp")
	}
}

// decodeCurrent reads the values of an existing file without judging
// them: the wizard is how a broken file gets mended.
func decodeCurrent(data []byte) *config.Config {
	var c config.Config
	_ = yaml.Unmarshal(data, &c)
	return &c
}
