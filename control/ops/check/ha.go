package check

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/doctor"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

func haChecks(ctx context.Context, o Options, cfg *config.Config) []Result {
	switch {
	case cfg.HA.Mode == config.HAModeBGP && cfg.HA.BGP != nil:
		return bgpChecks(ctx, o, cfg)
	case cfg.HA.Mode == config.HAModeVRRP && cfg.HA.VRRP != nil:
		return vrrpChecks(ctx, cfg)
	}
	return nil
}

// bgpChecks reports the running daemon's sessions, when it answers on
// api.listen: a router refuses a second session from the same address.
// Otherwise it opens a session with each peer and closes it again.
func bgpChecks(ctx context.Context, o Options, cfg *config.Config) []Result {
	if st, err := api.NewClient(cfg.API.Listen, api.ClientOptions{}).Status(ctx); err == nil && st.Daemon.BGP != nil {
		var checks []Result
		for _, p := range st.Daemon.BGP.Peers {
			detail := fmt.Sprintf("AS%d %s in the running daemon (pid %d)", p.ASN, p.State, st.Daemon.PID)
			c := pass("bgp "+p.Address, detail)
			if !p.Up() {
				if p.LastError != "" {
					detail += ": " + p.LastError
				}
				c = fail("bgp "+p.Address, detail)
			}
			checks = append(checks, c)
		}
		return checks
	}
	sc, err := speakerConfig(cfg)
	if err != nil {
		return []Result{fail("bgp", config.OneLine(err))}
	}
	out := make([]Result, len(sc.Peers))
	var wg sync.WaitGroup
	for i, peer := range sc.Peers {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, o.BGPTimeout)
			defer cancel()
			// Each probe is its own speaker: with one listener at most, a
			// passive peer is probed alone.
			r := bgp.Probe(pctx, sc, peer, o.Logger)
			var c Result
			if r.OK {
				c = pass("bgp "+r.Peer, fmt.Sprintf("AS%d established in %s, router id %s; offers %s", r.ASN,
					r.Took.Round(time.Millisecond), r.RouterID, strings.Join(r.Capabilities, ", ")))
			} else {
				c = fail("bgp "+r.Peer, fmt.Sprintf("AS%d %s: %s", r.ASN, r.State, r.Error))
				c.Fix = "check the address, ha.bgp.asn, the peer's asn and password, and the router's neighbor entry for this node"
			}
			c.BGP = &r
			out[i] = c
		})
	}
	wg.Wait()
	return out
}

// pingWait is how long a VRRP peer has to answer: keepalived declares a
// master dead after about three advert intervals, so a peer that needs
// seconds to answer an echo is as good as unreachable.
const pingWait = 2 * time.Second

// vrrpChecks checks keepalived, the VRRP interface and this node's
// address on it (doctor's checks), then every peer over the path the
// adverts take, and keepalived's own check of the rendered configuration.
func vrrpChecks(ctx context.Context, cfg *config.Config) []Result {
	var checks []Result
	selfOK := true
	for _, r := range doctor.CheckVRRP(ctx, doctor.DefaultEnv(), cfg.HA.VRRP) {
		checks = append(checks, fromDoctor(r))
		if r.Name == "vrrp" && r.Status == doctor.Fail {
			selfOK = false
		}
	}
	if !selfOK {
		// Without its own address the node cannot send adverts at all.
		return checks
	}
	kc, err := vrrpConfig(cfg)
	if err != nil {
		return append(checks, fail("vrrp", config.OneLine(err)))
	}
	peers := make([]Result, len(kc.Peers))
	var wg sync.WaitGroup
	for i, peer := range kc.Peers {
		wg.Go(func() {
			name := "vrrp peer " + peer.String()
			rtt, err := pingFrom(ctx, kc.Interface, kc.Self, peer, pingWait)
			var c Result
			if err != nil {
				c = fail(name, fmt.Sprintf("%s from %s (%s): %v", peer, kc.Interface, kc.Self, err))
				c.Fix = "check that the node is up, its link to the VRRP segment, and that ICMP and VRRP (IP protocol 112) pass between the nodes"
			} else {
				c = pass(name, fmt.Sprintf("%s answers ICMP echo from %s (%s) in %s", peer, kc.Interface, kc.Self, fmtRTT(rtt)))
				c.RTTMillis = toMillis(rtt)
			}
			c.Address = peer.String()
			peers[i] = c
		})
	}
	checks = append(checks, keepalivedCheck(ctx, cfg.HA.VRRP.Keepalived, kc))
	wg.Wait()
	return append(checks, peers...)
}

// speakerConfig is the BGP speaker's configuration the daemon would run,
// reading node.interfaces' addresses only when the router ID is theirs.
func speakerConfig(cfg *config.Config) (bgp.Config, error) {
	var addrs map[string][]netip.Addr
	if !cfg.HA.BGP.RouterID.Addr.IsValid() {
		var err error
		if addrs, err = plan.HostAddrs(cfg.Node.Interfaces); err != nil {
			return bgp.Config{}, err
		}
	}
	return plan.Speaker(cfg, addrs)
}

// vrrpConfig is keepalived's configuration the daemon would run, reading
// the VRRP interface's addresses only when this node's is to be found
// there.
func vrrpConfig(cfg *config.Config) (vrrp.Config, error) {
	var addrs map[string][]netip.Addr
	if v := cfg.HA.VRRP; !v.Self.Addr.IsValid() {
		var err error
		if addrs, err = plan.HostAddrs([]string{v.Interface}); err != nil {
			return vrrp.Config{}, fmt.Errorf("ha.vrrp.interface: %w", err)
		}
	}
	return plan.VRRP(cfg, addrs)
}

// keepalivedCheck has keepalived check the keepalived.conf ober would
// run it with. The track and notify files are scratch paths: -t reads
// neither.
func keepalivedCheck(ctx context.Context, binary string, kc vrrp.Config) Result {
	const name = "keepalived config"
	tmp, err := os.MkdirTemp("", "ober-test-keepalived-")
	if err != nil {
		return fail(name, fmt.Sprintf("scratch directory: %v", err))
	}
	defer os.RemoveAll(tmp)
	kc.TrackFile = filepath.Join(tmp, "track")
	kc.NotifyFIFO = filepath.Join(tmp, "notify")
	text, err := vrrp.Render(kc)
	if err != nil {
		return fail(name, config.OneLine(err))
	}
	conf := filepath.Join(tmp, "keepalived.conf")
	if err := os.WriteFile(conf, text, 0o600); err != nil {
		return fail(name, fmt.Sprintf("write %s: %v", conf, err))
	}
	if err := os.WriteFile(kc.TrackFile, []byte("0\n"), 0o600); err != nil {
		return fail(name, fmt.Sprintf("write %s: %v", kc.TrackFile, err))
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, binary, "-t", "-f", conf).CombinedOutput()
	if err != nil {
		msg := strings.ReplaceAll(strings.TrimSpace(strings.ReplaceAll(string(out), conf, "keepalived.conf")), "\n", "; ")
		if msg == "" {
			msg = "no output"
		}
		c := fail(name, fmt.Sprintf("%s -t rejects the rendered keepalived.conf: %v: %s", binary, err, msg))
		c.Fix = "check ha.vrrp (interface, nodes) and ha.vrrp.keepalived"
		return c
	}
	return pass(name, fmt.Sprintf("%s -t accepts the rendered keepalived.conf: %d VRRP instances on %s, self %s, %d peers",
		binary, len(kc.Instances), kc.Interface, kc.Self, len(kc.Peers)))
}
