// Package daemon is `ober run`: it applies a plan (control/plan) to the
// node and keeps it applied. It attaches the dataplane, writes its maps
// through one writer (control/runtime/tables), runs the HAProxy
// instances (control/runtime/supervisor), keeps the VIPs reachable (BGP
// or keepalived) and serves health, status and metrics (control/api).
// What the node runs is decided by the plan alone.
//
// Start order is chosen so a mistake fails before anything serves: the
// configuration is planned and checked by HAProxy; the API port is
// bound; only then is the dataplane attached and the first generation of
// instances started. A reload (SIGHUP) plans the configuration again,
// goes through the same checks and changes nothing unless they all pass;
// it then applies what the new plan changes against the running one
// (plan.Diff) and renews the instances, the running generation serving
// until its replacement is healthy.
//
// A restart (SIGUSR2) hands the node over to the next ober process: the
// instances keep serving and the dataplane stays attached, and the next
// process takes them over (handover.go).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/whitelist"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/control/runtime/handshake"
	"github.com/ober-ingress/ober/control/runtime/kernelsvc"
	"github.com/ober-ingress/ober/control/runtime/pulse"
	"github.com/ober-ingress/ober/control/runtime/register"
	"github.com/ober-ingress/ober/control/runtime/sdnotify"
	"github.com/ober-ingress/ober/control/runtime/servers"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/control/runtime/tables"
	"github.com/ober-ingress/ober/control/runtime/tickets"
	"github.com/ober-ingress/ober/control/runtime/txwatch"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
	"github.com/ober-ingress/ober/loader"
)

type resolver = addrlist.Resolver

// Options configure Run.
type Options struct {
	// ConfigPath is the YAML file; config.DefaultPath when empty.
	ConfigPath string
	Logger     *slog.Logger
	// Resolver looks up backend and whitelist names; nil means the
	// system resolver.
	Resolver resolver
	// Reload delivers reload requests (SIGHUP).
	Reload <-chan struct{}
	// Restart delivers restart handover requests (SIGUSR2): Run returns
	// ErrRestart, leaving the node serving for the next ober.
	Restart <-chan struct{}
	// Notifier tells the service manager about readiness, reloads and
	// stops; nil sends nothing.
	Notifier *sdnotify.Notifier
	// Watchdog is the service manager's watchdog timeout; the main loop
	// has it pinged twice per timeout while it answers. 0: no watchdog.
	Watchdog time.Duration
	// Version is ober's own version, reported in /status.
	Version string
}

// Daemon is a running node.
type Daemon struct {
	opts Options
	log  *slog.Logger

	// disc runs the pools' discovery (discovery.go).
	disc discoveryState
	// registrar keeps the services registered in Consul (register.go);
	// nil without consul.register.
	registrar *register.Registrar
	// links tells a node.interfaces link that is up but cannot
	// transmit (txwatch).
	links *txwatch.Watch

	dp *loader.Dataplane
	// tables writes every map of dp this process writes.
	tables  *tables.Writer
	sup     *supervisor.Supervisor
	version haproxy.Version
	api     *api.Server
	// changes wakes the announcer when the supervisor reports a change.
	changes chan struct{}
	speaker *bgp.Speaker
	ann     *announcer
	handoff *handoff.Handoff
	// flowReader feeds the handoff the connections this node makes.
	flowReader *loader.FlowReader
	localFlows *handoff.LocalFlows
	// vh moves the VIPs in VRRP mode with ha.vrrp.handoff.
	vh *vrrpHandoff
	// reaper bounds TLS handshakes where HAProxy cannot.
	reaper *handshake.Reaper
	// ka and tracker run in ha.mode vrrp.
	ka      *vrrp.Keepalived
	tracker *tracker
	// applies carries the management API's requests to apply the file
	// (Apply) to the main loop, which batches them into one reload.
	applies chan applyReq
	// lastChanges is what the last reload that succeeded changed.
	lastChanges plan.Changes
	// mgmt serves the management API.
	mgmt *management
	// pulse checks the backends; ctrl keeps their states and weights in
	// every instance.
	pulse *pulse.Pulse
	ctrl  *servers.Controller
	// kernel keeps the nftables rules of the services the kernel
	// forwards (modes udp and nat).
	kernel *kernelsvc.Controller
	// tickets keeps the instances' TLS session ticket keys.
	tickets *tickets.Rotator

	mu sync.Mutex
	// cur is the plan in force, nil before the first one serves.
	cur         *plan.NodePlan
	generation  uint64
	loadedAt    time.Time
	reloadErr   string
	reloadFails uint64
	attached    []string
	addedVIPs   []netip.Prefix
	ready       bool
	stopping    bool
	startedAt   time.Time

	// notifyFailed keeps a broken notification socket to one warning.
	notifyFailed bool
	// stopped is set once stop ran or a restart handover made it moot;
	// only Run's goroutine touches it.
	stopped bool
	// handedOverAt is when the previous ober left in a restart handover;
	// zero when it did not.
	handedOverAt time.Time
}

