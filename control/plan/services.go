package plan

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/pulse"
	"github.com/ober-ingress/ober/control/runtime/servers"
	"github.com/ober-ingress/ober/loader"
)

// SharedPool is the HAProxy pool of the top-level backends.servers.
const SharedPool = haproxy.DefaultPool

// Server is one backend server of one HAProxy pool: what the health
// checks (pulse) probe and the servers controller keeps in its desired
// state in every instance.
type Server struct {
	// Service is the service that owns the pool (the first one, for the
	// top-level pool several tls and http services share); Pool is the
	// pool's name there (config.DefaultPool or one of pools[]).
	Service, Pool string
	// HAPool is the HAProxy pool (haproxy.Pool.Name).
	HAPool string
	Name   string
	Addr   netip.AddrPort
	// Weight, Priority and Admin are as configured.
	Weight, Priority int
	Admin            string
	// Control is the server as the servers controller sees it; Target
	// as the health checks do (Target.Check.Credential is the daemon's
	// to set for exec checks).
	Control servers.Server
	Target  pulse.Target
	// Kernel marks a backend of a service the kernel forwards: checked
	// like the others, put in rotation by nftables (Kernel), not by
	// HAProxy's runtime API.
	Kernel bool
}

// KernelService is a service the kernel forwards (modes udp and nat):
// what control/runtime/nftlb needs, besides which of its backends are up.
type KernelService struct {
	Name     string
	Protocol string // config.ProtocolTCP or ProtocolUDP
	VIPs     []netip.Addr
	// Port, up to LastPort (equal for one port).
	Port, LastPort uint16
	Balance        string
	HashSourcePort bool
	Forward        string
	Fallback       string
	// UDPTimeout and UDPStreamTimeout are 0 for the kernel's.
	UDPTimeout, UDPStreamTimeout time.Duration
	// Servers are the service's backends, as indexes into
	// NodePlan.Servers, in the file's order.
	Servers []int
}

// ServiceKey is what a service of the plan is: its name, mode, ports and
// the HAProxy pools its connections go to.
type ServiceKey struct {
	Name string
	Mode string
	// Port and LastPort are the service's port, or its range.
	Port, LastPort uint16
	// Pools are the HAProxy pools it uses, its default first.
	Pools []string
	// Fallback is the service's fallback.
	Fallback string
}

// poolSignature is what makes a service of the top-level pool share the
// HAProxy pool "s3" with the first one: the same servers checked the same
// way and spread the same way.
type poolSignature struct {
	Balance   string
	Health    config.ServiceHealth
	Slowstart time.Duration
	Fallback  string
	Timeouts  config.ServiceTimeouts
}

func signature(s *config.Service) poolSignature {
	sig := poolSignature{Balance: s.Balance, Fallback: s.Fallback, Timeouts: s.Timeouts}
	if s.Health != nil {
		sig.Health = *s.Health
	}
	if s.Slowstart != nil {
		sig.Slowstart = s.Slowstart.Duration
	}
	return sig
}

// pools lays out every service's pools as HAProxy pools and their servers,
// and fills each frontend's pool names. A tls or http service on the
// top-level backends uses the pool "s3", shared with the other such
// services that balance, check and time out alike; each other pool is
// "<service>:<pool>".
func (p *NodePlan) pools() error {
	cfg, res := p.Config, p.Resolved
	var shared *poolSignature
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		fe := &p.Frontends[i]
		names := map[string]string{} // config pool -> HAProxy pool
		if config.IsKernelMode(svc.Mode) {
			if err := p.kernelService(i); err != nil {
				return err
			}
			continue
		}
		for _, spec := range cfg.ServicePools(i) {
			name := svc.Name + ":" + spec.Ref.Pool
			if spec.Shared {
				sig := signature(svc)
				switch {
				case shared == nil:
					shared = &sig
					name = haproxy.DefaultPool
				case reflect.DeepEqual(*shared, sig):
					names[spec.Ref.Pool] = haproxy.DefaultPool
					continue
				}
			}
			names[spec.Ref.Pool] = name
			hp, srv, err := p.pool(i, spec, name, res.Pools[spec.Ref])
			if err != nil {
				return err
			}
			p.Pools = append(p.Pools, hp)
			p.Servers = append(p.Servers, srv...)
		}
		fe.PoolNames = names
		fe.Key = ServiceKey{Name: svc.Name, Mode: svc.Mode, Fallback: svc.Fallback}
		fe.Key.Port, fe.Key.LastPort = cfg.ServicePorts(i)
		if n, ok := names[config.DefaultPool]; ok {
			fe.Key.Pools = append(fe.Key.Pools, n)
		}
		for _, pl := range svc.Pools {
			fe.Key.Pools = append(fe.Key.Pools, names[pl.Name])
		}
	}
	return nil
}

