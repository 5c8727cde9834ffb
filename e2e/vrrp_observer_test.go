package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/vrrptest"
	"github.com/ober-ingress/ober/lab/vipwatch"
)

// vipWatch is the two views of one round: the netlink sampler, which
// times the failover, and the ARP observer, which is the atomic one.
type vipWatch struct {
	nl  *vipwatch.Sampler
	arp *vipwatch.ARPObserver
}

// startVIPWatch starts both views and returns once the ARP observer has
// seen vip answered, so that the round's ARP record starts before the
// failure.
func startVIPWatch(t *testing.T, s *vrrptest.Site, vip netip.Addr) *vipWatch {
	t.Helper()
	w := &vipWatch{nl: startSampler(s), arp: s.WatchARP()}
	waitFor(t, "an ARP answer for "+vip.String(), 2*time.Second, func() bool {
		return len(answerSequence(w.arp.Probes(), vip)) > 0
	})
	return w
}

func (w *vipWatch) stop() {
	w.nl.Stop()
	w.arp.Stop()
}

// watchTotals adds up the rounds of a test for its last log line.
type watchTotals struct {
	arp      vipwatch.ARPSummary
	passing  int
	overlaps int // ARP doubles during a move of the VIP
}

func (w *watchTotals) String() string {
	return fmt.Sprintf("ARP: %d requests, %d answered, %d double answers (%d of them during a move of the VIP), %d late answers; netlink: %d single-sample doubles (passing)",
		w.arp.Sent, w.arp.Answered, len(w.arp.Doubles), w.overlaps, w.arp.Late, w.passing)
}

// transitionWindow is how near a VIP's move an ARP double counts as the
// move itself rather than a double holder (the sampled check before the
// ARP observer skipped the first 50 ms after a takeover too).
const transitionWindow = 50 * time.Millisecond

// inTransition reports whether an ARP double falls within
// transitionWindow of the failover or of the owner's return (netlink's
// view of both). VRRP makes two holders there for a moment: at the
// owner's return the owner sets the VIP as it becomes master and the old
// master drops it when that advert reaches it; at a failover two backups
// whose master-down timers fire within one advert's flight both become
// master until the lower one hears the higher. Anything later is a
// double holder.
func inTransition(d vipwatch.ARPDouble, rt roundTimes) bool {
	return d.At.Sub(rt.failover).Abs() <= transitionWindow || d.At.Sub(rt.back).Abs() <= transitionWindow
}

// doubleRun counts the requests in a row for d's VIP, around d, that two
// nodes answered: how long a double lasted, in request intervals.
func doubleRun(probes []vipwatch.Probe, d vipwatch.ARPDouble) int {
	var mine []vipwatch.Probe
	at := -1
	for _, p := range probes {
		if p.VIP == d.VIP {
			if p.At.Equal(d.At) {
				at = len(mine)
			}
			mine = append(mine, p)
		}
	}
	if at < 0 {
		return 1
	}
	n := 1
	for i := at - 1; i >= 0 && len(mine[i].Answers) > 1; i-- {
		n++
	}
	for i := at + 1; i < len(mine) && len(mine[i].Answers) > 1; i++ {
		n++
	}
	return n
}

// roundTimes are the moments of one round: the failure, the failover
// (the backup alone holds the VIP, netlink's view), the start of the
// recovery and the owner holding the VIP again.
type roundTimes struct {
	fail, failover, recover, back time.Time
}

// phase places t in the round, for failure messages.
func (r roundTimes) phase(t time.Time) string {
	if t.Before(r.recover) {
		return fmt.Sprintf("%v after the failure, failover at %v", t.Sub(r.fail).Round(time.Microsecond), r.failover.Sub(r.fail).Round(time.Microsecond))
	}
	return fmt.Sprintf("%v after the recovery began, owner back at %v", t.Sub(r.recover).Round(time.Microsecond), r.back.Sub(r.recover).Round(time.Microsecond))
}

