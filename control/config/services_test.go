package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// servicesConfig is a valid configuration, before defaults, with a
// service of each kind:
//
//	0 https  tls on the top-level pool
//	1 db     tcp with its own backends and an access list
//	2 games  tcp on a port range, backends without a port
//	3 sni    tcp with TLS passthrough to two pools
//	4 web    http with its own backends and an HTTP check
//	5 auto   tcp whose address comes from vip_pools "lab"
func servicesConfig() *Config {
	return &Config{
		env:  nodeA(),
		Node: Node{Interfaces: []string{"eth0"}},
		VIPs: []Addr{addr("10.0.0.1"), addr("fd00::1")},
		VIPPools: []VIPPool{
			{Name: "lab", Addresses: []string{"10.20.0.0/28", "10.20.1.10-10.20.1.20"}, AvoidBuggyIPs: true},
		},
		Services: []Service{
			{Name: "https", Port: 443, Mode: ModeTLS, TLS: &TLS{SelfSigned: true}},
			{Name: "db", Port: 5432, Mode: ModeTCP,
				Backends: []BackendServer{{Address: "10.2.0.1:5432"}, {Address: "db2.example.com:5432", Weight: intp(50), Priority: 2}},
				Access:   &Access{Default: AccessDeny, Rules: []string{"deny 10.9.0.0/16", "allow 10.0.0.0/8", "allow frontend-http"}}},
			{Name: "games", Ports: PortRange{7000, 7010}, Mode: ModeTCP, VIPs: []Addr{addr("10.0.0.1")},
				Backends: []BackendServer{{Address: "10.3.0.1"}, {Address: "10.3.0.2:7000"}},
				Health:   &ServiceHealth{Port: 7000}},
			{Name: "sni", Port: 8443, Mode: ModeTCP,
				Pools: []Pool{
					{Name: "s3", Backends: []BackendServer{{Address: "10.4.0.1:443"}}},
					{Name: "web", Backends: []BackendServer{{Address: "10.4.0.2:443"}}},
				},
				TLSPassthrough: &TLSPassthrough{Routes: []SNIRoute{
					{Names: []string{"s3.example.com"}, Pool: "s3"},
					{Regexp: `^[^.]+\.web\.example\.com$`, Pool: "web"},
				}}},
			{Name: "web", Port: 8080, Mode: ModeHTTP,
				Backends: []BackendServer{{Address: "10.5.0.1:80"}, {Address: "web2.example.com:443", TLS: true}},
				Health:   &ServiceHealth{Kind: CheckHTTP, Path: "/healthz"}},
			{Name: "auto", Port: 9000, Mode: ModeTCP, VIPPool: "lab",
				Backends: []BackendServer{{Address: "10.6.0.1:9000"}}},
		},
		Backends: Backends{Servers: []BackendServer{{Address: "rgw1.example.com:7480"}, {Address: "10.1.0.2:7480"}}},
	}
}

func TestServicesConfigValid(t *testing.T) {
	c := servicesConfig()
	require.NoError(t, c.Validate(), "before defaults")
	c.ApplyDefaults()
	require.NoError(t, c.Validate(), "after defaults")
}

