package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/sysuser"
)

// Service modes.
const (
	ModeTLS  = "tls"
	ModeHTTP = "http"
)

// Node XDP modes.
const (
	XDPModeAuto    = "auto"
	XDPModeNative  = "native"
	XDPModeGeneric = "generic"
)

// HA modes.
const (
	HAModeNone = "none"
	HAModeBGP  = "bgp"
	HAModeVRRP = "vrrp"
)

// Whitelist names, as services[].whitelist and the keys of
// Resolved.Whitelists spell them.
const (
	WhitelistFrontendHTTP = "frontend-http"
	WhitelistRouters      = "routers"
	WhitelistBackendHTTP  = "backend-http"
)

// Defaults filled in by ApplyDefaults; SCHEMA.md lists them for operators.
const (
	DefaultXDPMode       = XDPModeAuto
	DefaultVIPInterface  = "lo"
	DefaultBPFFSRoot     = "/sys/fs/bpf/ober"
	DefaultRuntimeDir    = "/run/ober"
	DefaultStateDir      = "/var/lib/ober"
	DefaultWhitelist     = WhitelistFrontendHTTP
	DefaultBalance       = "leastconn"
	DefaultWeight        = 100
	DefaultHealthPath    = "/"
	DefaultHealthFall    = 3
	DefaultHealthRise    = 2
	DefaultMaxConn       = 20000
	DefaultHAMode        = HAModeNone
	DefaultAPIListen     = "127.0.0.1:8404"
	DefaultHAProxyBinary = "haproxy"
	// DefaultBufSize is haproxy.tune.bufsize's default: four times
	// HAProxy's 16384. Measured against 16384 side by side
	// (BENCHMARKS.md, "Per-core efficiency"), it moved 1.09-1.16 times
	// the GET bytes and 1.34-1.85 times the PUT bytes per HAProxy CPU
	// second in two runs, with handshakes unchanged. It costs
	// memory only while a transfer is in flight: HAProxy takes a buffer
	// when data arrives and gives it back once sent.
	DefaultBufSize      = 64 << 10
	DefaultHAProxyUser  = sysuser.HAProxyUser
	DefaultHAProxyGroup = sysuser.HAProxyUser
	// DefaultChrootName is haproxy.chroot's default under
	// node.runtime_dir.
	DefaultChrootName = "empty"
	// DefaultAPISocketName is api.socket's default under
	// node.runtime_dir.
	DefaultAPISocketName = "api.sock"

	DefaultHealthInterval = 2 * time.Second
	DefaultConnect        = 5 * time.Second
	DefaultClient         = 5 * time.Minute
	DefaultServer         = 5 * time.Minute
	DefaultHTTPRequest    = 30 * time.Second
	DefaultHTTPKeepAlive  = 60 * time.Second
	DefaultDrain          = 30 * time.Second
	DefaultMaxTransfer    = time.Hour
	DefaultTLSHandshake   = 10 * time.Second

	DefaultConnectionsPerSource = 1000

	// A service's defaults (services.go).
	DefaultSlowstart   = 30 * time.Second
	DefaultFallback    = FallbackServe503
	DefaultPriority    = 1
	DefaultState       = StateEnabled
	DefaultAccess      = AccessAllow
	DefaultSNIDefault  = PassthroughReject
	DefaultSNITimeout  = 5 * time.Second
	DefaultHealthKind  = CheckTCP
	DefaultHealthState = HealthUp
	// DefaultHealthTimeout is a check's timeout unless the interval is
	// shorter.
	DefaultHealthTimeout = time.Second
	DefaultHealthMethod  = "GET"
	DefaultHealthStatus  = "200-399"
	// LegacyHealthStatus is what the check of the top-level pool, from
	// backends.health, accepts: S3 answers "/" with 200 or 403.
	LegacyHealthStatus = "200-499"

	// DefaultResolveTimeout bounds Resolve when its context has no
	// deadline.
	DefaultResolveTimeout = 10 * time.Second
)

// Limits enforced by Validate.
const (
	MaxInstances = 64
	MaxWeight    = 256
	MaxMaxConn   = 1000000
	MaxFallRise  = 100

	// MaxPriority is the largest backend priority; each priority of a
	// pool is an HAProxy backend of its own.
	MaxPriority = 1000
	// MaxPortRange is the most ports a service's range may hold: each
	// port of each VIP is one row of the dataplane's services table.
	MaxPortRange = 1024
	// MaxAccessRules is the most rules a service's access list may hold,
	// the size the dataplane's per-service tries are made for.
	MaxAccessRules = 10000

	MinHealthInterval = 100 * time.Millisecond
	// MaxTimeout is the longest timeout HAProxy accepts (2^31-1 ms).
	MaxTimeout = (1<<31 - 1) * time.Millisecond
)

