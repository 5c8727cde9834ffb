package vrrp

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// requireKeepalived fails (not skips) the test without keepalived.
func requireKeepalived(t *testing.T) {
	t.Helper()
	netnstest.RequireTool(t, "keepalived", "keepalived")
}

func testConfig(t *testing.T, dir string, nodes []netip.Addr, self netip.Addr, vips []netip.Addr) Config {
	t.Helper()
	ins, err := Plan(nodes, self, vips, 51)
	if err != nil {
		t.Fatal(err)
	}
	var peers []netip.Addr
	for _, n := range nodes {
		if n != self {
			peers = append(peers, n)
		}
	}
	return Config{
		Interface:    "vr0",
		Self:         self,
		Peers:        peers,
		Instances:    ins,
		PreemptDelay: 1500 * time.Millisecond,
		GARPRefresh:  1500 * time.Millisecond,
		TrackFile:    filepath.Join(dir, "health"),
		NotifyFIFO:   filepath.Join(dir, "notify.fifo"),
	}
}

func TestRenderLines(t *testing.T) {
	dir := t.TempDir()
	c := testConfig(t, dir, addrs("10.0.0.1", "10.0.0.2"), netip.MustParseAddr("10.0.0.2"), addrs("10.98.0.1", "10.98.0.2"))
	text, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Render(c)
	if string(again) != string(text) {
		t.Error("Render is not deterministic")
	}
	s := string(text)
	for _, want := range []string{
		"    vrrp_version 3\n",
		"    vrrp_notify_fifo " + c.NotifyFIFO + "\n",
		"    vrrp_garp_master_repeat 5\n",
		"    vrrp_garp_master_refresh 2\n",
		"    vrrp_check_unicast_src\n",
		"track_file ober_health {\n    file \"" + c.TrackFile + "\"\n    weight 0\n}\n",
		"vrrp_instance ober_51 {\n    state BACKUP\n    interface vr0\n    virtual_router_id 51\n    priority 190\n    advert_int 0.1\n    preempt_delay 1.5\n",
		"vrrp_instance ober_52 {\n    state BACKUP\n    interface vr0\n    virtual_router_id 52\n    priority 200\n",
		"    unicast_src_ip 10.0.0.2\n    unicast_peer {\n        10.0.0.1\n    }\n",
		"    track_file {\n        ober_health weight 0\n        ober_prio_51 weight 1\n    }\n",
		"track_file ober_prio_52 {\n    file \"" + PriorityFile(c.TrackFile, 52) + "\"\n    weight 1\n}\n",
		"    virtual_ipaddress {\n        10.98.0.2/32 dev vr0\n    }\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("rendered config lacks %q:\n%s", want, s)
		}
	}
	for _, bad := range []string{"nopreempt", "authentication {", "auth_pass", "state MASTER", "mcast_src_ip"} {
		if strings.Contains(s, bad) {
			t.Errorf("rendered config has %q", bad)
		}
	}

	c.Multicast = true
	c.AdvertInterval = 1230 * time.Millisecond
	text, err = Render(c)
	if err != nil {
		t.Fatal(err)
	}
	s = string(text)
	if strings.Contains(s, "unicast_") || !strings.Contains(s, "    mcast_src_ip 10.0.0.2\n") || !strings.Contains(s, "advert_int 1.23\n") {
		t.Errorf("multicast config:\n%s", s)
	}
}

