// Package routertest runs real upstream routers, BIRD 2 or FRR, inside
// test network namespaces, so that tests can watch how fast a VIP route
// announced by ober nodes appears in and leaves the router's kernel table.
//
// A router peers with every configured ober node over a directly
// connected link, imports everything they announce, exports nothing, and
// installs one ECMP route per prefix in its namespace's main table, much
// like a top-of-rack switch in front of an ober cluster.
//
// Every daemon runs inside the test's namespace with its configuration,
// sockets, pid files and logs in a private directory, and is stopped by
// the PID this package started. Nothing touches the root namespace.
//
// Measured delays include each suite's own. FRR batches route changes
// in work queues held 50 ms in bgpd and 10 ms in zebra, so a withdrawal
// reaches the kernel about 60 ms after the UPDATE; BIRD takes about a
// millisecond. BIRD 2.0.12 acts on events raised by its own timers, such
// as an expired hold timer, only at the next wakeup of its main loop
// (the next timer or packet, up to a second here), while BFD and
// received messages take effect at once.
package routertest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// Kind names a routing suite.
type Kind string

const (
	BIRD Kind = "bird"
	FRR  Kind = "frr"
)

// Neighbor is one ober node the router peers with.
type Neighbor struct {
	Addr    netip.Addr // the node's address (IPv4 or IPv6) on a directly connected link
	ASN     uint32
	BFD     bool // single-hop BFD on this session
	Passive bool // the router only waits for the node to connect
	// Password turns on TCP MD5 signatures (RFC 2385) on the session.
	Password string
}

// Config describes the router. A neighbor's address family picks the
// session's only address family: an IPv4 neighbor carries IPv4 unicast,
// an IPv6 neighbor IPv6 unicast.
type Config struct {
	Kind          Kind
	ASN           uint32
	RouterID      netip.Addr // IPv4
	Neighbors     []Neighbor
	HoldTime      time.Duration // default 3s; keepalive = hold/3
	BFDInterval   time.Duration // min tx and min rx, default 100ms
	BFDMultiplier int           // default 3
}

// Session is the router's view of one BGP session.
type Session struct {
	State string // normalized: "Established", or the router's own word for anything else (e.g. "Active", "Connect", "Idle")
	BFD   string // "Up", "Down", "Init", or "" when no BFD session
}

// Router is a running BIRD or FRR instance.
type Router struct {
	NS   *netnstest.NS
	Kind Kind
	Dir  string // configuration, sockets, pid files and logs

	cfg      Config
	bird     bird
	frr      frr
	daemons  []*daemon // in start order
	stopOnce sync.Once
}

// startTimeout bounds how long daemons may take to answer their control
// socket after being started.
const startTimeout = 20 * time.Second

// Start writes the router's config and starts it in ns. ns must already
// have its links and addresses.
//
// It enables IPv4 and IPv6 forwarding and L4 multipath hashing inside
// ns. Routes learnt from all neighbors are installed in ns's main table as
// one multipath route per prefix (up to 16 paths); nothing is exported to
// the neighbors. Graceful restart is off on the router, so that a session
// that goes down takes its routes with it at once rather than leaving
// them stale for the restart time.
func Start(t testing.TB, ns *netnstest.NS, cfg Config) *Router {
	t.Helper()
	netnstest.RequireRoot(t)
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatalf("routertest: %v", err)
	}
	r := newRouter(t, ns, cfg)
	if err := routerSysctls(ns); err != nil {
		t.Fatalf("routertest: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	switch cfg.Kind {
	case BIRD:
		err = r.startBIRD(ctx)
	case FRR:
		err = r.startFRR(ctx)
	}
	if err != nil {
		// The cleanup newRouter registered adds the daemons' logs.
		t.Fatalf("routertest: start %s in %s: %v", cfg.Kind, ns.Name, err)
	}
	return r
}

// newRouter finds the programs of cfg.Kind and makes the instance's
// directory, removed at cleanup after the daemons have been stopped.
func newRouter(t testing.TB, ns *netnstest.NS, cfg Config) *Router {
	t.Helper()
	r := &Router{NS: ns, Kind: cfg.Kind, cfg: cfg}
	switch cfg.Kind {
	case BIRD:
		r.bird = requireBIRD(t)
	case FRR:
		r.frr = requireFRR(t)
	}
	// t.TempDir paths are long enough to push unix socket names towards
	// sun_path's 108 bytes, and sit under a root-only directory that the
	// FRR daemons, which drop to user frr, cannot enter.
	dir, err := os.MkdirTemp("", "rt")
	if err != nil {
		t.Fatalf("routertest: make state directory: %v", err)
	}
	r.Dir = dir
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("routertest: remove %s: %v", dir, err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("routertest: %s in %s, logs:\n%s", r.Kind, ns.Name, r.Log())
		}
		r.Stop()
	})
	return r
}

