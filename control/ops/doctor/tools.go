package doctor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// checkHAProxy runs `haproxy -vv`: the renderer targets 2.6 and newer,
// and 2.6 before 2.6.14 crashes when an instance exits after a soft stop
// (haproxy/haproxy#2114).
func checkHAProxy(ctx context.Context, env Env, cfg *config.Config) Result {
	bin := "haproxy"
	if cfg != nil && cfg.HAProxy.Binary != "" {
		bin = cfg.HAProxy.Binary
	}
	r := Result{Name: "haproxy"}
	out, err := env.exec(ctx, bin, "-vv")
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot run %s -vv: %v", bin, err)
		r.Fix = "install HAProxy 2.6 or newer (`apt-get install haproxy`), or set haproxy.binary"
		return r
	}
	v, err := haproxy.ParseVersion(string(out))
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, err.Error(), "check that haproxy.binary is HAProxy"
		return r
	}
	lib := haproxy.TLSLibrary(string(out))
	if lib == "" {
		lib = "TLS library not reported"
	}
	switch {
	case v.Supported() != nil:
		r.Status, r.Detail = Fail, fmt.Sprintf("HAProxy %s is too old: ober needs %d.%d or newer", v, haproxy.MinMajor, haproxy.MinMinor)
		r.Fix = "install HAProxy 2.6 or newer (haproxy.debian.net has current releases)"
	case v.Major == 2 && v.Minor == 6 && v.Patch < 14:
		r.Status = Warn
		r.Detail = fmt.Sprintf("HAProxy %s, %s: 2.6 before 2.6.14 can crash when an instance exits after a soft stop (haproxy/haproxy#2114; clients are not affected)", v, lib)
		r.Fix = "install HAProxy 2.6.14 or newer (haproxy.debian.net)"
	default:
		r.Status, r.Detail = Pass, fmt.Sprintf("HAProxy %s, %s", v, lib)
	}
	return r
}

// checkHA checks what ha.mode needs: keepalived and the VRRP interface,
// or the BGP speaker's settings and port.
func checkHA(ctx context.Context, env Env, cfg *config.Config, running bool) []Result {
	switch {
	case cfg.HA.Mode == "vrrp" && cfg.HA.VRRP != nil:
		return checkVRRP(ctx, env, cfg.HA.VRRP)
	case cfg.HA.Mode == "bgp" && cfg.HA.BGP != nil:
		return checkBGP(env, cfg.HA.BGP, running)
	}
	return []Result{{Name: "ha", Status: Pass, Detail: "ha.mode none: the VIPs live on this node only"}}
}

