package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// DefaultPath is where the daemon reads its configuration.
const DefaultPath = "/etc/ober/ober.yaml"

// Config is the whole of ober.yaml. Every field has a yaml tag; keys the
// schema does not know are errors. Zero values mean "use the default"
// (see README "Configuration"); Load fills the defaults in.
type Config struct {
	Node Node   `yaml:"node"`
	VIPs []Addr `yaml:"vips"`
	// VIPPools are address pools for services without VIPs (IPAM).
	VIPPools   []VIPPool  `yaml:"vip_pools"`
	Services   []Service  `yaml:"services"`
	Backends   Backends   `yaml:"backends"`
	Instances  Instances  `yaml:"instances"`
	Timeouts   Timeouts   `yaml:"timeouts"`
	Limits     Limits     `yaml:"limits"`
	HA         HA         `yaml:"ha"`
	Whitelists Whitelists `yaml:"whitelists"`
	API        API        `yaml:"api"`
	HAProxy    HAProxy    `yaml:"haproxy"`
	// TLS holds the node-wide settings of the services that terminate
	// TLS (tickets.go); each service's certificate is its own tls block.
	TLS TLSSettings `yaml:"tls"`
	// Consul is the local Consul agent: kind consul's default, and where
	// ober registers its services.
	Consul Consul `yaml:"consul"`

	// env is the machine the configuration is for; nil means this one.
	// The yaml library and structChecker skip unexported fields, and
	// copies of a Config share it.
	env *environment
	// balanceNotes are what ApplyDefaults made of GORB's and GoBetween's
	// balance names (BalanceNotes).
	balanceNotes []string
}

// Node describes this machine.
type Node struct {
	// Name identifies the node in logs, metrics and the X-Served-By
	// header; default: the host name.
	Name string `yaml:"name"`
	// Interfaces get the XDP program. Required, at least one.
	Interfaces []string `yaml:"interfaces"`
	// XDPMode is auto (native, else generic), native or generic.
	XDPMode string `yaml:"xdp_mode"`
	// VIPInterface receives the VIP addresses (mode none and bgp) so the
	// kernel accepts their traffic; default lo.
	VIPInterface string `yaml:"vip_interface"`
	// BPFFSRoot is the pin directory; default /sys/fs/bpf/ober.
	BPFFSRoot string `yaml:"bpffs_root"`
	// RuntimeDir holds rendered HAProxy configs, PEM bundles and the
	// runtime sockets; default /run/ober.
	RuntimeDir string `yaml:"runtime_dir"`
	// StateDir keeps what must survive a reboot (the generated
	// self-signed certificate); default /var/lib/ober.
	StateDir string `yaml:"state_dir"`
}

