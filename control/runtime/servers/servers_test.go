package servers

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func ref(b, s string) Ref { return Ref{Backend: b, Server: s} }

func srv(name string, weight int) Server {
	return Server{Ref: ref("svc~default~p1", name), Key: "svc/default/" + name, Group: "svc/default", Weight: weight, Admin: AdminEnabled}
}

func TestComputeStates(t *testing.T) {
	now := time.Now()
	a, b, c, d := srv("a", 100), srv("b", 50), srv("c", 100), srv("d", 0)
	b.Admin = AdminDrain
	c.Admin = AdminDisabled
	health := map[string]Health{a.Key: {Up: true}, b.Key: {Up: true}, c.Key: {Up: true}, d.Key: {Up: true}}
	got := Compute([]Server{a, b, c, d}, health, nil, nil, now)
	require.Equal(t, Desired{Ready, 100}, got[a.Ref])
	require.Equal(t, Desired{Drain, 50}, got[b.Ref], "drain: no new connections, the open ones finish")
	require.Equal(t, Maint, got[c.Ref].State, "disabled: out at once")
	require.Equal(t, Desired{Ready, 0}, got[d.Ref], "weight 0 takes it out of rotation")

	health[a.Key] = Health{Up: false}
	require.Equal(t, Maint, Compute([]Server{a}, health, nil, nil, now)[a.Ref].State, "down: maint")

	a.Equal, b.Equal = true, true
	b.Admin = AdminEnabled
	got = Compute([]Server{a, b}, map[string]Health{a.Key: {Up: true}, b.Key: {Up: true}}, nil, nil, now)
	require.Equal(t, got[a.Ref].Weight, got[b.Ref].Weight, "roundrobin: one weight for all")
}

// A server that comes back ramps from a tenth of its weight to all of it
// over the slow start, never at 0; one up from the start does not ramp.
func TestComputeSlowstart(t *testing.T) {
	now := time.Now()
	a := srv("a", 1)
	a.Slowstart = 30 * time.Second
	w := func(since time.Time) int {
		return Compute([]Server{a}, map[string]Health{a.Key: {Up: true, UpSince: since}}, nil, nil, now)[a.Ref].Weight
	}
	require.Equal(t, 1, w(now), "a weight of 1 never truncates to 0")
	a.Weight = 200
	require.Equal(t, 20, w(now))
	require.Equal(t, 100, w(now.Add(-15*time.Second)))
	require.Equal(t, 200, w(now.Add(-30*time.Second)))
	require.Equal(t, 200, w(time.Time{}), "up from the start: no ramp")
	var steps []int
	for i := range 5 {
		steps = append(steps, w(now.Add(-time.Duration(i+1)*6*time.Second)))
	}
	require.IsIncreasing(t, steps)

	// balance source cannot take another weight at run time: no ramp.
	a.Static = true
	require.Equal(t, 200, w(now))
}

// keep_last: when every server of a pool is down, the ones up last stay
// in service; a pool without keep_last has them all in maint.
func TestComputeKeepLast(t *testing.T) {
	now := time.Now()
	a, b := srv("a", 100), srv("b", 100)
	a.KeepLast, b.KeepLast = true, true
	last := map[string]map[Ref]bool{}
	servers := []Server{a, b}
	up := map[string]Health{a.Key: {Up: true}, b.Key: {Up: false}}
	RememberUp(servers, up, last)
	down := map[string]Health{a.Key: {Up: false}, b.Key: {Up: false}}
	RememberUp(servers, down, last)
	got := Compute(servers, down, last, nil, now)
	require.Equal(t, Ready, got[a.Ref].State, "a was up last")
	require.Equal(t, Maint, got[b.Ref].State)

	a.KeepLast, b.KeepLast = false, false
	got = Compute([]Server{a, b}, down, last, nil, now)
	require.Equal(t, Maint, got[a.Ref].State)
}

// leastbandwidth: the server moving the most bytes gets the least weight.
func TestComputeBandwidth(t *testing.T) {
	a, b := srv("a", 100), srv("b", 100)
	a.Bandwidth, b.Bandwidth = true, true
	health := map[string]Health{a.Key: {Up: true}, b.Key: {Up: true}}
	got := Compute([]Server{a, b}, health, nil, map[Ref]float64{a.Ref: 100 << 20, b.Ref: 0}, time.Now())
	require.Equal(t, 100, got[b.Ref].Weight)
	require.Equal(t, 1, got[a.Ref].Weight, "a at 100 MB/s weighs about 1/100 of idle b")
	got = Compute([]Server{a, b}, health, nil, map[Ref]float64{}, time.Now())
	require.Equal(t, got[a.Ref], got[b.Ref], "idle alike: equal")
}

type fakeRuntime struct {
	mu   sync.Mutex
	cmds map[string][]string
	fail bool
}

func (f *fakeRuntime) push(_ context.Context, socket string, cmds []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return context.DeadlineExceeded
	}
	f.cmds[socket] = append(f.cmds[socket], cmds...)
	return nil
}

func (f *fakeRuntime) take(socket string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.cmds[socket]
	f.cmds[socket] = nil
	return out
}

