package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/tuning"
)

func TestKernel(t *testing.T) {
	for _, c := range []struct {
		release string
		st      Status
		want    string
	}{
		{"6.18.44-fc-v509", Pass, "6.18.44-fc-v509 (>= 6.1)"},
		{"6.1.0-18-amd64", Pass, ">= 6.1"},
		{"5.15.0-91-generic", Warn, "older than 6.1"},
		{"5.10.0-28-amd64", Fail, "upgrade the kernel"},
		{"garbage", Warn, "not understood"},
	} {
		f := newFake(t).file("proc/sys/kernel/osrelease", c.release+"\n")
		requireStatus(t, checkKernel(f.env()), c.st, c.want)
	}
	requireStatus(t, checkKernel(newFake(t).env()), Fail, "cannot read")
}

func TestBTF(t *testing.T) {
	requireStatus(t, checkBTF(newFake(t).env()), Fail, "CONFIG_DEBUG_INFO_BTF")
	f := newFake(t).file("sys/kernel/btf/vmlinux", "btf")
	requireStatus(t, checkBTF(f.env()), Pass, "present")
}

func TestBPFFS(t *testing.T) {
	mounts := "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n"
	f := newFake(t).file("proc/mounts", mounts)
	requireStatus(t, checkBPFFS(f.env(), nil), Warn, "bpffs /sys/fs/bpf bpf defaults 0 0")

	f = newFake(t).file("proc/mounts", mounts+"bpf /sys/fs/bpf bpf rw,mode=700 0 0\n")
	requireStatus(t, checkBPFFS(f.env(), nil), Pass, "/sys/fs/bpf holds /sys/fs/bpf/ober")

	cfg := baseConfig()
	cfg.Node.BPFFSRoot = "/run/bpf/ober"
	requireStatus(t, checkBPFFS(f.env(), cfg), Warn, "bpffs /run/bpf bpf defaults 0 0")
	f = newFake(t).file("proc/mounts", mounts+"none /run/bpf bpf rw 0 0\n")
	requireStatus(t, checkBPFFS(f.env(), cfg), Pass)
}

func TestCPU(t *testing.T) {
	cpuinfo := func(model, flags string) string {
		return "processor\t: 0\nmodel name\t: " + model + "\nflags\t\t: " + flags + "\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: \n"
	}
	for _, c := range []struct {
		name          string
		info          string
		aes, typ      Status
		wantAES, typ2 string
	}{
		{"host", cpuinfo("AMD EPYC 7763 64-Core Processor", "fpu sse2 aes avx2 hypervisor"), Pass, Pass, "flag aes", "EPYC"},
		{"no aes", cpuinfo("AMD EPYC", "fpu sse2 avx2"), Fail, Pass, "TLS throughput collapses", "EPYC"},
		{"qemu", cpuinfo("QEMU Virtual CPU version 2.5+", "fpu sse2"), Fail, Warn, "CPU type to host", "generic virtual CPU"},
		{"kvm", cpuinfo("Common KVM processor", "fpu aes"), Pass, Warn, "flag aes", "CPU type to host"},
		{"no avx2", cpuinfo("Intel Xeon Processor (Cascadelake)", "fpu aes"), Pass, Warn, "flag aes", "without AVX2"},
		{"arm64", "processor\t: 0\nFeatures\t: fp asimd aes pmull sha1 sha2\n", Pass, Pass, "flag aes", "model not reported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rs := checkCPU(newFake(t).file("proc/cpuinfo", c.info).env())
			requireStatus(t, one(t, rs, "cpu aes"), c.aes, c.wantAES)
			requireStatus(t, one(t, rs, "cpu type"), c.typ, c.typ2)
		})
	}
}