// Run starts the node and serves until ctx ends, then drains and stops
// the instances. The dataplane stays pinned and attached.
func Run(ctx context.Context, opts Options) error {
	if opts.ConfigPath == "" {
		opts.ConfigPath = config.DefaultPath
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	d := &Daemon{opts: opts, log: opts.Logger, startedAt: time.Now(), changes: make(chan struct{}, 1), applies: make(chan applyReq), links: txwatch.New(0)}
	p, unlock, err := d.firstPlan(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	cfg := p.Config

	// Bind the API first: a port clash is a configuration error and must
	// stop the start before the node serves anything.
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen: %q: %w", cfg.API.Listen, err)
	}
	d.api = api.New(api.Handlers{Health: d.health, Status: d.status, Metrics: newCollector(d)}, d.log)
	apiDone := make(chan error, 1)
	go func() { apiDone <- d.api.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = d.api.Shutdown(sctx)
	}()

	d.dp, err = loader.Open(loader.Options{Root: cfg.Node.BPFFSRoot, Logger: d.log})
	if err != nil {
		return fmt.Errorf("open dataplane: %w", err)
	}
	defer d.dp.Close()
	d.tables = tables.New(d.dp, d.log.With("part", "tables"))
	base, err := d.tables.ReadBase()
	unlock()
	if err != nil {
		return fmt.Errorf("read whitelists: %w", err)
	}
	if err := d.attach(p.Interfaces, p.XDPMode); err != nil {
		return err
	}
	if err := d.dp.AttachSkLookup(); err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}
	if err := d.ensureVIPs(cfg); err != nil {
		return err
	}
	if err := d.startTickets(ctx, p); err != nil {
		return err
	}
	if d.sup, err = d.newSupervisor(cfg); err != nil {
		return err
	}
	if err := d.saveIPAM(p); err != nil {
		return err
	}
	if err := d.startServers(ctx, p); err != nil {
		return err
	}
	defer d.pulse.Close()
	defer d.stop()
	if err := d.sup.Apply(ctx, d.supervisorPlan(p, base)); err != nil {
		return fmt.Errorf("start instances: %w", err)
	}
	p.PruneACLs()
	d.mu.Lock()
	d.cur, d.generation, d.loadedAt, d.ready = p, 1, time.Now(), true
	d.mu.Unlock()
	// Instances taken over from an earlier ober may hold older keys.
	d.tickets.Kick()
	if d.reaper != nil {
		go d.reaper.Run(ctx)
	}
	go d.links.Run(ctx, time.Second, func() []string { return d.plan().Config.Node.Interfaces }, d.log.With("part", "txwatch"))
	switch {
	case p.BGP != nil:
		if err := d.startBGP(ctx, p); err != nil {
			return err
		}
	case p.VRRP != nil:
		if err := d.startVRRP(ctx, p); err != nil {
			return err
		}
	}
	if err := d.startManagement(cfg); err != nil {
		return err
	}
	defer d.mgmt.close()
	d.log.Info("serving", "node", cfg.Node.Name, "vips", len(cfg.VIPs), "services", len(cfg.Services),
		"instances", len(p.Slots), "api", cfg.API.Listen)
	if err := d.startRegistration(ctx, cfg); err != nil {
		return err
	}
	return d.serve(ctx, apiDone)
}