// environment is what a Config reads from the machine it runs on. Tests
// give a Config a fake one through Config.env; a nil env, or a nil
// function in it, means the real machine.
type environment struct {
	hostname func() (string, error) // default os.Hostname
	cpus     func() []int           // ascending; default affinityCPUs
	now      func() time.Time       // default time.Now
	// lookupUser and lookupGroup find accounts; default os/user's.
	lookupUser  func(name string) (*user.User, error)
	lookupGroup func(name string) (*user.Group, error)
}

// lookupUser finds a user account of the machine.
func (c *Config) lookupUser(name string) (*user.User, error) {
	if c.env != nil && c.env.lookupUser != nil {
		return c.env.lookupUser(name)
	}
	return user.Lookup(name)
}

// lookupGroup finds a group of the machine.
func (c *Config) lookupGroup(name string) (*user.Group, error) {
	if c.env != nil && c.env.lookupGroup != nil {
		return c.env.lookupGroup(name)
	}
	return user.LookupGroup(name)
}

// hostname is the host name of the machine.
func (c *Config) hostname() (string, error) {
	if c.env != nil && c.env.hostname != nil {
		return c.env.hostname()
	}
	return os.Hostname()
}

// allowedCPUs lists, in ascending order, the CPUs this process may run on.
func (c *Config) allowedCPUs() []int {
	if c.env != nil && c.env.cpus != nil {
		return c.env.cpus()
	}
	return affinityCPUs()
}

// now is the current time, against which certificates expire.
func (c *Config) now() time.Time {
	if c.env != nil && c.env.now != nil {
		return c.env.now()
	}
	return time.Now()
}

// affinityCPUs lists, in ascending order, the CPUs this process may run on.
// If the affinity cannot be read it assumes CPUs 0..NumCPU-1.
func affinityCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		var cpus []int
		for cpu := 0; cpu < len(set)*64; cpu++ {
			if set.IsSet(cpu) {
				cpus = append(cpus, cpu)
			}
		}
		if len(cpus) > 0 {
			return cpus
		}
	}
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus
}

// ApplyDefaults fills every zero value that has a default (see SCHEMA.md).
// It never overwrites a value that is set, so calling it again changes
// nothing. Values that are wrong stay as they are for Validate to report.
func (c *Config) ApplyDefaults() {
	n := &c.Node
	if n.Name == "" {
		if h, err := c.hostname(); err == nil {
			n.Name = h
		}
	}
	setString(&n.XDPMode, DefaultXDPMode)
	setString(&n.VIPInterface, DefaultVIPInterface)
	setString(&n.BPFFSRoot, DefaultBPFFSRoot)
	setString(&n.RuntimeDir, DefaultRuntimeDir)
	setString(&n.StateDir, DefaultStateDir)

	b := &c.Backends
	c.applyBalance("backends.balance", &b.Balance, true)
	setString(&b.Balance, DefaultBalance)
	applyServerDefaults(b.Servers, true)
	setString(&b.Health.Path, DefaultHealthPath)
	setDuration(&b.Health.Interval, DefaultHealthInterval)
	setInt(&b.Health.Fall, DefaultHealthFall)
	setInt(&b.Health.Rise, DefaultHealthRise)
	applyDiscoveryDefaults(b.Discovery)
	applyConsulDefaults(&c.Consul)

	// After the top-level backends: services on the top-level pool take
	// their balance and health check from there.
	for i := range c.Services {
		c.applyServiceDefaults(i)
	}
	for i := range c.VIPPools {
		if c.VIPPools[i].AutoAssign == nil {
			on := true
			c.VIPPools[i].AutoAssign = &on
		}
	}

	in := &c.Instances
	if in.Count == 0 {
		in.Count = len(in.CPUs)
	}
	if in.Count == 0 || len(in.CPUs) == 0 {
		aff := c.allowedCPUs()
		if in.Count == 0 {
			in.Count = min(len(aff), MaxInstances)
		}
		if len(in.CPUs) == 0 && in.Count > 0 && in.Count <= len(aff) {
			in.CPUs = slices.Clone(aff[:in.Count])
		}
	}
	setInt(&in.MaxConn, DefaultMaxConn)
	if in.Steering == "" {
		in.Steering = SteeringAuto
	}

	t := &c.Timeouts
	setDuration(&t.Connect, DefaultConnect)
	setDuration(&t.Client, DefaultClient)
	setDuration(&t.Server, DefaultServer)
	setDuration(&t.HTTPRequest, DefaultHTTPRequest)
	setDuration(&t.HTTPKeepAlive, DefaultHTTPKeepAlive)
	setDuration(&t.Drain, DefaultDrain)
	setDuration(&t.MaxTransfer, DefaultMaxTransfer)
	setDuration(&t.TLSHandshake, DefaultTLSHandshake)
	if c.Limits.ConnectionsPerSource == nil {
		n := DefaultConnectionsPerSource
		c.Limits.ConnectionsPerSource = &n
	}

	setString(&c.HA.Mode, DefaultHAMode)
	if c.HA.BGP != nil {
		c.HA.BGP.applyDefaults()
	}
	c.applyVRRPDefaults()
	setString(&c.API.Listen, DefaultAPIListen)
	setString(&c.HAProxy.Binary, DefaultHAProxyBinary)
	setString(&c.HAProxy.User, DefaultHAProxyUser)
	setString(&c.HAProxy.Group, DefaultHAProxyGroup)
	c.HAProxy.Tune = c.HAProxy.Tune.WithDefaults()
	c.TLS.SessionTickets.applyDefaults()
	// A relative runtime_dir is reported once, there, not again here.
	if filepath.IsAbs(n.RuntimeDir) {
		setString(&c.HAProxy.Chroot, filepath.Join(n.RuntimeDir, DefaultChrootName))
		setString(&c.API.Socket, filepath.Join(n.RuntimeDir, DefaultAPISocketName))
	}
}

