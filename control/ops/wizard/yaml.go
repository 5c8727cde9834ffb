package wizard

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
)

// header opens a file the wizard writes from scratch.
const header = `# ober.yaml, written by 'ober config'. Every key is described in ober's
# control/config/SCHEMA.md; keys left out take their defaults. Run
# 'ober config' again to change the answers: other keys and comments stay.`

// document is ober.yaml as a node tree. The wizard edits only the keys it
// asks about, in place, so everything else survives a rewrite.
type document struct {
	doc  *yaml.Node
	root *yaml.Node
}

// parseDocument reads an existing file; empty data gives a fresh one.
func parseDocument(data []byte) (*document, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return newDocument(), nil
		}
		return nil, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null" {
		return newDocument(), nil
	}
	if doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the file is not a mapping of keys (node, vips, services, ...)")
	}
	return &document{doc: &doc, root: doc.Content[0]}, nil
}

func newDocument() *document {
	root := &yaml.Node{Kind: yaml.MappingNode}
	return &document{doc: &yaml.Node{Kind: yaml.DocumentNode, HeadComment: header, Content: []*yaml.Node{root}}, root: root}
}

// bytes encodes the tree with two-space indents and puts back the blank
// line before each top-level section, which the encoder drops.
func (d *document) bytes() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(d.doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	var out []string
	for i, l := range lines {
		top := l != "" && l[0] != ' ' && l[0] != '-'
		if top && i > 0 {
			prev := lines[i-1]
			prevComment := strings.HasPrefix(prev, "#")
			if prev != "" && !prevComment {
				out = append(out, "")
			}
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\n") + "\n"), nil
}

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
func num(n uint64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatUint(n, 10)}
}
func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

// deref follows an alias, so that an edit lands on what the file holds.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// find returns the index of key's key node in mapping m, or -1.
func find(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

func get(m *yaml.Node, key string) *yaml.Node {
	if i := find(m, key); i >= 0 {
		return deref(m.Content[i+1])
	}
	return nil
}

// set gives key the value v. An existing key keeps its comments (and a
// list its style); a new key is appended with comment above it.
func set(m *yaml.Node, key string, v *yaml.Node, comment string) {
	if i := find(m, key); i >= 0 {
		old := m.Content[i+1]
		v.LineComment, v.FootComment = old.LineComment, old.FootComment
		if v.Kind == old.Kind && v.Kind == yaml.SequenceNode {
			v.Style = old.Style
		}
		if v.HeadComment == "" {
			v.HeadComment = old.HeadComment
		}
		m.Content[i+1] = v
		return
	}
	k := str(key)
	k.HeadComment = comment
	m.Content = append(m.Content, k, v)
}

// setLine is set with a comment on the value's line for a new key.
func setLine(m *yaml.Node, key string, v *yaml.Node, line string) {
	if find(m, key) < 0 {
		v.LineComment = line
	}
	set(m, key, v, "")
}

func remove(m *yaml.Node, key string) {
	if i := find(m, key); i >= 0 {
		m.Content = slices.Delete(m.Content, i, i+2)
	}
}

// mapping returns the mapping under key, making it (or replacing a null
// or scalar there) when needed.
func mapping(m *yaml.Node, key, comment string) *yaml.Node {
	if v := get(m, key); v != nil && v.Kind == yaml.MappingNode {
		return v
	}
	v := &yaml.Node{Kind: yaml.MappingNode}
	set(m, key, v, comment)
	return v
}

// list makes a list of scalars, reusing the old list's items that
// stay, so their comments stay too.
func list(old *yaml.Node, items []string, flow bool) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode}
	if flow {
		n.Style = yaml.FlowStyle
	}
	n.Content = []*yaml.Node{}
	for _, it := range items {
		var reuse *yaml.Node
		if old != nil && old.Kind == yaml.SequenceNode {
			for _, o := range old.Content {
				if o = deref(o); o.Kind == yaml.ScalarNode && o.Value == it {
					reuse = o
					break
				}
			}
		}
		if reuse == nil {
			reuse = str(it)
		}
		n.Content = append(n.Content, reuse)
	}
	return n
}