// firstPlan reads and plans the configuration, and checks the plan, at
// start. It returns holding the whitelist transaction lock (unlock is
// safe to call more than once): Run reads the live whitelists'
// generations under it, together with the file, so that an `ober sync`
// in between is noticed (tables.Base).
func (d *Daemon) firstPlan(ctx context.Context) (*plan.NodePlan, func(), error) {
	path := d.opts.ConfigPath
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(cfg.Node.RuntimeDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("node.runtime_dir: %w", err)
	}
	lock, err := whitelist.Lock(ctx, cfg.Node.RuntimeDir)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	unlock := func() { once.Do(lock) }
	fail := func(err error) (*plan.NodePlan, func(), error) {
		unlock()
		return nil, nil, err
	}
	// Again, under the lock: ober sync may have rewritten it meanwhile.
	if cfg, err = config.Load(path); err != nil {
		return fail(err)
	}
	d.disc.setLoaded(cfg)
	if cfg, _, err = d.discover(ctx, cfg, true); err != nil {
		return fail(err)
	}
	if d.handedOverAt, err = takeHandover(cfg); err != nil {
		d.log.Warn("restart handover mark unreadable; starting as after a stop", "err", err)
	} else if !d.handedOverAt.IsZero() {
		d.log.Info("taking over after a restart handover", "left", time.Since(d.handedOverAt).Round(time.Millisecond))
	}
	d.version, err = haproxy.DetectVersion(ctx, cfg.HAProxy.Binary)
	if err != nil {
		return fail(fmt.Errorf("haproxy.binary: %w", err))
	}
	d.log.Info("haproxy found", "binary", cfg.HAProxy.Binary, "version", d.version.String())
	if !haproxy.FeaturesFor(d.version).ClientHandshakeTimeout {
		// HAProxy bounds the handshake only from 3.0 on; here ober does,
		// once the instances serve.
		d.reaper = &handshake.Reaper{Bound: d.tlsHandshakeBound, Services: d.tlsServices, Logger: d.log.With("part", "haproxy")}
	}
	p, err := plan.Make(ctx, cfg, d.opts.Resolver, d.version, nil)
	if err != nil {
		return fail(fmt.Errorf("config %s: %w", path, err))
	}
	for _, n := range cfg.BalanceNotes() {
		d.log.Info("balance: " + n)
	}
	if p.MaxConn < cfg.Instances.MaxConn {
		d.log.Warn("instances.maxconn lowered to fit the file descriptor limit (raise LimitNOFILE to keep it)",
			"configured", cfg.Instances.MaxConn, "used", p.MaxConn, "nofile", p.FDLimit)
	}
	if err := d.checkPlan(ctx, p); err != nil {
		return fail(err)
	}
	return p, unlock, nil
}

// checkPlan puts the plan's files in place and has HAProxy and the
// chroot check pass before anything of the plan runs.
func (d *Daemon) checkPlan(ctx context.Context, p *plan.NodePlan) error {
	if err := p.WriteFiles(); err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	if err := p.CheckHAProxy(ctx); err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	if err := prepareChroot(p.Config.HAProxy.Chroot); err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	return nil
}

// newSupervisor makes the instances' supervisor, carrying the pinned
// Maglev table over from an earlier ober.
func (d *Daemon) newSupervisor(cfg *config.Config) (*supervisor.Supervisor, error) {
	seed, prev, err := d.dp.Maglev()
	if err != nil || prev == nil {
		h := fnv.New32a()
		h.Write([]byte(cfg.Node.Name))
		seed, prev = h.Sum32(), nil
	}
	return supervisor.New(supervisor.Options{
		Dataplane:   d.tables,
		Binary:      cfg.HAProxy.Binary,
		RuntimeDir:  cfg.Node.RuntimeDir,
		Logger:      d.log.With("part", "haproxy"),
		MaglevSize:  loader.MaglevDefaultSize,
		MaglevSeed:  seed,
		MaglevPrev:  prev,
		MaxTransfer: cfg.Timeouts.MaxTransfer.Duration,
		OnChange: func() {
			d.kick()
			// New instances load the file, which may have rotated
			// since they read it.
			d.tickets.Kick()
		},
	})
}

