package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/kernelver"
	"github.com/ober-ingress/ober/loader"
)

// checkKernel places the running kernel against kernelver's bounds.
func checkKernel(env Env) Result {
	r := Result{Name: "kernel"}
	rel, err := env.proc().Sysctl("kernel.osrelease")
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, fmt.Sprintf("cannot read the kernel release: %v", err), "run ober doctor on Linux with /proc mounted"
		return r
	}
	v, err := kernelver.Parse(rel)
	if err != nil {
		r.Status, r.Detail, r.Fix = Warn, err.Error(), fmt.Sprintf("check `uname -r`; ober needs Linux %s or newer", kernelver.Tested())
		return r
	}
	fix := fmt.Sprintf("upgrade the kernel to %s or newer (Debian 12's kernel)", kernelver.Tested())
	switch kernelver.Judge(v) {
	case kernelver.Supported:
		r.Status, r.Detail = Pass, fmt.Sprintf("%s (>= %s)", rel, kernelver.Tested())
	case kernelver.Untested:
		r.Status, r.Detail, r.Fix = Warn, fmt.Sprintf("%s: older than %s, the oldest kernel ober is tested on", rel, kernelver.Tested()), fix
	default:
		r.Status, r.Detail, r.Fix = Fail, fmt.Sprintf("%s: older than %s, which lacks BPF features ober needs", rel, kernelver.Min()), fix
	}
	return r
}

// checkBTF: the loader relocates the programs against the kernel's BTF
// (CO-RE); without it the programs do not load.
func checkBTF(env Env) Result {
	if _, err := os.Stat(env.path("sys/kernel/btf/vmlinux")); err != nil {
		return Result{Name: "btf", Status: Fail,
			Detail: "no /sys/kernel/btf/vmlinux: the kernel was built without BTF, and the BPF programs cannot load",
			Fix:    "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's and Ubuntu's are)"}
	}
	return Result{Name: "btf", Status: Pass, Detail: "/sys/kernel/btf/vmlinux present"}
}

// checkBPFFS looks for a bpf filesystem that holds node.bpffs_root. ober
// mounts one when it is missing, so this is a warning: a mount made by
// ober is not in fstab and other tools will not find it after a reboot.
func checkBPFFS(env Env, cfg *config.Config) Result {
	root := loader.DefaultRoot
	if cfg != nil && cfg.Node.BPFFSRoot != "" {
		root = cfg.Node.BPFFSRoot
	}
	r := Result{Name: "bpffs"}
	ms, err := env.proc().Mounts()
	if err != nil {
		r.Status, r.Detail, r.Fix = Warn, fmt.Sprintf("cannot read /proc/mounts: %v", err), "mount /proc"
		return r
	}
	var mounts []string
	for _, m := range ms {
		if m.Type == "bpf" {
			mounts = append(mounts, m.Target)
		}
	}
	for _, m := range mounts {
		if root == m || strings.HasPrefix(root, strings.TrimSuffix(m, "/")+"/") {
			r.Status, r.Detail = Pass, fmt.Sprintf("bpf filesystem at %s holds %s", m, root)
			return r
		}
	}
	r.Status = Warn
	r.Detail = fmt.Sprintf("no bpf filesystem holds %s (ober mounts one at %s when it starts)", root, filepath.Dir(root))
	r.Fix = fmt.Sprintf("add `bpffs %s bpf defaults 0 0` to /etc/fstab and run `mount %s`", filepath.Dir(root), filepath.Dir(root))
	return r
}