// kernelService lays out services[i], which the kernel forwards: its
// backends are checked and counted as any service's (Servers), and
// KernelService says how nftables spreads flows over those up.
func (p *NodePlan) kernelService(i int) error {
	cfg := p.Config
	svc := &cfg.Services[i]
	fe := &p.Frontends[i]
	ks := KernelService{
		Name: svc.Name, Protocol: cfg.ServiceProtocol(i), VIPs: slices.Clone(fe.VIPs),
		Balance: svc.Balance, HashSourcePort: svc.HashSourcePort, Forward: svc.Forward, Fallback: svc.Fallback,
		UDPTimeout: svc.Timeouts.UDP.Duration, UDPStreamTimeout: svc.Timeouts.UDPStream.Duration,
	}
	ks.Port, ks.LastPort = cfg.ServicePorts(i)
	names := map[string]string{}
	fe.Key = ServiceKey{Name: svc.Name, Mode: svc.Mode, Fallback: svc.Fallback, Port: ks.Port, LastPort: ks.LastPort}
	for _, spec := range cfg.ServicePools(i) {
		name := svc.Name + ":" + spec.Ref.Pool
		names[spec.Ref.Pool] = name
		fe.Key.Pools = append(fe.Key.Pools, name)
		_, srv, err := p.pool(i, spec, name, p.Resolved.Pools[spec.Ref])
		if err != nil {
			return err
		}
		for _, s := range srv {
			s.Kernel = true
			ks.Servers = append(ks.Servers, len(p.Servers))
			p.Servers = append(p.Servers, s)
		}
	}
	fe.PoolNames = names
	p.Kernel = append(p.Kernel, ks)
	return nil
}

// pool lays out one pool of services[i] as the HAProxy pool name.
func (p *NodePlan) pool(i int, spec config.PoolSpec, name string, resolved []config.ResolvedServer) (haproxy.Pool, []Server, error) {
	svc := &p.Config.Services[i]
	hp := haproxy.Pool{
		Name: name, Balance: svc.Balance,
		ConnectTimeout: svc.Timeouts.Connect.Duration, ServerTimeout: svc.Timeouts.BackendIdle.Duration,
	}
	check, err := healthCheck(svc.Health)
	if err != nil {
		return hp, nil, fmt.Errorf("services[%d].health: %w", i, err)
	}
	var slowstart time.Duration
	if svc.Slowstart != nil {
		slowstart = svc.Slowstart.Duration
	}
	var out []Server
	for _, rs := range resolved {
		w := config.DefaultWeight
		if rs.Weight != nil {
			w = *rs.Weight
		}
		prio := max(rs.Priority, 1)
		admin := rs.State
		if admin == "" {
			admin = config.StateEnabled
		}
		s := haproxy.Server{
			Name: rs.Name, Addr: rs.Addr, Weight: w, Priority: prio,
			TLS: rs.TLS, CAFile: rs.CAFile, SNI: rs.SNI,
		}
		switch {
		case svc.Mode == config.ModeTCP && svc.ProxyProtocol == "v1":
			s.ProxyProtocol = haproxy.ProxyV1
		case svc.Mode == config.ModeTCP && svc.ProxyProtocol == "v2":
			s.ProxyProtocol = haproxy.ProxyV2
		case svc.Mode != config.ModeTCP && rs.ProxyProtocol:
			s.ProxyProtocol = haproxy.ProxyV2
		}
		if svc.Balance == config.BalanceRoundRobin && w > 0 {
			s.Weight = config.DefaultWeight
		}
		switch admin {
		case config.StateDrain:
			s.State = haproxy.StateDrain
		case config.StateDisabled:
			s.State = haproxy.StateMaint
		}
		hp.Servers = append(hp.Servers, s)
		key := name + "/" + rs.Name
		target := pulse.Target{Key: key, Addr: rs.Addr, Check: check}
		if !target.Addr.IsValid() || target.Addr.Port() == 0 {
			// A server of a port range is checked on its first port
			// unless the check names one.
			from, _ := p.Config.ServicePorts(i)
			target.Addr = netip.AddrPortFrom(rs.Addr.Addr(), from)
		}
		out = append(out, Server{
			Service: svc.Name, Pool: spec.Ref.Pool, HAPool: name, Name: rs.Name, Addr: rs.Addr,
			Weight: w, Priority: prio, Admin: admin,
			Control: servers.Server{
				Ref:       servers.Ref{Backend: haproxy.TierBackend(name, prio), Server: rs.Name},
				Key:       key,
				Group:     name,
				Weight:    w,
				Equal:     svc.Balance == config.BalanceRoundRobin,
				Admin:     admin,
				Slowstart: slowstart,
				KeepLast:  svc.Fallback == config.FallbackKeepLast,
				Bandwidth: svc.Balance == config.BalanceLeastBandwidth,
				Addr:      rs.Addr,
				Static:    svc.Balance == config.BalanceSource,
			},
			Target: target,
		})
	}
	if svc.Balance == config.BalanceConsistent {
		stableIDs(hp.Servers)
	}
	return hp, out, nil
}

