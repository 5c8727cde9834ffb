package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

const discoveryHead = `node:
  name: n1
  interfaces: [eth1]
haproxy: {user: nobody, group: nogroup}
instances: {cpus: [0]}
vips: [10.0.0.1]
services:
`

// A pool's discovery loads with its defaults; a tls service with one has
// a pool of its own (not the top-level one), and the top-level pool may
// be found rather than listed.
func TestDiscoveryDefaults(t *testing.T) {
	c, err := Parse([]byte(discoveryHead + `  - name: s3
    mode: tls
    port: 443
    tls: {self_signed: true}
    discovery: {kind: srv, name: _s3._tcp.rgw.example}
  - name: kv
    mode: tcp
    port: 6379
    discovery: {kind: file, path: /etc/ober/kv.txt, interval: 2s, failpolicy: setempty}
backends:
  discovery: {kind: consul, name: rgw, tag: prod, passing_only: true}
`))
	require.NoError(t, err)
	d := c.Services[0].Discovery
	require.Equal(t, ProtocolUDP, d.Protocol)
	require.Equal(t, FailKeepLast, d.FailPolicy)
	require.Equal(t, DefaultDiscoveryInterval, d.Interval.Duration)
	require.Equal(t, DefaultDiscoveryTimeout, d.Timeout.Duration)
	require.False(t, c.ServicePools(0)[0].Shared, "a service with discovery has its own pool")
	require.Equal(t, 2*time.Second, c.Services[1].Discovery.Timeout.Duration, "the timeout is at most the interval")
	require.Equal(t, DiscoveryConsul, c.Backends.Discovery.Kind)
}

// Every mistake in a discovery block names the key, the value and why.
func TestDiscoveryRefused(t *testing.T) {
	for _, tc := range []struct{ name, disc, want string }{
		{"kind", `{kind: zookeeper}`, `services[0].discovery.kind: "zookeeper": must be one of static, srv, dns, file, http, exec, consul`},
		{"srv name", `{kind: srv, name: rgw.example}`, `services[0].discovery.name: "rgw.example": must be an SRV name _service._proto.domain, _proto _tcp or _udp (such as _s3._tcp.rgw.example)`},
		{"srv without name", `{kind: srv}`, `services[0].discovery.name: required for kind srv`},
		{"dns without port", `{kind: dns, name: rgw.example}`, `services[0].discovery.port: required for kind dns`},
		{"key of another kind", `{kind: file, path: /x, url: "http://a/"}`, `services[0].discovery.url: not for kind file (only http)`},
		{"relative path", `{kind: file, path: kv.txt}`, `services[0].discovery.path: "kv.txt": must be absolute`},
		{"url scheme", `{kind: http, url: "ftp://a/b"}`, `services[0].discovery.url: "ftp://a/b": must be an http:// or https:// URL`},
		{"token in clear", `{kind: http, url: "http://a/b", token_file: /etc/ober/t}`, `services[0].discovery.token_file: "/etc/ober/t": needs an https:// url: over http:// the token would cross the network in clear`},
		{"url credentials", `{kind: http, url: "https://u:p@a/b"}`, `services[0].discovery.url: must not carry credentials: use token_file`},
		{"exec relative", `{kind: exec, command: [list-backends]}`, `services[0].discovery.command[0]: "list-backends": must be an absolute path`},
		{"server", `{kind: srv, name: _s3._tcp.x, server: ns1}`, `services[0].discovery.server: "ns1": must be address:port, such as 10.0.0.53:53 or [fd00::53]:53`},
		{"interval", `{kind: consul, name: rgw, interval: 100ms}`, `services[0].discovery.interval: 100ms: must be at least 1s`},
		{"timeout", `{kind: consul, name: rgw, interval: 2s, timeout: 3s}`, `services[0].discovery.timeout: 3s: must be above 0 and at most the interval (2s)`},
		{"failpolicy", `{kind: consul, name: rgw, failpolicy: keep}`, `services[0].discovery.failpolicy: "keep": must be keeplast or setempty`},
		{"override state", `{kind: consul, name: rgw, overrides: [{address: "10.1.0.1:80", state: off}]}`, `services[0].discovery.overrides[0].state: "off": must be enabled, drain or disabled`},
		{"override weight", `{kind: consul, name: rgw, overrides: [{address: "10.1.0.1:80", weight: 70000}]}`, `services[0].discovery.overrides[0].weight: 70000: must be 0-256`},
		{"override address", `{kind: consul, name: rgw, overrides: [{address: "10.1.0.1"}]}`, `services[0].discovery.overrides[0].address: "10.1.0.1": must be host:port, as the source names the backend`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(discoveryHead + "  - {name: kv, mode: tcp, port: 6379, discovery: " + tc.disc + "}\n"))
			require.Error(t, err)
			require.Contains(t, strings.Split(err.Error(), "\n"), tc.want, "%v", err)
		})
	}
	_, err := Parse([]byte(discoveryHead + `  - name: kv
    mode: tcp
    port: 6379
    discovery: {kind: srv, name: _kv._tcp.example}
    backends: [{address: "10.1.0.1:6379"}]
`))
	require.ErrorContains(t, err, "services[0].backends: the pool's backends come from discovery kind srv: remove the list (an operator's state or weight for a found backend goes in services[0].discovery.overrides)")
}

