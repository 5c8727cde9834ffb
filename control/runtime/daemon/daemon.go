// Package daemon is `ober run`: it wires the configuration, the pinned
// dataplane, the HAProxy supervisor and the health/status/metrics server
// into the node's long-running control process.
//
// Start order is chosen so a mistake fails before anything serves: the
// configuration is parsed, resolved, rendered and checked by HAProxy; the
// API port is bound; only then is the dataplane attached and the first
// generation of instances started. A reload (SIGHUP) goes through the
// same checks and changes nothing unless they all pass; the running
// generation keeps serving until its replacement is healthy.
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
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/control/runtime/handshake"
	"github.com/ober-ingress/ober/control/runtime/sdnotify"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
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

	dp      *loader.Dataplane
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
	// reaper bounds TLS handshakes where HAProxy cannot.
	reaper *handshake.Reaper
	// ka and tracker run in ha.mode vrrp.
	ka      *vrrp.Keepalived
	tracker *tracker

	mu          sync.Mutex
	cur         *built
	generation  uint64
	loadedAt    time.Time
	reloadErr   string
	reloadFails uint64
	attached    []string
	addedVIPs   []netip.Prefix
	ready       bool
	stopping    bool
	// backendsUp is the last backend verdict of a health check that had
	// results.
	backendsUp bool
	startedAt  time.Time

	// notifyFailed keeps a broken notification socket to one warning.
	notifyFailed bool
	// handedOverAt is when the previous ober left in a restart handover;
	// zero when it did not.
	handedOverAt time.Time
}

// CheckResult is what `ober run --check` reports.
type CheckResult struct {
	Config    *config.Config
	HAProxy   haproxy.Version
	Instances int
	Rendered  string // instance 0's configuration
}

