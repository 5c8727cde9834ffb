package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The kinds of discovery (issue 19): where a pool's backends come from.
const (
	DiscoveryStatic = "static"
	DiscoverySRV    = "srv"
	DiscoveryDNS    = "dns"
	DiscoveryFile   = "file"
	DiscoveryHTTP   = "http"
	DiscoveryExec   = "exec"
	DiscoveryConsul = "consul"
)

// What a source's failure does to the pool.
const (
	// FailKeepLast keeps the backends of the last successful fetch.
	FailKeepLast = "keeplast"
	// FailSetEmpty empties the pool: the service answers per its
	// fallback.
	FailSetEmpty = "setempty"
)

// Discovery defaults and bounds.
const (
	DefaultDiscoveryInterval = 10 * time.Second
	DefaultDiscoveryTimeout  = 5 * time.Second
	MinDiscoveryInterval     = time.Second
	MaxDiscoveryOverrides    = 4096
)

var discoveryKinds = []string{DiscoveryStatic, DiscoverySRV, DiscoveryDNS, DiscoveryFile, DiscoveryHTTP, DiscoveryExec, DiscoveryConsul}

// Discovery finds a pool's backends instead of (kind static: besides)
// the backends the file lists.
type Discovery struct {
	// Kind is static (the file's list, the default), srv, dns, file,
	// http, exec or consul.
	Kind string `yaml:"kind"`
	// Name is what to look up: an SRV name `_service._proto.domain`
	// (srv), a host name (dns), a Consul service (consul).
	Name string `yaml:"name"`
	// Port is the backends' port for kind dns, whose A/AAAA records have
	// none.
	Port uint16 `yaml:"port"`
	// Server is the DNS server to ask, address:port (srv, dns); default
	// the first nameserver of /etc/resolv.conf.
	Server string `yaml:"server"`
	// Protocol is udp (default) or tcp, the DNS queries' transport.
	Protocol string `yaml:"protocol"`
	// Path is the file of `host:port [weight [priority]]` lines (file).
	Path string `yaml:"path"`
	// URL answers a JSON list of {host, port, weight, priority} (http).
	URL string `yaml:"url"`
	// CAFile adds roots for the URL's certificate (http).
	CAFile string `yaml:"ca_file"`
	// TokenFile holds a bearer token (http) or an ACL token (consul);
	// mode 0600.
	TokenFile string `yaml:"token_file"`
	// Command prints `host:port [weight [priority]]` lines (exec). It
	// runs as haproxy.user, with a minimal environment.
	Command []string `yaml:"command"`
	// Address is the Consul agent (consul); default 127.0.0.1:8500.
	Address string `yaml:"address"`
	// Tag, Datacenter and PassingOnly narrow a Consul service's
	// instances.
	Tag         string `yaml:"tag"`
	Datacenter  string `yaml:"datacenter"`
	PassingOnly bool   `yaml:"passing_only"`
	// Interval between fetches; kinds that see changes at once (file,
	// consul) fetch on each change too. Default 10s.
	Interval Duration `yaml:"interval"`
	// Timeout of one fetch; default 5s, at most Interval.
	Timeout Duration `yaml:"timeout"`
	// FailPolicy is keeplast (default) or setempty.
	FailPolicy string `yaml:"failpolicy"`
	// Overrides are an operator's admin state and weight for discovered
	// backends, by address (host:port): kept while the backend is gone,
	// applied when it comes back. The management API writes them.
	Overrides []DiscoveryOverride `yaml:"overrides"`
}

// DiscoveryOverride is an operator's say over one discovered backend.
type DiscoveryOverride struct {
	Address string `yaml:"address"`
	// State is enabled, drain or disabled.
	State string `yaml:"state"`
	// Weight replaces the discovered weight when set.
	Weight *int `yaml:"weight"`
}