func TestInterfaces(t *testing.T) {
	ctx := context.Background()
	cfg := baseConfig()
	cfg.Node.Interfaces = []string{"eth1"}

	// Missing: fail, naming the namespace.
	f := newFake(t).file("sys/devices/system/cpu/online", "0-3\n")
	requireStatus(t, one(t, checkInterfaces(ctx, f.env(), cfg), "iface eth1"), Fail, "no interface eth1", "ip netns exec")

	// virtio_net with one queue on four CPUs: native XDP, but a fail on
	// the queues.
	f = newFake(t).file("sys/devices/system/cpu/online", "0-3\n").nic("eth1", "virtio_net", 1)
	rs := checkInterfaces(ctx, f.env(), cfg)
	requireStatus(t, one(t, rs, "iface eth1"), Pass, "virtio_net: native XDP")
	requireStatus(t, one(t, rs, "queues eth1"), Fail, "1 queue for 4 CPUs", "ethtool -L eth1 combined 4", "queues=8")

	// Enough queues to spread, too few for dedicated XDP send queues.
	f = newFake(t).file("sys/devices/system/cpu/online", "0-3\n").nic("eth1", "virtio_net", 4)
	f.exec["ethtool -l eth1"] = "Channel parameters for eth1:\nPre-set maximums:\nRX:\t\tn/a\nCombined:\t4\nCurrent hardware settings:\nCombined:\t4\n"
	requireStatus(t, one(t, checkInterfaces(ctx, f.env(), cfg), "queues eth1"), Warn, "at most 4", "locked mode", "queues=8")
	f.exec["ethtool -l eth1"] = "Pre-set maximums:\nCombined:\t8\nCurrent hardware settings:\nCombined:\t4\n"
	requireStatus(t, one(t, checkInterfaces(ctx, f.env(), cfg), "queues eth1"), Pass, "4 queues for 4 CPUs")
	delete(f.exec, "ethtool -l eth1") // no ethtool: the maximum is unknown, no verdict on it
	requireStatus(t, one(t, checkInterfaces(ctx, f.env(), cfg), "queues eth1"), Pass)

	// A driver without native XDP: generic in auto, a fail in native.
	f = newFake(t).file("sys/devices/system/cpu/online", "0-1\n").nic("eth1", "e1000", 1)
	rs = checkInterfaces(ctx, f.env(), cfg)
	requireStatus(t, one(t, rs, "iface eth1"), Warn, "e1000 has no native XDP", "generic XDP")
	require.Empty(t, find(rs, "queues eth1"), "the queue check is virtio's")
	cfg.Node.XDPMode = "native"
	requireStatus(t, one(t, checkInterfaces(ctx, f.env(), cfg), "iface eth1"), Fail, "attaching fails", "xdp_mode to auto")
	cfg.Node.XDPMode = "generic"
	requireStatus(t, one(t, checkInterfaces(ctx, f.env(), cfg), "iface eth1"), Pass, "generic XDP (node.xdp_mode generic)")

	// veth has no device link: ethtool names the driver.
	cfg.Node.XDPMode = "auto"
	cfg.Node.Interfaces = []string{"veth-s"}
	f = newFake(t).file("sys/devices/system/cpu/online", "0-1\n").nic("veth-s", "", 2)
	f.exec["ethtool -i veth-s"] = "driver: veth\nversion: 1.0\n"
	requireStatus(t, one(t, checkInterfaces(ctx, f.env(), cfg), "iface veth-s"), Pass, "veth: native XDP")
}

func TestOnlineCPUs(t *testing.T) {
	for s, want := range map[string]int{"0": 1, "0-1": 2, "0-3,6,8-9": 7} {
		n, err := onlineCPUs(newFake(t).file("sys/devices/system/cpu/online", s+"\n").env())
		require.NoError(t, err)
		require.Equal(t, want, n, s)
	}
}

// goodSysctls writes every tuning value into a fake /proc/sys.
func goodSysctls(f *fake) *fake {
	for _, s := range tuning.Tuning() {
		f.file("proc/sys/"+strings.ReplaceAll(s.Key, ".", "/"), strings.ReplaceAll(s.Value, " ", "\t")+"\n")
	}
	return f
}

