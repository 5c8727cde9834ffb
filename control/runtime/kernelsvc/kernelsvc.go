// Package kernelsvc keeps the nftables rules of the services the kernel
// forwards (modes udp and nat) in step with the configuration and the
// health checks: which backends are in rotation, and, for a backend that
// leaves it down, disabled or removed, the deletion of its conntrack
// entries, without which a UDP flow would stay pinned to a dead backend.
// A drained backend leaves the rotation but keeps its flows until they
// end.
package kernelsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/nftlb"
)

// Backend is one backend of a service as configured.
type Backend struct {
	Name string
	Addr netip.AddrPort
	// Weight 0 keeps it out of rotation.
	Weight, Priority int
	// Admin is config.StateEnabled, StateDrain or StateDisabled.
	Admin string
	// Key is its health check's (pulse.Target.Key).
	Key string
}

// Service is one kernel-forwarded service as configured.
type Service struct {
	Name                         string
	Protocol                     string // config.ProtocolTCP or ProtocolUDP
	VIPs                         []netip.Addr
	Port, LastPort               uint16
	Balance                      string
	HashSourcePort               bool
	Forward                      string
	Fallback                     string
	UDPTimeout, UDPStreamTimeout time.Duration
	Backends                     []Backend
}

// Applier writes a Ruleset, removes ober's table, and reads the
// backends' counters (nftlb.Applier).
type Applier interface {
	Apply(nftlb.Ruleset) error
	Remove() error
	Counters() (map[nftlb.Key]nftlb.Counter, error)
}

// BackendState is a backend as the kernel forwards to it.
type BackendState struct {
	// InRotation: new flows may go to it.
	InRotation bool
	// Flows and Bytes are the new flows sent to it since it was first
	// in rotation (the nat rules see a flow's first packet only, so
	// Bytes are those of first packets).
	Flows, Bytes uint64
}

// States are the backends' states by service and backend name; the
// counters are read from nftables now.
func (c *Controller) States() (map[string]map[string]BackendState, error) {
	c.mu.Lock()
	out := map[string]map[string]BackendState{}
	for _, s := range c.services {
		out[s.Name] = map[string]BackendState{}
		for _, b := range s.Backends {
			_, in := c.rotation[s.Name][b.Name]
			out[s.Name][b.Name] = BackendState{InRotation: in}
		}
	}
	n := len(c.services)
	c.mu.Unlock()
	if n == 0 {
		return out, nil
	}
	cs, err := c.o.Applier.Counters()
	if err != nil {
		return out, fmt.Errorf("kernel services' counters: %w", err)
	}
	for k, v := range cs {
		if st, ok := out[k.Service][k.Backend]; ok {
			st.Flows, st.Bytes = v.Packets, v.Bytes
			out[k.Service][k.Backend] = st
		}
	}
	return out, nil
}

// Cleaner deletes the conntrack entries of flows from a VIP port to
// backends (ctclean.DeleteMany).
type Cleaner func(ctx context.Context, proto uint8, vip netip.AddrPort, backends []netip.AddrPort) (map[netip.AddrPort]int, error)

// Options are a Controller's parts.
type Options struct {
	Applier Applier
	Clean   Cleaner
	// Health says whether the backend of a check key is up.
	Health func() map[string]bool
	Logger *slog.Logger
}

// Controller applies the rotation whenever the services or a verdict
// change (Set, Kick).
type Controller struct {
	o    Options
	kick chan struct{}

	mu       sync.Mutex
	services []Service
	// rotation is what was last applied: per service, its backends in
	// rotation by name.
	rotation map[string]map[string]Backend
	// defs are the services as last applied: a service removed since
	// still needs its VIPs and ports to clean its flows.
	defs    map[string]Service
	applied *nftlb.Ruleset
	lastErr error
}

// New makes a Controller; Run it.
func New(o Options) *Controller {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Controller{o: o, kick: make(chan struct{}, 1), rotation: map[string]map[string]Backend{}}
}

// Set makes services the ones forwarded and applies them now; the error
// is the Applier's, and then nothing changed.
func (c *Controller) Set(ctx context.Context, services []Service) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.services
	c.services = slices.Clone(services)
	if err := c.syncLocked(ctx); err != nil {
		c.services = prev
		return err
	}
	return nil
}

// Kick asks for a pass soon (a verdict changed).
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run passes on every Kick, and every second in case one was missed,
// until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-t.C:
		}
		c.mu.Lock()
		if err := c.syncLocked(ctx); err != nil && (c.lastErr == nil || c.lastErr.Error() != err.Error()) {
			c.o.Logger.Error("kernel services not applied; the previous rules stay", "err", err)
		}
		c.mu.Unlock()
	}
}

// Err is the last pass's error, nil when the rules are as they should be.
func (c *Controller) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Rotation is, per service, the names of the backends in rotation.
func (c *Controller) Rotation() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for s, bs := range c.rotation {
		for n := range bs {
			out[s] = append(out[s], n)
		}
		slices.Sort(out[s])
	}
	return out
}

