package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBaseConfigValid(t *testing.T) {
	c := baseConfig()
	require.NoError(t, c.Validate())
	require.NoError(t, c.Validate(), "Validate twice")
}

// TestValidate has one case per offline check, each asserting the exact
// message an operator sees.
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		// node
		{"node name", func(c *Config) { c.Node.Name = "node a" },
			`node.name: "node a": may contain only letters, digits, ".", "_" and "-"`},
		{"no interfaces", func(c *Config) { c.Node.Interfaces = nil },
			`node.interfaces: at least one interface is required`},
		{"interface with slash", func(c *Config) { c.Node.Interfaces = []string{"eth0", "eth0/1"} },
			`node.interfaces[1]: "eth0/1": not a valid interface name (1-15 characters, no "/", ":" or whitespace)`},
		{"interface too long", func(c *Config) { c.Node.Interfaces = []string{"enp0s31f6abcdefg"} },
			`node.interfaces[0]: "enp0s31f6abcdefg": not a valid interface name (1-15 characters, no "/", ":" or whitespace)`},
		{"interface with space", func(c *Config) { c.Node.Interfaces = []string{"eth 0"} },
			`node.interfaces[0]: "eth 0": not a valid interface name (1-15 characters, no "/", ":" or whitespace)`},
		{"empty interface", func(c *Config) { c.Node.Interfaces = []string{""} },
			`node.interfaces[0]: "": not a valid interface name (1-15 characters, no "/", ":" or whitespace)`},
		{"duplicate interface", func(c *Config) { c.Node.Interfaces = []string{"eth0", "eth1", "eth0"} },
			`node.interfaces[2]: "eth0": duplicate of node.interfaces[0]`},
		{"xdp mode", func(c *Config) { c.Node.XDPMode = "offload" },
			`node.xdp_mode: "offload": must be auto, native or generic`},
		{"vip interface", func(c *Config) { c.Node.VIPInterface = "lo:0" },
			`node.vip_interface: "lo:0": not a valid interface name (1-15 characters, no "/", ":" or whitespace)`},
		{"relative runtime dir", func(c *Config) { c.Node.RuntimeDir = "run/ober" },
			`node.runtime_dir: "run/ober": must be an absolute path`},

		// vips
		{"no vips", func(c *Config) { c.VIPs = nil },
			`vips: at least one VIP is required (or vip_pools to take addresses from)`},
		{"duplicate vip", func(c *Config) { c.VIPs = append(c.VIPs, addr("10.0.0.1")) },
			`vips[2]: 10.0.0.1: duplicate of vips[0]`},
		{"loopback vip", func(c *Config) { c.VIPs[0] = addr("127.0.0.1") },
			`vips[0]: 127.0.0.1: a loopback address cannot be a VIP`},
		{"ipv6 loopback vip", func(c *Config) { c.VIPs[1] = addr("::1") },
			`vips[1]: ::1: a loopback address cannot be a VIP`},
		{"unspecified vip", func(c *Config) { c.VIPs[0] = addr("0.0.0.0") },
			`vips[0]: 0.0.0.0: the unspecified address cannot be a VIP`},
		{"multicast vip", func(c *Config) { c.VIPs[1] = addr("ff02::1") },
			`vips[1]: ff02::1: a multicast address cannot be a VIP`},
		{"broadcast vip", func(c *Config) { c.VIPs[0] = addr("255.255.255.255") },
			`vips[0]: 255.255.255.255: the broadcast address cannot be a VIP`},
		{"mapped vip", func(c *Config) { c.VIPs[0] = addr("::ffff:10.0.0.1") },
			`vips[0]: ::ffff:10.0.0.1: an IPv4-mapped address; write it as 10.0.0.1`},
		{"vip with zone", func(c *Config) { c.VIPs[1] = addr("fe80::1%eth0") },
			`vips[1]: fe80::1%eth0: a VIP cannot have a zone`},
		{"empty vip", func(c *Config) { c.VIPs[1] = Addr{} },
			`vips[1]: an address is required`},

		// services
		{"no services", func(c *Config) { c.Services = nil },
			`services: at least one service is required`},
		{"port missing", func(c *Config) { c.Services[1].Port = 0 },
			`services[1].port: required (1-65535)`},
		{"mode missing", func(c *Config) { c.Services[1].Mode = "" },
			`services[1].mode: required: tls, http, tcp, udp or nat`},
		{"mode unknown", func(c *Config) { c.Services[1].Mode = "sctp" },
			`services[1].mode: "sctp": must be tls, http, tcp, udp or nat`},
		{"name syntax", func(c *Config) { c.Services[0].Name = "s3 https" },
			`services[0].name: "s3 https": may contain only letters, digits, ".", "_" and "-"`},
		{"name duplicate", func(c *Config) { c.Services[1].Name = "https" },
			`services[1].name: "https": already used by services[0]`},
		{"default names clash", func(c *Config) {
			c.VIPs = append(c.VIPs, addr("10.0.0.2"))
			c.Services = []Service{
				{Port: 443, Mode: ModeTLS, TLS: &TLS{SelfSigned: true}, VIPs: []Addr{addr("10.0.0.1")}},
				{Port: 443, Mode: ModeTLS, TLS: &TLS{SelfSigned: true}, VIPs: []Addr{addr("10.0.0.2")}},
			}
		}, `services[1].name: "tls-443": already used by services[0]`},
		{"port clash on all vips", func(c *Config) { c.Services[1].Port = 443 },
			`services[1].port: 443: already used by services[0] ("https") on VIP 10.0.0.1`},
		{"port clash on one vip", func(c *Config) {
			c.Services[0].VIPs = []Addr{addr("fd00::1")}
			c.Services[1].Port = 443
		}, `services[1].port: 443: already used by services[0] ("https") on VIP fd00::1`},
		{"service vip not top-level", func(c *Config) { c.Services[1].VIPs = []Addr{addr("10.0.0.1"), addr("10.0.0.9")} },
			`services[1].vips[1]: 10.0.0.9: not one of the top-level vips (10.0.0.1, fd00::1)`},
		{"service vip duplicate", func(c *Config) { c.Services[1].VIPs = []Addr{addr("10.0.0.1"), addr("10.0.0.1")} },
			`services[1].vips[1]: 10.0.0.1: duplicate of services[1].vips[0]`},
		{"tls missing", func(c *Config) { c.Services[0].TLS = nil },
			`services[0].tls: required for mode tls: give cert (and key), or self_signed: true`},
		{"tls empty", func(c *Config) { c.Services[0].TLS = &TLS{} },
			`services[0].tls: needs cert (and key), or self_signed: true`},
		{"tls key without cert", func(c *Config) { c.Services[0].TLS = &TLS{Key: "/etc/ober/tls/s3.key", SelfSigned: true} },
			`services[0].tls.key: "/etc/ober/tls/s3.key": needs tls.cert`},
		{"tls on http", func(c *Config) { c.Services[1].TLS = &TLS{SelfSigned: true} },
			`services[1].tls: not allowed for mode http (plain HTTP); use mode tls to terminate TLS`},
		{"whitelist on tls", func(c *Config) { c.Services[0].Whitelist = "frontend-http" },
			`services[0].whitelist: "frontend-http": only for mode http (mode tls admits every client)`},
		{"whitelist unknown", func(c *Config) { c.Services[1].Whitelist = "routers" },
			`services[1].whitelist: "routers": must be frontend-http or backend-http`},

		// backends
		{"balance", func(c *Config) { c.Backends.Balance = "leastcon" },
			`backends.balance: "leastcon": unknown balance method; did you mean "leastconn"?`},
		{"balance far from any", func(c *Config) { c.Backends.Balance = "fastest" },
			`backends.balance: "fastest": unknown balance method; ober's are roundrobin, weighted, leastconn, source, consistent, random, first, leastbandwidth, and GORB's and GoBetween's names are accepted (SCHEMA.md)`},
		{"no servers", func(c *Config) { c.Backends.Servers = nil },
			`backends.servers: at least one server is required (or a discovery that finds them)`},
		{"address missing", func(c *Config) { c.Backends.Servers[1].Address = "" },
			`backends.servers[1].address: required: host:port`},
		{"address without port", func(c *Config) { c.Backends.Servers[1].Address = "rgw2.example.com" },
			`backends.servers[1].address: "rgw2.example.com": must be host:port (such as rgw1.example.com:7480 or [fd00::1]:7480)`},
		{"address port zero", func(c *Config) { c.Backends.Servers[1].Address = "rgw2.example.com:0" },
			`backends.servers[1].address: "rgw2.example.com:0": port must be 1-65535`},
		{"address port too big", func(c *Config) { c.Backends.Servers[1].Address = "10.1.0.2:70000" },
			`backends.servers[1].address: "10.1.0.2:70000": port must be 1-65535`},
		{"address without host", func(c *Config) { c.Backends.Servers[1].Address = ":7480" },
			`backends.servers[1].address: ":7480": host is missing`},
		{"address bad name", func(c *Config) { c.Backends.Servers[1].Address = "rgw_2.example.com:7480" },
			`backends.servers[1].address: "rgw_2.example.com:7480": invalid host name: label "rgw_2" contains invalid character '_'`},
		{"address bad ip", func(c *Config) { c.Backends.Servers[1].Address = "10.1.0.256:7480" },
			`backends.servers[1].address: "10.1.0.256:7480": invalid IP address: ParseAddr("10.1.0.256"): IPv4 field has value >255`},
		{"server name syntax", func(c *Config) { c.Backends.Servers[0].Name = "rgw/1" },
			`backends.servers[0].name: "rgw/1": may contain only letters, digits, ".", "_" and "-"`},
		{"server name duplicate", func(c *Config) { c.Backends.Servers[1].Name = "s0" },
			`backends.servers[1].name: "s0": already used by backends.servers[0]`},
		{"weight", func(c *Config) { c.Backends.Servers[0].Weight = intp(300) },
			`backends.servers[0].weight: 300: must be 0-256`},
		{"negative weight", func(c *Config) { c.Backends.Servers[0].Weight = intp(-1) },
			`backends.servers[0].weight: -1: must be 0-256`},
		{"ca file without tls", func(c *Config) { c.Backends.Servers[1].CAFile = "/etc/ober/ca.pem" },
			`backends.servers[1].ca_file: "/etc/ober/ca.pem": needs tls: true`},
		{"sni without tls", func(c *Config) { c.Backends.Servers[1].SNI = "rgw.example.com" },
			`backends.servers[1].sni: "rgw.example.com": needs tls: true`},
		{"sni syntax", func(c *Config) {
			c.Backends.Servers[1].TLS = true
			c.Backends.Servers[1].SNI = "rgw..example.com"
		}, `backends.servers[1].sni: "rgw..example.com": invalid host name: empty label`},
		{"ca file missing", func(c *Config) {
			c.Backends.Servers[1].TLS = true
			c.Backends.Servers[1].CAFile = "/nonexistent/ca.pem"
		}, `backends.servers[1].ca_file: "/nonexistent/ca.pem": no such file`},

		// health
		{"health path relative", func(c *Config) { c.Backends.Health.Path = "health" },
			`backends.health.path: "health": must start with "/"`},
		{"health path space", func(c *Config) { c.Backends.Health.Path = "/ HTTP/1.1" },
			`backends.health.path: "/ HTTP/1.1": must not contain spaces or control characters`},
		{"health interval short", func(c *Config) { c.Backends.Health.Interval = dur(50 * time.Millisecond) },
			`backends.health.interval: 50ms: must be at least 100ms`},
		{"health interval negative", func(c *Config) { c.Backends.Health.Interval = dur(-time.Second) },
			`backends.health.interval: -1s: must be at least 100ms`},
		{"health interval long", func(c *Config) { c.Backends.Health.Interval = dur(1000 * time.Hour) },
			`backends.health.interval: 1000h: must be at most 596h (HAProxy's limit)`},
		{"health fall", func(c *Config) { c.Backends.Health.Fall = 101 },
			`backends.health.fall: 101: must be 1-100`},
		{"health rise", func(c *Config) { c.Backends.Health.Rise = -2 },
			`backends.health.rise: -2: must be 1-100`},

		// instances
		{"count too big", func(c *Config) { c.Instances.Count = 65; c.Instances.CPUs = nil },
			`instances.count: 65: must be 1-64`},
		{"count negative", func(c *Config) { c.Instances.Count = -1 },
			`instances.count: -1: must be 1-64`},
		{"count beyond affinity", func(c *Config) { c.Instances.Count = 3; c.Instances.CPUs = nil },
			`instances.count: 3: this process may run on only 2 CPUs (0-1)`},
		{"count and cpus differ", func(c *Config) { c.Instances.Count = 1; c.Instances.CPUs = []int{0, 1} },
			`instances.count: 1: does not match the 2 CPUs listed in instances.cpus`},
		{"cpu not allowed", func(c *Config) { c.Instances.Count = 3; c.Instances.CPUs = []int{0, 1, 7} },
			`instances.cpus[2]: 7: not a CPU this process may run on (allowed: 0-1)`},
		{"cpu duplicate", func(c *Config) { c.Instances.CPUs = []int{1, 1} },
			`instances.cpus[1]: 1: duplicate of instances.cpus[0]`},
		{"maxconn", func(c *Config) { c.Instances.MaxConn = 2000000 },
			`instances.maxconn: 2000000: must be 1-1000000`},

		// timeouts
		{"connect negative", func(c *Config) { c.Timeouts.Connect = dur(-5 * time.Second) },
			`timeouts.connect: -5s: must be greater than 0`},
		{"client sub-millisecond", func(c *Config) { c.Timeouts.Client = dur(500 * time.Microsecond) },
			`timeouts.client: 500µs: must be at least 1ms (HAProxy counts in milliseconds)`},
		{"server too long", func(c *Config) { c.Timeouts.Server = dur(30 * 24 * time.Hour) },
			`timeouts.server: 720h: must be at most 596h (HAProxy's limit)`},
		{"http_request negative", func(c *Config) { c.Timeouts.HTTPRequest = dur(-time.Minute) },
			`timeouts.http_request: -1m: must be greater than 0`},
		{"http_keep_alive negative", func(c *Config) { c.Timeouts.HTTPKeepAlive = dur(-90 * time.Second) },
			`timeouts.http_keep_alive: -1m30s: must be greater than 0`},
		{"drain negative", func(c *Config) { c.Timeouts.Drain = dur(-time.Second) },
			`timeouts.drain: -1s: must not be negative`},
		{"max_transfer negative", func(c *Config) { c.Timeouts.MaxTransfer = dur(-time.Hour) },
			`timeouts.max_transfer: -1h: must be greater than 0`},
		{"tls_handshake sub-millisecond", func(c *Config) { c.Timeouts.TLSHandshake = dur(time.Microsecond) },
			`timeouts.tls_handshake: 1µs: must be at least 1ms (HAProxy counts in milliseconds)`},

		// limits
		{"connections per source negative", func(c *Config) { c.Limits.ConnectionsPerSource = intp(-1) },
			`limits.connections_per_source: -1: must be 0 (no cap) to 1000000`},
		{"connection rate too high", func(c *Config) { c.Limits.ConnectionRatePerSource = 2000000 },
			`limits.connection_rate_per_source: 2000000: must be 0 (no cap) to 1000000 per second`},

		// ha
		{"ha mode", func(c *Config) { c.HA.Mode = "carp" },
			`ha.mode: "carp": must be none, bgp or vrrp`},

		// whitelists
		{"whitelist bad cidr", func(c *Config) { c.Whitelists.FrontendHTTP = []string{"10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/33"} },
			`whitelists.frontend_http[2]: "10.0.0.0/33": invalid CIDR: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`},
		{"whitelist host bits", func(c *Config) { c.Whitelists.Routers = []string{"10.0.0.5/24"} },
			`whitelists.routers[0]: "10.0.0.5/24": has host bits set (did you mean 10.0.0.0/24?)`},
		{"whitelist hostlist syntax", func(c *Config) { c.Whitelists.BackendHTTP = []string{"compute[01-"} },
			`whitelists.backend_http[0]: "compute[01-": offset 7: unclosed "["`},
		{"whitelist bad name", func(c *Config) { c.Whitelists.FrontendHTTP = []string{"login_1"} },
			`whitelists.frontend_http[0]: "login_1": invalid host name: label "login_1" contains invalid character '_'`},
		{"whitelist empty entry", func(c *Config) { c.Whitelists.FrontendHTTP = []string{" "} },
			`whitelists.frontend_http[0]: " ": empty entry`},

		// api
		{"api not host:port", func(c *Config) { c.API.Listen = "8404" },
			`api.listen: "8404": must be host:port (such as 127.0.0.1:8404)`},
		{"api host name", func(c *Config) { c.API.Listen = "localhost:8404" },
			`api.listen: "localhost:8404": host must be an IP address (0.0.0.0 or [::] for all addresses)`},
		{"api empty host", func(c *Config) { c.API.Listen = ":8404" },
			`api.listen: ":8404": host must be an IP address (0.0.0.0 or [::] for all addresses)`},
		{"api port", func(c *Config) { c.API.Listen = "127.0.0.1:0" },
			`api.listen: "127.0.0.1:0": port must be 1-65535`},

		// haproxy
		{"haproxy bufsize too small", func(c *Config) { c.HAProxy.Tune.BufSize = 4096 },
			`haproxy.tune.bufsize: 4096: must be 0 (tune.bufsize's default) or between 16384 and 1048576 bytes`},
		{"haproxy record too large", func(c *Config) { c.HAProxy.Tune.SSLMaxRecord = 65536 },
			`haproxy.tune.ssl_maxrecord: 65536: must be 0 (tune.ssl.maxrecord's default) or between 512 and 16384 bytes`},
		{"haproxy server rcvbuf negative", func(c *Config) { c.HAProxy.Tune.ServerRcvBuf = -1 },
			`haproxy.tune.server_rcvbuf: -1: must be 0 (tune.rcvbuf.server's default) or between 4096 and 67108864 bytes`},
		{"haproxy binary blank", func(c *Config) { c.HAProxy.Binary = "  " },
			`haproxy.binary: "  ": must not be blank`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tt.mutate(c)
			err := c.Validate()
			require.EqualError(t, err, tt.want)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
		})
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c := baseConfig()
	c.Node.Interfaces = nil
	c.Services[1].Port = 443
	c.Backends.Servers[0].Weight = intp(1000)
	c.HA.Mode = "carp"
	err := c.Validate()
	require.EqualError(t, err, ""+
		"node.interfaces: at least one interface is required\n"+
		`services[1].port: 443: already used by services[0] ("https") on VIP 10.0.0.1`+"\n"+
		"backends.servers[0].weight: 1000: must be 0-256\n"+
		`ha.mode: "carp": must be none, bgp or vrrp`)
	joined, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok)
	for _, e := range joined.Unwrap() {
		require.IsType(t, &FieldError{}, e)
	}
}