func TestSysctls(t *testing.T) {
	f := goodSysctls(newFake(t))
	rs := checkSysctls(f.env())
	require.Len(t, rs, 1)
	requireStatus(t, rs[0], Pass, fmt.Sprintf("all %d values", len(tuning.Tuning())))

	// Better than the tuning passes too.
	f.file("proc/sys/net/core/somaxconn", "65535\n").file("proc/sys/net/ipv4/ip_local_port_range", "1024\t65535\n")
	require.Equal(t, Pass, checkSysctls(f.env())[0].Status)

	f.file("proc/sys/net/core/somaxconn", "128\n").
		file("proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n").
		file("proc/sys/net/ipv4/tcp_congestion_control", "cubic\n").
		file("proc/sys/net/ipv4/ip_local_port_range", "32768\t60999\n")
	rs = checkSysctls(f.env())
	require.Len(t, rs, 4, "%+v", rs)
	requireStatus(t, rs[0], Warn, "net.core.somaxconn = 128, wanted >= 4096", "sysctl -w net.core.somaxconn=4096", "/etc/sysctl.d/90-ober.conf")
	requireStatus(t, rs[1], Warn, "net.ipv4.tcp_rmem = 4096 131072 6291456, wanted >= 67108864", `sysctl -w net.ipv4.tcp_rmem="4096 131072 67108864"`)
	requireStatus(t, rs[2], Warn, "cubic, wanted = bbr", "modprobe tcp_bbr && sysctl -w net.ipv4.tcp_congestion_control=bbr")
	requireStatus(t, rs[3], Warn, "32768 60999, wanted <= 10240")

	// Missing from the kernel: a warning, not a crash. A net.* one may
	// live in the root network namespace only.
	require.NoError(t, os.Remove(f.root+"/proc/sys/fs/nr_open"))
	require.NoError(t, os.Remove(f.root+"/proc/sys/net/core/default_qdisc"))
	rs = checkSysctls(f.env())
	require.Len(t, rs, 6, "%+v", rs)
	requireStatus(t, rs[3], Warn, "net.core.default_qdisc is not visible here", "`sysctl net.core.default_qdisc` in the root namespace")
	requireStatus(t, rs[5], Warn, "fs.nr_open: cannot read it")
}

func TestForwarding(t *testing.T) {
	cfg := baseConfig()
	require.Empty(t, checkForwarding(newFake(t).env(), cfg), "only BGP handoff needs forwarding")
	cfg.HA = config.HA{Mode: "bgp", BGP: &config.BGP{ASN: 65001, Handoff: config.Handoff{Nodes: []config.Addr{addr("10.1.0.1"), addr("10.1.0.2")}, Port: 4793}}}
	f := newFake(t).file("proc/sys/net/ipv4/conf/eth1/forwarding", "0\n")
	requireStatus(t, one(t, checkForwarding(f.env(), cfg), "forwarding eth1"), Fail,
		"net.ipv4.conf.eth1.forwarding is 0", "refuses to start", "sysctl -w net.ipv4.conf.eth1.forwarding=1")
	f.file("proc/sys/net/ipv4/conf/eth1/forwarding", "1\n")
	requireStatus(t, one(t, checkForwarding(f.env(), cfg), "forwarding eth1"), Pass)

	// VRRP with the handoff: forwarding, and only the holder answers ARP.
	cfg.HA = config.HA{Mode: "vrrp", VRRP: &config.VRRP{Interface: "eth1", Handoff: &config.Handoff{KeyFile: "/etc/ober/handoff.key"}}}
	f = newFake(t).file("proc/sys/net/ipv4/conf/eth1/forwarding", "1\n").
		file("proc/sys/net/ipv4/conf/all/arp_ignore", "0\n").file("proc/sys/net/ipv4/conf/eth1/arp_ignore", "0\n")
	requireStatus(t, one(t, checkForwarding(f.env(), cfg), "forwarding eth1"), Pass, "VRRP handoff")
	requireStatus(t, one(t, checkForwarding(f.env(), cfg), "arp_ignore eth1"), Fail,
		"net.ipv4.conf.eth1.arp_ignore is 0", "answer ARP for VIPs it does not hold", "sysctl -w net.ipv4.conf.eth1.arp_ignore=1")
	f.file("proc/sys/net/ipv4/conf/eth1/arp_ignore", "1\n")
	requireStatus(t, one(t, checkForwarding(f.env(), cfg), "arp_ignore eth1"), Pass)
	f.file("proc/sys/net/ipv4/conf/all/arp_ignore", "2\n").file("proc/sys/net/ipv4/conf/eth1/arp_ignore", "0\n")
	requireStatus(t, one(t, checkForwarding(f.env(), cfg), "arp_ignore all"), Pass)
	// Without the handoff VRRP asks for neither.
	cfg.HA.VRRP.Handoff = nil
	require.Empty(t, checkForwarding(f.env(), cfg))
}

const haproxy2612 = `HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/
Status: long-term supported branch - will stop receiving fixes around Q2 2027.
Built with multi-threading support (MAX_THREADS=64, default=2).
Built with OpenSSL version : OpenSSL 3.0.22 25 Aug 2026
Running on OpenSSL version : OpenSSL 3.0.22 25 Aug 2026
OpenSSL library supports TLS extensions : yes
`

