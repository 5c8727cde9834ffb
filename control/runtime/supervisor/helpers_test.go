package supervisor_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/loader"
)

// within bounds every wait for the supervisor to react; things normally
// happen in milliseconds, the margin is for a loaded machine under -race.
const (
	within = 5 * time.Second
	poll   = 10 * time.Millisecond
)

// maglevSize keeps the recorded tables small.
const maglevSize = 251

type sockKey struct{ listener, inst uint32 }

func (k sockKey) String() string { return fmt.Sprintf("%d/%d", k.listener, k.inst) }

// sockRef identifies a socket in the sockmap: its address to connect to,
// and its inode, which no other socket shares while it is open.
type sockRef struct {
	addr string
	ino  uint64
}

// event is one call the supervisor made on the dataplane, or one of the
// plan's Commit and Options.OnChange callbacks, in the order they came.
type event struct {
	op    string // set, clear, maglev, instances, commit, change
	key   sockKey
	sock  sockRef  // set
	table []uint32 // maglev
}

// fakeDataplane records what the supervisor writes, under a mutex (the
// supervisor calls it from its own goroutines).
type fakeDataplane struct {
	mu      sync.Mutex
	events  []event
	socks   map[sockKey]sockRef // the sockmap
	conns   map[sockKey]syscall.Conn
	table   []uint32
	seed    uint32
	insts   []loader.Instance
	failSet map[sockKey]error
	// held keeps every socket it was given reachable, so that only the
	// supervisor's Close, not a finalizer, closes one.
	held []syscall.Conn
}

func newFakeDataplane() *fakeDataplane {
	return &fakeDataplane{socks: map[sockKey]sockRef{}, conns: map[sockKey]syscall.Conn{}, failSet: map[sockKey]error{}}
}

func (d *fakeDataplane) SetSocket(listener, inst uint32, conn syscall.Conn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := sockKey{listener, inst}
	if err := d.failSet[k]; err != nil {
		return err
	}
	if inst >= loader.MaxInstances {
		return fmt.Errorf("set socket %v: instance out of range", k)
	}
	l, ok := conn.(net.Listener)
	if !ok {
		return fmt.Errorf("set socket %v: %T is not a listener", k, conn)
	}
	ref := sockRef{addr: l.Addr().String()}
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("set socket %v: %w", k, err)
	}
	var st unix.Stat_t
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return fmt.Errorf("set socket %v: %w", k, err)
	}
	if serr != nil {
		return fmt.Errorf("set socket %v: %w", k, serr)
	}
	ref.ino = st.Ino
	d.socks[k] = ref
	d.conns[k] = conn
	d.held = append(d.held, conn)
	d.events = append(d.events, event{op: "set", key: k, sock: ref})
	return nil
}

func (d *fakeDataplane) ClearSocket(listener, inst uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := sockKey{listener, inst}
	delete(d.socks, k)
	delete(d.conns, k)
	d.events = append(d.events, event{op: "clear", key: k})
	return nil
}

func (d *fakeDataplane) SetMaglev(seed uint32, slots []uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, s := range slots {
		if s >= loader.MaxInstances && s != loader.NoInstance {
			return fmt.Errorf("set maglev: slot %d: instance %d out of range", i, s)
		}
	}
	d.seed, d.table = seed, slices.Clone(slots)
	d.events = append(d.events, event{op: "maglev", table: d.table})
	return nil
}

func (d *fakeDataplane) SetInstances(insts []loader.Instance) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.insts = slices.Clone(insts)
	d.events = append(d.events, event{op: "instances"})
	return nil
}

func (d *fakeDataplane) record(op string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events = append(d.events, event{op: op})
}

// failSocket makes SetSocket of k fail with err; nil heals it.
func (d *fakeDataplane) failSocket(k sockKey, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.failSet, k)
		return
	}
	d.failSet[k] = err
}

// mark is a position in the event log, for since.
func (d *fakeDataplane) mark() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.events)
}

func (d *fakeDataplane) since(mark int) []event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.events[mark:])
}

func (d *fakeDataplane) sockets() map[sockKey]sockRef {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.socks)
}

func (d *fakeDataplane) conn(k sockKey) syscall.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[k]
}

func (d *fakeDataplane) maglev() (uint32, []uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seed, slices.Clone(d.table)
}

func (d *fakeDataplane) instances() []loader.Instance {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.insts)
}

