package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/ecmptest"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
	"github.com/ober-ingress/ober/internal/testsite/routertest"
)

// fetch is one request on a new connection from the client through the
// router to the VIP.
type fetch struct {
	start, end time.Time
	node       string // from X-Served-By "<node>/<instance>"
	err        error
}

// fetchVIP opens a TLS connection to vip:443 from the client namespace,
// sends one GET and reads the whole answer. Any HTTP answer from the
// backend counts (the S3 server refuses the unsigned request with 403);
// what fails is a connection that breaks or an answer HAProxy makes up.
func fetchVIP(ctx context.Context, s *ecmptest.Site, vip netip.Addr, path string) fetch {
	f := fetch{start: time.Now()}
	defer func() { f.end = time.Now() }()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := s.ClientDialer().DialContext(ctx, "tcp", netip.AddrPortFrom(vip, 443).String())
	if err != nil {
		f.err = err
		return f
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, s.TLSConfig())
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: s3.ecmp.test\r\nConnection: close\r\n\r\n", path); err != nil {
		f.err = err
		return f
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		f.err = err
		return f
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		f.err = err
		return f
	}
	if resp.StatusCode >= 500 {
		f.err = fmt.Errorf("status %s", resp.Status)
	}
	f.node, _, _ = strings.Cut(resp.Header.Get("X-Served-By"), "/")
	if f.node == "" && f.err == nil {
		f.err = fmt.Errorf("no X-Served-By in %s answer", resp.Status)
	}
	return f
}

// loadECMP runs workers making one request per new connection until stop
// is closed (bounded to a minute and 20000 requests).
func loadECMP(ctx context.Context, s *ecmptest.Site, workers int, stop <-chan struct{}) []fetch {
	return repeat(workers, 20000, stop, func(int, int) fetch { return fetchVIP(ctx, s, ecmptest.VIP4, "/") })
}

func byNode(fs []fetch) map[string]int {
	m := map[string]int{}
	for _, f := range fs {
		if f.err == nil {
			m[f.node]++
		}
	}
	return m
}

func failures(fs []fetch) []fetch {
	var out []fetch
	for _, f := range fs {
		if f.err != nil {
			out = append(out, f)
		}
	}
	return out
}

// killInstances kills every HAProxy instance of n at once, returning the
// moment of the first kill.
func killInstances(t *testing.T, n *ecmptest.Node) time.Time {
	t.Helper()
	pids, err := n.InstancePIDs()
	require.NoError(t, err)
	require.NotEmpty(t, pids)
	at := time.Now()
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	}
	return at
}

// without says whether the nexthop set lacks every address of n.
func without(n *ecmptest.Node) func([]netip.Addr) bool {
	return func(nh []netip.Addr) bool {
		return len(nh) > 0 && !slices.Contains(nh, n.Addr) && !slices.Contains(nh, n.Addr6)
	}
}

// waitGone waits until the router's route via n is gone (the first change
// at or after since) and returns when that was seen.
func waitGone(t *testing.T, w *routertest.Watch, since time.Time, n *ecmptest.Node, timeout time.Duration) (time.Time, []netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	gone, nh, err := w.Until(ctx, since, without(n))
	require.NoError(t, err, "route via %s still there after %v: %s", n.Name, timeout, w.History())
	return gone, nh
}

func nexthopsWith(n *ecmptest.Node, count int) func([]netip.Addr) bool {
	return func(nh []netip.Addr) bool {
		return len(nh) == count && (slices.Contains(nh, n.Addr) || slices.Contains(nh, n.Addr6))
	}
}

