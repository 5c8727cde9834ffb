package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/loader"
)

// ops is the sequence of an event log's operations, runs of the same
// operation counted once.
func ops(evs []event) []string {
	var out []string
	for _, e := range evs {
		if len(out) == 0 || out[len(out)-1] != e.op {
			out = append(out, e.op)
		}
	}
	return out
}

func count(evs []event, op string) int {
	n := 0
	for _, e := range evs {
		if e.op == op {
			n++
		}
	}
	return n
}

func TestNewRejectsIncompleteOptions(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		edit func(*supervisor.Options)
		err  string
	}{
		"no dataplane":       {func(o *supervisor.Options) { o.Dataplane = nil }, "Dataplane, Binary and RuntimeDir are required"},
		"no binary":          {func(o *supervisor.Options) { o.Binary = "" }, "Dataplane, Binary and RuntimeDir are required"},
		"no runtime dir":     {func(o *supervisor.Options) { o.RuntimeDir = "" }, "Dataplane, Binary and RuntimeDir are required"},
		"maglev size 250":    {func(o *supervisor.Options) { o.MaglevSize = 250 }, "maglev size 250 is not prime"},
		"maglev size 2^24+1": {func(o *supervisor.Options) { o.MaglevSize = 1<<24 + 1 }, "out of range"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			opts := testOptions(t)
			opts.Dataplane = newFakeDataplane()
			opts.RuntimeDir = filepath.Join(shortTempDir(t), "run")
			tc.edit(&opts)
			sup, err := supervisor.New(opts)
			require.ErrorContains(t, err, tc.err)
			require.Nil(t, sup)
		})
	}
}

func TestApplyRejectsBadInstanceCount(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	for _, n := range []int{0, loader.MaxInstances + 1} {
		slots := make([]int, n)
		for i := range slots {
			slots[i] = i
		}
		err := f.sup.Apply(context.Background(), f.plan("v1", slots, []uint32{1}, nil))
		require.ErrorContains(t, err, fmt.Sprintf("%d instances (want 1..%d)", n, loader.MaxInstances))
	}
	require.Empty(t, f.dp.since(0), "the dataplane is untouched")
	require.Empty(t, f.started("v1"), "no process started")
	require.Empty(t, f.sup.Status().Instances)
}

func TestApplyServesEveryInstance(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	p := f.plan("v1", []int{0, 1, 2}, []uint32{1, 2}, nil)
	p.Listeners[1].MSS = 1200
	f.apply(p)
	f.waitHealthy(0, 1, 2)

	st := f.sup.Status()
	require.EqualValues(t, 1, st.Generation)
	require.Zero(t, st.Reloads)
	require.Zero(t, st.Restarts)
	require.Zero(t, st.Draining)
	require.Empty(t, st.Retired)
	require.Len(t, st.Instances, 3)
	pids := map[int]bool{}
	for i, in := range st.Instances {
		require.Equal(t, i, in.Index)
		require.Equal(t, f.cpu(i), in.CPU)
		require.EqualValues(t, 1, in.Generation)
		require.Zero(t, in.Restarts)
		require.False(t, pids[in.PID], "instance %d has its own process", i)
		pids[in.PID] = true
		require.Equal(t, []int{f.cpu(i)}, affinity(t, in.PID), "instance %d runs pinned to its CPU", i)
	}

	// Every listener has a socket of every instance in the sockmap, and
	// that socket is served by that instance's process.
	require.ElementsMatch(t, keys(p), slices.Collect(maps.Keys(f.dp.sockets())))
	f.requireServed(p, "v1")
	require.Equal(t, 1200, maxSeg(t, f.dp.conn(sockKey{2, 0})), "listener 2 clamps the MSS")
	require.NotEqual(t, 1200, maxSeg(t, f.dp.conn(sockKey{1, 0})), "listener 1 does not")

	seed, table := f.dp.maglev()
	require.EqualValues(t, 7, seed)
	require.Len(t, table, maglevSize)
	require.Equal(t, []uint32{0, 1, 2}, members(table), "the Maglev table spreads flows over every instance")
	require.Equal(t, []loader.Instance{{Index: 0, CPU: f.cpu(0)}, {Index: 1, CPU: f.cpu(1)}, {Index: 2, CPU: f.cpu(2)}}, f.dp.instances())

	// The plan commits once every socket is in the sockmap, and the
	// Maglev table names no instance before the instance table has its
	// CPU; then the daemon hears of the change.
	evs := f.dp.since(0)
	require.Equal(t, 6, count(evs, "set"))
	require.Equal(t, []string{"set", "commit", "instances", "maglev", "change"}, ops(evs))
}

