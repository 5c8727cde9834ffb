package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ober-ingress/ober/control/config"
)

// SysctlFile is where the tuning belongs on a node, so that it survives
// a reboot.
const SysctlFile = "/etc/sysctl.d/90-ober.conf"

// Op is how a sysctl's current value is compared with the tuning.
type Op string

// The comparisons.
const (
	AtLeast Op = ">="
	AtMost  Op = "<="
	Equal   Op = "="
)

// Sysctl is one line of ober's tuning.
type Sysctl struct {
	// Key is the sysctl name, such as "net.core.somaxconn".
	Key string
	// Value is what the tuning file sets, written as sysctl prints it
	// (several fields separated by spaces).
	Value string
	// Field is the index of the field of Value (and of the current
	// value) that is compared; the others are only written.
	Field int
	// Op compares the current field with Value's: AtLeast and AtMost
	// numerically, Equal as text.
	Op Op
	// Why is the reason, for the report.
	Why string
	// Prepare is a command the value needs first (a module), or "".
	Prepare string
}

// Want is the compared field of Value.
func (s Sysctl) Want() string {
	f := strings.Fields(s.Value)
	if s.Field < len(f) {
		return f[s.Field]
	}
	return s.Value
}

// Line is the sysctl.d line for s.
func (s Sysctl) Line() string { return s.Key + " = " + s.Value }

// Tuning is the table of sysctls ober wants on a node. `ober doctor`
// compares against it and `ober bootstrap` writes it to SysctlFile; the
// slice is fresh on each call.
func Tuning() []Sysctl {
	const buf = "67108864" // 64 MiB: a 25 Gbit/s flow over a few ms of RTT
	return []Sysctl{
		{Key: "net.core.somaxconn", Value: "4096", Op: AtLeast, Why: "accept backlog of each HAProxy listener under connection bursts"},
		{Key: "net.core.netdev_max_backlog", Value: "16384", Op: AtLeast, Why: "packets queued per CPU before the stack drops them at high rates"},
		{Key: "net.ipv4.tcp_max_syn_backlog", Value: "8192", Op: AtLeast, Why: "half-open connections kept during SYN bursts"},
		{Key: "net.core.rmem_max", Value: buf, Op: AtLeast, Why: "lets receive windows grow for fast S3 uploads"},
		{Key: "net.core.wmem_max", Value: buf, Op: AtLeast, Why: "lets send buffers grow for fast S3 downloads"},
		{Key: "net.ipv4.tcp_rmem", Value: "4096 131072 " + buf, Field: 2, Op: AtLeast, Why: "TCP receive buffer autotuning limit"},
		{Key: "net.ipv4.tcp_wmem", Value: "4096 16384 " + buf, Field: 2, Op: AtLeast, Why: "TCP send buffer autotuning limit"},
		{Key: "net.ipv4.tcp_congestion_control", Value: "bbr", Op: Equal, Why: "keeps throughput up on lossy or long paths", Prepare: "modprobe tcp_bbr"},
		{Key: "net.core.default_qdisc", Value: "fq", Op: Equal, Why: "fq paces BBR's flows"},
		{Key: "net.ipv4.ip_local_port_range", Value: "10240 65535", Field: 0, Op: AtMost, Why: "source ports for HAProxy's connections to the backends"},
		{Key: "net.ipv4.tcp_slow_start_after_idle", Value: "0", Op: Equal, Why: "kept-alive S3 connections resume at full speed after a pause"},
		{Key: "fs.file-max", Value: "2097152", Op: AtLeast, Why: "two descriptors per proxied connection, over every instance"},
		{Key: "fs.nr_open", Value: "1048576", Op: AtLeast, Why: "per-process descriptor limit HAProxy's maxconn needs"},
	}
}

// sysctlPath is the /proc/sys file of a sysctl. Interface names in keys
// may hold dots (eth0.100), so callers with such keys build the path
// themselves.
func sysctlPath(key string) string {
	return filepath.Join("proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// compare reports whether current meets s.
func (s Sysctl) compare(current string) (bool, error) {
	f := strings.Fields(current)
	if s.Field >= len(f) {
		return false, fmt.Errorf("%q has no field %d", current, s.Field+1)
	}
	cur, want := f[s.Field], s.Want()
	if s.Op == Equal {
		return cur == want, nil
	}
	c, err := strconv.ParseInt(cur, 10, 64)
	if err != nil {
		return false, fmt.Errorf("%q is not a number", cur)
	}
	w, err := strconv.ParseInt(want, 10, 64)
	if err != nil {
		return false, fmt.Errorf("tuning value %q is not a number", want)
	}
	if s.Op == AtMost {
		return c <= w, nil
	}
	return c >= w, nil
}

// checkSysctls compares the running values with Tuning: a warning for
// each one short of it (all named "sysctl", so the report's columns stay
// narrow; the key leads the detail), one pass line when all are met. The values are
// those of the network namespace doctor runs in.
func checkSysctls(env Env) []Result {
	var rs []Result
	tuning := Tuning()
	for _, s := range tuning {
		const name = "sysctl"
		cur, err := env.readTrim(sysctlPath(s.Key))
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
		ok, err := s.compare(cur)
		if err != nil {
			rs = append(rs, Result{Name: name, Status: Warn, Detail: s.Key + ": " + err.Error(), Fix: s.fix()})
			continue
		}
		if !ok {
			rs = append(rs, Result{Name: name, Status: Warn,
				Detail: fmt.Sprintf("%s = %s, wanted %s %s (%s)", s.Key, cur, s.Op, s.Want(), s.Why), Fix: s.fix()})
		}
	}
	if len(rs) == 0 {
		rs = append(rs, Result{Name: "sysctl", Status: Pass, Detail: fmt.Sprintf("all %d values of ober's tuning met", len(tuning))})
	}
	return rs
}

func (s Sysctl) fix() string {
	cmd := fmt.Sprintf("sysctl -w %s=%q", s.Key, s.Value)
	if !strings.Contains(s.Value, " ") {
		cmd = fmt.Sprintf("sysctl -w %s=%s", s.Key, s.Value)
	}
	if s.Prepare != "" {
		cmd = s.Prepare + " && " + cmd
	}
	return fmt.Sprintf("`%s`, and add `%s` to %s", cmd, s.Line(), SysctlFile)
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
		v, err := env.readTrim(filepath.Join("proc/sys/net/ipv4/conf", iface, "forwarding"))
		switch {
		case err != nil:
			r.Status, r.Detail = Fail, fmt.Sprintf("cannot read %s: %v", key, err)
			r.Fix = "check node.interfaces"
		case v != "1":
			r.Status = Fail
			r.Detail = fmt.Sprintf("%s is %s: BGP handoff forwards connections to the other nodes through %s, and the daemon refuses to start", key, v, iface)
			r.Fix = fmt.Sprintf("`sysctl -w %s=1`, and add `%s = 1` to %s", key, key, SysctlFile)
		default:
			r.Status, r.Detail = Pass, key+" = 1 (BGP handoff)"
		}
		rs = append(rs, r)
	}
	return rs
}
