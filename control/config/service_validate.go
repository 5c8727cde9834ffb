package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/addrlist"
)

// validateService checks services[i]; names collects the service names
// seen so far.
func (c *Config) validateService(p *problems, i int, names map[string]int) {
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
	c.validateServiceMode(p, i)
	c.validateServicePorts(p, i)
	c.validateServiceVIPs(p, i)

	if s.Balance != "" {
		if _, _, msg := canonicalBalance(s.Balance, false); msg != "" {
			p.add(base+".balance", quote(s.Balance), "%s", msg)
		}
	}
	c.validateServicePools(p, i)
	c.validateHealth(p, i)
	if d := s.Slowstart; d != nil {
		switch {
		case d.Duration < 0:
			p.add(base+".slowstart", fmtDuration(d.Duration), "must not be negative (0s turns it off)")
		case d.Duration > MaxTimeout:
			p.add(base+".slowstart", fmtDuration(d.Duration), "must be at most %s", maxTimeoutText)
		}
	}
	switch s.Fallback {
	case "", FallbackServe503, FallbackKeepLast, FallbackReject:
	default:
		p.add(base+".fallback", quote(s.Fallback), "must be serve_503, keep_last or reject")
	}
	if s.ProxyProtocol != "" {
		switch {
		case IsKernelMode(s.Mode): // validateKernelKeys says why
		case s.Mode != ModeTCP:
			p.add(base+".proxy_protocol", quote(s.ProxyProtocol), "only for mode tcp (a tls or http service sets proxy_protocol: true on its backends)")
		case s.ProxyProtocol != "v1" && s.ProxyProtocol != "v2":
			p.add(base+".proxy_protocol", quote(s.ProxyProtocol), "must be v1 or v2")
		}
	}
	c.validatePassthrough(p, i)
	if n := s.MaxConnections; n < 0 || n > MaxMaxConn {
		p.add(base+".max_connections", strconv.Itoa(n), "must be 0 (instances.maxconn) to %d", MaxMaxConn)
	}
	for _, f := range []struct {
		key string
		d   time.Duration
	}{
		{"connect", s.Timeouts.Connect.Duration},
		{"client_idle", s.Timeouts.ClientIdle.Duration},
		{"backend_idle", s.Timeouts.BackendIdle.Duration},
	} {
		if msg := optionalTimeoutProblem(f.d); msg != "" {
			p.add(base+".timeouts."+f.key, fmtDuration(f.d), "%s", msg)
		}
	}
	if s.Access != nil {
		validateAccess(p, base+".access", s.Access)
	}
}

// optionalTimeoutProblem says what is wrong with a timeout whose zero
// means "the default", or "".
func optionalTimeoutProblem(d time.Duration) string {
	switch {
	case d < 0:
		return "must not be negative"
	case d > 0 && d < time.Millisecond:
		return "must be at least 1ms (HAProxy counts in milliseconds)"
	case d > MaxTimeout:
		return "must be at most " + maxTimeoutText + " (HAProxy's limit)"
	}
	return ""
}

func (c *Config) validateServiceMode(p *problems, i int) {
	s := &c.Services[i]
	base := fmt.Sprintf("services[%d]", i)
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
	case ModeTCP:
		if s.TLS != nil {
			p.add(base+".tls", "", "not allowed for mode tcp (ober passes its bytes through); use mode tls to terminate TLS, or tls_passthrough to route by SNI")
		}
		if s.Whitelist != "" {
			p.add(base+".whitelist", quote(s.Whitelist), "only for mode http (a tcp service admits clients by access)")
		}
	case ModeUDP, ModeNAT:
		if s.TLS != nil {
			p.add(base+".tls", "", "not allowed for mode %s (the kernel forwards its packets as they are)", s.Mode)
		}
		if s.Whitelist != "" {
			p.add(base+".whitelist", quote(s.Whitelist), "only for mode http (a %s service admits clients by access)", s.Mode)
		}
	case "":
		p.add(base+".mode", "", "required: tls, http, tcp, udp or nat")
	default:
		p.add(base+".mode", quote(s.Mode), "must be tls, http, tcp, udp or nat")
	}
	c.validateKernelKeys(p, i)
	validatePoolDiscovery(p, base, s.Discovery, len(s.Backends))
	for j := range s.Pools {
		validatePoolDiscovery(p, fmt.Sprintf("%s.pools[%d]", base, j), s.Pools[j].Discovery, len(s.Pools[j].Backends))
	}
}

