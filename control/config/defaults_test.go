package config

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefaults(t *testing.T) {
	env := nodeA()
	c, err := parse([]byte(`node:
  interfaces: [eth0]
vips: [10.0.0.1, fd00::1]
services:
  - {mode: tls, port: 443, tls: {self_signed: true}}
  - {mode: http, port: 80, vips: [10.0.0.1]}
backends:
  servers:
    - address: rgw1.example.com:7480
    - address: 10.1.0.2:7480
      tls: true
    - address: rgw3.example.com:7443
      tls: true
      weight: 0
`), env)
	require.NoError(t, err)
	want := &Config{
		env: env,
		Node: Node{
			Name:         "node-a",
			Interfaces:   []string{"eth0"},
			XDPMode:      "auto",
			VIPInterface: "lo",
			BPFFSRoot:    "/sys/fs/bpf/ober",
			RuntimeDir:   "/run/ober",
			StateDir:     "/var/lib/ober",
		},
		VIPs: []Addr{addr("10.0.0.1"), addr("fd00::1")},
		Services: []Service{
			{Name: "tls-443", Port: 443, Mode: "tls", TLS: &TLS{SelfSigned: true},
				Balance: "leastconn", Health: legacyHealth(), Slowstart: &Duration{30 * time.Second}, Fallback: "serve_503"},
			{Name: "http-80", Port: 80, Mode: "http", VIPs: []Addr{addr("10.0.0.1")}, Whitelist: "frontend-http",
				Balance: "leastconn", Health: legacyHealth(), Slowstart: &Duration{30 * time.Second}, Fallback: "serve_503"},
		},
		Backends: Backends{
			Balance: "leastconn",
			Servers: []BackendServer{
				{Name: "s0", Address: "rgw1.example.com:7480", Weight: intp(100), Priority: 1, State: "enabled"},
				{Name: "s1", Address: "10.1.0.2:7480", Weight: intp(100), Priority: 1, State: "enabled", TLS: true},
				{Name: "s2", Address: "rgw3.example.com:7443", Weight: intp(0), Priority: 1, State: "enabled", TLS: true, SNI: "rgw3.example.com"},
			},
			Health: HealthCheck{Path: "/", Interval: dur(DefaultHealthInterval), Fall: 3, Rise: 2},
		},
		Instances: Instances{Count: 2, CPUs: []int{0, 1}, MaxConn: 20000, Steering: SteeringAuto},
		Timeouts: Timeouts{
			Connect:       dur(DefaultConnect),
			Client:        dur(DefaultClient),
			Server:        dur(DefaultServer),
			HTTPRequest:   dur(DefaultHTTPRequest),
			HTTPKeepAlive: dur(DefaultHTTPKeepAlive),
			Drain:         dur(DefaultDrain),
			MaxTransfer:   dur(DefaultMaxTransfer),
			TLSHandshake:  dur(DefaultTLSHandshake),
		},
		Limits:  Limits{ConnectionsPerSource: intp(DefaultConnectionsPerSource)},
		HA:      HA{Mode: "none"},
		API:     API{Listen: "127.0.0.1:8404", Socket: "/run/ober/api.sock"},
		HAProxy: HAProxy{Binary: "haproxy", User: "ober-haproxy", Group: "ober-haproxy", Chroot: "/run/ober/empty", Tune: HAProxyTune{BufSize: 65536}},
		Consul:  Consul{Address: DefaultConsulAddress, CheckInterval: Duration{10 * time.Second}},
		TLS:     TLSSettings{SessionTickets: SessionTickets{Enabled: new(true), Rotate: Duration{12 * time.Hour}}},
	}
	require.Equal(t, want, c)

	// The constants say what SCHEMA.md says.
	require.Equal(t, "5s", fmtDuration(DefaultConnect))
	require.Equal(t, "1h", fmtDuration(DefaultMaxTransfer))
	require.Equal(t, "10s", fmtDuration(DefaultTLSHandshake))
	require.Equal(t, "5m", fmtDuration(DefaultClient))
	require.Equal(t, "5m", fmtDuration(DefaultServer))
	require.Equal(t, "30s", fmtDuration(DefaultHTTPRequest))
	require.Equal(t, "1m", fmtDuration(DefaultHTTPKeepAlive))
	require.Equal(t, "30s", fmtDuration(DefaultDrain))
	require.Equal(t, "2s", fmtDuration(DefaultHealthInterval))

	c.ApplyDefaults()
	require.Equal(t, want, c, "ApplyDefaults is idempotent")

	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}, c.ServiceVIPs(0))
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, c.ServiceVIPs(1))
	require.Nil(t, c.ServiceVIPs(2))
	require.Equal(t, []int{0, 1}, c.CPUs())
}