func TestStatusReportsBackends(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *supervisor.Options) { o.ProbeInterval = 250 * time.Millisecond })
	servers := filepath.Join(filepath.Dir(f.ctl), "servers.csv")
	write := func(rows ...string) {
		require.NoError(t, atomicfile.Write(servers, []byte(strings.Join(rows, "\n")+"\n"), 0o600))
	}
	write("fe,FRONTEND,5,OPEN,,0,", "s3,a,2,UP,L7OK,2,1", "s3,b,0,DOWN,L4CON,2,1", "s3,BACKEND,2,UP,,1,1")
	f.apply(f.plan("v1", []int{0, 1}, []uint32{1}, func(supervisor.Slot) []string { return []string{"servers " + servers} }))

	reports := func(want []supervisor.BackendState) func() bool {
		return func() bool {
			st := f.sup.Status()
			for _, in := range st.Instances {
				if in.State != supervisor.StateHealthy || in.Connections != 5 || !reflect.DeepEqual(in.Backends, want) {
					return false
				}
			}
			return len(st.Instances) == 2
		}
	}
	require.Eventually(t, reports([]supervisor.BackendState{
		{Backend: "s3", Name: "a", Up: true, Status: "UP", CheckStatus: "L7OK", Connections: 2, Weight: 1},
		{Backend: "s3", Name: "b", Up: false, Status: "DOWN", CheckStatus: "L4CON", Weight: 1},
	}), within, poll)
	live := f.sup.Live()
	require.Len(t, live, 2, "both instances serve")
	for i, in := range live {
		require.Equal(t, i, in.Index)
		require.Equal(t, f.instance(i).PID, in.PID)
		require.FileExists(t, in.Socket, "its runtime socket")
		require.Len(t, in.Backends, 2)
	}

	mark := f.dp.mark()
	write("fe,FRONTEND,5,OPEN,,0,", "s3,a,2,UP,L7OK,2,1", "s3,b,0,UP,L7OK,2,1", "s3,BACKEND,2,UP,,1,1")
	require.Eventually(t, reports([]supervisor.BackendState{
		{Backend: "s3", Name: "a", Up: true, Status: "UP", CheckStatus: "L7OK", Connections: 2, Weight: 1},
		{Backend: "s3", Name: "b", Up: true, Status: "UP", CheckStatus: "L7OK", Weight: 1},
	}), within, poll)
	require.Contains(t, ops(f.dp.since(mark)), "change", "a backend coming up is a change")
}

