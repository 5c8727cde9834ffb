package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/tuning"
)

// checkSysctls compares the running values with tuning.Tuning: a warning for
// each one short of it (all named "sysctl", so the report's columns stay
// narrow; the key leads the detail), one pass line when all are met. The values are
// those of the network namespace doctor runs in.
func checkSysctls(env Env) []Result {
	var rs []Result
	table := tuning.Tuning()
	for _, s := range table {
		const name = "sysctl"
		cur, err := env.proc().Sysctl(s.Key)
		if errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(s.Key, "net.") {
			// Some net.* sysctls (netdev_max_backlog, default_qdisc)
			// exist in the root network namespace only, and doctor runs
			// where node.interfaces are.
			rs = append(rs, Result{Name: name, Status: Warn,
				Detail: fmt.Sprintf("%s is not visible here: the kernel keeps it in the root network namespace only, or lacks it", s.Key),
				Fix:    fmt.Sprintf("check `sysctl %s` in the root namespace; ober wants %s", s.Key, s.Line())})
			continue
		}
		if err != nil {
			rs = append(rs, Result{Name: name, Status: Warn, Detail: fmt.Sprintf("%s: cannot read it: %v", s.Key, err),
				Fix: fmt.Sprintf("check that the kernel has it; ober wants %s", s.Line())})
			continue
		}
		cur = strings.Join(strings.Fields(cur), " ")
		ok, err := s.Compare(cur)
		if err != nil {
			rs = append(rs, Result{Name: name, Status: Warn, Detail: s.Key + ": " + err.Error(), Fix: sysctlFix(s)})
			continue
		}
		if !ok {
			rs = append(rs, Result{Name: name, Status: Warn,
				Detail: fmt.Sprintf("%s = %s, wanted %s %s (%s)", s.Key, cur, s.Op, s.Want(), s.Why), Fix: sysctlFix(s)})
		}
	}
	if len(rs) == 0 {
		rs = append(rs, Result{Name: "sysctl", Status: Pass, Detail: fmt.Sprintf("all %d values of ober's tuning met", len(table))})
	}
	return rs
}

// sysctlFix is the fix for s: set it now, and persist it where bootstrap
// writes the tuning.
func sysctlFix(s tuning.Sysctl) string {
	cmd := fmt.Sprintf("sysctl -w %s=%q", s.Key, s.Value)
	if !strings.Contains(s.Value, " ") {
		cmd = fmt.Sprintf("sysctl -w %s=%s", s.Key, s.Value)
	}
	if s.Prepare != "" {
		cmd = s.Prepare + " && " + cmd
	}
	return fmt.Sprintf("`%s`, and add `%s` to %s", cmd, s.Line(), tuning.File)
}

// checkForwarding: with BGP drain handoff, XDP forwards segments to the
// other nodes through a FIB lookup, which finds nothing on an interface
// whose forwarding is off; the daemon refuses to start then.
func checkForwarding(env Env, cfg *config.Config) []Result {
	bgp := cfg.HA.Mode == "bgp" && cfg.HA.BGP != nil && len(cfg.HA.BGP.Handoff.Nodes) > 0
	vrrp := cfg.HA.Mode == "vrrp" && cfg.HA.VRRP != nil && cfg.HA.VRRP.Handoff != nil
	if !bgp && !vrrp {
		return nil
	}
	what := "BGP handoff"
	if vrrp {
		what = "VRRP handoff"
	}
	var rs []Result
	sysctl := func(iface, name, want, why string) {
		key := "net.ipv4.conf." + iface + "." + name
		r := Result{Name: name + " " + iface}
		// Slashes: an interface name may hold a dot (eth0.100).
		v, err := env.proc().Sysctl("net/ipv4/conf/" + iface + "/" + name)
		switch {
		case err != nil:
			r.Status, r.Detail = Fail, fmt.Sprintf("cannot read %s: %v", key, err)
			r.Fix = "check node.interfaces"
		case v != want:
			r.Status = Fail
			r.Detail = fmt.Sprintf("%s is %s: %s, and the daemon refuses to start", key, v, why)
			r.Fix = fmt.Sprintf("`sysctl -w %s=%s`, and add `%s = %s` to %s", key, want, key, want, tuning.File)
		default:
			r.Status, r.Detail = Pass, key+" = "+want+" ("+what+")"
		}
		rs = append(rs, r)
	}
	for _, iface := range cfg.Node.Interfaces {
		sysctl(iface, "forwarding", "1", what+" forwards connections to the other nodes through "+iface)
	}
	if vrrp {
		// The kernel takes the larger of all and the interface's.
		if v, err := env.proc().Sysctl("net/ipv4/conf/all/arp_ignore"); err == nil && v != "0" {
			rs = append(rs, Result{Name: "arp_ignore all", Status: Pass, Detail: "net.ipv4.conf.all.arp_ignore = " + v + " (VRRP handoff)"})
		} else {
			sysctl(cfg.HA.VRRP.Interface, "arp_ignore", "1", "the VRRP handoff keeps the VIPs on lo, and the node would answer ARP for VIPs it does not hold")
		}
	}
	return rs
}