func checkVRRP(ctx context.Context, env Env, v *config.VRRP) []Result {
	kv := Result{Name: "keepalived"}
	out, err := env.exec(ctx, v.Keepalived, "--version")
	ver, ok := vrrp.ParseKeepalivedVersion(string(out))
	switch {
	case !ok && err != nil:
		kv.Status, kv.Detail = Fail, fmt.Sprintf("cannot run %s --version: %v", v.Keepalived, err)
		kv.Fix = "install keepalived 2.2 or newer (`apt-get install keepalived`), or set ha.vrrp.keepalived"
	case !ok:
		kv.Status, kv.Detail = Fail, fmt.Sprintf("%s --version names no keepalived version", v.Keepalived)
		kv.Fix = "check ha.vrrp.keepalived"
	case ver.Supported() != nil:
		kv.Status, kv.Detail = Fail, ver.Supported().Error()
		kv.Fix = "install keepalived 2.2 or newer (Debian 12 ships 2.2.7)"
	default:
		kv.Status, kv.Detail = Pass, "v"+ver.Text
	}
	vr := Result{Name: "vrrp"}
	if _, err := os.Stat(env.path(filepath.Join("sys/class/net", v.Interface))); err != nil {
		vr.Status, vr.Detail = Fail, fmt.Sprintf("ha.vrrp.interface %s does not exist here", v.Interface)
		vr.Fix = "correct ha.vrrp.interface"
		return []Result{kv, vr}
	}
	addrs, err := env.Addrs(v.Interface)
	if err != nil {
		vr.Status, vr.Detail, vr.Fix = Warn, fmt.Sprintf("cannot list the addresses of %s: %v", v.Interface, err), "check the interface"
		return []Result{kv, vr}
	}
	var mine []netip.Addr
	for _, n := range v.Nodes {
		if slices.Contains(addrs, n.Addr) {
			mine = append(mine, n.Addr)
		}
	}
	summary := fmt.Sprintf("%d nodes, VRIDs from %d, advert every %s on %s",
		len(v.Nodes), v.FirstVRID, v.AdvertInterval.Duration, v.Interface)
	switch {
	case v.Self.IsValid() && !slices.Contains(addrs, v.Self.Addr):
		vr.Status, vr.Detail = Fail, fmt.Sprintf("ha.vrrp.self %s is not an address of %s", v.Self, v.Interface)
		vr.Fix = fmt.Sprintf("add %s to %s, or correct ha.vrrp.self", v.Self, v.Interface)
	case v.Self.IsValid():
		vr.Status, vr.Detail = Pass, fmt.Sprintf("self %s; %s", v.Self, summary)
	case len(mine) == 1:
		vr.Status, vr.Detail = Pass, fmt.Sprintf("self %s; %s", mine[0], summary)
	case len(mine) == 0:
		vr.Status, vr.Detail = Fail, fmt.Sprintf("none of ha.vrrp.nodes is an address of %s, so the node cannot tell which one it is", v.Interface)
		vr.Fix = fmt.Sprintf("add this node's address to %s, or set ha.vrrp.self", v.Interface)
	default:
		vr.Status, vr.Detail = Fail, fmt.Sprintf("%v of ha.vrrp.nodes are all on %s", mine, v.Interface)
		vr.Fix = "set ha.vrrp.self to this node's entry"
	}
	return []Result{kv, vr}
}

// minBFD is the shortest BFD interval doctor is comfortable with on a
// VM: a vCPU descheduled for a few intervals declares a healthy session
// down.
const minBFD = 50 * time.Millisecond

func checkBGP(env Env, b *config.BGP, running bool) []Result {
	var rs []Result
	r := Result{Name: "bgp", Status: Pass}
	var peers, notes, fixes []string
	for _, p := range b.Peers {
		s := fmt.Sprintf("%s AS%d", p.Address, p.ASN)
		if p.BFD.Enabled {
			s += fmt.Sprintf(" BFD %s x%d", p.BFD.Interval.Duration, p.BFD.Multiplier)
			if p.BFD.Interval.Duration < minBFD {
				r.Status = Warn
				notes = append(notes, fmt.Sprintf("BFD interval %s towards %s is below %s and may flap when a vCPU stalls", p.BFD.Interval.Duration, p.Address, minBFD))
				fixes = append(fixes, fmt.Sprintf("raise ha.bgp.peers[%s].bfd.interval to %s or more", p.Address, minBFD))
			}
		}
		if p.HoldTime.Duration == 0 {
			r.Status = Warn
			notes = append(notes, fmt.Sprintf("hold time 0s towards %s: a dead router is only noticed by BFD or TCP", p.Address))
			fixes = append(fixes, fmt.Sprintf("set ha.bgp.peers[%s].hold_time (3s or more) or enable BFD", p.Address))
		}
		peers = append(peers, s)
	}
	r.Detail = fmt.Sprintf("AS%d, %d peers: %s", b.ASN, len(b.Peers), strings.Join(peers, ", "))
	if len(b.Handoff.Nodes) > 0 {
		r.Detail += fmt.Sprintf("; handoff among %d nodes on UDP %d", len(b.Handoff.Nodes), b.Handoff.Port)
	}
	if len(notes) > 0 {
		r.Detail += "; " + strings.Join(notes, "; ")
		r.Fix = joinFix(fixes)
	}
	rs = append(rs, r)
	if b.ListenPort > 0 {
		rs = append(rs, portResult(env, "bgp port", "tcp", net.JoinHostPort("", strconv.Itoa(b.ListenPort)), running, true,
			"set ha.bgp.listen_port, or -1 to only connect out"))
	}
	if len(b.Handoff.Nodes) > 0 {
		rs = append(rs, portResult(env, "handoff port", "udp", net.JoinHostPort("", strconv.Itoa(int(b.Handoff.Port))), running, true,
			"set ha.bgp.handoff.port"))
	}
	return rs
}