func TestCrashedInstanceLeavesTablesAndComesBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	p := f.plan("v1", []int{0, 1, 2}, []uint32{1, 2}, nil)
	f.apply(p)
	f.waitHealthy(0, 1, 2)
	before := f.pids()
	crashed := f.instance(1)
	socks := f.dp.sockets()
	_, table := f.dp.maglev()
	mark := f.dp.mark()

	// A connection the kernel completes while the process cannot accept
	// it (stopped, then killed) waits in the socket's queue.
	stop(t, crashed.PID)
	queued, err := net.DialTimeout("tcp", socks[sockKey{1, 1}].addr, time.Second)
	require.NoError(t, err)
	defer queued.Close()
	require.NoError(t, syscall.Kill(crashed.PID, syscall.SIGKILL))

	// Its sockets leave the sockmap, then the Maglev table, then the
	// daemon hears of it.
	var out int
	require.Eventually(t, func() bool {
		evs := f.dp.since(mark)
		out = slices.IndexFunc(evs, func(e event) bool { return e.op == "maglev" })
		return out >= 0 && slices.ContainsFunc(evs[out:], func(e event) bool { return e.op == "change" })
	}, within, poll)
	evs := f.dp.since(mark)
	require.Equal(t, []uint32{0, 2}, members(evs[out].table))
	var cleared []sockKey
	for _, e := range evs[:out] {
		if e.op != "change" { // a probe may have found it stopped
			require.Equal(t, "clear", e.op, "%+v", e)
			cleared = append(cleared, e.key)
		}
	}
	require.ElementsMatch(t, []sockKey{{1, 1}, {2, 1}}, cleared)
	// Only the flows of the crashed instance move.
	for i, owner := range table {
		if owner != 1 {
			require.Equal(t, owner, evs[out].table[i], "Maglev slot %d", i)
		}
	}

	// It comes back on the same sockets, and serves what they queued.
	f.waitHealthy(0, 1, 2)
	back := f.instance(1)
	require.NotEqual(t, crashed.PID, back.PID)
	require.Equal(t, 1, back.Restarts)
	require.Contains(t, back.LastExit, "killed")
	require.EqualValues(t, 1, f.sup.Status().Restarts)
	require.Equal(t, socks, f.dp.sockets(), "the restarted instance has the same sockets")
	line, err := readGreeting(queued)
	require.NoError(t, err)
	require.Equal(t, greeting(back.PID, "v1", 1, 1), line, "the connection queued during the crash is served")
	f.requireServed(p, "v1")
	require.Eventually(t, func() bool {
		evs := f.dp.since(mark)
		return slices.Equal([]uint32{0, 1, 2}, members(f.table())) && evs[len(evs)-1].op == "change"
	}, within, poll, "instance 1 is back in the Maglev table, and the daemon told")
	require.False(t, f.running(crashed.PID))
	require.Equal(t, before[0], f.instance(0).PID, "the other instances were left alone")
	require.Equal(t, before[2], f.instance(2).PID, "the other instances were left alone")
}

func TestRestartBacksOff(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *supervisor.Options) {
		o.Backoff = 100 * time.Millisecond
		o.MaxBackoff = 200 * time.Millisecond
	})
	f.apply(f.plan("v1", []int{0}, []uint32{1}, nil))
	// Quick crashes double the delay, up to MaxBackoff.
	for i, delay := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond} {
		f.waitHealthy(0)
		pid := f.instance(0).PID
		killed := time.Now()
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		require.Eventually(t, func() bool {
			in := f.instance(0)
			return in.State == supervisor.StateHealthy && in.PID != 0 && in.PID != pid
		}, within, poll)
		require.GreaterOrEqual(t, time.Since(killed), delay, "restart %d", i+1)
	}
	require.Equal(t, 3, f.instance(0).Restarts)
	require.EqualValues(t, 3, f.sup.Status().Restarts)
}

func TestWedgedInstanceIsReplaced(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *supervisor.Options) { o.ProbeInterval = 250 * time.Millisecond })
	f.apply(f.plan("v1", []int{0, 1}, []uint32{1}, nil))
	f.waitHealthy(0, 1)
	wedged, other := f.instance(0).PID, f.instance(1).PID
	mark := f.dp.mark()

	stop(t, wedged)
	require.Eventually(t, func() bool { return f.instance(0).State == supervisor.StateUnhealthy }, within, poll)
	require.Contains(t, ops(f.dp.since(mark)), "change", "turning unhealthy is a change")
	require.Eventually(t, func() bool {
		in := f.instance(0)
		return in.State == supervisor.StateHealthy && in.PID != 0 && in.PID != wedged
	}, within, poll, "a process that stops answering is killed and restarted")
	require.False(t, f.running(wedged))
	require.Equal(t, other, f.instance(1).PID)
}

func TestFailedRestartIsRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	var broken atomic.Bool
	var failures atomic.Int32
	p := f.plan("v1", []int{0, 1}, []uint32{1}, nil)
	render := p.Render
	p.Render = func(sl supervisor.Slot, fds map[uint32]int, sock string) ([]byte, error) {
		if broken.Load() {
			failures.Add(1)
			return nil, errors.New("disk full")
		}
		return render(sl, fds, sock)
	}
	f.apply(p)
	f.waitHealthy(0, 1)
	broken.Store(true)
	require.NoError(t, syscall.Kill(f.instance(0).PID, syscall.SIGKILL))

	require.Eventually(t, func() bool {
		in := f.instance(0)
		return failures.Load() >= 2 && in.State == supervisor.StateDown && strings.Contains(in.LastExit, "disk full")
	}, within, poll, "the restart fails, and is tried again")
	require.NotContains(t, f.dp.sockets(), sockKey{1, 0})
	require.Equal(t, []uint32{1}, members(f.table()))

	broken.Store(false)
	f.waitHealthy(0, 1)
	require.Equal(t, 1, f.instance(0).Restarts)
	require.Equal(t, []uint32{0, 1}, members(f.table()))
	f.requireServed(p, "v1")
}

func TestReloadSwapsSocketsInPlace(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	hold, release := f.hold()
	p1 := f.plan("v1", []int{0, 1}, []uint32{1, 2}, func(supervisor.Slot) []string { return []string{hold} })
	f.apply(p1)
	f.waitHealthy(0, 1)
	old := f.pids()
	oldSocks := f.dp.sockets()

	// Instance 0 and listener 1 go, instance 2 and listener 3 come; the
	// socket of listener 2 for instance 1 is in both plans.
	p2 := f.plan("v2", []int{1, 2}, []uint32{2, 3}, nil)
	var atCommit map[sockKey]sockRef
	p2.Commit = func() error {
		f.dp.record("commit")
		atCommit = f.dp.sockets()
		return nil
	}
	mark := f.dp.mark()
	f.apply(p2)

	oldOnly := []sockKey{{1, 0}, {1, 1}, {2, 0}}
	evs := f.dp.since(mark)
	require.Equal(t, 1, count(evs, "commit"))
	commit := slices.IndexFunc(evs, func(e event) bool { return e.op == "commit" })
	var set, cleared []sockKey
	for i, e := range evs {
		switch e.op {
		case "set":
			require.Less(t, i, commit, "socket %v set after Commit", e.key)
			set = append(set, e.key)
		case "clear":
			require.Greater(t, i, commit, "socket %v cleared before Commit", e.key)
			cleared = append(cleared, e.key)
		}
	}
	require.ElementsMatch(t, keys(p2), set, "each socket of the new generation is set once")
	require.ElementsMatch(t, oldOnly, cleared, "only what the new plan lacks is cleared: 2/1 is replaced in place")
	// At Commit both generations are in the sockmap, the new one where
	// they overlap.
	require.ElementsMatch(t, append(keys(p2), oldOnly...), slices.Collect(maps.Keys(atCommit)))
	for _, k := range keys(p2) {
		require.NotEqual(t, oldSocks[k], atCommit[k], "%v", k)
	}

	require.ElementsMatch(t, keys(p2), slices.Collect(maps.Keys(f.dp.sockets())))
	require.Equal(t, []uint32{1, 2}, members(f.table()))
	require.Equal(t, []loader.Instance{{Index: 1, CPU: f.cpu(1)}, {Index: 2, CPU: f.cpu(2)}}, f.dp.instances())

	st := f.sup.Status()
	require.EqualValues(t, 2, st.Generation)
	require.EqualValues(t, 1, st.Reloads)
	require.Equal(t, 2, st.Draining)
	require.Equal(t, 1, st.OldGenerations)
	var retired []int
	for _, r := range st.Retired {
		require.EqualValues(t, 1, r.Generation)
		require.Equal(t, time.Minute, r.StopBy.Sub(r.RetiredAt), "Options.MaxTransfer")
		require.Equal(t, old[r.Index], r.PID)
		retired = append(retired, r.PID)
	}
	require.ElementsMatch(t, []int{old[0], old[1]}, retired)
	require.Len(t, st.Instances, 2)
	for _, in := range st.Instances {
		require.EqualValues(t, 2, in.Generation)
		require.NotEqual(t, old[in.Index], in.PID)
	}
	f.waitHealthy(1, 2)
	f.requireServed(p2, "v2")

	// The old generation gets its soft stop and drains away, its sockets
	// with it.
	require.Eventually(t, func() bool {
		return slices.Contains(f.events(old[0]), "USR1") && slices.Contains(f.events(old[1]), "USR1")
	}, within, poll)
	require.Equal(t, 2, f.sup.Status().Draining, "a soft-stopped instance drains until it exits")
	release()
	require.Eventually(t, func() bool {
		return !f.running(old[0]) && !f.running(old[1]) && f.sup.Status().Draining == 0
	}, within, poll)
	require.Empty(t, f.sup.Status().Retired)
	for _, pid := range old {
		require.Contains(t, f.events(pid), "USR1", "process %d got a soft stop", pid)
	}
	require.Eventually(t, func() bool {
		open := openSockets(t)
		for _, ref := range oldSocks {
			if slices.Contains(open, ref.ino) {
				return false
			}
		}
		return true
	}, within, poll, "the old generation's sockets are closed")

	// A reload that keeps the instances moves no flow.
	table := f.table()
	p3 := f.plan("v3", []int{1, 2}, []uint32{2, 3}, nil)
	f.apply(p3)
	require.Equal(t, table, f.table())
	f.requireServed(p3, "v3")
}

