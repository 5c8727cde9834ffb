package pulse_test

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/runtime/pulse"
)

// TestFallAndRiseAreConsecutive drives every kind of check through a
// backend that fails and recovers, one check at a time: a pass restarts
// the failure count and a failure the pass count, so the verdict turns on
// exactly the Fall-th consecutive failure and the Rise-th consecutive
// pass. Counting cumulatively (as GORB did) would turn down at check 5.
func TestFallAndRiseAreConsecutive(t *testing.T) {
	t.Parallel()
	const P, F = true, false
	steps := []struct {
		pass, up bool
		streak   int
	}{
		{P, true, 1}, {F, true, 1}, {F, true, 2}, {P, true, 1},
		{F, true, 1}, {F, true, 2}, {F, false, 3}, {F, false, 4},
		{P, false, 1}, {F, false, 1}, {P, false, 1}, {P, true, 2},
		{F, true, 1}, {P, true, 1},
	}
	for kind, mk := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			b := mk(t)
			p, rec := newPulse(t, true, pulse.Options{})
			tg := b.target
			tg.Check.Fall, tg.Check.Rise, tg.Check.InitialUp = 3, 2, true
			tg.Check.Timeout = 2 * time.Second
			require.NoError(t, p.Set([]pulse.Target{tg}))
			var passed, failed uint64
			for i, s := range steps {
				b.set(s.pass)
				st := step(t, p, tg.Key)
				if s.pass {
					passed++
					require.Empty(t, st.LastError, "check %d", i+1)
				} else {
					failed++
					require.NotEmpty(t, st.LastError, "check %d", i+1)
				}
				require.Equal(t, s.up, st.Up, "verdict after check %d", i+1)
				require.Equal(t, s.streak, st.Consecutive, "streak after check %d", i+1)
				require.Equal(t, passed, st.Passed, "passed after check %d", i+1)
				require.Equal(t, failed, st.Failed, "failed after check %d", i+1)
			}
			rec.waitChanges(t, change{tg.Key, false}, change{tg.Key, true})
		})
	}
}

func TestInitialState(t *testing.T) {
	t.Parallel()
	b := newHTTPBackend(t, false)
	p, rec := newPulse(t, true, pulse.Options{})
	down := b.backend("down").target
	down.Check.InitialUp = false
	up := b.backend("up").target
	up.Check.InitialUp = true
	require.NoError(t, p.Set([]pulse.Target{down, up}))

	st := state(t, p, "down")
	require.False(t, st.Up)
	require.Zero(t, st.Health)
	require.WithinDuration(t, time.Now(), st.Since, time.Second)
	require.True(t, state(t, p, "up").Up)
	require.Equal(t, 1.0, state(t, p, "up").Health)

	// Health counts from the first check; the verdict waits for Rise.
	st = step(t, p, "down")
	require.False(t, st.Up)
	require.Equal(t, 1.0, st.Health)
	st = step(t, p, "down")
	require.True(t, st.Up)
	rec.waitChanges(t, change{"down", true})

	// An initially up target stays up through Fall-1 failures.
	b.down.Store(true)
	for range 2 {
		require.True(t, step(t, p, "up").Up)
	}
	require.False(t, step(t, p, "up").Up)
}

// TestHealthIsTheLastHundred: the fraction of the last 100 checks that
// passed, meaningful from the first check.
func TestHealthIsTheLastHundred(t *testing.T) {
	t.Parallel()
	b := newHTTPBackend(t, false).backend("b")
	p, _ := newPulse(t, true, pulse.Options{})
	b.target.Check.InitialUp = true
	require.NoError(t, p.Set([]pulse.Target{b.target}))
	run := func(pass bool, n int) pulse.Status {
		b.set(pass)
		var st pulse.Status
		for range n {
			st = step(t, p, "b")
		}
		return st
	}
	require.Equal(t, 1.0, run(true, 1).Health)
	run(true, 2)
	require.Equal(t, 0.75, run(false, 1).Health)
	require.Equal(t, 0.99, run(true, 96).Health) // checks 1-100
	require.Equal(t, 0.99, run(true, 3).Health)  // 4-103: the failure is in
	require.Equal(t, 1.0, run(true, 1).Health)   // 5-104: and out
	require.Equal(t, 0.7, run(false, 30).Health) // 75-104
	require.EqualValues(t, 134-31, state(t, p, "b").Passed)
	require.EqualValues(t, 31, state(t, p, "b").Failed)
}