// TestValidateServices has one case per check of a service's keys, each
// asserting the exact message. Validate must say the same before and
// after ApplyDefaults.
func TestValidateServices(t *testing.T) {
	dir := t.TempDir()
	notExec := writeFile(t, filepath.Join(dir, "check.sh"), "#!/bin/sh\nexit 0\n")
	tooMany := make([]string, MaxAccessRules+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("allow 10.%d.%d.0/24", i/256, i%256)
	}
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		// mode
		{"udp with a PROXY header", func(c *Config) { c.Services[1].Mode = "udp"; c.Services[1].ProxyProtocol = "v2" },
			`services[1].proxy_protocol: "v2": not for mode udp, which the kernel forwards without a proxy; use forward: dnat to show the client's address to the backends`},
		{"tls on tcp", func(c *Config) { c.Services[1].TLS = &TLS{SelfSigned: true} },
			`services[1].tls: not allowed for mode tcp (ober passes its bytes through); use mode tls to terminate TLS, or tls_passthrough to route by SNI`},
		{"whitelist on tcp", func(c *Config) { c.Services[1].Whitelist = "frontend-http" },
			`services[1].whitelist: "frontend-http": only for mode http (a tcp service admits clients by access)`},

		// port and ports
		{"port and ports", func(c *Config) { c.Services[2].Port = 7000 },
			`services[2].ports: 7000-7010: give port or ports, not both`},
		{"tcp without port", func(c *Config) { c.Services[1].Port = 0 },
			`services[1].port: required (1-65535), or ports for a range`},
		{"ports on tls", func(c *Config) { c.Services[0].Port = 0; c.Services[0].Ports = PortRange{8000, 8010} },
			`services[0].ports: 8000-8010: only for modes tcp, udp and nat`},
		{"ports reversed", func(c *Config) { c.Services[2].Ports = PortRange{7010, 7000} },
			`services[2].ports: 7010-7000: the first port is above the last`},
		{"ports from zero", func(c *Config) { c.Services[2].Ports = PortRange{0, 10} },
			`services[2].ports: 0-10: ports must be 1-65535`},
		{"ports too many", func(c *Config) { c.Services[2].Ports = PortRange{7000, 9000} },
			`services[2].ports: 7000-9000: 2001 ports; at most 1024, since each port of each VIP is a row of the dataplane's services table`},

		// VIP:port clashes
		{"duplicate VIP:port across services", func(c *Config) { c.Services[1].Port = 443 },
			`services[1].port: 443: already used by services[0] ("https") on VIP 10.0.0.1`},
		{"port inside an earlier range", func(c *Config) {
			c.Services = append(c.Services, Service{Name: "one", Port: 7005, Mode: ModeTCP, Backends: []BackendServer{{Address: "10.7.0.1:1"}}})
		}, `services[6].port: 7005: already used by services[2] ("games"), ports 7000-7010, on VIP 10.0.0.1`},
		{"range over an earlier port", func(c *Config) { c.Services[1].Port = 7003 },
			`services[2].ports: 7000-7010: overlaps port 7003 of services[1] ("db") on VIP 10.0.0.1`},
		{"ranges overlap", func(c *Config) {
			c.Services = append(c.Services, Service{Name: "more", Ports: PortRange{7010, 7020}, Mode: ModeTCP,
				Backends: []BackendServer{{Address: "10.7.0.1:1"}}})
		}, `services[6].ports: 7010-7020: overlaps ports 7000-7010 of services[2] ("games") on VIP 10.0.0.1`},

		// balance
		{"unknown balance", func(c *Config) { c.Services[1].Balance = "leastconnection" },
			`services[1].balance: "leastconnection": unknown balance method; did you mean "leastconn"?`},
		{"misspelt alias", func(c *Config) { c.Services[1].Balance = "wrrr" },
			`services[1].balance: "wrrr": unknown balance method; did you mean "wrr"?`},
		{"balance in capitals", func(c *Config) { c.Services[1].Balance = "WLC" },
			`services[1].balance: "WLC": unknown balance method; did you mean "wlc"?`},
		{"IPVS flag", func(c *Config) { c.Services[1].Balance = "sh-port" },
			`services[1].balance: "sh-port": an IPVS scheduler flag, not a method (on a TCP proxy no equivalent, HAProxy hashes the client address only; in the kernel, hash_source_port: true)`},

		// options
		{"fallback", func(c *Config) { c.Services[1].Fallback = "drop" },
			`services[1].fallback: "drop": must be serve_503, keep_last or reject`},
		{"slowstart negative", func(c *Config) { c.Services[1].Slowstart = &Duration{-time.Second} },
			`services[1].slowstart: -1s: must not be negative (0s turns it off)`},
		{"proxy_protocol version", func(c *Config) { c.Services[1].ProxyProtocol = "v3" },
			`services[1].proxy_protocol: "v3": must be v1 or v2`},
		{"proxy_protocol on tls", func(c *Config) { c.Services[0].ProxyProtocol = "v2" },
			`services[0].proxy_protocol: "v2": only for mode tcp (a tls or http service sets proxy_protocol: true on its backends)`},
		{"max_connections", func(c *Config) { c.Services[1].MaxConnections = -1 },
			`services[1].max_connections: -1: must be 0 (instances.maxconn) to 1000000`},
		{"timeout negative", func(c *Config) { c.Services[1].Timeouts.Connect = dur(-time.Second) },
			`services[1].timeouts.connect: -1s: must not be negative`},
		{"timeout sub-millisecond", func(c *Config) { c.Services[1].Timeouts.ClientIdle = dur(500 * time.Microsecond) },
			`services[1].timeouts.client_idle: 500µs: must be at least 1ms (HAProxy counts in milliseconds)`},
		{"timeout too long", func(c *Config) { c.Services[1].Timeouts.BackendIdle = dur(1000 * time.Hour) },
			`services[1].timeouts.backend_idle: 1000h: must be at most 596h (HAProxy's limit)`},

		// backends
		{"weight 300", func(c *Config) { c.Services[1].Backends[0].Weight = intp(300) },
			`services[1].backends[0].weight: 300: must be 0-256`},
		{"priority", func(c *Config) { c.Services[1].Backends[0].Priority = 1001 },
			`services[1].backends[0].priority: 1001: must be 1-1000`},
		{"priority negative", func(c *Config) { c.Backends.Servers[1].Priority = -1 },
			`backends.servers[1].priority: -1: must be 1-1000`},
		{"state", func(c *Config) { c.Services[1].Backends[1].State = "paused" },
			`services[1].backends[1].state: "paused": must be enabled, drain or disabled`},
		{"backend name duplicate", func(c *Config) { c.Services[1].Backends[1].Name = "s0" },
			`services[1].backends[1].name: "s0": already used by services[1].backends[0]`},
		{"backend without port", func(c *Config) { c.Services[1].Backends[0].Address = "10.2.0.1" },
			`services[1].backends[0].address: "10.2.0.1": must be host:port (such as rgw1.example.com:7480 or [fd00::1]:7480)`},
		{"range backend bad host", func(c *Config) { c.Services[2].Backends[0].Address = "10.3.0.256" },
			`services[2].backends[0].address: "10.3.0.256": invalid IP address: ParseAddr("10.3.0.256"): IPv4 field has value >255`},
		{"range backend missing", func(c *Config) { c.Services[2].Backends[0].Address = "" },
			`services[2].backends[0].address: required: host:port, or a host alone`},
		{"tls on a tcp backend", func(c *Config) { c.Services[1].Backends[0].TLS = true },
			`services[1].backends[0].tls: true: only for tls and http services (a tcp service passes the bytes as they come)`},
		{"sni on a tcp backend", func(c *Config) { c.Services[3].Pools[0].Backends[0].SNI = "s3.example.com" },
			`services[3].pools[0].backends[0].sni: "s3.example.com": only for tls and http services (a tcp service passes the bytes as they come)`},
		{"proxy_protocol on a tcp backend", func(c *Config) { c.Services[1].Backends[1].ProxyProtocol = true },
			`services[1].backends[1].proxy_protocol: true: a tcp service sends a PROXY header by its own proxy_protocol (v1 or v2)`},
		{"sni on an http backend without tls", func(c *Config) { c.Services[4].Backends[0].SNI = "web.example.com" },
			`services[4].backends[0].sni: "web.example.com": needs tls: true`},
		{"top-level pool needed", func(c *Config) { c.Backends.Servers = nil },
			`backends.servers: at least one server is required (or a discovery that finds them)`},

		// pools
		{"pools without passthrough", func(c *Config) {
			c.Services[1].Pools = []Pool{{Name: "spare", Backends: []BackendServer{{Address: "10.2.0.9:5432"}}}}
		}, `services[1].pools: only for tls_passthrough's routes (mode tcp)`},
		{"pool named default", func(c *Config) {
			c.Services[3].Pools[0].Name = "default"
			c.Services[3].TLSPassthrough.Routes[0].Pool = "default"
		},
			`services[3].pools[0].name: "default": reserved for the service's own backends`},
		{"pool name duplicate", func(c *Config) {
			c.Services[3].Pools[1].Name = "s3"
			c.Services[3].TLSPassthrough.Routes[1].Pool = "s3"
		},
			`services[3].pools[1].name: "s3": already used by services[3].pools[0]`},
		{"pool name syntax", func(c *Config) {
			c.Services[3].Pools[1].Name = "web pool"
			c.Services[3].TLSPassthrough.Routes[1].Pool = "web pool"
		},
			`services[3].pools[1].name: "web pool": may contain only letters, digits, ".", "_" and "-"`},
		{"pool without backends", func(c *Config) { c.Services[3].Pools[1].Backends = nil },
			`services[3].pools[1].backends: at least one backend is required`},

		// tls_passthrough
		{"passthrough on tls", func(c *Config) { c.Services[0].TLSPassthrough = &TLSPassthrough{Default: "default"} },
			`services[0].tls_passthrough: only for mode tcp`},
		{"route to an unknown pool", func(c *Config) { c.Services[3].TLSPassthrough.Routes[0].Pool = "s4" },
			`services[3].tls_passthrough.routes[0].pool: "s4": no such pool in services[3] (pools: s3, web); did you mean "s3"?`},
		{"route without pool", func(c *Config) { c.Services[3].TLSPassthrough.Routes[0].Pool = "" },
			`services[3].tls_passthrough.routes[0].pool: required: the pool the route sends to`},
		{"route matches nothing", func(c *Config) { c.Services[3].TLSPassthrough.Routes[1].Regexp = "" },
			`services[3].tls_passthrough.routes[1]: needs names or regexp`},
		{"route with names and regexp", func(c *Config) { c.Services[3].TLSPassthrough.Routes[0].Regexp = "^s3$" },
			`services[3].tls_passthrough.routes[0].regexp: "^s3$": give names or regexp, not both`},
		{"wildcard name", func(c *Config) { c.Services[3].TLSPassthrough.Routes[0].Names = []string{"*.example.com"} },
			`services[3].tls_passthrough.routes[0].names[0]: "*.example.com": not a name; for every name under a domain use regexp, such as ^[^.]+\.example\.com$`},
		{"bad name", func(c *Config) { c.Services[3].TLSPassthrough.Routes[0].Names = []string{"s3..example.com"} },
			`services[3].tls_passthrough.routes[0].names[0]: "s3..example.com": invalid host name: empty label`},
		{"name routed twice", func(c *Config) {
			r := &c.Services[3].TLSPassthrough.Routes[1]
			r.Regexp, r.Names = "", []string{"S3.example.com"}
		}, `services[3].tls_passthrough.routes[1].names[0]: "S3.example.com": already routed by services[3].tls_passthrough.routes[0]`},
		{"regexp does not compile", func(c *Config) { c.Services[3].TLSPassthrough.Routes[1].Regexp = "(web" },
			"services[3].tls_passthrough.routes[1].regexp: \"(web\": does not compile: error parsing regexp: missing closing ): `(web`"},
		{"default unknown", func(c *Config) { c.Services[3].TLSPassthrough.Default = "rejct" },
			`services[3].tls_passthrough.default: "rejct": must be reject or one of the service's pools (s3, web); did you mean "reject"?`},
		{"no routes, default reject", func(c *Config) { c.Services[3].TLSPassthrough.Routes = nil },
			`services[3].tls_passthrough.routes: at least one route is required, unless default names a pool`},
		{"read_timeout negative", func(c *Config) { c.Services[3].TLSPassthrough.ReadTimeout = dur(-time.Second) },
			`services[3].tls_passthrough.read_timeout: -1s: must not be negative`},

		// health
		{"health kind", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: "icmp"} },
			`services[1].health.kind: "icmp": must be tcp, http, https, probe, exec or none`},
		{"probe key on http", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: CheckHTTP, Send: "PING"} },
			`services[1].health.send: "PING": only for kind probe (this check is http)`},
		{"http key on the default tcp", func(c *Config) { c.Services[1].Health = &ServiceHealth{Path: "/x"} },
			`services[1].health.path: "/x": only for kind http or https (this check is tcp)`},
		{"https key on http", func(c *Config) { c.Services[4].Health.TLSVerify = true },
			`services[4].health.tls_verify: true: only for kind https (this check is http)`},
		{"kind none takes no other key", func(c *Config) {
			c.Services[1].Health = &ServiceHealth{Kind: CheckNone, Interval: dur(5 * time.Second)}
		},
			`services[1].health.interval: 5s: not for kind none, which runs no check`},
		{"interval short", func(c *Config) { c.Services[1].Health = &ServiceHealth{Interval: dur(50 * time.Millisecond)} },
			`services[1].health.interval: 50ms: must be at least 100ms`},
		{"timeout over interval", func(c *Config) {
			c.Services[1].Health = &ServiceHealth{Interval: dur(2 * time.Second), Timeout: dur(3 * time.Second)}
		},
			`services[1].health.timeout: 3s: must not be longer than the interval (2s)`},
		{"timeout over the default interval", func(c *Config) { c.Services[1].Health = &ServiceHealth{Timeout: dur(3 * time.Second)} },
			`services[1].health.timeout: 3s: must not be longer than the interval (2s)`},
		{"timeout negative", func(c *Config) { c.Services[1].Health = &ServiceHealth{Timeout: dur(-time.Second)} },
			`services[1].health.timeout: -1s: must be at least 1ms`},
		{"fall", func(c *Config) { c.Services[1].Health = &ServiceHealth{Fall: 101} },
			`services[1].health.fall: 101: must be 1-100`},
		{"rise", func(c *Config) { c.Services[1].Health = &ServiceHealth{Rise: -1} },
			`services[1].health.rise: -1: must be 1-100`},
		{"initial_state", func(c *Config) { c.Services[1].Health = &ServiceHealth{InitialState: "unknown"} },
			`services[1].health.initial_state: "unknown": must be up or down`},
		{"status letters", func(c *Config) { c.Services[4].Health.Status = "2xx" },
			`services[4].health.status: "2xx": must be a status (200) or a range (200-399) within 100-599`},
		{"status reversed", func(c *Config) { c.Services[4].Health.Status = "399-200" },
			`services[4].health.status: "399-200": must be a status (200) or a range (200-399) within 100-599`},
		{"status out of range", func(c *Config) { c.Services[4].Health.Status = "600" },
			`services[4].health.status: "600": must be a status (200) or a range (200-399) within 100-599`},
		{"method", func(c *Config) { c.Services[4].Health.Method = "get" },
			`services[4].health.method: "get": must be an HTTP method in capitals, such as GET or HEAD`},
		{"path", func(c *Config) { c.Services[4].Health.Path = "healthz" },
			`services[4].health.path: "healthz": must start with "/"`},
		{"host", func(c *Config) { c.Services[4].Health.Host = "web_1.example.com" },
			`services[4].health.host: "web_1.example.com": invalid host name: label "web_1" contains invalid character '_'`},
		{"https ca_file without verify", func(c *Config) { c.Services[4].Health = &ServiceHealth{Kind: CheckHTTPS, CAFile: "/etc/ober/ca.pem"} },
			`services[4].health.ca_file: "/etc/ober/ca.pem": needs tls_verify: true`},
		{"https ca_file missing", func(c *Config) {
			c.Services[4].Health = &ServiceHealth{Kind: CheckHTTPS, TLSVerify: true, CAFile: "/nonexistent/ca.pem"}
		}, `services[4].health.ca_file: "/nonexistent/ca.pem": no such file`},
		{"probe without expect", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: CheckProbe, Send: "PING\r\n"} },
			`services[1].health: kind probe needs expect (a prefix of the answer) or expect_regexp`},
		{"probe with both", func(c *Config) {
			c.Services[1].Health = &ServiceHealth{Kind: CheckProbe, Expect: "+PONG", ExpectRegexp: "PONG"}
		},
			`services[1].health.expect_regexp: "PONG": give expect or expect_regexp, not both`},
		{"probe regexp", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: CheckProbe, ExpectRegexp: "[PONG"} },
			"services[1].health.expect_regexp: \"[PONG\": does not compile: error parsing regexp: missing closing ]: `[PONG`"},
		{"exec without command", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: CheckExec} },
			`services[1].health.command: required for kind exec: the program and its arguments`},
		{"exec command that does not exist", func(c *Config) {
			c.Services[1].Health = &ServiceHealth{Kind: CheckExec, Command: []string{"/usr/local/bin/check-db", "--quick"}}
		}, `services[1].health.command[0]: "/usr/local/bin/check-db": no such file`},
		{"exec command relative", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: CheckExec, Command: []string{"true"}} },
			`services[1].health.command[0]: "true": must be an absolute path`},
		{"exec command not executable", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: CheckExec, Command: []string{notExec}} },
			`services[1].health.command[0]: "` + notExec + `": not executable`},
		{"exec command a directory", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: CheckExec, Command: []string{dir}} },
			`services[1].health.command[0]: "` + dir + `": not a regular file`},
		{"range without a check port", func(c *Config) { c.Services[2].Health = nil },
			`services[2].health.port: required: services[2].backends[0] has no port, so the check has none to use`},

		// access
		{"access default", func(c *Config) { c.Services[1].Access.Default = "drop" },
			`services[1].access.default: "drop": must be allow or deny`},
		{"access verb", func(c *Config) { c.Services[1].Access.Rules[0] = "permit 10.0.0.0/8" },
			`services[1].access.rules[0]: "permit 10.0.0.0/8": must be "allow X" or "deny X", X an address, a CIDR or a whitelist (frontend-http, backend-http, routers)`},
		{"access words", func(c *Config) { c.Services[1].Access.Rules[0] = "allow 10.0.0.0/8 10.1.0.0/16" },
			`services[1].access.rules[0]: "allow 10.0.0.0/8 10.1.0.0/16": must be "allow X" or "deny X", X an address, a CIDR or a whitelist (frontend-http, backend-http, routers)`},
		{"access host bits", func(c *Config) { c.Services[1].Access.Rules[0] = "allow 10.0.0.5/8" },
			`services[1].access.rules[0]: "allow 10.0.0.5/8": "10.0.0.5/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{"access bad CIDR", func(c *Config) { c.Services[1].Access.Rules[0] = "allow 10.0.0.0/33" },
			`services[1].access.rules[0]: "allow 10.0.0.0/33": invalid CIDR: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`},
		{"access zone", func(c *Config) { c.Services[1].Access.Rules[0] = "deny fe80::1%eth0" },
			`services[1].access.rules[0]: "deny fe80::1%eth0": "fe80::1%eth0": a zone is not allowed (packets carry no zone)`},
		{"access whitelist misspelt", func(c *Config) { c.Services[1].Access.Rules[2] = "allow frontend_http" },
			`services[1].access.rules[2]: "allow frontend_http": "frontend_http" is not an address, a CIDR or a whitelist; did you mean "frontend-http"?`},
		{"access host name", func(c *Config) { c.Services[1].Access.Rules[2] = "allow login.example.com" },
			`services[1].access.rules[2]: "allow login.example.com": "login.example.com" is not an address, a CIDR or a whitelist (frontend-http, backend-http, routers)`},
		{"access too many rules", func(c *Config) { c.Services[1].Access.Rules = tooMany },
			`services[1].access.rules: 10001 rules; at most 10000 (the dataplane's limit for one service)`},

		// vip_pools
		{"pool name missing", func(c *Config) { c.VIPPools[0].Name = ""; c.Services[5].VIPPool = "" },
			`vip_pools[0].name: required`},
		{"pool name duplicate", func(c *Config) {
			c.VIPPools = append(c.VIPPools, VIPPool{Name: "lab", Addresses: []string{"10.30.0.0/28"}})
		},
			`vip_pools[1].name: "lab": already used by vip_pools[0]`},
		{"pool without addresses", func(c *Config) { c.VIPPools[0].Addresses = nil },
			`vip_pools[0].addresses: at least one CIDR or range is required`},
		{"pool host bits", func(c *Config) { c.VIPPools[0].Addresses[0] = "10.20.0.5/28" },
			`vip_pools[0].addresses[0]: "10.20.0.5/28": has host bits set (did you mean 10.20.0.0/28?)`},
		{"pool range reversed", func(c *Config) { c.VIPPools[0].Addresses[1] = "10.20.1.20-10.20.1.10" },
			`vip_pools[0].addresses[1]: "10.20.1.20-10.20.1.10": the first address is above the last`},
		{"pool range of two families", func(c *Config) { c.VIPPools[0].Addresses[1] = "10.20.1.10-fd00::10" },
			`vip_pools[0].addresses[1]: "10.20.1.10-fd00::10": both ends must be of one family`},
		{"pool range bad address", func(c *Config) { c.VIPPools[0].Addresses[1] = "10.20.1.10-10.20.1.300" },
			`vip_pools[0].addresses[1]: "10.20.1.10-10.20.1.300": "10.20.1.300" is not an IP address`},
		{"pool address alone", func(c *Config) { c.VIPPools[0].Addresses[1] = "10.20.1.10" },
			`vip_pools[0].addresses[1]: "10.20.1.10": not a CIDR (such as 10.20.0.0/28) or a range (such as 10.20.1.10-10.20.1.20)`},
		{"pool of loopback addresses", func(c *Config) { c.VIPPools[0].Addresses[1] = "127.0.0.0/8" },
			`vip_pools[0].addresses[1]: "127.0.0.0/8": a loopback address cannot be a VIP`},
		{"pools overlap", func(c *Config) {
			c.VIPPools = append(c.VIPPools, VIPPool{Name: "lab2", Addresses: []string{"10.20.0.8/29"}})
		},
			`vip_pools[1].addresses[0]: "10.20.0.8/29": overlaps vip_pools[0].addresses[0] ("10.20.0.0/28")`},
		{"pool only buggy addresses", func(c *Config) { c.VIPPools[0].Addresses[1] = "10.20.1.255-10.20.2.0" },
			`vip_pools[0].addresses[1]: "10.20.1.255-10.20.2.0": holds only addresses ending in .0 or .255, which avoid_buggy_ips skips`},
		{"top-level VIP in a pool", func(c *Config) { c.VIPs = append(c.VIPs, addr("10.20.0.3")) },
			`vips[2]: 10.20.0.3: inside vip_pools[0] ("lab"), whose addresses ober hands out; take it out of vips or out of the pool`},
		{"unknown vip_pool", func(c *Config) { c.Services[5].VIPPool = "labb" },
			`services[5].vip_pool: "labb": no vip_pools entry has this name; did you mean "lab"?`},
		{"a pool that does not contain the service's VIP", func(c *Config) { c.Services[5].VIPs = []Addr{addr("10.20.0.3"), addr("10.0.0.1")} },
			`services[5].vips[1]: 10.0.0.1: not in vip_pool "lab" (10.20.0.0/28, 10.20.1.10-10.20.1.20)`},
		{"pool address without vip_pool", func(c *Config) { c.Services[1].VIPs = []Addr{addr("10.20.0.3")} },
			`services[1].vips[0]: 10.20.0.3: not one of the top-level vips; it is in vip_pools[0], so set vip_pool: lab`},
		{"no address to take", func(c *Config) { c.VIPs = nil; c.VIPPools[0].AutoAssign = new(false) },
			`services[0].vips: required: there are no top-level vips and no vip_pools entry has auto_assign; give vips or vip_pool` + "\n" +
				`services[1].vips: required: there are no top-level vips and no vip_pools entry has auto_assign; give vips or vip_pool` + "\n" +
				`services[2].vips[0]: 10.0.0.1: not one of the top-level vips (there are none), nor in a vip_pools entry (lab: 10.20.0.0/28, 10.20.1.10-10.20.1.20)` + "\n" +
				`services[3].vips: required: there are no top-level vips and no vip_pools entry has auto_assign; give vips or vip_pool` + "\n" +
				`services[4].vips: required: there are no top-level vips and no vip_pools entry has auto_assign; give vips or vip_pool`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := servicesConfig()
			tt.mutate(c)
			err := c.Validate()
			require.EqualError(t, err, tt.want, "before defaults")
			c.ApplyDefaults()
			err = c.Validate()
			require.EqualError(t, err, tt.want, "after defaults")
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
		})
	}
}

