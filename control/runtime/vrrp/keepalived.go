package vrrp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/lib/procstat"
)

// Options of the supervisor.
type Options struct {
	Binary  string // default "keepalived"
	Dir     string // private runtime dir for keepalived.conf, pid files, the FIFO, the track file
	Config  Config // TrackFile/NotifyFIFO are set by Start under Dir
	Healthy bool   // the initial health written to the track file before keepalived starts
	// Offsets are the initial priority offsets by VRID (SetOffset); a
	// VRID left out starts at 0.
	Offsets map[int]int
	Logger  *slog.Logger
	// OnState is called (from the FIFO reader goroutine) on every state
	// change keepalived reports, and with to == Unknown (from the
	// supervisor goroutine) for every instance when keepalived dies.
	// Calls for one instance are in order; it must not block for long.
	OnState func(in Instance, from, to State)
}

// Supervision timings.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
	// A keepalived that ran this long is considered to have started fine:
	// the next crash restarts it after minBackoff again.
	stableAfter = 30 * time.Second
	// Stop's bound between SIGTERM and SIGKILL when ctx has no deadline.
	stopGrace = 5 * time.Second
	// How long an orphaned VRRP child gets to send its priority-0 adverts.
	orphanGrace = time.Second
)

// Keepalived is one supervised keepalived process (parent plus its VRRP
// child) and what it last reported.
type Keepalived struct {
	log     *slog.Logger
	binary  string
	dir     string
	conf    string
	pidFile string
	vrrpPid string
	onState func(Instance, State, State)

	ns    netns.NsHandle
	links *links
	fifo  *os.File

	stopc      chan struct{} // closed by Stop: no more restarts
	superDone  chan struct{} // closed when the supervisor goroutine has returned
	readerDone chan struct{}

	reloadMu sync.Mutex // one Reload at a time

	mu        sync.Mutex
	cfg       Config
	inst      map[string]*instState
	healthy   bool
	written   bool        // the track file holds healthy
	offsets   map[int]int // by VRID, as the priority files hold them
	pid       int         // keepalived parent, 0 when not running
	restarts  uint64
	stopping  bool
	changed   chan struct{} // closed and replaced on every state change
	stopOnce  sync.Once
	lastError error
}

type instState struct {
	in          Instance
	state       State
	since       time.Time
	transitions uint64
}

