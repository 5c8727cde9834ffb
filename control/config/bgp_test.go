package config

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// bgpConfig is baseConfig in ha.mode bgp with two routers.
func bgpConfig() *Config {
	c := baseConfig()
	c.HA.Mode = HAModeBGP
	c.HA.BGP = &BGP{ASN: 65010, Peers: []BGPPeer{
		{Address: addr("10.9.0.1"), ASN: 65000, BFD: BFD{Enabled: true}},
		{Address: addr("fd09::1"), ASN: 65000},
	}}
	c.ApplyDefaults()
	return c
}

func TestBGPDefaults(t *testing.T) {
	c := bgpConfig()
	require.NoError(t, c.Validate())
	b := c.HA.BGP
	require.Equal(t, 179, b.ListenPort)
	p := b.Peers[0]
	require.Equal(t, uint16(179), p.Port)
	require.Equal(t, DefaultBGPHoldTime, p.HoldTime.Duration)
	require.Equal(t, DefaultBGPHoldTime/3, p.Keepalive.Duration)
	require.Equal(t, DefaultBFDInterval, p.BFD.Interval.Duration)
	require.Equal(t, 3, p.BFD.Multiplier)
	require.Zero(t, b.Peers[1].BFD.Interval.Duration, "BFD timers only where BFD is on")
	require.Equal(t, 1, b.AnnounceWhen.MinInstances)
	require.True(t, *b.AnnounceWhen.BackendUp)
	require.Equal(t, DefaultHoldDown, b.HoldDown.Duration)
}

// Graceful restart is off unless asked for: with it, a router keeps the
// routes of a node whose ober died for the restart time.
func TestBGPGracefulRestartDefaults(t *testing.T) {
	c := bgpConfig()
	require.False(t, c.HA.BGP.GracefulRestart.Enabled)
	require.Zero(t, c.HA.BGP.GracefulRestart.RestartTime.Duration)

	c = bgpConfig()
	c.HA.BGP.GracefulRestart.Enabled = true
	c.ApplyDefaults()
	require.NoError(t, c.Validate())
	require.Equal(t, DefaultRestartTime, c.HA.BGP.GracefulRestart.RestartTime.Duration)

	c = bgpConfig()
	c.HA.BGP.GracefulRestart = GracefulRestart{Enabled: true, RestartTime: Duration{4095e9}}
	c.ApplyDefaults()
	require.NoError(t, c.Validate())
}

// writeKey writes a shared handoff key and returns its path.
func writeKey(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "handoff.key")
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	return p
}

const goodKey = "8f0c6c1d2b9e4a7f3e5d1c0b9a8f7e6d5c4b3a29f8e7d6c5b4a3928170f6e5d4\n"