// serve runs the main loop until ctx ends, the API server fails or a
// restart handover is asked for.
func (d *Daemon) serve(ctx context.Context, apiDone <-chan error) error {
	// The watchdog pinger asks this loop, so a loop that stops turning
	// stops the pings and the service manager restarts ober.
	ask := make(chan chan struct{})
	if d.opts.Watchdog > 0 {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go d.pingWatchdog(wctx, d.opts.Watchdog, ask)
	}
	ready := newReadiness(d)
	defer ready.stop()
	for {
		select {
		case <-ready.tick():
			ready.check()
		case reply := <-ask:
			close(reply)
		case <-ctx.Done():
			d.stop()
			return nil
		case err := <-apiDone:
			return fmt.Errorf("api server: %w", err)
		case <-d.opts.Reload:
			d.notify(sdnotify.Reloading, sdnotify.MonotonicUsec(), sdnotify.Status("reloading %s", d.opts.ConfigPath))
			err := d.reload(ctx)
			if err != nil {
				d.log.Error("reload refused; the running configuration stays", "err", err)
			}
			ready.reloaded(err)
		case req := <-d.applies:
			d.applyBatch(ctx, req)
			ready.reloaded(nil)
		case <-d.opts.Restart:
			// Nothing of stop runs: no withdraw, no drain.
			d.stopped = true
			d.handover()
			return ErrRestart
		}
	}
}

// stop withdraws the node, drains the instances and stops everything
// Run started but the dataplane; only the first call does anything.
func (d *Daemon) stop() {
	if d.stopped {
		return
	}
	d.stopped = true
	d.notify(sdnotify.Stopping, sdnotify.Status("stopping: withdrawing, then draining the instances"))
	d.mu.Lock()
	d.stopping = true
	drain := drainOf(d.cfgOrNil())
	d.mu.Unlock()
	d.deregisterAll()
	if d.handoff != nil {
		// The other nodes learn first that this one drains, so the
		// connections the routers move to them after the withdraw come
		// back here.
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := d.handoff.Drain(hctx, drain+routersConverge+time.Second); err != nil {
			d.log.Warn("drain handoff: not every node acknowledged; their share of this node's connections will be reset", "err", err)
		}
		cancel()
	}
	if d.ann != nil {
		// Routes first: the routers send new connections elsewhere while
		// this node finishes what it has.
		d.ann.withdraw("stopping")
		time.Sleep(routersConverge)
	}
	if d.vh != nil {
		// stop's own drain covers every connection from here on.
		d.vh.stop()
	}
	if d.tracker != nil {
		// The VIPs first, the same way: the backups take them while this
		// node finishes what it has (with ha.vrrp.handoff, they hand the
		// segments back: the VIPs stay on lo until the end).
		d.tracker.release(time.Second)
		if d.vh != nil {
			// The VIPs stay on lo: SYNs that reach this node before the
			// new holder's gratuitous ARPs are served here, and handed
			// back to it later, instead of refused.
			time.Sleep(routersConverge)
		}
	}
	d.log.Info("stopping: draining instances", "drain", drain)
	began := time.Now()
	d.sup.Stop(context.Background(), drain)
	if d.handoff != nil {
		// A finished instance's last bytes may still be in the kernel's
		// send buffers, paced by a slow client whose segments the other
		// nodes hand back: they must keep doing so until those sockets
		// are gone too.
		d.waitSocketsGone(began.Add(drain))
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := d.handoff.Done(hctx); err != nil {
			d.log.Warn("drain handoff: end not acknowledged by every node (they forget this node when its drain time ends)", "err", err)
		}
		cancel()
		d.handoff.Close()
		d.flowReader.Close()
	}
	d.stopKeepalived()
	if d.vh != nil {
		d.vh.dropLo()
	}
	if d.speaker != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if err := d.speaker.Stop(sctx); err != nil {
			d.log.Warn("bgp sessions not closed cleanly; the routers drop them with the process", "err", err)
		}
		cancel()
	}
}