// checkRound fails the test on a double holder the ARP observer saw (two
// hosts answering one request) away from the VIP's moves; those during a
// move (inTransition) are counted and reported. It fails on a netlink
// double seen in two samples in a row from 50 ms after the failover on. An ARP double does
// not end the round, so that the round's timings are still reported.
// Single netlink samples with two holders are logged with what the ARP
// requests of the same moments saw, and counted. vip must have been
// answered by each of by, in that order: an observer that saw nothing
// would prove nothing.
func checkRound(t *testing.T, round int, w *vipWatch, totals *watchTotals, rt roundTimes, vip netip.Addr, by ...string) {
	t.Helper()
	require.NoError(t, w.arp.Err(), "round %d: ARP observer", round)
	sum := w.arp.Summary()
	probes := w.arp.Probes()
	for _, d := range sum.Doubles {
		if inTransition(d, rt) {
			t.Logf("round %d: two holders during the VIP's move (%d request(s) in a row): %s, %s", round, doubleRun(probes, d), d, rt.phase(d.At))
			totals.overlaps++
			continue
		}
		t.Errorf("round %d: two nodes answered ARP for %s: %s, %s", round, d.VIP, d, rt.phase(d.At))
	}
	require.Zero(t, sum.Stray, "round %d: ARP answers to no request", round)
	seq := answerSequence(probes, vip)
	require.True(t, isSubsequence(by, seq), "round %d: ARP saw %s answered by %v, want %v in that order", round, vip, seq, by)

	settled := rt.failover.Add(50 * time.Millisecond)
	doubles, _ := w.nl.Doubles(settled)
	require.Empty(t, doubles, "round %d: two holders in two netlink samples in a row", round)
	passing := w.nl.Passing(settled)
	for _, p := range passing {
		t.Logf("round %d: netlink sample: %s, %s; ARP within 10 ms: %s", round, p, rt.phase(p.At), arpAround(probes, p.VIP, p.At, 10*time.Millisecond))
	}
	t.Logf("round %d: %s; netlink: %d samples, %d single-sample doubles (passing)", round, sum, w.nl.Count(), len(passing))
	totals.arp.Sent += sum.Sent
	totals.arp.Answered += sum.Answered
	totals.arp.Late += sum.Late
	totals.arp.Doubles = append(totals.arp.Doubles, sum.Doubles...)
	totals.passing += len(passing)
}

// answerSequence lists who answered the requests for vip, collapsing
// repeats: [node1 node2 node1] for a failover and a return.
func answerSequence(probes []vipwatch.Probe, vip netip.Addr) []string {
	var seq []string
	for _, p := range probes {
		if p.VIP != vip || len(p.Answers) != 1 {
			continue
		}
		if who := p.Answers[0].Who(); len(seq) == 0 || seq[len(seq)-1] != who {
			seq = append(seq, who)
		}
	}
	return seq
}

// isSubsequence reports whether want appears in seq in order.
func isSubsequence(want, seq []string) bool {
	for _, s := range seq {
		if len(want) > 0 && want[0] == s {
			want = want[1:]
		}
	}
	return len(want) == 0
}

// arpAround says who answered the requests for vip sent within d of at.
func arpAround(probes []vipwatch.Probe, vip netip.Addr, at time.Time, d time.Duration) string {
	count := map[string]int{}
	for _, p := range probes {
		if p.VIP != vip || p.At.Before(at.Add(-d)) || p.At.After(at.Add(d)) {
			continue
		}
		var who []string
		for _, a := range p.Answers {
			who = append(who, a.Who())
		}
		k := strings.Join(who, "+")
		if k == "" {
			k = "nobody"
		}
		count[k]++
	}
	var parts []string
	for k, n := range count {
		parts = append(parts, fmt.Sprintf("%s x%d", k, n))
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return "no requests"
	}
	return strings.Join(parts, ", ")
}
