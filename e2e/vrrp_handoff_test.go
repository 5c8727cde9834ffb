package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
	"github.com/ober-ingress/ober/internal/testsite/vrrptest"
)

// vrrpLoad is the lab demo's load: workers requests at a time to one VIP,
// each on a new connection and given up after a second.
type vrrpLoad struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	reqs []fetch
}

func startVRRPLoad(s *vrrptest.Site, vip netip.Addr, workers int) *vrrpLoad {
	l := &vrrpLoad{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				start := time.Now()
				by, err := vrrpFetch(ctx, s, vip)
				cancel()
				node, _, _ := strings.Cut(by, "/")
				l.mu.Lock()
				l.reqs = append(l.reqs, fetch{start: start, end: time.Now(), node: node, err: err})
				l.mu.Unlock()
			}
		})
	}
	return l
}

// finish stops the load and returns every request made.
func (l *vrrpLoad) finish() []fetch {
	close(l.stop)
	l.wg.Wait()
	return l.reqs
}

// failed describes failed requests, from when they started.
func failed(fs []fetch, since time.Time) string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("started %+v: %v", f.start.Sub(since).Round(time.Millisecond), f.err))
	}
	return strings.Join(out, "; ")
}

// lost splits the failed requests into those that started before at and
// the others.
func lost(reqs []fetch, at time.Time) (before, after []fetch) {
	for _, r := range reqs {
		switch {
		case r.err == nil:
		case r.start.Before(at):
			before = append(before, r)
		default:
			after = append(after, r)
		}
	}
	return before, after
}

// slowDownload is a download of size bytes from the backend through vip,
// read at a pace that makes it last about d: a connection that outlives
// the VIP's move.
type slowDownload struct {
	node string // X-Served-By's node
	took time.Duration
	err  error
}

func startSlowDownload(s *vrrptest.Site, vip netip.Addr, size int, d time.Duration) <-chan slowDownload {
	out := make(chan slowDownload, 1)
	go func() {
		out <- func() (r slowDownload) {
			start := time.Now()
			defer func() { r.took = time.Since(start) }()
			tr := &http.Transport{DialContext: s.ClientDialer().DialContext, TLSClientConfig: s.TLSConfig(vip), DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 3*d)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://%s%s?n=%d", vip, nodetest.BytesPath, size), nil)
			if err != nil {
				return slowDownload{err: err}
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				return slowDownload{err: err}
			}
			defer resp.Body.Close()
			r.node, _, _ = strings.Cut(resp.Header.Get("X-Served-By"), "/")
			if resp.StatusCode != http.StatusOK {
				r.err = fmt.Errorf("status %s", resp.Status)
				return r
			}
			const chunk = 64 << 10
			every := d / time.Duration(size/chunk)
			buf := make([]byte, chunk)
			next := time.Now()
			for off := 0; off < size; {
				k, err := io.ReadFull(resp.Body, buf[:min(chunk, size-off)])
				for i := range k {
					if buf[i] != nodetest.PatternByte(off+i) {
						r.err = fmt.Errorf("byte %d differs", off+i)
						return r
					}
				}
				off += k
				if err != nil {
					r.err = fmt.Errorf("after %d of %d bytes: %w", off, size, err)
					return r
				}
				next = next.Add(every)
				time.Sleep(time.Until(next))
			}
			if n, _ := io.Copy(io.Discard, resp.Body); n > 0 {
				r.err = fmt.Errorf("%d bytes more than %d", n, size)
			}
			return r
		}()
	}()
	return out
}

// handedBack is how many segments n's dataplane forwarded to their
// owner.
func handedBack(t *testing.T, n *vrrptest.Node) int {
	m, err := n.Metrics()
	require.NoError(t, err)
	re := regexp.MustCompile(`(?m)^ober_dataplane_packets_total\{action="tx",reason="handoff_forwarded"\} (\d+)$`)
	v := re.FindStringSubmatch(m)
	if v == nil {
		return 0
	}
	c, _ := strconv.Atoi(v[1])
	return c
}

// handoffCounters is every node's handoff verdicts, for failure messages.
func handoffCounters(t *testing.T, s *vrrptest.Site) string {
	re := regexp.MustCompile(`(?m)^ober_dataplane_packets_total\{action="\w+",reason="(handoff_\w+)"\} (\d+)$`)
	var out []string
	for _, n := range s.Nodes {
		m, err := n.Metrics()
		if err != nil {
			out = append(out, n.Name+": "+err.Error())
			continue
		}
		var cs []string
		for _, v := range re.FindAllStringSubmatch(m, -1) {
			if v[2] != "0" {
				cs = append(cs, v[1]+"="+v[2])
			}
		}
		out = append(out, n.Name+": "+strings.Join(cs, " "))
	}
	return strings.Join(out, "; ")
}