// stableIDs gives every server an id derived from its name. HAProxy
// places a server on a consistent hash's ring by its id, which is its
// position unless set: removing a server would renumber the ones after
// it and move most clients. A name's id is a hash of it; the rare
// collision takes the next free id, names in order, so that the answer
// depends on the set of names only.
func stableIDs(srvs []haproxy.Server) {
	const space = 1 << 20
	order := make([]int, len(srvs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(srvs[a].Name, srvs[b].Name) })
	used := map[int]bool{}
	for _, i := range order {
		h := fnv.New32a()
		h.Write([]byte(srvs[i].Name))
		id := int(h.Sum32()%space) + 1
		for used[id] {
			id = id%space + 1
		}
		used[id] = true
		srvs[i].ID = id
	}
}

// healthCheck is a service's health as pulse checks it.
func healthCheck(h *config.ServiceHealth) (pulse.Check, error) {
	if h == nil {
		return pulse.Check{Kind: pulse.KindTCP, InitialUp: true}, nil
	}
	c := pulse.Check{
		Kind:      pulse.Kind(h.Kind),
		Interval:  h.Interval.Duration,
		Timeout:   h.Timeout.Duration,
		Fall:      h.Fall,
		Rise:      h.Rise,
		Port:      h.Port,
		InitialUp: h.InitialState != config.HealthDown,
		Method:    h.Method,
		Path:      h.Path,
		Host:      h.Host,
		TLSVerify: h.TLSVerify,
		CAFile:    h.CAFile,
		Command:   slices.Clone(h.Command),
	}
	if c.Kind == "" {
		c.Kind = pulse.KindTCP
	}
	if h.Status != "" && (c.Kind == pulse.KindHTTP || c.Kind == pulse.KindHTTPS) {
		from, to, err := config.ParseStatusRange(h.Status)
		if err != nil {
			return c, fmt.Errorf("status: %q: %w", h.Status, err)
		}
		c.StatusMin, c.StatusMax = from, to
	}
	if h.Protocol == config.ProtocolUDP {
		c.Protocol = pulse.ProtocolUDP
	}
	if h.Send != "" {
		c.Send = []byte(h.Send)
	}
	if h.Expect != "" {
		c.Expect = []byte(h.Expect)
	}
	if h.ExpectRegexp != "" {
		re, err := regexp.Compile(h.ExpectRegexp)
		if err != nil {
			return c, fmt.Errorf("expect_regexp: %q: %w", h.ExpectRegexp, err)
		}
		c.ExpectRegexp = re
	}
	return c, nil
}