// Start removes any of the instances' VIP addresses already on the
// interface (stale, from a crash), writes the track file, renders and
// checks the config, and starts keepalived under supervision. It works in
// the network namespace of the calling thread.
func Start(ctx context.Context, o Options) (*Keepalived, error) {
	if o.Dir == "" {
		return nil, errors.New("vrrp: runtime dir: empty")
	}
	if o.Binary == "" {
		o.Binary = "keepalived"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	bin, err := exec.LookPath(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("vrrp: keepalived binary %q: %w (install it with `apt-get install keepalived`)", o.Binary, err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("vrrp: runtime dir %s: %w", o.Dir, err)
	}
	k := &Keepalived{
		log:        o.Logger.With("component", "vrrp"),
		binary:     bin,
		dir:        o.Dir,
		conf:       filepath.Join(o.Dir, "keepalived.conf"),
		pidFile:    filepath.Join(o.Dir, "keepalived.pid"),
		vrrpPid:    filepath.Join(o.Dir, "keepalived_vrrp.pid"),
		onState:    o.OnState,
		stopc:      make(chan struct{}),
		superDone:  make(chan struct{}),
		readerDone: make(chan struct{}),
		changed:    make(chan struct{}),
		inst:       map[string]*instState{},
		offsets:    map[int]int{},
	}
	for vrid, off := range o.Offsets {
		k.offsets[vrid] = off
	}
	cfg := k.withPaths(o.Config)
	text, err := Render(cfg)
	if err != nil {
		return nil, err
	}
	// Bound to the caller's namespace: later goroutines run on threads that
	// may be anywhere else (in tests, in the root namespace).
	if k.ns, err = netns.Get(); err != nil {
		return nil, fmt.Errorf("vrrp: network namespace of the caller: %w", err)
	}
	h, err := netlink.NewHandleAt(k.ns)
	if err != nil {
		k.ns.Close()
		return nil, fmt.Errorf("vrrp: netlink handle: %w", err)
	}
	k.links = &links{h: h}
	fail := func(err error) (*Keepalived, error) {
		if k.fifo != nil {
			k.fifo.Close()
		}
		h.Close()
		k.ns.Close()
		return nil, err
	}

	// A keepalived left from an earlier ober (it should have died with it,
	// unless ober was replaced without dying) would fight the new one.
	k.killStale(ctx)
	k.setConfig(cfg)
	if removed, err := k.links.remove(cfg.Interface, vipsOf(cfg.Instances)); err != nil {
		return fail(fmt.Errorf("vrrp: remove stale VIPs: %w", err))
	} else if len(removed) > 0 {
		k.log.Warn("removed stale VIP addresses left from before", "interface", cfg.Interface, "vips", removed)
	}
	if err := k.SetHealthy(o.Healthy); err != nil {
		return fail(err)
	}
	if err := k.writeOffsets(cfg); err != nil {
		return fail(err)
	}
	if err := k.openFIFO(cfg.NotifyFIFO); err != nil {
		return fail(err)
	}
	if err := k.check(ctx, text); err != nil {
		return fail(err)
	}
	if err := atomicfile.Write(k.conf, text, 0o600); err != nil {
		return fail(fmt.Errorf("vrrp: %w", err))
	}
	go k.readFIFO()
	first := make(chan error, 1)
	go k.supervise(first)
	select {
	case err := <-first:
		if err != nil {
			k.fifo.Close()
			<-k.readerDone
			h.Close()
			k.ns.Close()
			return nil, err
		}
	case <-ctx.Done():
		// The supervisor finishes its start and then sees stopc.
		k.Stop(context.Background())
		return nil, fmt.Errorf("vrrp: start keepalived: %w", ctx.Err())
	}
	return k, nil
}

func (k *Keepalived) withPaths(c Config) Config {
	c = c.withDefaults()
	c.TrackFile = filepath.Join(k.dir, "health")
	c.NotifyFIFO = filepath.Join(k.dir, "notify.fifo")
	return c
}

// setConfig installs c and keeps the state of instances whose name and
// VIP did not change.
func (k *Keepalived) setConfig(c Config) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cfg = c
	next := make(map[string]*instState, len(c.Instances))
	for _, in := range c.Instances {
		st := &instState{in: in}
		if old, ok := k.inst[in.Name]; ok && old.in.VIP == in.VIP {
			st.state, st.since, st.transitions = old.state, old.since, old.transitions
		}
		next[in.Name] = st
	}
	k.inst = next
}

// SetHealthy writes the track file atomically ("0" or "1"); keepalived
// watches it with inotify (a rename counts), so a fault reaches it at once.
// Unchanged health writes nothing.
func (k *Keepalived) SetHealthy(ok bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.written && k.healthy == ok {
		return nil
	}
	val := "1\n"
	if ok {
		val = "0\n"
	}
	if err := atomicfile.Write(filepath.Join(k.dir, "health"), []byte(val), 0o600); err != nil {
		return fmt.Errorf("vrrp: track file: %w", err)
	}
	if k.written && k.healthy != ok {
		k.log.Info("vrrp health changed", "healthy", ok)
	}
	k.healthy, k.written = ok, true
	return nil
}

// Priority offsets: what a priority file may hold.
const (
	// HoldOffset puts a node at priority 1 for a VIP: it takes the VIP
	// only when no other node can, never from a master.
	HoldOffset = -253
	// MoveOffset puts a node at priority 254 for a VIP: it preempts every
	// other node.
	MoveOffset = 253
)

// SetOffset writes VRID's priority file: keepalived adds off to this
// node's priority for that VIP, within 1-254, at once (inotify).
func (k *Keepalived) SetOffset(vrid, off int) error {
	if off < HoldOffset || off > MoveOffset {
		return fmt.Errorf("vrrp: priority offset %d: must be %d to %d", off, HoldOffset, MoveOffset)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur, ok := k.offsets[vrid]; ok && cur == off && k.cfg.TrackFile != "" {
		if _, err := os.Stat(PriorityFile(k.cfg.TrackFile, vrid)); err == nil {
			return nil
		}
	}
	k.offsets[vrid] = off
	return k.writeOffsetLocked(vrid)
}

// Offset is VRID's priority offset now.
func (k *Keepalived) Offset(vrid int) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.offsets[vrid]
}

func (k *Keepalived) writeOffsetLocked(vrid int) error {
	path := PriorityFile(filepath.Join(k.dir, "health"), vrid)
	if err := atomicfile.Write(path, []byte(strconv.Itoa(k.offsets[vrid])+"\n"), 0o600); err != nil {
		return fmt.Errorf("vrrp: priority file: %w", err)
	}
	return nil
}

// writeOffsets writes every instance's priority file before keepalived
// reads c: a missing file would count as a fault.
func (k *Keepalived) writeOffsets(c Config) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, in := range c.Instances {
		if err := k.writeOffsetLocked(in.VRID); err != nil {
			return err
		}
	}
	return nil
}

