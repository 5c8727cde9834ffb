package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/runtime/supervisor"
)

// failover kills every HAProxy instance of node2 while clients keep
// making requests, and times the router's route leaving and returning.
func failover(ctx context.Context, c *s3Client, st *State, o demoObject, out io.Writer) error {
	victim := st.Nodes[1]
	api, err := newNodeAPI(victim.NS)
	if err != nil {
		return err
	}
	defer api.Close()
	f, err := openFIB(st.Router.NS)
	if err != nil {
		return err
	}
	defer f.Close()
	pids, err := instancePIDs(ctx, api, victim.Name)
	if err != nil {
		return err
	}
	victimAddr := netip.MustParseAddr(victim.Addr)
	fmt.Fprintf(out, "\ndemo 4/4: kill -9 every HAProxy instance of %s (pids %s) while 4 clients make requests, each on a new connection\n",
		victim.Name, joinInts(pids))

	load := startLoad(ctx, c, o, 4, 5*time.Second)
	defer load.Stop()
	time.Sleep(500 * time.Millisecond)
	killed, err := killAll(victim.Name, pids)
	if err != nil {
		return err
	}
	gone, nh, err := f.waitNexthops(ctx, Prefix4, 10*time.Second, func(nh []netip.Addr) bool {
		return len(nh) == nodeCount-1 && !slices.Contains(nh, victimAddr)
	})
	if err != nil {
		return fmt.Errorf("the route via %s did not leave: %w", victim.Name, err)
	}
	fmt.Fprintf(out, "  route to %s: 2 next hops %d ms after the kill (via %s): %s withdrew\n",
		VIP4, gone.Sub(killed).Milliseconds(), joinAddrs(nh), victim.Name)

	restarted, newPIDs, err := waitRestarted(ctx, api, pids, 20*time.Second)
	if err != nil {
		return fmt.Errorf("%s: %w", victim.Name, err)
	}
	fmt.Fprintf(out, "  %s: the supervisor restarted the instances (pids %s) %d ms after the kill\n",
		victim.Name, joinInts(newPIDs), restarted.Sub(killed).Milliseconds())

	back, nh, err := f.waitNexthops(ctx, Prefix4, 30*time.Second, func(nh []netip.Addr) bool {
		return len(nh) == nodeCount
	})
	if err != nil {
		return fmt.Errorf("the route via %s did not come back: %w", victim.Name, err)
	}
	fmt.Fprintf(out, "  route to %s: 3 next hops again %.1f s after the withdraw (hold-down %v, so a flapping node does not flap the route): via %s\n",
		VIP4, back.Sub(gone).Seconds(), holdDown, joinAddrs(nh))
	// A little traffic over the returned node, then the tally.
	time.Sleep(time.Second)
	reqs := load.Stop()
	if _, _, err := f.waitNexthops(ctx, Prefix6, 10*time.Second, func(nh []netip.Addr) bool { return len(nh) == nodeCount }); err != nil {
		return fmt.Errorf("the IPv6 route via %s did not come back: %w", victim.Name, err)
	}

	var ok, failed, failedEarly int
	count := map[string]int{}
	var firstErrs []string
	for _, r := range reqs {
		if r.err == nil {
			ok++
			count[r.node]++
			continue
		}
		failed++
		if r.start.Before(gone) {
			failedEarly++
		}
		if len(firstErrs) < 3 {
			firstErrs = append(firstErrs, fmt.Sprintf("at %+d ms: %v", r.start.Sub(killed).Milliseconds(), r.err))
		}
	}
	fmt.Fprintf(out, "  requests through the failover: %d OK, %d failed", ok, failed)
	if failed > 0 {
		fmt.Fprintf(out, " (%d of them started before the withdraw reached the router, while it still sent flows to %s)", failedEarly, victim.Name)
	}
	fmt.Fprintf(out, "\n  served per node: %s\n", perNode(count))
	for _, e := range firstErrs {
		fmt.Fprintf(out, "    failed %s\n", e)
	}
	return nil
}

// waitRestarted waits until every instance runs again under a new PID.
func waitRestarted(ctx context.Context, api *nodeAPI, old []int, timeout time.Duration) (time.Time, []int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		st, err := api.status(ctx)
		if err == nil {
			var pids []int
			up := 0
			for _, in := range st.Daemon.HAProxy.Instances {
				if in.PID != 0 && !slices.Contains(old, in.PID) && in.State == supervisor.StateHealthy {
					up++
					pids = append(pids, in.PID)
				}
			}
			if up == len(st.Daemon.HAProxy.Instances) && up > 0 {
				return time.Now(), pids, nil
			}
			last = fmt.Sprintf("%d of %d instances healthy again", up, len(st.Daemon.HAProxy.Instances))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return time.Time{}, nil, fmt.Errorf("instances not back after %v (%s)", timeout, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
