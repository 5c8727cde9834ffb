package wizard

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/config"
)

// answers are everything the wizard decides. Lists left nil are not
// touched in the file.
type answers struct {
	HAMode     string
	NodeName   string
	Interfaces []string
	VIPs       []netip.Addr

	ASN      uint32
	RouterID netip.Addr // invalid: the default (first IPv4 of the interfaces)
	Peers    []peer
	BFD      bool

	VRRPNodes     []netip.Addr
	VRRPSelf      netip.Addr // invalid: found on the interface at start
	VRRPInterface string     // empty: the first of Interfaces

	Backends   []string // host:port
	HealthPath string

	Cert, Key  string // absolute; Key empty: the key is in Cert
	SelfSigned bool

	HTTP         bool
	FrontendHTTP *[]string
	BackendHTTP  *[]string
	Routers      *[]string

	// Set from flags only: where the node keeps its files.
	RuntimeDir, StateDir, BPFFSRoot string
}

// Options configure Prepare.
type Options struct {
	// Path is the configuration file, read for the current values.
	Path string
	// Flags holds the value of every flag the operator gave, by flag
	// name without dashes: "vips", "bgp-peer" (joined by commas), "http"
	// ("yes"/"no"), "cert" ("self-signed" for --self-signed).
	Flags map[string]string
	// In is the terminal to read answers from; nil asks nothing.
	In io.Reader
	// Out gets the questions.
	Out io.Writer
	// Warn gets warnings in non-interactive runs.
	Warn io.Writer
	// Now is the time certificates must be valid at; nil: time.Now.
	Now func() time.Time
	// Hostname is the node name's default; nil: os.Hostname.
	Hostname func() (string, error)
	// InterfaceExists checks node.interfaces on this host; nil: the
	// host's interfaces.
	InterfaceExists func(string) bool
	// LocalAddrs are this host's addresses, to find ha.vrrp.self; nil:
	// the host's.
	LocalAddrs func() []netip.Addr
}

// question is one answer the wizard needs. The value comes from the
// flag, else from the current file, else def.
type question struct {
	flag     string
	prompt   string
	help     string
	def      string
	optional bool // may stay empty ("-" clears it on a terminal)
	// item marks one item of a list asked item by item: def is its
	// value, whatever the flag or the file say about the whole list.
	item bool
	// check validates an answer and, when it is good, stores it.
	check func(string) error
}

type session struct {
	o   Options
	cur map[string]string
	in  *lineReader
	a   *answers
}

// ask returns the answer to q: on a terminal, after asking until the
// answer passes check; otherwise at once, or an error naming the flag.
func (s *session) ask(ctx context.Context, q question) (string, error) {
	start, from := s.o.Flags[q.flag], "flag"
	if _, given := s.o.Flags[q.flag]; !given || q.item {
		start, from = s.cur[q.flag], "file"
		if start == "" || q.item {
			start, from = q.def, "default"
		}
	}
	if s.in == nil {
		switch {
		case start == "" && !q.optional:
			return "", fmt.Errorf("--%s is required (no value in %s)", q.flag, s.o.Path)
		case start == "":
			return "", q.check("")
		}
		if err := q.check(start); err != nil {
			if from == "file" {
				return "", fmt.Errorf("the value in %s for --%s: %w", s.o.Path, q.flag, err)
			}
			return "", fmt.Errorf("--%s: %w", q.flag, err)
		}
		return start, nil
	}
	if q.help != "" {
		fmt.Fprintf(s.o.Out, "\n%s\n", q.help)
	}
	for {
		p := q.prompt
		if start != "" {
			p += " [" + start + "]"
		}
		fmt.Fprint(s.o.Out, p+": ")
		text, err := s.in.read(ctx)
		if err != nil {
			return "", err
		}
		v := strings.TrimSpace(text)
		switch {
		case v == "":
			v = start
		case v == "-" && q.optional:
			v = ""
		}
		if v == "" && !q.optional {
			fmt.Fprintln(s.o.Out, "  an answer is required")
			continue
		}
		if err := q.check(v); err != nil {
			fmt.Fprintf(s.o.Out, "  %v\n", err)
			continue
		}
		return v, nil
	}
}

func (s *session) warn(format string, args ...any) {
	if s.in != nil {
		fmt.Fprintf(s.o.Out, "  warning: "+format+"\n", args...)
		return
	}
	if s.o.Warn != nil {
		fmt.Fprintf(s.o.Warn, "ober: config: warning: "+format+"\n", args...)
	}
}