// checkCPU: TLS throughput rests on AES instructions, and a VM whose CPU
// type is a generic model (QEMU's default) hides them and AVX2.
func checkCPU(env Env) []Result {
	ci, err := env.proc().CPUInfo()
	if err != nil {
		return []Result{{Name: "cpu", Status: Warn, Detail: fmt.Sprintf("cannot read /proc/cpuinfo: %v", err), Fix: "mount /proc"}}
	}
	const hostFix = "set the VM's CPU type to host (Proxmox: Hardware > Processors > Type host; libvirt: <cpu mode='host-passthrough'/>)"
	aes := Result{Name: "cpu aes", Status: Pass, Detail: "AES instructions present (flag aes)"}
	if !slices.Contains(ci.Flags, "aes") {
		aes.Status = Fail
		aes.Detail = "no AES instructions (flag aes missing): TLS throughput collapses to a fraction"
		aes.Fix = hostFix
	}
	typ := Result{Name: "cpu type", Status: Pass, Detail: ci.Model}
	if ci.Model == "" {
		typ.Detail = "model not reported"
	}
	generic := strings.Contains(ci.Model, "QEMU Virtual CPU") || strings.Contains(ci.Model, "Common KVM processor") ||
		strings.Contains(ci.Model, "kvm64") || strings.Contains(ci.Model, "qemu64")
	switch {
	case generic:
		typ.Status, typ.Detail, typ.Fix = Warn, fmt.Sprintf("%q is a generic virtual CPU model that hides the host's instructions", ci.Model), hostFix
	case ci.X86 && !slices.Contains(ci.Flags, "avx2"):
		typ.Status, typ.Detail, typ.Fix = Warn, fmt.Sprintf("%s without AVX2: the VM's CPU type likely hides the host's instructions (slower AES-GCM and hashing)", ci.Model), hostFix
	}
	return []Result{aes, typ}
}

// NativeXDPDrivers lists the drivers (the name under /sys/bus/*/drivers, as
// `ethtool -i` reports it) with native XDP in mainline 6.x kernels: the
// drivers that advertise NETDEV_XDP_ACT_BASIC. A driver
// not listed gets generic XDP, which works but runs after the skb is
// built and costs most of XDP's advantage. The slice is fresh on each call.
func NativeXDPDrivers() []string {
	return []string{
		"virtio_net", "veth", "tun", "netdevsim",
		"mlx4_core", "mlx4_en", "mlx5_core",
		"i40e", "ice", "ixgbe", "ixgbevf", "igb", "igc",
		"bnxt_en", "ena", "gve", "mana", "hv_netvsc", "vif", // vif: xen-netfront
		"nfp", "qede", "sfc", "sfc_siena", "thunder-nicvf", "fsl_dpaa2_eth", "fsl_enetc", "fec",
		"stmmaceth", "st_gmac", "mvneta", "mvpp2", "cpsw", "am65-cpsw-nuss",
		"atlantic", "ionic", "tsnep", "rvu_nicpf", "rvu_nicvf", "mtk_soc_eth", "netsec", "lan966x-switch",
		"bond", "funeth",
	}
}

// driver returns the driver of iface: the sysfs link for devices with a
// bus, else what ethtool says (veth, tun and bonds have no device link).
func driver(ctx context.Context, env Env, iface string) string {
	if target, err := os.Readlink(env.path(filepath.Join("sys/class/net", iface, "device/driver"))); err == nil {
		return filepath.Base(target)
	}
	if env.Exec == nil {
		return ""
	}
	out, err := env.exec(ctx, "ethtool", "-i", iface)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "driver:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// onlineCPUs counts the CPUs in /sys/devices/system/cpu/online ("0-3,6").
func onlineCPUs(env Env) (int, error) {
	s, err := env.readTrim("sys/devices/system/cpu/online")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("cpu list %q: %w", s, err)
			}
		}
		n += b - a + 1
	}
	return n, nil
}

// rxQueues counts the receive queues the kernel uses on iface.
func rxQueues(env Env, iface string) (int, error) {
	entries, err := os.ReadDir(env.path(filepath.Join("sys/class/net", iface, "queues")))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "rx-") {
			n++
		}
	}
	return n, nil
}