// WithDefaults is t with ober's defaults where it leaves a key unset.
func (t HAProxyTune) WithDefaults() HAProxyTune {
	if t.BufSize == 0 {
		t.BufSize = DefaultBufSize
	}
	return t
}

func setString(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

func setInt(p *int, def int) {
	if *p == 0 {
		*p = def
	}
}

func setDuration(p *Duration, def time.Duration) {
	if p.Duration == 0 {
		p.Duration = def
	}
}

func defaultServiceName(s *Service) string {
	port := s.Port
	if port == 0 {
		port = s.Ports.From
	}
	return s.Mode + "-" + strconv.Itoa(int(port))
}

func defaultServerName(i int) string { return "s" + strconv.Itoa(i) }

// CPUs returns the CPU of each HAProxy instance, instance i on CPUs()[i]:
// instances.cpus when given, else the first instances.count CPUs this
// process may run on (all of them, at most 64, when count is 0 too). It
// returns nil if count exceeds those CPUs, which Validate reports. The
// slice is a copy.
func (c *Config) CPUs() []int {
	if len(c.Instances.CPUs) > 0 {
		return slices.Clone(c.Instances.CPUs)
	}
	aff := c.allowedCPUs()
	n := c.Instances.Count
	if n == 0 {
		n = min(len(aff), MaxInstances)
	}
	if n < 0 || n > len(aff) {
		return nil
	}
	return slices.Clone(aff[:n])
}

// splitHostPort splits a backend address. msg is empty when host and port
// are usable; it names the problem otherwise. The host's syntax is not
// checked here.
func splitHostPort(addr string) (host string, port uint16, msg string) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, "must be host:port"
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, "port must be 1-65535"
	}
	if h == "" {
		return "", 0, "host is missing"
	}
	return h, uint16(n), ""
}

