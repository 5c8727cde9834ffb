package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/vrrptest"
	"github.com/ober-ingress/ober/lab/vipwatch"
)

// startSampler records, every 5 ms, which nodes hold which VIP, counting
// a node whose link is down as holding nothing (no frame reaches it).
func startSampler(s *vrrptest.Site) *vipwatch.Sampler {
	return vipwatch.Start(5*time.Millisecond, func() (map[netip.Addr][]string, error) {
		h := map[netip.Addr][]string{}
		for _, n := range s.Nodes {
			if !n.LinkIsUp() {
				continue
			}
			for _, v := range n.HeldVIPs() {
				h[v] = append(h[v], n.Name)
			}
		}
		return h, nil
	})
}

// waitFor polls cond every 5 ms up to timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Now()
}

// vrrpFetch GETs / on vip from the client and returns X-Served-By.
func vrrpFetch(ctx context.Context, s *vrrptest.Site, vip netip.Addr) (string, error) {
	tr := &http.Transport{DialContext: s.ClientDialer().DialContext, TLSClientConfig: s.TLSConfig(vip), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+vip.String()+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Header.Get("X-Served-By"), nil
}

// Three nodes, three VIPs: each VIP is on its owner only, pings and
// HTTPS reach it and are served by the owner; /status and /metrics say
// which node holds which VIP.
func TestVRRPSite(t *testing.T) {
	s := vrrptest.New(t, oberBin, vrrptest.Params{})
	// A VIP left on a node that does not own it (a crash's leftover) is
	// gone once ober starts there: StartNodes requires one holder.
	s.Nodes[2].NS.IP(t, "addr", "add", vrrptest.VIPs[0].String()+"/32", "dev", s.Nodes[2].Iface)
	s.StartNodes()
	ctx := context.Background()
	for i, v := range vrrptest.VIPs {
		netnstest.RequireTool(t, "ping", "iputils-ping")
		out, err := s.Client.Exec(ctx, "ping", "-c", "1", "-W", "1", v.String()).CombinedOutput()
		require.NoError(t, err, "ping %s: %s", v, out)
		by, err := vrrpFetch(ctx, s, v)
		require.NoError(t, err, "GET https://%s/", v)
		require.True(t, strings.HasPrefix(by, s.Nodes[i].Name+"/"), "%s served by %q, want its owner %s", v, by, s.Nodes[i].Name)
	}
	for i, n := range s.Nodes {
		st, err := n.Status()
		require.NoError(t, err)
		require.NotNil(t, st.Daemon.VRRP, "%s: no vrrp in /status", n.Name)
		require.Len(t, st.Daemon.VRRP.Instances, 3)
		for j, in := range st.Daemon.VRRP.Instances {
			want := "BACKUP"
			if i == j {
				want = "MASTER"
			}
			require.Equal(t, want, string(in.State), "%s: %s", n.Name, in.VIP)
			require.Equal(t, i == j, in.Held, "%s: %s held", n.Name, in.VIP)
			require.Equal(t, s.Nodes[j].Addr, in.Owner)
		}
		res := ober(t, n.NS, 0, "status", "--bpffs-root", n.Root)
		require.Regexp(t, `(?m)^`+regexp.QuoteMeta(vrrptest.VIPs[i].String())+`\s+`+fmt.Sprint(51+i)+`\s+200\s+`+
			regexp.QuoteMeta(n.Addr.String())+`\s+MASTER\s+yes`, res.stdout)
		m, err := n.Metrics()
		require.NoError(t, err)
		require.Contains(t, m, fmt.Sprintf(`ober_vrrp_master{owner="%s",vip="%s"} 1`, n.Addr, vrrptest.VIPs[i]))
	}
}

// vrrpCase is one failure of node1, the owner of the first VIP.
type vrrpCase struct {
	name string
	// measured is the median of the per-run failover medians over five
	// runs of this test (go test -count=1 -run TestVRRPFailover -v
	// ./e2e/, one after the other, on a 2-vCPU VM with keepalived
	// 2.2.7): the figure in README's VRRP failure table.
	measured time.Duration
	// target is the bound on the failover, if it set one.
	target time.Duration
	fail   func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node)
	// recover undoes the failure; the owner takes its VIP back after the
	// preempt delay.
	recover func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node)
	// noLoss: no request of the load may fail (a planned move);
	// noLossAfter: none that started after the takeover (the owner's
	// return is planned, whatever the failure).
	noLoss, noLossAfter bool
}

// bound is the asserted limit on the median failover: three times the
// measured median, rounded up to 5 ms, and never above the target.
func (c vrrpCase) bound() time.Duration {
	const step = 5 * time.Millisecond
	b := (3*c.measured + step - 1).Truncate(step)
	if c.target > 0 && c.target < b {
		return c.target
	}
	return b
}