// TestSetKeepsAnUnchangedTarget: a reload gives targets built afresh;
// those that check the same way keep their checker, verdict, streak and
// history.
func TestSetKeepsAnUnchangedTarget(t *testing.T) {
	t.Parallel()
	srv := newProbeServer(t, 0)
	p, rec := newPulse(t, true, pulse.Options{})
	mk := func() []pulse.Target {
		b := srv.backend("probe")
		b.target.Check.ExpectRegexp = regexp.MustCompile(`^\+PONG PING`)
		b.target.Check.Send = []byte("PING\r\n")
		b.target.Check.InitialUp = true
		return []pulse.Target{b.target}
	}
	require.NoError(t, p.Set(mk()))
	srv.down.Store(true)
	for range 3 {
		step(t, p, "probe")
	}
	before := state(t, p, "probe")
	require.False(t, before.Up)
	require.Equal(t, 3, before.Consecutive)

	other := newTCPBackend(t).backend("tcp").target
	require.NoError(t, p.Set(append(mk(), other)))
	require.Equal(t, before, state(t, p, "probe"))
	require.Equal(t, 2, pulse.Live(p))
	require.Equal(t, 4, step(t, p, "probe").Consecutive, "the streak goes on: same checker")
	require.NoError(t, p.Set(mk()))
	rec.waitChanges(t, change{"probe", false})
}

// TestSetRestartsAChangedCheck: a changed check starts a new checker and
// streak but keeps the verdict and the counters.
func TestSetRestartsAChangedCheck(t *testing.T) {
	t.Parallel()
	hb := newHTTPBackend(t, false)
	b := hb.backend("b")
	b.target.Check.InitialUp = true
	p, rec := newPulse(t, true, pulse.Options{})
	b.set(false)
	require.NoError(t, p.Set([]pulse.Target{b.target}))
	for range 3 {
		step(t, p, "b")
	}
	before := state(t, p, "b")
	require.False(t, before.Up)

	b.target.Check.Path = "/other"
	require.NoError(t, p.Set([]pulse.Target{b.target}))
	st := state(t, p, "b")
	require.False(t, st.Up)
	require.Equal(t, before.Since, st.Since)
	require.EqualValues(t, 3, st.Failed)
	require.Zero(t, st.Consecutive)

	b.set(true)
	require.False(t, step(t, p, "b").Up, "one pass of Rise 2")
	require.True(t, step(t, p, "b").Up)
	reqs := hb.requests()
	require.Equal(t, "/other", reqs[len(reqs)-1].URL.Path)
	rec.waitChanges(t, change{"b", false}, change{"b", true})

	// Another address is another check too.
	b.target.Addr = netip.AddrPortFrom(b.target.Addr.Addr(), 9)
	require.NoError(t, p.Set([]pulse.Target{b.target}))
	require.True(t, state(t, p, "b").Up)
	st = step(t, p, "b")
	require.Contains(t, st.LastError, "127.0.0.1:9")
	// The replaced checker's goroutine ends on its own time.
	require.Eventually(t, func() bool { return pulse.Live(p) == 1 }, 2*time.Second, time.Millisecond)
}

func TestNoneIsUpAndSendsNothing(t *testing.T) {
	t.Parallel()
	srv := newTCPBackend(t)
	p, rec := newPulse(t, false, pulse.Options{})
	tg := srv.backend("b").target
	tg.Check = pulse.Check{Kind: pulse.KindNone, Interval: 10 * time.Millisecond}
	require.NoError(t, p.Set([]pulse.Target{tg}))
	st := state(t, p, "b")
	require.True(t, st.Up)
	require.Equal(t, 1.0, st.Health)
	require.Zero(t, pulse.Live(p), "no checker")

	// A checked target that is down comes up when its check becomes none.
	srv.set(false)
	tg.Check = pulse.Check{Kind: pulse.KindTCP, Interval: 10 * time.Millisecond, Fall: 1}
	require.NoError(t, p.Set([]pulse.Target{tg}))
	require.Eventually(t, func() bool { return !state(t, p, "b").Up }, 2*time.Second, time.Millisecond)
	tg.Check = pulse.Check{Kind: pulse.KindNone}
	require.NoError(t, p.Set([]pulse.Target{tg}))
	require.True(t, state(t, p, "b").Up)
	require.Equal(t, 1.0, state(t, p, "b").Health, "no failed checks of the old kind")
	require.Eventually(t, func() bool { return pulse.Live(p) == 0 }, 2*time.Second, time.Millisecond)
	rec.waitChanges(t, change{"b", false}, change{"b", true})
	require.Zero(t, srv.accepts.Load())
}

