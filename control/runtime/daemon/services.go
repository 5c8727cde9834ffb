package daemon

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/ctclean"
	"github.com/ober-ingress/ober/control/lib/ipam"
	"github.com/ober-ingress/ober/control/lib/sockdiag"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/kernelsvc"
	"github.com/ober-ingress/ober/control/runtime/nftlb"
	"github.com/ober-ingress/ober/control/runtime/pulse"
	"github.com/ober-ingress/ober/control/runtime/servers"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
)

// startServers starts ober's health checks and the servers controller
// on p's backends, before any instance of p starts: a new instance is
// rendered with the servers' states as the checks see them.
func (d *Daemon) startServers(ctx context.Context, p *plan.NodePlan) error {
	d.pulse = pulse.New(pulse.Options{
		Logger: d.log.With("part", "health"),
		OnChange: func(key string, up bool) {
			d.log.Info("backend health changed", "backend", key, "up", up)
			d.ctrl.Kick()
			d.kernel.Kick()
			d.kick()
		},
	})
	d.kernel = kernelsvc.New(kernelsvc.Options{
		Applier: &nftlb.Applier{Log: d.log.With("part", "kernel")},
		Clean:   ctclean.DeleteMany,
		Health:  d.verdicts,
		Logger:  d.log.With("part", "kernel"),
	})
	d.ctrl = servers.New(servers.Options{
		Logger:    d.log.With("part", "servers"),
		Health:    d.verdicts,
		Instances: d.liveInstances,
		Sockets:   nodeSockets,
	})
	if err := d.setServers(p); err != nil {
		return err
	}
	go d.ctrl.Run(ctx)
	go d.kernel.Run(ctx)
	return nil
}

// setServers makes p's backends the checked and controlled ones. A
// backend whose check is unchanged keeps its verdict and history.
func (d *Daemon) setServers(p *plan.NodePlan) error {
	targets, err := checkTargets(p)
	if err != nil {
		return err
	}
	if err := d.pulse.Set(targets); err != nil {
		return fmt.Errorf("health checks: %w", err)
	}
	ctl := make([]servers.Server, 0, len(p.Servers))
	for _, s := range p.Servers {
		if !s.Kernel { // nftables puts those in rotation, not HAProxy
			ctl = append(ctl, s.Control)
		}
	}
	if err := d.kernel.Set(context.Background(), kernelServices(p)); err != nil {
		return err
	}
	d.ctrl.Set(ctl)
	return nil
}

// kernelServices are p's services the kernel forwards, as kernelsvc
// takes them.
func kernelServices(p *plan.NodePlan) []kernelsvc.Service {
	out := make([]kernelsvc.Service, 0, len(p.Kernel))
	for _, k := range p.Kernel {
		s := kernelsvc.Service{
			Name: k.Name, Protocol: k.Protocol, VIPs: k.VIPs, Port: k.Port, LastPort: k.LastPort,
			Balance: k.Balance, HashSourcePort: k.HashSourcePort, Forward: k.Forward, Fallback: k.Fallback,
			UDPTimeout: k.UDPTimeout, UDPStreamTimeout: k.UDPStreamTimeout,
		}
		for _, i := range k.Servers {
			sv := p.Servers[i]
			s.Backends = append(s.Backends, kernelsvc.Backend{
				Name: sv.Name, Addr: sv.Addr, Weight: sv.Weight, Priority: sv.Priority, Admin: sv.Admin, Key: sv.Target.Key,
			})
		}
		out = append(out, s)
	}
	return out
}

// checkTargets are p's health check targets, its exec checks run as
// haproxy.user: the least privilege a check needs, never ober's root.
func checkTargets(p *plan.NodePlan) ([]pulse.Target, error) {
	var cred *syscall.Credential
	out := make([]pulse.Target, 0, len(p.Servers))
	seen := map[string]bool{}
	for _, s := range p.Servers {
		t := s.Target
		if seen[t.Key] {
			continue
		}
		seen[t.Key] = true
		if t.Check.Kind == pulse.KindExec {
			if cred == nil {
				c, err := credential(p.Config.HAProxy.User, p.Config.HAProxy.Group)
				if err != nil {
					return nil, fmt.Errorf("services: exec health checks run as haproxy.user: %w", err)
				}
				cred = c
			}
			t.Check.Credential = cred
		}
		out = append(out, t)
	}
	return out, nil
}

