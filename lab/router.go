package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/lab/netsite"
)

// birdConfig is the router's BIRD configuration: one eBGP session per
// node and address family, every route imported, nothing exported, and
// the equally good routes of the nodes merged into one multipath kernel
// route per VIP.
func birdConfig(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by ober lab (lab)
log %q all;
timeformat log iso long ms;
router id %s;
# Without the device protocol BIRD knows no interfaces, so no directly
# connected neighbours.
protocol device { scan time 10; }
`, filepath.Join(dir, "bird.log"), RouterAddr)
	// Merging paths turns the nodes' routes into one multipath route;
	// without it BIRD installs only the best one. learn off and persist
	// off keep the kernel table exactly what BIRD has, so a withdrawn
	// path leaves the kernel route at once.
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, `protocol kernel kernel_%s {
	%s { import none; export all; };
	merge paths on limit 16;
	learn off;
	persist off;
}
`, af, af)
	}
	for i := range nodeCount {
		h := nodeHost(i)
		for _, n := range []struct {
			suffix, af, extra string
			addr              fmt.Stringer
		}{
			{"v4", "ipv4", "", h.addr},
			// GoBGP sends no link-local next hop; the global one is
			// the kernel gateway.
			{"v6", "ipv6", " next hop prefer global;", h.addr6},
		} {
			// Short timers: BIRD waits 5 s before its first connection
			// and 60 s before retrying a failed session by default.
			// Graceful restart would keep a dead node's routes as stale
			// instead of dropping them, the very delay the demo shows.
			fmt.Fprintf(&b, `protocol bgp %s_%s {
	local as %d;
	neighbor %s as %d;
	direct;
	hold time %d;
	keepalive time %d;
	connect delay time 1;
	connect retry time 1;
	error wait time 1, 5;
	graceful restart off;
	long lived graceful restart off;
	debug { states };
	%s { import all; export none;%s };
}
`, h.role, n.suffix, RouterASN, n.addr, NodeASN, int(bgpHoldTime/time.Second), int(bgpHoldTime/time.Second)/3, n.af, n.extra)
		}
	}
	return b.String()
}

// startRouter writes BIRD's configuration and runs it in the foreground
// (so that the recorded PID is BIRD's own) until its control socket
// answers.
func startRouter(ctx context.Context, site *netsite.Site, ns *netsite.NS, rs *RouterState) error {
	dir := filepath.Join(site.Dir, "router")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(birdConfig(dir)), 0o600); err != nil {
		return fmt.Errorf("write BIRD config: %w", err)
	}
	rs.NS, rs.Socket, rs.Log = ns.Name, filepath.Join(dir, "bird.ctl"), filepath.Join(dir, "bird.log")
	out := filepath.Join(dir, "bird.out")
	pid, err := site.Spawn(ns, "bird", out, "bird", "-f", "-c", conf, "-s", rs.Socket, "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		s, err := birdc(ctx, rs.Socket, "show", "status")
		if err == nil && strings.Contains(s, "Daemon is up and running") {
			return nil
		}
		if !procstat.Alive(pid) {
			return fmt.Errorf("BIRD exited during start:\n%s", tail(out, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("BIRD does not answer on %s: %v:\n%s", rs.Socket, err, tail(out, 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// birdc runs one command on BIRD's control socket.
func birdc(ctx context.Context, sock string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return netsite.Run(ctx, "birdc", append([]string{"-s", sock}, args...)...)
}
