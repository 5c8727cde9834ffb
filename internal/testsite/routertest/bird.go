package routertest

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	birdPkg        = "bird2"
	birdDebianPath = "/usr/sbin/bird"
	birdcDebian    = "/usr/sbin/birdc"
)

// bird holds the paths of one BIRD instance's programs and files.
type bird struct {
	bin, ctl string // bird and birdc
	sock     string // control socket
}

func requireBIRD(t testing.TB) bird {
	t.Helper()
	return bird{
		bin: lookTool(t, "bird", birdDebianPath, birdPkg),
		ctl: lookTool(t, "birdc", birdcDebian, birdPkg),
	}
}

// birdConfig renders the router's BIRD configuration.
func (r *Router) birdConfig() string {
	c := r.cfg
	var b strings.Builder
	r.birdPreamble(&b, c.RouterID)
	// Merging paths is what turns the equally good BGP routes from
	// several nodes into one multipath kernel route; without it BIRD
	// installs only the best one. BIRD exports merged routes on every
	// change of any of their paths, so one node's withdrawal updates the
	// kernel route at once. learn off and persist off keep the kernel
	// table exactly what BIRD has.
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, `protocol kernel kernel_%s {
	%s { import none; export all; };
	merge paths on limit 16;
	learn off;
	persist off;
}
`, af, af)
	}
	if c.anyBFD() {
		birdBFD(&b, c)
	}
	for i, n := range c.Neighbors {
		af := "ipv4"
		extra := ""
		if n.Addr.Is6() {
			af = "ipv6"
			// A node on the link announces its global address and
			// its link-local one; the tests expect the global one as
			// the kernel gateway, as from GoBGP, which sends no
			// link-local next hop.
			extra = " next hop prefer global;"
		}
		fmt.Fprintf(&b, "protocol bgp n%d {\n\tlocal as %d;\n\tneighbor %s as %d;\n", i, c.ASN, n.Addr, n.ASN)
		birdBGPTimers(&b, c.hold(), c.keepalive())
		// Graceful restart would make the router keep a dead node's
		// routes as stale for the restart time instead of dropping
		// them, which is the very delay tests measure.
		b.WriteString("\tgraceful restart off;\n\tlong lived graceful restart off;\n")
		// Session state changes in the log tell when BIRD acted.
		b.WriteString("\tdebug { states };\n")
		if n.Passive {
			b.WriteString("\tpassive on;\n")
		}
		if n.Password != "" {
			fmt.Fprintf(&b, "\tpassword %q;\n", n.Password)
		}
		if n.BFD {
			b.WriteString("\tbfd on;\n")
		}
		fmt.Fprintf(&b, "\t%s { import all; export none;%s };\n}\n", af, extra)
	}
	return b.String()
}

// birdPreamble writes what every BIRD instance here needs: a log with
// millisecond times and the device protocol, without which BIRD knows no
// interfaces and so no directly connected neighbors.
func (r *Router) birdPreamble(b *strings.Builder, routerID netip.Addr) {
	fmt.Fprintf(b, `log %q all;
timeformat log iso long ms;
router id %s;
protocol device { scan time 10; }
`, filepath.Join(r.Dir, "bird.log"), routerID)
}

// birdBFD writes the BFD protocol. The idle interval, at which BIRD sends
// while a session is down, defaults to 1 s; the configured interval lets
// sessions come up in a fraction of that.
func birdBFD(b *strings.Builder, c Config) {
	ms := c.bfdMillis()
	fmt.Fprintf(b, `protocol bfd {
	interface "*" {
		min rx interval %d ms;
		min tx interval %d ms;
		idle tx interval %d ms;
		multiplier %d;
	};
}
`, ms, ms, ms, c.BFDMultiplier)
}