// Zero values mean "use the default": Validate accepts them whether or not
// ApplyDefaults ran.
func TestValidateBeforeDefaults(t *testing.T) {
	c := &Config{
		Node:     Node{Interfaces: []string{"eth0"}},
		VIPs:     []Addr{addr("10.0.0.1")},
		Services: []Service{{Port: 80, Mode: ModeHTTP}},
		Backends: Backends{Servers: []BackendServer{{Address: "10.1.0.1:7480"}}},
		env:      nodeA(),
	}
	require.NoError(t, c.Validate())
}

func TestValidateCPUsBeyondLimit(t *testing.T) {
	cpus := make([]int, 70)
	for i := range cpus {
		cpus[i] = i
	}
	c := baseConfigOn(onCPUs(cpus...))
	require.Equal(t, 64, c.Instances.Count)
	c.Instances.Count = 0
	c.Instances.CPUs = cpus
	c.ApplyDefaults()
	require.EqualError(t, c.Validate(), `instances.cpus: lists 70 CPUs; at most 64 instances are supported`)
}

func TestValidateHostnameUnreadable(t *testing.T) {
	env := nodeA()
	env.hostname = func() (string, error) { return "", errors.New("uname failed") }
	c := baseConfigOn(env)
	require.Empty(t, c.Node.Name)
	require.EqualError(t, c.Validate(), `node.name: required: the host name cannot be read (uname failed)`)
}