func TestValidateBGP(t *testing.T) {
	med := uint32(5)
	key := writeKey(t, goodKey, 0o600)
	short := writeKey(t, "0123456789\n", 0o600)
	open := writeKey(t, goodKey, 0o644)
	twoNodes := func(c *Config) {
		c.HA.BGP.Handoff.Nodes = []Addr{addr("10.9.0.11"), addr("10.9.0.12")}
		c.HA.BGP.Handoff.KeyFile = key
	}
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"bgp mode without settings", func(c *Config) { c.HA.BGP = nil },
			`ha.bgp: required for ha.mode bgp (asn and peers at least)`},
		{"settings without bgp mode", func(c *Config) { c.HA.Mode = HAModeNone },
			`ha.bgp: set, but ha.mode is none; set ha.mode: bgp or remove ha.bgp`},
		{"no asn", func(c *Config) { c.HA.BGP.ASN = 0 },
			`ha.bgp.asn: 0: an AS number 1-4294967294 is required`},
		{"as_trans", func(c *Config) { c.HA.BGP.Peers[1].ASN = 23456 },
			`ha.bgp.peers[1].asn: 23456: 23456 is AS_TRANS (RFC 6793), not a real AS`},
		{"router id v6", func(c *Config) { c.HA.BGP.RouterID = addr("fd00::9") },
			`ha.bgp.router_id: fd00::9: must be an IPv4 address`},
		{"no peers", func(c *Config) { c.HA.BGP.Peers = nil },
			`ha.bgp.peers: at least one peer is required`},
		{"duplicate peer", func(c *Config) { c.HA.BGP.Peers[1].Address = addr("10.9.0.1") },
			`ha.bgp.peers[1].address: 10.9.0.1: duplicate of ha.bgp.peers[0]`},
		{"peer is a vip", func(c *Config) { c.HA.BGP.Peers[0].Address = addr("10.0.0.1") },
			`ha.bgp.peers[0].address: 10.0.0.1: is one of the VIPs`},
		{"short hold time", func(c *Config) { c.HA.BGP.Peers[0].HoldTime.Duration = 2e9 },
			`ha.bgp.peers[0].hold_time: 2s: must be 0s or whole seconds from 3s to 65535s (RFC 4271)`},
		{"keepalive above hold", func(c *Config) { c.HA.BGP.Peers[0].Keepalive.Duration = 9e9 },
			`ha.bgp.peers[0].keepalive: 9s: must be shorter than hold_time 9s`},
		{"bfd with multihop", func(c *Config) { c.HA.BGP.Peers[0].Multihop = 2 },
			`ha.bgp.peers[0].bfd.enabled: true: BFD is single-hop only; it cannot run with multihop 2`},
		{"bfd interval", func(c *Config) { c.HA.BGP.Peers[0].BFD.Interval.Duration = 5e6 },
			`ha.bgp.peers[0].bfd.interval: 5ms: must be whole milliseconds from 10ms to 60s`},
		{"passive without listener", func(c *Config) { c.HA.BGP.ListenPort = -1; c.HA.BGP.Peers[1].Passive = true },
			`ha.bgp.peers[1].passive: true: needs ha.bgp.listen_port (it is -1: nothing accepts the router's connection)`},
		{"community", func(c *Config) { c.HA.BGP.Communities = []string{"65000:70000"} },
			`ha.bgp.communities[0]: "65000:70000": must be asn:value with each 0-65535, or one of blackhole, graceful-shutdown, no-advertise, no-export, no-export-subconfed`},
		{"large community", func(c *Config) {
			c.HA.BGP.VIPs = []BGPVIP{{VIP: addr("10.0.0.1"), LargeCommunities: []string{"1:2"}, MED: &med}}
		},
			`ha.bgp.vips[0].large_communities[0]: "1:2": must be global:local1:local2 with each 0-4294967295`},
		{"vip override of no vip", func(c *Config) { c.HA.BGP.VIPs = []BGPVIP{{VIP: addr("10.0.0.7")}} },
			`ha.bgp.vips[0].vip: 10.0.0.7: is not in vips`},
		{"min instances", func(c *Config) { c.HA.BGP.AnnounceWhen.MinInstances = 9 },
			`ha.bgp.announce_when.min_instances: 9: must be 1 to instances.count (2)`},
		{"handoff v6", func(c *Config) {
			twoNodes(c)
			c.HA.BGP.Handoff.Nodes = []Addr{addr("10.9.0.11"), addr("fd09::12")}
		},
			`ha.bgp.handoff.nodes[1]: fd09::12: must be a node's unicast IPv4 address (handoff tunnels are IPv4)`},
		{"handoff alone", func(c *Config) { twoNodes(c); c.HA.BGP.Handoff.Nodes = []Addr{addr("10.9.0.11")} },
			`ha.bgp.handoff.nodes: 10.9.0.11: one node has nobody to hand off to; list every node or none`},
		{"handoff without a key", func(c *Config) { twoNodes(c); c.HA.BGP.Handoff.KeyFile = "" },
			"ha.bgp.handoff.key_file: required with ha.bgp.handoff.nodes: the nodes authenticate each other with it (make one with `openssl rand -hex 32 > FILE; chmod 600 FILE` and copy it to every node)"},
		{"handoff key missing", func(c *Config) { twoNodes(c); c.HA.BGP.Handoff.KeyFile = "/nonexistent/handoff.key" },
			`ha.bgp.handoff.key_file: "/nonexistent/handoff.key": no such file`},
		{"handoff key short", func(c *Config) { twoNodes(c); c.HA.BGP.Handoff.KeyFile = short },
			`ha.bgp.handoff.key_file: "` + short + `": holds 10 bytes; the key must have at least 32 (openssl rand -hex 32)`},
		{"handoff key readable by others", func(c *Config) { twoNodes(c); c.HA.BGP.Handoff.KeyFile = open },
			`ha.bgp.handoff.key_file: "` + open + `": mode 0644 lets others read the key; chmod 600 it`},
		{"handoff max transition", func(c *Config) { twoNodes(c); c.HA.BGP.Handoff.MaxTransition.Duration = 48 * time.Hour },
			`ha.bgp.handoff.max_transition: 48h: must be 1s to 24h`},
		{"handoff rate", func(c *Config) { twoNodes(c); r := uint64(2e9); c.HA.BGP.Handoff.Rate = &r },
			`ha.bgp.handoff.rate: 2000000000: must be at most 1000000000 per second (0: no limit)`},
		{"path mtu", func(c *Config) { m := 1000; c.HA.BGP.PathMTU = &m },
			`ha.bgp.path_mtu: 1000: must be 1280 to 65535 bytes, or 0 to leave the MSS alone`},
		{"backend scope", func(c *Config) { c.HA.BGP.AnnounceWhen.BackendScope = "global" },
			`ha.bgp.announce_when.backend_scope: "global": must be cluster or local`},
		{"restart time without graceful restart", func(c *Config) { c.HA.BGP.GracefulRestart.RestartTime.Duration = 30e9 },
			`ha.bgp.graceful_restart.restart_time: 30s: set, but graceful_restart.enabled is false; enable it or remove restart_time`},
		{"restart time too long", func(c *Config) {
			c.HA.BGP.GracefulRestart = GracefulRestart{Enabled: true, RestartTime: Duration{4096e9}}
		},
			`ha.bgp.graceful_restart.restart_time: 1h8m16s: must be whole seconds from 1s to 4095s (RFC 4724)`},
		{"restart time fraction", func(c *Config) {
			c.HA.BGP.GracefulRestart = GracefulRestart{Enabled: true, RestartTime: Duration{1500e6}}
		},
			`ha.bgp.graceful_restart.restart_time: 1.5s: must be whole seconds from 1s to 4095s (RFC 4724)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := bgpConfig()
			tt.mutate(c)
			require.EqualError(t, c.Validate(), tt.want)
		})
	}
}

func TestParseCommunity(t *testing.T) {
	v, err := ParseCommunity("65000:100")
	require.NoError(t, err)
	require.Equal(t, uint32(65000<<16|100), v)
	v, err = ParseCommunity("no-export")
	require.NoError(t, err)
	require.Equal(t, uint32(0xFFFFFF01), v)
	l, err := ParseLargeCommunity("4200000000:1:2")
	require.NoError(t, err)
	require.Equal(t, [3]uint32{4200000000, 1, 2}, l)
}

// The routers whitelist defaults to the peers, and a list that leaves a
// peer out is refused: XDP would drop that router's BGP and BFD.
func TestRoutersWhitelist(t *testing.T) {
	c := bgpConfig()
	c.Backends.Servers = c.Backends.Servers[1:] // no names to resolve
	res, err := c.Resolve(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.9.0.1/32"), netip.MustParsePrefix("fd09::1/128")},
		res.Whitelists[WhitelistRouters])

	c.Whitelists.Routers = []string{"10.9.0.0/24"}
	_, err = c.Resolve(context.Background(), nil)
	require.EqualError(t, err, `ha.bgp.peers[1].address: fd09::1: is not in whitelists.routers: XDP would drop its BGP and BFD packets (add it, or leave the list empty to admit exactly the peers)`)
}

func TestBGPExampleLoads(t *testing.T) {
	// The example's key file lives in /etc/ober; a copy points at one here.
	text, err := os.ReadFile("testdata/bgp.yaml")
	require.NoError(t, err)
	require.Contains(t, string(text), "/etc/ober/handoff.key")
	path := filepath.Join(t.TempDir(), "bgp.yaml")
	text = []byte(strings.ReplaceAll(string(text), "/etc/ober/handoff.key", writeKey(t, goodKey, 0o600)))
	require.NoError(t, os.WriteFile(path, text, 0o600))
	c, err := load(path, nodeA())
	require.NoError(t, err)
	require.Equal(t, DefaultMaxTransition, c.HA.BGP.Handoff.MaxTransition.Duration)
	require.Equal(t, uint64(DefaultHandoffRate), *c.HA.BGP.Handoff.Rate)
	require.Equal(t, BackendScopeCluster, c.HA.BGP.AnnounceWhen.BackendScope)
	require.Equal(t, DefaultPathMTU, *c.HA.BGP.PathMTU)
	b := c.HA.BGP
	require.Len(t, b.Peers, 3)
	require.Equal(t, DefaultBFDInterval/3, b.Peers[0].BFD.Interval.Duration)
	require.Equal(t, uint32(50), *b.VIPs[0].MED)
}