const haproxy32awslc = `HAProxy version 3.2.10-35a71a0 2025/12/18 - https://haproxy.org/
Built with SSL library version : OpenSSL 1.1.1 (compatible; AWS-LC 1.66.1)
Running on SSL library version : AWS-LC 1.66.1
SSL library supports TLS extensions : yes
`

func TestHAProxy(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	requireStatus(t, checkHAProxy(ctx, f.env(), nil), Fail, "cannot run haproxy -vv", "apt-get install haproxy")

	f.exec["haproxy -vv"] = haproxy2612
	requireStatus(t, checkHAProxy(ctx, f.env(), nil), Warn, "HAProxy 2.6.12, OpenSSL 3.0.22", "haproxy/haproxy#2114", "2.6.14")
	f.exec["haproxy -vv"] = strings.Replace(haproxy2612, "2.6.12-1+deb12u4", "2.6.22", 1)
	requireStatus(t, checkHAProxy(ctx, f.env(), nil), Pass, "HAProxy 2.6.22, OpenSSL 3.0.22")
	f.exec["haproxy -vv"] = "HAProxy version 2.4.17-9f97155 2022/05/13 - https://haproxy.org/\n"
	requireStatus(t, checkHAProxy(ctx, f.env(), nil), Fail, "2.4.17 is too old")
	f.exec["haproxy -vv"] = "something else\n"
	requireStatus(t, checkHAProxy(ctx, f.env(), nil), Fail, "no HAProxy version line")

	// The configured binary is the one checked; AWS-LC is a pass.
	cfg := baseConfig()
	cfg.HAProxy.Binary = "/opt/haproxy/sbin/haproxy"
	f.exec["/opt/haproxy/sbin/haproxy -vv"] = haproxy32awslc
	requireStatus(t, checkHAProxy(ctx, f.env(), cfg), Pass, "HAProxy 3.2.10, AWS-LC 1.66.1")
}

func vrrpConfig() *config.Config {
	cfg := baseConfig()
	cfg.HA = config.HA{Mode: "vrrp", VRRP: &config.VRRP{
		Nodes:          []config.Addr{addr("10.0.0.1"), addr("10.0.0.2")},
		Interface:      "eth1",
		FirstVRID:      51,
		AdvertInterval: config.Duration{Duration: 100 * time.Millisecond},
		Keepalived:     "keepalived",
	}}
	return cfg
}

func TestVRRP(t *testing.T) {
	ctx := context.Background()
	cfg := vrrpConfig()
	f := newFake(t).nic("eth1", "virtio_net", 1)
	rs := checkHA(ctx, f.env(), cfg, false)
	requireStatus(t, one(t, rs, "keepalived"), Fail, "cannot run keepalived --version", "apt-get install keepalived")
	requireStatus(t, one(t, rs, "vrrp"), Fail, "none of ha.vrrp.nodes", "ha.vrrp.self")

	f.exec["keepalived --version"] = "Keepalived v2.2.7 (01/16,2022)\n\nCopyright(C) 2001-2022 Alexandre Cassen\n"
	f.addrs["eth1"] = []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fe80::1")}
	rs = checkHA(ctx, f.env(), cfg, false)
	requireStatus(t, one(t, rs, "keepalived"), Pass, "v2.2.7")
	requireStatus(t, one(t, rs, "vrrp"), Pass, "self 10.0.0.2; 2 nodes, VRIDs from 51, advert every 100ms on eth1")

	f.exec["keepalived --version"] = "Keepalived v2.1.5 (07/13,2020)\n"
	requireStatus(t, one(t, checkHA(ctx, f.env(), cfg, false), "keepalived"), Fail, "2.1 is too old")

	cfg.HA.VRRP.Self = addr("10.0.0.1")
	requireStatus(t, one(t, checkHA(ctx, f.env(), cfg, false), "vrrp"), Fail, "ha.vrrp.self 10.0.0.1 is not an address of eth1")

	cfg.HA.VRRP.Interface = "eth9"
	requireStatus(t, one(t, checkHA(ctx, f.env(), cfg, false), "vrrp"), Fail, "eth9 does not exist")
}

