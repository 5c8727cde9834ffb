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
	if cfg.HA.Mode != "bgp" || cfg.HA.BGP == nil || len(cfg.HA.BGP.Handoff.Nodes) == 0 {
		return nil
	}
	var rs []Result
	for _, iface := range cfg.Node.Interfaces {
		key := "net.ipv4.conf." + iface + ".forwarding"
		r := Result{Name: "forwarding " + iface}
		// Slashes: an interface name may hold a dot (eth0.100).
		v, err := env.proc().Sysctl("net/ipv4/conf/" + iface + "/forwarding")
		switch {
		case err != nil:
			r.Status, r.Detail = Fail, fmt.Sprintf("cannot read %s: %v", key, err)
			r.Fix = "check node.interfaces"
		case v != "1":
			r.Status = Fail
			r.Detail = fmt.Sprintf("%s is %s: BGP handoff forwards connections to the other nodes through %s, and the daemon refuses to start", key, v, iface)
			r.Fix = fmt.Sprintf("`sysctl -w %s=1`, and add `%s = 1` to %s", key, key, tuning.File)
		default:
			r.Status, r.Detail = Pass, key+" = 1 (BGP handoff)"
		}
		rs = append(rs, r)
	}
	return rs
}