// ask gathers the answers: from the terminal when in is set, else from
// the flags, the current file (cur, nil when there is none) and the
// defaults.
func ask(ctx context.Context, o Options, cur *config.Config, in *lineReader) (*answers, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Hostname == nil {
		o.Hostname = os.Hostname
	}
	if o.InterfaceExists == nil {
		o.InterfaceExists = interfaceExists
	}
	if o.LocalAddrs == nil {
		o.LocalAddrs = localAddrs
	}
	s := &session{o: o, cur: currentValues(cur), in: in, a: &answers{}}
	if in != nil {
		fmt.Fprintf(o.Out, "ober config: %s\nEnter keeps the value in brackets.\n", o.Path)
	}
	a := s.a
	a.RuntimeDir, a.StateDir, a.BPFFSRoot = o.Flags["runtime-dir"], o.Flags["state-dir"], o.Flags["bpffs-root"]
	for _, f := range []struct{ flag, v string }{{"runtime-dir", a.RuntimeDir}, {"state-dir", a.StateDir}, {"bpffs-root", a.BPFFSRoot}} {
		if _, given := o.Flags[f.flag]; given && !strings.HasPrefix(f.v, "/") {
			return nil, fmt.Errorf("--%s: must be an absolute path: %q", f.flag, f.v)
		}
	}

	steps := []func(context.Context) error{s.askHA, s.askNode, s.askVIPs, s.askBGP, s.askVRRP, s.askBackends, s.askTLS, s.askHTTP, s.askRouters}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (s *session) askHA(ctx context.Context) error {
	_, err := s.ask(ctx, question{
		flag: "ha", prompt: "HA mode (none, bgp, vrrp)", def: config.HAModeNone,
		help: "How the VIPs stay reachable. none: one node owns them. bgp: every node announces\n" +
			"them to its routers (ECMP spreads clients over the nodes; needs BGP routers).\n" +
			"vrrp: keepalived gives each VIP one owner among nodes on one L2 segment (no\n" +
			"routers needed; clients spread by DNS round robin).",
		check: func(v string) error {
			switch v {
			case config.HAModeNone, config.HAModeBGP, config.HAModeVRRP:
				s.a.HAMode = v
				return nil
			}
			return fmt.Errorf("not an HA mode (none, bgp or vrrp): %s", v)
		},
	})
	return err
}

func (s *session) askNode(ctx context.Context) error {
	host, _ := s.o.Hostname()
	if !config.ValidName(host) {
		host = ""
	}
	if _, err := s.ask(ctx, question{
		flag: "node-name", prompt: "Node name", def: host,
		check: func(v string) error {
			if err := checkNodeName(v); err != nil {
				return err
			}
			s.a.NodeName = v
			return nil
		},
	}); err != nil {
		return err
	}
	_, err := s.ask(ctx, question{
		flag: "interfaces", prompt: "Interfaces (NICs that get the XDP program)",
		check: func(v string) error {
			list, err := parseInterfaces(v)
			if err != nil {
				return err
			}
			s.a.Interfaces = list
			return nil
		},
	})
	if err != nil {
		return err
	}
	for _, n := range s.a.Interfaces {
		if !s.o.InterfaceExists(n) {
			s.warn("this host has no interface %s (fine when the file is for another node)", n)
		}
	}
	return nil
}

func (s *session) askVIPs(ctx context.Context) error {
	_, err := s.ask(ctx, question{
		flag: "vips", prompt: "VIPs (the addresses clients connect to)",
		check: func(v string) error {
			list, err := parseAddrs(v, "VIP")
			if err != nil {
				return err
			}
			s.a.VIPs = list
			return nil
		},
	})
	return err
}

func (s *session) askBGP(ctx context.Context) error {
	if s.a.HAMode != config.HAModeBGP {
		return nil
	}
	if _, err := s.ask(ctx, question{
		flag: "asn", prompt: "Local AS number",
		check: func(v string) error {
			n, err := parseASN(v)
			s.a.ASN = n
			return err
		},
	}); err != nil {
		return err
	}
	if _, err := s.ask(ctx, question{
		flag: "router-id", prompt: "BGP router ID (Enter or -: the first IPv4 address of the interfaces)", optional: true,
		check: func(v string) error {
			if v == "" {
				s.a.RouterID = netip.Addr{}
				return nil
			}
			a, err := parseRouterID(v)
			s.a.RouterID = a
			return err
		},
	}); err != nil {
		return err
	}
	if err := s.askPeers(ctx); err != nil {
		return err
	}
	_, err := s.ask(ctx, question{
		flag: "bfd", prompt: "BFD on the sessions (yes/no)", def: "no",
		help: "BFD finds a dead link to a router in about a second instead of the hold time (9s).",
		check: func(v string) error {
			b, err := parseYesNo(v)
			s.a.BFD = b
			return err
		},
	})
	return err
}

// askPeers asks router by router on a terminal (address, then AS
// number); from flags the list is one --bgp-peer ADDR:ASN per router.
func (s *session) askPeers(ctx context.Context) error {
	q := question{
		flag: "bgp-peer", prompt: "Routers",
		check: func(v string) error {
			ps, err := parsePeers(v)
			s.a.Peers = ps
			return err
		},
	}
	if s.in == nil {
		_, err := s.ask(ctx, q)
		return err
	}
	start := s.o.Flags["bgp-peer"]
	if _, given := s.o.Flags["bgp-peer"]; !given {
		start = s.cur["bgp-peer"]
	}
	known, _ := parsePeers(start)
	fmt.Fprintln(s.o.Out, "\nThe routers this node peers with, one at a time; Enter on an empty address ends\nthe list, - ends it at that router.")
	var peers []peer
	for i := 0; ; i++ {
		def := ""
		if i < len(known) {
			def = known[i].Addr.String()
		}
		prompt := fmt.Sprintf("Router %d address", i+1)
		if def == "" && i > 0 {
			prompt += " (Enter: no more)"
		}
		addr, err := s.ask(ctx, question{
			flag: "bgp-peer", prompt: prompt, optional: i > 0,
			check: func(v string) error {
				if v == "" {
					return nil
				}
				a, err := parseIP(v)
				if err != nil {
					return err
				}
				if msg := unicastProblem(a); msg != "" {
					return fmt.Errorf("a router cannot be %s: %s", msg, v)
				}
				if slices.ContainsFunc(peers, func(p peer) bool { return p.Addr == a }) {
					return fmt.Errorf("router given twice: %s", a)
				}
				return nil
			},
		}.withStart(def))
		if err != nil {
			return err
		}
		if addr == "" {
			break
		}
		a, _ := parseIP(addr)
		asnDef := ""
		switch {
		case i < len(known):
			asnDef = strconv.FormatUint(uint64(known[i].ASN), 10)
		case len(peers) > 0:
			asnDef = strconv.FormatUint(uint64(peers[len(peers)-1].ASN), 10)
		}
		var asn uint32
		if _, err := s.ask(ctx, question{
			flag: "bgp-peer", prompt: fmt.Sprintf("Router %d AS number", i+1),
			check: func(v string) error {
				n, err := parseASN(v)
				asn = n
				return err
			},
		}.withStart(asnDef)); err != nil {
			return err
		}
		peers = append(peers, peer{Addr: a, ASN: asn})
	}
	s.a.Peers = peers
	return nil
}

// withStart makes q ask for one item of a list, start in brackets.
func (q question) withStart(start string) question {
	q.item, q.def = true, start
	return q
}

func (s *session) askVRRP(ctx context.Context) error {
	if s.a.HAMode != config.HAModeVRRP {
		return nil
	}
	if _, err := s.ask(ctx, question{
		flag: "vrrp-nodes", prompt: "VRRP nodes (every node's address, same order on every node)",
		help: "VIP i is owned by node i (modulo the number of nodes); the others back it up in\nlist order. Give the list in the same order on every node.",
		check: func(v string) error {
			ns, err := parseVRRPNodes(v)
			s.a.VRRPNodes = ns
			return err
		},
	}); err != nil {
		return err
	}
	self := ""
	for _, a := range s.o.LocalAddrs() {
		if slices.Contains(s.a.VRRPNodes, a) {
			self = a.String()
			break
		}
	}
	if _, err := s.ask(ctx, question{
		flag: "vrrp-self", prompt: "This node's address among them (-: found on the interface when ober starts)", def: self, optional: true,
		check: func(v string) error {
			if v == "" {
				s.a.VRRPSelf = netip.Addr{}
				return nil
			}
			a, err := parseIP(v)
			if err != nil {
				return err
			}
			if !slices.Contains(s.a.VRRPNodes, a) {
				return fmt.Errorf("not one of the VRRP nodes: %s", v)
			}
			s.a.VRRPSelf = a
			return nil
		},
	}); err != nil {
		return err
	}
	_, err := s.ask(ctx, question{
		flag: "vrrp-interface", prompt: "VRRP interface (adverts and VIPs)", def: s.a.Interfaces[0],
		check: func(v string) error {
			if err := checkInterface(v); err != nil {
				return err
			}
			s.a.VRRPInterface = v
			return nil
		},
	})
	if err == nil && !s.o.InterfaceExists(s.a.VRRPInterface) {
		s.warn("this host has no interface %s", s.a.VRRPInterface)
	}
	return err
}

func (s *session) askBackends(ctx context.Context) error {
	var list string
	if _, err := s.ask(ctx, question{
		flag: "backends", prompt: "S3 backends",
		help: "The S3 servers as a Slurm hostlist of host:port, such as rgw[01-08].internal:7480,\nor of host names that share one port (asked next).",
		check: func(v string) error {
			// Any port will do to check the rest of the list.
			if _, err := parseBackends(v, 1); err != nil {
				return err
			}
			if needsPort(v) {
				list = v
				return nil
			}
			bs, err := parseBackends(v, 0)
			s.a.Backends, list = bs, ""
			return err
		},
	}); err != nil {
		return err
	}
	if list != "" {
		if _, err := s.ask(ctx, question{
			flag: "backend-port", prompt: "Port of the backends given without one", def: "7480",
			check: func(v string) error {
				port, err := parsePort(v)
				if err != nil {
					return err
				}
				bs, err := parseBackends(list, port)
				s.a.Backends = bs
				return err
			},
		}); err != nil {
			return err
		}
	}
	_, err := s.ask(ctx, question{
		flag: "health-path", prompt: "Health-check path (any 2xx-4xx answer counts as up)", def: config.DefaultHealthPath,
		check: func(v string) error {
			if err := checkHealthPath(v); err != nil {
				return err
			}
			s.a.HealthPath = v
			return nil
		},
	})
	return err
}

const selfSigned = "self-signed"

func (s *session) askTLS(ctx context.Context) error {
	var hasKey bool
	if _, err := s.ask(ctx, question{
		flag: "cert", prompt: "TLS certificate (PEM file, chain with the leaf first, or self-signed)",
		help: "The certificate HAProxy serves on port 443. self-signed makes ober generate one\n(for labs and tests: clients will not trust it).",
		check: func(v string) error {
			if v == selfSigned {
				s.a.SelfSigned, s.a.Cert = true, ""
				return nil
			}
			p, err := absPath(v)
			if err != nil {
				return err
			}
			if hasKey, err = checkCert(p, s.o.Now()); err != nil {
				return err
			}
			s.a.SelfSigned, s.a.Cert = false, p
			return nil
		},
	}); err != nil {
		return err
	}
	if s.a.SelfSigned {
		if _, given := s.o.Flags["key"]; given {
			return fmt.Errorf("--key: a self-signed certificate brings its own key; leave --key out")
		}
		s.a.Key = ""
		return nil
	}
	prompt := "TLS private key (PEM file)"
	if hasKey {
		prompt = "TLS private key (PEM file; -: the key in the certificate file)"
	}
	_, err := s.ask(ctx, question{
		flag: "key", prompt: prompt, optional: hasKey,
		check: func(v string) error {
			p := ""
			if v != "" {
				var err error
				if p, err = absPath(v); err != nil {
					return err
				}
			}
			if err := checkKey(s.a.Cert, p); err != nil {
				return err
			}
			s.a.Key = p
			return nil
		},
	})
	return err
}

func (s *session) askHTTP(ctx context.Context) error {
	if _, err := s.ask(ctx, question{
		flag: "http", prompt: "Plain-HTTP S3 on port 80 for whitelisted clients (yes/no)", def: "no",
		help: "Plain HTTP skips TLS for trusted clients (compute nodes); XDP drops everyone not\non the whitelist. no removes the plain-HTTP services.",
		check: func(v string) error {
			b, err := parseYesNo(v)
			s.a.HTTP = b
			return err
		},
	}); err != nil {
		return err
	}
	for _, l := range []struct {
		flag, prompt string
		dst          **[]string
	}{
		{"frontend-http", "frontend-http whitelist (hostlists, names, IPs, CIDRs; -: nobody)", &s.a.FrontendHTTP},
		{"backend-http", "backend-http whitelist (-: nobody)", &s.a.BackendHTTP},
	} {
		_, given := s.o.Flags[l.flag]
		if !s.a.HTTP && !given {
			continue
		}
		if _, err := s.ask(ctx, question{
			flag: l.flag, prompt: l.prompt, optional: true,
			check: func(v string) error {
				list, err := parseWhitelist(v)
				if list == nil {
					list = []string{}
				}
				*l.dst = &list
				return err
			},
		}); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) askRouters(ctx context.Context) error {
	_, given := s.o.Flags["routers"]
	if s.a.HAMode != config.HAModeBGP && !given {
		return nil
	}
	var def []string
	for _, p := range s.a.Peers {
		def = append(def, p.Addr.String())
	}
	// A list that leaves a router out is refused, so routers new in this
	// run join the file's list.
	if cur := splitList(s.cur["routers"]); len(cur) > 0 {
		for _, p := range def {
			if !slices.Contains(cur, p) {
				cur = append(cur, p)
			}
		}
		s.cur["routers"] = strings.Join(cur, ",")
	}
	_, err := s.ask(ctx, question{
		flag: "routers", prompt: "routers whitelist (who may reach BGP and BFD; must hold every router)",
		def: strings.Join(def, ","), optional: true,
		check: func(v string) error {
			list, err := parseWhitelist(v)
			if list == nil {
				list = []string{}
			}
			s.a.Routers = &list
			return err
		},
	})
	return err
}

// localAddrs lists this host's addresses.
func localAddrs() []netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// currentValues are the answers the file at hand gives, by flag name.
func currentValues(c *config.Config) map[string]string {
	m := map[string]string{}
	if c == nil {
		return m
	}
	addrs := func(as []config.Addr) string {
		s := make([]string, len(as))
		for i, a := range as {
			s[i] = a.String()
		}
		return strings.Join(s, ",")
	}
	m["ha"] = c.HA.Mode
	m["node-name"] = c.Node.Name
	m["interfaces"] = strings.Join(c.Node.Interfaces, ",")
	m["vips"] = addrs(c.VIPs)
	if b := c.HA.BGP; b != nil {
		if b.ASN != 0 {
			m["asn"] = strconv.FormatUint(uint64(b.ASN), 10)
		}
		if b.RouterID.IsValid() {
			m["router-id"] = b.RouterID.String()
		}
		var ps []string
		bfd := len(b.Peers) > 0
		for _, p := range b.Peers {
			ps = append(ps, peer{Addr: p.Address.Addr, ASN: p.ASN}.String())
			bfd = bfd && p.BFD.Enabled
		}
		m["bgp-peer"] = strings.Join(ps, ",")
		if len(b.Peers) > 0 {
			m["bfd"] = yesNo(bfd)
		}
	}
	if v := c.HA.VRRP; v != nil {
		m["vrrp-nodes"] = addrs(v.Nodes)
		if v.Self.IsValid() {
			m["vrrp-self"] = v.Self.String()
		}
		m["vrrp-interface"] = v.Interface
	}
	var bs []string
	for _, s := range c.Backends.Servers {
		bs = append(bs, s.Address)
	}
	m["backends"] = strings.Join(bs, ",")
	m["health-path"] = c.Backends.Health.Path
	for _, s := range c.Services {
		if s.Mode == config.ModeTLS && s.TLS != nil {
			if s.TLS.SelfSigned && s.TLS.Cert == "" {
				m["cert"] = selfSigned
			} else {
				m["cert"], m["key"] = s.TLS.Cert, s.TLS.Key
			}
			break
		}
	}
	if len(c.Services) > 0 {
		m["http"] = yesNo(slices.ContainsFunc(c.Services, func(s config.Service) bool { return s.Mode == config.ModeHTTP }))
	}
	m["frontend-http"] = strings.Join(c.Whitelists.FrontendHTTP, ",")
	m["backend-http"] = strings.Join(c.Whitelists.BackendHTTP, ",")
	m["routers"] = strings.Join(c.Whitelists.Routers, ",")
	return m
}
