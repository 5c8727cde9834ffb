// Package supervisor runs ober's HAProxy instances: one process per
// instance, pinned to its CPU, serving listening sockets that the
// supervisor creates and registers in the dataplane's sockmap.
//
// The supervisor owns the sockets, so it decides which process gets a
// connection: a process that exits is taken out of the sockmap and the
// Maglev table the moment its exit is reaped, restarted with backoff on
// the same sockets (what the kernel queued on them meanwhile is served,
// not reset) and put back once its runtime socket answers. A new plan
// (a configuration reload) starts a complete new generation of processes,
// swaps their sockets into the sockmap in place of the old ones, and lets
// the old processes drain; because the swap replaces sockmap entries, no
// new connection ever finds a slot empty.
package supervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/maglev"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/loader"
)

// Dataplane is the part of *loader.Dataplane the supervisor drives.
type Dataplane interface {
	SetSocket(listener, inst uint32, conn syscall.Conn) error
	ClearSocket(listener, inst uint32) error
	SetMaglev(seed uint32, slots []uint32) error
	SetInstances(insts []loader.Instance) error
}

// Slot is one instance position: its index in the Maglev table and
// sockmap, and its CPU.
type Slot struct {
	Index int
	CPU   int
}

// Listener is one row of instance sockets: every instance gets one
// socket of this family, registered under ID.
type Listener struct {
	ID     uint32
	Family int // 4 or 6
	// MSS clamps the MSS of the listener's connections; 0 leaves it to
	// the route.
	MSS int
}

// Plan is what one generation of instances runs.
type Plan struct {
	Slots     []Slot
	Listeners []Listener
	// Render returns a slot's HAProxy configuration. fds maps each
	// listener ID to the descriptor number the process inherits it as;
	// statsSocket is the runtime socket path the configuration must use.
	Render func(slot Slot, fds map[uint32]int, statsSocket string) ([]byte, error)
	// Commit is called once the new generation's sockets are in the
	// sockmap and before anything of the old generation is removed; the
	// daemon switches the service table there. An error rolls the
	// sockmap back and stops the new generation.
	Commit func() error
	// MaxTransfer is how long an instance of this generation, once
	// replaced, may finish its transfers before it is killed (its
	// configuration's hard-stop-after should end it first); 0 takes
	// Options.MaxTransfer.
	MaxTransfer time.Duration
}

// Options configure a Supervisor.
type Options struct {
	Dataplane  Dataplane
	Binary     string // HAProxy binary
	RuntimeDir string // configs, runtime sockets and pid files
	Logger     *slog.Logger
	// MaglevSize is the table size M (prime); MaglevSeed the flow hash
	// seed; MaglevPrev a table to carry ownership over from (the pinned
	// one after an ober restart), may be nil.
	MaglevSize uint32
	MaglevSeed uint32
	MaglevPrev []uint32
	// StartTimeout bounds how long a new process may take to answer on
	// its runtime socket; default 10s.
	StartTimeout time.Duration
	// ProbeInterval is the period of health probes; default 1s.
	ProbeInterval time.Duration
	// SwapGrace is how long a replaced socket keeps its old process after
	// the swap, for handshakes that were under way; default 500ms.
	SwapGrace time.Duration
	// MaxTransfer bounds how long replaced processes, and those an
	// earlier ober left, may finish their transfers before they are
	// killed, where their plan says nothing; default 1h.
	MaxTransfer time.Duration
	// Backoff is the first restart delay, doubled per quick crash up to
	// MaxBackoff; defaults 100ms and 10s.
	Backoff, MaxBackoff time.Duration
	// OnChange is called whenever an instance's state or its view of the
	// backends may have changed (an exit is reported the moment the
	// process is reaped), so that the daemon can withdraw routes at once
	// instead of polling. It is called with the supervisor's lock held:
	// it must not block or call the supervisor.
	OnChange func()
}

// State is an instance's condition.
type State string