func TestFailedApplyLeavesPreviousGenerationServing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts func(*supervisor.Options)
		more func(supervisor.Slot) []string
		edit func(*fixture, *supervisor.Plan)
		err  string
		// commits counts the failed plan's Commit calls; touched says
		// whether the sockmap changed (and was rolled back).
		commits int
		touched bool
	}{{
		name: "render error",
		edit: func(_ *fixture, p *supervisor.Plan) {
			render := p.Render
			p.Render = func(sl supervisor.Slot, fds map[uint32]int, sock string) ([]byte, error) {
				if sl.Index == 2 {
					return nil, errors.New("no such certificate")
				}
				return render(sl, fds, sock)
			}
		},
		err: "instance 2: render: no such certificate",
	}, {
		name: "process exits at start",
		more: func(sl supervisor.Slot) []string {
			if sl.Index == 1 {
				return []string{"mode exit"}
			}
			return nil
		},
		err: "instance 1: haproxy exited during start: exit status 1",
	}, {
		name: "process never answers",
		opts: func(o *supervisor.Options) { o.StartTimeout = 3 * time.Second },
		more: func(sl supervisor.Slot) []string {
			if sl.Index == 2 {
				return []string{"mode silent"}
			}
			return nil
		},
		err: "instance 2: haproxy did not answer",
	}, {
		name:    "sockmap refuses a socket",
		edit:    func(f *fixture, _ *supervisor.Plan) { f.dp.failSocket(sockKey{3, 2}, errors.New("sockmap full")) },
		err:     "instance 2: sockmap full",
		touched: true,
	}, {
		name: "commit fails",
		edit: func(f *fixture, p *supervisor.Plan) {
			p.Commit = func() error {
				f.dp.record("commit")
				return errors.New("service table full")
			}
		},
		err:     "service table full",
		commits: 1,
		touched: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.opts)
			p1 := f.plan("v1", []int{0, 1}, []uint32{1, 2}, nil)
			f.apply(p1)
			f.waitHealthy(0, 1)
			pids := f.pids()
			socks := f.dp.sockets()
			_, table := f.dp.maglev()
			insts := f.dp.instances()
			mark := f.dp.mark()

			p2 := f.plan("v2", []int{0, 1, 2}, []uint32{1, 2, 3}, tc.more)
			if tc.edit != nil {
				tc.edit(f, &p2)
			}
			err := f.sup.Apply(context.Background(), p2)
			require.ErrorContains(t, err, tc.err)

			// A probe of the serving generation may report a change.
			evs := slices.DeleteFunc(f.dp.since(mark), func(e event) bool { return e.op == "change" })
			require.Equal(t, tc.commits, count(evs, "commit"))
			if !tc.touched {
				require.Empty(t, evs, "nothing changes before every new instance answers")
			}
			require.Equal(t, socks, f.dp.sockets(), "the sockmap is as before")
			var failed []uint64
			for _, e := range evs {
				if e.op == "set" && !slices.Contains(slices.Collect(maps.Values(socks)), e.sock) {
					failed = append(failed, e.sock.ino)
				}
			}
			require.Equal(t, tc.touched, len(failed) > 0)
			require.Eventually(t, func() bool {
				return !slices.ContainsFunc(openSockets(t), func(ino uint64) bool { return slices.Contains(failed, ino) })
			}, within, poll, "the failed generation's sockets are closed")
			require.Equal(t, table, f.table())
			require.Equal(t, insts, f.dp.instances())
			require.Zero(t, f.sup.Status().Reloads)
			f.waitHealthy(0, 1)
			require.Equal(t, pids, f.pids())
			for _, in := range f.sup.Status().Instances {
				require.EqualValues(t, 1, in.Generation)
			}
			f.requireServed(p1, "v1")
			require.NotEmpty(t, f.started("v2"))
			require.Eventually(t, func() bool {
				return !slices.ContainsFunc(f.started("v2"), f.running)
			}, within, poll, "the failed generation's processes are gone")
			for _, pid := range pids {
				require.NotContains(t, f.events(pid), "USR1", "the serving generation is not stopped")
			}

			// The supervisor is not stuck: the plan, fixed, applies.
			f.dp.failSocket(sockKey{3, 2}, nil)
			fixed := f.plan("v2", []int{0, 1, 2}, []uint32{1, 2, 3}, nil)
			f.apply(fixed)
			f.waitHealthy(0, 1, 2)
			f.requireServed(fixed, "v2")
			require.EqualValues(t, 1, f.sup.Status().Reloads)
		})
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	t.Run("waits for instances to finish", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.apply(f.plan("v1", []int{0, 1}, []uint32{1, 2}, func(supervisor.Slot) []string { return []string{"linger 200ms"} }))
		f.waitHealthy(0, 1)
		pids := f.pids()

		start := time.Now()
		f.sup.Stop(context.Background(), time.Minute)
		require.Less(t, time.Since(start), within, "Stop returns once the instances are done, not after the drain time")
		require.Empty(t, f.dp.sockets(), "every socket left the sockmap")
		for _, pid := range pids {
			require.Contains(t, f.events(pid), "USR1", "process %d got a soft stop", pid)
			require.False(t, f.running(pid), "process %d has ended", pid)
		}
		for _, in := range f.sup.Status().Instances {
			require.Equal(t, supervisor.StateStopped, in.State, "instance %d: a probe under way does not make it healthy again", in.Index)
		}
		require.Len(t, f.started("v1"), 2, "nothing restarted")
		require.ErrorContains(t, f.sup.Apply(context.Background(), f.plan("v2", []int{0}, []uint32{1}, nil)), "supervisor is stopping")
		require.Empty(t, f.started("v2"))
	})

	t.Run("kills instances that outlast the drain", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		stubborn := func(supervisor.Slot) []string { return []string{"linger 1m"} }
		f.apply(f.plan("v1", []int{0, 1}, []uint32{1}, stubborn))
		f.apply(f.plan("v2", []int{0, 1}, []uint32{1}, stubborn))
		pids := append(f.started("v1"), f.started("v2")...)
		require.Len(t, pids, 4)

		start := time.Now()
		f.sup.Stop(context.Background(), 200*time.Millisecond)
		require.Less(t, time.Since(start), within)
		for _, pid := range pids {
			require.False(t, f.running(pid), "process %d has ended", pid)
		}
		require.Empty(t, f.dp.sockets())
		for _, pid := range f.started("v2") {
			require.Contains(t, f.events(pid), "USR1", "process %d got a soft stop first", pid)
		}
	})
}