// TestRemovedTargetsStop: checkers of removed targets end; Close ends
// the rest and Set fails afterwards.
func TestRemovedTargetsStop(t *testing.T) {
	t.Parallel()
	srv := newTCPBackend(t)
	p, _ := newPulse(t, false, pulse.Options{})
	var targets []pulse.Target
	for i := range 20 {
		tg := srv.backend(fmt.Sprint("b", i)).target
		tg.Check.Interval = 10 * time.Millisecond
		targets = append(targets, tg)
	}
	require.NoError(t, p.Set(targets))
	require.Equal(t, 20, pulse.Live(p))
	require.Eventually(t, func() bool {
		for _, st := range p.States() {
			if st.Passed == 0 {
				return false
			}
		}
		return true
	}, 2*time.Second, time.Millisecond)

	require.NoError(t, p.Set(targets[:5]))
	require.Len(t, p.States(), 5)
	require.Eventually(t, func() bool { return pulse.Live(p) == 5 }, 2*time.Second, time.Millisecond)
	_, ok := p.State("b10")
	require.False(t, ok)

	p.Close()
	require.Zero(t, pulse.Live(p))
	require.ErrorContains(t, p.Set(targets), "pulse: closed")
	p.Close()
}

// TestCloseKillsRunningChecks: neither Close nor a Set that removes a
// target waits for its check's timeout.
func TestCloseKillsRunningChecks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sh := script(t, dir, "echo $$ > "+dir+"/pid; exec sleep 30")
	silent := newProbeServer(t, 0)
	silent.silent = true
	hung := silent.backend("hung").target
	hung.Check.Interval, hung.Check.Timeout = 10*time.Millisecond, time.Minute
	slow := pulse.Target{Key: "slow", Addr: netip.MustParseAddrPort("127.0.0.1:9"), Check: pulse.Check{
		Kind: pulse.KindExec, Command: []string{sh}, Interval: 10 * time.Millisecond, Timeout: time.Minute}}

	p, _ := newPulse(t, false, pulse.Options{})
	require.NoError(t, p.Set([]pulse.Target{hung}))
	require.Eventually(t, func() bool { return silent.open.Load() == 1 }, 2*time.Second, time.Millisecond)
	require.NoError(t, p.Set(nil))
	require.Eventually(t, func() bool { return pulse.Live(p) == 0 }, time.Second, time.Millisecond)

	require.NoError(t, p.Set([]pulse.Target{hung, slow}))
	pid := waitPid(t, dir+"/pid")
	require.Eventually(t, func() bool { return silent.open.Load() == 1 }, 2*time.Second, time.Millisecond)
	start := time.Now()
	p.Close()
	require.Less(t, time.Since(start), time.Second)
	require.Zero(t, pulse.Live(p))
	waitGone(t, pid)
}

