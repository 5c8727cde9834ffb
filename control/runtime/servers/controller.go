package servers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/lib/haproxy"
)

// Instance is one live HAProxy instance: where to reach its runtime API
// and its servers' counters as the supervisor last read them.
type Instance struct {
	PID     int
	Socket  string
	Servers []Counters
}

// Counters are one server's counters in one instance.
type Counters struct {
	Ref               Ref
	Conns, TotalConns int64
	BytesIn, BytesOut int64
}

// Stats are a server's desired state and its counters summed over the
// live instances.
type Stats struct {
	Desired
	Conns, TotalConns int64
	BytesIn, BytesOut int64
	// Rate is bytes in and out per second over the last pass.
	Rate float64
}

// Options configure a Controller.
type Options struct {
	Logger *slog.Logger
	// Health gives the checks' verdicts, up or down by key.
	Health func() map[string]bool
	// Instances lists the instances that serve now.
	Instances func() []Instance
	// Every is the pass period when nothing kicks it; default 1s (the
	// byte rates of leastbandwidth are measured over it).
	Every time.Duration
	// Push sends runtime API commands to the instance at socket; default
	// HAProxy's runtime API.
	Push func(ctx context.Context, socket string, cmds []string) error
	// Sockets lists the node's TCP connections with their byte counts,
	// which leastbandwidth weighs servers by: HAProxy's own counters
	// move only when a connection ends, so a long transfer would go
	// unseen until it is over. Nil: the instances' counters are used.
	Sockets func() ([]Socket, error)
}

// Socket is one TCP connection of the node: its kernel identity, its
// peer, and the bytes it moved both ways.
type Socket struct {
	Cookie uint64
	Remote netip.AddrPort
	Bytes  uint64
}

// Controller keeps the instances' servers in their desired state.
type Controller struct {
	opts Options
	log  *slog.Logger
	kick chan struct{}

	// passMu keeps one pass at a time: Run's and Sync's.
	passMu  sync.Mutex
	mu      sync.Mutex
	servers []Server
	desired map[Ref]Desired
	// wasUp is each key's last verdict, upSince when it last turned up
	// from down.
	wasUp   map[string]bool
	upSince map[string]time.Time
	lastUp  map[string]map[Ref]bool
	// pushed is what each instance (by PID) was last told.
	pushed map[int]map[Ref]Desired
	// prev are the byte counters of the last pass, by PID.
	prev   map[int]map[Ref]int64
	prevAt time.Time
	// sockBytes are the connections' byte counts of the last pass, by
	// cookie.
	sockBytes map[uint64]uint64
	sockAt    time.Time
	rates     map[Ref]float64
	counters  map[Ref]Stats
}

// batch bounds the commands of one runtime API call.
const batch = 200

// New makes a controller; it does nothing until Run.
func New(opts Options) *Controller {
	if opts.Every <= 0 {
		opts.Every = time.Second
	}
	if opts.Push == nil {
		opts.Push = pushRuntime
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Controller{
		opts: opts, log: opts.Logger, kick: make(chan struct{}, 1),
		desired: map[Ref]Desired{}, wasUp: map[string]bool{}, upSince: map[string]time.Time{},
		lastUp: map[string]map[Ref]bool{}, pushed: map[int]map[Ref]Desired{}, prev: map[int]map[Ref]int64{},
		rates: map[Ref]float64{}, counters: map[Ref]Stats{},
	}
}

// Set replaces the servers (a new plan) and computes their states at
// once, so that Snapshot is right for the new plan's instances.
func (c *Controller) Set(servers []Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.servers = slices.Clone(servers)
	c.computeLocked(time.Now())
}

// Snapshot is every server's desired state now, for the configuration of
// an instance about to start.
func (c *Controller) Snapshot() map[Ref]Desired {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.computeLocked(time.Now())
	return maps.Clone(c.desired)
}

// Stats are every server's state and counters as of the last pass.
func (c *Controller) Stats() map[Ref]Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[Ref]Stats, len(c.desired))
	for r, d := range c.desired {
		st := c.counters[r]
		st.Desired = d
		st.Rate = c.rates[r]
		out[r] = st
	}
	return out
}

