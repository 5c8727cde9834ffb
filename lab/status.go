package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/lab/netsite"
)

// Report is what `ober lab status` found.
type Report struct {
	State *State
	// Namespaces maps every expected or found namespace to whether it
	// exists.
	Namespaces map[string]bool
	Procs      []ProcReport
	Nodes      []NodeReport
	// Protocols is `birdc show protocols`, or why it could not be had.
	Protocols string
	// Nexthops are the router's ECMP next hops per VIP (BGP mode).
	Nexthops map[netip.Prefix][]netip.Addr
	// Holders maps every VIP to the nodes whose interface holds it
	// (VRRP mode).
	Holders map[netip.Addr][]string
	// S3 is the S3 backend's storage; nil before Ceph was started.
	S3       *S3Report
	Problems []string
}

// ProcReport is one recorded process.
type ProcReport struct {
	Name    string
	PID     int
	Running bool
}

// NodeReport is one node's daemon.
type NodeReport struct {
	Name         string
	Health       int // HTTP status of /health; 0 when it did not answer
	HealthBody   string
	Instances    int // healthy HAProxy instances
	InstancesAll int
	PIDs         []int
	Announcing   bool
	// VRRP is the node's keepalived and VRRP states (VRRP mode); "" when
	// /status has none.
	VRRP string
	// VRRPUp is whether keepalived runs and the node is not in fault.
	VRRPUp bool
	// Held lists the VIPs on the node's interface (VRRP mode).
	Held []netip.Addr
	Why  string // why not announcing, or why there is no answer
}

// Healthy counts the nodes whose /health answers 200.
func (r *Report) Healthy() int {
	n := 0
	for _, nr := range r.Nodes {
		if nr.Health == http.StatusOK {
			n++
		}
	}
	return n
}

// Status inspects the lab in dir. It works on a half-built or half-dead
// lab, reporting what is missing; without a lab it returns ErrNoLab.
func Status(ctx context.Context, dir string) (*Report, error) {
	st, err := Load(dir)
	if err != nil {
		return nil, err
	}
	r := &Report{State: st, Namespaces: map[string]bool{}, Nexthops: map[netip.Prefix][]netip.Addr{}}
	for _, ns := range st.Namespaces {
		r.Namespaces[ns] = false
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), st.Prefix) {
			r.Namespaces[e.Name()] = true
		}
	}
	for ns, ok := range r.Namespaces {
		if !ok {
			r.Problems = append(r.Problems, "namespace "+ns+" is missing")
		}
	}
	if rec, err := netsite.ReadRecord(dir); err == nil {
		for _, p := range rec.Procs {
			pr := ProcReport{Name: p.Name, PID: p.PID, Running: netsite.Running(p)}
			r.Procs = append(r.Procs, pr)
			if !pr.Running {
				r.Problems = append(r.Problems, fmt.Sprintf("%s (pid %d) is not running", p.Name, p.PID))
			}
		}
	} else {
		r.Problems = append(r.Problems, fmt.Sprintf("no ledger: %v", err))
	}
	if !st.Ready {
		r.Problems = append(r.Problems, "not ready: `ober lab up` is still building it, or died while it did")
	}
	vrrp := st.HA == haVRRP
	for _, n := range st.Nodes {
		nr := nodeReport(ctx, n, r.Namespaces[n.NS])
		switch {
		case vrrp && (nr.Health != http.StatusOK || !nr.VRRPUp):
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %s", n.Name, nr.vrrpSummary()))
		case !vrrp && (nr.Health != http.StatusOK || !nr.Announcing):
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %s", n.Name, nr.summary()))
		}
		if r.Namespaces[n.NS] {
			r.Problems = append(r.Problems, nodeRoutes(ctx, n)...)
		}
		r.Nodes = append(r.Nodes, nr)
	}
	if vrrp {
		r.holdersReport()
	} else {
		r.routerReport(ctx)
	}
	r.s3Report(ctx)
	return r, nil
}

// nodeRoutes names the default routes node n lacks. Without them the
// node still looks healthy and announces, but its answers to clients
// beyond the router go nowhere: a link taken down and up loses them,
// and a host's network configuration would add them again.
func nodeRoutes(ctx context.Context, n NodeState) []string {
	var missing []string
	ns := &netsite.NS{Name: n.NS}
	for _, r := range []struct{ family, via string }{{"-4", RouterAddr.String()}, {"-6", RouterAddr6.String()}} {
		out, err := ns.Run(ctx, "ip", r.family, "route", "show", "default")
		if err != nil || !strings.Contains(out, "via "+r.via) {
			missing = append(missing, fmt.Sprintf("%s has no default route via %s: its answers to the client are lost", n.Name, r.via))
		}
	}
	return missing
}