func metricValue(t *testing.T, text, series string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	require.NotNil(t, m, "metric %s missing", series)
	return m[1]
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestBGPECMP: three nodes announce the VIPs to a real router, which
// installs one multipath route per VIP; clients' connections spread over
// the three nodes; `ober test` checks the sessions without announcing.
func TestBGPECMP(t *testing.T) {
	for _, kind := range []routertest.Kind{routertest.BIRD, routertest.FRR} {
		t.Run(string(kind), func(t *testing.T) {
			s := ecmptest.New(t, oberBin, ecmptest.Params{Router: kind})

			// ober test before anything runs: a session opens, nothing is
			// announced.
			out, code := oberIn(t, s.Nodes[0].NS, "--config", s.Nodes[0].ConfigPath, "test", "--timeout", "20s")
			t.Logf("ober test:\n%s", out)
			require.Equal(t, 0, code, out)
			require.Regexp(t, `ok +bgp 10\.99\.1\.1 +AS65000 established in .*, router id 10\.99\.1\.1; offers .*multiprotocol`, out)
			require.Regexp(t, `ok +bgp fd99:1::1 +AS65000 established`, out)
			nh, err := s.R.Nexthops(ecmptest.Prefix4)
			require.NoError(t, err)
			require.Empty(t, nh, "ober test announced something")

			// A wrong AS number: the router refuses, ober test says so.
			bad := s.Config(s.Nodes[0])
			bad.HA.BGP.ASN = ecmptest.NodeASN + 1
			badPath := s.Nodes[0].Dir + "/bad.yaml"
			require.NoError(t, os.WriteFile(badPath, []byte(nodetest.YAML(t, bad)), 0o600))
			out, code = oberIn(t, s.Nodes[0].NS, "--config", badPath, "test", "--timeout", "5s")
			t.Logf("ober test, wrong AS:\n%s", out)
			require.Equal(t, 1, code, out)
			require.Contains(t, out, "FAIL bgp 10.99.1.1")
			require.Contains(t, out, "checks failed")

			s.StartNodes()
			nh4, _ := s.R.Nexthops(ecmptest.Prefix4)
			nh6, _ := s.R.Nexthops(ecmptest.Prefix6)
			t.Logf("router %s: %s via %v; %s via %v", kind, ecmptest.Prefix4, nh4, ecmptest.Prefix6, nh6)

			// The attributes arrive: the node-wide community, and the MED
			// of the IPv6 VIP's override.
			if kind == routertest.BIRD {
				out4, err := s.R.Birdc(context.Background(), "show", "route", "for", ecmptest.Prefix4.String(), "all")
				require.NoError(t, err)
				require.Contains(t, out4, "BGP.community: (65010,100)")
				out6, err := s.R.Birdc(context.Background(), "show", "route", "for", ecmptest.Prefix6.String(), "all")
				require.NoError(t, err)
				require.Contains(t, out6, "BGP.med: 50")
				require.Contains(t, out6, "BGP.community: (65010,100)")
			}

			var fs []fetch
			for range 90 {
				fs = append(fs, fetchVIP(context.Background(), s, ecmptest.VIP4, "/"))
			}
			for range 30 {
				fs = append(fs, fetchVIP(context.Background(), s, ecmptest.VIP6, "/"))
			}
			require.Empty(t, failures(fs))
			spread := byNode(fs)
			t.Logf("120 connections served by %v", spread)
			for _, n := range s.Nodes {
				require.NotZero(t, spread[n.Name], "%s got no connection: ECMP does not spread", n.Name)
			}
			t.Run("session tickets", func(t *testing.T) { resumeAcrossNodes(t, s) })

			m, err := s.Nodes[0].Metrics()
			require.NoError(t, err)
			require.Equal(t, "1", metricValue(t, m, `ober_bgp_session_up{asn="65000",peer="10.99.1.1"}`))
			require.Equal(t, "1", metricValue(t, m, `ober_bgp_session_up{asn="65000",peer="fd99:1::1"}`))
			require.Equal(t, "2", metricValue(t, m, `ober_bgp_announced_prefixes`))
			st, err := s.Nodes[0].Status()
			require.NoError(t, err)
			require.NotNil(t, st.Daemon.BGP)
			require.True(t, st.Daemon.BGP.Announcing)
			require.Equal(t, []string{"10.99.0.100/32", "fd99::100/128"}, st.Daemon.BGP.Announced)

			// ober status shows the speaker and its sessions.
			res := ober(t, s.Nodes[0].NS, 0, "--config", s.Nodes[0].ConfigPath, "--bpffs-root", s.Nodes[0].Root, "status")
			require.Regexp(t, `bgp +AS65010, router id 10\.99\.1\.11, announcing 10\.99\.0\.100/32, fd99::100/128`, res.stdout)
			require.Regexp(t, `(?m)^10\.99\.1\.1 +65000 +established since`, res.stdout)

			// ober test while the daemon runs reports its sessions.
			out, code = oberIn(t, s.Nodes[0].NS, "--config", s.Nodes[0].ConfigPath, "test")
			require.Equal(t, 0, code, out)
			require.Contains(t, out, "established in the running daemon")
		})
	}
}

// TestBGPInstancesKilled: every HAProxy instance of a node dies; the
// node's route leaves the router's table at once while new connections
// keep succeeding; the route comes back only after the hold-down.
func TestBGPInstancesKilled(t *testing.T) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{HoldDown: 2 * time.Second, Handoff: true})
	s.StartNodes()
	victim := s.Nodes[1]
	var total, detect, withdraw []time.Duration
	for round := range 3 {
		w := s.R.Watch(t, ecmptest.Prefix4)
		stop := make(chan struct{})
		var fs []fetch
		done := make(chan struct{})
		go func() { fs = loadECMP(context.Background(), s, 4, stop); close(done) }()
		time.Sleep(500 * time.Millisecond)
		killed := killInstances(t, victim)
		gone, nh := waitGone(t, w, killed, victim, 5*time.Second)

		// Hysteresis: the instances are back within a second, the route
		// only once they stayed healthy for the hold-down. The load goes
		// on through the return: the connections the routers then move
		// to the returning node are handed back (joining).
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		back, _, err := w.Until(ctx, gone, nexthopsWith(victim, 3))
		cancel()
		require.NoError(t, err, "route via %s did not come back", victim.Name)
		time.Sleep(time.Second)
		close(stop)
		<-done
		t.Logf("round %d: route back %v after the withdraw (hold-down 2s)", round, back.Sub(gone))
		require.GreaterOrEqual(t, back.Sub(gone), 2*time.Second, "re-announced before the hold-down")

		st, err := victim.Status()
		require.NoError(t, err)
		wd := *st.Daemon.BGP.LastWithdraw
		require.Contains(t, st.Daemon.BGP.LastWithdrawReason, "no healthy HAProxy instance")
		total, detect, withdraw = append(total, gone.Sub(killed)), append(detect, wd.Sub(killed)), append(withdraw, gone.Sub(wd))
		t.Logf("round %d: route via %s gone %v after the kill (exit seen and withdrawn after %v, at the router %v later); now via %v",
			round, victim.Name, gone.Sub(killed), wd.Sub(killed), gone.Sub(wd), nh)

		// Connections that began before the kernel had finished the
		// instances could still be queued to them (and some were reset,
		// seen under load), and so could those the router sent the node
		// until the withdraw reached its FIB; those that began once the
		// route was gone must all work, through the withdraw and the
		// return.
		var window, windowFailed, after int
		for _, f := range fs {
			switch {
			case f.start.Before(killed):
				if f.err != nil {
					t.Logf("  in flight at the kill, failed: %v", f.err)
				}
			case f.start.Before(gone):
				window++
				if f.err != nil {
					windowFailed++
					t.Logf("  new connection at +%v, before the route was gone (+%v), failed: %v", f.start.Sub(killed), gone.Sub(killed), f.err)
				}
			case f.err != nil && !f.start.Before(back.Add(-100*time.Millisecond)) && f.start.Before(back):
				// In flight as the route came back: ECMP may rehash it
				// to the returning node, which has no state for it
				// without ha.bgp.handoff (seen once in CI, 4 ms before
				// the return).
				t.Logf("  in flight at the return (+%v, back at +%v), failed: %v", f.start.Sub(killed), back.Sub(killed), f.err)
			default:
				after++
				require.NoError(t, f.err, "new connection at +%v failed (route gone at +%v, back at +%v)", f.start.Sub(killed), gone.Sub(killed), back.Sub(killed))
			}
		}
		t.Logf("round %d: %d requests; %d began between the kill and the route leaving the router (%d failed), %d after (0 failed); served by %v",
			round, len(fs), window, windowFailed, after, byNode(fs))
		require.NotZero(t, after)
	}
	t.Logf("HAProxy killed -> route gone at the router: %v (median %v); exit seen: %v; withdraw to router: %v (median %v)",
		total, median(total), detect, withdraw, median(withdraw))
	// Bounds: about 3x the median of five runs' medians (README's
	// failure table), and never under 10ms, below which this VM's
	// scheduling noise is the measurement: route gone 37ms (26-56),
	// withdraw to router 1.5ms (1.0-1.8).
	require.Less(t, median(withdraw), 10*time.Millisecond, "from the moment the death is known to the router's FIB")
	require.Less(t, median(total), 120*time.Millisecond, "from the kill to the router's FIB")
	st, err := victim.Status()
	require.NoError(t, err)
	require.Equal(t, uint64(3), st.Daemon.BGP.Withdraws)
}

