package plan

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/pulse"
	"github.com/ober-ingress/ober/loader"
)

const kernelServices = `
vips: [10.20.0.10, "fd20::10"]
services:
  - name: web
    mode: tcp
    port: 8080
    backends: [{name: w, address: "10.30.0.1:8080"}]
  - name: dns
    mode: udp
    port: 53
    balance: consistent
    timeouts: {udp: 10s}
    health: {kind: probe, protocol: udp, send: "q", expect: "a", interval: 1s}
    access: {default: deny, rules: [allow 10.9.0.0/16]}
    backends:
      - {name: ns1, address: "10.30.1.1:53"}
      - {name: ns2, address: "10.30.1.2:53", weight: 50, state: drain}
      - {name: ns6, address: "[fd30::1]:53"}
  - name: db
    mode: nat
    ports: 7000-7001
    forward: dnat
    health: {port: 7000}
    backends: [{name: pg, address: "10.30.2.1"}]
`

// A udp or nat service is the kernel's: XDP rows that pass its packets
// to the stack (no listener, no dispatch), no HAProxy frontend or pool,
// its backends checked like any (the udp probe) but kept from HAProxy's
// controller, and a KernelService that says how nftables spreads flows.
func TestBuildKernelServices(t *testing.T) {
	p := build(t, kernelServices, facts(), nil)

	rows := map[string]loader.Service{}
	for _, s := range p.Tables.Services {
		rows[netip.AddrPortFrom(s.VIP, s.Port).String()+"/"+s.Proto.String()] = s
	}
	dns := rows["10.20.0.10:53/udp"]
	require.Equal(t, loader.ProtoUDP, dns.Proto)
	require.False(t, dns.Dispatch, "passed to the stack, where nftables translates it")
	require.NotZero(t, dns.Access, "its access list is XDP's")
	require.Contains(t, rows, "[fd20::10]:53/udp")
	require.Contains(t, rows, "10.20.0.10:7001/tcp", "one row per port of the range")
	require.False(t, rows["10.20.0.10:7000/tcp"].Dispatch)
	require.True(t, rows["10.20.0.10:8080/tcp"].Dispatch, "the tcp service is HAProxy's")

	require.Len(t, p.Listeners, 2, "web's, per family; none for the kernel's")
	require.Len(t, p.Pools, 1, "web's pool only")
	text := renderAll(t, p)
	require.NotContains(t, text, "frontend dns")
	require.NotContains(t, text, "frontend db")

	require.Len(t, p.Kernel, 2)
	k := p.Kernel[0]
	require.Equal(t, "dns", k.Name)
	require.Equal(t, config.ProtocolUDP, k.Protocol)
	require.Equal(t, config.BalanceConsistent, k.Balance)
	require.Equal(t, config.ForwardFullNAT, k.Forward)
	require.Equal(t, 10*time.Second, k.UDPTimeout)
	require.Equal(t, uint16(53), k.Port)
	require.Len(t, k.Servers, 3)
	ns2 := p.Servers[k.Servers[1]]
	require.True(t, ns2.Kernel)
	require.Equal(t, "ns2", ns2.Name)
	require.Equal(t, 50, ns2.Weight)
	require.Equal(t, config.StateDrain, ns2.Admin)
	require.Equal(t, pulse.ProtocolUDP, ns2.Target.Check.Protocol, "a UDP backend's probe is a datagram")
	db := p.Kernel[1]
	require.Equal(t, config.ProtocolTCP, db.Protocol)
	require.Equal(t, config.ForwardDNAT, db.Forward)
	require.Equal(t, [2]uint16{7000, 7001}, [2]uint16{db.Port, db.LastPort})
	for _, s := range p.Servers {
		require.Equal(t, s.Service != "web", s.Kernel, "%s/%s", s.Service, s.Name)
	}
}

// A kernel service's change (a backend's weight or state, its balance)
// is nftables' alone: no instance is renewed, and a change of an HAProxy
// service still renews them.
func TestDiffKernelServices(t *testing.T) {
	p1 := build(t, kernelServices, facts(), nil)
	for _, c := range []struct{ name, from, to string }{
		{"weight", `weight: 50, state: drain}`, `weight: 20, state: drain}`},
		{"state", `weight: 50, state: drain}`, `weight: 50, state: disabled}`},
		{"balance", `balance: consistent`, `balance: roundrobin`},
		{"timeout", `timeouts: {udp: 10s}`, `timeouts: {udp: 20s}`},
		{"backend", `{name: ns6, address: "[fd30::1]:53"}`, `{name: ns6, address: "[fd30::2]:53"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p2 := build(t, strings.Replace(kernelServices, c.from, c.to, 1), facts(), p1)
			ch := Diff(p1, p2)
			require.True(t, ch.Kernel, "changes: %s", ch)
			require.True(t, ch.RuntimeOnly(), "changes: %s", ch)
			require.Equal(t, "kernel services", ch.String())
		})
	}
	require.False(t, Diff(p1, build(t, kernelServices, facts(), p1)).Kernel, "the same file")
	p3 := build(t, strings.Replace(kernelServices, `address: "10.30.0.1:8080"`, `address: "10.30.0.2:8080"`, 1), facts(), p1)
	require.False(t, Diff(p1, p3).Kernel)
	require.False(t, Diff(p1, p3).RuntimeOnly(), "an HAProxy backend's address renews the instances")
}
