package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/hostlist"
)

// Validate checks everything that needs no network and returns one
// *FieldError per problem, joined. It reads the certificate, key and CA
// files and the CPU affinity of the process, looks haproxy.user and
// haproxy.group up, and changes nothing, so it may be called any number
// of times.
//
// A zero value that has a default is accepted as "unset", so Validate
// gives the same verdict before and after ApplyDefaults.
func (c *Config) Validate() error {
	var p problems
	c.validateNode(&p)
	c.validateVIPs(&p)
	c.validateServices(&p)
	c.validateBackends(&p)
	c.validateInstances(&p)
	c.validateTimeouts(&p)
	c.validateLimits(&p)
	c.validateHA(&p)
	c.validateWhitelists(&p)
	c.validateAPI(&p)
	c.validateHAProxy(&p)
	return p.err()
}

func (c *Config) validateNode(p *problems) {
	n := &c.Node
	if n.Name == "" {
		if _, err := c.hostname(); err != nil {
			p.add("node.name", "", "required: the host name cannot be read (%v)", err)
		}
	} else if !ValidName(n.Name) {
		p.add("node.name", quote(n.Name), nameRule)
	}

	if len(n.Interfaces) == 0 {
		p.add("node.interfaces", "", "at least one interface is required")
	}
	seen := make(map[string]int)
	for i, name := range n.Interfaces {
		path := fmt.Sprintf("node.interfaces[%d]", i)
		if !ValidInterfaceName(name) {
			p.add(path, quote(name), interfaceRule)
			continue
		}
		if j, dup := seen[name]; dup {
			p.add(path, quote(name), "duplicate of node.interfaces[%d]", j)
			continue
		}
		seen[name] = i
	}

	switch n.XDPMode {
	case "", XDPModeAuto, XDPModeNative, XDPModeGeneric:
	default:
		p.add("node.xdp_mode", quote(n.XDPMode), "must be auto, native or generic")
	}
	if n.VIPInterface != "" && !ValidInterfaceName(n.VIPInterface) {
		p.add("node.vip_interface", quote(n.VIPInterface), interfaceRule)
	}
	for _, d := range []struct{ key, dir string }{
		{"node.bpffs_root", n.BPFFSRoot},
		{"node.runtime_dir", n.RuntimeDir},
		{"node.state_dir", n.StateDir},
	} {
		if d.dir != "" && !filepath.IsAbs(d.dir) {
			p.add(d.key, quote(d.dir), "must be an absolute path")
		}
	}
}

// maxTimeoutText is MaxTimeout rounded down to whole hours.
var maxTimeoutText = fmtDuration(MaxTimeout.Truncate(time.Hour))

const (
	nameRule      = `may contain only letters, digits, ".", "_" and "-"`
	interfaceRule = `not a valid interface name (1-15 characters, no "/", ":" or whitespace)`
)

// ValidName reports whether s is usable as an HAProxy proxy or server
// name, a log field and a header value: [a-zA-Z0-9_.-]+. The wizard
// checks answers with it before they reach the validator.
func ValidName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidInterfaceName applies the kernel's rule (dev_valid_name).
func ValidInterfaceName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func (c *Config) validateVIPs(p *problems) {
	if len(c.VIPs) == 0 {
		p.add("vips", "", "at least one VIP is required")
	}
	seen := make(map[netip.Addr]int)
	for i, v := range c.VIPs {
		path := fmt.Sprintf("vips[%d]", i)
		if msg := vipProblem(v.Addr); msg != "" {
			p.add(path, addrValue(v.Addr), "%s", msg)
			continue
		}
		if j, dup := seen[v.Addr]; dup {
			p.add(path, v.String(), "duplicate of vips[%d]", j)
			continue
		}
		seen[v.Addr] = i
	}
}

// addrValue writes a for a FieldError: empty when there is no address.
func addrValue(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// vipProblem says why a is not usable as a VIP, or returns "".
func vipProblem(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "an address is required"
	case a.Zone() != "":
		return "a VIP cannot have a zone"
	case a.Is4In6():
		return "an IPv4-mapped address; write it as " + a.Unmap().String()
	case a.IsUnspecified():
		return "the unspecified address cannot be a VIP"
	case a.IsLoopback():
		return "a loopback address cannot be a VIP"
	case a.IsMulticast():
		return "a multicast address cannot be a VIP"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address cannot be a VIP"
	}
	return ""
}

