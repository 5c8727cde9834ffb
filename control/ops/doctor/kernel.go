package doctor

import (
	"fmt"
	"os"
	"strconv"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/tuning"
)

// checkKernelServices looks at what the services the kernel forwards
// (modes udp and nat) need of the node: nftables, conntrack with room,
// and forwarding on for the families of their VIPs.
func checkKernelServices(env Env, cfg *config.Config) []Result {
	v4, v6 := false, false
	for i, s := range cfg.Services {
		if !config.IsKernelMode(s.Mode) {
			continue
		}
		vips := cfg.ServiceVIPs(i)
		if len(vips) == 0 { // from a pool: either family may come
			v4, v6 = true, true
		}
		for _, v := range vips {
			if v.Is4() {
				v4 = true
			} else {
				v6 = true
			}
		}
	}
	if !v4 && !v6 {
		return nil
	}
	var rs []Result
	nft := Result{Name: "nftables", Status: Pass, Detail: "nf_tables is loaded (ober's table: inet ober)"}
	if _, err := os.Stat(env.path("sys/module/nf_tables")); err != nil {
		nft.Status = Warn
		nft.Detail = "nf_tables is not loaded; the kernel loads it when ober first programs it, if the module is installed"
		nft.Fix = "`modprobe nf_tables nft_nat nft_numgen nft_hash nft_ct` to check that it can be"
	}
	rs = append(rs, nft)

	ct := Result{Name: "conntrack"}
	maxS, errMax := env.proc().Sysctl("net/netfilter/nf_conntrack_max")
	countS, errCount := env.proc().Sysctl("net/netfilter/nf_conntrack_count")
	maxN, err1 := strconv.ParseUint(maxS, 10, 64)
	count, err2 := strconv.ParseUint(countS, 10, 64)
	switch {
	case errMax != nil || errCount != nil || err1 != nil || err2 != nil:
		ct.Status, ct.Detail = Warn, "nf_conntrack is not loaded yet: it will be with ober's table, and then follows every flow of the node"
		ct.Fix = "`modprobe nf_conntrack`, then run ober doctor again to see the table's size"
	case count*10 >= maxN*8:
		ct.Status = Fail
		ct.Detail = fmt.Sprintf("%d of %d entries in use: a full table drops new flows, of every service", count, maxN)
		ct.Fix = fmt.Sprintf("raise net.netfilter.nf_conntrack_max (in %s)", tuning.File)
	default:
		ct.Status, ct.Detail = Pass, fmt.Sprintf("%d of %d entries in use", count, maxN)
	}
	rs = append(rs, ct)

	for _, f := range []struct {
		on      bool
		key, fs string
	}{{v4, "net.ipv4.ip_forward", "net/ipv4/ip_forward"}, {v6, "net.ipv6.conf.all.forwarding", "net/ipv6/conf/all/forwarding"}} {
		if !f.on {
			continue
		}
		r := Result{Name: f.key}
		v, err := env.proc().Sysctl(f.fs)
		switch {
		case err != nil:
			r.Status, r.Detail, r.Fix = Fail, fmt.Sprintf("cannot read %s: %v", f.key, err), "mount /proc"
		case v != "1":
			r.Status = Fail
			r.Detail = fmt.Sprintf("%s is %s: the packets of the udp and nat services are forwarded to their backends, and are dropped without it", f.key, v)
			r.Fix = fmt.Sprintf("`sysctl -w %s=1`, and add `%s = 1` to %s", f.key, f.key, tuning.File)
		default:
			r.Status, r.Detail = Pass, f.key+" = 1 (udp and nat services)"
		}
		rs = append(rs, r)
	}
	return rs
}