// Reload applies a new Config (render, `keepalived -t`, then SIGHUP); on a
// bad config the running one stays and the error says why.
func (k *Keepalived) Reload(ctx context.Context, c Config) error {
	k.reloadMu.Lock()
	defer k.reloadMu.Unlock()
	c = k.withPaths(c)
	text, err := Render(c)
	if err != nil {
		return err
	}
	if err := k.writeOffsets(c); err != nil {
		return err
	}
	if err := k.check(ctx, text); err != nil {
		return err
	}
	if err := atomicfile.Write(k.conf, text, 0o600); err != nil {
		return fmt.Errorf("vrrp: %w", err)
	}
	k.mu.Lock()
	old := k.cfg
	pid := k.pid
	k.mu.Unlock()
	k.setConfig(c)
	if pid > 0 {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("vrrp: reload keepalived (pid %d): %w", pid, err)
		}
	}
	// keepalived drops the VIPs of instances it no longer has, but only if
	// it still runs and only on its interface; make sure.
	keep := map[string]netip.Addr{}
	for _, in := range c.Instances {
		if old.Interface == c.Interface {
			keep[in.Name] = in.VIP.Unmap()
		}
	}
	var gone []netip.Addr
	for _, in := range old.Instances {
		if v, ok := keep[in.Name]; !ok || v != in.VIP.Unmap() {
			gone = append(gone, in.VIP)
		}
	}
	if len(gone) > 0 {
		if removed, err := k.links.remove(old.Interface, gone); err != nil {
			k.log.Warn("remove VIPs of dropped instances", "err", err)
		} else if len(removed) > 0 {
			k.log.Info("removed VIPs of dropped instances", "interface", old.Interface, "vips", removed)
		}
	}
	k.log.Info("keepalived reloaded", "instances", len(c.Instances))
	return nil
}

// Release makes this node give up every VIP it masters (fault via the
// track file) and waits until keepalived reports no MASTER instance or ctx
// ends.
func (k *Keepalived) Release(ctx context.Context) error {
	if err := k.SetHealthy(false); err != nil {
		return err
	}
	for {
		k.mu.Lock()
		var masters []string
		for _, st := range k.inst {
			if st.state == Master {
				masters = append(masters, st.in.Name)
			}
		}
		ch := k.changed
		k.mu.Unlock()
		if len(masters) == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			slices.Sort(masters)
			return fmt.Errorf("vrrp: release: still MASTER of %s: %w", strings.Join(masters, ", "), ctx.Err())
		}
	}
}