func (c Config) withDefaults() (Config, error) {
	if c.Kind != BIRD && c.Kind != FRR {
		return c, fmt.Errorf("unknown router kind %q", c.Kind)
	}
	if c.ASN == 0 {
		return c, errors.New("router ASN is 0")
	}
	if !c.RouterID.Is4() {
		return c, fmt.Errorf("router ID %v is not an IPv4 address", c.RouterID)
	}
	if c.HoldTime == 0 {
		c.HoldTime = 3 * time.Second
	}
	// Both suites take whole seconds, and BGP allows no hold time
	// between 0 and 3 s.
	if c.HoldTime < 3*time.Second || c.HoldTime%time.Second != 0 {
		return c, fmt.Errorf("hold time %v: need whole seconds, at least 3s", c.HoldTime)
	}
	if c.BFDInterval == 0 {
		c.BFDInterval = 100 * time.Millisecond
	}
	// FRR's bfdd takes milliseconds from 10 on.
	if c.BFDInterval < 10*time.Millisecond || c.BFDInterval%time.Millisecond != 0 {
		return c, fmt.Errorf("BFD interval %v: need whole milliseconds, at least 10ms", c.BFDInterval)
	}
	if c.BFDMultiplier == 0 {
		c.BFDMultiplier = 3
	}
	// 2 is FRR's lower bound, 255 the protocol's upper one.
	if c.BFDMultiplier < 2 || c.BFDMultiplier > 255 {
		return c, fmt.Errorf("BFD multiplier %d: need 2..255", c.BFDMultiplier)
	}
	seen := map[netip.Addr]bool{}
	for _, n := range c.Neighbors {
		switch {
		case !n.Addr.IsValid() || n.Addr.IsUnspecified():
			return c, fmt.Errorf("neighbor address %v is not usable", n.Addr)
		case n.Addr.Zone() != "" || n.Addr.IsLinkLocalUnicast():
			return c, fmt.Errorf("neighbor %v: link-local peering is not supported, use a global address", n.Addr)
		case n.Addr.Is4In6():
			return c, fmt.Errorf("neighbor %v: use the plain IPv4 form", n.Addr)
		case n.ASN == 0:
			return c, fmt.Errorf("neighbor %v has ASN 0", n.Addr)
		case seen[n.Addr]:
			return c, fmt.Errorf("neighbor %v configured twice", n.Addr)
		}
		seen[n.Addr] = true
	}
	return c, nil
}

func (c Config) anyBFD() bool {
	for _, n := range c.Neighbors {
		if n.BFD {
			return true
		}
	}
	return false
}

// keepalive is a third of the hold time, as both suites default to.
func (c Config) keepalive() int { return max(int(c.HoldTime/time.Second)/3, 1) }

func (c Config) hold() int { return int(c.HoldTime / time.Second) }

func (c Config) bfdMillis() int { return int(c.BFDInterval / time.Millisecond) }

// routerSysctls makes ns forward and spread flows over all paths of a
// multipath route by a hash of the 5-tuple, as a router in front of ober
// nodes would. Not policy 1 (L4), which takes the hash a packet from a
// local veth carries, the sender socket's, and TCP changes that after a
// retransmission timeout: the flow would move to another node (the
// lab's routerSysctls has the story).
// /proc/sys/net belongs to the namespace of the thread that opens it, so
// this never reaches the root namespace.
func routerSysctls(ns *netnstest.NS) error {
	settings := []struct{ path, value string }{
		{"/proc/sys/net/ipv4/ip_forward", "1"},
		{"/proc/sys/net/ipv6/conf/all/forwarding", "1"},
		{"/proc/sys/net/ipv4/fib_multipath_hash_policy", "3"},
		{"/proc/sys/net/ipv6/fib_multipath_hash_policy", "3"},
		{"/proc/sys/net/ipv4/fib_multipath_hash_fields", "0x0037"},
		{"/proc/sys/net/ipv6/fib_multipath_hash_fields", "0x0037"},
	}
	return ns.Do(func() error {
		for _, s := range settings {
			if err := os.WriteFile(s.path, []byte(s.value), 0); err != nil {
				return fmt.Errorf("set %s in %s: %w", s.path, ns.Name, err)
			}
		}
		return nil
	})
}