func nodeReport(ctx context.Context, n NodeState, nsExists bool) NodeReport {
	nr := NodeReport{Name: n.Name}
	if !nsExists {
		nr.Why = "namespace missing"
		return nr
	}
	api, err := newNodeAPI(n.NS)
	if err != nil {
		nr.Why = err.Error()
		return nr
	}
	defer api.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nr.Health, nr.HealthBody, err = api.health(ctx)
	if err != nil {
		nr.Why = "no answer on 127.0.0.1:8404: " + err.Error()
		return nr
	}
	st, err := api.status(ctx)
	if err != nil {
		nr.Why = err.Error()
		return nr
	}
	nr.InstancesAll = len(st.Daemon.HAProxy.Instances)
	for _, in := range st.Daemon.HAProxy.Instances {
		if in.State == supervisor.StateHealthy {
			nr.Instances++
		}
		if in.PID != 0 {
			nr.PIDs = append(nr.PIDs, in.PID)
		}
	}
	if v := st.Daemon.VRRP; v != nil {
		nr.VRRP = vrrpStates(v)
		nr.VRRPUp = v.PID != 0 && v.Fault == ""
	}
	if b := st.Daemon.BGP; b != nil {
		nr.Announcing = b.Announcing
		if !b.Announcing {
			nr.Why = "not announcing: " + b.NotAnnouncing
		}
	}
	return nr
}

// base is the part of a node's line common to both modes: health and
// instances; ok is false when the node did not answer (base is why).
func (nr NodeReport) base() (string, bool) {
	if nr.Health == 0 {
		return nr.Why, false
	}
	s := fmt.Sprintf("health %d", nr.Health)
	if nr.Health != http.StatusOK && nr.HealthBody != "" {
		s += " (" + nr.HealthBody + ")"
	}
	s += fmt.Sprintf(", %d/%d instances healthy", nr.Instances, nr.InstancesAll)
	if len(nr.PIDs) > 0 {
		s += " (pids " + joinInts(nr.PIDs) + ")"
	}
	return s, true
}

func (nr NodeReport) summary() string {
	s, ok := nr.base()
	switch {
	case !ok:
	case nr.Announcing:
		s += ", BGP announcing"
	case nr.Why != "":
		s += ", " + nr.Why
	}
	return s
}

func (nr NodeReport) vrrpSummary() string {
	s, ok := nr.base()
	switch {
	case !ok:
	case nr.VRRP != "":
		s += "; " + nr.VRRP
	case nr.Why != "":
		s += ", " + nr.Why
	default:
		s += ", no VRRP in /status"
	}
	return s
}

// holdersReport reads which node holds which VIP from the nodes'
// interfaces: each VIP must be held by exactly one node, its owner when
// every node is healthy.
func (r *Report) holdersReport() {
	st := r.State
	for _, n := range st.Nodes {
		if !r.Namespaces[n.NS] {
			// Without every node's namespace the holders are unknown;
			// the missing namespace is a problem already.
			return
		}
	}
	if len(st.Nodes) != nodeCount {
		return
	}
	v, err := openHolderView(st)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return
	}
	defer v.Close()
	h, err := v.holders()
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return
	}
	r.Holders = h
	for i := range r.Nodes {
		r.Nodes[i].Held, _ = v.heldBy(i)
	}
	allHealthy := r.Healthy() == nodeCount
	for i, vip := range VRRPVIPs {
		switch hs := h[vip]; {
		case len(hs) == 0:
			r.Problems = append(r.Problems, fmt.Sprintf("%s is held by no node", vip))
		case len(hs) > 1:
			r.Problems = append(r.Problems, fmt.Sprintf("%s is held by %d nodes at once: %s", vip, len(hs), strings.Join(hs, ", ")))
		case allHealthy && hs[0] != ownerOf(i):
			r.Problems = append(r.Problems, fmt.Sprintf("%s is held by %s, not by its owner %s, though all nodes are healthy", vip, hs[0], ownerOf(i)))
		}
	}
}