// Stop stops keepalived (SIGTERM, then SIGKILL after a bound), waits, and
// removes any of its VIP addresses still on the interface.
func (k *Keepalived) Stop(ctx context.Context) error {
	k.mu.Lock()
	k.stopping = true
	pid := k.pid
	k.mu.Unlock()
	k.stopOnce.Do(func() { close(k.stopc) })
	if pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	grace := time.NewTimer(stopGrace)
	defer grace.Stop()
	select {
	case <-k.superDone:
	case <-ctx.Done():
	case <-grace.C:
	}
	select {
	case <-k.superDone:
	default:
		k.log.Warn("keepalived did not stop in time, killing it", "pid", pid)
		if pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		<-k.superDone
	}
	k.mu.Lock()
	cfg := k.cfg
	k.mu.Unlock()
	_, err := k.links.remove(cfg.Interface, vipsOf(cfg.Instances))
	k.fifo.Close()
	<-k.readerDone
	k.links.mu.Lock()
	k.links.h.Close()
	k.links.mu.Unlock()
	k.ns.Close()
	if err != nil {
		return fmt.Errorf("vrrp: stop: %w", err)
	}
	return nil
}

// Status is for `ober status`, /status and metrics.
type Status struct {
	PID       int              `json:"pid"`
	Restarts  uint64           `json:"restarts"`
	Healthy   bool             `json:"healthy"` // what the track file says
	Instances []InstanceStatus `json:"instances"`
}

// InstanceStatus is one VIP's VRRP state on this node.
type InstanceStatus struct {
	Name        string     `json:"name"`
	VIP         netip.Addr `json:"vip"`
	VRID        int        `json:"vrid"`
	Priority    int        `json:"priority"`
	Owner       netip.Addr `json:"owner"`
	State       State      `json:"state"`
	Since       time.Time  `json:"since"`
	Transitions uint64     `json:"transitions"`
	Held        bool       `json:"held"` // the VIP address is on the interface now
	// Offset is what the VIP's priority file adds to Priority (keepalived
	// keeps the sum within 1-254): HoldOffset while the node is not
	// ready to take VIPs, MoveOffset when an operator moved the VIP here.
	Offset int `json:"priority_offset,omitempty"`
}

// Status reports keepalived's process, the track file and every instance,
// in config order; Held is read from the interface now.
func (k *Keepalived) Status() Status {
	k.mu.Lock()
	s := Status{PID: k.pid, Restarts: k.restarts, Healthy: k.healthy}
	cfg := k.cfg
	for _, in := range cfg.Instances {
		st := k.inst[in.Name]
		s.Instances = append(s.Instances, InstanceStatus{
			Name: in.Name, VIP: in.VIP.Unmap(), VRID: in.VRID, Priority: in.Priority, Owner: in.Owner,
			State: st.state, Since: st.since, Transitions: st.transitions, Offset: k.offsets[in.VRID],
		})
	}
	k.mu.Unlock()
	held, err := k.links.held(cfg.Interface, vipsOf(cfg.Instances))
	if err != nil {
		k.log.Warn("read VIP addresses", "err", err)
	}
	for i := range s.Instances {
		s.Instances[i].Held = held[s.Instances[i].VIP]
	}
	return s
}

// Err is the last error of the supervisor (a failed restart), nil while
// keepalived runs fine.
func (k *Keepalived) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastError
}