func setList(m *yaml.Node, key string, items []string, flow bool, comment string) {
	set(m, key, list(get(m, key), items, flow), comment)
}

func addrStrings(as []netip.Addr) []string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return s
}

// apply writes the answers into the tree.
func (d *document) apply(a *Answers) {
	r := d.root
	node := mapping(r, "node", "")
	setLine(node, "name", str(a.NodeName), "# logs, metrics, X-Served-By")
	setLine(node, "interfaces", list(get(node, "interfaces"), a.Interfaces, true), "# NICs that get the XDP program")
	for _, f := range []struct{ key, v string }{{"bpffs_root", a.BPFFSRoot}, {"runtime_dir", a.RuntimeDir}, {"state_dir", a.StateDir}} {
		if f.v != "" {
			set(node, f.key, str(f.v), "")
		}
	}

	setList(r, "vips", addrStrings(a.VIPs), false, "Addresses clients connect to.")
	d.applyServices(a)
	d.applyBackends(a)
	d.applyHA(a)

	// An empty list is what a missing key means: it is written only to
	// empty a list the file has.
	wl := get(r, "whitelists")
	for _, l := range []struct {
		key     string
		entries *[]string
		comment string
	}{
		{"frontend_http", a.FrontendHTTP, ""},
		{"backend_http", a.BackendHTTP, ""},
		{"routers", a.Routers, "Only these reach BGP and BFD on the node's own addresses."},
	} {
		if l.entries == nil || len(*l.entries) == 0 && (wl == nil || wl.Kind != yaml.MappingNode || find(wl, l.key) < 0) {
			continue
		}
		if wl == nil || wl.Kind != yaml.MappingNode {
			wl = mapping(r, "whitelists", "Client lists enforced in XDP, in the syntax of 'ober sync': Slurm hostlists,\nnames, IPs and CIDRs.")
		}
		setList(wl, l.key, *l.entries, false, l.comment)
	}
}

// modeOf is the mode of a service item.
func modeOf(svc *yaml.Node) string {
	if svc.Kind != yaml.MappingNode {
		return ""
	}
	if m := get(svc, "mode"); m != nil {
		return m.Value
	}
	return ""
}