// Kick asks for a pass now (a verdict changed); it never blocks.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run passes every Options.Every and on every Kick until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.Every)
	defer t.Stop()
	for {
		_ = c.pass(ctx) // logged; the next pass tries again
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-t.C:
		}
	}
}

// computeLocked refreshes the verdicts and the desired states.
func (c *Controller) computeLocked(now time.Time) {
	verdicts := map[string]bool{}
	if c.opts.Health != nil {
		verdicts = c.opts.Health()
	}
	health := make(map[string]Health, len(c.servers))
	keys := map[string]bool{}
	for _, s := range c.servers {
		keys[s.Key] = true
		// A key the checks do not know (yet) is down: nothing is sent
		// to a server no check has vouched for.
		up := verdicts[s.Key]
		if was, ok := c.wasUp[s.Key]; ok && up && !was {
			c.upSince[s.Key] = now
		}
		if !up {
			delete(c.upSince, s.Key)
		}
		c.wasUp[s.Key] = up
		health[s.Key] = Health{Up: up, UpSince: c.upSince[s.Key]}
	}
	for k := range c.wasUp {
		if !keys[k] {
			delete(c.wasUp, k)
			delete(c.upSince, k)
		}
	}
	RememberUp(c.servers, health, c.lastUp)
	c.desired = Compute(c.servers, health, c.lastUp, c.rates, now)
}

