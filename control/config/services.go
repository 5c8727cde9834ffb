package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Service modes beyond tls and http.
const (
	ModeTCP = "tcp"
	// ModeUDP is a UDP service forwarded by the kernel (nftables).
	ModeUDP = "udp"
	// ModeNAT is a TCP or UDP service forwarded by the kernel.
	ModeNAT = "nat"
)

// Protocols of a kernel-forwarded service, and its forwarding choices.
const (
	ProtocolTCP    = "tcp"
	ProtocolUDP    = "udp"
	ForwardFullNAT = "fullnat"
	ForwardDNAT    = "dnat"
)

// IsKernelMode reports whether a mode is forwarded by the kernel rather
// than by HAProxy.
func IsKernelMode(mode string) bool { return mode == ModeUDP || mode == ModeNAT }

// Balance methods: ober's vocabulary.
const (
	BalanceRoundRobin     = "roundrobin"     // in turn, weights ignored
	BalanceWeighted       = "weighted"       // in turn, by weight
	BalanceLeastConn      = "leastconn"      // fewest open connections, by weight
	BalanceSource         = "source"         // hash of the client address
	BalanceConsistent     = "consistent"     // consistent hash of the client address (of the whole flow in the kernel)
	BalanceRandom         = "random"         // power of two random choices
	BalanceFirst          = "first"          // the first server with room
	BalanceLeastBandwidth = "leastbandwidth" // fewest bytes per second, measured by ober
)

// Fallbacks: what a service does when no backend is up.
const (
	FallbackServe503 = "serve_503"
	FallbackKeepLast = "keep_last"
	FallbackReject   = "reject"
)

// Backend admin states.
const (
	StateEnabled  = "enabled"
	StateDrain    = "drain"
	StateDisabled = "disabled"
)

// Health check kinds.
const (
	CheckTCP   = "tcp"
	CheckHTTP  = "http"
	CheckHTTPS = "https"
	CheckProbe = "probe"
	CheckExec  = "exec"
	CheckNone  = "none"
)

// A health check's verdict before its first result (initial_state).
const (
	HealthUp   = "up"
	HealthDown = "down"
)

// Access list verdicts: an access rule's first word, and access.default.
const (
	AccessAllow = "allow"
	AccessDeny  = "deny"
)

// PassthroughReject is tls_passthrough.default when no pool takes the
// connections no route matches: they are closed.
const PassthroughReject = "reject"

// DefaultPool is the name, among a service's pools, of its own backends
// or, for a tls or http service without any, of the top-level
// backends.servers. tls_passthrough's routes may name it; pools[] may not.
const DefaultPool = "default"

// Pool is a named list of backends of a service, chosen by
// TLSPassthrough's routes.
type Pool struct {
	Name     string          `yaml:"name"`
	Backends []BackendServer `yaml:"backends"`
	// Discovery finds the pool's backends.
	Discovery *Discovery `yaml:"discovery"`
}

// ServiceHealth is a service's active check of each of its backends,
// run by ober (one check per backend per node, whatever the number of
// instances), which tells every instance the result.
type ServiceHealth struct {
	// Kind is tcp (connect), http, https, probe (send bytes, expect an
	// answer), exec (a command; exit 0 is up) or none (always up).
	Kind string `yaml:"kind"`
	// Interval between checks; default 2s.
	Interval Duration `yaml:"interval"`
	// Timeout of one check; default the smaller of 1s and Interval.
	Timeout Duration `yaml:"timeout"`
	// Fall and Rise are the consecutive failed and passed checks that
	// turn a backend down and up; defaults 3 and 2.
	Fall int `yaml:"fall"`
	Rise int `yaml:"rise"`
	// Port checks another port than the backend's.
	Port uint16 `yaml:"port"`
	// InitialState is a backend's state before its first verdict: up
	// (default) or down.
	InitialState string `yaml:"initial_state"`

	// Method, Path, Host and Status are the HTTP check's: default GET,
	// "/", the backend's address, and "200-399" (a status or a range).
	Method string `yaml:"method"`
	Path   string `yaml:"path"`
	Host   string `yaml:"host"`
	Status string `yaml:"status"`
	// TLSVerify verifies an https backend's certificate (against CAFile,
	// else the system's roots); default off.
	TLSVerify bool   `yaml:"tls_verify"`
	CAFile    string `yaml:"ca_file"`

	// Send is what a probe writes (none: it only reads); Expect a prefix
	// of the answer, ExpectRegexp a regular expression it must match.
	Send         string `yaml:"send"`
	Expect       string `yaml:"expect"`
	ExpectRegexp string `yaml:"expect_regexp"`
	// Protocol is the probe's: tcp (default), or udp (one datagram sent,
	// the first reply matched), which a UDP service's backends need.
	Protocol string `yaml:"protocol"`

	// Command is an exec check: the program and its arguments, run as
	// haproxy.user with the backend in OBER_BACKEND_ADDR and
	// OBER_BACKEND_PORT.
	Command []string `yaml:"command"`
}