// applyServices edits the first TLS service's certificate, making the
// service when there is none, and adds or removes the plain-HTTP one.
func (d *document) applyServices(a *Answers) {
	svcs := get(d.root, "services")
	if svcs == nil || svcs.Kind != yaml.SequenceNode {
		svcs = &yaml.Node{Kind: yaml.SequenceNode}
		set(d.root, "services", svcs, "Ports served on the VIPs.")
	}
	var tlsSvc *yaml.Node
	for _, it := range svcs.Content {
		if it = deref(it); modeOf(it) == config.ModeTLS {
			tlsSvc = it
			break
		}
	}
	if tlsSvc == nil {
		tlsSvc = &yaml.Node{Kind: yaml.MappingNode, HeadComment: "S3 over HTTPS for every client; HAProxy terminates TLS."}
		set(tlsSvc, "name", str("https"), "")
		set(tlsSvc, "port", num(443), "")
		set(tlsSvc, "mode", str(config.ModeTLS), "")
		svcs.Content = append([]*yaml.Node{tlsSvc}, svcs.Content...)
	}
	t := mapping(tlsSvc, "tls", "")
	if a.SelfSigned {
		remove(t, "cert")
		remove(t, "key")
		setLine(t, "self_signed", boolean(true), "# generated in node.state_dir; not for production")
	} else {
		remove(t, "self_signed")
		setLine(t, "cert", str(a.Cert), "# chain, leaf first")
		if a.Key != "" {
			set(t, "key", str(a.Key), "")
		} else {
			remove(t, "key")
		}
	}

	hasHTTP := slices.ContainsFunc(svcs.Content, func(n *yaml.Node) bool { return modeOf(deref(n)) == config.ModeHTTP })
	switch {
	case a.HTTP && !hasHTTP:
		h := &yaml.Node{Kind: yaml.MappingNode, HeadComment: "Plain S3 for the whitelisted clients only; XDP drops everyone else's SYN."}
		set(h, "name", str("http"), "")
		set(h, "port", num(80), "")
		set(h, "mode", str(config.ModeHTTP), "")
		set(h, "whitelist", str(config.WhitelistFrontendHTTP), "")
		svcs.Content = append(svcs.Content, h)
	case !a.HTTP && hasHTTP:
		svcs.Content = slices.DeleteFunc(svcs.Content, func(n *yaml.Node) bool { return modeOf(deref(n)) == config.ModeHTTP })
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

func (d *document) applyBackends(a *Answers) {
	b := mapping(d.root, "backends", "The S3 servers behind every service, health-checked by each HAProxy instance.")
	old := get(b, "servers")
	byAddr := map[string]*yaml.Node{}
	taken := map[string]bool{}
	if old != nil && old.Kind == yaml.SequenceNode {
		for _, it := range old.Content {
			if it = deref(it); it.Kind == yaml.MappingNode {
				if ad := get(it, "address"); ad != nil {
					byAddr[ad.Value] = it
				}
			}
		}
	}
	for _, addr := range a.Backends {
		if it, ok := byAddr[addr]; ok {
			if n := get(it, "name"); n != nil {
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
				set(it, "name", str(name), "")
			}
			set(it, "address", str(addr), "")
		}
		servers.Content = append(servers.Content, it)
	}
	set(b, "servers", servers, "")
	h := mapping(b, "health", "")
	setLine(h, "path", str(a.HealthPath), "# any 2xx-4xx answer counts as up")
}

func (d *document) applyHA(a *Answers) {
	ha := mapping(d.root, "ha", "How the VIPs stay reachable: none, bgp (announced to the routers) or vrrp.")
	set(ha, "mode", str(a.HAMode), "")
	switch a.HAMode {
	case config.HAModeBGP:
		remove(ha, "vrrp")
		bg := mapping(ha, "bgp", "")
		setLine(bg, "asn", num(uint64(a.ASN)), "# this node's AS")
		if a.RouterID.IsValid() {
			set(bg, "router_id", str(a.RouterID.String()), "")
		} else {
			remove(bg, "router_id")
		}
		old := map[netip.Addr]*yaml.Node{}
		if ps := get(bg, "peers"); ps != nil && ps.Kind == yaml.SequenceNode {
			for _, it := range ps.Content {
				if it = deref(it); it.Kind == yaml.MappingNode {
					if ad := get(it, "address"); ad != nil {
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
				set(it, "address", str(p.Addr.String()), "")
			}
			set(it, "asn", num(uint64(p.ASN)), "")
			switch bfd := get(it, "bfd"); {
			case a.BFD:
				set(mapping(it, "bfd", ""), "enabled", boolean(true), "")
			case bfd != nil && bfd.Kind == yaml.MappingNode:
				set(bfd, "enabled", boolean(false), "")
			}
			peers.Content = append(peers.Content, it)
		}
		set(bg, "peers", peers, "The routers; each must be on whitelists.routers.")
	case config.HAModeVRRP:
		remove(ha, "bgp")
		v := mapping(ha, "vrrp", "")
		setLine(v, "nodes", list(get(v, "nodes"), addrStrings(a.VRRPNodes), true), "# the same order on every node")
		if a.VRRPSelf.IsValid() {
			set(v, "self", str(a.VRRPSelf.String()), "")
		} else {
			remove(v, "self")
		}
		set(v, "interface", str(a.VRRPInterface), "")
	default:
		remove(ha, "bgp")
		remove(ha, "vrrp")
	}
}

// decodeCurrent reads the values of an existing file without judging
// them: the wizard is how a broken file gets mended.
func decodeCurrent(data []byte) *config.Config {
	var c config.Config
	_ = yaml.Unmarshal(data, &c)
	return &c
}