// waitSocketsGone waits, until deadline at most, for the VIPs' last
// connections to close in the kernel.
func (d *Daemon) waitSocketsGone(deadline time.Time) {
	if d.localFlows == nil {
		return
	}
	for {
		open, err := d.localFlows.OpenByVIP()
		if err != nil {
			d.log.Warn("stopping: cannot list the last connections", "err", err)
			return
		}
		n := 0
		for _, c := range open {
			n += c
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.log.Warn("stopping: connections still open in the kernel at the end of the drain; the other nodes stop handing them back", "open", n)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tlsHandshakeBound is timeouts.tls_handshake in force.
func (d *Daemon) tlsHandshakeBound() time.Duration {
	if cfg := d.config(); cfg != nil {
		return cfg.Timeouts.TLSHandshake.Duration
	}
	return config.DefaultTLSHandshake
}

// tlsServices are the VIP:port pairs of the TLS services in force.
func (d *Daemon) tlsServices() map[netip.AddrPort]bool {
	if p := d.plan(); p != nil {
		return p.TLSServices()
	}
	return nil
}

func drainOf(cfg *config.Config) time.Duration {
	if cfg == nil {
		return 30 * time.Second
	}
	return cfg.Timeouts.Drain.Duration
}

// kick tells the announcer to look at the node's health now. It never
// blocks: one pending kick covers any number of changes.
func (d *Daemon) kick() {
	select {
	case d.changes <- struct{}{}:
	default:
	}
}

// config is the configuration in force, nil before the first one serves.
func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfgOrNil()
}

// plan is the plan in force, nil before the first one serves.
func (d *Daemon) plan() *plan.NodePlan {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// startBGP opens the router sessions and starts announcing once the node
// is healthy.
func (d *Daemon) startBGP(ctx context.Context, p *plan.NodePlan) error {
	cfg := p.Config
	sc := p.BGP.Speaker
	if gr := cfg.HA.BGP.GracefulRestart; gr.Enabled && !d.handedOverAt.IsZero() {
		// Within the restart time the routers still hold the previous
		// speaker's routes as stale: reconnect as the restarting speaker.
		sc.Restarting = time.Since(d.handedOverAt) < gr.RestartTime.Duration
	}
	if sc.Restarting {
		// The routers hold the previous speaker's routes as stale until
		// this one's End-of-RIB, which goes out as soon as theirs are in:
		// the routes must be in the table before the sessions open.
		// Health first, though: a node not fit to announce lets them go.
		w := cfg.HA.BGP.AnnounceWhen
		wait := min(cfg.HA.BGP.GracefulRestart.RestartTime.Duration/2, readyWait)
		ok, reason := d.waitHealthy(ctx, wait, func() (bool, string) { return d.healthFor(w.MinInstances, *w.BackendUp) })
		if ok {
			sc.Initial = p.BGP.Routes
		} else {
			d.log.Warn("bgp: not healthy after the restart; the routers drop the stale routes until the node announces again",
				"waited", wait, "reason", reason)
		}
	}
	if err := d.startHandoff(cfg); err != nil {
		return err
	}
	var err error
	d.speaker, err = bgp.Start(ctx, sc, d.log.With("part", "bgp"))
	if err != nil {
		return fmt.Errorf("ha.bgp: %w", err)
	}
	d.log.Info("bgp started", "asn", sc.ASN, "router_id", sc.RouterID, "peers", len(sc.Peers), "restarting", sc.Restarting)
	d.ann = &announcer{d: d, sp: d.speaker}
	if len(sc.Initial) > 0 {
		// Announced already, as the previous speaker did: a health change
		// from here on withdraws, and no join is handed off (the routers
		// moved no connection away from this node).
		d.ann.announced, d.ann.ever = true, true
	}
	go d.ann.run(ctx, d.changes)
	return nil
}

func (d *Daemon) cfgOrNil() *config.Config {
	if d.cur == nil {
		return nil
	}
	return d.cur.Config
}

// supervisorPlan is the supervisor's part of p; its commit writes p's
// tables once p's instances serve.
func (d *Daemon) supervisorPlan(p *plan.NodePlan, base tables.Base) supervisor.Plan {
	return supervisor.Plan{
		Slots:       p.Slots,
		Listeners:   p.Listeners,
		Render:      p.RenderWith(d.ctrl.Snapshot),
		MaxTransfer: p.MaxTransfer(),
		Commit:      func() error { return d.tables.Apply(p.Tables, base) },
	}
}

// reload plans the configuration file again and applies what changed.
// Nothing changes unless the whole new configuration is valid, resolves,
// renders, passes HAProxy's check and its instances start.
func (d *Daemon) reload(ctx context.Context) error { return d.reloadFrom(ctx, true) }

// reloadFrom is reload; without fromFile it plans the running
// configuration again, with what discovery found now.
func (d *Daemon) reloadFrom(ctx context.Context, fromFile bool) (err error) {
	defer func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if err != nil {
			d.reloadFails++
			d.reloadErr = err.Error()
		} else {
			d.reloadErr = ""
		}
	}()
	prev := d.plan()
	old := prev.Config
	var (
		cfg  *config.Config
		base tables.Base
	)
	if fromFile {
		d.log.Info("reloading configuration", "path", d.opts.ConfigPath)
		cfg, base, err = d.readConfig(ctx, old.Node.RuntimeDir)
	} else {
		d.log.Info("applying discovered backends")
		cfg, base, err = d.runningConfig(ctx, old.Node.RuntimeDir)
	}
	if err != nil {
		return err
	}
	loaded := cfg
	if err := immutable(old, cfg); err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	cfg, commitDiscovery, err := d.discover(ctx, cfg, false)
	if err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	// The pools' sources change with the reload, and only if it is
	// taken: a refused file leaves the running discovery alone.
	defer func() {
		commitDiscovery(err == nil)
		if err == nil {
			d.disc.setLoaded(loaded)
		}
	}()
	if d.mgmt != nil {
		// The tokens file and the TLS listener's files are read again: a
		// token revoked is refused, a renewed certificate served, from
		// this reload on.
		if err := d.mgmt.reloadFiles(cfg); err != nil {
			return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
		}
	}
	p, err := plan.Make(ctx, cfg, d.opts.Resolver, d.version, prev)
	if err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	for _, n := range cfg.BalanceNotes() {
		d.log.Info("balance: " + n)
	}
	defer func() {
		if err != nil {
			p.RemoveACLs(prev) // refused: no new instance loads them
			if p.IPAM.Changed() && prev.IPAM.Allocations != nil {
				// The running services keep the addresses they hold.
				if werr := d.writeIPAM(prev); werr != nil {
					d.log.Error("vip_pools: putting the running allocations back", "err", werr)
				}
			}
		}
	}()
	ch := plan.Diff(prev, p)
	if ch.RuntimeOnly() {
		// The instances' configuration is the running one but for the
		// servers' weights and states, which HAProxy took when it
		// checked that: no new file, no check, nothing renewed.
		// Only backends' weights and admin states changed: HAProxy's
		// runtime API applies them, and no instance is renewed.
		if err := d.saveIPAM(p); err != nil {
			return err
		}
		seed, shared, err := ticketSeed(p)
		if err != nil {
			return err
		}
		if err := d.setServers(p); err != nil {
			return err
		}
		// Every instance has the new weights and states before the
		// reload counts as done: the API answers after this.
		if err := d.ctrl.Sync(ctx); err != nil {
			d.log.Warn("servers: not every instance has the new weights yet; the next pass retries", "err", err)
		}
		d.mu.Lock()
		d.cur = p
		d.generation++
		d.loadedAt = time.Now()
		d.mu.Unlock()
		if err := d.setTickets(p, seed, shared); err != nil {
			d.log.Error("tls session tickets: the instances keep the previous keys", "err", err)
		}
		d.kick()
		d.lastChanges = ch
		d.log.Info("configuration reloaded", "generation", d.generation, "changed", ch.String())
		return nil
	}
	if err := d.checkPlan(ctx, p); err != nil {
		return err
	}
	seed, shared, err := ticketSeed(p)
	if err != nil {
		return err
	}
	if err := d.saveIPAM(p); err != nil {
		return err
	}
	if err := d.setServers(p); err != nil {
		return err
	}
	attachedBefore := slices.Clone(d.attached)
	addedBefore := slices.Clone(d.addedVIPs)
	undo := func() {
		if err := d.setServers(prev); err != nil {
			d.log.Error("health checks: back to the running configuration's", "err", err)
		}
		if prevSeed, prevShared, err := ticketSeed(prev); err != nil {
			d.log.Error("tls session tickets: back to the running configuration's", "err", err)
		} else if err := d.setTickets(prev, prevSeed, prevShared); err != nil {
			d.log.Error("tls session tickets: back to the running configuration's", "err", err)
		}
		for _, iface := range d.attached {
			if !slices.Contains(attachedBefore, iface) {
				_ = d.dp.DetachXDP(iface)
			}
		}
		d.attached = attachedBefore
		d.removeVIPs(old.Node.VIPInterface, addedBefore)
	}
	if err := d.attach(ch.Attach, p.XDPMode); err != nil {
		undo()
		return err
	}
	if err := d.ensureVIPs(p.Config); err != nil {
		undo()
		return err
	}
	// The new instances load the new seed's keys (the file must be
	// there: tickets may have just been turned on); the rotator moves
	// the running ones too.
	if err := d.setTickets(p, seed, shared); err != nil {
		undo()
		return err
	}
	// The instances are renewed even when their configuration is the
	// same: a reload is how an upgraded HAProxy binary comes into service.
	if err := d.sup.Apply(ctx, d.supervisorPlan(p, base)); err != nil {
		undo()
		return fmt.Errorf("start new instances: %w", err)
	}
	p.PruneACLs()
	// Committed: let go of what the old configuration had and the new one
	// does not.
	for _, iface := range ch.Detach {
		if err := d.dp.DetachXDP(iface); err != nil {
			d.log.Warn("detach interface no longer configured", "iface", iface, "err", err)
		}
	}
	d.attached = slices.DeleteFunc(d.attached, func(iface string) bool { return slices.Contains(ch.Detach, iface) })
	d.dropOldVIPs(p.Config)
	d.mu.Lock()
	d.cur = p
	d.generation++
	d.loadedAt = time.Now()
	d.mu.Unlock()
	// The serving instances are now the new plan's.
	d.tickets.Kick()
	if d.speaker != nil {
		if ch.Peers {
			if err := d.speaker.SetPeers(ctx, p.BGP.Speaker.Peers); err != nil {
				d.log.Error("bgp peers after reload", "err", err)
			}
		}
		d.kick()
	}
	if d.ka != nil {
		if d.vh != nil {
			if err := d.vh.reloaded(p.Config); err != nil {
				d.log.Error("vrrp handoff: the VIPs on lo", "err", err)
			}
			d.vh.setInstances(p.VRRP.Instances)
		}
		if ch.VRRP {
			if err := d.ka.Reload(ctx, *p.VRRP); err != nil {
				d.log.Error("vrrp: keepalived keeps its previous configuration", "err", err)
			}
		}
		d.kick()
	}
	d.lastChanges = ch
	d.log.Info("configuration reloaded", "generation", d.generation, "changed", ch.String())
	return nil
}

// readConfig reads the configuration file and the whitelists' live
// generations together, under the whitelist transaction lock, so that a
// list `ober sync` changes after the file was read is noticed when the
// plan is applied (tables.Base).
func (d *Daemon) readConfig(ctx context.Context, runtimeDir string) (*config.Config, tables.Base, error) {
	return d.withBase(ctx, runtimeDir, func() (*config.Config, error) { return config.Load(d.opts.ConfigPath) })
}

// withBase reads the whitelists' live generations and then, under the
// same whitelist transaction lock, the configuration load gives.
func (d *Daemon) withBase(ctx context.Context, runtimeDir string, load func() (*config.Config, error)) (*config.Config, tables.Base, error) {
	unlock, err := whitelist.Lock(ctx, runtimeDir)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	base, err := d.tables.ReadBase()
	if err != nil {
		return nil, nil, fmt.Errorf("read whitelists: %w", err)
	}
	cfg, err := load()
	if err != nil {
		return nil, nil, err
	}
	return cfg, base, nil
}

// immutable refuses changes that need a restart of ober.
func immutable(old, cfg *config.Config) error {
	var errs []error
	same := func(path, a, b string) {
		if a != b {
			errs = append(errs, &config.FieldError{Path: path, Value: fmt.Sprintf("%q", b),
				Msg: fmt.Sprintf("cannot change on reload (running with %q); restart ober", a)})
		}
	}
	same("node.bpffs_root", old.Node.BPFFSRoot, cfg.Node.BPFFSRoot)
	same("node.runtime_dir", old.Node.RuntimeDir, cfg.Node.RuntimeDir)
	same("api.listen", old.API.Listen, cfg.API.Listen)
	same("api.socket", old.API.Socket, cfg.API.Socket)
	same("api.manage.listen", old.API.Manage.Listen, cfg.API.Manage.Listen)
	same("api.manage.tls.cert", old.API.Manage.TLS.Cert, cfg.API.Manage.TLS.Cert)
	same("api.manage.tls.key", old.API.Manage.TLS.Key, cfg.API.Manage.TLS.Key)
	same("api.manage.tls.client_ca", old.API.Manage.TLS.ClientCA, cfg.API.Manage.TLS.ClientCA)
	same("api.gorb_compat", old.API.GORBCompat, cfg.API.GORBCompat)
	same("haproxy.binary", old.HAProxy.Binary, cfg.HAProxy.Binary)
	same("ha.mode", old.HA.Mode, cfg.HA.Mode)
	if old.HA.VRRP != nil && cfg.HA.VRRP != nil {
		hf := func(h *config.Handoff) string {
			if h == nil {
				return "off"
			}
			return fmt.Sprintf("key_file %s, port %d", h.KeyFile, h.Port)
		}
		same("ha.vrrp.handoff", hf(old.HA.VRRP.Handoff), hf(cfg.HA.VRRP.Handoff))
	}
	if old.HA.BGP != nil && cfg.HA.BGP != nil {
		same("ha.bgp.asn", fmt.Sprint(old.HA.BGP.ASN), fmt.Sprint(cfg.HA.BGP.ASN))
		same("ha.bgp.router_id", old.HA.BGP.RouterID.String(), cfg.HA.BGP.RouterID.String())
		same("ha.bgp.listen_port", fmt.Sprint(old.HA.BGP.ListenPort), fmt.Sprint(cfg.HA.BGP.ListenPort))
	}
	return errors.Join(errs...)
}

// attach attaches the XDP program to ifaces.
func (d *Daemon) attach(ifaces []string, mode loader.XDPMode) error {
	for _, iface := range ifaces {
		got, err := d.dp.AttachXDP(iface, mode)
		if err != nil {
			return fmt.Errorf("node.interfaces: %q: %w", iface, err)
		}
		if !slices.Contains(d.attached, iface) {
			d.attached = append(d.attached, iface)
			d.log.Info("xdp attached", "iface", iface, "mode", got)
		}
	}
	return nil
}

// isStopping reports whether stop has begun.
func (d *Daemon) isStopping() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopping
}