// birdBGPTimers writes the session timers. direct makes iBGP sessions
// single-hop too (BIRD treats iBGP as multihop by default), so that BFD
// is single-hop and next hops are taken as they come. BIRD otherwise
// waits 5 s before its first connection attempt and 60 s before
// restarting a session that failed, both far longer than tests want to
// wait for a node that comes back.
func birdBGPTimers(b *strings.Builder, hold, keepalive int) {
	fmt.Fprintf(b, `	direct;
	hold time %d;
	keepalive time %d;
	connect delay time 1;
	connect retry time 1;
	error wait time 1, 5;
`, hold, keepalive)
}

func (r *Router) startBIRD(ctx context.Context) error {
	return r.startBIRDWith(ctx, r.birdConfig())
}

// startBIRDWith runs BIRD in the foreground, so that the PID Start holds
// is BIRD's own, with the given configuration.
func (r *Router) startBIRDWith(ctx context.Context, config string) error {
	cfgPath := filepath.Join(r.Dir, "bird.conf")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return fmt.Errorf("write BIRD config: %w", err)
	}
	r.bird.sock = filepath.Join(r.Dir, "bird.ctl")
	if _, err := r.spawn("bird", r.bird.bin, "-f", "-c", cfgPath, "-s", r.bird.sock,
		"-P", filepath.Join(r.Dir, "bird.pid")); err != nil {
		return err
	}
	return r.waitReady(ctx, "BIRD", func(ctx context.Context) error {
		out, err := r.Birdc(ctx, "show", "status")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Daemon is up and running") {
			return fmt.Errorf("BIRD status: %s", out)
		}
		return nil
	})
}

// Birdc runs a command on this BIRD instance's control socket.
func (r *Router) Birdc(ctx context.Context, args ...string) (string, error) {
	if r.Kind != BIRD {
		return "", fmt.Errorf("birdc on a %s router", r.Kind)
	}
	return run(ctx, nil, r.bird.ctl, append([]string{"-s", r.bird.sock}, args...)...)
}

func (r *Router) birdSessions(ctx context.Context) (map[netip.Addr]Session, error) {
	out, err := r.Birdc(ctx, "show", "protocols", "all")
	if err != nil {
		return nil, fmt.Errorf("BIRD sessions: %w", err)
	}
	sessions := parseBirdProtocols(out)
	if !r.cfg.anyBFD() {
		return sessions, nil
	}
	out, err = r.Birdc(ctx, "show", "bfd", "sessions")
	if err != nil {
		return nil, fmt.Errorf("BIRD BFD sessions: %w", err)
	}
	for a, state := range parseBirdBFD(out) {
		if s, ok := sessions[a]; ok {
			s.BFD = state
			sessions[a] = s
		}
	}
	return sessions, nil
}

// parseBirdProtocols reads the BGP sessions out of `show protocols all`,
// where each protocol starts with an unindented summary line followed by
// indented details, among them "BGP state:" and "Neighbor address:".
func parseBirdProtocols(out string) map[netip.Addr]Session {
	sessions := map[netip.Addr]Session{}
	var (
		isBGP bool
		state string
		addr  netip.Addr
	)
	flush := func() {
		if isBGP && addr.IsValid() {
			sessions[addr] = Session{State: state}
		}
		isBGP, state, addr = false, "", netip.Addr{}
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			f := strings.Fields(line)
			isBGP = len(f) > 1 && f[1] == "BGP"
			continue
		}
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !isBGP {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "BGP state":
			state = val
		case "Neighbor address":
			// A link-local neighbor carries its interface as %ifname.
			val, _, _ = strings.Cut(val, "%")
			if a, err := netip.ParseAddr(val); err == nil {
				addr = a
			}
		}
	}
	flush()
	return sessions
}

// parseBirdBFD reads `show bfd sessions`: per BFD protocol a name line,
// a header, and one row per session starting with the peer address.
func parseBirdBFD(out string) map[netip.Addr]string {
	states := map[netip.Addr]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		states[a] = f[2]
	}
	return states
}