// Instance states.
const (
	StateStarting  State = "starting"
	StateHealthy   State = "healthy"
	StateUnhealthy State = "unhealthy"
	StateDown      State = "down" // exited, restart pending
	StateStopped   State = "stopped"
)

// Supervisor runs the instances of the current plan.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	mu   sync.Mutex
	plan *Plan
	gen  uint64
	// served is the generation of plan: gen runs ahead while an Apply
	// starts its instances, and stays ahead when it fails. Restarts
	// belong to served.
	served   uint64
	slots    map[int]*slot
	table    []uint32
	stopping bool
	retired  []*proc
	stale    []int // PIDs of instances left by an earlier ober
	// staleRetiring are those being retired, since when.
	staleRetiring map[int]time.Time
	reloads       uint64
	restarts      uint64

	probeStop chan struct{}
	probeDone chan struct{}
}

type slot struct {
	Slot
	cur      *proc
	state    State
	restarts int
	backoff  time.Duration
	lastExit string
	timer    *time.Timer
	// kept are the listeners of an instance that died, handed to its
	// restart: connections the kernel queued on them between the death
	// and its notice are served late instead of reset.
	kept map[uint32]*net.TCPListener
}

func (sl *slot) closeKept() {
	for _, l := range sl.kept {
		l.Close()
	}
	sl.kept = nil
}

type proc struct {
	slot    Slot
	gen     uint64
	cmd     *haproxyCmd
	socks   map[uint32]*net.TCPListener
	cfg     string
	sock    string
	pidFile string
	started time.Time
	done    chan struct{}
	exitErr error
	retired atomic.Bool
	// retiredAt is when it was replaced (under the supervisor's lock);
	// maxTransfer how long it may then finish.
	retiredAt   time.Time
	maxTransfer time.Duration
	live        bool // its sockets are in the sockmap
	failed      int  // consecutive failed probes
	conns       int64
	backends    []BackendState
}

// New makes a supervisor; nothing runs until Apply. Instances left by a
// previous ober process (found through their pid files) are retired once
// the first plan is serving.
func New(opts Options) (*Supervisor, error) {
	if opts.Dataplane == nil || opts.Binary == "" || opts.RuntimeDir == "" {
		return nil, errors.New("supervisor: Dataplane, Binary and RuntimeDir are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaglevSize == 0 {
		opts.MaglevSize = loader.MaglevDefaultSize
	}
	if err := maglev.ValidateSize(opts.MaglevSize); err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.StartTimeout, 10*time.Second)
	def(&opts.ProbeInterval, time.Second)
	def(&opts.SwapGrace, 500*time.Millisecond)
	def(&opts.Backoff, 100*time.Millisecond)
	def(&opts.MaxBackoff, 10*time.Second)
	def(&opts.MaxTransfer, time.Hour)
	if err := os.MkdirAll(opts.RuntimeDir, 0o750); err != nil {
		return nil, fmt.Errorf("supervisor: runtime dir: %w", err)
	}
	s := &Supervisor{
		opts:      opts,
		log:       opts.Logger,
		slots:     map[int]*slot{},
		probeStop: make(chan struct{}),
		probeDone: make(chan struct{}),
	}
	if len(opts.MaglevPrev) == int(opts.MaglevSize) {
		s.table = slices.Clone(opts.MaglevPrev)
	}
	s.stale = s.findStale()
	go s.probeLoop()
	return s, nil
}