// accessLists compiles each service's access list into the dataplane's
// table, under an ID that a service keeps from prev, so that a reload
// never points a service's rows at another service's list.
func (p *NodePlan) accessLists(prev *NodePlan) error {
	cfg, res := p.Config, p.Resolved
	p.AccessIDs = map[string]loader.AccessID{}
	used := map[loader.AccessID]bool{}
	if prev != nil {
		for _, id := range prev.AccessIDs {
			used[id] = true
		}
	}
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		ra, ok := res.Access[svc.Name]
		if !ok {
			continue
		}
		var rules []loader.AccessRule
		for _, r := range ra.Rules {
			for _, pfx := range r.Prefixes {
				rules = append(rules, loader.AccessRule{Prefix: pfx, Allow: r.Allow})
			}
		}
		entries, err := loader.CompileAccess(rules, ra.DefaultAllow)
		if err != nil {
			return fmt.Errorf("services[%d].access: %w", i, err)
		}
		id, ok := loader.AccessID(0), false
		if prev != nil {
			id, ok = prev.AccessIDs[svc.Name]
		}
		if !ok {
			for id = 1; used[id]; id++ {
			}
		}
		if id >= loader.MaxAccessLists {
			return fmt.Errorf("services[%d].access: more than %d access lists (counting the running configuration's)", i, loader.MaxAccessLists-1)
		}
		used[id] = true
		p.AccessIDs[svc.Name] = id
		if p.Tables.Access == nil {
			p.Tables.Access = map[loader.AccessID][]loader.AccessEntry{}
		}
		p.Tables.Access[id] = entries
	}
	return nil
}

// haproxyFrontend is fe as HAProxy renders it.
func (p *NodePlan) haproxyFrontend(fe Frontend, fds map[uint32]int) haproxy.Frontend {
	svc := fe.Service
	f := haproxy.Frontend{
		Name: svc.Name, Mode: svc.Mode, Port: fe.Key.Port, PEM: fe.PEM, VIPs: fe.VIPs,
		Whitelist:      p.ACLs[svc.Whitelist],
		Pool:           fe.PoolNames[config.DefaultPool],
		RejectWhenDown: svc.Fallback == config.FallbackReject,
		MaxConn:        svc.MaxConnections,
		ClientTimeout:  svc.Timeouts.ClientIdle.Duration,
	}
	if svc.Mode != config.ModeHTTP {
		f.Whitelist = ""
	}
	if fe.Key.LastPort != fe.Key.Port {
		f.LastPort = fe.Key.LastPort
	}
	if t := svc.TLSPassthrough; t != nil {
		pt := &haproxy.Passthrough{InspectDelay: t.ReadTimeout.Duration}
		for _, r := range t.Routes {
			pt.Routes = append(pt.Routes, haproxy.SNIRoute{Names: slices.Clone(r.Names), Regexp: r.Regexp, Pool: fe.PoolNames[r.Pool]})
		}
		f.Passthrough = pt
		f.Pool = ""
		if t.Default != "" && t.Default != config.PassthroughReject {
			f.Pool = fe.PoolNames[t.Default]
		}
	}
	for _, l := range fe.Listeners {
		f.Binds = append(f.Binds, haproxy.Bind{FD: fds[l.ID], Family: l.Family})
	}
	return f
}

// WithStates returns the instance with each server's admin state and
// weight taken from states where it has one: what a new instance starts
// with, so that it serves as the running ones do from its first
// connection.
func WithStates(in haproxy.Instance, states map[servers.Ref]servers.Desired) haproxy.Instance {
	if len(states) == 0 {
		return in
	}
	pools := slices.Clone(in.Pools)
	for i := range pools {
		pl := &pools[i]
		pl.Servers = slices.Clone(pl.Servers)
		for j := range pl.Servers {
			s := &pl.Servers[j]
			d, ok := states[servers.Ref{Backend: haproxy.TierBackend(pl.Name, s.Priority), Server: s.Name}]
			if !ok {
				continue
			}
			s.State, s.Weight = d.State, d.Weight
		}
	}
	in.Pools = pools
	return in
}