// Good values of the new keys, each of which a check could wrongly
// refuse.
func TestValidateServicesAccepts(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
	}{
		{"every alias", func(c *Config) { c.Services[1].Balance = "wlc" }},
		{"every method", func(c *Config) { c.Services[1].Balance = BalanceLeastBandwidth }},
		{"slowstart off", func(c *Config) { c.Services[1].Slowstart = &Duration{} }},
		{"weight 0 and 256", func(c *Config) {
			c.Services[1].Backends[0].Weight = intp(0)
			c.Services[1].Backends[1].Weight = intp(256)
		}},
		{"priority 1000", func(c *Config) { c.Services[1].Backends[0].Priority = 1000 }},
		{"drain and disabled", func(c *Config) {
			c.Services[1].Backends[0].State = StateDrain
			c.Backends.Servers[0].State = StateDisabled
		}},
		{"range of one port", func(c *Config) { c.Services[2].Ports = PortRange{7000, 7000} }},
		{"range of 1024 ports", func(c *Config) { c.Services[2].Ports = PortRange{7000, 8023} }},
		{"same port on another VIP", func(c *Config) {
			c.Services = append(c.Services, Service{Name: "v6", Port: 7005, Mode: ModeTCP, VIPs: []Addr{addr("fd00::1")},
				Backends: []BackendServer{{Address: "[fd00:7::1]:7005"}}})
		}},
		{"range backends all with ports", func(c *Config) { c.Services[2].Backends[0].Address = "10.3.0.1:7000"; c.Services[2].Health = nil }},
		{"range backend IPv6 without port", func(c *Config) { c.Services[2].Backends[0].Address = "fd00:3::1" }},
		{"exec check on a range without port", func(c *Config) {
			c.Services[2].Health = &ServiceHealth{Kind: CheckExec, Command: []string{"/bin/true"}}
		}},
		{"probe", func(c *Config) {
			c.Services[1].Health = &ServiceHealth{Kind: CheckProbe, Send: "PING\r\n", ExpectRegexp: `^\+PONG`, Port: 6379, InitialState: HealthDown}
		}},
		{"none", func(c *Config) { c.Services[1].Health = &ServiceHealth{Kind: CheckNone} }},
		{"https", func(c *Config) {
			c.Services[4].Health = &ServiceHealth{Kind: CheckHTTPS, Method: "HEAD", Host: "web.example.com", Status: "204", TLSVerify: true}
		}},
		{"top-level pool unused", func(c *Config) {
			c.Services[0].Backends = []BackendServer{{Address: "10.8.0.1:443", TLS: true, CAFile: ""}}
			c.Backends.Servers = nil
		}},
		{"passthrough to own backends by default", func(c *Config) {
			c.Services[3].Backends = []BackendServer{{Address: "10.4.0.9:443"}}
			c.Services[3].TLSPassthrough = &TLSPassthrough{Default: DefaultPool}
		}},
		{"route to own backends", func(c *Config) {
			c.Services[3].Backends = []BackendServer{{Address: "10.4.0.9:443"}}
			c.Services[3].TLSPassthrough.Routes[0].Pool = DefaultPool
		}},
		{"access deny and IPv6", func(c *Config) {
			c.Services[0].Access = &Access{Default: AccessDeny, Rules: []string{"allow fd00::/8", "allow ::ffff:10.0.0.1", "allow routers", "deny 0.0.0.0/0"}}
		}},
		{"no top-level VIPs with a pool", func(c *Config) { c.VIPs = nil; c.Services[2].VIPs = nil; c.Services[2].VIPPool = "lab" }},
		{"VIP inside the service's pool", func(c *Config) { c.Services[5].VIPs = []Addr{addr("10.20.1.15")} }},
		{"pool of IPv6", func(c *Config) {
			c.VIPPools[0].Addresses = append(c.VIPPools[0].Addresses, "fd00:20::/120", "fd00:21::1-fd00:21::9")
		}},
		{"pool of one address", func(c *Config) { c.VIPPools[0].Addresses = append(c.VIPPools[0].Addresses, "10.30.0.1/32") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := servicesConfig()
			tt.mutate(c)
			require.NoError(t, c.Validate(), "before defaults")
			c.ApplyDefaults()
			require.NoError(t, c.Validate(), "after defaults")
		})
	}
}