func (c *Config) validateServicePorts(p *problems, i int) {
	s := &c.Services[i]
	base := fmt.Sprintf("services[%d]", i)
	r := s.Ports
	text := fmt.Sprintf("%d-%d", r.From, r.To)
	switch {
	case s.Port != 0 && !r.IsZero():
		p.add(base+".ports", text, "give port or ports, not both")
	case s.Port == 0 && r.IsZero() && (s.Mode == ModeTCP || IsKernelMode(s.Mode)):
		p.add(base+".port", "", "required (1-65535), or ports for a range")
	case s.Port == 0 && r.IsZero():
		p.add(base+".port", "", "required (1-65535)")
	case r.IsZero():
	case s.Mode != ModeTCP && !IsKernelMode(s.Mode):
		p.add(base+".ports", text, "only for modes tcp, udp and nat")
	case r.From == 0:
		p.add(base+".ports", text, "ports must be 1-65535")
	case r.From > r.To:
		p.add(base+".ports", text, "the first port is above the last")
	case int(r.To)-int(r.From)+1 > MaxPortRange:
		p.add(base+".ports", text, "%d ports; at most %d, since each port of each VIP is a row of the dataplane's services table",
			int(r.To)-int(r.From)+1, MaxPortRange)
	}
}

func (c *Config) validateServiceVIPs(p *problems, i int) {
	s := &c.Services[i]
	base := fmt.Sprintf("services[%d]", i)
	pool := -1
	if s.VIPPool != "" {
		if pool = c.vipPoolIndex(s.VIPPool); pool < 0 {
			p.add(base+".vip_pool", quote(s.VIPPool), "no vip_pools entry has this name%s", c.vipPoolHint(s.VIPPool))
		}
	}
	top := make(map[netip.Addr]bool, len(c.VIPs))
	for _, v := range c.VIPs {
		top[v.Addr] = true
	}
	seen := make(map[netip.Addr]int)
	for j, v := range s.VIPs {
		path := fmt.Sprintf("%s.vips[%d]", base, j)
		k, dup := seen[v.Addr]
		switch {
		case !v.IsValid():
			p.add(path, "", "an address is required")
		case dup:
			p.add(path, v.String(), "duplicate of %s.vips[%d]", base, k)
		case s.VIPPool != "":
			seen[v.Addr] = j
			if pool >= 0 && !c.VIPPools[pool].Contains(v.Addr) {
				p.add(path, v.String(), "not in vip_pool %q (%s)", s.VIPPool, strings.Join(c.VIPPools[pool].Addresses, ", "))
			}
		case !top[v.Addr]:
			seen[v.Addr] = j
			if k := c.vipPoolOf(v.Addr); k >= 0 {
				p.add(path, v.String(), "not one of the top-level vips; it is in vip_pools[%d], so set vip_pool: %s", k, c.VIPPools[k].Name)
			} else {
				p.add(path, v.String(), "not one of the top-level vips%s", c.vipsHint())
			}
		default:
			seen[v.Addr] = j
		}
	}
	if len(s.VIPs) == 0 && s.VIPPool == "" && len(c.VIPs) == 0 && len(c.VIPPools) > 0 && c.ServiceVIPPool(i) == "" {
		p.add(base+".vips", "", "required: there are no top-level vips and no vip_pools entry has auto_assign; give vips or vip_pool")
	}
}

