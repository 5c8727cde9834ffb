package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// vrrpHandoffConfig is vrrpConfig with the handoff on, its key in a file
// of its own.
func vrrpHandoffConfig(t *testing.T) *Config {
	c := vrrpConfig()
	c.HA.VRRP.Handoff = &Handoff{KeyFile: writeKey(t, goodKey, 0o600)}
	c.ApplyDefaults()
	return c
}

func TestVRRPHandoffDefaults(t *testing.T) {
	c := vrrpHandoffConfig(t)
	require.NoError(t, c.Validate())
	h := c.HA.VRRP.Handoff
	require.Equal(t, uint16(4793), h.Port)
	require.Equal(t, 5*time.Minute, h.MaxTransition.Duration)
	require.Equal(t, DefaultJoinWindow, h.JoinWindow.Duration)
	require.NotNil(t, h.Rate)
	require.Equal(t, uint64(100000), *h.Rate)
	require.Equal(t, uint64(1000), h.Burst)
	require.Empty(t, h.Nodes, "the nodes are ha.vrrp.nodes")
	require.NotNil(t, c.HA.VRRP.PathMTU)
	require.Equal(t, 1400, *c.HA.VRRP.PathMTU, "the MSS clamp is on with the handoff")

	// Without the handoff there is no clamp to default.
	c = vrrpConfig()
	require.NoError(t, c.Validate())
	require.Nil(t, c.HA.VRRP.Handoff)
	require.Nil(t, c.HA.VRRP.PathMTU)

	// An explicit 0 turns the clamp off and stays 0.
	c = vrrpConfig()
	c.HA.VRRP.Handoff = &Handoff{KeyFile: writeKey(t, goodKey, 0o600)}
	c.HA.VRRP.PathMTU = intp(0)
	c.ApplyDefaults()
	require.NoError(t, c.Validate())
	require.Equal(t, 0, *c.HA.VRRP.PathMTU)
}

// vrrpHandoffYAML is a VRRP site with the handoff on; KEY is replaced by
// a key file's path and EXTRA by more ha.vrrp keys.
const vrrpHandoffYAML = `node:
  interfaces: [eth1]
vips: [192.0.2.10, 192.0.2.11]
services:
  - port: 443
    mode: tls
    tls: {self_signed: true}
backends:
  servers:
    - address: 10.1.0.2:7480
ha:
  mode: vrrp
  vrrp:
    nodes: [10.20.0.11, 10.20.0.12, 10.20.0.13]
    handoff:
      key_file: KEY
EXTRA`