func TestServiceDefaults(t *testing.T) {
	c := servicesConfig()
	c.Services[1].Balance = "wlc"
	c.Services[3].Balance = "iphash1"
	c.Backends.Balance = BalanceRoundRobin
	c.Backends.Health = HealthCheck{Path: "/probe", Interval: dur(5 * time.Second), Fall: 4}
	c.Services = append(c.Services, Service{Mode: ModeTCP, Ports: PortRange{6000, 6010},
		Backends: []BackendServer{{Address: "10.9.0.1:6000"}}})
	c.ApplyDefaults()
	require.NoError(t, c.Validate())
	svc := c.Services

	// Balance: aliases become ober's names and say so; the top-level
	// pool's services take backends.balance, where roundrobin keeps its
	// meaning (weights count).
	require.Equal(t, BalanceWeighted, c.Backends.Balance)
	require.Equal(t, BalanceWeighted, svc[0].Balance)
	require.Equal(t, BalanceLeastConn, svc[1].Balance)
	require.Equal(t, BalanceConsistent, svc[3].Balance)
	require.Equal(t, BalanceLeastConn, svc[4].Balance, "own backends: leastconn")
	require.Equal(t, []string{
		"backends.balance: roundrobin keeps its meaning here, ober's weighted (weights count)",
		"services[1].balance: wlc is ober's leastconn",
		"services[3].balance: iphash1 is ober's consistent",
	}, c.BalanceNotes())

	// Names.
	require.Equal(t, "tcp-6000", svc[6].Name)
	require.Equal(t, []string{"s0", "s1"}, []string{svc[1].Backends[0].Name, svc[1].Backends[1].Name})
	require.Equal(t, "s0", svc[3].Pools[1].Backends[0].Name, "names count in each pool")

	// Backends.
	require.Equal(t, BackendServer{Name: "s1", Address: "db2.example.com:5432", Weight: intp(50), Priority: 2, State: StateEnabled}, svc[1].Backends[1])
	require.Equal(t, BackendServer{Name: "s0", Address: "10.2.0.1:5432", Weight: intp(100), Priority: 1, State: StateEnabled}, svc[1].Backends[0])
	require.Equal(t, "web2.example.com", svc[4].Backends[1].SNI)

	// Options.
	for i := range svc {
		require.Equal(t, &Duration{30 * time.Second}, svc[i].Slowstart, svc[i].Name)
		require.Equal(t, FallbackServe503, svc[i].Fallback, svc[i].Name)
	}
	require.Equal(t, &TLSPassthrough{Routes: svc[3].TLSPassthrough.Routes, Default: "reject", ReadTimeout: dur(5 * time.Second)}, svc[3].TLSPassthrough)
	require.Equal(t, AccessDeny, svc[1].Access.Default)
	require.Nil(t, svc[0].Access)
	require.Equal(t, new(true), c.VIPPools[0].AutoAssign)

	// Health: the top-level pool's check comes from backends.health.
	require.Equal(t, &ServiceHealth{Kind: CheckHTTP, Interval: dur(5 * time.Second), Timeout: dur(time.Second), Fall: 4, Rise: 2,
		InitialState: HealthUp, Method: "GET", Path: "/probe", Status: "200-499"}, svc[0].Health)
	require.Equal(t, &ServiceHealth{Kind: CheckTCP, Interval: dur(2 * time.Second), Timeout: dur(time.Second), Fall: 3, Rise: 2,
		InitialState: HealthUp}, svc[1].Health)
	require.Equal(t, &ServiceHealth{Kind: CheckTCP, Interval: dur(2 * time.Second), Timeout: dur(time.Second), Fall: 3, Rise: 2,
		InitialState: HealthUp, Port: 7000}, svc[2].Health)
	require.Equal(t, &ServiceHealth{Kind: CheckHTTP, Interval: dur(2 * time.Second), Timeout: dur(time.Second), Fall: 3, Rise: 2,
		InitialState: HealthUp, Method: "GET", Path: "/healthz", Status: "200-399"}, svc[4].Health)

	// Idempotent, explicit zeros kept.
	before := *c
	c.ApplyDefaults()
	require.Equal(t, before, *c)

	short := servicesConfig()
	short.Services[1].Health = &ServiceHealth{Interval: dur(300 * time.Millisecond)}
	short.Services[1].Slowstart = &Duration{}
	short.Services[4].Health = &ServiceHealth{Kind: CheckNone}
	short.ApplyDefaults()
	require.Equal(t, 300*time.Millisecond, short.Services[1].Health.Timeout.Duration, "timeout: at most the interval")
	require.Equal(t, time.Duration(0), short.Services[1].Slowstart.Duration, "slowstart 0s stays off")
	require.Equal(t, &ServiceHealth{Kind: CheckNone}, short.Services[4].Health, "kind none gets nothing")
}

