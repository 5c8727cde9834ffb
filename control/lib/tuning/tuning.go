// Package tuning is the kernel tuning ober wants on a node: one table of
// sysctls that `ober doctor` compares the running kernel against and
// `ober bootstrap` writes to File.
package tuning

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// File is where the tuning belongs on a node, so that it survives a
// reboot.
const File = "/etc/sysctl.d/90-ober.conf"

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
	// Why is the reason, for reports and the file's comments.
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

// Compare reports whether current, as sysctl prints it, meets s.
func (s Sysctl) Compare(current string) (bool, error) {
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

// Tuning is the table of sysctls ober wants on a node, sized for one node
// moving tens of GB/s of S3 traffic through HAProxy. The slice is fresh on
// each call.
func Tuning() []Sysctl {
	const buf = "67108864" // 64 MiB: a 25 Gbit/s flow over a few ms of RTT
	return []Sysctl{
		{Key: "net.core.somaxconn", Value: "4096", Op: AtLeast, Why: "accept backlog of each HAProxy listener under connection bursts"},
		{Key: "net.core.netdev_max_backlog", Value: "16384", Op: AtLeast, Why: "packets queued per CPU before the stack drops them at high rates"},
		{Key: "net.core.netdev_budget", Value: "600", Op: AtLeast, Why: "packets one softirq round may take off the NIC queues before yielding"},
		{Key: "net.core.netdev_budget_usecs", Value: "8000", Op: AtLeast, Why: "time one softirq round may spend on the NIC queues at line rate"},
		{Key: "net.ipv4.tcp_max_syn_backlog", Value: "8192", Op: AtLeast, Why: "half-open connections kept during SYN bursts"},
		{Key: "net.core.rmem_max", Value: buf, Op: AtLeast, Why: "lets receive windows grow for fast S3 uploads"},
		{Key: "net.core.wmem_max", Value: buf, Op: AtLeast, Why: "lets send buffers grow for fast S3 downloads"},
		{Key: "net.ipv4.tcp_rmem", Value: "4096 131072 " + buf, Field: 2, Op: AtLeast, Why: "TCP receive buffer autotuning limit"},
		{Key: "net.ipv4.tcp_wmem", Value: "4096 16384 " + buf, Field: 2, Op: AtLeast, Why: "TCP send buffer autotuning limit"},
		{Key: "net.ipv4.tcp_congestion_control", Value: "bbr", Op: Equal, Why: "keeps throughput up on lossy or long paths", Prepare: "modprobe tcp_bbr"},
		{Key: "net.core.default_qdisc", Value: "fq", Op: Equal, Why: "fq paces BBR's flows"},
		{Key: "net.ipv4.ip_local_port_range", Value: "10240 65535", Field: 0, Op: AtMost, Why: "source ports for HAProxy's connections to the backends"},
		{Key: "net.ipv4.tcp_tw_reuse", Value: "1", Op: Equal, Why: "backend connections reuse ports still in TIME_WAIT instead of running out"},
		{Key: "net.ipv4.tcp_slow_start_after_idle", Value: "0", Op: Equal, Why: "kept-alive S3 connections resume at full speed after a pause"},
		{Key: "net.ipv4.tcp_mtu_probing", Value: "1", Op: AtLeast, Why: "a connection whose packets vanish on a path with a smaller MTU (its ICMP lost, or hashed to another node under ECMP) probes a smaller MSS instead of stalling"},
		{Key: "net.ipv4.conf.all.arp_ignore", Value: "1", Op: AtLeast, Why: "answer ARP only for addresses on the interface asked: VIPs on lo, and VIPs a VRRP backup does not hold, are not claimed on the other NICs"},
		{Key: "net.ipv4.conf.all.arp_announce", Value: "2", Op: Equal, Why: "ARP requests carry the outgoing interface's own address, never a VIP"},
		{Key: "fs.file-max", Value: "2097152", Op: AtLeast, Why: "two descriptors per proxied connection, over every instance"},
		{Key: "fs.nr_open", Value: "1048576", Op: AtLeast, Why: "per-process descriptor limit HAProxy's maxconn needs"},
		{Key: "vm.panic_on_oom", Value: "1", Op: Equal, Why: "a node out of memory is half alive (an instance killed, VIPs still held); panic so the peers take over"},
		{Key: "kernel.panic", Value: "10", Op: AtLeast, Why: "reboot 10 s after a panic, so the node comes back instead of hanging"},
	}
}

// Conf is the content of File: a header saying whose it is, then each
// sysctl under a comment with its reason.
func Conf() []byte {
	var b bytes.Buffer
	b.WriteString("# Kernel tuning for ober, the S3 ingress, written by `ober bootstrap`.\n")
	b.WriteString("# `ober bootstrap` rewrites this file and `ober uninstall` removes it: put\n")
	b.WriteString("# local changes in a file that sorts after it, such as 91-local.conf.\n")
	b.WriteString("# `ober doctor` compares the running kernel with these values.\n")
	for _, s := range Tuning() {
		fmt.Fprintf(&b, "\n# %s\n%s\n", s.Why, s.Line())
	}
	return b.Bytes()
}