// supervise starts keepalived and restarts it until Stop. It runs on one
// locked OS thread for its whole life: Pdeathsig fires when the thread
// that forked the child exits, not the process, and the child inherits the
// thread's network namespace.
func (k *Keepalived) supervise(first chan<- error) {
	defer close(k.superDone)
	runtime.LockOSThread() // never unlocked: the thread may have changed namespace
	if err := enterNS(k.ns); err != nil {
		first <- fmt.Errorf("vrrp: %w", err)
		return
	}
	cmd, err := k.spawn()
	first <- err
	if err != nil {
		return
	}
	backoff := minBackoff
	for {
		started := time.Now()
		werr := cmd.Wait()
		k.exited(cmd.Process.Pid, werr)
		if time.Since(started) > stableAfter {
			backoff = minBackoff
		}
		for {
			select {
			case <-k.stopc:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxBackoff)
			cmd, err = k.spawn()
			if err == nil {
				break
			}
			if errors.Is(err, errStopping) {
				return
			}
			k.log.Error("restart keepalived", "err", err, "retry_in", backoff)
			k.mu.Lock()
			k.lastError = err
			k.mu.Unlock()
		}
		k.mu.Lock()
		k.restarts++
		k.lastError = nil
		n := k.restarts
		k.mu.Unlock()
		k.log.Warn("keepalived restarted", "pid", cmd.Process.Pid, "restarts", n)
	}
}

var errStopping = errors.New("vrrp: stopping")

// spawn starts keepalived in the foreground on the calling (locked)
// thread: VRRP only (-P), no respawn of its VRRP child (-R: a dead child
// must surface here, where its VIPs get removed), logging to stderr (-l,
// -D) and not to syslog (-G: ober's log has the lines already).
func (k *Keepalived) spawn() (*exec.Cmd, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("vrrp: log pipe: %w", err)
	}
	cmd := exec.Command(k.binary, "-n", "-l", "-D", "-G", "-P", "-R",
		"-f", k.conf, "-p", k.pidFile, "-r", k.vrrpPid)
	cmd.Dir = k.dir
	// Not through a Go copier: Wait would then also wait for an orphaned
	// VRRP child that still holds the pipe.
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig: syscall.SIGTERM,
		// Own process group: a ^C at ober's terminal must not stop
		// keepalived behind ober's back; ober releases first.
		Setpgid: true,
	}
	// keepalived refuses to start while a pid file names a live process,
	// and kill(pid, 0) succeeds on the zombie of a killed VRRP child until
	// init reaps it (seconds, on some hosts). Ours are dead by now: exited
	// and killStale saw to it.
	for _, f := range []string{k.pidFile, k.vrrpPid} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			k.log.Warn("remove keepalived pid file", "err", err)
		}
	}
	k.mu.Lock()
	if k.stopping {
		k.mu.Unlock()
		pr.Close()
		pw.Close()
		return nil, errStopping
	}
	err = cmd.Start()
	if err == nil {
		k.pid = cmd.Process.Pid
	}
	k.mu.Unlock()
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("vrrp: start %s: %w", k.binary, err)
	}
	go k.logLines(pr, cmd.Process.Pid)
	k.log.Info("keepalived started", "pid", cmd.Process.Pid, "conf", k.conf)
	return cmd, nil
}

// logLines forwards keepalived's console log line by line, without
// keepalived's own timestamp.
func (k *Keepalived) logLines(r io.ReadCloser, pid int) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		// "Sat Nov 21 10:11:02 2026: text"
		if i := strings.Index(line, ": "); i == 24 {
			line = line[i+2:]
		}
		if line == "" {
			continue
		}
		k.log.Info(line, "source", "keepalived", "pid", pid)
	}
}