func TestInstancesOfAnEarlierOberAreRetired(t *testing.T) {
	t.Parallel()
	f := prepare(t, nil)
	require.NoError(t, os.MkdirAll(f.dir, 0o750))

	// An instance an earlier ober started from this runtime directory,
	// and its pid file.
	cfg := filepath.Join(f.dir, "haproxy-0.g1.cfg")
	hold, release := f.hold()
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("stats-socket %s\nlabel stale\ncontrol %s\n%s\n",
		filepath.Join(f.dir, "stale.sock"), f.ctl, hold)), 0o600))
	stale := startChild(t, f.opts.Binary, "-f", cfg, "-db")
	require.Eventually(t, func() bool { return len(f.started("stale")) == 1 }, within, poll)
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "haproxy-0.g1.pid"), []byte(strconv.Itoa(stale.pid)+"\n"), 0o600))
	// A pid file naming some other process, and a broken one.
	other := startChild(t, "sleep", "60")
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "haproxy-3.g2.pid"), []byte(strconv.Itoa(other.pid)+"\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "haproxy-4.g1.pid"), []byte("garbage\n"), 0o600))

	f.start()
	left, err := filepath.Glob(filepath.Join(f.dir, "*.pid"))
	require.NoError(t, err)
	require.Empty(t, left, "pid files are consumed")
	require.Empty(t, f.sup.Status().Retired, "nothing is retired before a plan serves")

	f.apply(f.plan("v1", []int{0}, []uint32{1}, nil))
	require.Eventually(t, func() bool {
		st := f.sup.Status()
		return st.OldGenerations == 1 && slices.ContainsFunc(st.Retired, func(r supervisor.RetiredStatus) bool {
			return r.PID == stale.pid && r.Index == -1 && r.Generation == 0
		})
	}, within, poll, "the earlier ober's instance is shown draining")
	require.Eventually(t, func() bool { return slices.Contains(f.events(stale.pid), "USR1") }, within, poll)
	release()
	require.Eventually(t, stale.exited, within, poll)
	require.Eventually(t, func() bool { return len(f.sup.Status().Retired) == 0 }, within, poll)
	require.False(t, other.exited(), "a process that is not an instance is left alone")
	f.waitHealthy(0)
}