// holdsAlone waits until node holds vip alone in a sample taken after
// since, and returns when.
func holdsAlone(t *testing.T, s *vrrptest.Site, since time.Time, vip netip.Addr, node *vrrptest.Node, timeout time.Duration) time.Time {
	t.Helper()
	sp := startSampler(s)
	defer sp.Stop()
	deadline := time.Now().Add(timeout)
	for {
		if at, ok := sp.First(since, vip, func(h []string) bool { return len(h) == 1 && h[0] == node.Name }); ok {
			return at
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not hold %s alone %v after %v: %s", node.Name, vip, timeout, since, s.HoldersString())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The download of the planned-move cases: 24 MiB read over 30 s.
const (
	slowSize = 24 << 20
	slowTime = 30 * time.Second
)

// TestVRRPHandoff: with ha.vrrp.handoff, the planned moves of a VIP lose
// no request and no connection, under the lab demo's load (4 clients,
// each request on a new connection, 1 s each), with a 30 s download
// started through the node the VIP then leaves:
//   - the owner taking its VIP back from the backup, after its HAProxy
//     instances were killed and restarted (the requests that started on
//     the dead instances before the takeover are the only ones lost);
//   - a graceful stop of the holder, and its return when started again;
//   - `ober vip move` to another node, and back to the owner.
func TestVRRPHandoff(t *testing.T) {
	s := vrrptest.New(t, oberBin, vrrptest.Params{Handoff: true, Drain: 2 * slowTime})
	s.StartNodes()
	vip := vrrptest.VIPs[0]
	owner, backup, third := s.Nodes[0], s.Nodes[1], s.Nodes[2]

	t.Run("return_to_owner", func(t *testing.T) {
		load := startVRRPLoad(s, vip, 4)
		time.Sleep(500 * time.Millisecond)
		pids, err := owner.InstancePIDs()
		require.NoError(t, err)
		killed := time.Now()
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		took := holdsAlone(t, s, killed, vip, backup, 5*time.Second)
		dl := startSlowDownload(s, vip, slowSize, slowTime)
		back := holdsAlone(t, s, took, vip, owner, 30*time.Second)
		time.Sleep(time.Second)
		reqs := load.finish()
		r := <-dl
		before, after := lost(reqs, took)
		t.Logf("kill -9 of %s's instances: %s took %s %v after; %s had it back %v later; %d requests, %d lost before the takeover, %d after; download %v on %s, %d segments handed back by %s",
			owner.Name, backup.Name, vip, took.Sub(killed), owner.Name, back.Sub(took), len(reqs), len(before), len(after), r.took, r.node, handedBack(t, owner), owner.Name)
		require.NoError(t, r.err, "the download through %s across the return", backup.Name)
		require.Equal(t, backup.Name, r.node, "the download started on the temporary holder")
		require.Empty(t, after, "a request started after the takeover failed: %s (handoff: %s)", failed(after, took), handoffCounters(t, s))
		require.NotZero(t, handedBack(t, owner), "nothing handed back: the test shows nothing")
	})

	t.Run("graceful_stop", func(t *testing.T) {
		load := startVRRPLoad(s, vip, 4)
		dl := startSlowDownload(s, vip, slowSize, slowTime)
		time.Sleep(time.Second)
		stopped := time.Now()
		owner.Stop()
		took := holdsAlone(t, s, stopped, vip, backup, 5*time.Second)
		r := <-dl
		require.NoError(t, owner.Wait(2*slowTime))
		exited := time.Now()
		forwarded := handedBack(t, backup)
		owner.Start()
		back := holdsAlone(t, s, exited, vip, owner, 30*time.Second)
		time.Sleep(time.Second)
		reqs := load.finish()
		before, after := lost(reqs, took)
		t.Logf("graceful stop of %s: %s took %s %v after; %s exited %v after the stop; back on %s %v after its start; %d requests, %d lost; download %v on %s, %d segments handed back by %s",
			owner.Name, backup.Name, vip, took.Sub(stopped), owner.Name, exited.Sub(stopped), owner.Name, back.Sub(exited), len(reqs), len(before)+len(after), r.took, r.node, forwarded, backup.Name)
		require.NoError(t, r.err, "the download through %s across its graceful stop", owner.Name)
		require.Equal(t, owner.Name, r.node, "the download started on the stopping node")
		require.Empty(t, append(before, after...), "a request failed across the stop and the return (back at %+v): %s (handoff: %s)",
			back.Sub(took).Round(time.Millisecond), failed(append(before, after...), took), handoffCounters(t, s))
		require.NotZero(t, forwarded, "nothing handed back: the test shows nothing")
	})

	t.Run("vip_move", func(t *testing.T) {
		load := startVRRPLoad(s, vip, 4)
		dl := startSlowDownload(s, vip, slowSize, slowTime)
		time.Sleep(time.Second)
		// Asked on a node that is neither end of the move.
		out, code := oberIn(t, backup.NS, "--config", backup.ConfigPath, "vip", "move", vip.String(), "--to", third.Addr.String())
		require.Zero(t, code, out)
		moved := time.Now()
		require.Contains(t, out, "every node applied the move")
		took := holdsAlone(t, s, moved.Add(-s.P.PreemptDelay-time.Second), vip, third, 10*time.Second)
		st, err := third.Status()
		require.NoError(t, err)
		require.Equal(t, []netip.Addr{vip}, st.Daemon.VRRP.Handoff.Moved)
		for _, in := range st.Daemon.VRRP.Instances {
			if in.VIP == vip {
				require.Equal(t, vrrp.MoveOffset, in.Offset, "the target's priority offset")
			}
		}
		// A move to a stranger is refused, naming the field; nothing moves.
		out, code = oberIn(t, owner.NS, "--config", owner.ConfigPath, "vip", "move", vip.String(), "--to", "10.99.3.99")
		require.NotZero(t, code)
		require.Contains(t, out, `to: 10.99.3.99: not one of ha.vrrp.nodes`)

		time.Sleep(3 * time.Second)
		out, code = oberIn(t, owner.NS, "--config", owner.ConfigPath, "vip", "move", vip.String(), "--to", "owner")
		require.Zero(t, code, out)
		back := holdsAlone(t, s, took, vip, owner, 10*time.Second)
		r := <-dl
		time.Sleep(time.Second)
		reqs := load.finish()
		// Known open race (issue 23's notes): a request begun in the
		// 100 ms before the move back may be reset; logged, not failed.
		var racing []fetch
		reqs = slices.DeleteFunc(reqs, func(f fetch) bool {
			r := f.err != nil && f.start.Before(back) && !f.start.Before(back.Add(-100*time.Millisecond))
			if r {
				racing = append(racing, f)
			}
			return r
		})
		if len(racing) > 0 {
			t.Logf("in flight as the VIP moved back (open race): %s", failed(racing, took))
		}
		before, after := lost(reqs, took)
		t.Logf("vip move to %s: held %v after the command returned; moved back to %s (held %v after); %d requests, %d lost; download %v on %s, %d segments handed back by %s",
			third.Name, took.Sub(moved), owner.Name, back.Sub(took), len(reqs), len(before)+len(after), r.took, r.node, handedBack(t, third), third.Name)
		require.NoError(t, r.err, "the download through %s across both moves", owner.Name)
		require.Equal(t, owner.Name, r.node)
		require.Empty(t, append(before, after...), "a request failed across the moves: %s (handoff: %s)", failed(append(before, after...), took), handoffCounters(t, s))
		require.NotZero(t, handedBack(t, third), "nothing handed back: the test shows nothing")
		st, err = third.Status()
		require.NoError(t, err)
		require.Empty(t, st.Daemon.VRRP.Handoff.Moved, "the move ended")
	})
}

// TestVRRPRestartHandover: `ober restart` (SIGUSR2) of a VIP's holder
// with ha.vrrp.handoff: keepalived dies with the old ober, so a backup
// takes the VIP for the restart and hands the holder's connections back
// to its instances, which keep serving; the next ober takes the VIP back
// once the others know. No request of the load is lost, and a download
// through the holder lasts across both moves.
func TestVRRPRestartHandover(t *testing.T) {
	s := vrrptest.New(t, oberBin, vrrptest.Params{Handoff: true, Drain: 2 * slowTime})
	vip := vrrptest.VIPs[0]
	owner, backup := s.Nodes[0], s.Nodes[1]
	s.Nodes[1].Start()
	s.Nodes[2].Start()
	nc := nodetest.NewAPI(nodetest.NewDialer(t, owner.NS, 2))
	first := startOber(t, owner.NS, owner.ConfigPath)
	first.waitHealthy(nc)
	holdsAlone(t, s, time.Now(), vip, owner, 30*time.Second)

	const size, over = 8 << 20, 10 * time.Second
	load := startVRRPLoad(s, vip, 4)
	dl := startSlowDownload(s, vip, size, over)
	time.Sleep(time.Second)
	sent := time.Now()
	first.signal(syscall.SIGUSR2)
	took := holdsAlone(t, s, sent, vip, backup, 5*time.Second)
	require.Equal(t, api.ExitRestart, first.wait(10*time.Second), "exit status after SIGUSR2")
	second := startOber(t, owner.NS, owner.ConfigPath)
	second.waitHealthy(nc)
	back := holdsAlone(t, s, took, vip, owner, 30*time.Second)
	r := <-dl
	time.Sleep(time.Second)
	reqs := load.finish()
	before, after := lost(reqs, took)
	forwarded := handedBack(t, backup)
	t.Logf("restart of %s: %s held %s %v after SIGUSR2; %s back %v after that; %d requests, %d lost; download %v on %s, %d segments handed back by %s",
		owner.Name, backup.Name, vip, took.Sub(sent), owner.Name, back.Sub(took), len(reqs), len(before)+len(after), r.took, r.node, forwarded, backup.Name)
	require.NoError(t, r.err, "the download through %s across its restart", owner.Name)
	require.Equal(t, owner.Name, r.node)
	require.Empty(t, append(before, after...), "a request failed across the restart: %s (handoff: %s)", failed(append(before, after...), took), handoffCounters(t, s))
	require.NotZero(t, forwarded, "nothing handed back: the test shows nothing")
	require.Contains(t, second.log.String(), "taking over after a restart handover")
}
