package routertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const (
	frrPkg     = "frr"
	frrLibexec = "/usr/lib/frr"
	bfdProfile = "routertest"
)

// frr holds the programs of one FRR instance and the user its daemons
// run as.
type frr struct {
	libexec  string // zebra, bgpd, bfdd
	vtysh    string
	uid, gid int
}

func requireFRR(t testing.TB) frr {
	t.Helper()
	f := frr{libexec: frrLibexec, vtysh: lookTool(t, "vtysh", "/usr/bin/vtysh", frrPkg)}
	for _, d := range []string{"zebra", "bgpd", "bfdd"} {
		lookTool(t, filepath.Join(f.libexec, d), filepath.Join(f.libexec, d), frrPkg)
	}
	// FRR 8.4 daemons refuse to run as root ("user(root) is not part of
	// vty group frrvty") and always drop to the frr user, which the
	// package creates; their directory must be theirs.
	u, err := user.Lookup("frr")
	if err != nil {
		t.Fatalf("routertest: user frr: %v: install FRR with `apt-get install %s`", err, frrPkg)
	}
	f.uid, _ = strconv.Atoi(u.Uid)
	f.gid, _ = strconv.Atoi(u.Gid)
	return f
}

// frrConfigs renders one configuration file per daemon; the daemons are
// started with -f each rather than with an integrated frr.conf, which
// only vtysh -b would load.
func (r *Router) frrConfigs() map[string]string {
	c := r.cfg
	const common = "log timestamp precision 3\n!\n"
	cfgs := map[string]string{"zebra": common}

	if c.anyBFD() {
		cfgs["bfdd"] = common + fmt.Sprintf(`bfd
 profile %s
  detect-multiplier %d
  receive-interval %d
  transmit-interval %d
 exit
exit
`, bfdProfile, c.BFDMultiplier, c.bfdMillis(), c.bfdMillis())
	}

	var b strings.Builder
	b.WriteString(common)
	// ebgp-requires-policy stays on: explicit maps accept everything in
	// and send nothing out. IPv6 nodes announce a global and a
	// link-local next hop, and bgpd would install the link-local one;
	// the tests expect the node's global address, as from GoBGP, which
	// sends no link-local next hop.
	b.WriteString(`route-map routertest-in permit 10
exit
route-map routertest-in6 permit 10
 set ipv6 next-hop prefer-global
exit
route-map routertest-out deny 10
exit
`)
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n", c.ASN, c.RouterID)
	// Sessions carry only their own address family. Graceful restart,
	// on by default as helper, would keep a dead node's routes as stale
	// for the restart time instead of dropping them, which is the very
	// delay tests measure. multipath-relax lets paths from nodes in
	// different ASes share a multipath route.
	b.WriteString(" no bgp default ipv4-unicast\n bgp graceful-restart-disable\n bgp bestpath as-path multipath-relax\n")
	for _, n := range c.Neighbors {
		a := n.Addr.String()
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", a, n.ASN)
		fmt.Fprintf(&b, " neighbor %s timers %d %d\n", a, c.keepalive(), c.hold())
		fmt.Fprintf(&b, " neighbor %s timers connect 1\n", a)
		if n.Passive {
			fmt.Fprintf(&b, " neighbor %s passive\n", a)
		}
		if n.Password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", a, n.Password)
		}
		if n.BFD {
			fmt.Fprintf(&b, " neighbor %s bfd\n neighbor %s bfd profile %s\n", a, a, bfdProfile)
		}
	}
	for _, af := range []struct {
		name, in string
		v6       bool
	}{{"ipv4", "routertest-in", false}, {"ipv6", "routertest-in6", true}} {
		fmt.Fprintf(&b, " address-family %s unicast\n  maximum-paths 16\n  maximum-paths ibgp 16\n", af.name)
		for _, n := range c.Neighbors {
			if n.Addr.Is6() != af.v6 {
				continue
			}
			a := n.Addr.String()
			fmt.Fprintf(&b, "  neighbor %s activate\n", a)
			fmt.Fprintf(&b, "  neighbor %s route-map %s in\n", a, af.in)
			fmt.Fprintf(&b, "  neighbor %s route-map routertest-out out\n", a)
		}
		b.WriteString(" exit-address-family\n")
	}
	b.WriteString("exit\n")
	cfgs["bgpd"] = b.String()
	return cfgs
}