// A broken backends.health is reported once, there, not again in every
// service that takes its check from it.
func TestLegacyHealthReportedOnce(t *testing.T) {
	c := baseConfig()
	c.Backends.Health.Path = "health"
	c.Backends.Health.Interval = dur(-time.Second)
	c.Services[0].Health, c.Services[1].Health = nil, nil
	c.ApplyDefaults()
	require.EqualError(t, c.Validate(), ""+
		`backends.health.path: "health": must start with "/"`+"\n"+
		`backends.health.interval: -1s: must be at least 100ms`)
	require.Equal(t, "/", c.Services[0].Health.Path)
}

func TestServicePools(t *testing.T) {
	c := servicesConfig()
	c.ApplyDefaults()
	refs := func(i int) []string {
		var out []string
		for _, p := range c.ServicePools(i) {
			out = append(out, fmt.Sprintf("%s %s shared=%v n=%d", p.Ref, p.Path, p.Shared, len(p.Servers)))
		}
		return out
	}
	require.Equal(t, []string{"https/default backends.servers shared=true n=2"}, refs(0))
	require.Equal(t, []string{"db/default services[1].backends shared=false n=2"}, refs(1))
	require.Equal(t, []string{"sni/s3 services[3].pools[0].backends shared=false n=1", "sni/web services[3].pools[1].backends shared=false n=1"}, refs(3))
	require.Nil(t, c.ServicePools(9))
	require.Nil(t, c.ServicePools(-1))

	// VIPs: configured, all of the top-level ones, or IPAM's to give.
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}, c.ServiceVIPs(0))
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, c.ServiceVIPs(2))
	require.Nil(t, c.ServiceVIPs(5))
	require.Equal(t, "", c.ServiceVIPPool(0))
	require.Equal(t, "lab", c.ServiceVIPPool(5))
	c.Services[5].VIPs = []Addr{addr("10.20.1.15")}
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.20.1.15")}, c.ServiceVIPs(5))
	require.Equal(t, "lab", c.ServiceVIPPool(5), "a requested address is reserved in its pool")
	c.VIPs = nil
	require.Nil(t, c.ServiceVIPs(0))
	require.Equal(t, "lab", c.ServiceVIPPool(0), "no top-level VIPs: the first auto_assign pool")

	from, to := c.ServicePorts(2)
	require.Equal(t, [2]uint16{7000, 7010}, [2]uint16{from, to})
	from, to = c.ServicePorts(1)
	require.Equal(t, [2]uint16{5432, 5432}, [2]uint16{from, to})
}