// TLSPassthrough routes TLS connections by the name in their
// ClientHello, as GoBetween's sni does.
type TLSPassthrough struct {
	// Routes are tried in order; the first that matches names the pool.
	Routes []SNIRoute `yaml:"routes"`
	// Default is the pool of a connection no route matches or without a
	// name: a pool's name, or "reject" (default).
	Default string `yaml:"default"`
	// ReadTimeout bounds the wait for the ClientHello; default 5s.
	ReadTimeout Duration `yaml:"read_timeout"`
}

// SNIRoute sends the names it matches to Pool.
type SNIRoute struct {
	// Names match exactly (case aside); Regexp is an RE2 expression.
	Names  []string `yaml:"names"`
	Regexp string   `yaml:"regexp"`
	Pool   string   `yaml:"pool"`
}

// ServiceTimeouts override the top-level timeouts for one service.
type ServiceTimeouts struct {
	Connect     Duration `yaml:"connect"`
	ClientIdle  Duration `yaml:"client_idle"`
	BackendIdle Duration `yaml:"backend_idle"`
	// UDP and UDPStream are the conntrack timeouts of a UDP flow of a
	// udp or nat service: after its last datagram, and once it has gone
	// both ways for a while; 0 keeps the kernel's (30s, 120s).
	UDP       Duration `yaml:"udp"`
	UDPStream Duration `yaml:"udp_stream"`
}

// Access is a service's client access list, enforced in XDP.
type Access struct {
	// Default is allow (default) or deny: what a client no rule matches
	// gets.
	Default string `yaml:"default"`
	// Rules are "allow X" or "deny X", X an address, a CIDR or a
	// whitelist's name (frontend-http, backend-http, routers); the first
	// rule that matches decides.
	Rules []string `yaml:"rules"`
}

// VIPPool is a range of addresses handed to services without VIPs.
type VIPPool struct {
	Name string `yaml:"name"`
	// Addresses are CIDRs ("10.20.0.0/28") and ranges
	// ("10.20.1.10-10.20.1.20").
	Addresses []string `yaml:"addresses"`
	// AvoidBuggyIPs skips addresses ending in .0 and .255.
	AvoidBuggyIPs bool `yaml:"avoid_buggy_ips"`
	// AutoAssign lets services that name no pool take addresses from
	// it; default true.
	AutoAssign *bool `yaml:"auto_assign"`
}

// PortRange is "from-to", both included.
type PortRange struct{ From, To uint16 }

// IsZero reports an unset range.
func (r PortRange) IsZero() bool { return r.From == 0 && r.To == 0 }

// UnmarshalText parses "7000-7010".
func (r *PortRange) UnmarshalText(b []byte) error {
	a, z, ok := strings.Cut(string(b), "-")
	from, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	to, err2 := strconv.ParseUint(strings.TrimSpace(z), 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("%q is not a port range (such as 7000-7010)", b)
	}
	r.From, r.To = uint16(from), uint16(to)
	return nil
}

// MarshalText writes "from-to".
func (r PortRange) MarshalText() ([]byte, error) {
	return fmt.Appendf(nil, "%d-%d", r.From, r.To), nil
}