func (c *Config) validateServices(p *problems) {
	if len(c.Services) == 0 {
		p.add("services", "", "at least one service is required")
	}
	vips := make(map[netip.Addr]bool, len(c.VIPs))
	for _, v := range c.VIPs {
		vips[v.Addr] = true
	}
	names := make(map[string]int)
	for i := range c.Services {
		s := &c.Services[i]
		base := fmt.Sprintf("services[%d]", i)

		if name := c.serviceName(i); name != "" {
			if !ValidName(name) {
				p.add(base+".name", quote(name), nameRule)
			} else if j, dup := names[name]; dup {
				p.add(base+".name", quote(name), "already used by services[%d]", j)
			} else {
				names[name] = i
			}
		}
		if s.Port == 0 {
			p.add(base+".port", "", "required (1-65535)")
		}

		seen := make(map[netip.Addr]int)
		for j, v := range s.VIPs {
			path := fmt.Sprintf("%s.vips[%d]", base, j)
			switch k, dup := seen[v.Addr]; {
			case !v.IsValid():
				p.add(path, "", "an address is required")
			case dup:
				p.add(path, v.String(), "duplicate of %s.vips[%d]", base, k)
			case !vips[v.Addr]:
				p.add(path, v.String(), "not one of the top-level vips")
			default:
				seen[v.Addr] = j
			}
		}

		switch s.Mode {
		case ModeTLS:
			validateServiceTLS(p, base, s.TLS, c.now)
			if s.Whitelist != "" {
				p.add(base+".whitelist", quote(s.Whitelist), "only for mode http (mode tls admits every client)")
			}
		case ModeHTTP:
			if s.TLS != nil {
				p.add(base+".tls", "", "not allowed for mode http (plain HTTP); use mode tls to terminate TLS")
			}
			switch s.Whitelist {
			case "", WhitelistFrontendHTTP, WhitelistBackendHTTP:
			default:
				p.add(base+".whitelist", quote(s.Whitelist), "must be frontend-http or backend-http")
			}
		case "":
			p.add(base+".mode", "", "required: tls or http")
		default:
			p.add(base+".mode", quote(s.Mode), "must be tls or http")
		}
	}
	c.validatePortClashes(p)
}

// serviceName is the name of services[i] after defaults.
func (c *Config) serviceName(i int) string {
	s := &c.Services[i]
	if s.Name == "" && s.Mode != "" {
		return defaultServiceName(s)
	}
	return s.Name
}

// validatePortClashes reports each service whose port is already served on
// one of its VIPs by an earlier service; the kernel could bind only one.
func (c *Config) validatePortClashes(p *problems) {
	for i := range c.Services {
		port := c.Services[i].Port
		if port == 0 {
			continue
		}
		mine := c.ServiceVIPs(i)
		for j := range i {
			if c.Services[j].Port != port {
				continue
			}
			theirs := c.ServiceVIPs(j)
			k := slices.IndexFunc(mine, func(a netip.Addr) bool { return slices.Contains(theirs, a) })
			if k < 0 {
				continue
			}
			p.add(fmt.Sprintf("services[%d].port", i), strconv.Itoa(int(port)),
				"already used by services[%d] (%q) on VIP %s", j, c.serviceName(j), mine[k])
			break
		}
	}
}

func validateServiceTLS(p *problems, base string, t *TLS, now func() time.Time) {
	if t == nil {
		p.add(base+".tls", "", "required for mode tls: give cert (and key), or self_signed: true")
		return
	}
	switch {
	case t.Cert == "" && t.Key != "":
		p.add(base+".tls.key", quote(t.Key), "needs tls.cert")
	case t.Cert == "" && !t.SelfSigned:
		p.add(base+".tls", "", "needs cert (and key), or self_signed: true")
	case t.Cert != "" && t.SelfSigned:
		p.add(base+".tls.self_signed", "true", "conflicts with tls.cert: give one or the other")
	}
	if t.Cert != "" {
		checkCertAndKey(p, base+".tls", t, now)
	}
}

var balances = []string{"leastconn", "roundrobin", "source", "random", "first"}