// TestBalanceAliases pins the table README prints: every name GORB (IPVS)
// and GoBetween use, and the ober method each becomes.
func TestBalanceAliases(t *testing.T) {
	got := make(map[string]string)
	for _, a := range BalanceAliases() {
		key := a.From + " " + a.Alias
		_, dup := got[key]
		require.False(t, dup, "alias %s listed twice", key)
		if a.Flag {
			got[key] = "flag of " + a.Method
		} else {
			got[key] = a.Method
		}
		require.Contains(t, Balances(), a.Method, key)
		if a.Flag || a.Method != a.Alias && strings.Contains(a.Alias, a.Method) {
			require.NotEmpty(t, a.Note, key)
		}
	}
	require.Equal(t, map[string]string{
		"GORB rr":                  "roundrobin",
		"GORB wrr":                 "weighted",
		"GORB lc":                  "leastconn",
		"GORB wlc":                 "leastconn",
		"GORB sh":                  "source",
		"GORB dh":                  "consistent",
		"GORB sed":                 "leastconn",
		"GORB nq":                  "leastconn",
		"GORB lblc":                "leastconn",
		"GORB lblcr":               "leastconn",
		"GORB mh":                  "consistent",
		"GORB fo":                  "first",
		"GORB ovf":                 "first",
		"GORB twos":                "random",
		"GORB sh-fallback":         "flag of source",
		"GORB sh-port":             "flag of source",
		"GORB mh-fallback":         "flag of consistent",
		"GORB mh-port":             "flag of consistent",
		"GoBetween weight":         "weighted",
		"GoBetween roundrobin":     "roundrobin",
		"GoBetween leastconn":      "leastconn",
		"GoBetween iphash":         "source",
		"GoBetween iphash1":        "consistent",
		"GoBetween leastbandwidth": "leastbandwidth",
	}, got)
	require.Equal(t, []string{"roundrobin", "weighted", "leastconn", "source", "consistent", "random", "first", "leastbandwidth"}, Balances())

	// Every alias that is not a flag loads, and ober's own names load as
	// they are, without a note.
	for _, a := range BalanceAliases() {
		m, _, msg := canonicalBalance(a.Alias, false)
		if a.Flag {
			require.NotEmpty(t, msg, a.Alias)
			continue
		}
		require.Empty(t, msg, a.Alias)
		require.Equal(t, a.Method, m, a.Alias)
	}
	for _, b := range Balances() {
		m, note, msg := canonicalBalance(b, false)
		require.Equal(t, b, m)
		require.Empty(t, note+msg)
	}
	_, note, _ := canonicalBalance("sed", false)
	require.Equal(t, "sed is ober's leastconn (shortest expected delay ((connections+1)/weight) has no HAProxy equivalent; leastconn by weight is the closest)", note)
}