// The found backends become the pool's servers: named after their
// address, the source's weight and priority, an operator's override on
// top (kept for a backend that is gone and comes back), a backend the
// source no longer names drained; the loaded configuration is not
// changed.
func TestWithDiscovered(t *testing.T) {
	c, err := Parse([]byte(discoveryHead + `  - name: s3
    mode: tls
    port: 443
    tls: {self_signed: true}
    discovery:
      kind: srv
      name: _s3._tcp.rgw.example
      overrides:
        - {address: "10.1.0.2:7480", state: drain}
        - {address: "[fd00::3]:7480", weight: 7}
        - {address: "10.1.0.9:7480", state: disabled}
  - {name: static, mode: tcp, port: 7000, backends: [{address: "10.2.0.1:7000"}]}
`))
	require.NoError(t, err)
	require.Equal(t, []DiscoveryPool{{Key: "services[s3]", Discovery: c.Services[0].Discovery}}, c.DiscoveryPools())
	b := func(host string, w, prio int) discovery.Backend {
		return discovery.Backend{Host: host, Port: 7480, Weight: w, Priority: prio}
	}
	d := c.WithDiscovered(map[string]Found{"services[s3]": {
		Backends: []discovery.Backend{b("10.1.0.1", 256, 1), b("10.1.0.2", 128, 1), b("fd00::3", -1, 2)},
		Draining: []discovery.Backend{b("10.1.0.4", 50, 1), b("10.1.0.1", 256, 1)},
	}})
	require.Empty(t, c.Services[0].Backends, "the loaded configuration stays as it was")
	type srv struct {
		name, addr, state string
		weight, prio      int
	}
	var got []srv
	for _, s := range d.Services[0].Backends {
		got = append(got, srv{s.Name, s.Address, s.State, *s.Weight, s.Priority})
	}
	require.Equal(t, []srv{
		{"10.1.0.1_7480", "10.1.0.1:7480", StateEnabled, 256, 1},
		{"10.1.0.2_7480", "10.1.0.2:7480", StateDrain, 128, 1},
		{"fd00..3_7480", "[fd00::3]:7480", StateEnabled, 7, 2},
		{"10.1.0.4_7480", "10.1.0.4:7480", StateDrain, 50, 1},
	}, got)
	require.Equal(t, c.Services[1].Backends, d.Services[1].Backends, "a static pool is as the file says")
	require.Empty(t, c.WithDiscovered(nil).Services[0].Backends, "nothing found yet")
}

// A found backend's name gives its address back.
func TestDiscoveredAddress(t *testing.T) {
	for _, b := range []discovery.Backend{{Host: "10.1.0.1", Port: 7480}, {Host: "fd00::3", Port: 53}, {Host: "rgw1.example", Port: 80}, {Host: "2001:db8:1:2:3:4:5:6", Port: 443}} {
		got, ok := DiscoveredAddress(DiscoveredName(b))
		require.True(t, ok)
		require.Equal(t, b.ID(), got, DiscoveredName(b))
	}
	for _, bad := range []string{"rgw1", "rgw1_0", "rgw1_x", "_80", "a_70000"} {
		_, ok := DiscoveredAddress(bad)
		require.False(t, ok, bad)
	}
}