// Check validates, resolves and renders the configuration at path and
// has HAProxy check it, without starting or changing anything.
func Check(ctx context.Context, path string, r resolver) (*CheckResult, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	v, err := haproxy.DetectVersion(ctx, cfg.HAProxy.Binary)
	if err != nil {
		return nil, fmt.Errorf("haproxy.binary: %w", err)
	}
	// Certificate bundles, a self-signed certificate and the check's
	// scratch files go to a private directory: a check writes nothing a
	// node uses.
	tmp, err := os.MkdirTemp("", "ober-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cfg.Node.RuntimeDir = filepath.Join(tmp, "run")
	cfg.Node.StateDir = filepath.Join(tmp, "state")
	if err := os.MkdirAll(cfg.Node.RuntimeDir, 0o700); err != nil {
		return nil, err
	}
	b, err := build(ctx, cfg, r, v, nil)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := b.check(ctx); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	fds := map[uint32]int{}
	for i, l := range b.listeners {
		fds[l.ID] = 3 + i
	}
	text, err := b.render(b.slots[0], fds, filepath.Join(cfg.Node.RuntimeDir, "haproxy-0.sock"))
	if err != nil {
		return nil, err
	}
	return &CheckResult{Config: cfg, HAProxy: v, Instances: len(b.slots), Rendered: string(text)}, nil
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
	d := &Daemon{opts: opts, log: opts.Logger, startedAt: time.Now(), changes: make(chan struct{}, 1)}
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Node.RuntimeDir, 0o750); err != nil {
		return fmt.Errorf("node.runtime_dir: %w", err)
	}
	if d.handedOverAt, err = takeHandover(cfg); err != nil {
		d.log.Warn("restart handover mark unreadable; starting as after a stop", "err", err)
	} else if !d.handedOverAt.IsZero() {
		d.log.Info("taking over after a restart handover", "left", time.Since(d.handedOverAt).Round(time.Millisecond))
	}
	d.version, err = haproxy.DetectVersion(ctx, cfg.HAProxy.Binary)
	if err != nil {
		return fmt.Errorf("haproxy.binary: %w", err)
	}
	d.log.Info("haproxy found", "binary", cfg.HAProxy.Binary, "version", d.version.String())
	if !haproxy.FeaturesFor(d.version).ClientHandshakeTimeout {
		// HAProxy bounds the handshake only from 3.0 on; here ober does,
		// once the instances serve.
		d.reaper = &handshake.Reaper{Bound: d.tlsHandshakeBound, Services: d.tlsServices, Logger: d.log.With("part", "haproxy")}
	}
	b, err := build(ctx, cfg, opts.Resolver, d.version, nil)
	if err != nil {
		return fmt.Errorf("config %s: %w", opts.ConfigPath, err)
	}
	if b.maxConn < cfg.Instances.MaxConn {
		d.log.Warn("instances.maxconn lowered to fit the file descriptor limit (raise LimitNOFILE to keep it)",
			"configured", cfg.Instances.MaxConn, "used", b.maxConn, "nofile", fdLimit())
	}
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("config %s: %w", opts.ConfigPath, err)
	}
	if err := prepareChroot(cfg.HAProxy.Chroot); err != nil {
		return fmt.Errorf("config %s: %w", opts.ConfigPath, err)
	}

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
	if err := d.attach(cfg); err != nil {
		return err
	}
	if err := d.ensureVIPs(cfg); err != nil {
		return err
	}

	seed, prev, err := d.dp.Maglev()
	if err != nil || prev == nil {
		h := fnv.New32a()
		h.Write([]byte(cfg.Node.Name))
		seed, prev = h.Sum32(), nil
	}
	d.sup, err = supervisor.New(supervisor.Options{
		Dataplane:   d.dp,
		Binary:      cfg.HAProxy.Binary,
		RuntimeDir:  cfg.Node.RuntimeDir,
		Logger:      d.log.With("part", "haproxy"),
		MaglevSize:  loader.MaglevDefaultSize,
		MaglevSeed:  seed,
		MaglevPrev:  prev,
		MaxTransfer: cfg.Timeouts.MaxTransfer.Duration,
		OnChange:    d.kick,
	})
	if err != nil {
		return err
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		d.notify(sdnotify.Stopping, sdnotify.Status("stopping: withdrawing, then draining the instances"))
		d.mu.Lock()
		d.stopping = true
		drain := drainOf(d.cfgOrNil())
		d.mu.Unlock()
		if d.handoff != nil {
			// The other nodes learn first that this one drains, so the
			// connections the routers move to them after the withdraw
			// come back here.
			hctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := d.handoff.Drain(hctx, drain+routersConverge+time.Second); err != nil {
				d.log.Warn("drain handoff: not every node acknowledged; their share of this node's connections will be reset", "err", err)
			}
			cancel()
		}
		if d.ann != nil {
			// Routes first: the routers send new connections elsewhere
			// while this node finishes what it has.
			d.ann.withdraw("stopping")
			time.Sleep(routersConverge)
		}
		if d.tracker != nil {
			// The VIPs first, the same way: the backups take them while
			// this node finishes what it has.
			d.tracker.release(time.Second)
		}
		d.log.Info("stopping: draining instances", "drain", drain)
		d.sup.Stop(context.Background(), drain)
		if d.handoff != nil {
			hctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := d.handoff.Done(hctx); err != nil {
				d.log.Warn("drain handoff: end not acknowledged by every node (they forget this node when its drain time ends)", "err", err)
			}
			cancel()
			d.handoff.Close()
			d.flowReader.Close()
		}
		d.stopKeepalived()
		if d.speaker != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			if err := d.speaker.Stop(sctx); err != nil {
				d.log.Warn("bgp sessions not closed cleanly; the routers drop them with the process", "err", err)
			}
			cancel()
		}
	}
	defer stop()
	if err := d.sup.Apply(ctx, d.plan(b)); err != nil {
		return fmt.Errorf("start instances: %w", err)
	}
	b.pruneACLs()
	d.mu.Lock()
	d.cur, d.generation, d.loadedAt, d.ready = b, 1, time.Now(), true
	d.mu.Unlock()
	if d.reaper != nil {
		go d.reaper.Run(ctx)
	}
	switch cfg.HA.Mode {
	case config.HAModeBGP:
		if err := d.startBGP(ctx, cfg); err != nil {
			return err
		}
	case config.HAModeVRRP:
		if err := d.startVRRP(ctx, cfg); err != nil {
			return err
		}
	}
	d.log.Info("serving", "node", cfg.Node.Name, "vips", len(cfg.VIPs), "services", len(cfg.Services),
		"instances", len(b.slots), "api", cfg.API.Listen)

	// The watchdog pinger asks this loop, so a loop that stops turning
	// stops the pings and the service manager restarts ober.
	ask := make(chan chan struct{})
	if opts.Watchdog > 0 {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go d.pingWatchdog(wctx, opts.Watchdog, ask)
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
			stop()
			return nil
		case err := <-apiDone:
			return fmt.Errorf("api server: %w", err)
		case <-opts.Reload:
			d.notify(sdnotify.Reloading, sdnotify.MonotonicUsec(), sdnotify.Status("reloading %s", opts.ConfigPath))
			err := d.reload(ctx)
			if err != nil {
				d.log.Error("reload refused; the running configuration stays", "err", err)
			}
			ready.reloaded(err)
		case <-opts.Restart:
			// Nothing of stop runs: no withdraw, no drain.
			stopped = true
			d.handover()
			return ErrRestart
		}
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
	d.mu.Lock()
	b := d.cur
	d.mu.Unlock()
	if b == nil {
		return nil
	}
	return b.tlsServices()
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

// startBGP opens the router sessions and starts announcing once the node
// is healthy.
func (d *Daemon) startBGP(ctx context.Context, cfg *config.Config) error {
	sc, err := SpeakerConfig(cfg)
	if err != nil {
		return err
	}
	sc.Peers = withGracefulRestart(cfg.HA.BGP, sc.Peers)
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
			sc.Initial = routes(cfg)
		} else {
			d.log.Warn("bgp: not healthy after the restart; the routers drop the stale routes until the node announces again",
				"waited", wait, "reason", reason)
		}
	}
	if err := d.startHandoff(cfg); err != nil {
		return err
	}
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
	return d.cur.cfg
}