func (c *Config) validateBackends(p *problems) {
	b := &c.Backends
	if b.Balance != "" && !slices.Contains(balances, b.Balance) {
		p.add("backends.balance", quote(b.Balance), "must be one of %s", strings.Join(balances, ", "))
	}
	if len(b.Servers) == 0 {
		p.add("backends.servers", "", "at least one server is required")
	}
	names := make(map[string]int)
	for i := range b.Servers {
		s := &b.Servers[i]
		base := fmt.Sprintf("backends.servers[%d]", i)
		name := s.Name
		if name == "" {
			name = defaultServerName(i)
		}
		if !ValidName(name) {
			p.add(base+".name", quote(name), nameRule)
		} else if j, dup := names[name]; dup {
			p.add(base+".name", quote(name), "already used by backends.servers[%d]", j)
		} else {
			names[name] = i
		}

		if s.Address == "" {
			p.add(base+".address", "", "required: host:port")
		} else if msg := addressProblem(s.Address); msg != "" {
			p.add(base+".address", quote(s.Address), "%s", msg)
		}
		if s.Weight != nil && (*s.Weight < 0 || *s.Weight > MaxWeight) {
			p.add(base+".weight", strconv.Itoa(*s.Weight), "must be 0-%d", MaxWeight)
		}
		if s.CAFile != "" {
			if !s.TLS {
				p.add(base+".ca_file", quote(s.CAFile), "needs tls: true")
			} else {
				checkCAFile(p, base+".ca_file", s.CAFile)
			}
		}
		if s.SNI != "" {
			if !s.TLS {
				p.add(base+".sni", quote(s.SNI), "needs tls: true")
			} else if err := addrlist.CheckHostname(s.SNI); err != nil {
				p.add(base+".sni", quote(s.SNI), "invalid host name: %v", err)
			}
		}
	}

	h := &b.Health
	switch {
	case h.Path == "":
	case !strings.HasPrefix(h.Path, "/"):
		p.add("backends.health.path", quote(h.Path), `must start with "/"`)
	case strings.ContainsFunc(h.Path, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		p.add("backends.health.path", quote(h.Path), "must not contain spaces or control characters")
	}
	if d := h.Interval.Duration; d != 0 {
		switch {
		case d < MinHealthInterval:
			p.add("backends.health.interval", fmtDuration(d), "must be at least %s", fmtDuration(MinHealthInterval))
		case d > MaxTimeout:
			p.add("backends.health.interval", fmtDuration(d), "must be at most %s (HAProxy's limit)", maxTimeoutText)
		}
	}
	for _, f := range []struct {
		key string
		v   int
	}{{"backends.health.fall", h.Fall}, {"backends.health.rise", h.Rise}} {
		if f.v < 0 || f.v > MaxFallRise {
			p.add(f.key, strconv.Itoa(f.v), "must be 1-%d", MaxFallRise)
		}
	}
}

// addressProblem checks a backend's host:port without I/O.
func addressProblem(addr string) string {
	host, _, msg := splitHostPort(addr)
	if msg != "" {
		if msg == "must be host:port" {
			msg += " (such as rgw1.example.com:7480 or [fd00::1]:7480)"
		}
		return msg
	}
	a, err := addrlist.ParseHost(host)
	switch {
	case err != nil:
		return err.Error()
	case a.IsValid() && a.IsUnspecified():
		return "host cannot be the unspecified address"
	}
	return ""
}

func (c *Config) validateInstances(p *problems) {
	in := &c.Instances
	aff := c.allowedCPUs()
	tooMany := len(in.CPUs) > MaxInstances
	if tooMany {
		p.add("instances.cpus", "", "lists %d CPUs; at most %d instances are supported", len(in.CPUs), MaxInstances)
	}
	switch {
	case in.Count < 0 || in.Count > MaxInstances:
		if !(tooMany && in.Count == len(in.CPUs)) {
			p.add("instances.count", strconv.Itoa(in.Count), "must be 1-%d", MaxInstances)
		}
	case in.Count > 0 && len(in.CPUs) > 0 && in.Count != len(in.CPUs):
		p.add("instances.count", strconv.Itoa(in.Count), "does not match the %d CPUs listed in instances.cpus", len(in.CPUs))
	case in.Count > len(aff) && len(in.CPUs) == 0:
		p.add("instances.count", strconv.Itoa(in.Count), "this process may run on only %d CPUs (%s)", len(aff), cpuRanges(aff))
	}
	seen := make(map[int]int)
	for i, cpu := range in.CPUs {
		path := fmt.Sprintf("instances.cpus[%d]", i)
		if j, dup := seen[cpu]; dup {
			p.add(path, strconv.Itoa(cpu), "duplicate of instances.cpus[%d]", j)
			continue
		}
		seen[cpu] = i
		if !slices.Contains(aff, cpu) {
			p.add(path, strconv.Itoa(cpu), "not a CPU this process may run on (allowed: %s)", cpuRanges(aff))
		}
	}
	if in.MaxConn < 0 || in.MaxConn > MaxMaxConn {
		p.add("instances.maxconn", strconv.Itoa(in.MaxConn), "must be 1-%d", MaxMaxConn)
	}
}

// cpuRanges writes a sorted CPU list the way the kernel does: "0-3,8-11".
func cpuRanges(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

func (c *Config) validateTimeouts(p *problems) {
	t := &c.Timeouts
	for _, f := range []struct {
		key string
		d   time.Duration
	}{
		{"timeouts.connect", t.Connect.Duration},
		{"timeouts.client", t.Client.Duration},
		{"timeouts.server", t.Server.Duration},
		{"timeouts.http_request", t.HTTPRequest.Duration},
		{"timeouts.http_keep_alive", t.HTTPKeepAlive.Duration},
		{"timeouts.drain", t.Drain.Duration},
		{"timeouts.max_transfer", t.MaxTransfer.Duration},
		{"timeouts.tls_handshake", t.TLSHandshake.Duration},
	} {
		switch {
		case f.key == "timeouts.drain" && f.d < 0:
			p.add(f.key, fmtDuration(f.d), "must not be negative")
		case f.key != "timeouts.drain" && f.d < 0:
			p.add(f.key, fmtDuration(f.d), "must be greater than 0")
		case f.key != "timeouts.drain" && f.d > 0 && f.d < time.Millisecond:
			p.add(f.key, fmtDuration(f.d), "must be at least 1ms (HAProxy counts in milliseconds)")
		case f.d > MaxTimeout:
			p.add(f.key, fmtDuration(f.d), "must be at most %s (HAProxy's limit)", maxTimeoutText)
		}
	}
}

func (c *Config) validateLimits(p *problems) {
	l := c.Limits
	if n := l.ConnectionsPerSource; n != nil && (*n < 0 || *n > MaxMaxConn) {
		p.add("limits.connections_per_source", strconv.Itoa(*n), "must be 0 (no cap) to %d", MaxMaxConn)
	}
	if r := l.ConnectionRatePerSource; r < 0 || r > MaxMaxConn {
		p.add("limits.connection_rate_per_source", strconv.Itoa(r), "must be 0 (no cap) to %d per second", MaxMaxConn)
	}
}

func (c *Config) validateHA(p *problems) {
	switch c.HA.Mode {
	case "", HAModeNone, HAModeBGP, HAModeVRRP:
	default:
		p.add("ha.mode", quote(c.HA.Mode), "must be none, bgp or vrrp")
	}
	c.validateBGP(p)
	c.validateVRRP(p)
}

// whitelistLists pairs each whitelist's name with its YAML key and entries.
func (c *Config) whitelistLists() []struct {
	name, key string
	entries   []string
} {
	return []struct {
		name, key string
		entries   []string
	}{
		{WhitelistFrontendHTTP, "whitelists.frontend_http", c.Whitelists.FrontendHTTP},
		{WhitelistRouters, "whitelists.routers", c.Whitelists.Routers},
		{WhitelistBackendHTTP, "whitelists.backend_http", c.Whitelists.BackendHTTP},
	}
}

func (c *Config) validateWhitelists(p *problems) {
	for _, l := range c.whitelistLists() {
		for i, e := range l.entries {
			if _, err := parseWhitelistEntry(e); err != nil {
				p.add(fmt.Sprintf("%s[%d]", l.key, i), quote(e), "%s", err)
			}
		}
	}
}

// parseWhitelistEntry parses one whitelist entry offline. Its error does
// not repeat the entry, which the FieldError shows already.
func parseWhitelistEntry(e string) ([]addrlist.Entry, error) {
	if strings.TrimSpace(e) == "" {
		return nil, errors.New("empty entry")
	}
	entries, err := addrlist.Parse(e)
	if err == nil {
		return entries, nil
	}
	if se, ok := errors.AsType[*hostlist.SyntaxError](err); ok && se.List == e {
		return nil, fmt.Errorf("offset %d: %s", se.Pos, se.Msg)
	}
	msg := err.Error()
	for _, prefix := range []string{quote(e) + ": ", quote(e) + " "} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			return nil, errors.New(rest)
		}
	}
	return nil, err
}

func (c *Config) validateAPI(p *problems) {
	l := c.API.Listen
	if l == "" {
		return
	}
	host, port, err := net.SplitHostPort(l)
	if err != nil {
		p.add("api.listen", quote(l), "must be host:port (such as 127.0.0.1:8404)")
		return
	}
	if a, err := netip.ParseAddr(host); err != nil || a.Zone() != "" {
		p.add("api.listen", quote(l), "host must be an IP address (0.0.0.0 or [::] for all addresses)")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		p.add("api.listen", quote(l), "port must be 1-65535")
	}
}

func (c *Config) validateHAProxy(p *problems) {
	b := c.HAProxy.Binary
	if b != "" && strings.TrimSpace(b) == "" {
		p.add("haproxy.binary", quote(b), "must not be blank")
	}
	c.validateHAProxyIdentity(p)
}