func (r *Report) routerReport(ctx context.Context) {
	rs := r.State.Router
	if rs.NS == "" {
		r.Protocols = "not built yet"
		return
	}
	out, err := birdc(ctx, rs.Socket, "show", "protocols")
	if err != nil {
		r.Protocols = "BIRD does not answer: " + err.Error()
		r.Problems = append(r.Problems, "the router's BIRD does not answer")
	} else {
		r.Protocols = strings.TrimRight(out, "\n")
	}
	if !r.Namespaces[rs.NS] {
		return
	}
	f, err := openFIB(rs.NS)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return
	}
	defer f.Close()
	for _, p := range []netip.Prefix{Prefix4, Prefix6} {
		nh, err := f.nexthops(p)
		if err != nil {
			r.Problems = append(r.Problems, err.Error())
			continue
		}
		r.Nexthops[p] = nh
		if len(nh) != nodeCount {
			r.Problems = append(r.Problems, fmt.Sprintf("the router has %d paths to %v, not %d", len(nh), p, nodeCount))
		}
	}
}

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	st := r.State
	fmt.Fprintf(w, "lab in %s, namespaces %s*", st.Dir, st.Prefix)
	if !st.Started.IsZero() {
		fmt.Fprintf(w, ", built %s", st.Started.Local().Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	var names []string
	present := 0
	for ns, ok := range r.Namespaces {
		names = append(names, ns)
		if ok {
			present++
		}
	}
	slices.Sort(names)
	fmt.Fprintf(w, "\nnamespaces: %d of %d present\n", present, len(names))
	for _, ns := range names {
		if !r.Namespaces[ns] {
			fmt.Fprintf(w, "  %-28s MISSING\n", ns)
		}
	}
	running := 0
	for _, p := range r.Procs {
		if p.Running {
			running++
		}
	}
	fmt.Fprintf(w, "\nprocesses: %d of %d running\n", running, len(r.Procs))
	for _, p := range r.Procs {
		fmt.Fprintf(w, "  %-16s pid %-8d %s\n", p.Name, p.PID, onOff(p.Running, "running", "DEAD"))
	}
	if st.HA == haVRRP {
		r.printVRRP(w)
	} else {
		r.printBGP(w)
	}
	if r.S3 != nil {
		r.S3.print(w, st)
	}
	if st.AccessKey != "" {
		fmt.Fprintln(w)
		PrintAccess(w, st)
	}
	fmt.Fprintln(w)
	if !printProblems(w, r.Problems) {
		return
	}
	logs := []string{filepath.Join(st.Dir, "node*", "ober.log")}
	if st.HA != haVRRP {
		logs = append(logs, filepath.Join(st.Dir, "router", "bird.log"))
	}
	logs = append(logs, filepath.Join(st.Dir, "ceph", "log"))
	fmt.Fprintf(w, "logs: %s\n", strings.Join(logs, ", "))
}

// printVRRP writes the nodes' VRRP part and who holds which VIP.
func (r *Report) printVRRP(w io.Writer) {
	fmt.Fprintf(w, "\nnodes (VRRP): %d of %d healthy\n", r.Healthy(), len(r.Nodes))
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "  %-6s holds %-12s %s\n", n.Name, addrsOrNone(n.Held), n.vrrpSummary())
	}
	if r.Holders != nil {
		fmt.Fprintf(w, "\nVIPs (from the nodes' interfaces; no BGP, the router %s reaches them on its connected segment):\n", r.State.Router.NS)
		for i, vip := range VRRPVIPs {
			who := "NO NODE"
			if hs := r.Holders[vip]; len(hs) > 0 {
				who = strings.Join(hs, " AND ")
			}
			fmt.Fprintf(w, "  %-12s held by %-8s (owner %s)\n", vip, who, ownerOf(i))
		}
	}
}

// printBGP writes the nodes' BGP part and the router's.
func (r *Report) printBGP(w io.Writer) {
	st := r.State
	announcing := 0
	for _, n := range r.Nodes {
		if n.Announcing {
			announcing++
		}
	}
	fmt.Fprintf(w, "\nnodes: %d of %d healthy, %d announcing\n", r.Healthy(), len(r.Nodes), announcing)
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "  %-6s %s\n", n.Name, n.summary())
	}
	if st.Router.Socket == "" {
		fmt.Fprintf(w, "\nrouter: %s\n", r.Protocols)
	} else {
		fmt.Fprintf(w, "\nrouter (BIRD, birdc -s %s show protocols):\n", st.Router.Socket)
		for _, l := range strings.Split(r.Protocols, "\n") {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	for _, p := range []netip.Prefix{Prefix4, Prefix6} {
		switch nh, ok := r.Nexthops[p]; {
		case !ok:
		case len(nh) == 0:
			fmt.Fprintf(w, "  ECMP %-15s no route\n", p.Addr())
		default:
			fmt.Fprintf(w, "  ECMP %-15s %d next hops: %s\n", p.Addr(), len(nh), joinAddrs(nh))
		}
	}
}

func onOff(b bool, on, off string) string {
	if b {
		return on
	}
	return off
}

// printProblems ends a report: "all well", or the problems one a line;
// it tells whether there were any.
func printProblems(w io.Writer, problems []string) bool {
	if len(problems) == 0 {
		fmt.Fprintln(w, "all well")
		return false
	}
	fmt.Fprintf(w, "problems (%d):\n", len(problems))
	for _, p := range problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
	return true
}