func bgpConfig() *config.Config {
	cfg := baseConfig()
	cfg.HA = config.HA{Mode: "bgp", BGP: &config.BGP{
		ASN:        65001,
		ListenPort: 179,
		Peers: []config.BGPPeer{
			{Address: addr("10.0.0.254"), ASN: 65000, HoldTime: config.Duration{Duration: 9 * time.Second},
				BFD: config.BFD{Enabled: true, Interval: config.Duration{Duration: 300 * time.Millisecond}, Multiplier: 3}},
			{Address: addr("10.0.1.254"), ASN: 65000, HoldTime: config.Duration{Duration: 9 * time.Second}},
		},
	}}
	return cfg
}

func TestBGP(t *testing.T) {
	ctx := context.Background()
	cfg := bgpConfig()
	f := newFake(t)
	rs := checkHA(ctx, f.env(), cfg, false)
	requireStatus(t, one(t, rs, "bgp"), Pass, "AS65001, 2 peers: 10.0.0.254 AS65000 BFD 300ms x3, 10.0.1.254 AS65000")
	requireStatus(t, one(t, rs, "bgp port"), Pass, "TCP :179 free")
	require.Empty(t, find(rs, "handoff port"))

	f.binds["tcp :179"] = addrInUse
	requireStatus(t, one(t, checkHA(ctx, f.env(), cfg, false), "bgp port"), Fail, "taken by another program", "ss -ltnp 'sport = :179'")
	requireStatus(t, one(t, checkHA(ctx, f.env(), cfg, true), "bgp port"), Pass, "in use by ober")

	cfg.HA.BGP.Peers[0].BFD.Interval.Duration = 20 * time.Millisecond
	cfg.HA.BGP.Peers[1].HoldTime.Duration = 0
	cfg.HA.BGP.Handoff = config.Handoff{Nodes: []config.Addr{addr("10.1.0.1")}, Port: 4793}
	f.binds["udp :4793"] = addrInUse
	rs = checkHA(ctx, f.env(), cfg, false)
	requireStatus(t, one(t, rs, "bgp"), Warn, "BFD interval 20ms", "hold time 0s", "handoff among 1 nodes on UDP 4793")
	requireStatus(t, one(t, rs, "handoff port"), Fail, "UDP :4793 is taken", "ss -lunp")
}

func TestHANone(t *testing.T) {
	requireStatus(t, one(t, checkHA(context.Background(), newFake(t).env(), baseConfig(), false), "ha"), Pass, "ha.mode none")
}

func TestPorts(t *testing.T) {
	cfg := baseConfig()
	cfg.VIPs = append(cfg.VIPs, addr("2001:db8::10"))
	cfg.Services = append(cfg.Services, config.Service{Name: "https", Port: 443, Mode: "tls", VIPs: []config.Addr{addr("192.0.2.10")}})
	f := newFake(t)
	rs := checkPorts(f.env(), cfg, false)
	requireStatus(t, one(t, rs, "api port"), Pass, "TCP 127.0.0.1:8404 free")
	requireStatus(t, one(t, rs, "service ports"), Pass, "192.0.2.10:80, 2001:db8::10:80, 192.0.2.10:443")

	// The API port taken by someone else stops the daemon; taken by the
	// daemon it is fine.
	f.binds["tcp 127.0.0.1:8404"] = addrInUse
	requireStatus(t, one(t, checkPorts(f.env(), cfg, false), "api port"), Fail, "taken by another program", "api.listen")
	requireStatus(t, one(t, checkPorts(f.env(), cfg, true), "api port"), Pass, "in use by ober")

	// A VIP not on the node: the wildcard listener is what matters.
	f.binds["tcp 192.0.2.10:443"] = addrNotLocal
	f.binds["tcp4 0.0.0.0:443"] = addrInUse
	r := one(t, checkPorts(f.env(), cfg, true), "service ports")
	requireStatus(t, r, Warn, "another program listens on 0.0.0.0:443 (https)", "sk_lookup", "ss -ltnp 'sport = :443'")
}

func TestDaemonRunning(t *testing.T) {
	f := newFake(t)
	require.False(t, daemonRunning(context.Background(), f.env(), baseConfig()))
	f.up = true
	require.True(t, daemonRunning(context.Background(), f.env(), baseConfig()))
	require.Equal(t, "127.0.0.1:8404", localAddr("0.0.0.0:8404"))
	require.Equal(t, "[::1]:8404", localAddr("[::]:8404"))
}