func isIPLiteral(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// usesSharedPool reports whether services[i] is served by the top-level
// backends.servers: a tls or http service without backends of its own (a
// tcp, udp or nat service never takes it). An
// unknown mode counts as one, since it may be a typo of either.
func (c *Config) usesSharedPool(i int) bool {
	s := &c.Services[i]
	return s.Mode != ModeTCP && !IsKernelMode(s.Mode) && len(s.Backends) == 0 && s.Discovery == nil
}

// isL7 reports whether a mode proxies HTTP, where backends can have TLS,
// SNI and a PROXY header of their own.
func isL7(mode string) bool { return mode == ModeTLS || mode == ModeHTTP }

func (c *Config) applyServiceDefaults(i int) {
	s := &c.Services[i]
	if s.Name == "" && s.Mode != "" {
		s.Name = defaultServiceName(s)
	}
	if s.Mode == ModeHTTP {
		setString(&s.Whitelist, DefaultWhitelist)
	}
	c.applyBalance(fmt.Sprintf("services[%d].balance", i), &s.Balance, false)
	c.applyKernelDefaults(i)
	applyDiscoveryDefaults(s.Discovery)
	for j := range s.Pools {
		applyDiscoveryDefaults(s.Pools[j].Discovery)
	}
	if s.Balance == "" {
		s.Balance = DefaultBalance
		if c.usesSharedPool(i) && slices.Contains(balanceMethods, c.Backends.Balance) {
			s.Balance = c.Backends.Balance
		}
	}
	l7 := isL7(s.Mode)
	applyServerDefaults(s.Backends, l7)
	for j := range s.Pools {
		applyServerDefaults(s.Pools[j].Backends, l7)
	}
	if s.Slowstart == nil {
		s.Slowstart = &Duration{DefaultSlowstart}
	}
	setString(&s.Fallback, DefaultFallback)
	if s.Health == nil {
		s.Health = &ServiceHealth{}
	}
	fillHealth(s.Health, c.healthDefaults(i))
	if t := s.TLSPassthrough; t != nil {
		setString(&t.Default, DefaultSNIDefault)
		setDuration(&t.ReadTimeout, DefaultSNITimeout)
	}
	if s.Access != nil {
		setString(&s.Access.Default, DefaultAccess)
	}
}

// applyServerDefaults names the servers of one pool s<index> and fills
// their weight, priority and state; l7 pools also get an SNI.
func applyServerDefaults(servers []BackendServer, l7 bool) {
	for i := range servers {
		s := &servers[i]
		if s.Name == "" {
			s.Name = defaultServerName(i)
		}
		if s.Weight == nil {
			w := DefaultWeight
			s.Weight = &w
		}
		setInt(&s.Priority, DefaultPriority)
		setString(&s.State, DefaultState)
		if l7 && s.TLS && s.SNI == "" {
			if host, _, msg := splitHostPort(s.Address); msg == "" && !isIPLiteral(host) && addrlist.CheckHostname(host) == nil {
				s.SNI = host
			}
		}
	}
}

// healthDefaults is what services[i]'s health check is made of where it
// says nothing: a tcp connect every 2s, except on the top-level pool,
// whose check backends.health has always described (an HTTP GET of its
// path, any answer but a 5xx up). Values of backends.health that are
// wrong are left out, so that Validate reports them once, there.
func (c *Config) healthDefaults(i int) ServiceHealth {
	d := ServiceHealth{
		Kind:         DefaultHealthKind,
		Interval:     Duration{DefaultHealthInterval},
		Fall:         DefaultHealthFall,
		Rise:         DefaultHealthRise,
		InitialState: DefaultHealthState,
		Method:       DefaultHealthMethod,
		Path:         DefaultHealthPath,
		Status:       DefaultHealthStatus,
	}
	if !c.usesSharedPool(i) || !isL7(c.Services[i].Mode) {
		return d
	}
	h := &c.Backends.Health
	d.Kind = CheckHTTP
	d.Status = LegacyHealthStatus
	if h.Path != "" && healthPathProblem(h.Path) == "" {
		d.Path = h.Path
	}
	if v := h.Interval.Duration; v >= MinHealthInterval && v <= MaxTimeout {
		d.Interval = h.Interval
	}
	if h.Fall >= 1 && h.Fall <= MaxFallRise {
		d.Fall = h.Fall
	}
	if h.Rise >= 1 && h.Rise <= MaxFallRise {
		d.Rise = h.Rise
	}
	return d
}

// fillHealth fills the zero values of h that its kind uses from d. A
// check of kind none has nothing to fill.
func fillHealth(h *ServiceHealth, d ServiceHealth) {
	setString(&h.Kind, d.Kind)
	if h.Kind == CheckNone {
		return
	}
	setDuration(&h.Interval, d.Interval.Duration)
	if h.Timeout.Duration == 0 && h.Interval.Duration > 0 {
		h.Timeout.Duration = min(DefaultHealthTimeout, h.Interval.Duration)
	}
	setInt(&h.Fall, d.Fall)
	setInt(&h.Rise, d.Rise)
	setString(&h.InitialState, d.InitialState)
	if h.Kind == CheckHTTP || h.Kind == CheckHTTPS {
		setString(&h.Method, d.Method)
		setString(&h.Path, d.Path)
		setString(&h.Status, d.Status)
	}
}