// credential is the account an exec check runs as.
func credential(name, group string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("haproxy.user: %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("haproxy.user: %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("haproxy.user: %q: gid %q: %w", name, u.Gid, err)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("haproxy.group: %q: %w", group, err)
		}
		if gid, err = strconv.ParseUint(g.Gid, 10, 32); err != nil {
			return nil, fmt.Errorf("haproxy.group: %q: gid %q: %w", group, g.Gid, err)
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// verdicts are the health checks' verdicts by key.
func (d *Daemon) verdicts() map[string]bool {
	st := d.pulse.States()
	out := make(map[string]bool, len(st))
	for k, s := range st {
		out[k] = s.Up
	}
	return out
}

// liveInstances are the serving instances as the controller pushes to
// them.
func (d *Daemon) liveInstances() []servers.Instance {
	if d.sup == nil {
		return nil
	}
	live := d.sup.Live()
	out := make([]servers.Instance, 0, len(live))
	for _, in := range live {
		si := servers.Instance{PID: in.PID, Socket: in.Socket}
		for _, b := range in.Backends {
			si.Servers = append(si.Servers, servers.Counters{
				Ref:   servers.Ref{Backend: b.Backend, Server: b.Name},
				Conns: b.Connections, TotalConns: b.TotalConnections, BytesIn: b.BytesIn, BytesOut: b.BytesOut,
			})
		}
		out = append(out, si)
	}
	return out
}

// The states of a udp or nat service's backend in status and metrics:
// nftables sends it new flows, or not.
const (
	KernelRotation = "rotation"
	KernelOut      = "out"
)

// serviceStates are p's services with their backends as the health checks,
// the controller and the instances' counters see them.
func (d *Daemon) serviceStates(p *plan.NodePlan) []api.DaemonServiceStatus {
	if p == nil || d.ctrl == nil {
		return nil
	}
	health := d.pulse.States()
	stats := d.ctrl.Stats()
	desired := d.ctrl.Snapshot()
	kernel, err := d.kernel.States()
	if err != nil {
		d.log.Debug("status without the kernel services' counters", "err", err)
	}
	byPool := map[string][]plan.Server{}
	for _, s := range p.Servers {
		byPool[s.HAPool] = append(byPool[s.HAPool], s)
	}
	out := make([]api.DaemonServiceStatus, 0, len(p.Frontends))
	for _, fe := range p.Frontends {
		svc := fe.Service
		ss := api.DaemonServiceStatus{
			Name: svc.Name, Mode: svc.Mode, Port: fe.Key.Port, VIPs: slices.Clone(fe.VIPs),
			Balance: svc.Balance, Fallback: svc.Fallback, Backends: []api.DaemonBackendStatus{},
		}
		if fe.Key.LastPort != fe.Key.Port {
			ss.LastPort = fe.Key.LastPort
		}
		for _, pool := range fe.Key.Pools {
			for _, s := range byPool[pool] {
				h := health[s.Control.Key]
				st := stats[s.Control.Ref]
				st.Desired = desired[s.Control.Ref]
				pool := s.Pool
				if s.Service != svc.Name {
					pool = config.DefaultPool // the shared top-level pool
				}
				b := api.DaemonBackendStatus{
					Name: s.Name, Pool: pool, HAProxyBackend: s.Control.Ref.Backend, Address: s.Addr.String(),
					Priority: s.Priority, Weight: s.Weight, EffectiveWeight: st.Weight, Admin: s.Admin, State: st.State,
					Up: h.Up, Since: h.Since, Health: h.Health, ChecksPassed: h.Passed, ChecksFailed: h.Failed,
					LastError: h.LastError, Connections: st.Conns, TotalConnections: st.TotalConns,
					BytesIn: st.BytesIn, BytesOut: st.BytesOut, Rate: st.Rate,
				}
				if s.Kernel {
					// nftables, not HAProxy: in rotation or not, and the
					// new flows its rule sent.
					ks := kernel[svc.Name][s.Name]
					b.HAProxyBackend, b.State, b.EffectiveWeight = "", KernelOut, 0
					if ks.InRotation {
						b.State, b.EffectiveWeight = KernelRotation, s.Weight
					}
					b.TotalConnections, b.BytesIn = int64(ks.Flows), int64(ks.Bytes)
				}
				if b.State == servers.Maint {
					b.EffectiveWeight = 0
				}
				ss.Up = ss.Up || b.State == servers.Ready || b.State == KernelRotation
				ss.Connections += b.Connections
				ss.TotalConnections += b.TotalConnections
				ss.BytesIn += b.BytesIn
				ss.BytesOut += b.BytesOut
				ss.Backends = append(ss.Backends, b)
			}
		}
		out = append(out, ss)
	}
	return out
}

// anyServiceUp reports whether some service has a backend taking new
// connections (ready: checked up and enabled, or kept by fallback
// keep_last). The node withdraws only when none has: every node has the
// same backends, so a service whose pool is down answers by its fallback
// on every node, and its outage must not take the node's other services
// off the network.
func (d *Daemon) anyServiceUp(p *plan.NodePlan) bool {
	if d.ctrl == nil || p == nil {
		return false
	}
	// A fresh computation, not the last pass's: the announcer asks as
	// soon as a verdict changes.
	for _, st := range d.ctrl.Snapshot() {
		if st.State == servers.Ready {
			return true
		}
	}
	if d.kernel != nil && d.kernel.Serving() {
		return true
	}
	return len(p.Servers) == 0
}

// longestCheckInterval is the longest interval of p's health checks.
func longestCheckInterval(p *plan.NodePlan) time.Duration {
	var longest time.Duration
	if p == nil {
		return pulse.DefaultInterval
	}
	for _, s := range p.Servers {
		iv := s.Target.Check.Interval
		if iv == 0 {
			iv = pulse.DefaultInterval
		}
		longest = max(longest, iv)
	}
	return longest
}

// topLevelBackends is the top-level pool's servers for the status'
// backends list.
func (d *Daemon) topLevelBackends(p *plan.NodePlan, st supervisor.Status) []api.BackendStatus {
	if p == nil || d.ctrl == nil {
		return nil
	}
	healthy := st.Healthy()
	health := d.pulse.States()
	stats := d.ctrl.Snapshot()
	var out []api.BackendStatus
	for _, s := range p.Servers {
		if s.HAPool != plan.SharedPool {
			continue
		}
		h := health[s.Control.Key]
		bs := api.BackendStatus{Name: s.Name, Address: s.Addr.String(), Up: h.Up, CheckedBy: healthy}
		if stats[s.Control.Ref].State == servers.Ready {
			bs.UpOn = healthy
		}
		out = append(out, bs)
	}
	return out
}

// saveIPAM writes p's address allocations to node.state_dir before p is
// applied, when they changed: a crash after the apply must not lose an
// address a service was given, or a later service could be given it
// while the routers still send its traffic to the first.
func (d *Daemon) saveIPAM(p *plan.NodePlan) error {
	if !p.IPAM.Changed() {
		return nil
	}
	for _, c := range p.IPAM.Changes {
		if c.Kind != ipam.Kept {
			d.log.Info("vip_pools: " + c.String())
		}
	}
	return d.writeIPAM(p)
}

func (d *Daemon) writeIPAM(p *plan.NodePlan) error {
	if err := os.MkdirAll(p.Config.Node.StateDir, 0o700); err != nil {
		return fmt.Errorf("node.state_dir: %w", err)
	}
	if err := ipam.Save(plan.IPAMPath(p.Config), p.IPAM.Allocations); err != nil {
		return fmt.Errorf("vip_pools: %w", err)
	}
	return nil
}

// nodeSockets are the node's TCP connections, for leastbandwidth: the
// instances' connections to the backends among them.
func nodeSockets() ([]servers.Socket, error) {
	conns, err := sockdiag.Established()
	if err != nil {
		return nil, err
	}
	out := make([]servers.Socket, len(conns))
	for i, c := range conns {
		out[i] = servers.Socket{Cookie: c.Cookie, Remote: c.Remote, Bytes: c.BytesReceived + c.BytesAcked}
	}
	return out, nil
}
