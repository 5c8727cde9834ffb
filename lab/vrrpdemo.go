package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
	"github.com/ober-ingress/ober/lab/netsite"
	"github.com/ober-ingress/ober/lab/vipwatch"
)

// runVRRPDemo shows the VRRP lab working, from the client namespace:
// transfers checked by SHA-256 through each VIP (served by its owner),
// who holds which VIP, and a node losing its HAProxy instances under
// requests to its VIP. Every wait is bounded; it takes well under a
// minute.
func runVRRPDemo(ctx context.Context, st *State, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	d, err := netsite.NewDialer(&netsite.NS{Name: st.Client}, 8)
	if err != nil {
		return err
	}
	defer d.Close()
	var cs []*s3Client
	for _, e := range st.Endpoints {
		c, err := newS3Client(st, d, e)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	if len(cs) != len(VRRPVIPs) {
		return fmt.Errorf("the lab records %d endpoints, not one per VIP (%d)", len(cs), len(VRRPVIPs))
	}
	objs, err := vrrpTransfers(ctx, cs, out)
	if err != nil {
		return err
	}
	if err := showHolders(ctx, st, out); err != nil {
		return err
	}
	if err := vrrpFailover(ctx, cs[1], st, objs[0], objs[2], out); err != nil {
		return err
	}
	fmt.Fprintf(out, "\ndemo done in %.1fs\n", time.Since(start).Seconds())
	return nil
}

// vrrpTransfers makes the bucket and, through each VIP in turn, uploads
// objects of three sizes and downloads each, comparing SHA-256; each VIP
// must be served by its owner.
func vrrpTransfers(ctx context.Context, cs []*s3Client, out io.Writer) ([]demoObject, error) {
	fmt.Fprintf(out, "demo 1/3: S3 through each VIP in turn (bucket %s), every request on a new connection\n", demoBucket)
	if err := makeBucket(ctx, cs[0], out); err != nil {
		return nil, err
	}
	objs := demoObjects()
	for i, c := range cs {
		fmt.Fprintf(out, "  through %s (owner %s):\n", c.endpoint, ownerOf(i))
		for _, o := range objs {
			put, get, err := putGet(ctx, c, o, out)
			if err != nil {
				return nil, fmt.Errorf("through %s: %w", c.endpoint, err)
			}
			for _, a := range []answer{put, get} {
				if node, _, _ := strings.Cut(a.servedBy, "/"); node != ownerOf(i) {
					return nil, fmt.Errorf("%s %s served by %q, not by its owner %s", c.endpoint, o.name, a.servedBy, ownerOf(i))
				}
			}
		}
	}
	return objs, nil
}

// showHolders prints which node holds which VIP, read from the nodes'
// interfaces, and every node's VRRP states from its /status; the VIPs
// must be on their owners.
func showHolders(ctx context.Context, st *State, out io.Writer) error {
	fmt.Fprintf(out, "\ndemo 2/3: who holds which VIP (addresses on each node's %s) and the VRRP states (each node's /status)\n", nodeHost(0).iface)
	v, err := openHolderView(st)
	if err != nil {
		return err
	}
	defer v.Close()
	h, err := v.holders()
	if err != nil {
		return err
	}
	for i, n := range st.Nodes {
		held, err := v.heldBy(i)
		if err != nil {
			return err
		}
		na, err := newNodeAPI(n.NS)
		if err != nil {
			return err
		}
		ns, err := na.status(ctx)
		na.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		fmt.Fprintf(out, "  %-6s %s  holds %-12s %s\n", n.Name, n.Addr, addrsOrNone(held), vrrpStates(ns.Daemon.VRRP))
	}
	if !onOwners(h) {
		return fmt.Errorf("the VIPs are not each on their owner (%s): %s", ownersLine(), holdersString(h))
	}
	fmt.Fprintf(out, "  each VIP on its owner alone; its backups follow in ha.vrrp.nodes order (VIP 2: node3, then node1)\n")
	return nil
}

const sampleEvery = 5 * time.Millisecond

// requestTimeout bounds each request of the failover's load. The node's
// listening sockets outlive its HAProxy instances (ober holds them for
// restarts), so a connection made just before the VIP moves is accepted
// by the kernel and then waits for an instance: a client that waits long
// never sees the backup. A short timeout, as a client with retries has,
// moves it on to the new holder.
const requestTimeout = time.Second

// slowDownload is how long the demo reads its download across the
// owner's return.
const slowDownload = 30 * time.Second

// waitFirst waits until a sample taken at or after since has vip held by
// node alone, and returns when that sample was taken.
func waitFirst(ctx context.Context, sp *vipwatch.Sampler, since time.Time, vip netip.Addr, node string, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	alone := func(hs []string) bool { return len(hs) == 1 && hs[0] == node }
	for {
		if at, ok := sp.First(since, vip, alone); ok {
			return at, nil
		}
		select {
		case <-ctx.Done():
			last := "no sample"
			if x, ok := sp.Last(); ok {
				last = holdersString(x.Holders)
			}
			if err := sp.Err(); err != nil {
				last += fmt.Sprintf(" (sampling: %v)", err)
			}
			return time.Time{}, fmt.Errorf("%s not held by %s alone within %v (last: %s)", vip, node, timeout, last)
		case <-time.After(sampleEvery):
		}
	}
}

// vrrpFailover kills every HAProxy instance of node2 while clients make
// requests to its VIP, and times the VIP moving to node3, the
// supervisor's restart and node2 taking its VIP back after the preempt
// delay, sampling the nodes' interfaces all along.
func vrrpFailover(ctx context.Context, c *s3Client, st *State, o, big demoObject, out io.Writer) (err error) {
	const vi = 1 // VIP 2, owned by node2, backed up first by node3
	victim, backup, vip := st.Nodes[vi], st.Nodes[(vi+1)%nodeCount], VRRPVIPs[vi]
	na, err := newNodeAPI(victim.NS)
	if err != nil {
		return err
	}
	defer na.Close()
	pids, err := instancePIDs(ctx, na, victim.Name)
	if err != nil {
		return err
	}
	v, err := openHolderView(st)
	if err != nil {
		return err
	}
	defer v.Close()
	fmt.Fprintf(out, "\ndemo 3/3: kill -9 every HAProxy instance of %s (pids %s) while 4 clients make requests to %s, each on a new connection\n"+
		"  and given up after %v; the nodes' addresses are sampled every %v\n", victim.Name, joinInts(pids), vip, requestTimeout, sampleEvery)

	sp := vipwatch.Start(sampleEvery, v.holders)
	defer sp.Stop()
	load := startLoad(ctx, c, o, 4, requestTimeout)
	defer load.Stop()
	time.Sleep(500 * time.Millisecond)
	killed, err := killAll(victim.Name, pids)
	if err != nil {
		return err
	}
	took, err := waitFirst(ctx, sp, killed, vip, backup.Name, 10*time.Second)
	if err != nil {
		return fmt.Errorf("the failover: %w", err)
	}
	fmt.Fprintf(out, "  %s took %s %d ms after the kill (%s faulted on its dead instances and gave the VIP up)\n",
		backup.Name, vip, took.Sub(killed).Milliseconds(), victim.Name)
	// A long download through the temporary holder, across the return:
	// the owner hands its segments back to the holder until it ends.
	type result struct {
		a   answer
		err error
	}
	dl := make(chan result, 1)
	go func() {
		a, err := c.doPaced(ctx, "GET", "/"+demoBucket+"/"+big.name, nil, int64(float64(len(big.data))/slowDownload.Seconds()))
		dl <- result{a, err}
	}()

	restarted, newPIDs, err := waitRestarted(ctx, na, pids, 20*time.Second)
	if err != nil {
		return fmt.Errorf("%s: %w", victim.Name, err)
	}
	fmt.Fprintf(out, "  %s: the supervisor restarted the instances (pids %s) %d ms after the kill\n",
		victim.Name, joinInts(newPIDs), restarted.Sub(killed).Milliseconds())

	// keepalived's preempt delay runs from the node leaving FAULT, which
	// its track file decides: the poll of /status above may see the
	// instances later than that on a loaded machine. The instance's own
	// report of entering BACKUP is the delay's start.
	healthy := restarted
	if at, ok := backupSince(ctx, na, vip); ok {
		healthy = at
	}
	back, err := waitFirst(ctx, sp, restarted, vip, victim.Name, preemptDelay+20*time.Second)
	if err != nil {
		return fmt.Errorf("%s did not take its VIP back: %w", victim.Name, err)
	}
	fmt.Fprintf(out, "  %s holds %s again %.1f s after it left fault with its instances back (preempt delay %v, so a flapping node does not flap its VIP)\n",
		victim.Name, vip, back.Sub(healthy).Seconds(), preemptDelay)
	// A little traffic over the returned owner, then the tally.
	time.Sleep(time.Second)
	reqs := load.Stop()
	sp.Stop()
	r := <-dl
	switch node, _, _ := strings.Cut(r.a.servedBy, "/"); {
	case r.err != nil:
		return fmt.Errorf("the %v download through %s across the return: %w", slowDownload, backup.Name, r.err)
	case r.a.status != 200 || r.a.sum != big.sum:
		return fmt.Errorf("the %v download through %s across the return: status %d, sha256 %x (want %x): %s",
			slowDownload, backup.Name, r.a.status, r.a.sum[:8], big.sum[:8], r.a.body)
	default:
		forwarded := "?"
		if ns, err := na.status(ctx); err == nil && ns.DataplaneStatus != nil {
			for _, rs := range ns.Counters.Reasons {
				if rs.Reason == "handoff_forwarded" {
					forwarded = fmt.Sprint(rs.Packets["tx"] + rs.Packets["redirect"])
				}
			}
		}
		fmt.Fprintf(out, "  a download of %s started through %s after the takeover, read over %v: sha256 ok across the return, in %.1f s, served by %s (%s handed %s segments back to it)\n",
			big.name, backup.Name, slowDownload, r.a.took.Seconds(), node, victim.Name, forwarded)
	}

	var ok, failed, failedBefore, failedAfterBack int
	count := map[string]int{}
	var errs []string
	for _, r := range reqs {
		if r.err == nil {
			ok++
			count[r.node]++
			continue
		}
		failed++
		if r.start.Before(took) {
			failedBefore++
		} else {
			failedAfterBack++
		}
		errs = append(errs, fmt.Sprintf("started %+d ms from the takeover: %v", r.start.Sub(took).Milliseconds(), r.err))
	}
	fmt.Fprintf(out, "  requests through the failover: %d OK, %d failed", ok, failed)
	if failed > 0 {
		fmt.Fprintf(out, " (%d started before the takeover, on %s's dead instances; %d after it)", failedBefore, victim.Name, failedAfterBack)
	}
	fmt.Fprintln(out)
	// The return to the owner is a planned move (ha.vrrp.handoff): the
	// connections made through the backup are handed back to it.
	defer func() {
		if failedAfterBack > 0 && err == nil {
			err = fmt.Errorf("%d requests that started after the takeover failed: the return to %s must lose none", failedAfterBack, victim.Name)
		}
	}()
	fmt.Fprintf(out, "  served per node: %s\n", perNode(count))
	// The first few and the last tell the two moments apart.
	for i, e := range errs {
		switch {
		case i < 3 || i == len(errs)-1:
			fmt.Fprintf(out, "    failed %s\n", e)
		case i == 3:
			fmt.Fprintf(out, "    ...\n")
		}
	}
	switch doubles, passing := sp.Doubles(time.Time{}); {
	case len(doubles) > 0:
		fmt.Fprintf(out, "  TWO HOLDERS in %d of %d samples: %s\n", len(doubles), sp.Count(), strings.Join(doubles[:min(3, len(doubles))], "; "))
	case passing > 0:
		fmt.Fprintf(out, "  no VIP on two nodes at once in any of %d samples (from before the kill to after the return), but for %d handover(s) caught in passing by one sample and gone %v later\n",
			sp.Count(), passing, sampleEvery)
	default:
		fmt.Fprintf(out, "  no VIP on two nodes at once in any of %d samples (from before the kill to after the return)\n", sp.Count())
	}
	return nil
}

// vrrpStates is "keepalived pid P: 10.99.1.101 MASTER 200, 10.99.1.102
// BACKUP 190, ..." from a node's /status.
func vrrpStates(vs *api.VRRPStatus) string {
	if vs == nil {
		return "no VRRP in /status"
	}
	parts := make([]string, len(vs.Instances))
	for i, in := range vs.Instances {
		state := string(in.State)
		if state == "" {
			state = "UNKNOWN"
		}
		parts[i] = fmt.Sprintf("%s %s %d", in.VIP, state, in.Priority)
	}
	s := fmt.Sprintf("keepalived pid %d: %s", vs.PID, strings.Join(parts, ", "))
	if vs.Fault != "" {
		s += " (fault: " + vs.Fault + ")"
	}
	return s
}

func addrsOrNone(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	return joinAddrs(as)
}

// backupSince is when the node's VRRP instance of vip entered BACKUP,
// as keepalived reported it; false when it is not in BACKUP within a
// second (then it preempted already, or is still in fault).
func backupSince(ctx context.Context, na *nodeAPI, vip netip.Addr) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for {
		if st, err := na.status(ctx); err == nil && st.Daemon != nil && st.Daemon.VRRP != nil {
			for _, in := range st.Daemon.VRRP.Instances {
				if in.VIP != vip {
					continue
				}
				switch in.State {
				case vrrp.Backup:
					return in.Since, true
				case vrrp.Master:
					return time.Time{}, false
				}
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, false
		case <-time.After(20 * time.Millisecond):
		}
	}
}