// TestValidateTLSFiles covers the certificate and key checks with real
// files.
func TestValidateTLSFiles(t *testing.T) {
	dir := t.TempDir()
	goodCert, goodKey := writeCert(t, dir, certOpts{cn: "good"})
	bundle, _ := writeCert(t, dir, certOpts{cn: "bundle", keyInCert: true, keyFormat: "sec1"})
	certOnly, _ := writeCert(t, dir, certOpts{cn: "certonly"})
	mismatchCert, mismatchKey := writeCert(t, dir, certOpts{cn: "mismatch", otherKey: true})
	mismatchBundle, _ := writeCert(t, dir, certOpts{cn: "mismatchbundle", otherKey: true, keyInCert: true})
	expiredAt := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	expiredCert, expiredKey := writeCert(t, dir, certOpts{cn: "expired", notAfter: expiredAt})
	// certOnly's key file exists but the test points tls.key elsewhere.
	require.NoError(t, os.Remove(filepath.Join(dir, "certonly.key")))
	noPEM := writeFile(t, filepath.Join(dir, "nopem.pem"), "just text\n")
	garbage := writeFile(t, filepath.Join(dir, "garbage.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	encKey := writeFile(t, filepath.Join(dir, "enc.key"), "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
	badKey := writeFile(t, filepath.Join(dir, "bad.key"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	noKey := writeFile(t, filepath.Join(dir, "nokey.key"), "no key here\n")
	caBundle := writeFile(t, filepath.Join(dir, "ca.pem"), string(mustRead(t, goodCert))+string(mustRead(t, certOnly)))

	tests := []struct {
		name string
		tls  TLS
		want string // empty: valid
	}{
		{"cert and key files", TLS{Cert: goodCert, Key: goodKey}, ""},
		{"key in cert file (SEC 1)", TLS{Cert: bundle}, ""},
		{"cert missing", TLS{Cert: "/etc/ober/tls/s3.pem"},
			`services[0].tls.cert: "/etc/ober/tls/s3.pem": no such file`},
		{"cert is a directory", TLS{Cert: dir},
			`services[0].tls.cert: "` + dir + `": is a directory`},
		{"no certificate block", TLS{Cert: noPEM, Key: goodKey},
			`services[0].tls.cert: "` + noPEM + `": no PEM CERTIFICATE block`},
		{"certificate does not parse", TLS{Cert: garbage, Key: goodKey},
			`services[0].tls.cert: "` + garbage + `": certificate 1 of 1 does not parse: x509: malformed certificate`},
		{"no key in cert file", TLS{Cert: certOnly},
			`services[0].tls.cert: "` + certOnly + `": no private key in the file; add it or set tls.key`},
		{"key file missing", TLS{Cert: certOnly, Key: filepath.Join(dir, "certonly.key")},
			`services[0].tls.key: "` + filepath.Join(dir, "certonly.key") + `": no such file`},
		{"key file without key", TLS{Cert: goodCert, Key: noKey},
			`services[0].tls.key: "` + noKey + `": no PEM private key block`},
		{"key encrypted", TLS{Cert: goodCert, Key: encKey},
			`services[0].tls.key: "` + encKey + `": private key is encrypted; HAProxy needs it unencrypted`},
		{"key does not parse", TLS{Cert: goodCert, Key: badKey},
			`services[0].tls.key: "` + badKey + `": PRIVATE KEY block does not parse as a PKCS #1, PKCS #8 or EC private key`},
		{"key mismatch", TLS{Cert: mismatchCert, Key: mismatchKey},
			`services[0].tls.key: "` + mismatchKey + `": private key does not match the certificate in "` + mismatchCert + `"`},
		{"key mismatch in bundle", TLS{Cert: mismatchBundle},
			`services[0].tls.cert: "` + mismatchBundle + `": private key does not match the certificate`},
		{"key from another cert", TLS{Cert: goodCert, Key: expiredKey},
			`services[0].tls.key: "` + expiredKey + `": private key does not match the certificate in "` + goodCert + `"`},
		{"expired", TLS{Cert: expiredCert, Key: expiredKey},
			`services[0].tls.cert: "` + expiredCert + `": certificate expired on 2024-03-01T12:00:00Z`},
		{"expired in chain", TLS{Cert: writeFile(t, filepath.Join(dir, "chain.pem"), string(mustRead(t, goodCert))+string(mustRead(t, expiredCert))), Key: goodKey},
			`services[0].tls.cert: "` + filepath.Join(dir, "chain.pem") + `": certificate 2 of 2 (CN=expired) expired on 2024-03-01T12:00:00Z`},
		{"cert and self_signed", TLS{Cert: goodCert, Key: goodKey, SelfSigned: true},
			`services[0].tls.self_signed: true: conflicts with tls.cert: give one or the other`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tls := tt.tls
			c.Services[0].TLS = &tls
			err := c.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.want)
		})
	}

	t.Run("backend ca_file", func(t *testing.T) {
		c := baseConfig()
		c.Backends.Servers[0].TLS = true
		c.Backends.Servers[0].CAFile = caBundle
		require.NoError(t, c.Validate())
		c.Backends.Servers[0].CAFile = noPEM
		require.EqualError(t, c.Validate(), `backends.servers[0].ca_file: "`+noPEM+`": no PEM CERTIFICATE block`)
		c.Backends.Servers[0].CAFile = garbage
		require.EqualError(t, c.Validate(), `backends.servers[0].ca_file: "`+garbage+`": certificate 1 of 1 does not parse: x509: malformed certificate`)
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func TestCPURanges(t *testing.T) {
	require.Equal(t, "", cpuRanges(nil))
	require.Equal(t, "0", cpuRanges([]int{0}))
	require.Equal(t, "0-3,8-11,15", cpuRanges([]int{0, 1, 2, 3, 8, 9, 10, 11, 15}))
	require.Equal(t, "1,3,5", cpuRanges([]int{1, 3, 5}))
}

func TestFieldErrorFormat(t *testing.T) {
	require.Equal(t, `a.b: 1: bad`, (&FieldError{Path: "a.b", Value: "1", Msg: "bad"}).Error())
	require.Equal(t, `a.b: bad`, (&FieldError{Path: "a.b", Msg: "bad"}).Error())
	require.Equal(t, `bad`, (&FieldError{Msg: "bad"}).Error())
}

// TestHAProxyTuneRoundTrip: every haproxy.tune key reaches its own
// renderer field and back (a field missed in either direction would lose
// or swap a size).
func TestHAProxyTuneRoundTrip(t *testing.T) {
	c := HAProxyTune{BufSize: 1, SSLMaxRecord: 2, ClientSndBuf: 3, ClientRcvBuf: 4, ServerSndBuf: 5, ServerRcvBuf: 6}
	r := c.Renderer()
	require.Equal(t, c, TuneOf(*r))
	require.Equal(t, "bufsize=1,ssl_maxrecord=2,client_sndbuf=3,client_rcvbuf=4,server_sndbuf=5,server_rcvbuf=6", r.String(),
		"the renderer's keys are the configuration's")
}