// TestVRRPFailover times each failure of the first VIP's owner, three
// rounds each, from the failure to the VIP held by its first backup
// alone, and the owner taking it back after recovery and the preempt
// delay. No ARP request for a VIP is answered by two nodes but within
// 50 ms of a move (VRRP's own overlaps, counted and reported), and no two
// netlink samples in a row after each failover settles show two holders.
func TestVRRPFailover(t *testing.T) {
	s := vrrptest.New(t, oberBin, vrrptest.Params{PreemptDelay: 2 * time.Second, Handoff: true})
	s.StartNodes()
	vip := vrrptest.VIPs[0]
	cases := []vrrpCase{
		{name: "haproxy killed", measured: 134 * time.Millisecond, target: 300 * time.Millisecond,
			fail: func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node) {
				pids, err := n.InstancePIDs()
				require.NoError(t, err)
				for _, p := range pids {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			},
			recover:     func(*testing.T, *vrrptest.Site, *vrrptest.Node) {}, // the supervisor restarts them
			noLossAfter: true,
		},
		{name: "keepalived killed", measured: 108 * time.Millisecond,
			fail: func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node) {
				pid, err := n.KeepalivedPID()
				require.NoError(t, err)
				require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
			},
			recover:     func(*testing.T, *vrrptest.Site, *vrrptest.Node) {}, // ober restarts it
			noLossAfter: true,
		},
		{name: "ober killed", measured: 29 * time.Millisecond,
			fail:        func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node) { n.Kill() },
			recover:     func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node) { n.Start() },
			noLossAfter: true,
		},
		{name: "link down", measured: 258 * time.Millisecond, target: time.Second,
			fail:    func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node) { n.LinkDown() },
			recover: func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node) { n.LinkUp() },
		},
		{name: "graceful stop", measured: 32 * time.Millisecond, target: 300 * time.Millisecond,
			fail: func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node) { n.Stop() },
			recover: func(t *testing.T, s *vrrptest.Site, n *vrrptest.Node) {
				require.NoError(t, n.Wait(30*time.Second))
				n.Start()
			},
			noLoss: true,
		},
	}
	owner, backup := s.Nodes[0], s.Nodes[1]
	var report []string
	var totals watchTotals
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			var failover, back []time.Duration
			var lostBefore, lostAfter int
			for round := range 3 {
				w := startVIPWatch(t, s, vip)
				sp := w.nl
				// The first round carries the lab demo's load, to count what
				// each failure costs; the others time the failover on a
				// quiet machine, as the table in README reports it.
				workers := 0
				if round == 0 {
					workers = 4
				}
				load := startVRRPLoad(s, vip, workers)
				time.Sleep(300 * time.Millisecond)
				t0 := time.Now()
				c.fail(t, s, owner)
				at, ok := func() (time.Time, bool) {
					deadline := time.Now().Add(5 * time.Second)
					for time.Now().Before(deadline) {
						if at, ok := sp.First(t0, vip, func(h []string) bool { return len(h) == 1 && h[0] == backup.Name }); ok {
							return at, true
						}
						time.Sleep(10 * time.Millisecond)
					}
					return time.Time{}, false
				}()
				require.True(t, ok, "round %d: %s did not take %s within 5s: %s", round, backup.Name, vip, s.HoldersString())
				failover = append(failover, at.Sub(t0))
				// Served by the backup now.
				by, err := vrrpFetch(context.Background(), s, vip)
				require.NoError(t, err, "round %d: GET after the failover", round)
				require.True(t, strings.HasPrefix(by, backup.Name+"/"), "round %d: served by %q", round, by)

				t1 := time.Now()
				c.recover(t, s, owner)
				waitFor(t, owner.Name+" healthy again", 30*time.Second, func() bool {
					code, _, err := owner.Health()
					return err == nil && code == http.StatusOK
				})
				tb := waitFor(t, owner.Name+" takes "+vip.String()+" back", 30*time.Second, func() bool {
					_, ok := sp.First(t1, vip, func(h []string) bool { return len(h) == 1 && h[0] == owner.Name })
					return ok
				})
				back = append(back, tb.Sub(t1))
				time.Sleep(300 * time.Millisecond) // samples after the return settles
				w.stop()
				reqs := load.finish()
				before, after := lost(reqs, at)
				if round == 0 {
					lostBefore, lostAfter = len(before), len(after)
					t.Logf("round 0, under load: %d requests, %d lost before the takeover, %d after it", len(reqs), len(before), len(after))
				}
				if c.noLoss || c.noLossAfter {
					require.Empty(t, after, "round %d: requests failed after the takeover, at the owner's return: %s", round, failed(after, at))
				}
				if c.noLoss {
					require.Empty(t, before, "round %d: requests failed before the takeover: %s", round, failed(before, t0))
				}
				// The ARP view, for the whole round: no request answered
				// by two nodes. The netlink view, settled from 50 ms after
				// the failover on: no two samples in a row with two holders.
				checkRound(t, round, w, &totals, roundTimes{fail: t0, failover: at, recover: t1, back: tb}, vip, owner.Name, backup.Name, owner.Name)
			}
			t.Logf("%s: VIP on %s %v after the failure (median %v, bound %v); back on %s %v after recovery (median %v, preempt delay %v); under load (round 0) %d requests lost before the takeover and %d after it",
				c.name, backup.Name, failover, median(failover), c.bound(), owner.Name, back, median(back), s.P.PreemptDelay, lostBefore, lostAfter)
			report = append(report, fmt.Sprintf("%s: median %v, back %v, lost %d+%d", c.name, median(failover), median(back), lostBefore, lostAfter))
			require.Less(t, median(failover), c.bound())
			for _, b := range back {
				require.GreaterOrEqual(t, b, s.P.PreemptDelay, "the owner took its VIP back before the preempt delay")
			}
		})
	}
	t.Logf("failover medians: %s", strings.Join(report, "; "))
	t.Logf("VIP holders: %s", &totals)
}