func TestParseAddrRange(t *testing.T) {
	for s, want := range map[string]string{
		"10.20.0.0/28":            "10.20.0.0-10.20.0.15",
		"10.20.0.7/32":            "10.20.0.7-10.20.0.7",
		"10.20.1.10-10.20.1.20":   "10.20.1.10-10.20.1.20",
		"10.20.1.10 - 10.20.1.20": "10.20.1.10-10.20.1.20",
		"fd00:20::/120":           "fd00:20::-fd00:20::ff",
		"fd00:20::/64":            "fd00:20::-fd00:20::ffff:ffff:ffff:ffff",
		"0.0.0.0/0":               "0.0.0.0-255.255.255.255",
	} {
		r, err := ParseAddrRange(s)
		require.NoError(t, err, s)
		require.Equal(t, want, r.String(), s)
	}
	r, _ := ParseAddrRange("10.20.1.10-10.20.1.20")
	require.True(t, r.Contains(netip.MustParseAddr("10.20.1.20")))
	require.True(t, r.Contains(netip.MustParseAddr("::ffff:10.20.1.15")))
	require.False(t, r.Contains(netip.MustParseAddr("10.20.1.21")))
	require.False(t, r.Contains(netip.MustParseAddr("fd00::1")))
	o, _ := ParseAddrRange("10.20.1.20/30")
	require.True(t, r.Overlaps(o))
	o, _ = ParseAddrRange("10.20.1.24/30")
	require.False(t, r.Overlaps(o))

	p := VIPPool{Addresses: []string{"10.20.0.0/28", "bogus", "fd00::1-fd00::2"}}
	require.Len(t, p.Ranges(), 2)
	require.True(t, p.Contains(netip.MustParseAddr("fd00::2")))
	require.False(t, p.Contains(netip.MustParseAddr("10.20.0.16")))
}

func TestParseStatusRange(t *testing.T) {
	from, to, err := ParseStatusRange("200-399")
	require.NoError(t, err)
	require.Equal(t, [2]int{200, 399}, [2]int{from, to})
	from, to, err = ParseStatusRange("204")
	require.NoError(t, err)
	require.Equal(t, [2]int{204, 204}, [2]int{from, to})
	for _, bad := range []string{"", "99", "600", "200-", "-200", "300-200", "2xx", "200-600"} {
		_, _, err := ParseStatusRange(bad)
		require.Error(t, err, bad)
	}
}

func TestParseAccessRule(t *testing.T) {
	r, err := ParseAccessRule("  deny   10.1.0.0/16 ")
	require.NoError(t, err)
	require.Equal(t, AccessRule{Prefix: netip.MustParsePrefix("10.1.0.0/16")}, r)
	r, err = ParseAccessRule("allow ::ffff:10.0.0.0/104")
	require.NoError(t, err)
	require.Equal(t, AccessRule{Allow: true, Prefix: netip.MustParsePrefix("10.0.0.0/8")}, r)
	r, err = ParseAccessRule("allow fd00::7")
	require.NoError(t, err)
	require.Equal(t, AccessRule{Allow: true, Prefix: netip.MustParsePrefix("fd00::7/128")}, r)
	r, err = ParseAccessRule("allow backend-http")
	require.NoError(t, err)
	require.Equal(t, AccessRule{Allow: true, Whitelist: WhitelistBackendHTTP}, r)
}