func tlsConfig(cert, key string) *config.Config {
	cfg := baseConfig()
	cfg.Services = []config.Service{
		{Name: "https", Port: 443, Mode: "tls", TLS: &config.TLS{Cert: cert, Key: key}},
		{Name: "lab", Port: 8443, Mode: "tls", TLS: &config.TLS{SelfSigned: true}},
		{Name: "http", Port: 80, Mode: "http"},
	}
	return cfg
}

func TestCerts(t *testing.T) {
	dir := t.TempDir()
	env := newFake(t).env()
	year := 365 * 24 * time.Hour

	cert, key, _ := certPair(t, dir, "good", now.Add(-year), now.Add(year), []string{"s3.example.com"})
	rs := checkCerts(env, tlsConfig(cert, key))
	require.Len(t, rs, 2, "one per TLS service")
	requireStatus(t, one(t, rs, "cert https"), Pass, "s3.example.com, expires 2027-06-01 (365 days)")
	requireStatus(t, one(t, rs, "cert lab"), Pass, "self-signed")

	// Key in the certificate file.
	both := dir + "/both.pem"
	cb, _ := os.ReadFile(cert)
	kb, _ := os.ReadFile(key)
	require.NoError(t, os.WriteFile(both, append(cb, kb...), 0o600))
	requireStatus(t, one(t, checkCerts(env, tlsConfig(both, "")), "cert https"), Pass)

	cert, key, _ = certPair(t, dir, "expired", now.Add(-2*year), now.Add(-24*time.Hour), []string{"s3.example.com"})
	requireStatus(t, one(t, checkCerts(env, tlsConfig(cert, key)), "cert https"), Fail, "expired on 2026-05-31", "renew")

	cert, key, _ = certPair(t, dir, "soon", now.Add(-year), now.Add(10*24*time.Hour), []string{"s3.example.com"})
	requireStatus(t, one(t, checkCerts(env, tlsConfig(cert, key)), "cert https"), Warn, "expires in 10 days (2026-06-11)", "renew")

	_, otherKey, _ := certPair(t, dir, "other", now.Add(-year), now.Add(year), []string{"x.example.com"})
	cert, _, _ = certPair(t, dir, "mismatch", now.Add(-year), now.Add(year), []string{"s3.example.com"})
	requireStatus(t, one(t, checkCerts(env, tlsConfig(cert, otherKey)), "cert https"), Fail, "does not match the certificate")

	cert, key, _ = certPair(t, dir, "nosan", now.Add(-year), now.Add(year), nil)
	requireStatus(t, one(t, checkCerts(env, tlsConfig(cert, key)), "cert https"), Warn, "names no DNS name", "SANs")

	requireStatus(t, one(t, checkCerts(env, tlsConfig(dir+"/missing.pem", "")), "cert https"), Fail, "cannot read")
	require.NoError(t, os.WriteFile(dir+"/nokey.pem", cb, 0o600))
	requireStatus(t, one(t, checkCerts(env, tlsConfig(dir+"/nokey.pem", "")), "cert https"), Fail, "holds 0 private keys")
}

func TestBackends(t *testing.T) {
	ctx := context.Background()
	cfg := baseConfig()
	cfg.Backends.Servers = []config.BackendServer{{Name: "s0", Address: "10.0.0.1:7480"}, {Name: "s1", Address: "rgw1.example:7480"}}
	f := newFake(t)
	requireStatus(t, checkBackends(ctx, f.env(), cfg), Pass, "2 of 2 reachable")
	f.dials["rgw1.example:7480"] = errors.New("connection refused")
	requireStatus(t, checkBackends(ctx, f.env(), cfg), Warn, "1 of 2 reachable; down: s1 rgw1.example:7480: connection refused")
	f.dials["10.0.0.1:7480"] = context.DeadlineExceeded
	requireStatus(t, checkBackends(ctx, f.env(), cfg), Fail, "none of 2 reachable", "S3 gateways")

	// A service's own backends are reached too; one of a port range on
	// its health check's port.
	f = newFake(t)
	cfg.Services = append(cfg.Services,
		config.Service{Name: "db", Mode: config.ModeTCP, Port: 5432, Backends: []config.BackendServer{{Name: "a", Address: "10.0.1.1:5432"}}},
		config.Service{Name: "rng", Mode: config.ModeTCP, Ports: config.PortRange{From: 7000, To: 7009},
			Health: &config.ServiceHealth{Port: 7000}, Backends: []config.BackendServer{{Name: "b", Address: "10.0.1.2"}}})
	f.dials["10.0.1.2:7000"] = errors.New("connection refused")
	requireStatus(t, checkBackends(ctx, f.env(), cfg), Warn, "3 of 4 reachable; down: rng/default/b 10.0.1.2:7000: connection refused")
}