// vipsHint lists, for an address that is in none of them, the top-level
// vips and the vip_pools, so that the message says where it could be.
func (c *Config) vipsHint() string {
	const most = 8
	var vips []string
	for _, v := range c.VIPs {
		if len(vips) == most {
			vips = append(vips, fmt.Sprintf("and %d more", len(c.VIPs)-most))
			break
		}
		vips = append(vips, v.Addr.String())
	}
	var pools []string
	for _, vp := range c.VIPPools {
		pools = append(pools, vp.Name+": "+strings.Join(vp.Addresses, ", "))
	}
	out := " (there are none)"
	if len(vips) > 0 {
		out = " (" + strings.Join(vips, ", ") + ")"
	}
	if len(pools) > 0 {
		out += ", nor in a vip_pools entry (" + strings.Join(pools, "; ") + ")"
	}
	return out
}

// vipPoolHint suggests a pool for a name that is none.
func (c *Config) vipPoolHint(name string) string {
	var names []string
	for _, p := range c.VIPPools {
		names = append(names, p.Name)
	}
	if s := closest(name, names); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	if len(names) == 0 {
		return " (there are no vip_pools)"
	}
	return " (vip_pools: " + strings.Join(names, ", ") + ")"
}

// poolUse is what a pool's servers may be, by the service they serve.
type poolUse struct {
	// l7: a tls or http service, whose backends may have TLS, an SNI and
	// a PROXY header.
	l7 bool
	// portRange: a service with a port range, whose backends may leave
	// the port out.
	portRange bool
}