// TestBGPPassword: with TCP MD5 on both sides the sessions come up; a
// node with the wrong key gets no session (the router drops its
// unsigned SYNs), and ober test says so.
func TestBGPPassword(t *testing.T) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{Password: "rack7-md5-key"})
	n := s.Nodes[0]
	bad := s.Config(n)
	for i := range bad.HA.BGP.Peers {
		bad.HA.BGP.Peers[i].Password = "wrong-key"
	}
	badPath := n.Dir + "/bad.yaml"
	require.NoError(t, os.WriteFile(badPath, []byte(nodetest.YAML(t, bad)), 0o600))
	out, code := oberIn(t, n.NS, "--config", badPath, "test", "--timeout", "4s")
	t.Logf("ober test, wrong key:\n%s", out)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "FAIL bgp 10.99.1.1")

	s.StartNodes()
	sess, err := s.R.Sessions(context.Background())
	require.NoError(t, err)
	require.Equal(t, "Established", sess[n.Addr].State)
}

// TestBGPReloadPeers: a reload that drops the IPv6 peer closes that
// session (the IPv6 VIP leaves the router's table via this node) and
// leaves the IPv4 one alone.
func TestBGPReloadPeers(t *testing.T) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{})
	s.StartNodes()
	n := s.Nodes[0]
	cfg := s.Config(n)
	peers := len(cfg.HA.BGP.Peers)
	cfg.HA.BGP.Peers = slices.DeleteFunc(cfg.HA.BGP.Peers, func(p config.BGPPeer) bool { return p.Address.Addr == ecmptest.RouterAddr6 })
	require.Len(t, cfg.HA.BGP.Peers, peers-1)
	n.WriteConfig(cfg)
	w6 := s.R.Watch(t, ecmptest.Prefix6)
	w4 := s.R.Watch(t, ecmptest.Prefix4)
	reloaded := time.Now()
	n.Reload()
	gone, _ := waitGone(t, w6, reloaded, n, 10*time.Second)
	t.Logf("IPv6 path via %s gone %v after the reload", n.Name, gone.Sub(reloaded))
	nh4, err := s.R.Nexthops(ecmptest.Prefix4)
	require.NoError(t, err)
	require.Contains(t, nh4, n.Addr, "the IPv4 session was touched")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, _, err = w4.Until(ctx, reloaded, without(n))
	cancel()
	require.Error(t, err, "the IPv4 path via %s went away during the reload: %s", n.Name, w4.History())
	st, err := n.Status()
	require.NoError(t, err)
	require.Len(t, st.Daemon.BGP.Peers, 1)
	require.Equal(t, uint64(2), st.Daemon.Config.Generation)
}