func loadVRRPHandoff(t *testing.T, extra string) (*Config, error) {
	t.Helper()
	text := strings.ReplaceAll(vrrpHandoffYAML, "KEY", writeKey(t, goodKey, 0o600))
	text = strings.ReplaceAll(text, "EXTRA", extra)
	path := filepath.Join(t.TempDir(), "vrrp.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return load(path, nodeA())
}

func TestVRRPHandoffLoads(t *testing.T) {
	c, err := loadVRRPHandoff(t, "")
	require.NoError(t, err)
	v := c.HA.VRRP
	require.NotNil(t, v.Handoff)
	require.Equal(t, uint16(DefaultHandoffPort), v.Handoff.Port)
	require.Equal(t, DefaultMaxTransition, v.Handoff.MaxTransition.Duration)
	require.Equal(t, uint64(DefaultHandoffRate), *v.Handoff.Rate)
	require.Equal(t, uint64(DefaultHandoffBurst), v.Handoff.Burst)
	require.Equal(t, DefaultPathMTU, *v.PathMTU)
	require.Equal(t, []Addr{addr("10.20.0.11"), addr("10.20.0.12"), addr("10.20.0.13")}, v.Nodes)

	c, err = loadVRRPHandoff(t, "    path_mtu: 0\n")
	require.NoError(t, err)
	require.Equal(t, 0, *c.HA.VRRP.PathMTU, "path_mtu: 0 turns the clamp off")

	c, err = loadVRRPHandoff(t, "    path_mtu: 9000\n")
	require.NoError(t, err)
	require.Equal(t, 9000, *c.HA.VRRP.PathMTU)

	_, err = loadVRRPHandoff(t, "    path_mtu: 1000\n")
	require.ErrorContains(t, err, "ha.vrrp.path_mtu: 1000: must be 1280 to 65535 bytes, or 0 to leave the MSS alone")
}

func TestValidateVRRPHandoff(t *testing.T) {
	open := writeKey(t, goodKey, 0o644)
	const keyHelp = "the nodes authenticate each other with it (make one with `openssl rand -hex 32 > FILE; chmod 600 FILE` and copy it to every node)"
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string // "" for valid
	}{
		{"valid", func(c *Config) {}, ""},
		{"without key_file", func(c *Config) { c.HA.VRRP.Handoff.KeyFile = "" },
			"ha.vrrp.handoff.key_file: required with ha.vrrp.nodes: " + keyHelp},
		{"key readable by others", func(c *Config) { c.HA.VRRP.Handoff.KeyFile = open },
			`ha.vrrp.handoff.key_file: "` + open + `": mode 0644 lets others read the key; chmod 600 it`},
		{"key missing", func(c *Config) { c.HA.VRRP.Handoff.KeyFile = "/nonexistent/handoff.key" },
			`ha.vrrp.handoff.key_file: "/nonexistent/handoff.key": no such file`},
		{"handoff nodes", func(c *Config) {
			c.HA.VRRP.Handoff.Nodes = []Addr{addr("10.9.0.11"), addr("10.9.0.12")}
		},
			`ha.vrrp.handoff.nodes: [10.9.0.11 10.9.0.12]: the VRRP handoff runs between ha.vrrp.nodes; remove it`},
		{"ipv6 nodes", func(c *Config) {
			c.VIPs = []Addr{addr("fd00::1"), addr("fd00::2"), addr("fd00::3")}
			c.HA.VRRP.Nodes = []Addr{addr("fd09::11"), addr("fd09::12"), addr("fd09::13")}
		},
			"ha.vrrp.handoff: needs IPv4 ha.vrrp.nodes (its tunnels are IPv4); these are IPv6"},
		{"one node", func(c *Config) { c.HA.VRRP.Nodes = c.HA.VRRP.Nodes[:1] },
			`ha.vrrp.handoff: one node has nobody to hand off to; remove it`},
		{"max transition", func(c *Config) { c.HA.VRRP.Handoff.MaxTransition = dur(48 * time.Hour) },
			`ha.vrrp.handoff.max_transition: 48h: must be 1s to 24h`},
		{"rate", func(c *Config) { r := uint64(2e9); c.HA.VRRP.Handoff.Rate = &r },
			`ha.vrrp.handoff.rate: 2000000000: must be at most 1000000000 per second (0: no limit)`},
		{"path mtu too small", func(c *Config) { c.HA.VRRP.PathMTU = intp(1000) },
			`ha.vrrp.path_mtu: 1000: must be 1280 to 65535 bytes, or 0 to leave the MSS alone`},
		{"path mtu too large", func(c *Config) { c.HA.VRRP.PathMTU = intp(65536) },
			`ha.vrrp.path_mtu: 65536: must be 1280 to 65535 bytes, or 0 to leave the MSS alone`},
		{"path mtu negative", func(c *Config) { c.HA.VRRP.PathMTU = intp(-1) },
			`ha.vrrp.path_mtu: -1: must be 1280 to 65535 bytes, or 0 to leave the MSS alone`},
		{"path mtu smallest", func(c *Config) { c.HA.VRRP.PathMTU = intp(1280) }, ""},
		{"path mtu largest", func(c *Config) { c.HA.VRRP.PathMTU = intp(65535) }, ""},
		{"path mtu off", func(c *Config) { c.HA.VRRP.PathMTU = intp(0) }, ""},
		{"path mtu without handoff", func(c *Config) { c.HA.VRRP.Handoff = nil; c.HA.VRRP.PathMTU = intp(1000) },
			`ha.vrrp.path_mtu: 1000: must be 1280 to 65535 bytes, or 0 to leave the MSS alone`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := vrrpHandoffConfig(t)
			tt.mutate(c)
			if tt.want == "" {
				require.NoError(t, c.Validate())
				return
			}
			require.EqualError(t, c.Validate(), tt.want)
		})
	}
}