// members lists the instances a Maglev table names, ascending.
func members(table []uint32) []uint32 {
	var out []uint32
	for _, v := range table {
		if v != loader.NoInstance && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// syncBuffer collects the supervisor's log, shown when a test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is one supervisor running fake HAProxy processes over a fake
// dataplane.
type fixture struct {
	t     *testing.T
	dp    *fakeDataplane
	sup   *supervisor.Supervisor
	opts  supervisor.Options
	dir   string // RuntimeDir
	ctl   string // where the fake processes record their events
	cpus  []int  // the CPUs this test may pin to
	holds int
}

// shortTempDir is a temporary directory with a short path: runtime
// socket paths must fit in sun_path (108 bytes), which t.TempDir's
// test-named paths may not.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sup")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testOptions(t *testing.T) supervisor.Options {
	t.Helper()
	bin, err := os.Executable()
	require.NoError(t, err)
	return supervisor.Options{
		Binary:       bin,
		MaglevSize:   maglevSize,
		MaglevSeed:   7,
		StartTimeout: within,
		// The production period: its probe timeout (500ms) is what keeps
		// a loaded machine from failing probes; tests of probing shorten it.
		ProbeInterval: time.Second,
		SwapGrace:     20 * time.Millisecond,
		Backoff:       50 * time.Millisecond,
		MaxBackoff:    400 * time.Millisecond,
		MaxTransfer:   time.Minute,
	}
}

// newFixture starts a supervisor; edit may change its options. Cleanup
// stops it and kills whatever fake process is left.
func newFixture(t *testing.T, edit func(*supervisor.Options)) *fixture {
	t.Helper()
	f := prepare(t, edit)
	f.start()
	return f
}

// prepare is newFixture without the supervisor, for a test that sets up
// its runtime directory first; start makes the supervisor.
func prepare(t *testing.T, edit func(*supervisor.Options)) *fixture {
	t.Helper()
	base := shortTempDir(t)
	f := &fixture{t: t, dp: newFakeDataplane(), dir: filepath.Join(base, "run"), ctl: filepath.Join(base, "ctl")}
	require.NoError(t, os.Mkdir(f.ctl, 0o700))
	var set unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &set))
	for cpu := range 1024 {
		if set.IsSet(cpu) {
			f.cpus = append(f.cpus, cpu)
		}
	}
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("supervisor log:\n%s", logs)
		}
	})
	f.opts = testOptions(t)
	f.opts.Dataplane = f.dp
	f.opts.RuntimeDir = f.dir
	f.opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.opts.OnChange = func() { f.dp.record("change") }
	if edit != nil {
		edit(&f.opts)
	}
	return f
}

func (f *fixture) start() {
	f.t.Helper()
	sup, err := supervisor.New(f.opts)
	require.NoError(f.t, err)
	f.sup = sup
	f.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		sup.Stop(ctx, 100*time.Millisecond)
		f.killLeftovers()
	})
}

// killLeftovers kills the fake processes of this test still running,
// recognised by this test's directory on their command line.
func (f *fixture) killLeftovers() {
	entries, _ := os.ReadDir(f.ctl)
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && f.running(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// running tells whether pid is a live fake process of this test (not a
// zombie, not a recycled PID).
func (f *fixture) running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), f.dir)
}

// hold returns a "hold" directive for the fake and the function that
// lets the processes holding go.
func (f *fixture) hold() (string, func()) {
	f.holds++
	path := filepath.Join(filepath.Dir(f.ctl), fmt.Sprintf("release-%d", f.holds))
	return "hold " + path, func() { require.NoError(f.t, os.WriteFile(path, nil, 0o600)) }
}

// table is the Maglev table in the dataplane.
func (f *fixture) table() []uint32 {
	_, table := f.dp.maglev()
	return table
}

// cpu is the CPU slot idx is pinned to.
func (f *fixture) cpu(idx int) int { return f.cpus[idx%len(f.cpus)] }

// plan is a plan of the fake HAProxy: label names it in greetings; more,
// if not nil, adds configuration directives per slot. Its Commit is
// recorded in the event log.
func (f *fixture) plan(label string, slots []int, listeners []uint32, more func(supervisor.Slot) []string) supervisor.Plan {
	p := supervisor.Plan{
		Render: func(sl supervisor.Slot, fds map[uint32]int, sock string) ([]byte, error) {
			lines := []string{"stats-socket " + sock, "label " + label, "slot " + strconv.Itoa(sl.Index), "control " + f.ctl}
			for id, fd := range fds {
				lines = append(lines, fmt.Sprintf("listener %d %d", id, fd))
			}
			if more != nil {
				lines = append(lines, more(sl)...)
			}
			return []byte(strings.Join(lines, "\n") + "\n"), nil
		},
		Commit: func() error {
			f.dp.record("commit")
			return nil
		},
	}
	for _, idx := range slots {
		p.Slots = append(p.Slots, supervisor.Slot{Index: idx, CPU: f.cpu(idx)})
	}
	for _, id := range listeners {
		p.Listeners = append(p.Listeners, supervisor.Listener{ID: id, Family: 4})
	}
	return p
}