// TestBGPAnnouncePolicy: with announce_when.min_instances 2, losing one
// of two instances already withdraws; the route returns after the
// hold-down once the instance is back.
func TestBGPAnnouncePolicy(t *testing.T) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{MinInstances: 2, HoldDown: time.Second})
	s.StartNodes()
	victim := s.Nodes[2]
	pids, err := victim.InstancePIDs()
	require.NoError(t, err)
	w := s.R.Watch(t, ecmptest.Prefix4)
	killed := time.Now()
	require.NoError(t, syscall.Kill(pids[0], syscall.SIGKILL))
	gone, _ := waitGone(t, w, killed, victim, 5*time.Second)
	st, err := victim.Status()
	require.NoError(t, err)
	require.Contains(t, st.Daemon.BGP.LastWithdrawReason, "fewer than the 2 required")
	t.Logf("one of two instances killed: route gone %v later (%s)", gone.Sub(killed), st.Daemon.BGP.LastWithdrawReason)
	// Five runs: median 14ms (10-30); about 3x.
	require.Less(t, gone.Sub(killed), 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	back, _, err := w.Until(ctx, gone, nexthopsWith(victim, 3))
	cancel()
	require.NoError(t, err)
	require.GreaterOrEqual(t, back.Sub(gone), time.Second)
	t.Logf("back %v after the withdraw (hold-down 1s)", back.Sub(gone))
}