// exited cleans up after keepalived's parent died: its VRRP child, if it
// survived, gets a bounded chance to send priority 0, then every VIP
// address goes, since a dead keepalived sent no release and a peer is
// taking the VIPs over.
func (k *Keepalived) exited(pid int, werr error) {
	k.mu.Lock()
	k.pid = 0
	stopping := k.stopping
	cfg := k.cfg
	k.mu.Unlock()
	if stopping {
		k.log.Info("keepalived stopped", "pid", pid, "status", exitText(werr))
	} else {
		k.log.Error("keepalived exited", "pid", pid, "status", exitText(werr))
	}
	if child := readPid(k.vrrpPid); child > 0 && isKeepalived(child) {
		k.log.Warn("keepalived VRRP child outlived its parent, stopping it", "pid", child)
		terminate(child, orphanGrace)
	}
	removed, err := k.links.remove(cfg.Interface, vipsOf(cfg.Instances))
	if err != nil {
		k.log.Error("remove VIPs after keepalived exit", "err", err)
	}
	if len(removed) > 0 {
		k.log.Warn("removed VIP addresses keepalived left behind", "interface", cfg.Interface, "vips", removed)
	}
	now := time.Now()
	type change struct {
		in   Instance
		from State
	}
	var changes []change
	k.mu.Lock()
	for _, in := range cfg.Instances {
		st := k.inst[in.Name]
		if st == nil || st.state == Unknown {
			continue
		}
		changes = append(changes, change{st.in, st.state})
		st.state, st.since = Unknown, now
	}
	k.signalLocked()
	k.mu.Unlock()
	for _, c := range changes {
		k.log.Info("vrrp transition", "instance", c.in.Name, "vip", c.in.VIP, "from", c.from, "to", "UNKNOWN",
			"priority", c.in.Priority, "reason", "keepalived exited")
		if k.onState != nil {
			k.onState(c.in, c.from, Unknown)
		}
	}
}

func (k *Keepalived) signalLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// openFIFO makes a fresh FIFO and opens it read-write: keepalived's writes
// never fail for lack of a reader, and ober never sees EOF when keepalived
// restarts.
func (k *Keepalived) openFIFO(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vrrp: notify fifo %s: %w", path, err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return fmt.Errorf("vrrp: notify fifo %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("vrrp: notify fifo %s: %w", path, err)
	}
	k.fifo = f
	return nil
}

// readFIFO applies keepalived's reports in order. Address clean-up for
// BACKUP/FAULT/STOP waits until the FIFO is drained, and then follows the
// latest state: a line still queued may already say MASTER again.
func (k *Keepalived) readFIFO() {
	defer close(k.readerDone)
	r := bufio.NewReader(k.fifo)
	pending := map[string]bool{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if !errors.Is(err, os.ErrClosed) && !errors.Is(err, io.EOF) {
				k.log.Error("read notify fifo", "err", err)
			}
			return
		}
		line = strings.TrimRight(line, "\n")
		ev, err := ParseFIFOLine(line)
		if err != nil {
			k.log.Warn("ignored notify fifo line", "err", err)
			continue
		}
		if name, ok := k.apply(ev); ok {
			pending[name] = true
		}
		if len(pending) > 0 && r.Buffered() == 0 && fifoEmpty(k.fifo) {
			k.cleanup(pending)
			clear(pending)
		}
	}
}

// apply records one report; it says whether the instance may need its
// VIP removed.
func (k *Keepalived) apply(ev Event) (string, bool) {
	if ev.Kind != "INSTANCE" {
		return "", false
	}
	switch ev.State {
	case "MASTER_RX_LOWER_PRI":
		k.log.Debug("master received a lower priority advert", "instance", ev.Name)
		return "", false
	case "DELETED":
		// The instance left the config on reload; its VIP goes with it.
		return ev.Name, true
	}
	to := State(ev.State)
	k.mu.Lock()
	st := k.inst[ev.Name]
	if st == nil || k.pid == 0 {
		// A report from an old config, or from a keepalived already
		// reaped and cleaned up after.
		k.mu.Unlock()
		k.log.Debug("ignored notify fifo report", "instance", ev.Name, "state", ev.State)
		return "", false
	}
	from := st.state
	if from != to {
		st.state, st.since = to, time.Now()
		st.transitions++
		k.signalLocked()
	}
	in := st.in
	k.mu.Unlock()
	if from != to {
		k.log.Info("vrrp transition", "instance", in.Name, "vip", in.VIP, "from", stateText(from), "to", to,
			"priority", in.Priority, "reported_priority", ev.Priority)
		if k.onState != nil {
			k.onState(in, from, to)
		}
	}
	return in.Name, to != Master
}

