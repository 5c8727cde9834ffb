package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const kernelHead = `node:
  name: n1
  interfaces: [eth1]
haproxy: {user: nobody, group: nogroup}
instances: {cpus: [0]}
vips: [10.0.0.1, "fd00::1"]
services:
`

// A udp and a nat service load with the kernel path's defaults.
func TestKernelServicesDefaults(t *testing.T) {
	c, err := Parse([]byte(kernelHead + `  - name: dns
    mode: udp
    port: 53
    backends:
      - {name: ns1, address: "10.1.0.1:53"}
  - name: db
    mode: nat
    ports: 7000-7009
    health: {port: 7000}
    backends:
      - {name: pg, address: "10.1.0.2"}
  - name: syslog
    mode: nat
    protocol: udp
    port: 514
    forward: dnat
    balance: sh
    hash_source_port: true
    timeouts: {udp: 10s, udp_stream: 5m}
    health: {kind: probe, protocol: udp, send: "ping", expect: "pong"}
    backends:
      - {name: s1, address: "10.1.0.3:514"}
`))
	require.NoError(t, err)
	dns, db, syslog := c.Services[0], c.Services[1], c.Services[2]
	require.Equal(t, ProtocolUDP, c.ServiceProtocol(0))
	require.Equal(t, ProtocolTCP, c.ServiceProtocol(1))
	require.Equal(t, ProtocolUDP, c.ServiceProtocol(2))
	require.Equal(t, ForwardFullNAT, dns.Forward)
	require.Equal(t, BalanceWeighted, dns.Balance)
	require.Equal(t, FallbackReject, dns.Fallback)
	require.Equal(t, time.Duration(0), dns.Slowstart.Duration)
	require.Equal(t, CheckNone, dns.Health.Kind, "a UDP backend gets no TCP connect by default")
	require.Equal(t, CheckTCP, db.Health.Kind)
	require.Equal(t, ProtocolTCP, db.Protocol)
	require.Equal(t, ForwardDNAT, syslog.Forward)
	require.Equal(t, BalanceSource, syslog.Balance, "IPVS's sh is ober's source")
	require.Equal(t, 10*time.Second, syslog.Timeouts.UDP.Duration)
}

// A udp or nat service without backends has an empty pool of its own:
// it never takes the top-level backends.servers (the S3 gateways), which
// a nat service without backends once did.
func TestKernelServiceWithoutBackends(t *testing.T) {
	c, err := Parse([]byte(kernelHead + `  - {name: pg, mode: nat, port: 5432}
  - {name: dns, mode: udp, port: 53}
backends:
  servers: [{name: s3a, address: "10.1.0.9:7480"}]
`))
	require.NoError(t, err)
	for i := range c.Services {
		pools := c.ServicePools(i)
		require.Len(t, pools, 1, "%s", c.Services[i].Name)
		require.False(t, pools[0].Shared, "%s takes the top-level pool", c.Services[i].Name)
		require.Empty(t, pools[0].Servers)
	}
}

// What the kernel cannot do is refused, with the field, the value and
// what to use instead; the kernel's keys are refused on other modes.
func TestKernelServicesRefused(t *testing.T) {
	svc := func(extra string) string {
		return kernelHead + "  - name: k\n    mode: udp\n    port: 53\n" + extra +
			"    backends:\n      - {name: b, address: \"10.1.0.1:53\"}\n"
	}
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"leastconn", svc("    balance: wlc\n"), `services[0].balance: "leastconn": the kernel counts no connections per backend: use weighted, random, roundrobin, source or consistent`},
		{"tls", svc("    tls: {self_signed: true}\n"), `services[0].tls: not allowed for mode udp (the kernel forwards its packets as they are)`},
		{"proxy protocol", svc("    proxy_protocol: v2\n"), `services[0].proxy_protocol: "v2": not for mode udp, which the kernel forwards without a proxy; use forward: dnat to show the client's address to the backends`},
		{"tcp protocol on udp", svc("    protocol: tcp\n"), `services[0].protocol: "tcp": mode udp is udp; use mode nat with protocol tcp to forward TCP in the kernel`},
		{"forward", svc("    forward: tunnel\n"), `services[0].forward: "tunnel": must be fullnat or dnat`},
		{"slowstart", svc("    slowstart: 10s\n"), `services[0].slowstart: 10s: not for mode udp, which the kernel forwards without a proxy (it gives a backend its whole weight at once)`},
		{"serve_503", svc("    fallback: serve_503\n"), `services[0].fallback: "serve_503": not for mode udp, which the kernel forwards without a proxy; use reject (the default) or keep_last`},
		{"tcp check", svc("    health: {kind: tcp}\n"), `services[0].health.kind: "tcp": a UDP backend answers no TCP check: use probe with protocol: udp, exec or none`},
		{"tcp probe", svc("    health: {kind: probe, send: x, expect: y}\n"), `services[0].health.protocol: "": a UDP service's probe must be protocol: udp`},
		{"udp probe without send", svc("    health: {kind: probe, protocol: udp, expect: x}\n"), `services[0].health.send: required for a udp probe: it sends one datagram and matches the reply`},
		{"udp timeout", svc("    timeouts: {udp: 500ms}\n"), `services[0].timeouts.udp: 500ms: must be whole seconds, 1s to 24h`},
		{"client_idle", svc("    timeouts: {client_idle: 5s}\n"), `services[0].timeouts.client_idle: 5s: not for mode udp, which the kernel forwards without a proxy; timeouts.udp and udp_stream set a UDP flow's`},
		{"hash_source_port without source", svc("    hash_source_port: true\n"), `services[0].hash_source_port: true: only with balance source`},
		{"udp timeout on nat tcp", strings.Replace(svc("    timeouts: {udp: 5s}\n"), "mode: udp", "mode: nat", 1), `services[0].timeouts.udp: 5s: only for UDP (this service is tcp)`},
		{"forward on tcp", strings.Replace(svc("    forward: dnat\n"), "mode: udp", "mode: tcp", 1), `services[0].forward: "dnat": only for modes udp and nat (forwarded by the kernel)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}