// hostName is a DNS host name, labels of letters, digits and hyphens.
var hostName = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$`)

// srvName is RFC 2782's _service._proto.name, _proto _tcp or _udp.
var srvName = regexp.MustCompile(`^_[A-Za-z0-9][A-Za-z0-9-]{0,62}\._(tcp|udp)\.([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$`)

// applyDiscoveryDefaults fills in what d leaves out.
func applyDiscoveryDefaults(d *Discovery) {
	if d == nil {
		return
	}
	setString(&d.Kind, DiscoveryStatic)
	setString(&d.FailPolicy, FailKeepLast)
	if d.Kind == DiscoverySRV || d.Kind == DiscoveryDNS {
		setString(&d.Protocol, ProtocolUDP)
	}
	if d.Interval.Duration == 0 {
		d.Interval.Duration = DefaultDiscoveryInterval
	}
	if d.Timeout.Duration == 0 {
		d.Timeout.Duration = min(DefaultDiscoveryTimeout, d.Interval.Duration)
	}
}

// validateDiscovery checks d at path (such as services[2].discovery):
// the keys its kind needs, and no key of another kind.
func validateDiscovery(p *problems, path string, d *Discovery) {
	if d == nil {
		return
	}
	if !contains(discoveryKinds, d.Kind) {
		p.add(path+".kind", quote(d.Kind), "must be one of %s", strings.Join(discoveryKinds, ", "))
		return
	}
	need := func(key string, set bool) {
		if !set {
			p.add(path+"."+key, "", "required for kind %s", d.Kind)
		}
	}
	// Every key some kind uses, and the kinds that use it.
	keys := []struct {
		key   string
		set   bool
		kinds []string
	}{
		{"name", d.Name != "", []string{DiscoverySRV, DiscoveryDNS, DiscoveryConsul}},
		{"port", d.Port != 0, []string{DiscoveryDNS}},
		{"server", d.Server != "", []string{DiscoverySRV, DiscoveryDNS}},
		{"protocol", d.Protocol != "", []string{DiscoverySRV, DiscoveryDNS}},
		{"path", d.Path != "", []string{DiscoveryFile}},
		{"url", d.URL != "", []string{DiscoveryHTTP}},
		{"ca_file", d.CAFile != "", []string{DiscoveryHTTP}},
		{"token_file", d.TokenFile != "", []string{DiscoveryHTTP, DiscoveryConsul}},
		{"command", len(d.Command) > 0, []string{DiscoveryExec}},
		{"address", d.Address != "", []string{DiscoveryConsul}},
		{"tag", d.Tag != "", []string{DiscoveryConsul}},
		{"datacenter", d.Datacenter != "", []string{DiscoveryConsul}},
		{"passing_only", d.PassingOnly, []string{DiscoveryConsul}},
	}
	for _, k := range keys {
		if k.set && !contains(k.kinds, d.Kind) {
			p.add(path+"."+k.key, "", "not for kind %s (only %s)", d.Kind, strings.Join(k.kinds, ", "))
		}
	}
	switch d.Kind {
	case DiscoveryStatic:
		if len(d.Overrides) > 0 {
			p.add(path+".overrides", "", "not for kind static: set the backends' own state and weight")
		}
		return
	case DiscoverySRV:
		need("name", d.Name != "")
		if d.Name != "" && !srvName.MatchString(d.Name) {
			p.add(path+".name", quote(d.Name), "must be an SRV name _service._proto.domain, _proto _tcp or _udp (such as _s3._tcp.rgw.example)")
		}
	case DiscoveryDNS:
		need("name", d.Name != "")
		need("port", d.Port != 0)
		if d.Name != "" && !hostName.MatchString(d.Name) {
			p.add(path+".name", quote(d.Name), "must be a host name")
		}
	case DiscoveryFile:
		need("path", d.Path != "")
		if d.Path != "" && !filepath.IsAbs(d.Path) {
			p.add(path+".path", quote(d.Path), "must be absolute")
		}
	case DiscoveryHTTP:
		need("url", d.URL != "")
		if d.URL != "" {
			if u, err := url.Parse(d.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				p.add(path+".url", quote(d.URL), "must be an http:// or https:// URL")
			} else if u.User != nil {
				p.add(path+".url", "", "must not carry credentials: use token_file")
			} else if u.Scheme == "http" && d.TokenFile != "" {
				p.add(path+".token_file", quote(d.TokenFile), "needs an https:// url: over http:// the token would cross the network in clear")
			}
		}
	case DiscoveryExec:
		need("command", len(d.Command) > 0)
		if len(d.Command) > 0 && !filepath.IsAbs(d.Command[0]) {
			p.add(path+".command[0]", quote(d.Command[0]), "must be an absolute path")
		}
	case DiscoveryConsul:
		need("name", d.Name != "")
	}
	if d.Server != "" {
		if _, err := netip.ParseAddrPort(d.Server); err != nil {
			p.add(path+".server", quote(d.Server), "must be address:port, such as 10.0.0.53:53 or [fd00::53]:53")
		}
	}
	if d.Protocol != "" && d.Protocol != ProtocolUDP && d.Protocol != ProtocolTCP {
		p.add(path+".protocol", quote(d.Protocol), "must be udp or tcp")
	}
	if d.Address != "" {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(d.Address, "http://"), "https://")); err != nil {
			p.add(path+".address", quote(d.Address), "must be host:port (or an http:// or https:// URL) of the Consul agent")
		}
	}
	if d.Interval.Duration < MinDiscoveryInterval {
		p.add(path+".interval", fmtDuration(d.Interval.Duration), "must be at least %s", MinDiscoveryInterval)
	}
	if d.Timeout.Duration <= 0 || d.Timeout.Duration > d.Interval.Duration {
		p.add(path+".timeout", fmtDuration(d.Timeout.Duration), "must be above 0 and at most the interval (%s)", fmtDuration(d.Interval.Duration))
	}
	if d.FailPolicy != FailKeepLast && d.FailPolicy != FailSetEmpty {
		p.add(path+".failpolicy", quote(d.FailPolicy), "must be keeplast or setempty")
	}
	if len(d.Overrides) > MaxDiscoveryOverrides {
		p.add(path+".overrides", strconv.Itoa(len(d.Overrides)), "at most %d", MaxDiscoveryOverrides)
	}
	seen := map[string]bool{}
	for j, o := range d.Overrides {
		op := fmt.Sprintf("%s.overrides[%d]", path, j)
		if _, _, err := net.SplitHostPort(o.Address); err != nil {
			p.add(op+".address", quote(o.Address), "must be host:port, as the source names the backend")
		} else if seen[o.Address] {
			p.add(op+".address", quote(o.Address), "listed twice")
		}
		seen[o.Address] = true
		switch o.State {
		case "", StateEnabled, StateDrain, StateDisabled:
		default:
			p.add(op+".state", quote(o.State), "must be enabled, drain or disabled")
		}
		if o.Weight != nil && (*o.Weight < 0 || *o.Weight > 256) {
			p.add(op+".weight", strconv.Itoa(*o.Weight), "must be 0-256")
		}
	}
}

// discovers reports whether d finds backends rather than taking the
// file's list.
func discovers(d *Discovery) bool { return d != nil && d.Kind != DiscoveryStatic }

// validatePoolDiscovery checks a pool's discovery at base (services[2],
// backends): its keys, and no list of backends beside a source that
// finds them (an operator's say over a found backend goes in overrides).
func validatePoolDiscovery(p *problems, base string, d *Discovery, listed int) {
	if d == nil {
		return
	}
	validateDiscovery(p, base+".discovery", d)
	if discovers(d) && listed > 0 {
		key := ".backends"
		if base == "backends" {
			key = ".servers"
		}
		p.add(base+key, "", "the pool's backends come from discovery kind %s: remove the list (an operator's state or weight for a found backend goes in %s.discovery.overrides)", d.Kind, base)
	}
}

// Consul is the local Consul agent ober talks to.
type Consul struct {
	// Address of the agent, host:port or an http(s):// URL; default
	// 127.0.0.1:8500.
	Address string `yaml:"address"`
	// TokenFile holds an ACL token; mode 0600.
	TokenFile string `yaml:"token_file"`
	// Register registers each service the node serves as
	// <service>-<port>-<proto>, with a check on ober's /health
	// (api.listen); deregistered when the node stops serving it.
	Register bool `yaml:"register"`
	// Tags go with every registration.
	Tags []string `yaml:"tags"`
	// CheckInterval is the agent's check of ober's /health; default 10s.
	CheckInterval Duration `yaml:"check_interval"`
}

// DefaultConsulAddress is the local agent's HTTP API.
const DefaultConsulAddress = "127.0.0.1:8500"

func applyConsulDefaults(c *Consul) {
	setString(&c.Address, DefaultConsulAddress)
	if c.CheckInterval.Duration == 0 {
		c.CheckInterval.Duration = 10 * time.Second
	}
}

func validateConsul(p *problems, c *Consul) {
	addr := strings.TrimPrefix(strings.TrimPrefix(c.Address, "http://"), "https://")
	if _, _, err := net.SplitHostPort(addr); c.Address != "" && err != nil {
		p.add("consul.address", quote(c.Address), "must be host:port (or an http:// or https:// URL) of the Consul agent")
	}
	if d := c.CheckInterval.Duration; d != 0 && d < time.Second {
		p.add("consul.check_interval", fmtDuration(c.CheckInterval.Duration), "must be at least 1s")
	}
	if c.TokenFile != "" && !filepath.IsAbs(c.TokenFile) {
		p.add("consul.token_file", quote(c.TokenFile), "must be absolute")
	}
	for i, tag := range c.Tags {
		if tag == "" || strings.ContainsAny(tag, " \t\n/") {
			p.add(fmt.Sprintf("consul.tags[%d]", i), quote(tag), "must be a word without spaces or slashes")
		}
	}
}