// Service is one port (or range of ports) served on its VIPs, with its
// own pool of backends, balance method and health check (services.go).
type Service struct {
	// Name is unique and names the HAProxy frontend; default
	// "<mode>-<port>".
	Name string `yaml:"name"`
	Port uint16 `yaml:"port"`
	// Ports is a range served instead of Port (mode tcp): every port of
	// it reaches the same listener, and a backend without a port is
	// connected to on the port the client connected to.
	Ports PortRange `yaml:"ports"`
	// Mode is "tls" (HAProxy terminates TLS), "http" (plain HTTP,
	// admitted only from Whitelist, enforced in XDP) or "tcp" (an L4
	// proxy), "udp" or "nat" (forwarded by the kernel through nftables).
	Mode string `yaml:"mode"`
	// VIPs restricts the service to some of the VIPs; default all, or an
	// address of VIPPool.
	VIPs []Addr `yaml:"vips"`
	// VIPPool names the vip_pools entry a service without VIPs gets its
	// address from; default the first pool with auto_assign, when the
	// top-level vips are empty.
	VIPPool string `yaml:"vip_pool"`
	// TLS is required for mode tls and refused otherwise.
	TLS *TLS `yaml:"tls"`
	// Whitelist names the list admitting clients of a mode http service:
	// frontend-http (default) or backend-http.
	Whitelist string `yaml:"whitelist"`
	// Reject answers refused SYNs with a RST instead of dropping them.
	Reject bool `yaml:"reject"`

	// Balance is how new connections are spread over the backends (see
	// Balances); default leastconn. GORB's (IPVS) and GoBetween's names
	// are accepted as aliases.
	Balance string `yaml:"balance"`
	// Backends are the service's own pool; default (tls and http) the
	// top-level backends.
	Backends []BackendServer `yaml:"backends"`
	// Pools are further named pools, for TLSPassthrough's routes.
	Pools []Pool `yaml:"pools"`
	// Discovery finds the backends of the service's own pool.
	Discovery *Discovery `yaml:"discovery"`
	// Health is the service's active check; default the top-level
	// backends.health for a service on the top-level pool, else a tcp
	// connect.
	Health *ServiceHealth `yaml:"health"`
	// Slowstart ramps a returning backend's weight up over this time;
	// default 30s, 0 for none.
	Slowstart *Duration `yaml:"slowstart"`
	// Fallback is what happens when no backend is up: serve_503
	// (default), keep_last or reject.
	Fallback string `yaml:"fallback"`
	// ProxyProtocol sends a PROXY header (v1 or v2) to the backends of
	// a mode tcp service.
	ProxyProtocol string `yaml:"proxy_protocol"`
	// TLSPassthrough routes a mode tcp service's TLS connections by their
	// SNI, without terminating them.
	TLSPassthrough *TLSPassthrough `yaml:"tls_passthrough"`
	// MaxConnections caps the service's connections per instance; 0 is
	// instances.maxconn.
	MaxConnections int `yaml:"max_connections"`
	// Timeouts override the top-level ones for this service.
	Timeouts ServiceTimeouts `yaml:"timeouts"`
	// Access admits or refuses clients by address, first match wins,
	// enforced in XDP for every mode.
	Access *Access `yaml:"access"`

	// Protocol is what a mode nat service forwards: tcp (default) or
	// udp; a mode udp service is udp.
	Protocol string `yaml:"protocol"`
	// Forward is how a udp or nat service reaches its backends: fullnat
	// (default; they see the node's address) or dnat (they see the
	// client's, and must route back through the node).
	Forward string `yaml:"forward"`
	// HashSourcePort makes balance source of a udp or nat service hash
	// the client's port with its address.
	HashSourcePort bool `yaml:"hash_source_port"`
}

// TLS is a service's certificate.
type TLS struct {
	// Cert is a PEM file with the certificate chain (leaf first); it may
	// also hold the key.
	Cert string `yaml:"cert"`
	// Key is a PEM file with the private key; default: the key in Cert.
	Key string `yaml:"key"`
	// SelfSigned makes ober generate (once, in StateDir) a self-signed
	// certificate for the VIPs and Node.Name when Cert is empty. For labs
	// and tests.
	SelfSigned bool `yaml:"self_signed"`
}

// Backends are the S3 servers behind every service.
type Backends struct {
	// Balance is an HAProxy algorithm: leastconn (default), roundrobin,
	// source or random.
	Balance string          `yaml:"balance"`
	Servers []BackendServer `yaml:"servers"`
	Health  HealthCheck     `yaml:"health"`
	// Discovery finds the servers.
	Discovery *Discovery `yaml:"discovery"`
}

// BackendServer is one backend server.
type BackendServer struct {
	// Name is unique in its pool; default "s<index>".
	Name string `yaml:"name"`
	// Address is host:port, or a host alone on a service with a port
	// range (the client's port is used); the host may be a name, resolved
	// when the configuration is applied.
	Address string `yaml:"address"`
	// Weight is 0..256, default 100; 0 takes the server out of rotation.
	Weight *int `yaml:"weight"`
	// Priority: a server is sent traffic only while no server of a lower
	// priority number is up (DNS SRV order); default 1.
	Priority int `yaml:"priority"`
	// State is the operator's: enabled (default), drain (no new
	// connections, the open ones finish) or disabled (out at once).
	State string `yaml:"state"`
	// TLS re-encrypts to the backend.
	TLS bool `yaml:"tls"`
	// CAFile verifies the backend's certificate; without it (and with
	// TLS) the certificate is not verified, which README warns about.
	CAFile string `yaml:"ca_file"`
	// SNI sent to a TLS backend; default the host part of Address when
	// it is a name.
	SNI string `yaml:"sni"`
	// ProxyProtocol sends a PROXY v2 header instead of relying on
	// X-Forwarded-For (tls and http services).
	ProxyProtocol bool `yaml:"proxy_protocol"`
}