// Sessions reports every configured neighbor's session as the router's
// own CLI (birdc or vtysh of this instance) shows it. A neighbor the
// router does not list yet appears with State "Idle".
func (r *Router) Sessions(ctx context.Context) (map[netip.Addr]Session, error) {
	var (
		got map[netip.Addr]Session
		err error
	)
	switch r.Kind {
	case BIRD:
		got, err = r.birdSessions(ctx)
	case FRR:
		got, err = r.frrSessions(ctx)
	}
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]Session, len(r.cfg.Neighbors))
	for _, n := range r.cfg.Neighbors {
		s, ok := got[n.Addr]
		if !ok {
			s.State = "Idle"
		}
		switch {
		case !n.BFD:
			s.BFD = ""
		case s.BFD != "Up" && s.BFD != "Init":
			// AdminDown, FRR's "Unknown" (bfdd has not answered yet)
			// and a session not created yet all mean no liveness.
			s.BFD = "Down"
		}
		out[n.Addr] = s
	}
	return out, nil
}

// WaitEstablished polls Sessions until the sessions with addrs (all
// configured neighbors when none are given) are Established and, where
// the neighbor has BFD, their BFD session is Up too: a measurement that
// starts before BFD is up would time the hold timer instead.
func (r *Router) WaitEstablished(ctx context.Context, addrs ...netip.Addr) error {
	if len(addrs) == 0 {
		for _, n := range r.cfg.Neighbors {
			addrs = append(addrs, n.Addr)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last, lastErr string
	for {
		s, err := r.Sessions(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			lastErr = err.Error()
		case err == nil:
			var pending []string
			for _, a := range addrs {
				ss, ok := s[a]
				switch {
				case !ok:
					pending = append(pending, fmt.Sprintf("%v: not a configured neighbor", a))
				case ss.State != "Established" || (ss.BFD != "" && ss.BFD != "Up"):
					pending = append(pending, fmt.Sprintf("%v: %s, BFD %q", a, ss.State, ss.BFD))
				}
			}
			if len(pending) == 0 {
				return nil
			}
			last, lastErr = strings.Join(pending, "; "), ""
		}
		select {
		case <-ctx.Done():
			// The states seen last say more than the error of a
			// query that ctx's end cut short.
			seen := last
			if lastErr != "" {
				seen = strings.TrimPrefix(seen+"; last query failed: "+lastErr, "; ")
			}
			if seen == "" {
				seen = "no answer"
			}
			return fmt.Errorf("%s sessions in %s not established: %s: %w", r.Kind, r.NS.Name, seen, ctx.Err())
		case <-tick.C:
		}
	}
}

// Log returns the daemons' logs and anything they printed, for failure
// messages.
func (r *Router) Log() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(r.Dir, "*.log"))
	outs, _ := filepath.Glob(filepath.Join(r.Dir, "*.out"))
	files = append(files, outs...)
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(&b, "== %s: %v\n", filepath.Base(f), err)
			continue
		}
		if len(data) == 0 {
			continue
		}
		fmt.Fprintf(&b, "== %s\n%s", filepath.Base(f), data)
		if data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Stop stops the daemons by the PIDs this package started, last started
// first. It is also registered at cleanup; later calls do nothing.
func (r *Router) Stop() {
	r.stopOnce.Do(func() {
		for i := len(r.daemons) - 1; i >= 0; i-- {
			r.daemons[i].stop()
		}
	})
}

// daemon is one process started in the router's namespace.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
	err  error         // Wait's result, valid after done
}

// spawn starts a long-running process in the namespace with its output
// in Dir/name.out. `ip netns exec` execs the program, so the PID Start
// records is the daemon's own.
func (r *Router) spawn(name, path string, args ...string) (*daemon, error) {
	out, err := os.OpenFile(filepath.Join(r.Dir, name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open output file for %s: %w", name, err)
	}
	defer out.Close() // the child has its own copy
	cmd := r.NS.Exec(context.Background(), path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	r.daemons = append(r.daemons, d)
	return d, nil
}

// exited reports how the daemon ended, or nil while it runs.
func (d *daemon) exited() error {
	select {
	case <-d.done:
		if d.err == nil {
			return fmt.Errorf("%s exited", d.name)
		}
		return fmt.Errorf("%s exited: %w", d.name, d.err)
	default:
		return nil
	}
}

// stop asks the daemon to shut down (BIRD and FRR remove their kernel
// routes on SIGTERM) and kills it if it does not.
func (d *daemon) stop() {
	if d.exited() != nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return
	case <-time.After(5 * time.Second):
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}

// waitReady polls ready until it succeeds, the daemons die, or ctx ends.
func (r *Router) waitReady(ctx context.Context, what string, ready func(context.Context) error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		for _, d := range r.daemons {
			if e := d.exited(); e != nil {
				return e
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v: %w", what, err, ctx.Err())
		case <-tick.C:
		}
	}
}

// run runs a control command (birdc, vtysh) and returns its output.
func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// lookTool finds a command on PATH or, as tests may run with a PATH
// lacking the sbin directories, at its Debian location; it fails the
// test naming the package when neither exists.
func lookTool(t testing.TB, name, debianPath, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	netnstest.RequireTool(t, debianPath, pkg)
	return debianPath
}
