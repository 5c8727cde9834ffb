package plan

import (
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/servers"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
)

// fdReserve is what an instance needs beside two descriptors per
// connection (client and server side): listeners, checks, logs, runtime
// socket.
const fdReserve = 200

// MaxConnFor is the most connections an instance can hold within limit
// descriptors.
func MaxConnFor(limit uint64) int {
	if limit <= 2*fdReserve {
		return fdReserve
	}
	return int(min((limit-fdReserve)/2, 1<<30))
}

// Instance is the renderer's input for one slot. fds maps each listener
// ID to the descriptor the process inherits it as; statsSocket is its
// runtime socket. Both are the supervisor's to choose.
func (p *NodePlan) Instance(sl supervisor.Slot, fds map[uint32]int, statsSocket string) haproxy.Instance {
	c := p.Config
	in := haproxy.Instance{
		Index:          sl.Index,
		CPU:            sl.CPU,
		Node:           c.Node.Name,
		StatsSocket:    statsSocket,
		Pools:          p.Pools,
		MaxConn:        p.MaxConn,
		ServedByHeader: c.HAProxy.ServedByHeader,
		Version:        p.HAProxy,
		User:           c.HAProxy.User,
		Group:          c.HAProxy.Group,
		Chroot:         c.HAProxy.Chroot,
		TicketKeys:     p.TicketKeys,
		Tune:           *c.HAProxy.Tune.Renderer(),
	}
	t := c.Timeouts
	in.Timeouts.Connect = t.Connect.Duration
	in.Timeouts.Client = t.Client.Duration
	in.Timeouts.Server = t.Server.Duration
	in.Timeouts.HTTPRequest = t.HTTPRequest.Duration
	in.Timeouts.HTTPKeepAlive = t.HTTPKeepAlive.Duration
	// A replaced instance finishes its transfers (a reload, a restart
	// handover); a stop ends them sooner, the supervisor's drain.
	in.Timeouts.Drain = t.MaxTransfer.Duration
	in.Timeouts.TLSHandshake = t.TLSHandshake.Duration
	// Each instance holds its share of a client's limits: the flow hash
	// spreads a client's connections over the instances.
	in.ConnsPerSource = ceilDiv(*c.Limits.ConnectionsPerSource, len(p.Slots))
	in.RatePerSource = ceilDiv(c.Limits.ConnectionRatePerSource, len(p.Slots))
	for _, fe := range p.Frontends {
		if config.IsKernelMode(fe.Service.Mode) {
			continue
		}
		in.Frontends = append(in.Frontends, p.haproxyFrontend(fe, fds))
	}
	return in
}

// Render is a slot's HAProxy configuration (supervisor.Plan.Render) with
// the servers as configured.
func (p *NodePlan) Render(sl supervisor.Slot, fds map[uint32]int, statsSocket string) ([]byte, error) {
	return haproxy.Render(p.Instance(sl, fds, statsSocket))
}

// RenderWith is Render with the servers' admin states and weights that
// states gives when the instance starts (WithStates): what the running
// instances have, so a new or restarted one serves as they do.
func (p *NodePlan) RenderWith(states func() map[servers.Ref]servers.Desired) func(supervisor.Slot, map[uint32]int, string) ([]byte, error) {
	return func(sl supervisor.Slot, fds map[uint32]int, statsSocket string) ([]byte, error) {
		return haproxy.Render(WithStates(p.Instance(sl, fds, statsSocket), states()))
	}
}

// ExampleFDs numbers the listeners as a process would inherit them in
// order from descriptor 3, for a configuration rendered to be checked or
// shown rather than run.
func (p *NodePlan) ExampleFDs() map[uint32]int {
	fds := map[uint32]int{}
	for i, l := range p.Listeners {
		fds[l.ID] = 3 + i
	}
	return fds
}

func ceilDiv(n, d int) int {
	if d <= 0 {
		return n
	}
	return (n + d - 1) / d
}