// validateServers checks the servers of one pool, written at path.
func (c *Config) validateServers(p *problems, path string, servers []BackendServer, use poolUse) {
	names := make(map[string]int)
	for i := range servers {
		s := &servers[i]
		base := fmt.Sprintf("%s[%d]", path, i)
		name := s.Name
		if name == "" {
			name = defaultServerName(i)
		}
		if !ValidName(name) {
			p.add(base+".name", quote(name), nameRule)
		} else if j, dup := names[name]; dup {
			p.add(base+".name", quote(name), "already used by %s[%d]", path, j)
		} else {
			names[name] = i
		}

		switch {
		case s.Address == "" && use.portRange:
			p.add(base+".address", "", "required: host:port, or a host alone")
		case s.Address == "":
			p.add(base+".address", "", "required: host:port")
		default:
			if _, _, msg := splitBackendAddr(s.Address, use.portRange); msg != "" {
				p.add(base+".address", quote(s.Address), "%s", msg)
			}
		}
		if s.Weight != nil && (*s.Weight < 0 || *s.Weight > MaxWeight) {
			p.add(base+".weight", strconv.Itoa(*s.Weight), "must be 0-%d", MaxWeight)
		}
		if s.Priority < 0 || s.Priority > MaxPriority {
			p.add(base+".priority", strconv.Itoa(s.Priority), "must be 1-%d", MaxPriority)
		}
		switch s.State {
		case "", StateEnabled, StateDrain, StateDisabled:
		default:
			p.add(base+".state", quote(s.State), "must be enabled, drain or disabled")
		}
		if !use.l7 {
			const why = "only for tls and http services (a tcp service passes the bytes as they come)"
			if s.TLS {
				p.add(base+".tls", "true", why)
			}
			if s.CAFile != "" {
				p.add(base+".ca_file", quote(s.CAFile), why)
			}
			if s.SNI != "" {
				p.add(base+".sni", quote(s.SNI), why)
			}
			if s.ProxyProtocol {
				p.add(base+".proxy_protocol", "true", "a tcp service sends a PROXY header by its own proxy_protocol (v1 or v2)")
			}
			continue
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
}

// splitBackendAddr splits a backend's address without I/O. With hostOnly,
// a host without a port is accepted and port is 0 (a service with a port
// range connects to the port the client connected to). msg is empty when
// the address is usable and names the problem otherwise.
func splitBackendAddr(addr string, hostOnly bool) (host string, port uint16, msg string) {
	if hostOnly {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			host = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
			if msg := hostProblem(host); msg != "" {
				return "", 0, msg
			}
			return host, 0, ""
		}
	}
	if msg := addressProblem(addr); msg != "" {
		return "", 0, msg
	}
	host, port, _ = splitHostPort(addr)
	return host, port, ""
}

// hostProblem checks a backend's host, an address or a name, without I/O.
func hostProblem(host string) string {
	if host == "" {
		return "host is missing"
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

func (c *Config) validateServicePools(p *problems, i int) {
	s := &c.Services[i]
	base := fmt.Sprintf("services[%d]", i)
	use := poolUse{l7: isL7(s.Mode), portRange: !s.Ports.IsZero()}
	c.validateServers(p, base+".backends", s.Backends, use)
	if len(s.Pools) > 0 && (s.Mode != ModeTCP || s.TLSPassthrough == nil) {
		p.add(base+".pools", "", "only for tls_passthrough's routes (mode tcp)")
	}
	names := make(map[string]int)
	for j := range s.Pools {
		pool := &s.Pools[j]
		pb := fmt.Sprintf("%s.pools[%d]", base, j)
		k, dup := names[pool.Name]
		switch {
		case pool.Name == "":
			p.add(pb+".name", "", "required")
		case pool.Name == DefaultPool:
			p.add(pb+".name", quote(pool.Name), "reserved for the service's own backends")
		case !ValidName(pool.Name):
			p.add(pb+".name", quote(pool.Name), nameRule)
		case dup:
			p.add(pb+".name", quote(pool.Name), "already used by %s.pools[%d]", base, k)
		default:
			names[pool.Name] = j
		}
		if len(pool.Backends) == 0 {
			p.add(pb+".backends", "", "at least one backend is required")
		}
		c.validateServers(p, pb+".backends", pool.Backends, use)
	}
}

// poolNames lists the pools tls_passthrough may name for services[i].
func (c *Config) poolNames(i int) []string {
	s := &c.Services[i]
	var names []string
	if len(s.Backends) > 0 {
		names = append(names, DefaultPool)
	}
	for _, p := range s.Pools {
		if p.Name != "" {
			names = append(names, p.Name)
		}
	}
	return names
}

func (c *Config) validatePassthrough(p *problems, i int) {
	s := &c.Services[i]
	t := s.TLSPassthrough
	if t == nil {
		return
	}
	base := fmt.Sprintf("services[%d].tls_passthrough", i)
	if s.Mode != ModeTCP {
		p.add(base, "", "only for mode tcp")
		return
	}
	pools := c.poolNames(i)
	poolProblem := func(name string) string {
		if slices.Contains(pools, name) {
			return ""
		}
		if len(pools) == 0 {
			return "the service has no pools (give it backends or pools)"
		}
		msg := fmt.Sprintf("no such pool in services[%d] (pools: %s)", i, strings.Join(pools, ", "))
		if h := closest(name, pools); h != "" {
			msg += fmt.Sprintf("; did you mean %q?", h)
		}
		return msg
	}
	routed := make(map[string]int) // lower-case name -> route
	for j, r := range t.Routes {
		rb := fmt.Sprintf("%s.routes[%d]", base, j)
		switch {
		case len(r.Names) == 0 && r.Regexp == "":
			p.add(rb, "", "needs names or regexp")
		case len(r.Names) > 0 && r.Regexp != "":
			p.add(rb+".regexp", quote(r.Regexp), "give names or regexp, not both")
		}
		for k, n := range r.Names {
			path := fmt.Sprintf("%s.names[%d]", rb, k)
			if strings.HasPrefix(n, "*.") {
				p.add(path, quote(n), `not a name; for every name under a domain use regexp, such as ^[^.]+\.%s$`,
					regexp.QuoteMeta(strings.TrimPrefix(n, "*.")))
				continue
			}
			if err := addrlist.CheckHostname(n); err != nil {
				p.add(path, quote(n), "invalid host name: %v", err)
				continue
			}
			key := strings.ToLower(strings.TrimSuffix(n, "."))
			if first, dup := routed[key]; dup {
				p.add(path, quote(n), "already routed by %s.routes[%d]", base, first)
				continue
			}
			routed[key] = j
		}
		if r.Regexp != "" {
			if _, err := regexp.Compile(r.Regexp); err != nil {
				p.add(rb+".regexp", quote(r.Regexp), "does not compile: %v", err)
			}
		}
		if r.Pool == "" {
			p.add(rb+".pool", "", "required: the pool the route sends to")
		} else if msg := poolProblem(r.Pool); msg != "" {
			p.add(rb+".pool", quote(r.Pool), "%s", msg)
		}
	}
	rejects := t.Default == "" || t.Default == PassthroughReject
	if !rejects && !slices.Contains(pools, t.Default) {
		msg := "must be reject or one of the service's pools"
		if len(pools) > 0 {
			msg += " (" + strings.Join(pools, ", ") + ")"
		}
		if h := closest(t.Default, slices.Concat(pools, []string{PassthroughReject})); h != "" {
			msg += fmt.Sprintf("; did you mean %q?", h)
		}
		p.add(base+".default", quote(t.Default), "%s", msg)
	}
	if len(t.Routes) == 0 && rejects {
		p.add(base+".routes", "", "at least one route is required, unless default names a pool")
	}
	if d := t.ReadTimeout.Duration; d != 0 {
		if msg := optionalTimeoutProblem(d); msg != "" {
			p.add(base+".read_timeout", fmtDuration(d), "%s", msg)
		}
	}
}

// healthKey is one key of a health check, and the kinds it belongs to.
type healthKey struct {
	name  string
	value string // as FieldError shows it
	set   bool
	kinds []string
}

var (
	checkKinds    = []string{CheckTCP, CheckHTTP, CheckHTTPS, CheckProbe, CheckExec, CheckNone}
	checkingKinds = []string{CheckTCP, CheckHTTP, CheckHTTPS, CheckProbe, CheckExec}
	httpKinds     = []string{CheckHTTP, CheckHTTPS}
)

func (c *Config) validateHealth(p *problems, i int) {
	s := &c.Services[i]
	h := s.Health
	if h == nil {
		h = &ServiceHealth{} // what ApplyDefaults starts from
	}
	base := fmt.Sprintf("services[%d].health", i)
	def := c.healthDefaults(i)
	kind := h.Kind
	if kind == "" {
		kind = def.Kind
	}
	if !slices.Contains(checkKinds, kind) {
		p.add(base+".kind", quote(h.Kind), "must be tcp, http, https, probe, exec or none")
		return
	}
	keys := []healthKey{
		{"interval", fmtDuration(h.Interval.Duration), h.Interval.Duration != 0, checkingKinds},
		{"timeout", fmtDuration(h.Timeout.Duration), h.Timeout.Duration != 0, checkingKinds},
		{"fall", strconv.Itoa(h.Fall), h.Fall != 0, checkingKinds},
		{"rise", strconv.Itoa(h.Rise), h.Rise != 0, checkingKinds},
		{"port", strconv.Itoa(int(h.Port)), h.Port != 0, checkingKinds},
		{"initial_state", quote(h.InitialState), h.InitialState != "", checkingKinds},
		{"method", quote(h.Method), h.Method != "", httpKinds},
		{"path", quote(h.Path), h.Path != "", httpKinds},
		{"host", quote(h.Host), h.Host != "", httpKinds},
		{"status", quote(h.Status), h.Status != "", httpKinds},
		{"tls_verify", "true", h.TLSVerify, []string{CheckHTTPS}},
		{"ca_file", quote(h.CAFile), h.CAFile != "", []string{CheckHTTPS}},
		{"send", quote(h.Send), h.Send != "", []string{CheckProbe}},
		{"expect", quote(h.Expect), h.Expect != "", []string{CheckProbe}},
		{"expect_regexp", quote(h.ExpectRegexp), h.ExpectRegexp != "", []string{CheckProbe}},
		{"protocol", quote(h.Protocol), h.Protocol != "", []string{CheckProbe}},
		{"command", "", len(h.Command) > 0, []string{CheckExec}},
	}
	ok := make(map[string]bool, len(keys))
	for _, k := range keys {
		switch {
		case !k.set:
		case slices.Contains(k.kinds, kind):
			ok[k.name] = true
		case kind == CheckNone:
			p.add(base+"."+k.name, k.value, "not for kind none, which runs no check")
		default:
			p.add(base+"."+k.name, k.value, "only for kind %s (this check is %s)", strings.Join(k.kinds, " or "), kind)
		}
	}
	if kind == CheckNone {
		return
	}

	interval := h.Interval.Duration
	if interval == 0 {
		interval = def.Interval.Duration
	}
	if ok["interval"] {
		if msg := healthIntervalProblem(interval); msg != "" {
			p.add(base+".interval", fmtDuration(interval), "%s", msg)
		}
	}
	if ok["timeout"] {
		switch d := h.Timeout.Duration; {
		case d < time.Millisecond:
			p.add(base+".timeout", fmtDuration(d), "must be at least 1ms")
		case d > interval && healthIntervalProblem(interval) == "":
			p.add(base+".timeout", fmtDuration(d), "must not be longer than the interval (%s)", fmtDuration(interval))
		}
	}
	for _, f := range []struct {
		key string
		v   int
	}{{"fall", h.Fall}, {"rise", h.Rise}} {
		if ok[f.key] && (f.v < 1 || f.v > MaxFallRise) {
			p.add(base+"."+f.key, strconv.Itoa(f.v), "must be 1-%d", MaxFallRise)
		}
	}
	if ok["initial_state"] && h.InitialState != HealthUp && h.InitialState != HealthDown {
		p.add(base+".initial_state", quote(h.InitialState), "must be up or down")
	}
	if ok["method"] && !isHTTPMethod(h.Method) {
		p.add(base+".method", quote(h.Method), "must be an HTTP method in capitals, such as GET or HEAD")
	}
	if ok["path"] {
		if msg := healthPathProblem(h.Path); msg != "" {
			p.add(base+".path", quote(h.Path), "%s", msg)
		}
	}
	if ok["host"] {
		if _, err := addrlist.ParseHost(h.Host); err != nil {
			p.add(base+".host", quote(h.Host), "%v", err)
		}
	}
	if ok["status"] {
		if _, _, err := ParseStatusRange(h.Status); err != nil {
			p.add(base+".status", quote(h.Status), "%v", err)
		}
	}
	if ok["ca_file"] {
		if !h.TLSVerify {
			p.add(base+".ca_file", quote(h.CAFile), "needs tls_verify: true")
		} else {
			checkCAFile(p, base+".ca_file", h.CAFile)
		}
	}
	if kind == CheckProbe {
		switch {
		case h.Expect == "" && h.ExpectRegexp == "":
			p.add(base, "", "kind probe needs expect (a prefix of the answer) or expect_regexp")
		case h.Expect != "" && h.ExpectRegexp != "":
			p.add(base+".expect_regexp", quote(h.ExpectRegexp), "give expect or expect_regexp, not both")
		case h.ExpectRegexp != "":
			if _, err := regexp.Compile(h.ExpectRegexp); err != nil {
				p.add(base+".expect_regexp", quote(h.ExpectRegexp), "does not compile: %v", err)
			}
		}
	}
	if kind == CheckExec {
		if len(h.Command) == 0 {
			p.add(base+".command", "", "required for kind exec: the program and its arguments")
		} else if msg := executableProblem(h.Command[0]); msg != "" {
			p.add(base+".command[0]", quote(h.Command[0]), "%s", msg)
		}
	}
	if kind != CheckExec && h.Port == 0 {
		if path := c.backendWithoutPort(i); path != "" {
			p.add(base+".port", "", "required: %s has no port, so the check has none to use", path)
		}
	}
}

// backendWithoutPort returns the path of the first backend of services[i]
// that has no port, or "".
func (c *Config) backendWithoutPort(i int) string {
	if c.Services[i].Ports.IsZero() {
		return ""
	}
	for _, ps := range c.ServicePools(i) {
		for j, s := range ps.Servers {
			if _, port, msg := splitBackendAddr(s.Address, true); msg == "" && port == 0 {
				return fmt.Sprintf("%s[%d]", ps.Path, j)
			}
		}
	}
	return ""
}

func isHTTPMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// ParseStatusRange reads a health check's status: "200" or "200-399",
// within 100-599.
func ParseStatusRange(s string) (from, to int, err error) {
	a, z, isRange := strings.Cut(s, "-")
	from, err1 := strconv.Atoi(a)
	to, err2 := from, error(nil)
	if isRange {
		to, err2 = strconv.Atoi(z)
	}
	if err1 != nil || err2 != nil || from < 100 || to > 599 || from > to {
		return 0, 0, fmt.Errorf("must be a status (200) or a range (200-399) within 100-599")
	}
	return from, to, nil
}

// executableProblem says why path is not a program ober can run, or "".
func executableProblem(path string) string {
	if !filepath.IsAbs(path) {
		return "must be an absolute path"
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return fileProblem(err)
	case !st.Mode().IsRegular():
		return "not a regular file"
	case st.Mode().Perm()&0o111 == 0:
		return "not executable"
	}
	return ""
}

// AccessRule is one rule of an access list, parsed: it admits (Allow) or
// refuses the clients in Prefix, or in the whitelist named Whitelist.
type AccessRule struct {
	Allow     bool
	Prefix    netip.Prefix // valid for an address or a CIDR
	Whitelist string       // a whitelist's name, such as frontend-http
}

// ParseAccessRule reads "allow X" or "deny X", X an address, a CIDR or a
// whitelist's name. The error does not repeat the rule.
func ParseAccessRule(rule string) (AccessRule, error) {
	const form = `must be "allow X" or "deny X", X an address, a CIDR or a whitelist (frontend-http, backend-http, routers)`
	f := strings.Fields(rule)
	if len(f) != 2 || (f[0] != AccessAllow && f[0] != AccessDeny) {
		return AccessRule{}, fmt.Errorf("%s", form)
	}
	r := AccessRule{Allow: f[0] == AccessAllow}
	x := f[1]
	if strings.ContainsRune(x, '%') {
		return AccessRule{}, fmt.Errorf("%q: a zone is not allowed (packets carry no zone)", x)
	}
	if strings.Contains(x, "/") {
		pfx, err := netip.ParsePrefix(x)
		if err != nil {
			return AccessRule{}, fmt.Errorf("invalid CIDR: %w", err)
		}
		if m := pfx.Masked(); m != pfx {
			return AccessRule{}, fmt.Errorf("%q has host bits set (did you mean %s?)", x, m)
		}
		if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		r.Prefix = pfx
		return r, nil
	}
	if a, err := netip.ParseAddr(x); err == nil {
		a = a.Unmap()
		r.Prefix = netip.PrefixFrom(a, a.BitLen())
		return r, nil
	}
	lists := []string{WhitelistFrontendHTTP, WhitelistBackendHTTP, WhitelistRouters}
	if slices.Contains(lists, x) {
		r.Whitelist = x
		return r, nil
	}
	if s := closest(x, lists); s != "" {
		return AccessRule{}, fmt.Errorf("%q is not an address, a CIDR or a whitelist; did you mean %q?", x, s)
	}
	return AccessRule{}, fmt.Errorf("%q is not an address, a CIDR or a whitelist (frontend-http, backend-http, routers)", x)
}

func validateAccess(p *problems, base string, a *Access) {
	switch a.Default {
	case "", AccessAllow, AccessDeny:
	default:
		p.add(base+".default", quote(a.Default), "must be allow or deny")
	}
	if n := len(a.Rules); n > MaxAccessRules {
		p.add(base+".rules", "", "%d rules; at most %d (the dataplane's limit for one service)", n, MaxAccessRules)
	}
	for j, r := range a.Rules {
		if _, err := ParseAccessRule(r); err != nil {
			p.add(fmt.Sprintf("%s.rules[%d]", base, j), quote(r), "%v", err)
		}
	}
}