// TestBGPOberKilled: ober itself dies (kill -9). Its instances keep
// serving, but its BGP sessions close with the process, so the routers
// drop its routes at once instead of keeping them until a hold timer.
func TestBGPOberKilled(t *testing.T) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{HoldTime: 9 * time.Second})
	s.StartNodes()
	victim := s.Nodes[1]
	w := s.R.Watch(t, ecmptest.Prefix4)
	killed := time.Now()
	victim.Kill()
	gone, _ := waitGone(t, w, killed, victim, 15*time.Second)
	t.Logf("ober killed: route via %s gone %v later (hold time 9s)", victim.Name, gone.Sub(killed))
	// Five runs: median 5ms (3-10); 3x, but not under 10ms of noise, and
	// far from any timer.
	require.Less(t, gone.Sub(killed), 25*time.Millisecond, "the route stayed until something else than the session's end")

	// A new ober takes the node back (its instances were left running).
	victim.Start()
	s.WaitPaths(3, 30*time.Second)
}

// TestBGPLinkCut: the node's cable is cut on its side, behind the switch;
// with BFD at 100ms x 3 the router drops the path in under 500ms, without
// BFD at the hold time.
func TestBGPLinkCut(t *testing.T) {
	for _, bfd := range []bool{true, false} {
		t.Run(fmt.Sprintf("bfd=%v", bfd), func(t *testing.T) {
			s := ecmptest.New(t, oberBin, ecmptest.Params{BFD: bfd, HoldTime: 3 * time.Second})
			s.StartNodes()
			var took []time.Duration
			rounds := 3
			if !bfd {
				rounds = 1
			}
			// Each round cuts another node: GoBGP 4.8 resets a session
			// whose BFD expires while still coming up, so after a link
			// flap a node can take tens of seconds to return (README,
			// failure table); the return is logged, not required.
			for round := range rounds {
				victim := s.Nodes[2-round]
				if bfd {
					require.Eventually(t, func() bool {
						sess, err := s.R.Sessions(context.Background())
						return err == nil && sess[victim.Addr].BFD == "Up" && sess[victim.Addr].State == "Established"
					}, 30*time.Second, 50*time.Millisecond, "BFD session with %s not up", victim.Name)
				}
				w := s.R.Watch(t, ecmptest.Prefix4)
				cut := time.Now()
				victim.LinkDown()
				gone, _ := waitGone(t, w, cut, victim, 15*time.Second)
				took = append(took, gone.Sub(cut))
				t.Logf("round %d: path via %s gone %v after the link went down", round, victim.Name, gone.Sub(cut))
				victim.LinkUp()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				back, _, err := w.Until(ctx, gone, func(nh []netip.Addr) bool { return slices.Contains(nh, victim.Addr) })
				cancel()
				if err == nil {
					t.Logf("round %d: path via %s back %v after the link came up", round, victim.Name, back.Sub(gone))
				} else {
					t.Logf("round %d: path via %s not back within 10s of the link coming up", round, victim.Name)
				}
			}
			if bfd {
				t.Logf("link cut with BFD 100ms x 3: %v (median %v)", took, median(took))
				require.Less(t, median(took), 500*time.Millisecond)
			} else {
				t.Logf("link cut without BFD (hold time 3s): %v", took)
				// The hold time runs from the last keepalive (every
				// second, later on a busy machine), not from the cut: one
				// fresh clone's CI run saw 1.8 s.
				require.Greater(t, took[0], time.Second, "gone long before the hold time: something else noticed")
				require.Less(t, took[0], 5*time.Second)
			}
		})
	}
}

// TestBGPGracefulStop: `ober stop` (SIGTERM) tells the other nodes it
// drains, withdraws, then drains; connections under way finish (their
// packets, moved by the routers, are handed back) and new ones land on
// the other nodes.
func TestBGPGracefulStop(t *testing.T) {
	for _, handoff := range []bool{true, false} {
		t.Run(fmt.Sprintf("handoff=%v", handoff), func(t *testing.T) { gracefulStop(t, handoff) })
	}
}