func TestSetRejectsBadTargets(t *testing.T) {
	t.Parallel()
	addr := netip.MustParseAddrPort("127.0.0.1:80")
	good := pulse.Target{Key: "good", Addr: addr, Check: pulse.Check{Kind: pulse.KindTCP}}
	for name, tc := range map[string]struct {
		edit func(*pulse.Target)
		err  string
	}{
		"no key":     {func(tg *pulse.Target) { tg.Key = "" }, `target 1 (""): key is empty`},
		"same key":   {func(tg *pulse.Target) { tg.Key = "good" }, `target 1: key "good": given twice`},
		"kind":       {func(tg *pulse.Target) { tg.Check.Kind = "icmp" }, `kind "icmp": not one of tcp`},
		"interval":   {func(tg *pulse.Target) { tg.Check.Interval = -time.Second }, "interval -1s: must be positive"},
		"timeout":    {func(tg *pulse.Target) { tg.Check.Timeout = -time.Second }, "timeout -1s: must be positive"},
		"fall":       {func(tg *pulse.Target) { tg.Check.Fall = -1 }, "fall -1: must be at least 1"},
		"rise":       {func(tg *pulse.Target) { tg.Check.Rise = -2 }, "rise -2: must be at least 1"},
		"no address": {func(tg *pulse.Target) { tg.Addr = netip.AddrPort{} }, `address "invalid IP": not an IP address`},
		"no port":    {func(tg *pulse.Target) { tg.Addr = netip.AddrPortFrom(addr.Addr(), 0) }, "port 0: neither the target nor the check has a port"},
		"method":     {func(tg *pulse.Target) { tg.Check.Kind, tg.Check.Method = pulse.KindHTTP, "GET /x" }, `method "GET /x": not an HTTP method`},
		"path":       {func(tg *pulse.Target) { tg.Check.Kind, tg.Check.Path = pulse.KindHTTP, "health" }, `path "health": must start with /`},
		"path space": {func(tg *pulse.Target) { tg.Check.Kind, tg.Check.Path = pulse.KindHTTP, "/a b" }, `path "/a b": must start with /`},
		"host":       {func(tg *pulse.Target) { tg.Check.Kind, tg.Check.Host = pulse.KindHTTPS, "a\r\nX: y" }, `host "a\r\nX: y": holds a space or control character`},
		"status order": {func(tg *pulse.Target) {
			tg.Check.Kind, tg.Check.StatusMin, tg.Check.StatusMax = pulse.KindHTTP, 400, 200
		}, "status 400-200: not a range within 100-599"},
		"status 600": {func(tg *pulse.Target) { tg.Check.Kind, tg.Check.StatusMin = pulse.KindHTTP, 600 }, "status 600-600: not a range within 100-599"},
		"no command": {func(tg *pulse.Target) { tg.Check.Kind = pulse.KindExec }, "command is empty"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, _ := newPulse(t, true, pulse.Options{})
			require.NoError(t, p.Set([]pulse.Target{good}))
			bad := good
			bad.Key = "bad"
			tc.edit(&bad)
			err := p.Set([]pulse.Target{good, bad})
			require.ErrorContains(t, err, tc.err)
			require.Equal(t, []string{"good"}, keys(p.States()), "nothing applied")
		})
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestDownAndUpInRealTime: unstepped, a backend that goes away is taken
// down and brought back, and OnChange may call back into the pulse.
func TestDownAndUpInRealTime(t *testing.T) {
	t.Parallel()
	srv := newTCPBackend(t)
	var p *pulse.Pulse
	var seen []pulse.Status
	ch := make(chan change, 10)
	p, _ = newPulse(t, false, pulse.Options{OnChange: func(key string, up bool) {
		seen = append(seen, p.States()[key])
		ch <- change{key, up}
	}})
	tg := srv.backend("b").target
	tg.Check.Interval, tg.Check.Fall, tg.Check.Rise, tg.Check.InitialUp = 20*time.Millisecond, 2, 2, true
	require.NoError(t, p.Set([]pulse.Target{tg}))
	require.Eventually(t, func() bool { return state(t, p, "b").Passed > 0 }, 2*time.Second, time.Millisecond)

	srv.set(false)
	require.Equal(t, change{"b", false}, waitChange(t, ch))
	st := state(t, p, "b")
	require.False(t, st.Up)
	require.Contains(t, st.LastError, "connection refused")

	srv.set(true)
	require.Equal(t, change{"b", true}, waitChange(t, ch))
	require.Len(t, seen, 2)
	require.False(t, seen[0].Up)
	require.True(t, seen[1].Up)
	require.True(t, seen[1].Since.After(seen[0].Since))
}

func waitChange(t *testing.T, ch chan change) change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(3 * time.Second):
		t.Fatal("no change")
		return change{}
	}
}