func TestRenderErrors(t *testing.T) {
	dir := t.TempDir()
	base := testConfig(t, dir, addrs("10.0.0.1", "10.0.0.2"), netip.MustParseAddr("10.0.0.1"), addrs("10.98.0.1"))
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"advert step", func(c *Config) { c.AdvertInterval = 105 * time.Millisecond },
			"vrrp config: advert_interval: 105ms: must be 10ms-40.95s in 10ms steps (VRRPv3 counts centiseconds)"},
		{"advert big", func(c *Config) { c.AdvertInterval = 41 * time.Second },
			"vrrp config: advert_interval: 41s: must be 10ms-40.95s in 10ms steps (VRRPv3 counts centiseconds)"},
		{"preempt", func(c *Config) { c.PreemptDelay = 1001 * time.Second }, "vrrp config: preempt_delay: 16m41s: must be 0s-1000s"},
		{"garp", func(c *Config) { c.GARPRepeat = 101 }, "vrrp config: garp.repeat: 101: must be 1-100"},
		{"refresh", func(c *Config) { c.GARPRefresh = time.Millisecond },
			"vrrp config: garp.refresh: 1ms: must be 0s or at least 1s (keepalived counts whole seconds)"},
		{"no peers", func(c *Config) { c.Peers = nil },
			"vrrp config: peers: none: unicast VRRP needs at least one other node (or multicast)"},
		{"peer family", func(c *Config) { c.Peers = addrs("fd00::2") }, "vrrp config: peers[0]: fd00::2: IPv6, but self 10.0.0.1 is IPv4"},
		{"interface", func(c *Config) { c.Interface = "" }, "vrrp config: interface: empty"},
		{"fifo path", func(c *Config) { c.NotifyFIFO = "rel/fifo" },
			`vrrp config: notify_fifo: "rel/fifo": must be an absolute path without blanks, quotes or braces`},
		{"vrid twice", func(c *Config) {
			in := c.Instances[0]
			in.Name, in.VIP = "other", netip.MustParseAddr("10.98.0.9")
			c.Instances = append(c.Instances, in)
		}, "vrrp config: instances[1] (other): vrid 51: already used by ober_51"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Peers = append([]netip.Addr(nil), base.Peers...)
			c.Instances = append([]Instance(nil), base.Instances...)
			tc.mod(&c)
			_, err := Render(c)
			if err == nil || err.Error() != tc.want {
				t.Errorf("Render error:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}

// TestRenderAcceptedByKeepalived runs `keepalived -t` on rendered configs
// inside a namespace that has the interface (keepalived checks it).
func TestRenderAcceptedByKeepalived(t *testing.T) {
	requireKeepalived(t)
	ns := netnstest.New(t, "vrrp-t")
	ns.IP(t, "link", "add", "vr0", "type", "veth", "peer", "name", "vr1")
	ns.IP(t, "link", "set", "vr0", "up")
	dir := t.TempDir()
	v4 := testConfig(t, dir, addrs("10.0.0.1", "10.0.0.2", "10.0.0.3"), netip.MustParseAddr("10.0.0.3"), addrs("10.98.0.1", "10.98.0.2"))
	v6 := testConfig(t, dir, addrs("fd00::1", "fd00::2"), netip.MustParseAddr("fd00::1"), addrs("fd00:98::1"))
	mc := v4
	mc.Multicast = true
	mc6 := v6
	mc6.Multicast = true
	for name, c := range map[string]Config{"ipv4": v4, "ipv6": v6, "multicast": mc, "multicast-ipv6": mc6} {
		text, err := Render(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		f := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(f, text, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("ip", "netns", "exec", ns.Name, "keepalived", "-t", "-f", f).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("%s: keepalived -t: %v: %s\n%s", name, err, out, text)
		}
	}
	// And it does reject what it should, so the check above means something.
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("vrrp_instance x {\n interface nosuch0\n virtual_router_id 1\n advert_intt 1\n}\n"), 0o600)
	if out, err := exec.Command("ip", "netns", "exec", ns.Name, "keepalived", "-t", "-f", bad).CombinedOutput(); err == nil {
		t.Errorf("keepalived -t accepted a bad config: %s", out)
	}
}

func TestDecimalSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		100 * time.Millisecond: "0.1", 10 * time.Millisecond: "0.01", time.Second: "1",
		1500 * time.Millisecond: "1.5", 40950 * time.Millisecond: "40.95", 0: "0",
	} {
		if got := decimalSeconds(d); got != want {
			t.Errorf("decimalSeconds(%s) = %q, want %q", d, got, want)
		}
	}
}