// HealthCheck is HAProxy's active check of every backend server.
type HealthCheck struct {
	// Path of an HTTP GET; default "/". S3 answers 403 or 200 on "/"
	// depending on auth; any 2xx-4xx counts as up.
	Path     string   `yaml:"path"`
	Interval Duration `yaml:"interval"` // default 2s
	Fall     int      `yaml:"fall"`     // default 3
	Rise     int      `yaml:"rise"`     // default 2
}

// Instances are the per-CPU HAProxy processes.
type Instances struct {
	// Count defaults to one per CPU this process may run on (at most 64).
	Count int `yaml:"count"`
	// CPUs pins instance i to CPUs[i]; default the first Count CPUs of the
	// affinity set. len(CPUs) must equal Count when both are given.
	CPUs []int `yaml:"cpus"`
	// MaxConn per instance; default 20000.
	MaxConn int `yaml:"maxconn"`
	// Steering decides whether XDP redirects each packet of a dispatched
	// service to its instance's CPU (a cpumap hop); default auto. Off,
	// packets are processed on the CPU the NIC's RSS chose and sk_lookup
	// alone picks the instance.
	Steering Steering `yaml:"steering"`
}

// Steering is instances.steering: on, off, or auto.
type Steering string

// The values of instances.steering. YAML's true and false read as on and
// off, as the key was a bool before auto.
const (
	// SteeringAuto hops only where the NIC cannot spread the receive
	// work over the instances' CPUs itself: an interface of
	// node.interfaces has fewer receive queues than there are instances
	// (see plan.DecideSteering).
	SteeringAuto Steering = "auto"
	SteeringOn   Steering = "on"
	SteeringOff  Steering = "off"
)

// UnmarshalText reads on, off, auto, true or false.
func (s *Steering) UnmarshalText(b []byte) error {
	switch v := strings.ToLower(string(b)); v {
	case "auto":
		*s = SteeringAuto
	case "on", "true":
		*s = SteeringOn
	case "off", "false":
		*s = SteeringOff
	default:
		return fmt.Errorf("%q is not a steering mode (auto, on or off)", b)
	}
	return nil
}

// Timeouts bound each phase of a connection. HAProxy's client and server
// timeouts are inactivity timeouts, so multi-GB transfers are not cut as
// long as data moves.
type Timeouts struct {
	Connect       Duration `yaml:"connect"`         // default 5s
	Client        Duration `yaml:"client"`          // default 5m
	Server        Duration `yaml:"server"`          // default 5m
	HTTPRequest   Duration `yaml:"http_request"`    // default 30s
	HTTPKeepAlive Duration `yaml:"http_keep_alive"` // default 60s
	// Drain is how long a stopping node's instances may finish their
	// connections, after the node withdrew or released its VIPs, before
	// they are stopped and ober exits; default 30s.
	Drain Duration `yaml:"drain"`
	// MaxTransfer is how long an instance replaced by a reload or a
	// restart handover may finish its transfers before it is stopped;
	// default 1h, so that a certificate rotation or a backend change cuts
	// no S3 transfer of less.
	MaxTransfer Duration `yaml:"max_transfer"`
	// TLSHandshake bounds a client's TLS handshake, from the connection
	// to the server's first answer; default 10s.
	TLSHandshake Duration `yaml:"tls_handshake"`
}

// Limits bound what one client address may hold of each proxied
// service of the node (tls, http and tcp; not udp or nat).
type Limits struct {
	// ConnectionsPerSource caps a client address's open connections to
	// one service; default 1000, 0 for no cap.
	ConnectionsPerSource *int `yaml:"connections_per_source"`
	// ConnectionRatePerSource caps a client address's new connections
	// per second; default 0, no cap.
	ConnectionRatePerSource int `yaml:"connection_rate_per_source"`
}

// HA selects how the VIPs stay reachable.
type HA struct {
	// Mode is none (default), bgp or vrrp.
	Mode string `yaml:"mode"`
	// BGP is required for mode bgp and refused otherwise (bgp.go).
	BGP *BGP `yaml:"bgp"`
	// VRRP is required for mode vrrp and refused otherwise (vrrp.go).
	VRRP *VRRP `yaml:"vrrp"`
}

