package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/haproxy"
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
	c.validateVIPPools(&p)
	c.validateServices(&p)
	c.validateBackends(&p)
	c.validateInstances(&p)
	c.validateTimeouts(&p)
	c.validateLimits(&p)
	c.validateHA(&p)
	c.validateWhitelists(&p)
	c.validateAPI(&p)
	c.validateHAProxy(&p)
	c.validateSessionTickets(&p)
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
	if len(c.VIPs) == 0 && len(c.VIPPools) == 0 {
		p.add("vips", "", "at least one VIP is required (or vip_pools to take addresses from)")
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
		if k := c.vipPoolOf(v.Addr); k >= 0 {
			p.add(path, v.String(), "inside vip_pools[%d] (%q), whose addresses ober hands out; take it out of vips or out of the pool", k, c.VIPPools[k].Name)
		}
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
	names := make(map[string]int)
	for i := range c.Services {
		c.validateService(p, i, names)
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

// validatePortClashes reports each service whose port, or range of ports,
// meets one of an earlier service's on a VIP they share: the kernel could
// bind only one. Every service is TCP, so the port alone decides.
func (c *Config) validatePortClashes(p *problems) {
	for i := range c.Services {
		from, to := c.ServicePorts(i)
		if !usablePorts(from, to) {
			continue
		}
		mine := c.ServiceVIPs(i)
		for j := range i {
			jf, jt := c.ServicePorts(j)
			if !usablePorts(jf, jt) || jf > to || from > jt {
				continue
			}
			theirs := c.ServiceVIPs(j)
			k := slices.IndexFunc(mine, func(a netip.Addr) bool { return slices.Contains(theirs, a) })
			if k < 0 {
				continue
			}
			theirsText := fmt.Sprintf("services[%d] (%q)", j, c.serviceName(j))
			switch {
			case from == to && jf == jt:
				p.add(fmt.Sprintf("services[%d].port", i), strconv.Itoa(int(from)),
					"already used by %s on VIP %s", theirsText, mine[k])
			case from == to:
				p.add(fmt.Sprintf("services[%d].port", i), strconv.Itoa(int(from)),
					"already used by %s, ports %d-%d, on VIP %s", theirsText, jf, jt, mine[k])
			case jf == jt:
				p.add(fmt.Sprintf("services[%d].ports", i), fmt.Sprintf("%d-%d", from, to),
					"overlaps port %d of %s on VIP %s", jf, theirsText, mine[k])
			default:
				p.add(fmt.Sprintf("services[%d].ports", i), fmt.Sprintf("%d-%d", from, to),
					"overlaps ports %d-%d of %s on VIP %s", jf, jt, theirsText, mine[k])
			}
			break
		}
	}
}

// usablePorts reports whether a service's ports are worth comparing with
// others': a range that is wrong is reported once, for itself.
func usablePorts(from, to uint16) bool {
	return from > 0 && from <= to && int(to)-int(from) < MaxPortRange
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

// needsSharedPool reports whether the top-level backends.servers are
// required: by a tls or http service without backends of its own, or, in
// a file without services, as they always were.
func (c *Config) needsSharedPool() bool {
	if len(c.Services) == 0 {
		return true
	}
	for i := range c.Services {
		if c.usesSharedPool(i) {
			return true
		}
	}
	return false
}

func (c *Config) validateBackends(p *problems) {
	b := &c.Backends
	if b.Balance != "" {
		if _, _, msg := canonicalBalance(b.Balance, true); msg != "" {
			p.add("backends.balance", quote(b.Balance), "%s", msg)
		}
	}
	if len(b.Servers) == 0 && c.needsSharedPool() && !discovers(b.Discovery) {
		p.add("backends.servers", "", "at least one server is required (or a discovery that finds them)")
	}
	validatePoolDiscovery(p, "backends", b.Discovery, len(b.Servers))
	validateConsul(p, &c.Consul)
	c.validateServers(p, "backends.servers", b.Servers, poolUse{l7: true})

	h := &b.Health
	if h.Path != "" {
		if msg := healthPathProblem(h.Path); msg != "" {
			p.add("backends.health.path", quote(h.Path), "%s", msg)
		}
	}
	if d := h.Interval.Duration; d != 0 {
		if msg := healthIntervalProblem(d); msg != "" {
			p.add("backends.health.interval", fmtDuration(d), "%s", msg)
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

// healthPathProblem says what is wrong with an HTTP check's path, or "".
func healthPathProblem(path string) string {
	switch {
	case !strings.HasPrefix(path, "/"):
		return `must start with "/"`
	case strings.ContainsFunc(path, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return "must not contain spaces or control characters"
	}
	return ""
}

// healthIntervalProblem says what is wrong with a check interval that is
// set, or "".
func healthIntervalProblem(d time.Duration) string {
	switch {
	case d < MinHealthInterval:
		return "must be at least " + fmtDuration(MinHealthInterval)
	case d > MaxTimeout:
		return "must be at most " + maxTimeoutText + " (HAProxy's limit)"
	}
	return ""
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
	a := &c.API
	if a.Listen != "" {
		checkListenAddr(p, "api.listen", a.Listen, "127.0.0.1:8404")
	}
	c.validateAPISocket(p)
	c.validateAPIManage(p)
	if g := a.GORBCompat; g != "" {
		if ap, ok := checkListenAddr(p, "api.gorb_compat", g, "127.0.0.1:4672"); ok && !ap.Addr().IsLoopback() {
			p.add("api.gorb_compat", quote(g), "must be a loopback address (127.0.0.1 or [::1]): GORB's clients send no credentials, so only root on this node is let in")
		}
	}
	// The TCP listeners must not fight over a port.
	type listener struct{ path, value string }
	var ls []listener
	for _, l := range []listener{{"api.listen", a.Listen}, {"api.manage.listen", a.Manage.Listen}, {"api.gorb_compat", a.GORBCompat}} {
		if l.value != "" {
			ls = append(ls, l)
		}
	}
	for i, l := range ls {
		for _, o := range ls[:i] {
			if listenersClash(l.value, o.value) {
				p.add(l.path, quote(l.value), "same port as %s (%s)", o.path, quote(o.value))
			}
		}
	}
}

// checkListenAddr checks that s is ip:port and returns it parsed.
func checkListenAddr(p *problems, path, s, example string) (netip.AddrPort, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		p.add(path, quote(s), "must be host:port (such as %s)", example)
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddr(host)
	ok := true
	if err != nil || a.Zone() != "" {
		p.add(path, quote(s), "host must be an IP address (0.0.0.0 or [::] for all addresses)")
		ok = false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		p.add(path, quote(s), "port must be 1-65535")
		ok = false
	}
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(n)), true
}

// listenersClash reports whether two valid ip:port listeners would take
// the same port: the same port on the same address, or on any address.
func listenersClash(a, b string) bool {
	x, err1 := netip.ParseAddrPort(a)
	y, err2 := netip.ParseAddrPort(b)
	if err1 != nil || err2 != nil || x.Port() != y.Port() {
		return false
	}
	xa, ya := x.Addr().Unmap(), y.Addr().Unmap()
	return xa == ya || xa.IsUnspecified() || ya.IsUnspecified()
}

// maxSocketPath is the longest path a unix socket can be bound to
// (sun_path holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

func (c *Config) validateAPISocket(p *problems) {
	s := c.API.Socket
	if s == "" || s == APISocketOff {
		return
	}
	switch {
	case !filepath.IsAbs(s):
		p.add("api.socket", quote(s), "must be an absolute path, or off")
	case strings.HasSuffix(s, "/"):
		p.add("api.socket", quote(s), "must name a file, not a directory")
	case len(s) > maxSocketPath:
		p.add("api.socket", quote(s), "longer than %d bytes, the limit of a unix socket's path", maxSocketPath)
	}
}

func (c *Config) validateAPIManage(p *problems) {
	m := &c.API.Manage
	if m.Listen == "" {
		for _, f := range []struct{ path, value string }{
			{"api.manage.tls.cert", m.TLS.Cert},
			{"api.manage.tls.key", m.TLS.Key},
			{"api.manage.tls.client_ca", m.TLS.ClientCA},
			{"api.manage.tokens_file", m.TokensFile},
		} {
			if f.value != "" {
				p.add(f.path, quote(f.value), "has no effect without api.manage.listen (the TCP listener is off)")
			}
		}
		return
	}
	checkListenAddr(p, "api.manage.listen", m.Listen, "0.0.0.0:8443")
	if m.TLS.Cert == "" {
		p.add("api.manage.tls.cert", "", "required when api.manage.listen is set: the TCP listener speaks HTTPS only")
	} else {
		checkCertAndKey(p, "api.manage.tls", &TLS{Cert: m.TLS.Cert, Key: m.TLS.Key}, c.now)
	}
	if m.TLS.ClientCA != "" {
		checkCAFile(p, "api.manage.tls.client_ca", m.TLS.ClientCA)
	}
	if m.TokensFile == "" && m.TLS.ClientCA == "" {
		p.add("api.manage.listen", quote(m.Listen), "needs api.manage.tokens_file or api.manage.tls.client_ca: every request over TCP must authenticate")
	}
	if m.TokensFile != "" {
		checkTokensFile(p, "api.manage.tokens_file", m.TokensFile)
	}
}

// checkTokensFile checks that the tokens file can be read and that nobody
// but its owner can: it holds secrets. Its lines are parsed by the
// daemon's access layer, which refuses the same modes.
func checkTokensFile(p *problems, path, file string) {
	v := quote(file)
	if !filepath.IsAbs(file) {
		p.add(path, v, "must be an absolute path")
		return
	}
	st, err := os.Stat(file)
	if err != nil {
		p.add(path, v, "%s", fileProblem(err))
		return
	}
	switch {
	case st.IsDir():
		p.add(path, v, "is a directory")
		return
	case !st.Mode().IsRegular():
		p.add(path, v, "not a regular file")
		return
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		p.add(path, v, "mode %04o lets group or others read or change the tokens: chmod 600 it", perm)
		return
	}
	if _, err := readSmallFile(file); err != nil {
		p.add(path, v, "%s", fileProblem(err))
	}
}

func (c *Config) validateHAProxy(p *problems) {
	b := c.HAProxy.Binary
	if b != "" && strings.TrimSpace(b) == "" {
		p.add("haproxy.binary", quote(b), "must not be blank")
	}
	c.validateHAProxyIdentity(p)
	for _, f := range c.HAProxy.Tune.Renderer().Fields() {
		if msg := f.Problem(*f.Value); msg != "" {
			p.add("haproxy.tune."+f.Key, strconv.Itoa(*f.Value), "%s", msg)
		}
	}
}

// TuneOf is the haproxy.tune that renders t.
func TuneOf(t haproxy.Tune) HAProxyTune {
	return HAProxyTune{BufSize: t.BufSize, SSLMaxRecord: t.SSLMaxRecord,
		ClientSndBuf: t.ClientSndBuf, ClientRcvBuf: t.ClientRcvBuf, ServerSndBuf: t.ServerSndBuf, ServerRcvBuf: t.ServerRcvBuf}
}

// Renderer is t as the renderer takes it.
func (t HAProxyTune) Renderer() *haproxy.Tune {
	return &haproxy.Tune{BufSize: t.BufSize, SSLMaxRecord: t.SSLMaxRecord,
		ClientSndBuf: t.ClientSndBuf, ClientRcvBuf: t.ClientRcvBuf, ServerSndBuf: t.ServerSndBuf, ServerRcvBuf: t.ServerRcvBuf}
}