// gracefulStop stops the middle node under load with slow downloads in
// flight. With handoff every request succeeds; without it the stopping
// node's connections are reset when the routers move them, which is what
// handoff is for (the failures are counted and required, so this half
// shows the other half means something).
func gracefulStop(t *testing.T, handoff bool) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{Drain: 5 * time.Second, Handoff: handoff})
	s.StartNodes()
	// The router hashes flows over its next hops in order (Linux's
	// hash-threshold ECMP): taking out the first one moves its flows
	// and some of the second node's, which must find their way back
	// to nodes before them in handoff order too.
	victim := s.Nodes[0]
	w := s.R.Watch(t, ecmptest.Prefix4)
	stop := make(chan struct{})
	var fs []fetch
	done := make(chan struct{})
	go func() { fs = loadECMP(context.Background(), s, 6, stop); close(done) }()

	// Slow downloads in flight when the node stops: each takes about
	// 2s, well within the drain time.
	slow := make(chan fetch, 24)
	var slowWG sync.WaitGroup
	for range 18 {
		slowWG.Go(func() { slow <- fetchVIP(context.Background(), s, ecmptest.VIP4, ecmptest.SlowPath) })
	}
	time.Sleep(700 * time.Millisecond)
	stopped := time.Now()
	victim.Stop()
	gone, _ := waitGone(t, w, stopped, victim, 5*time.Second)
	t.Logf("graceful stop: route via %s gone %v after SIGTERM", victim.Name, gone.Sub(stopped))
	// Five runs: median 7ms (3-10) with handoff, 5ms (4-8) without.
	require.Less(t, gone.Sub(stopped), 25*time.Millisecond, "from SIGTERM to the router's FIB")
	require.NoError(t, victim.Wait(30*time.Second))
	t.Logf("ober on %s exited %v after SIGTERM", victim.Name, time.Since(stopped))
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-done
	slowWG.Wait()
	close(slow)
	forwarded := 0
	for _, n := range s.Nodes {
		if n == victim {
			continue
		}
		m, err := n.Metrics()
		require.NoError(t, err)
		re := regexp.MustCompile(`(?m)^ober_dataplane_packets_total\{action="tx",reason="handoff_forwarded"\} (\d+)$`)
		if v := re.FindStringSubmatch(m); v != nil {
			c, _ := strconv.Atoi(v[1])
			forwarded += c
			t.Logf("%s handed %d segments back to %s", n.Name, c, victim.Name)
		}
	}
	var slowNodes []string
	slowFailed := 0
	for f := range slow {
		if f.err != nil {
			slowFailed++
			continue
		}
		slowNodes = append(slowNodes, f.node)
	}
	fails := failures(fs)
	t.Logf("%d requests during the stop, %d failed, served by %v; slow downloads: %d failed, the others served by %v",
		len(fs), len(fails), byNode(fs), slowFailed, slowNodes)
	if !handoff {
		require.NotZero(t, slowFailed+len(fails), "without handoff the stopping node's moved connections should break")
		return
	}
	for _, f := range fails {
		t.Logf("  failed at %+v: %v", f.start.Sub(stopped), f.err)
	}
	require.Empty(t, fails)
	require.Zero(t, slowFailed, "a long request in flight during the stop failed")
	require.Contains(t, slowNodes, victim.Name, "no slow download was on the stopping node; the test shows nothing")
	require.NotZero(t, forwarded, "no segment was handed back")
}