// The new keys go through the strict decoding like the old ones: unknown
// keys with a hint, values of the wrong form with their line.
func TestParseServiceKeys(t *testing.T) {
	const base = `node: {interfaces: [eth0]}
vips: [10.0.0.1]
services:
  - mode: tcp
    ports: 7000-7010
    backends:
      - address: 10.3.0.1
    health:
      port: 7000
`
	c, err := parse([]byte(base), nodeA())
	require.NoError(t, err)
	require.Equal(t, PortRange{7000, 7010}, c.Services[0].Ports)
	require.Equal(t, "tcp-7000", c.Services[0].Name)
	require.Empty(t, c.Backends.Servers, "no tls or http service: no top-level pool needed")

	tests := []struct{ name, yaml, want string }{
		{"ports not a range", strings.Replace(base, "7000-7010", "7000", 1),
			`services[0].ports: "7000" is not a port range (such as 7000-7010) (line 5)`},
		{"health key misspelt", strings.Replace(base, "port: 7000", "intervall: 2s", 1),
			`services[0].health.intervall: unknown key (line 9); did you mean "interval"?`},
		{"slowstart without unit", base + "    slowstart: 30\n",
			`services[0].slowstart: "30" is not a duration (such as 500ms, 5s, 2m) (line 10)`},
		{"weight 300", strings.Replace(base, "- address: 10.3.0.1", "- address: 10.3.0.1\n        weight: 300", 1),
			`services[0].backends[0].weight: 300: must be 0-256`},
		{"udp with a tcp check", strings.Replace(base, "mode: tcp", "mode: udp", 1),
			`services[0].health.kind: "tcp": a UDP backend answers no TCP check: use probe with protocol: udp, exec or none`},
		{"unknown balance", base + "    balance: lest_conn\n",
			`services[0].balance: "lest_conn": unknown balance method; did you mean "leastconn"?`},
		{"exec command that does not exist", strings.Replace(base, "port: 7000", "kind: exec\n      command: [/usr/lib/ober/no-such-check]", 1),
			`services[0].health.command[0]: "/usr/lib/ober/no-such-check": no such file`},
		{"vip pool key", base + "vip_pools:\n  - {name: lab, adresses: [10.20.0.0/28]}\n",
			`vip_pools[0].adresses: unknown key (line 11); did you mean "addresses"?`},
		{"a tls service still needs the top-level pool", base + "  - {mode: http, port: 80}\n",
			`backends.servers: at least one server is required (or a discovery that finds them)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse([]byte(tt.yaml), nodeA())
			require.EqualError(t, err, tt.want)
			require.Nil(t, c)
		})
	}
}

// everyKeyYAML uses every key of the service model; the files it names
// are made by the caller (CAFILE).
const everyKeyYAML = `node:
  interfaces: [eth0]
vips: [10.0.0.1, fd00::1]
vip_pools:
  - name: lab
    addresses: [10.20.0.0/28, 10.20.1.10-10.20.1.20, fd00:20::/120]
    avoid_buggy_ips: true
    auto_assign: false
  - name: spare
    addresses: [10.30.0.0/29]
services:
  - name: s3
    port: 443
    mode: tls
    tls: {self_signed: true}
    balance: wrr
    slowstart: 0s
    fallback: keep_last
    max_connections: 5000
    timeouts: {connect: 3s, client_idle: 2m, backend_idle: 4m}
    access:
      default: deny
      rules: ["allow 10.0.0.0/8", "deny 10.9.0.0/16", "allow frontend-http"]
    backends:
      - name: rgw1
        address: rgw1.example.com:7443
        weight: 200
        priority: 1
        state: drain
        tls: true
        ca_file: CAFILE
        sni: s3.example.com
      - address: 10.1.0.2:7480
        priority: 2
        state: disabled
        proxy_protocol: true
    health:
      kind: https
      interval: 3s
      timeout: 500ms
      fall: 4
      rise: 3
      port: 8443
      initial_state: down
      method: HEAD
      path: /health
      host: s3.example.com
      status: 200-299
      tls_verify: true
      ca_file: CAFILE
  - name: redis
    port: 6379
    mode: tcp
    vips: [10.20.0.3]
    vip_pool: lab
    balance: iphash1
    proxy_protocol: v2
    backends: [{address: 10.2.0.1:6379}]
    health: {kind: probe, send: "PING\r\n", expect: +PONG}
  - name: games
    ports: 7000-7010
    mode: tcp
    vip_pool: spare
    balance: mh
    backends: [{address: 10.3.0.1}]
    health: {kind: exec, command: [/bin/true, --quiet]}
  - name: sni
    port: 8443
    mode: tcp
    vips: [10.0.0.1]
    health: {kind: probe, expect_regexp: "^SSH-"}
    pools:
      - name: eu
        backends: [{address: 10.4.0.1:443}]
      - name: us
        backends: [{address: 10.4.0.2:443}]
    tls_passthrough:
      routes:
        - {names: [eu.example.com, EU2.example.com], pool: eu}
        - {regexp: '^[^.]+\.us\.example\.com$', pool: us}
      default: eu
      read_timeout: 2s
  - name: off
    port: 9999
    mode: http
    backends: [{address: 10.5.0.1:80}]
    health: {kind: none}
backends:
  balance: roundrobin
  servers:
    - address: rgw9.example.com:7480
`

func everyKeyConfig(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	cert, _ := writeCert(t, dir, certOpts{cn: "ca.example.com", keyInCert: true})
	c, err := parse([]byte(strings.ReplaceAll(everyKeyYAML, "CAFILE", cert)), nodeA())
	require.NoError(t, err)
	return c
}

func TestEveryKeyLoads(t *testing.T) {
	c := everyKeyConfig(t)
	require.Equal(t, []string{
		"backends.balance: roundrobin keeps its meaning here, ober's weighted (weights count)",
		"services[0].balance: wrr is ober's weighted",
		"services[1].balance: iphash1 is ober's consistent",
		"services[2].balance: mh is ober's consistent (Maglev hashing in IPVS; ober's consistent hash also moves about 1/N of the clients when a server comes or goes)",
	}, c.BalanceNotes())
	require.Equal(t, time.Duration(0), c.Services[0].Slowstart.Duration)
	require.Equal(t, "s1", c.Services[0].Backends[1].Name)
	require.Equal(t, "\r\n", c.Services[1].Health.Send[4:])
	require.Equal(t, []string{"/bin/true", "--quiet"}, c.Services[2].Health.Command)
	require.Equal(t, "spare", c.ServiceVIPPool(2))
	require.Nil(t, c.ServiceVIPs(2))
	require.Equal(t, []string{"eu", "us"}, c.poolNames(3))
}