// Serving reports whether some service has a backend to send new flows
// to, from the checks' verdicts of now rather than the last pass's: the
// node's announcement asks as soon as a verdict changes.
func (c *Controller) Serving() bool {
	var up map[string]bool
	if c.o.Health != nil {
		up = c.o.Health()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.services {
		if len(Choose(s, up, c.rotation[s.Name])) > 0 {
			return true
		}
	}
	return false
}

func (c *Controller) syncLocked(ctx context.Context) error {
	var up map[string]bool
	if c.o.Health != nil {
		up = c.o.Health()
	}
	rs := nftlb.Ruleset{}
	next := map[string]map[string]Backend{}
	for _, s := range c.services {
		in := Choose(s, up, c.rotation[s.Name])
		next[s.Name] = map[string]Backend{}
		ns := nftlb.Service{
			Name: s.Name, Proto: unix.IPPROTO_TCP, VIPs: s.VIPs, Port: s.Port,
			Balance: nftlb.Balance(s.Balance), HashPorts: s.HashSourcePort, Forward: nftlb.Forward(s.Forward),
			UDPTimeout: s.UDPTimeout, UDPStreamTimeout: s.UDPStreamTimeout,
		}
		if s.LastPort > s.Port {
			ns.LastPort = s.LastPort
		}
		if s.Protocol == config.ProtocolUDP {
			ns.Proto = unix.IPPROTO_UDP
		}
		for _, b := range in {
			next[s.Name][b.Name] = b
			ns.Backends = append(ns.Backends, nftlb.Backend{Name: b.Name, Addr: b.Addr, Weight: max(b.Weight, 1)})
		}
		rs.Services = append(rs.Services, ns)
	}
	if len(rs.Services) == 0 {
		// No table at all: its nat hooks would make conntrack follow
		// every flow of the node, HAProxy's too.
		if c.applied == nil || len(c.applied.Services) > 0 {
			if err := c.o.Applier.Remove(); err != nil {
				if c.applied != nil {
					c.lastErr = fmt.Errorf("kernel services: %w", err)
					return c.lastErr
				}
				// At start without kernel services, a node that cannot
				// reach nftables needs nothing from it.
				c.o.Logger.Warn("no kernel service, and ober's nftables table could not be looked for", "err", err)
			}
			c.applied = &rs
		}
	} else if c.applied == nil || !reflect.DeepEqual(*c.applied, rs) {
		if err := c.o.Applier.Apply(rs); err != nil {
			c.lastErr = fmt.Errorf("kernel services: %w", err)
			return c.lastErr
		}
		c.applied = &rs
		c.o.Logger.Info("kernel services applied", "services", len(rs.Services))
	}
	c.lastErr = nil
	c.clean(ctx, next)
	c.rotation = next
	c.defs = map[string]Service{}
	for _, s := range c.services {
		c.defs[s.Name] = s
	}
	return nil
}

// clean deletes the flows of the backends that left the rotation, but
// for those drained: they keep theirs until they end.
func (c *Controller) clean(ctx context.Context, next map[string]map[string]Backend) {
	if c.o.Clean == nil {
		return
	}
	current := map[string]Service{}
	for _, s := range c.services {
		current[s.Name] = s
	}
	for name := range c.rotation {
		s, ok := current[name]
		if !ok {
			if s, ok = c.defs[name]; !ok {
				continue
			}
			s.Backends = nil // removed with its service
		}
		var gone []netip.AddrPort
		for bname, b := range c.rotation[name] {
			if _, still := next[name][bname]; still {
				continue
			}
			if cur, ok := find(s, bname); ok && cur.Admin == config.StateDrain && cur.Addr == b.Addr {
				continue
			}
			gone = append(gone, b.Addr)
		}
		if len(gone) == 0 {
			continue
		}
		proto := uint8(unix.IPPROTO_TCP)
		if s.Protocol == config.ProtocolUDP {
			proto = unix.IPPROTO_UDP
		}
		last := max(s.LastPort, s.Port)
		var errs []error
		deleted := 0
		for _, vip := range s.VIPs {
			for port := int(s.Port); port <= int(last); port++ {
				var fam []netip.AddrPort
				for _, g := range gone {
					if g.Addr().Is4() == vip.Is4() {
						if g.Port() == 0 {
							g = netip.AddrPortFrom(g.Addr(), uint16(port))
						}
						fam = append(fam, g)
					}
				}
				if len(fam) == 0 {
					continue
				}
				n, err := c.o.Clean(ctx, proto, netip.AddrPortFrom(vip, uint16(port)), fam)
				for _, k := range n {
					deleted += k
				}
				if err != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := errors.Join(errs...); err != nil {
			c.o.Logger.Error("conntrack entries of backends out of rotation not all deleted", "service", s.Name, "backends", gone, "err", err)
		} else {
			c.o.Logger.Info("flows of backends out of rotation deleted", "service", s.Name, "backends", gone, "flows", deleted)
		}
	}
}

func find(s Service, name string) (Backend, bool) {
	for _, b := range s.Backends {
		if b.Name == name {
			return b, true
		}
	}
	return Backend{}, false
}

// Choose is the rotation of s: its enabled backends of a weight above 0
// whose check is up, of the best (lowest) priority that has any. With
// none and fallback keep_last, the backends of last still configured and
// not disabled stay; otherwise the service is left with none (nftables
// drops its new flows).
func Choose(s Service, up map[string]bool, last map[string]Backend) []Backend {
	best := 0
	var usable []Backend
	for _, b := range s.Backends {
		if b.Admin != config.StateEnabled && b.Admin != "" || b.Weight <= 0 || !up[b.Key] {
			continue
		}
		prio := max(b.Priority, 1)
		switch {
		case best == 0 || prio < best:
			best, usable = prio, []Backend{b}
		case prio == best:
			usable = append(usable, b)
		}
	}
	if len(usable) > 0 || s.Fallback != config.FallbackKeepLast {
		return usable
	}
	for _, b := range s.Backends {
		if _, was := last[b.Name]; was && b.Admin != config.StateDisabled && b.Weight > 0 {
			usable = append(usable, b)
		}
	}
	return usable
}