// Whitelists hold the client lists enforced in XDP, in the syntax of
// `ober sync`: Slurm hostlists, names, addresses and CIDRs.
type Whitelists struct {
	FrontendHTTP []string `yaml:"frontend_http"`
	Routers      []string `yaml:"routers"`
	BackendHTTP  []string `yaml:"backend_http"`
}

// API is the daemon's health, status and metrics server, and the
// management API's listeners.
type API struct {
	// Listen is host:port; default 127.0.0.1:8404.
	Listen string `yaml:"listen"`
	// Socket is the management API's unix socket, for root on this node
	// (the CLI). Default <node.runtime_dir>/api.sock; "off" disables it.
	Socket string `yaml:"socket"`
	// Manage is the management API's TCP listener, off unless
	// Manage.Listen is set.
	Manage APIManage `yaml:"manage"`
	// GORBCompat is host:port of a listener that speaks GORB's routes and
	// JSON; off unless set. A loopback address only: GORB's clients send
	// no credentials.
	GORBCompat string `yaml:"gorb_compat"`
}

// APISocketOff is the value of api.socket that disables the socket.
const APISocketOff = "off"

// APIManage is the management API over TCP: TLS only, and every request
// authenticated by a bearer token or a client certificate.
type APIManage struct {
	// Listen is host:port; empty: no TCP listener.
	Listen string `yaml:"listen"`
	// TLS is the listener's certificate and, optionally, the CA that
	// signs the clients' certificates.
	TLS APITLS `yaml:"tls"`
	// TokensFile holds the bearer tokens, one "name scope secret" a line
	// (control/mgmt/access reads it).
	TokensFile string `yaml:"tokens_file"`
}

// APITLS is the management listener's TLS configuration.
type APITLS struct {
	// Cert is a PEM file with the certificate chain (leaf first); it may
	// also hold the key.
	Cert string `yaml:"cert"`
	// Key is a PEM file with the private key; default: the key in Cert.
	Key string `yaml:"key"`
	// ClientCA is a PEM file of the CAs whose client certificates are
	// accepted; empty: no client certificates.
	ClientCA string `yaml:"client_ca"`
}

// HAProxy selects and tunes the HAProxy binary.
type HAProxy struct {
	// Binary is a path or a name looked up in PATH; default haproxy.
	Binary string `yaml:"binary"`
	// ServedByHeader adds "X-Served-By: <node>/<instance>" to responses,
	// to see Maglev at work (the lab turns it on).
	ServedByHeader bool `yaml:"served_by_header"`
	// User and Group are who the instances run as once they have read
	// their configuration, certificates and sockets as root; default
	// ober-haproxy (created by `ober bootstrap`). Never root.
	User  string `yaml:"user"`
	Group string `yaml:"group"`
	// Chroot is the instances' root directory: it must be empty and
	// writable by root only. Default <node.runtime_dir>/empty, which ober
	// creates.
	Chroot string `yaml:"chroot"`
	// Tune sets HAProxy's buffer and TLS record sizes; unset keys keep
	// HAProxy's defaults.
	Tune HAProxyTune `yaml:"tune"`
}

// HAProxyTune is haproxy.tune: sizes in bytes, 0 for HAProxy's default
// (SCHEMA.md names each directive and its range).
type HAProxyTune struct {
	BufSize      int `yaml:"bufsize"`
	SSLMaxRecord int `yaml:"ssl_maxrecord"`
	ClientSndBuf int `yaml:"client_sndbuf"`
	ClientRcvBuf int `yaml:"client_rcvbuf"`
	ServerSndBuf int `yaml:"server_sndbuf"`
	ServerRcvBuf int `yaml:"server_rcvbuf"`
}

// Addr is an IP address written as text in YAML.
type Addr struct{ netip.Addr }

// UnmarshalText parses an address, naming the value when it is not one.
func (a *Addr) UnmarshalText(b []byte) error {
	p, err := netip.ParseAddr(string(b))
	if err != nil {
		return fmt.Errorf("%q is not an IP address", b)
	}
	a.Addr = p
	return nil
}

// MarshalText writes the address.
func (a Addr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Duration is a time.Duration written as Go duration text ("5s", "2m").
type Duration struct{ time.Duration }

// UnmarshalText parses a duration, naming the value when it is not one.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (such as 500ms, 5s, 2m)", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