// cleanup removes the VIP of every named instance that is not MASTER now.
func (k *Keepalived) cleanup(names map[string]bool) {
	k.mu.Lock()
	iface := k.cfg.Interface
	var vips []netip.Addr
	for name := range names {
		st := k.inst[name]
		if st != nil && st.state != Master {
			vips = append(vips, st.in.VIP)
		}
	}
	k.mu.Unlock()
	if len(vips) == 0 {
		return
	}
	removed, err := k.links.remove(iface, vips)
	if err != nil {
		k.log.Error("remove VIPs of non-master instances", "err", err)
	}
	if len(removed) > 0 {
		k.log.Warn("removed VIP addresses keepalived kept while not master", "interface", iface, "vips", removed)
	}
}

// check runs `keepalived -t` on text inside the namespace: it resolves the
// interface, so it must see the same interfaces keepalived will.
func (k *Keepalived) check(ctx context.Context, text []byte) error {
	tmp, err := os.CreateTemp(k.dir, "keepalived.conf.check-*")
	if err != nil {
		return fmt.Errorf("vrrp: config check: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(text); err != nil {
		tmp.Close()
		return fmt.Errorf("vrrp: config check: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("vrrp: config check: %w", err)
	}
	var out []byte
	err = inNS(k.ns, func() error {
		var err error
		out, err = exec.CommandContext(ctx, k.binary, "-t", "-f", tmp.Name()).CombinedOutput()
		return err
	})
	if err != nil {
		msg := strings.TrimSpace(strings.ReplaceAll(string(out), tmp.Name(), "keepalived.conf"))
		msg = strings.ReplaceAll(msg, "\n", "; ")
		return fmt.Errorf("vrrp: keepalived -t rejects the config: %v: %s", err, msg)
	}
	return nil
}

// killStale stops keepalived processes named by our pid files.
func (k *Keepalived) killStale(ctx context.Context) {
	for _, f := range []string{k.pidFile, k.vrrpPid} {
		pid := readPid(f)
		if pid <= 0 || !isKeepalived(pid) {
			continue
		}
		k.log.Warn("stopping a keepalived left from before", "pid", pid, "pidfile", f)
		grace := 2 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			grace = min(grace, time.Until(dl))
		}
		terminate(pid, grace)
	}
}

// terminate sends SIGTERM, then SIGKILL after grace, to a process that is
// not our child (we cannot wait for it, only watch it go).
func terminate(pid int, grace time.Duration) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !isKeepalived(pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 100 {
		if !isKeepalived(pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// isKeepalived reports whether pid is a live (not zombie) keepalived; the
// name check guards against a recycled pid.
func isKeepalived(pid int) bool {
	st, err := procstat.Read(pid)
	return err == nil && st.Comm == "keepalived" && !st.Ended()
}

func fifoEmpty(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		n, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ)
	})
	return err != nil || n == 0
}

// enterNS moves the calling locked thread into ns unless it is there.
func enterNS(ns netns.NsHandle) error {
	cur, err := netns.Get()
	if err != nil {
		return fmt.Errorf("network namespace of this thread: %w", err)
	}
	defer cur.Close()
	if cur.Equal(ns) {
		return nil
	}
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter network namespace: %w", err)
	}
	return nil
}

// inNS runs fn on a fresh thread in ns; the thread is thrown away after.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := enterNS(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func vipsOf(ins []Instance) []netip.Addr {
	out := make([]netip.Addr, len(ins))
	for i, in := range ins {
		out[i] = in.VIP
	}
	return out
}

func stateText(s State) string {
	if s == Unknown {
		return "UNKNOWN"
	}
	return string(s)
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