// The controller tells every live instance what differs from what it
// told it before; a new instance is told everything; a failed push is
// retried.
func TestControllerPushesDifferences(t *testing.T) {
	rt := &fakeRuntime{cmds: map[string][]string{}}
	verdicts := map[string]bool{"svc/default/a": true, "svc/default/b": true}
	var mu sync.Mutex
	insts := []Instance{{PID: 1, Socket: "s1"}}
	c := New(Options{
		Health: func() map[string]bool {
			mu.Lock()
			defer mu.Unlock()
			return map[string]bool{"svc/default/a": verdicts["svc/default/a"], "svc/default/b": verdicts["svc/default/b"]}
		},
		Instances: func() []Instance { mu.Lock(); defer mu.Unlock(); return append([]Instance(nil), insts...) },
		Push:      rt.push,
	})
	c.Set([]Server{srv("a", 100), srv("b", 50)})
	ctx := context.Background()
	c.pass(ctx)
	require.Equal(t, []string{
		"set server svc~default~p1/a state ready", "set weight svc~default~p1/a 100",
		"set server svc~default~p1/b state ready", "set weight svc~default~p1/b 50",
	}, rt.take("s1"))
	c.pass(ctx)
	require.Empty(t, rt.take("s1"), "nothing changed, nothing sent")

	mu.Lock()
	verdicts["svc/default/b"] = false
	insts = append(insts, Instance{PID: 2, Socket: "s2"})
	mu.Unlock()
	rt.fail = true
	c.pass(ctx)
	rt.fail = false
	c.pass(ctx)
	require.Equal(t, []string{"set server svc~default~p1/b state maint"}, rt.take("s1"))
	got := rt.take("s2")
	require.Len(t, got, 3, "a new instance is told everything: %v", got)
	require.Contains(t, strings.Join(got, "\n"), "set server svc~default~p1/b state maint")

	// b comes back: ready, with a slow start's weight where it has one.
	mu.Lock()
	verdicts["svc/default/b"] = true
	mu.Unlock()
	b := srv("b", 50)
	b.Slowstart = time.Minute
	c.Set([]Server{srv("a", 100), b})
	c.pass(ctx)
	cmds := rt.take("s1")
	require.Contains(t, cmds, "set server svc~default~p1/b state ready")
	require.Contains(t, cmds, "set weight svc~default~p1/b 5", "a tenth of 50 at first")

	// Disabled is out at once: its open connections are cut; drain and
	// a failed check let them finish.
	b.Admin = AdminDisabled
	c.Set([]Server{srv("a", 100), b})
	c.pass(ctx)
	require.Equal(t, []string{"set server svc~default~p1/b state maint", "shutdown sessions server svc~default~p1/b"}, rt.take("s1"))
}

func TestControllerMeasuresRates(t *testing.T) {
	var mu sync.Mutex
	bytes := int64(0)
	a := srv("a", 100)
	c := New(Options{
		Health: func() map[string]bool { return map[string]bool{a.Key: true} },
		Instances: func() []Instance {
			mu.Lock()
			defer mu.Unlock()
			return []Instance{{PID: 7, Socket: "s", Servers: []Counters{{Ref: a.Ref, BytesOut: bytes, Conns: 3}}}}
		},
		Push: func(context.Context, string, []string) error { return nil },
	})
	c.Set([]Server{a})
	c.pass(context.Background())
	mu.Lock()
	bytes = 10 << 20
	mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	c.pass(context.Background())
	st := c.Stats()[a.Ref]
	require.EqualValues(t, 3, st.Conns)
	require.EqualValues(t, 10<<20, st.BytesOut)
	require.Greater(t, st.Rate, float64(10<<20), "10 MiB in about 0.1 s")
}

// leastbandwidth sees a transfer while it runs: the rate comes from the
// node's connections to the server, not from HAProxy's counters (which
// move when a connection ends), and the busy server's weight drops.
func TestControllerMeasuresSockets(t *testing.T) {
	var mu sync.Mutex
	busy, idle := srv("busy", 100), srv("idle", 100)
	busy.Bandwidth, idle.Bandwidth = true, true
	busy.Addr = netip.MustParseAddrPort("10.0.0.1:80")
	idle.Addr = netip.MustParseAddrPort("10.0.0.2:0") // a port range: any port
	socks := []Socket{{Cookie: 1, Remote: busy.Addr, Bytes: 1 << 20}, {Cookie: 2, Remote: netip.MustParseAddrPort("10.0.0.2:7001"), Bytes: 100}}
	c := New(Options{
		Health:    func() map[string]bool { return map[string]bool{busy.Key: true, idle.Key: true} },
		Instances: func() []Instance { return []Instance{{PID: 7, Socket: "s"}} },
		Push:      func(context.Context, string, []string) error { return nil },
		Sockets: func() ([]Socket, error) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(socks), nil
		},
	})
	c.Set([]Server{busy, idle})
	c.pass(context.Background())
	mu.Lock()
	socks[0].Bytes += 50 << 20 // a download in flight
	socks[1].Bytes += 1000
	socks = append(socks, Socket{Cookie: 3, Remote: busy.Addr, Bytes: 5 << 20}) // opened since
	mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	c.pass(context.Background())
	st := c.Stats()
	require.Greater(t, st[busy.Ref].Rate, float64(55<<20), "55 MiB in about 0.1 s")
	require.Less(t, st[idle.Ref].Rate, float64(1<<20))
	require.Less(t, st[busy.Ref].Weight, st[idle.Ref].Weight/5, "the busy server gets far fewer new connections")
}
