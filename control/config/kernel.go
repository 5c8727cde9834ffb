package config

import (
	"fmt"
	"strconv"
	"time"
)

// Defaults of the services the kernel forwards (modes udp and nat).
const (
	DefaultKernelBalance  = BalanceWeighted
	DefaultKernelFallback = FallbackReject
	DefaultForward        = ForwardFullNAT
	// MaxUDPTimeout bounds timeouts.udp and udp_stream.
	MaxUDPTimeout = 24 * time.Hour
)

// kernelBalances are the methods nftables can do: it counts no
// connections and measures no bandwidth.
var kernelBalances = []string{BalanceWeighted, BalanceRandom, BalanceRoundRobin, BalanceSource, BalanceConsistent}

// ServiceProtocol is what services[i] carries: tcp or udp.
func (c *Config) ServiceProtocol(i int) string {
	s := &c.Services[i]
	switch {
	case s.Mode == ModeUDP:
		return ProtocolUDP
	case s.Mode == ModeNAT && s.Protocol != "":
		return s.Protocol
	}
	return ProtocolTCP
}

func (c *Config) applyKernelDefaults(i int) {
	s := &c.Services[i]
	if !IsKernelMode(s.Mode) {
		return
	}
	setString(&s.Forward, DefaultForward)
	if s.Mode == ModeNAT {
		setString(&s.Protocol, ProtocolTCP)
	}
	setString(&s.Balance, DefaultKernelBalance)
	setString(&s.Fallback, DefaultKernelFallback)
	if s.Slowstart == nil {
		// The kernel path sets whole weights at once.
		s.Slowstart = &Duration{}
	}
	if s.Health == nil && c.ServiceProtocol(i) == ProtocolUDP {
		// A UDP backend answers no TCP connect; what to ask it is the
		// operator's to say (probe with protocol udp, or exec).
		s.Health = &ServiceHealth{Kind: CheckNone}
	}
}

// validateKernelKeys checks the keys that belong to the kernel modes, on
// every service, and refuses on a kernel service what only HAProxy does.
func (c *Config) validateKernelKeys(p *problems, i int) {
	s := &c.Services[i]
	base := fmt.Sprintf("services[%d]", i)
	if h := s.Health; h != nil {
		switch {
		case h.Protocol != "" && h.Protocol != ProtocolTCP && h.Protocol != ProtocolUDP:
			p.add(base+".health.protocol", quote(h.Protocol), "must be tcp or udp")
		case h.Protocol == ProtocolUDP && h.Send == "":
			p.add(base+".health.send", "", "required for a udp probe: it sends one datagram and matches the reply")
		}
	}
	if !IsKernelMode(s.Mode) {
		only := func(key, value string) {
			p.add(base+"."+key, value, "only for modes udp and nat (forwarded by the kernel)")
		}
		if s.Protocol != "" {
			only("protocol", quote(s.Protocol))
		}
		if s.Forward != "" {
			only("forward", quote(s.Forward))
		}
		if s.HashSourcePort {
			only("hash_source_port", "true")
		}
		if d := s.Timeouts.UDP.Duration; d != 0 {
			only("timeouts.udp", fmtDuration(d))
		}
		if d := s.Timeouts.UDPStream.Duration; d != 0 {
			only("timeouts.udp_stream", fmtDuration(d))
		}
		return
	}
	mode := s.Mode
	haproxyOnly := func(key, value, instead string) {
		p.add(base+"."+key, value, "not for mode %s, which the kernel forwards without a proxy%s", mode, instead)
	}
	switch {
	case s.Mode == ModeUDP && s.Protocol != "" && s.Protocol != ProtocolUDP:
		p.add(base+".protocol", quote(s.Protocol), "mode udp is udp; use mode nat with protocol tcp to forward TCP in the kernel")
	case s.Mode == ModeNAT && s.Protocol != "" && s.Protocol != ProtocolTCP && s.Protocol != ProtocolUDP:
		p.add(base+".protocol", quote(s.Protocol), "must be tcp or udp")
	}
	switch s.Forward {
	case "", ForwardFullNAT, ForwardDNAT:
	default:
		p.add(base+".forward", quote(s.Forward), "must be fullnat or dnat")
	}
	if s.Balance != "" && !contains(kernelBalances, s.Balance) {
		p.add(base+".balance", quote(s.Balance), "the kernel counts no connections per backend: use weighted, random, roundrobin, source or consistent")
	}
	if s.HashSourcePort && s.Balance != BalanceSource {
		p.add(base+".hash_source_port", "true", "only with balance source")
	}
	if s.TLSPassthrough != nil {
		haproxyOnly("tls_passthrough", "", "; use mode tcp to route by SNI")
	}
	if len(s.Pools) > 0 {
		haproxyOnly("pools", "", " (pools are for tls_passthrough's routes)")
	}
	if s.ProxyProtocol != "" {
		haproxyOnly("proxy_protocol", quote(s.ProxyProtocol), "; use forward: dnat to show the client's address to the backends")
	}
	if s.MaxConnections != 0 {
		haproxyOnly("max_connections", strconv.Itoa(s.MaxConnections), "")
	}
	for _, f := range []struct {
		key string
		d   time.Duration
	}{
		{"connect", s.Timeouts.Connect.Duration},
		{"client_idle", s.Timeouts.ClientIdle.Duration},
		{"backend_idle", s.Timeouts.BackendIdle.Duration},
	} {
		if f.d != 0 {
			haproxyOnly("timeouts."+f.key, fmtDuration(f.d), "; timeouts.udp and udp_stream set a UDP flow's")
		}
	}
	if s.Slowstart != nil && s.Slowstart.Duration != 0 {
		haproxyOnly("slowstart", fmtDuration(s.Slowstart.Duration), " (it gives a backend its whole weight at once)")
	}
	if s.Fallback == FallbackServe503 {
		haproxyOnly("fallback", quote(s.Fallback), "; use reject (the default) or keep_last")
	}
	udp := c.ServiceProtocol(i) == ProtocolUDP
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"udp", s.Timeouts.UDP.Duration}, {"udp_stream", s.Timeouts.UDPStream.Duration}} {
		switch {
		case f.d == 0:
		case !udp:
			p.add(base+".timeouts."+f.key, fmtDuration(f.d), "only for UDP (this service is tcp)")
		case f.d < time.Second || f.d > MaxUDPTimeout || f.d%time.Second != 0:
			p.add(base+".timeouts."+f.key, fmtDuration(f.d), "must be whole seconds, 1s to 24h")
		}
	}
	if h := s.Health; h != nil && udp {
		switch h.Kind {
		case CheckTCP, CheckHTTP, CheckHTTPS:
			p.add(base+".health.kind", quote(h.Kind), "a UDP backend answers no TCP check: use probe with protocol: udp, exec or none")
		case CheckProbe:
			if h.Protocol != ProtocolUDP {
				p.add(base+".health.protocol", quote(h.Protocol), "a UDP service's probe must be protocol: udp")
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