// TestBGPBackendOutage: with every backend down, no node can do better
// than another, so the nodes keep announcing and HAProxy answers 503: the
// clients get an answer and the routes stay. A node that alone loses its
// backends withdraws, after the others' reports have caught up, while
// they keep serving; it comes back when its backends do.
func TestBGPBackendOutage(t *testing.T) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{Handoff: true, HoldDown: time.Second})
	s.StartNodes()
	w := s.R.Watch(t, ecmptest.Prefix4)
	outage := func(n *ecmptest.Node) string {
		m, err := n.Metrics()
		require.NoError(t, err)
		return metricValue(t, m, "ober_bgp_backend_outage")
	}

	stopped := time.Now()
	s.StopBackend()
	for _, n := range s.Nodes {
		require.Eventually(t, func() bool { return outage(n) == "1" }, 10*time.Second, 20*time.Millisecond,
			"%s does not report the cluster-wide outage", n.Name)
	}
	t.Logf("every node in outage mode %v after the backend stopped", time.Since(stopped).Round(time.Millisecond))
	for i := range 12 {
		f := fetchVIP(context.Background(), s, ecmptest.VIP4, "/")
		require.Error(t, f.err, "request %d during the outage", i)
		require.Contains(t, f.err.Error(), "503", "request %d: an answer, 503, not silence", i)
	}
	// The route kept its three next hops all along (and a second more).
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	at, nh, err := w.Until(ctx, stopped, func(nh []netip.Addr) bool { return len(nh) < 3 })
	cancel()
	require.Error(t, err, "the route lost a next hop at %v: %v (%s)", at.Sub(stopped), nh, w.History())
	st, err := s.Nodes[1].Status()
	require.NoError(t, err)
	require.True(t, st.Daemon.BGP.BackendOutage)
	require.Len(t, st.Daemon.BGP.NodeReports, 2, "the node hears both others")

	s.StartBackend()
	for _, n := range s.Nodes {
		require.Eventually(t, func() bool { return outage(n) == "0" }, 10*time.Second, 20*time.Millisecond)
	}
	// The outage flag and the instances' server state follow the same
	// verdict separately: a request in the moment between them got the
	// 503 of the outage once.
	require.Eventually(t, func() bool { return fetchVIP(context.Background(), s, ecmptest.VIP4, "/").err == nil },
		5*time.Second, 50*time.Millisecond, "the backend serves again")

	// One node's path to the backend cut: it alone withdraws.
	victim := s.Nodes[0]
	blackhole := []string{"route", "add", "blackhole", ecmptest.BackendAddr.Addr().String() + "/32"}
	cut := time.Now()
	victim.NS.IP(t, blackhole...)
	gone, now := waitGone(t, w, cut, victim, 10*time.Second)
	t.Logf("%s lost its backend: route gone %v later, via %v", victim.Name, gone.Sub(cut), now)
	require.Len(t, now, 2, "only the node without backends left")
	var fs []fetch
	for range 30 {
		fs = append(fs, fetchVIP(context.Background(), s, ecmptest.VIP4, "/"))
	}
	require.Empty(t, failures(fs), "the other nodes keep serving")
	require.NotContains(t, byNode(fs), victim.Name)
	require.Equal(t, "0", outage(victim), "one node without backends is no outage")

	victim.NS.IP(t, append([]string{"route", "del"}, blackhole[2:]...)...)
	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	back, _, err := w.Until(ctx, gone, nexthopsWith(victim, 3))
	cancel()
	require.NoError(t, err, "%s did not come back: %s", victim.Name, w.History())
	t.Logf("%s back %v after its backend path returned", victim.Name, back.Sub(gone))
}

// mtuClient hands out client addresses no node has sent to yet: a node
// caches a path MTU per destination, so one download's ICMP error would
// teach it the next one's.
type mtuClient struct {
	s    *ecmptest.Site
	next int
}

func (m *mtuClient) addr(v6 bool) netip.Addr {
	m.next++
	if m.next > 150 {
		panic("mtuClient: out of addresses")
	}
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd99:2::%x", 0x100+m.next))
	}
	return netip.AddrFrom4([4]byte{10, 99, 2, byte(100 + m.next)})
}

// download fetches n bytes of ecmptest.BytesPath from vip over one
// connection from a fresh client address, within timeout, and checks
// them byte for byte. It returns the node that served it and how long
// the body took.
func (m *mtuClient) download(t *testing.T, vip netip.Addr, n int, timeout time.Duration) (node string, took time.Duration, err error) {
	t.Helper()
	src := m.addr(vip.Is6())
	plen := "/24"
	if src.Is6() {
		plen = "/64"
	}
	m.s.Client.IP(t, "addr", "add", src.String()+plen, "dev", "c-r", "nodad")
	raw, err := m.s.ClientDialer().DialFrom(context.Background(), "tcp", netip.AddrPortFrom(vip, 443).String(),
		net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		return "", 0, err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(timeout))
	c := tls.Client(raw, m.s.TLSConfig())
	if _, err := fmt.Fprintf(c, "GET %s?n=%d HTTP/1.1\r\nHost: s3.ecmp.test\r\nConnection: close\r\n\r\n", ecmptest.BytesPath, n); err != nil {
		return "", 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", 0, fmt.Errorf("response: %w", err)
	}
	node, _, _ = strings.Cut(resp.Header.Get("X-Served-By"), "/")
	start := time.Now()
	got, err := io.ReadAll(resp.Body)
	took = time.Since(start)
	if err != nil {
		return node, took, fmt.Errorf("%d of %d bytes from %s to %s in %v: %w", len(got), n, node, src, took, err)
	}
	if !bytes.Equal(got, ecmptest.Bytes(n)) {
		return node, took, fmt.Errorf("%d bytes from %s differ from what was sent", len(got), node)
	}
	return node, took, nil
}