// startFRR starts zebra, then bfdd when a neighbor has BFD, then bgpd,
// each once the one before answers, so that bgpd finds zebra to install
// routes through and bfdd to register its BFD sessions with.
//
// Several FRR instances share this machine: every path a daemon would
// otherwise take from /var/run/frr or /etc/frr is given explicitly: the
// zserv socket (-z), the vty sockets (--vty_socket), pid files (-i),
// configs (-f) and bfdd's control socket (--bfdctl). -P 0 keeps them off
// TCP vty ports.
func (r *Router) startFRR(ctx context.Context) error {
	if err := os.Chown(r.Dir, r.frr.uid, r.frr.gid); err != nil {
		return fmt.Errorf("hand %s to user frr: %w", r.Dir, err)
	}
	cfgs := r.frrConfigs()
	for name, text := range cfgs {
		if err := os.WriteFile(filepath.Join(r.Dir, name+".conf"), []byte(text), 0o644); err != nil {
			return fmt.Errorf("write %s config: %w", name, err)
		}
	}
	start := func(name string, extra ...string) error {
		args := append([]string{
			"-f", filepath.Join(r.Dir, name+".conf"),
			"-i", filepath.Join(r.Dir, name+".pid"),
			"-z", filepath.Join(r.Dir, "zserv.api"),
			"--vty_socket", r.Dir,
			"-P", "0",
			"--log", "file:" + filepath.Join(r.Dir, name+".log"),
		}, extra...)
		_, err := r.spawn(name, filepath.Join(r.frr.libexec, name), args...)
		return err
	}
	answers := func(daemon string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := r.vtysh(ctx, daemon, "show version")
			return err
		}
	}

	// Without --v6-rr-semantics zebra changes an IPv6 route by deleting
	// it and adding it anew, so every change of a VIP's paths would
	// leave it briefly without a route; IPv4 routes, and BIRD's of both
	// families, are replaced in one step.
	if err := start("zebra", "--v6-rr-semantics"); err != nil {
		return err
	}
	if err := r.waitReady(ctx, "zebra", answers("zebra")); err != nil {
		return err
	}
	if _, ok := cfgs["bfdd"]; ok {
		if err := start("bfdd", "--bfdctl", filepath.Join(r.Dir, "bfdd.sock")); err != nil {
			return err
		}
		if err := r.waitReady(ctx, "bfdd", answers("bfdd")); err != nil {
			return err
		}
	}
	if err := start("bgpd"); err != nil {
		return err
	}
	// bgpd opens its vty before it reads its config; it is ready once
	// it lists every neighbor.
	return r.waitReady(ctx, "bgpd", func(ctx context.Context) error {
		got, err := r.frrSessions(ctx)
		if err != nil {
			return err
		}
		for _, n := range r.cfg.Neighbors {
			if _, ok := got[n.Addr]; !ok {
				return fmt.Errorf("bgpd does not list neighbor %v yet", n.Addr)
			}
		}
		return nil
	})
}

// vtysh runs commands on this FRR instance, on one daemon or, with
// daemon "", on all of them.
func (r *Router) vtysh(ctx context.Context, daemon string, commands ...string) (string, error) {
	if r.Kind != FRR {
		return "", fmt.Errorf("vtysh on a %s router", r.Kind)
	}
	args := []string{"--vty_socket", r.Dir}
	if daemon != "" {
		args = append(args, "-d", daemon)
	}
	for _, c := range commands {
		args = append(args, "-c", c)
	}
	return run(ctx, []string{"VTYSH_PAGER=cat"}, r.frr.vtysh, args...)
}

func (r *Router) frrSessions(ctx context.Context) (map[netip.Addr]Session, error) {
	out, err := r.vtysh(ctx, "bgpd", "show bgp neighbors json")
	if err != nil {
		return nil, fmt.Errorf("FRR sessions: %w", err)
	}
	return parseFRRNeighbors([]byte(out))
}

// parseFRRNeighbors reads `show bgp neighbors json`, an object keyed by
// neighbor address.
func parseFRRNeighbors(data []byte) (map[netip.Addr]Session, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse FRR neighbors: %w", err)
	}
	sessions := map[netip.Addr]Session{}
	for k, v := range raw {
		a, err := netip.ParseAddr(k)
		if err != nil {
			continue
		}
		var n struct {
			State string `json:"bgpState"`
			BFD   *struct {
				Status string `json:"status"`
			} `json:"peerBfdInfo"`
		}
		if err := json.Unmarshal(v, &n); err != nil {
			return nil, fmt.Errorf("parse FRR neighbor %s: %w", k, err)
		}
		s := Session{State: n.State}
		if n.BFD != nil {
			s.BFD = n.BFD.Status
		}
		sessions[a] = s
	}
	return sessions, nil
}