// plan is the supervisor's view of b; its commit switches the services
// and whitelists once b's instances serve.
func (d *Daemon) plan(b *built) supervisor.Plan {
	return supervisor.Plan{
		Slots:       b.slots,
		Listeners:   b.listeners,
		Render:      b.render,
		MaxTransfer: b.cfg.Timeouts.MaxTransfer.Duration,
		Commit: func() error {
			for id, ps := range b.whitelists() {
				if _, err := d.dp.SetWhitelist(id, ps); err != nil {
					return fmt.Errorf("whitelist %s: %w", id, err)
				}
			}
			if err := d.dp.SetServices(b.vips, b.services); err != nil {
				return err
			}
			return d.dp.SetSteering(*b.cfg.Instances.Steering)
		},
	}
}

// reload applies the configuration file again. Nothing changes unless
// the whole new configuration is valid, resolves, renders, passes
// HAProxy's check and its instances start.
func (d *Daemon) reload(ctx context.Context) (err error) {
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
	d.log.Info("reloading configuration", "path", d.opts.ConfigPath)
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		return err
	}
	d.mu.Lock()
	prev := d.cur
	old := prev.cfg
	d.mu.Unlock()
	if err := immutable(old, cfg); err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	b, err := build(ctx, cfg, d.opts.Resolver, d.version, prev)
	if err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	defer func() {
		if err != nil {
			b.removeACLs(prev) // refused: no new instance loads them
		}
	}()
	if err := b.check(ctx); err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	if err := prepareChroot(cfg.HAProxy.Chroot); err != nil {
		return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
	}
	var kc vrrp.Config
	if d.ka != nil {
		if kc, err = VRRPConfig(cfg); err != nil {
			return fmt.Errorf("config %s: %w", d.opts.ConfigPath, err)
		}
	}
	attachedBefore := slices.Clone(d.attached)
	addedBefore := slices.Clone(d.addedVIPs)
	undo := func() {
		for _, iface := range d.attached {
			if !slices.Contains(attachedBefore, iface) {
				_ = d.dp.DetachXDP(iface)
			}
		}
		d.attached = attachedBefore
		d.removeVIPs(old.Node.VIPInterface, addedBefore)
	}
	if err := d.attach(cfg); err != nil {
		undo()
		return err
	}
	if err := d.ensureVIPs(cfg); err != nil {
		undo()
		return err
	}
	if err := d.sup.Apply(ctx, d.plan(b)); err != nil {
		undo()
		return fmt.Errorf("start new instances: %w", err)
	}
	b.pruneACLs()
	// Committed: let go of what the old configuration had and the new one
	// does not.
	for _, iface := range attachedBefore {
		if !slices.Contains(cfg.Node.Interfaces, iface) {
			if err := d.dp.DetachXDP(iface); err != nil {
				d.log.Warn("detach interface no longer configured", "iface", iface, "err", err)
			}
		}
	}
	d.attached = slices.Clone(cfg.Node.Interfaces)
	d.dropOldVIPs(cfg)
	d.mu.Lock()
	d.cur = b
	d.generation++
	d.loadedAt = time.Now()
	d.mu.Unlock()
	if d.speaker != nil {
		if err := d.speaker.SetPeers(ctx, withGracefulRestart(cfg.HA.BGP, speakerPeers(cfg.HA.BGP))); err != nil {
			d.log.Error("bgp peers after reload", "err", err)
		}
		d.kick()
	}
	if d.ka != nil {
		if err := d.ka.Reload(ctx, kc); err != nil {
			d.log.Error("vrrp: keepalived keeps its previous configuration", "err", err)
		}
		d.kick()
	}
	d.log.Info("configuration reloaded", "generation", d.generation)
	return nil
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
	same("haproxy.binary", old.HAProxy.Binary, cfg.HAProxy.Binary)
	same("ha.mode", old.HA.Mode, cfg.HA.Mode)
	if old.HA.BGP != nil && cfg.HA.BGP != nil {
		same("ha.bgp.asn", fmt.Sprint(old.HA.BGP.ASN), fmt.Sprint(cfg.HA.BGP.ASN))
		same("ha.bgp.router_id", old.HA.BGP.RouterID.String(), cfg.HA.BGP.RouterID.String())
		same("ha.bgp.listen_port", fmt.Sprint(old.HA.BGP.ListenPort), fmt.Sprint(cfg.HA.BGP.ListenPort))
	}
	return errors.Join(errs...)
}

// attach makes sure XDP runs on every configured interface and
// sk_lookup in this namespace.
func (d *Daemon) attach(cfg *config.Config) error {
	mode, err := loader.ParseXDPMode(cfg.Node.XDPMode)
	if err != nil {
		return fmt.Errorf("node.xdp_mode: %w", err)
	}
	for _, iface := range cfg.Node.Interfaces {
		got, err := d.dp.AttachXDP(iface, mode)
		if err != nil {
			return fmt.Errorf("node.interfaces: %q: %w", iface, err)
		}
		if !slices.Contains(d.attached, iface) {
			d.attached = append(d.attached, iface)
			d.log.Info("xdp attached", "iface", iface, "mode", got)
		}
	}
	if err := d.dp.AttachSkLookup(); err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}
	return nil
}