// legacyHealth is the check of a service on the top-level pool when
// backends.health says nothing: what HAProxy's check did before services
// had checks of their own.
func legacyHealth() *ServiceHealth {
	return &ServiceHealth{
		Kind: "http", Interval: dur(2 * time.Second), Timeout: dur(time.Second), Fall: 3, Rise: 2,
		InitialState: "up", Method: "GET", Path: "/", Status: "200-499",
	}
}

func TestDefaultsKeepSetValues(t *testing.T) {
	c := baseConfig()
	c.Node.Name = "edge-7"
	c.Timeouts.Drain = dur(1)
	c.Backends.Servers[0].Weight = intp(0)
	c.ApplyDefaults()
	require.Equal(t, "edge-7", c.Node.Name)
	require.Equal(t, dur(1), c.Timeouts.Drain)
	require.Equal(t, 0, *c.Backends.Servers[0].Weight)
	require.NotSame(t, c.Backends.Servers[0].Weight, c.Backends.Servers[1].Weight)
}

func TestDefaultInstances(t *testing.T) {
	tests := []struct {
		name      string
		allowed   []int
		in        Instances
		wantCount int
		wantCPUs  []int
	}{
		{"all allowed CPUs", []int{2, 3, 5}, Instances{}, 3, []int{2, 3, 5}},
		{"count picks the first", []int{2, 3, 5}, Instances{Count: 2}, 2, []int{2, 3}},
		{"cpus set the count", []int{2, 3, 5}, Instances{CPUs: []int{5, 2}}, 2, []int{5, 2}},
		{"both given", []int{2, 3, 5}, Instances{Count: 1, CPUs: []int{3}}, 1, []int{3}},
		{"count beyond the allowed CPUs", []int{0, 1}, Instances{Count: 3}, 3, nil},
		{"at most 64", seq(100), Instances{}, 64, seq(64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{Instances: tt.in, env: onCPUs(tt.allowed...)}
			c.ApplyDefaults()
			require.Equal(t, tt.wantCount, c.Instances.Count)
			require.Equal(t, tt.wantCPUs, c.Instances.CPUs)
			require.Equal(t, tt.wantCPUs, c.CPUs())
			require.Equal(t, DefaultMaxConn, c.Instances.MaxConn)
		})
	}
}

func TestCPUsWithoutDefaults(t *testing.T) {
	env := onCPUs(4, 5, 6)
	require.Equal(t, []int{4, 5, 6}, (&Config{env: env}).CPUs())
	require.Equal(t, []int{4}, (&Config{Instances: Instances{Count: 1}, env: env}).CPUs())
	require.Nil(t, (&Config{Instances: Instances{Count: 4}, env: env}).CPUs())
	c := &Config{Instances: Instances{CPUs: []int{6}}, env: env}
	cpus := c.CPUs()
	cpus[0] = 9
	require.Equal(t, []int{6}, c.Instances.CPUs, "CPUs returns a copy")
}

func TestAffinityCPUs(t *testing.T) {
	cpus := affinityCPUs()
	require.NotEmpty(t, cpus)
	require.True(t, slices.IsSorted(cpus))
	require.Equal(t, len(cpus), len(slices.Compact(slices.Clone(cpus))))
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