// pass measures, computes and pushes.
func (c *Controller) pass(ctx context.Context) error {
	c.passMu.Lock()
	defer c.passMu.Unlock()
	insts := c.opts.Instances()
	var socks []Socket
	if c.opts.Sockets != nil && c.weighsBandwidth() {
		var err error
		if socks, err = c.opts.Sockets(); err != nil {
			c.log.Warn("servers: cannot list the node's connections; leastbandwidth keeps its weights", "err", err)
			socks = nil
		}
	}
	now := time.Now()
	c.mu.Lock()
	c.measureLocked(insts, now)
	if socks != nil {
		c.measureSocketsLocked(socks, now)
	}
	c.computeLocked(now)
	type job struct {
		pid    int
		socket string
		cmds   []string
		want   map[Ref]Desired
	}
	var jobs []job
	live := map[int]bool{}
	disabled := map[Ref]bool{}
	for _, s := range c.servers {
		if s.Admin == AdminDisabled {
			disabled[s.Ref] = true
		}
	}
	for _, in := range insts {
		live[in.PID] = true
		told := c.pushed[in.PID]
		// An instance of another plan (one a reload is replacing) lacks
		// the servers it does not have: tell it only about its own, once
		// its counters say which those are.
		has := make(map[Ref]bool, len(in.Servers))
		for _, s := range in.Servers {
			has[s.Ref] = true
		}
		var cmds []string
		for _, r := range slices.SortedFunc(maps.Keys(c.desired), compareRef) {
			if len(has) > 0 && !has[r] {
				continue
			}
			d := c.desired[r]
			was, ok := told[r]
			if !ok || was.State != d.State {
				cmds = append(cmds, fmt.Sprintf("set server %s/%s state %s", r.Backend, r.Server, d.State))
				if disabled[r] && d.State == Maint {
					// disabled is out at once: maint alone lets the
					// open connections finish, as drain does.
					cmds = append(cmds, fmt.Sprintf("shutdown sessions server %s/%s", r.Backend, r.Server))
				}
			}
			if d.State != Maint && (!ok || was.Weight != d.Weight) {
				cmds = append(cmds, fmt.Sprintf("set weight %s/%s %d", r.Backend, r.Server, d.Weight))
			}
		}
		if len(cmds) > 0 {
			jobs = append(jobs, job{pid: in.PID, socket: in.Socket, cmds: cmds, want: maps.Clone(c.desired)})
		}
	}
	for pid := range c.pushed {
		if !live[pid] {
			delete(c.pushed, pid)
		}
	}
	c.mu.Unlock()

	var errs []error
	for _, j := range jobs {
		if err := c.opts.Push(ctx, j.socket, j.cmds); err != nil {
			if ctx.Err() == nil {
				c.log.Warn("servers: push to an instance failed; trying again on the next pass", "pid", j.pid, "err", err)
			}
			errs = append(errs, fmt.Errorf("instance pid %d: %w", j.pid, err))
			continue
		}
		c.mu.Lock()
		c.pushed[j.pid] = j.want
		c.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Sync makes a pass now and returns once every live instance has been
// told the servers' desired states, or with why one was not: a change
// acknowledged after Sync is in HAProxy.
func (c *Controller) Sync(ctx context.Context) error {
	return c.pass(ctx)
}

// measureLocked sums the instances' counters and derives byte rates.
func (c *Controller) measureLocked(insts []Instance, now time.Time) {
	sums := map[Ref]Stats{}
	moved := map[Ref]int64{}
	prev := map[int]map[Ref]int64{}
	for _, in := range insts {
		last := c.prev[in.PID]
		cur := map[Ref]int64{}
		for _, s := range in.Servers {
			st := sums[s.Ref]
			st.Conns += s.Conns
			st.TotalConns += s.TotalConns
			st.BytesIn += s.BytesIn
			st.BytesOut += s.BytesOut
			sums[s.Ref] = st
			b := s.BytesIn + s.BytesOut
			cur[s.Ref] = b
			if p, ok := last[s.Ref]; ok && b >= p {
				moved[s.Ref] += b - p
			}
		}
		prev[in.PID] = cur
	}
	if el := now.Sub(c.prevAt).Seconds(); !c.prevAt.IsZero() && el > 0 {
		rates := map[Ref]float64{}
		for r, b := range moved {
			rates[r] = float64(b) / el
		}
		c.rates = rates
	}
	c.prev, c.prevAt, c.counters = prev, now, sums
}

// weighsBandwidth reports whether a server is balanced by leastbandwidth.
func (c *Controller) weighsBandwidth() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.ContainsFunc(c.servers, func(s Server) bool { return s.Bandwidth })
}

// measureSocketsLocked derives the leastbandwidth servers' byte rates from
// the connections to their addresses (any port for a server without
// one): the bytes each connection moved since the last pass, all of
// them for one opened since. It runs after measureLocked, whose prevAt
// it shares.
func (c *Controller) measureSocketsLocked(socks []Socket, now time.Time) {
	moved := map[netip.AddrPort]uint64{}
	cur := make(map[uint64]uint64, len(socks))
	for _, sk := range socks {
		cur[sk.Cookie] = sk.Bytes
		if p, ok := c.sockBytes[sk.Cookie]; ok && sk.Bytes >= p {
			moved[sk.Remote] += sk.Bytes - p
		} else if c.sockBytes != nil {
			moved[sk.Remote] += sk.Bytes
		}
	}
	byIP := map[netip.Addr]uint64{}
	for ap, b := range moved {
		byIP[ap.Addr()] += b
	}
	first := c.sockBytes == nil
	c.sockBytes = cur
	el := now.Sub(c.sockAt).Seconds()
	c.sockAt = now
	if first || el <= 0 {
		return
	}
	for _, s := range c.servers {
		if !s.Bandwidth {
			continue
		}
		b := moved[s.Addr]
		if s.Addr.Port() == 0 {
			b = byIP[s.Addr.Addr()]
		}
		c.rates[s.Ref] = float64(b) / el
	}
}

func compareRef(a, b Ref) int {
	if c := strings.Compare(a.Backend, b.Backend); c != 0 {
		return c
	}
	return strings.Compare(a.Server, b.Server)
}

// pushRuntime sends cmds over HAProxy's runtime API, several to a call.
// HAProxy answers a command it refuses with a line of text; anything
// but an empty answer is an error.
func pushRuntime(ctx context.Context, socket string, cmds []string) error {
	rt := haproxy.Runtime{Path: socket}
	for len(cmds) > 0 {
		n := min(batch, len(cmds))
		out, err := rt.Command(ctx, strings.Join(cmds[:n], ";"))
		if err != nil {
			return err
		}
		if out = strings.TrimSpace(out); out != "" {
			return fmt.Errorf("runtime API %s: %s", socket, firstLine(out))
		}
		cmds = cmds[n:]
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