// A whole run on a fake machine: every check appears, and a missing
// configuration skips the ones that need it.
func TestRun(t *testing.T) {
	f := goodSysctls(newFake(t)).
		file("proc/sys/kernel/osrelease", "6.1.0\n").
		file("sys/kernel/btf/vmlinux", "").
		file("proc/mounts", "bpf /sys/fs/bpf bpf rw 0 0\n").
		file("proc/cpuinfo", "model name\t: AMD EPYC\nflags\t\t: aes avx2\n").
		file("sys/devices/system/cpu/online", "0-1\n").
		nic("eth1", "virtio_net", 2)
	f.exec["haproxy -vv"] = haproxy32awslc
	rs := Run(context.Background(), f.env(), baseConfig())
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
		require.Equal(t, Pass, r.Status, "%+v", r)
	}
	require.Equal(t, []string{"kernel", "btf", "bpffs", "cpu aes", "cpu type", "sysctl", "haproxy",
		"iface eth1", "queues eth1", "ha", "api port", "service ports", "backends"}, names)

	rs = Run(context.Background(), f.env(), nil)
	requireStatus(t, rs[len(rs)-1], Warn, "skipped: no valid configuration")
	require.Empty(t, find(rs, "backends"))
}

func TestConfigResult(t *testing.T) {
	missing := t.TempDir() + "/ober.yaml"
	r := ConfigResult(missing, nil, errors.New("config "+missing+": no such file"))
	requireStatus(t, r, Fail, missing+": no such file", "pass --config FILE")
	// A file that is there but names a missing certificate is not a
	// missing configuration.
	present := t.TempDir() + "/x.yaml"
	require.NoError(t, os.WriteFile(present, nil, 0o600))
	r = ConfigResult(present, nil, errors.New("config "+present+": vips: required\nconfig "+present+`: services[0].tls.cert: "/a.pem": no such file`))
	requireStatus(t, r, Fail, present+": vips: required\nservices[0].tls.cert: \"/a.pem\": no such file", "correct the file")
	requireStatus(t, ConfigResult("/x.yaml", baseConfig(), nil), Pass, "1 VIPs, 1 services, 1 backends, HA mode none")
}

// A udp or nat service needs nftables, conntrack with room, and
// forwarding for its VIPs' families; without one, nothing is asked.
func TestKernelServices(t *testing.T) {
	cfg := baseConfig()
	require.Empty(t, checkKernelServices(newFake(t).env(), cfg), "no kernel service, nothing to check")
	cfg.Services = append(cfg.Services, config.Service{Name: "dns", Mode: config.ModeUDP, Port: 53})
	f := newFake(t).
		file("proc/sys/net/netfilter/nf_conntrack_max", "1000\n").
		file("proc/sys/net/netfilter/nf_conntrack_count", "10\n").
		file("proc/sys/net/ipv4/ip_forward", "0\n")
	rs := checkKernelServices(f.env(), cfg)
	requireStatus(t, one(t, rs, "nftables"), Warn, "not loaded", "modprobe nf_tables")
	requireStatus(t, one(t, rs, "conntrack"), Pass, "10 of 1000")
	requireStatus(t, one(t, rs, "net.ipv4.ip_forward"), Fail, "net.ipv4.ip_forward is 0", "dropped", "sysctl -w net.ipv4.ip_forward=1")
	require.Empty(t, find(rs, "net.ipv6.conf.all.forwarding"), "no IPv6 VIP")

	f.file("sys/module/nf_tables/refcnt", "1\n").
		file("proc/sys/net/netfilter/nf_conntrack_count", "900\n").
		file("proc/sys/net/ipv4/ip_forward", "1\n")
	rs = checkKernelServices(f.env(), cfg)
	requireStatus(t, one(t, rs, "nftables"), Pass)
	requireStatus(t, one(t, rs, "conntrack"), Fail, "900 of 1000", "nf_conntrack_max")
	requireStatus(t, one(t, rs, "net.ipv4.ip_forward"), Pass)
}
