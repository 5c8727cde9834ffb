package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// vrrpConfig is baseConfig in ha.mode vrrp over three nodes, with IPv4
// VIPs only (a VRRP instance is of one family).
func vrrpConfig() *Config {
	c := baseConfig()
	c.VIPs = []Addr{addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.3")}
	c.HA.Mode = HAModeVRRP
	c.HA.VRRP = &VRRP{Nodes: []Addr{addr("10.9.0.11"), addr("10.9.0.12"), addr("10.9.0.13")}}
	c.ApplyDefaults()
	return c
}

func TestVRRPDefaults(t *testing.T) {
	c := vrrpConfig()
	require.NoError(t, c.Validate())
	v := c.HA.VRRP
	require.Equal(t, "eth0", v.Interface, "the first of node.interfaces")
	require.Equal(t, 51, v.FirstVRID)
	require.Equal(t, 100*time.Millisecond, v.AdvertInterval.Duration)
	require.Equal(t, 5*time.Second, v.PreemptDelay.Duration)
	require.Equal(t, 5, v.GARP.Repeat)
	require.Zero(t, v.GARP.Refresh.Duration)
	require.False(t, v.Multicast)
	require.Equal(t, "keepalived", v.Keepalived)
	require.False(t, v.Self.IsValid(), "self is found on the interface when ober starts")
}

func TestValidateVRRP(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"vrrp mode without settings", func(c *Config) { c.HA.VRRP = nil },
			`ha.vrrp: required for ha.mode vrrp (nodes at least)`},
		{"settings without vrrp mode", func(c *Config) { c.HA.Mode = HAModeNone },
			`ha.vrrp: set, but ha.mode is none; set ha.mode: vrrp or remove ha.vrrp`},
		{"no nodes", func(c *Config) { c.HA.VRRP.Nodes = nil },
			`ha.vrrp.nodes: at least one node is required (every node's address, in the same order on every node)`},
		{"duplicate node", func(c *Config) { c.HA.VRRP.Nodes[2] = addr("10.9.0.11") },
			`ha.vrrp.nodes[2]: 10.9.0.11: duplicate of ha.vrrp.nodes[0]`},
		{"loopback node", func(c *Config) { c.HA.VRRP.Nodes[1] = addr("127.0.0.2") },
			`ha.vrrp.nodes[1]: 127.0.0.2: must be a node's unicast address without zone`},
		{"node is a vip", func(c *Config) { c.HA.VRRP.Nodes[1] = addr("10.0.0.2") },
			`ha.vrrp.nodes[1]: 10.0.0.2: is one of the VIPs`},
		{"mixed families", func(c *Config) { c.HA.VRRP.Nodes[2] = addr("fd09::13") },
			`ha.vrrp.nodes[2]: fd09::13: mixes address families with ha.vrrp.nodes[0] 10.9.0.11 (a VRRP instance is IPv4 or IPv6)`},
		{"vip of the other family", func(c *Config) { c.VIPs = append(c.VIPs, addr("fd00::1")) },
			`vips[3]: fd00::1: is not of the family of ha.vrrp.nodes (IPv4): VRRP moves a VIP among nodes of its own family`},
		{"self not a node", func(c *Config) { c.HA.VRRP.Self = addr("10.9.0.99") },
			`ha.vrrp.self: 10.9.0.99: is not one of ha.vrrp.nodes`},
		{"vrid zero", func(c *Config) { c.HA.VRRP.FirstVRID = 256 },
			`ha.vrrp.first_vrid: 256: must be 1-255`},
		{"vrid overflow", func(c *Config) { c.HA.VRRP.FirstVRID = 254 },
			`ha.vrrp.first_vrid: 254: with 3 VIPs the last virtual_router_id would be 256; VRRP allows 1-255`},
		{"advert too short", func(c *Config) { c.HA.VRRP.AdvertInterval = dur(5 * time.Millisecond) },
			`ha.vrrp.advert_interval: 5ms: must be 10ms-40s (VRRPv3 counts in centiseconds)`},
		{"advert not centiseconds", func(c *Config) { c.HA.VRRP.AdvertInterval = dur(105 * time.Millisecond) },
			`ha.vrrp.advert_interval: 105ms: must be a whole number of centiseconds (10ms steps)`},
		{"preempt delay", func(c *Config) { c.HA.VRRP.PreemptDelay = dur(2000 * time.Second) },
			`ha.vrrp.preempt_delay: 33m20s: must be 0s-1000s (keepalived's limit)`},
		{"garp repeat", func(c *Config) { c.HA.VRRP.GARP.Repeat = 500 },
			`ha.vrrp.garp.repeat: 500: must be 1-100`},
		{"garp refresh", func(c *Config) { c.HA.VRRP.GARP.Refresh = dur(100 * time.Millisecond) },
			`ha.vrrp.garp.refresh: 100ms: must be 0s (off) or at least 1s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := vrrpConfig()
			tt.mutate(c)
			require.EqualError(t, c.Validate(), tt.want)
		})
	}
}