// TestBGPPathMTU: a hop of 1400 bytes between the client and the nodes;
// the router answers bigger packets with "fragmentation needed" (ICMPv6
// "packet too big"), and hashes each of them to a node as its own flow,
// apart from the connection it is about. A connection whose node never
// hears of the path's MTU stalls. With the MSS clamp (ha.bgp.path_mtu,
// 1400 by default) a 64 MiB download completes through each node, over
// IPv4 and IPv6; without it, the same downloads stall wherever the ICMP
// went to another node. Every download comes from a client address the
// nodes have not sent to, as a new client's would.
func TestBGPPathMTU(t *testing.T) {
	const size = 64 << 20
	t.Run("clamped", func(t *testing.T) {
		s := ecmptest.New(t, oberBin, ecmptest.Params{ClientPathMTU: 1400})
		s.StartNodes()
		mc := &mtuClient{s: s}
		for _, vip := range []netip.Addr{ecmptest.VIP4, ecmptest.VIP6} {
			done := map[string]bool{}
			for try := 0; len(done) < len(s.Nodes); try++ {
				require.Less(t, try, 40, "40 downloads of %s did not land on every node: %v", vip, done)
				node, took, err := mc.download(t, vip, size, 60*time.Second)
				require.NoError(t, err, "64 MiB from %s through %s", vip, node)
				if !done[node] {
					t.Logf("64 MiB from %s through %s in %v (%.0f MiB/s)", vip, node, took.Round(time.Millisecond), float64(size>>20)/took.Seconds())
				}
				done[node] = true
			}
		}
	})
	t.Run("unclamped", func(t *testing.T) {
		off := 0
		s := ecmptest.New(t, oberBin, ecmptest.Params{ClientPathMTU: 1400, PathMTU: &off})
		s.StartNodes()
		mc := &mtuClient{s: s}
		stalled := 0
		for range 6 {
			node, _, err := mc.download(t, ecmptest.VIP4, size, 2*time.Second)
			if err != nil {
				stalled++
				t.Logf("through %s: %v", node, err)
			}
		}
		// Each download's ICMP reaches its node with a chance of 1 in 3:
		// all six completing by luck is a chance of 1 in 729.
		require.NotZero(t, stalled, "no download stalled without the clamp: the test shows nothing")
	})
}

// TestBGPRoutersWhitelist: a router that is not on the routers whitelist
// cannot even open the TCP connection of a BGP session (XDP drops its
// SYN); once `ober sync --routers` admits it, the node answers.
func TestBGPRoutersWhitelist(t *testing.T) {
	s := ecmptest.New(t, oberBin, ecmptest.Params{})
	s.StartNodes()
	n := s.Nodes[0]
	dial := func() error {
		var err error
		doErr := s.Rogue.Do(func() error {
			d := net.Dialer{Timeout: 2 * time.Second}
			c, e := d.Dial("tcp4", netip.AddrPortFrom(n.Addr, 179).String())
			if e == nil {
				c.Close()
			}
			err = e
			return nil
		})
		require.NoError(t, doErr)
		return err
	}
	before, err := n.Metrics()
	require.NoError(t, err)
	err = dial()
	require.Error(t, err, "the rogue router reached the BGP port")
	require.ErrorContains(t, err, "timeout", "dropped silently, not refused")
	after, err := n.Metrics()
	require.NoError(t, err)
	// A verdict that never happened has no series yet.
	drops := func(m string) string {
		re := regexp.MustCompile(`(?m)^ober_dataplane_packets_total\{action="drop",reason="whitelist_drop"\} (\S+)$`)
		if v := re.FindStringSubmatch(m); v != nil {
			return v[1]
		}
		return "0"
	}
	require.NotEqual(t, drops(before), drops(after), "the drop was not XDP's")

	// The configured router still has its session.
	sess, err := s.R.Sessions(context.Background())
	require.NoError(t, err)
	require.Equal(t, "Established", sess[n.Addr].State)

	out, code := oberIn(t, n.NS, "--bpffs-root", n.Root, "sync", "--routers", "10.99.1.1,fd99:1::1,10.99.1.30")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "+ 10.99.1.30/32")
	require.NoError(t, dial(), "admitted by ober sync --routers, yet not answered")
}

// oberIn runs the ober binary in a namespace and returns its combined
// output and exit code.
func oberIn(t *testing.T, ns *netnstest.NS, args ...string) (string, int) {
	t.Helper()
	res, err := runOber(context.Background(), ns, args...)
	require.NoError(t, err)
	return res.stdout + res.stderr, res.code
}