// keys are the sockmap entries a plan makes.
func keys(p supervisor.Plan) []sockKey {
	var out []sockKey
	for _, l := range p.Listeners {
		for _, sl := range p.Slots {
			out = append(out, sockKey{l.ID, uint32(sl.Index)})
		}
	}
	return out
}

func (f *fixture) apply(p supervisor.Plan) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*within)
	defer cancel()
	require.NoError(f.t, f.sup.Apply(ctx, p))
}

// instance is slot idx's status.
func (f *fixture) instance(idx int) supervisor.InstanceStatus {
	f.t.Helper()
	for _, in := range f.sup.Status().Instances {
		if in.Index == idx {
			return in
		}
	}
	f.t.Fatalf("no instance %d in %+v", idx, f.sup.Status())
	return supervisor.InstanceStatus{}
}

// pids maps each slot to its process.
func (f *fixture) pids() map[int]int {
	out := map[int]int{}
	for _, in := range f.sup.Status().Instances {
		out[in.Index] = in.PID
	}
	return out
}

// waitHealthy waits until exactly the slots idx are in service.
func (f *fixture) waitHealthy(idx ...int) {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		var healthy []int
		for _, in := range f.sup.Status().Instances {
			if in.State == supervisor.StateHealthy && in.PID != 0 {
				healthy = append(healthy, in.Index)
			}
		}
		return slices.Equal(healthy, idx)
	}, within, poll, "want instances %v healthy", idx)
}

// events are what fake process pid recorded: "start LABEL", "USR1", ...
func (f *fixture) events(pid int) []string {
	b, _ := os.ReadFile(filepath.Join(f.ctl, strconv.Itoa(pid)))
	return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
}

// started lists the fake processes started with plan label.
func (f *fixture) started(label string) []int {
	entries, _ := os.ReadDir(f.ctl)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && slices.Contains(f.events(pid), "start "+label) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// greeting is what a fake process says on every connection.
func greeting(pid int, label string, slot int, listener uint32) string {
	return fmt.Sprintf("pid=%d label=%s slot=%d listener=%d", pid, label, slot, listener)
}

// greet connects to addr and returns the greeting line.
func greet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return readGreeting(c)
}

func readGreeting(c net.Conn) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(within))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// requireServed checks that every sockmap entry of p is served by the
// current process of its slot, running plan label, on the right listener.
func (f *fixture) requireServed(p supervisor.Plan, label string) {
	f.t.Helper()
	socks := f.dp.sockets()
	pids := f.pids()
	for _, k := range keys(p) {
		ref, ok := socks[k]
		require.True(f.t, ok, "sockmap has no %v", k)
		got, err := greet(ref.addr)
		require.NoError(f.t, err, "%v at %s", k, ref.addr)
		require.Equal(f.t, greeting(pids[int(k.inst)], label, int(k.inst), k.listener), got, "%v at %s", k, ref.addr)
	}
}

// openSockets are the inodes of the sockets this process has open.
func openSockets(t *testing.T) []uint64 {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var inos []uint64
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
			require.NoError(t, err, link)
			inos = append(inos, ino)
		}
	}
	return inos
}

// stop stops pid (SIGSTOP) and waits until every thread of it has: the
// signal only asks them to.
func stop(t *testing.T, pid int) {
	t.Helper()
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	require.Eventually(t, func() bool {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				return false
			}
			// The state follows the parenthesised command name.
			_, rest, _ := strings.Cut(string(b), ") ")
			if !strings.HasPrefix(rest, "T") {
				return false
			}
		}
		return true
	}, within, time.Millisecond, "process %d stops", pid)
}

// affinity is the set of CPUs pid may run on.
func affinity(t *testing.T, pid int) []int {
	t.Helper()
	var set unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(pid, &set))
	var cpus []int
	for cpu := range 1024 {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus
}

// maxSeg is a socket's TCP_MAXSEG.
func maxSeg(t *testing.T, c syscall.Conn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	require.NoError(t, err)
	var mss int
	var serr error
	require.NoError(t, raw.Control(func(fd uintptr) {
		mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	}))
	require.NoError(t, serr)
	return mss
}