// TestChecksNeverOverlap: a check slower than the interval delays the
// next one; a fast one is followed by the next an interval after its
// start.
func TestChecksNeverOverlap(t *testing.T) {
	t.Parallel()
	srv := newProbeServer(t, 40*time.Millisecond)
	p, _ := newPulse(t, false, pulse.Options{})
	tg := srv.backend("slow").target
	tg.Check.Interval, tg.Check.Timeout = 10*time.Millisecond, time.Second
	require.NoError(t, p.Set([]pulse.Target{tg}))
	require.Eventually(t, func() bool { return state(t, p, "slow").Passed >= 5 }, 3*time.Second, time.Millisecond)
	require.EqualValues(t, 1, srv.most.Load(), "checks of one target overlapped")
	require.Zero(t, state(t, p, "slow").Failed)

	fast := newTCPBackend(t)
	p2, _ := newPulse(t, false, pulse.Options{})
	tg = fast.backend("fast").target
	tg.Check.Interval = 30 * time.Millisecond
	require.NoError(t, p2.Set([]pulse.Target{tg}))
	require.Eventually(t, func() bool { return fast.accepts.Load() >= 11 }, 3*time.Second, time.Millisecond)
	at := fast.acceptTimes()
	// Ten intervals separate the first check's start from the
	// eleventh's, less how late the first accept was.
	require.GreaterOrEqual(t, at[10].Sub(at[0]), 10*30*time.Millisecond-30*time.Millisecond)
}

// TestFirstChecksAreSpread: targets added together are checked first
// at random points of their interval, not all at once.
func TestFirstChecksAreSpread(t *testing.T) {
	t.Parallel()
	srv := newTCPBackend(t)
	p, _ := newPulse(t, false, pulse.Options{})
	const n, interval = 100, 400 * time.Millisecond
	var targets []pulse.Target
	for i := range n {
		tg := srv.backend(fmt.Sprint("b", i)).target
		tg.Check.Interval = interval
		targets = append(targets, tg)
	}
	start := time.Now()
	require.NoError(t, p.Set(targets))
	first := map[string]time.Duration{}
	require.Eventually(t, func() bool {
		for k, st := range p.States() {
			if _, ok := first[k]; !ok && st.Passed+st.Failed > 0 {
				first[k] = time.Since(start)
			}
		}
		return len(first) == n
	}, 3*time.Second, 2*time.Millisecond)
	var at []time.Duration
	for _, d := range first {
		at = append(at, d)
	}
	slices.Sort(at)
	// 100 uniform draws over 400ms span less than half of it with a
	// probability of about 1e-28; all at once would span a few ms.
	require.Greater(t, at[n-1]-at[0], interval/2, "first checks at %v", at)
}

// TestConcurrencyIsBounded: no more checks run at once than allowed, of
// each sort.
func TestConcurrencyIsBounded(t *testing.T) {
	t.Parallel()
	t.Run("network", func(t *testing.T) {
		t.Parallel()
		srv := newProbeServer(t, 30*time.Millisecond)
		p, _ := newPulse(t, false, pulse.Options{MaxNetwork: 3})
		var targets []pulse.Target
		for i := range 12 {
			tg := srv.backend(fmt.Sprint("b", i)).target
			tg.Check.Interval, tg.Check.Timeout = 10*time.Millisecond, 2*time.Second
			targets = append(targets, tg)
		}
		require.NoError(t, p.Set(targets))
		require.Eventually(t, func() bool { return srv.seen.Load() >= 40 }, 5*time.Second, time.Millisecond)
		require.EqualValues(t, 3, srv.most.Load())
		for k, st := range p.States() {
			require.Zero(t, st.Failed, "%s: %s", k, st.LastError)
		}
	})
	t.Run("exec", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		log := dir + "/log"
		// One line per start and one per end, appended atomically.
		sh := script(t, dir, fmt.Sprintf("echo s >> %s; sleep 0.03; echo e >> %s", log, log))
		p, _ := newPulse(t, false, pulse.Options{MaxExec: 2})
		var targets []pulse.Target
		for i := range 8 {
			targets = append(targets, pulse.Target{Key: fmt.Sprint("b", i), Addr: netip.MustParseAddrPort("127.0.0.1:9"),
				Check: pulse.Check{Kind: pulse.KindExec, Command: []string{sh}, Interval: 10 * time.Millisecond, Timeout: 2 * time.Second}})
		}
		require.NoError(t, p.Set(targets))
		var lines []string
		require.Eventually(t, func() bool {
			lines = readLines(t, log)
			return len(lines) >= 40
		}, 10*time.Second, 5*time.Millisecond)
		p.Close()
		most, running := 0, 0
		for _, l := range lines {
			if l == "s" {
				running++
			} else {
				running--
			}
			most = max(most, running)
		}
		require.Equal(t, 2, most)
	})
}

func readLines(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}