func TestReplacedInstanceIsKilledAfterMaxTransfer(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	p1 := f.plan("v1", []int{0}, []uint32{1}, func(supervisor.Slot) []string { return []string{"linger 1m"} })
	p1.MaxTransfer = 50 * time.Millisecond
	f.apply(p1)
	old := f.instance(0).PID
	f.apply(f.plan("v2", []int{0}, []uint32{1}, nil))

	st := f.sup.Status()
	require.Len(t, st.Retired, 1)
	r := st.Retired[0]
	require.Equal(t, supervisor.RetiredStatus{Index: 0, PID: old, Generation: 1, RetiredAt: r.RetiredAt, StopBy: r.RetiredAt.Add(50 * time.Millisecond)}, r)
	require.Eventually(t, func() bool { return slices.Contains(f.events(old), "USR1") }, within, poll)
	// It ignores the soft stop past its plan's max transfer time (plus
	// the supervisor's margin of 5s): it is killed.
	require.Eventually(t, func() bool { return !f.running(old) }, 4*within, 50*time.Millisecond)
	require.Eventually(t, func() bool { return f.sup.Status().Draining == 0 }, within, poll)
}

// child is a process a test started itself.
type child struct {
	pid  int
	done chan struct{}
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// startChild starts a process that cleanup kills and reaps.
func startChild(t *testing.T, name string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(name, args...)
	require.NoError(t, cmd.Start())
	c := &child{pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
	})
	return c
}

// An instance that dies just before a reload that then fails is still
// restarted: the failed plan never served, so the restart pending under
// the serving plan stands.
func TestCrashBeforeAFailedReloadIsStillRestarted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *supervisor.Options) { o.Backoff = 500 * time.Millisecond })
	p1 := f.plan("v1", []int{0, 1}, []uint32{1}, nil)
	f.apply(p1)
	f.waitHealthy(0, 1)
	crashed := f.instance(1)
	require.NoError(t, syscall.Kill(crashed.PID, syscall.SIGKILL))
	require.Eventually(t, func() bool { return f.instance(1).State == supervisor.StateDown }, within, poll)

	p2 := f.plan("v2", []int{0, 1}, []uint32{1}, nil)
	p2.Render = func(supervisor.Slot, map[uint32]int, string) ([]byte, error) {
		return nil, errors.New("no such certificate")
	}
	require.ErrorContains(t, f.sup.Apply(context.Background(), p2), "no such certificate")

	f.waitHealthy(0, 1)
	require.NotEqual(t, crashed.PID, f.instance(1).PID)
	require.Equal(t, 1, f.instance(1).Restarts)
	f.requireServed(p1, "v1")
}