// Apply starts a generation running plan and makes it serve. It returns
// once every new instance answers and its sockets are in the sockmap; on
// error the previous generation keeps serving, untouched.
func (s *Supervisor) Apply(ctx context.Context, plan Plan) error {
	if len(plan.Slots) == 0 || len(plan.Slots) > loader.MaxInstances {
		return fmt.Errorf("apply: %d instances (want 1..%d)", len(plan.Slots), loader.MaxInstances)
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return errors.New("apply: supervisor is stopping")
	}
	s.gen++
	gen := s.gen
	old := s.plan
	s.mu.Unlock()

	// Start the whole generation first: until every process answers,
	// nothing in the sockmap changes.
	procs := make([]*proc, len(plan.Slots))
	errs := make([]error, len(plan.Slots))
	var wg sync.WaitGroup
	for i, sl := range plan.Slots {
		wg.Go(func() { procs[i], errs[i] = s.startProc(ctx, &plan, sl, gen, nil) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, p := range procs {
			if p != nil {
				s.discard(p)
			}
		}
		return fmt.Errorf("apply generation %d: %w", gen, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		for _, p := range procs {
			s.discard(p)
		}
		return errors.New("apply: supervisor is stopping")
	}
	for _, p := range procs {
		if err := s.install(p); err != nil {
			s.rollback(procs)
			return fmt.Errorf("apply generation %d: %w", gen, err)
		}
	}
	if plan.Commit != nil {
		if err := plan.Commit(); err != nil {
			s.rollback(procs)
			return fmt.Errorf("apply generation %d: %w", gen, err)
		}
	}

	// The new generation serves. Take the old one out of the tables.
	var retire []*proc
	newSlots := map[int]bool{}
	for _, p := range procs {
		newSlots[p.slot.Index] = true
	}
	newIDs := map[uint32]bool{}
	for _, l := range plan.Listeners {
		newIDs[l.ID] = true
	}
	for idx, sl := range s.slots {
		if sl.timer != nil {
			sl.timer.Stop()
			sl.timer = nil
		}
		sl.closeKept()
		if sl.cur != nil {
			retire = append(retire, sl.cur)
		}
		if !newSlots[idx] {
			delete(s.slots, idx)
		}
	}
	if old != nil {
		for _, l := range old.Listeners {
			for _, sl := range old.Slots {
				if !newIDs[l.ID] || !newSlots[sl.Index] {
					s.clearSocket(l.ID, sl.Index)
				}
			}
		}
	}
	for _, p := range procs {
		sl := s.slots[p.slot.Index]
		if sl == nil {
			sl = &slot{Slot: p.slot, backoff: s.opts.Backoff}
			s.slots[p.slot.Index] = sl
		}
		sl.Slot = p.slot
		sl.cur = p
		sl.state = StateHealthy
		p.live = true
	}
	s.plan, s.served = &plan, gen
	if old != nil {
		s.reloads++
	}
	insts := make([]loader.Instance, 0, len(plan.Slots))
	for _, sl := range plan.Slots {
		insts = append(insts, loader.Instance{Index: uint32(sl.Index), CPU: sl.CPU})
	}
	if err := s.opts.Dataplane.SetInstances(insts); err != nil {
		s.log.Error("set instance CPUs", "err", err)
	}
	s.rebuildMaglev()
	for _, p := range retire {
		p.live = false
		s.retire(p)
	}
	if stale := s.stale; len(stale) > 0 {
		s.stale = nil
		go s.retireStale(stale)
	}
	s.changed()
	s.log.Info("generation serving", "generation", gen, "instances", len(procs), "retired", len(retire))
	return nil
}

func (s *Supervisor) changed() {
	if s.opts.OnChange != nil {
		s.opts.OnChange()
	}
}

// install puts p's sockets into the sockmap, replacing what was there.
func (s *Supervisor) install(p *proc) error {
	for id, l := range p.socks {
		if err := s.opts.Dataplane.SetSocket(id, uint32(p.slot.Index), l); err != nil {
			return fmt.Errorf("instance %d: %w", p.slot.Index, err)
		}
	}
	return nil
}

// rollback puts the current generation's sockets back and stops procs.
func (s *Supervisor) rollback(procs []*proc) {
	for _, p := range procs {
		for id := range p.socks {
			s.clearSocket(id, p.slot.Index)
		}
	}
	for _, sl := range s.slots {
		if sl.cur != nil && sl.cur.live {
			if err := s.install(sl.cur); err != nil {
				s.log.Error("roll back sockmap", "instance", sl.Index, "err", err)
			}
		}
	}
	for _, p := range procs {
		s.discard(p)
	}
}

func (s *Supervisor) clearSocket(id uint32, idx int) {
	if err := s.opts.Dataplane.ClearSocket(id, uint32(idx)); err != nil {
		s.log.Error("clear socket", "listener", id, "instance", idx, "err", err)
	}
}

// rebuildMaglev gives the slots of instances that are not live to the
// live ones, moving nothing else (maglev.Build with the previous table).
func (s *Supervisor) rebuildMaglev() {
	var members []maglev.Instance
	for idx, sl := range s.slots {
		if sl.cur != nil && sl.cur.live {
			members = append(members, maglev.Instance{ID: uint32(idx), Name: "instance-" + strconv.Itoa(idx), Weight: 1})
		}
	}
	slices.SortFunc(members, func(a, b maglev.Instance) int { return int(a.ID) - int(b.ID) })
	table, err := maglev.Build(s.opts.MaglevSize, members, s.table)
	if err != nil {
		s.log.Error("build maglev table", "err", err)
		return
	}
	if err := s.opts.Dataplane.SetMaglev(s.opts.MaglevSeed, table); err != nil {
		s.log.Error("set maglev table", "err", err)
		return
	}
	s.table = table
}

// startProc starts one instance of plan and waits until its runtime
// socket answers. Its listeners are fresh, or taken from reuse (a dead
// predecessor's) where the ID matches; startProc owns reuse.
func (s *Supervisor) startProc(ctx context.Context, plan *Plan, sl Slot, gen uint64, reuse map[uint32]*net.TCPListener) (*proc, error) {
	p := &proc{
		slot:        sl,
		gen:         gen,
		socks:       map[uint32]*net.TCPListener{},
		done:        make(chan struct{}),
		maxTransfer: cmp.Or(plan.MaxTransfer, s.opts.MaxTransfer),
	}
	base := filepath.Join(s.opts.RuntimeDir, fmt.Sprintf("haproxy-%d.g%d", sl.Index, gen))
	p.cfg, p.sock, p.pidFile = base+".cfg", base+".sock", base+".pid"
	fail := func(err error) (*proc, error) {
		s.closeSockets(p)
		s.removeFiles(p)
		return nil, fmt.Errorf("instance %d: %w", sl.Index, err)
	}
	fds := map[uint32]int{}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	defer func() {
		for _, l := range reuse {
			l.Close()
		}
	}()
	for i, l := range plan.Listeners {
		tl, ok := reuse[l.ID]
		delete(reuse, l.ID)
		if !ok {
			var err error
			if tl, err = listen(ctx, l.Family, l.MSS); err != nil {
				return fail(err)
			}
		}
		p.socks[l.ID] = tl
		f, err := tl.File()
		if err != nil {
			return fail(fmt.Errorf("listener %d: %w", l.ID, err))
		}
		files = append(files, f)
		fds[l.ID] = 3 + i
	}
	text, err := plan.Render(sl, fds, p.sock)
	if err != nil {
		return fail(fmt.Errorf("render: %w", err))
	}
	if err := os.WriteFile(p.cfg, text, 0o640); err != nil {
		return fail(err)
	}
	os.Remove(p.sock)
	log := s.log.With("instance", sl.Index, "generation", gen)
	cmd, err := startHAProxy(s.opts.Binary, p.cfg, files, sl.CPU, log)
	if err != nil {
		return fail(err)
	}
	p.cmd = cmd
	p.started = time.Now()
	_ = os.WriteFile(p.pidFile, []byte(strconv.Itoa(cmd.pid)+"\n"), 0o640)
	go func() {
		p.exitErr = cmd.wait()
		close(p.done)
		s.exited(p)
	}()
	log.Info("instance started", "pid", cmd.pid, "cpu", sl.CPU)

	wctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	if err := s.waitReady(wctx, p); err != nil {
		s.discard(p)
		return nil, fmt.Errorf("instance %d: %w", sl.Index, err)
	}
	return p, nil
}

// waitReady polls the runtime socket until it answers.
func (s *Supervisor) waitReady(ctx context.Context, p *proc) error {
	rt := haproxy.Runtime{Path: p.sock, Timeout: 200 * time.Millisecond}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := rt.Info(ctx); err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("haproxy exited during start: %v (its log lines above say why)", p.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("haproxy did not answer on %s: %w", p.sock, ctx.Err())
		case <-tick.C:
		}
	}
}

// discard stops a process that never served.
func (s *Supervisor) discard(p *proc) {
	p.retired.Store(true)
	if p.cmd != nil {
		p.cmd.signal(syscall.SIGKILL)
	}
	s.closeSockets(p)
}

// retire lets a replaced process finish its connections. It waits for
// handshakes that completed into the old sockets to be accepted before
// telling HAProxy to stop listening, so the swap drops none of them.
func (s *Supervisor) retire(p *proc) {
	p.retired.Store(true)
	p.retiredAt = time.Now()
	s.retired = append(s.retired, p)
	go func() {
		deadline := time.Now().Add(s.opts.SwapGrace + 2*time.Second)
		time.Sleep(s.opts.SwapGrace)
		for time.Now().Before(deadline) {
			queued := 0
			for _, l := range p.socks {
				if n, err := acceptQueue(l); err == nil {
					queued += n
				}
			}
			if queued == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		p.cmd.signal(syscall.SIGUSR1)
		s.closeSockets(p)
		select {
		case <-p.done:
		case <-time.After(p.maxTransfer + 5*time.Second):
			// hard-stop-after should have ended it; make sure.
			s.log.Warn("replaced instance still running after max_transfer; killing it",
				"instance", p.slot.Index, "generation", p.gen, "pid", p.cmd.pid, "max_transfer", p.maxTransfer)
			p.cmd.signal(syscall.SIGKILL)
		}
	}()
}

func (s *Supervisor) closeSockets(p *proc) {
	for _, l := range p.socks {
		l.Close()
	}
}

func (s *Supervisor) removeFiles(p *proc) {
	for _, f := range []string{p.cfg, p.sock, p.pidFile} {
		os.Remove(f)
	}
}

// exited handles the end of a process.
func (s *Supervisor) exited(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeFiles(p)
	if i := slices.Index(s.retired, p); i >= 0 {
		s.retired = slices.Delete(s.retired, i, i+1)
	}
	log := s.log.With("instance", p.slot.Index, "generation", p.gen, "pid", p.cmd.pid)
	if p.retired.Load() {
		log.Info("instance finished", "status", exitText(p.exitErr))
		return
	}
	sl := s.slots[p.slot.Index]
	if sl == nil || sl.cur != p {
		return
	}
	// First the sockmap: from here on sk_lookup skips this instance.
	for id := range p.socks {
		s.clearSocket(id, p.slot.Index)
	}
	p.live = false
	if s.stopping {
		s.closeSockets(p)
	} else {
		sl.closeKept()
		sl.kept = p.socks
	}
	sl.cur = nil
	sl.state = StateDown
	sl.lastExit = exitText(p.exitErr)
	s.rebuildMaglev()
	s.changed()
	if s.stopping {
		sl.state = StateStopped
		return
	}
	if time.Since(p.started) > 30*time.Second {
		sl.backoff = s.opts.Backoff
	}
	delay := sl.backoff
	sl.backoff = min(sl.backoff*2, s.opts.MaxBackoff)
	log.Warn("instance exited; restarting", "status", sl.lastExit, "after", delay)
	gen := s.served
	sl.timer = time.AfterFunc(delay, func() { s.restart(sl.Index, gen) })
}

// restart starts a crashed slot again under the current plan.
func (s *Supervisor) restart(idx int, gen uint64) {
	s.mu.Lock()
	sl := s.slots[idx]
	if s.stopping || sl == nil || s.served != gen || sl.cur != nil || s.plan == nil {
		s.mu.Unlock()
		return
	}
	sl.timer = nil
	sl.state = StateStarting
	plan := s.plan
	slotCopy := sl.Slot
	kept := sl.kept
	sl.kept = nil
	s.mu.Unlock()

	p, err := s.startProc(context.Background(), plan, slotCopy, gen, kept)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		sl.state = StateDown
		sl.lastExit = err.Error()
		if !s.stopping && s.served == gen {
			delay := sl.backoff
			sl.backoff = min(sl.backoff*2, s.opts.MaxBackoff)
			s.log.Error("restart failed", "instance", idx, "err", err, "retry_after", delay)
			sl.timer = time.AfterFunc(delay, func() { s.restart(idx, gen) })
		}
		return
	}
	if s.stopping || s.served != gen || s.slots[idx] != sl || sl.cur != nil {
		s.discard(p)
		return
	}
	if err := s.install(p); err != nil {
		s.log.Error("restart: register sockets", "instance", idx, "err", err)
		for id := range p.socks {
			s.clearSocket(id, idx)
		}
		s.discard(p)
		return
	}
	sl.cur = p
	sl.state = StateHealthy
	sl.restarts++
	s.restarts++
	p.live = true
	s.rebuildMaglev()
	s.changed()
	s.log.Info("instance back in service", "instance", idx, "pid", p.cmd.pid)
}

// Stop drains and ends every instance: their sockets leave the sockmap,
// HAProxy stops accepting and finishes open connections for at most
// drain, then is killed.
func (s *Supervisor) Stop(ctx context.Context, drain time.Duration) {
	s.mu.Lock()
	if !s.stopping {
		s.stopping = true
		close(s.probeStop)
	}
	var procs []*proc
	for _, sl := range s.slots {
		if sl.timer != nil {
			sl.timer.Stop()
		}
		sl.closeKept()
		if sl.cur != nil {
			for id := range sl.cur.socks {
				s.clearSocket(id, sl.Index)
			}
			sl.cur.live = false
			procs = append(procs, sl.cur)
		}
		sl.state = StateStopped
	}
	procs = append(procs, s.retired...)
	for _, p := range procs {
		p.retired.Store(true)
		p.cmd.signal(syscall.SIGUSR1)
		s.closeSockets(p)
	}
	s.mu.Unlock()

	timer := time.NewTimer(drain)
	defer timer.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		for _, q := range procs {
			q.cmd.signal(syscall.SIGKILL)
		}
		break
	}
	for _, p := range procs {
		<-p.done
	}
	<-s.probeDone
	s.log.Info("all instances stopped", "count", len(procs))
}

// findStale lists HAProxy processes that an earlier ober started from
// this runtime directory and left running (it crashed or was killed).
func (s *Supervisor) findStale() []int {
	matches, _ := filepath.Glob(filepath.Join(s.opts.RuntimeDir, "haproxy-*.pid"))
	var pids []int
	for _, f := range matches {
		b, err := os.ReadFile(f)
		os.Remove(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		args, err := procstat.Proc.Cmdline(pid)
		if err != nil {
			continue
		}
		// Only a process started with one of our config files is ours.
		cfg := strings.TrimSuffix(f, ".pid") + ".cfg"
		if slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, cfg) }) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// retireStale drains instances of an earlier ober once the new generation
// has replaced their sockets in the sockmap.
func (s *Supervisor) retireStale(pids []int) {
	s.mu.Lock()
	if s.staleRetiring == nil {
		s.staleRetiring = map[int]time.Time{}
	}
	for _, pid := range pids {
		s.staleRetiring[pid] = time.Now()
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		for _, pid := range pids {
			delete(s.staleRetiring, pid)
		}
		s.mu.Unlock()
	}()
	time.Sleep(s.opts.SwapGrace)
	for _, pid := range pids {
		s.log.Info("retiring instance left by an earlier ober", "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGUSR1)
	}
	deadline := time.Now().Add(s.opts.MaxTransfer + 5*time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func exitText(err error) string {
	if err == nil {
		return "exited 0"
	}
	return err.Error()
}