// checkInterfaces checks every node.interfaces entry: it exists here,
// its driver has native XDP, and a virtio NIC has a queue per vCPU.
func checkInterfaces(ctx context.Context, env Env, cfg *config.Config) []Result {
	var rs []Result
	cpus, cpuErr := onlineCPUs(env)
	for _, iface := range cfg.Node.Interfaces {
		r := Result{Name: "iface " + iface}
		if _, err := os.Stat(env.path(filepath.Join("sys/class/net", iface))); err != nil {
			r.Status = Fail
			r.Detail = fmt.Sprintf("no interface %s in this network namespace", iface)
			r.Fix = "correct node.interfaces, or run doctor where the interfaces are (ip netns exec NS ober doctor)"
			rs = append(rs, r)
			continue
		}
		drv := driver(ctx, env, iface)
		native := slices.Contains(NativeXDPDrivers(), drv)
		name := drv
		if name == "" {
			name = "unknown driver"
		}
		switch {
		case native:
			r.Status, r.Detail = Pass, fmt.Sprintf("%s: native XDP", name)
		case cfg.Node.XDPMode == "generic":
			r.Status, r.Detail = Pass, fmt.Sprintf("%s: generic XDP (node.xdp_mode generic)", name)
		case cfg.Node.XDPMode == "native":
			r.Status = Fail
			r.Detail = fmt.Sprintf("%s has no native XDP, and node.xdp_mode is native: attaching fails", name)
			r.Fix = "set node.xdp_mode to auto (generic XDP on this NIC) or use a NIC whose driver has native XDP"
		default:
			r.Status = Warn
			r.Detail = fmt.Sprintf("%s has no native XDP: ober attaches generic XDP, which runs after the kernel built the skb", name)
			r.Fix = "use a NIC with native XDP (virtio_net, mlx5_core, i40e, ice, ixgbe, bnxt_en, ena, ...) for full speed"
		}
		rs = append(rs, r)
		if drv == "virtio_net" {
			rs = append(rs, checkVirtioQueues(ctx, env, iface, cpus, cpuErr))
		}
	}
	return rs
}

var combinedRE = regexp.MustCompile(`(?m)^Combined:\s*(\d+)`)

// checkVirtioQueues: virtio-net spreads receive work over its queues, so
// with fewer queues than vCPUs some CPUs take every packet's softirq.
// For XDP_TX and XDP_REDIRECT (ober's RSTs and handoff forwarding) the
// driver also wants a send queue per CPU on top of the ones in use
// (virtnet_xdp_set: curr_queue_pairs + nr_cpu_ids <= max_queue_pairs);
// with fewer it falls back to a slower locked mode.
func checkVirtioQueues(ctx context.Context, env Env, iface string, cpus int, cpuErr error) Result {
	r := Result{Name: "queues " + iface}
	if cpuErr != nil {
		r.Status, r.Detail, r.Fix = Warn, fmt.Sprintf("cannot count the online CPUs: %v", cpuErr), "mount /sys"
		return r
	}
	rx, err := rxQueues(env, iface)
	if err != nil {
		r.Status, r.Detail, r.Fix = Warn, fmt.Sprintf("cannot count the queues of %s: %v", iface, err), "mount /sys"
		return r
	}
	vmFix := fmt.Sprintf("give the VM's NIC %d queues (Proxmox: net0 ... ,queues=%d; libvirt: <driver name='vhost' queues='%d'/>)", 2*cpus, 2*cpus, 2*cpus)
	if rx < cpus {
		r.Status = Fail
		queues := "queues"
		if rx == 1 {
			queues = "queue"
		}
		r.Detail = fmt.Sprintf("virtio_net with %d %s for %d CPUs: the NIC cannot spread packets over every CPU", rx, queues, cpus)
		r.Fix = fmt.Sprintf("`ethtool -L %s combined %d` when the NIC offers that many; else %s", iface, cpus, vmFix)
		return r
	}
	r.Status, r.Detail = Pass, fmt.Sprintf("virtio_net with %d queues for %d CPUs", rx, cpus)
	// The maximum is only visible through ethtool; without it, say nothing.
	out, err := env.exec(ctx, "ethtool", "-l", iface)
	if err != nil {
		return r
	}
	if m := combinedRE.FindStringSubmatch(string(out)); m != nil {
		if most, _ := strconv.Atoi(m[1]); most < rx+cpus {
			r.Status = Warn
			r.Detail = fmt.Sprintf("virtio_net with %d queues for %d CPUs, at most %d: native XDP needs %d (%d in use + one per CPU) for XDP_TX and XDP_REDIRECT, else they run in a slower locked mode",
				rx, cpus, most, rx+cpus, rx)
			r.Fix = vmFix
		}
	}
	return r
}
