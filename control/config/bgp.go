package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/addrlist"
)

// BGP is ha.bgp: the node announces the VIPs to its routers while it is
// healthy, and takes them back the moment it is not.
type BGP struct {
	// ASN is the node's own AS number. Required.
	ASN uint32 `yaml:"asn"`
	// RouterID defaults to the first IPv4 address of node.interfaces,
	// read when ober starts.
	RouterID Addr `yaml:"router_id"`
	// ListenPort accepts sessions from routers; default 179, -1 for
	// none (the node only connects out; passive peers need a port).
	ListenPort int       `yaml:"listen_port"`
	Peers      []BGPPeer `yaml:"peers"`
	// Communities ("65000:100" or no-export, no-advertise,
	// no-export-subconfed, graceful-shutdown, blackhole),
	// LargeCommunities ("65000:1:2") and MED go with every VIP unless
	// VIPs says otherwise for one.
	Communities      []string `yaml:"communities"`
	LargeCommunities []string `yaml:"large_communities"`
	MED              *uint32  `yaml:"med"`
	VIPs             []BGPVIP `yaml:"vips"`
	// AnnounceWhen is the health the node needs to announce.
	AnnounceWhen AnnounceWhen `yaml:"announce_when"`
	// HoldDown is how long the node must stay healthy after a withdraw
	// before it announces again, so that a flapping backend does not
	// flap the route; default 5s.
	HoldDown Duration `yaml:"hold_down"`
	// Handoff keeps a draining node's connections alive after its
	// withdraw (README "Drain handoff").
	Handoff Handoff `yaml:"handoff"`
	// GracefulRestart keeps the routes at the routers across a restart
	// handover of ober (RFC 4724).
	GracefulRestart GracefulRestart `yaml:"graceful_restart"`
	// PathMTU is the largest packet the VIPs' TCP connections send or are
	// sent: their MSS is clamped to it (IPv4 PathMTU-40, IPv6 PathMTU-60).
	// Under ECMP a router's "fragmentation needed" (ICMPv6 "packet too
	// big") for a flow is hashed apart from the flow and reaches a node
	// without its socket, so path MTU discovery cannot be relied on;
	// default 1400, 0 turns the clamp off.
	PathMTU *int `yaml:"path_mtu"`
}

// GracefulRestart is the RFC 4724 capability on every session. With it, a
// restart handover (`ober restart`, SIGUSR2) ends the sessions without a
// NOTIFICATION, the routers keep the node's routes for RestartTime, and
// the next ober reconnects as a restarting speaker and refreshes them: the
// node never leaves the routers' tables. The routers must be graceful
// restart helpers (BIRD and FRR are by default).
type GracefulRestart struct {
	Enabled bool `yaml:"enabled"`
	// RestartTime is how long a router keeps the routes of a node whose
	// sessions ended without a NOTIFICATION (a handover, but also a
	// crash of ober while its instances keep serving); default 30s,
	// whole seconds up to 4095s (a 12-bit field of the capability).
	RestartTime Duration `yaml:"restart_time"`
}

// BGPPeer is one router.
type BGPPeer struct {
	Address Addr   `yaml:"address"`
	ASN     uint32 `yaml:"asn"`
	// Port is the router's BGP port; default 179.
	Port uint16 `yaml:"port"`
	// Password turns on TCP MD5 signatures.
	Password string `yaml:"password"`
	// HoldTime (whole seconds from 3s; 0s or unset takes the default
	// 9s) and
	// Keepalive (default a third of the hold time).
	HoldTime  Duration `yaml:"hold_time"`
	Keepalive Duration `yaml:"keepalive"`
	// ConnectRetry is the wait between connection attempts; default 5s.
	ConnectRetry Duration `yaml:"connect_retry"`
	// Multihop is the TTL towards a router that is not directly
	// connected (eBGP multihop); 0 means directly connected.
	Multihop int `yaml:"multihop"`
	// Passive waits for the router to connect.
	Passive bool `yaml:"passive"`
	BFD     BFD  `yaml:"bfd"`
}

// BFD is single-hop BFD on a session.
type BFD struct {
	Enabled bool `yaml:"enabled"`
	// Interval is both the transmit and the required receive interval;
	// default 300ms. The session is down after Multiplier (default 3)
	// intervals without a packet.
	Interval   Duration `yaml:"interval"`
	Multiplier int      `yaml:"multiplier"`
}

// BGPVIP overrides the attributes one VIP is announced with.
type BGPVIP struct {
	VIP              Addr     `yaml:"vip"`
	Communities      []string `yaml:"communities"`
	LargeCommunities []string `yaml:"large_communities"`
	MED              *uint32  `yaml:"med"`
}

// AnnounceWhen is the node's health as the routers should see it.
type AnnounceWhen struct {
	// MinInstances healthy HAProxy instances; default 1.
	MinInstances int `yaml:"min_instances"`
	// BackendUp requires at least one backend server up; default true.
	BackendUp *bool `yaml:"backend_up"`
	// BackendScope is how BackendUp judges a node with no backend up:
	// "cluster" (default) withdraws it only while another node of
	// handoff.nodes reports a backend up, so that an outage of every
	// backend leaves the VIPs announced and answering 503 instead of
	// unreachable; "local" withdraws it whatever the others see.
	BackendScope string `yaml:"backend_scope"`
}

// Backend scopes of ha.bgp.announce_when.
const (
	BackendScopeCluster = "cluster"
	BackendScopeLocal   = "local"
)

// Handoff lists the ober nodes that share the VIPs.
type Handoff struct {
	// Nodes are the IPv4 addresses of every node, this one included, in
	// the same order on every node. Empty turns handoff off.
	Nodes []Addr `yaml:"nodes"`
	// Port is the UDP port nodes tell each other about drains on;
	// default 4793.
	Port uint16 `yaml:"port"`
	// JoinWindow is how long after a node (re-)announces the nodes keep
	// handing back the connections the routers moved to it; default 60s,
	// which should cover the longest transfer worth keeping.
	JoinWindow Duration `yaml:"join_window"`
	// KeyFile holds the secret the nodes share: every notice, flow
	// record and health report between them is authenticated with
	// HMAC-SHA256 under it. Required with Nodes: at least 32 bytes,
	// readable by its owner only.
	KeyFile string `yaml:"key_file"`
	// MaxTransition caps how long one notice of a peer keeps this node
	// handing off (its deadline); default 5m.
	MaxTransition Duration `yaml:"max_transition"`
	// Rate is how many orphaned segments per second each CPU may
	// forward to their owners; default 100000, 0 for no limit. Burst is
	// how many it may forward at once; default 1000.
	Rate  *uint64 `yaml:"rate"`
	Burst uint64  `yaml:"burst"`
}

// BGP defaults and limits.
const (
	DefaultBGPPort         = 179
	DefaultBGPHoldTime     = 9 * time.Second
	DefaultBGPConnectRetry = 5 * time.Second
	DefaultBFDInterval     = 300 * time.Millisecond
	DefaultBFDMultiplier   = 3
	DefaultHoldDown        = 5 * time.Second
	DefaultHandoffPort     = 4793
	DefaultJoinWindow      = 60 * time.Second
	DefaultMaxTransition   = 5 * time.Minute
	DefaultHandoffRate     = 100000
	DefaultHandoffBurst    = 1000
	// MinHandoffKey is the shortest shared key: HMAC-SHA256's block
	// strength wants 32 bytes of secret.
	MinHandoffKey       = 32
	DefaultRestartTime  = 30 * time.Second
	MaxRestartTime      = 4095 * time.Second
	DefaultMinInstances = 1
	DefaultPathMTU      = 1400
	// MinPathMTU is the smallest MTU IPv6 allows a link (RFC 8200).
	MinPathMTU = 1280

	MinBFDInterval  = 10 * time.Millisecond
	MaxHandoffNodes = 16
)

func (b *BGP) applyDefaults() {
	if b.ListenPort == 0 {
		b.ListenPort = DefaultBGPPort
	}
	for i := range b.Peers {
		p := &b.Peers[i]
		if p.Port == 0 {
			p.Port = DefaultBGPPort
		}
		setDuration(&p.HoldTime, DefaultBGPHoldTime)
		if p.Keepalive.Duration == 0 {
			p.Keepalive.Duration = (p.HoldTime.Duration / 3).Truncate(time.Second)
		}
		setDuration(&p.ConnectRetry, DefaultBGPConnectRetry)
		if p.BFD.Enabled {
			setDuration(&p.BFD.Interval, DefaultBFDInterval)
			setInt(&p.BFD.Multiplier, DefaultBFDMultiplier)
		}
	}
	setInt(&b.AnnounceWhen.MinInstances, DefaultMinInstances)
	if b.AnnounceWhen.BackendUp == nil {
		t := true
		b.AnnounceWhen.BackendUp = &t
	}
	setDuration(&b.HoldDown, DefaultHoldDown)
	b.Handoff.applyDefaults()
	setString(&b.AnnounceWhen.BackendScope, BackendScopeCluster)
	if b.PathMTU == nil {
		m := DefaultPathMTU
		b.PathMTU = &m
	}
	if b.GracefulRestart.Enabled {
		setDuration(&b.GracefulRestart.RestartTime, DefaultRestartTime)
	}
}

func (c *Config) validateBGP(p *problems) {
	b := c.HA.BGP
	switch {
	case c.HA.Mode == HAModeBGP && b == nil:
		p.add("ha.bgp", "", "required for ha.mode bgp (asn and peers at least)")
		return
	case b == nil:
		return
	case c.HA.Mode != HAModeBGP:
		mode := c.HA.Mode
		if mode == "" {
			mode = DefaultHAMode
		}
		p.add("ha.bgp", "", "set, but ha.mode is %s; set ha.mode: bgp or remove ha.bgp", mode)
		return
	}
	if msg := asnProblem(b.ASN); msg != "" {
		p.add("ha.bgp.asn", strconv.FormatUint(uint64(b.ASN), 10), "%s", msg)
	}
	if b.RouterID.IsValid() && !b.RouterID.Is4() {
		p.add("ha.bgp.router_id", b.RouterID.String(), "must be an IPv4 address")
	}
	if b.ListenPort < -1 || b.ListenPort > 65535 {
		p.add("ha.bgp.listen_port", strconv.Itoa(b.ListenPort), "must be 1-65535, or -1 to accept no sessions")
	}
	if len(b.Peers) == 0 {
		p.add("ha.bgp.peers", "", "at least one peer is required")
	}
	vips := map[netip.Addr]bool{}
	for _, v := range c.VIPs {
		vips[v.Addr] = true
	}
	seen := map[netip.Addr]int{}
	for i, peer := range b.Peers {
		base := fmt.Sprintf("ha.bgp.peers[%d]", i)
		a := peer.Address.Addr
		switch {
		case !a.IsValid():
			p.add(base+".address", "", "an address is required")
		case a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.Is4In6():
			p.add(base+".address", a.String(), "must be a router's unicast address without zone")
		case vips[a]:
			p.add(base+".address", a.String(), "is one of the VIPs")
		default:
			if j, dup := seen[a]; dup {
				p.add(base+".address", a.String(), "duplicate of ha.bgp.peers[%d]", j)
			}
			seen[a] = i
		}
		if msg := asnProblem(peer.ASN); msg != "" {
			p.add(base+".asn", strconv.FormatUint(uint64(peer.ASN), 10), "%s", msg)
		}
		h, k := peer.HoldTime.Duration, peer.Keepalive.Duration
		switch {
		case h < 0 || (h > 0 && h < 3*time.Second) || h%time.Second != 0 || h > 65535*time.Second:
			p.add(base+".hold_time", fmtDuration(h), "must be 0s or whole seconds from 3s to 65535s (RFC 4271)")
		case k < 0 || k%time.Second != 0:
			p.add(base+".keepalive", fmtDuration(k), "must be whole seconds")
		case h > 0 && k >= h:
			p.add(base+".keepalive", fmtDuration(k), "must be shorter than hold_time %s", fmtDuration(h))
		}
		if r := peer.ConnectRetry.Duration; r < 0 || r%time.Second != 0 {
			p.add(base+".connect_retry", fmtDuration(r), "must be whole seconds")
		}
		if peer.Multihop < 0 || peer.Multihop > 255 {
			p.add(base+".multihop", strconv.Itoa(peer.Multihop), "must be a TTL from 0 (directly connected) to 255")
		}
		if peer.Passive && b.ListenPort == -1 {
			p.add(base+".passive", "true", "needs ha.bgp.listen_port (it is -1: nothing accepts the router's connection)")
		}
		if peer.Password != "" && strings.TrimSpace(peer.Password) == "" {
			p.add(base+".password", "", "must not be blank")
		}
		if bfd := peer.BFD; bfd.Enabled {
			if peer.Multihop > 0 {
				p.add(base+".bfd.enabled", "true", "BFD is single-hop only; it cannot run with multihop %d", peer.Multihop)
			}
			if iv := bfd.Interval.Duration; iv != 0 && (iv < MinBFDInterval || iv%time.Millisecond != 0 || iv > 60*time.Second) {
				p.add(base+".bfd.interval", fmtDuration(iv), "must be whole milliseconds from 10ms to 60s")
			}
			if m := bfd.Multiplier; m < 0 || m > 255 {
				p.add(base+".bfd.multiplier", strconv.Itoa(m), "must be 1-255")
			}
		}
	}
	checkCommunities(p, "ha.bgp", b.Communities, b.LargeCommunities)
	seenVIP := map[netip.Addr]int{}
	for i, v := range b.VIPs {
		base := fmt.Sprintf("ha.bgp.vips[%d]", i)
		switch j, dup := seenVIP[v.VIP.Addr]; {
		case !v.VIP.IsValid():
			p.add(base+".vip", "", "a VIP is required")
		case !vips[v.VIP.Addr]:
			p.add(base+".vip", v.VIP.String(), "is not in vips")
		case dup:
			p.add(base+".vip", v.VIP.String(), "duplicate of ha.bgp.vips[%d]", j)
		default:
			seenVIP[v.VIP.Addr] = i
		}
		checkCommunities(p, base, v.Communities, v.LargeCommunities)
	}
	if m := b.AnnounceWhen.MinInstances; m < 0 || (c.Instances.Count > 0 && m > c.Instances.Count) {
		p.add("ha.bgp.announce_when.min_instances", strconv.Itoa(m), "must be 1 to instances.count (%d)", c.Instances.Count)
	}
	if d := b.HoldDown.Duration; d < 0 || d > time.Hour {
		p.add("ha.bgp.hold_down", fmtDuration(d), "must be 0s to 1h")
	}
	b.Handoff.validate(p, "ha.bgp.handoff", "ha.bgp.handoff.nodes", b.Handoff.Nodes)
	if m := b.PathMTU; m != nil && *m != 0 && (*m < MinPathMTU || *m > 65535) {
		p.add("ha.bgp.path_mtu", strconv.Itoa(*m), "must be 1280 to 65535 bytes, or 0 to leave the MSS alone")
	}
	switch s := b.AnnounceWhen.BackendScope; s {
	case BackendScopeCluster, BackendScopeLocal:
	default:
		p.add("ha.bgp.announce_when.backend_scope", quote(s), "must be cluster or local")
	}
	gr := b.GracefulRestart
	switch rt := gr.RestartTime.Duration; {
	case !gr.Enabled && rt != 0:
		p.add("ha.bgp.graceful_restart.restart_time", fmtDuration(rt), "set, but graceful_restart.enabled is false; enable it or remove restart_time")
	case gr.Enabled && (rt < time.Second || rt > MaxRestartTime || rt%time.Second != 0):
		p.add("ha.bgp.graceful_restart.restart_time", fmtDuration(rt), "must be whole seconds from 1s to 4095s (RFC 4724)")
	}
}

func asnProblem(asn uint32) string {
	switch asn {
	case 0:
		return "an AS number 1-4294967294 is required"
	case 23456:
		return "23456 is AS_TRANS (RFC 6793), not a real AS"
	case 4294967295:
		return "4294967295 is reserved (RFC 7300)"
	}
	return ""
}

func checkCommunities(p *problems, base string, cs, lcs []string) {
	for i, s := range cs {
		if _, err := ParseCommunity(s); err != nil {
			p.add(fmt.Sprintf("%s.communities[%d]", base, i), quote(s), "%v", err)
		}
	}
	for i, s := range lcs {
		if _, err := ParseLargeCommunity(s); err != nil {
			p.add(fmt.Sprintf("%s.large_communities[%d]", base, i), quote(s), "%v", err)
		}
	}
}

var wellKnownCommunities = map[string]uint32{
	"graceful-shutdown":   0xFFFF0000,
	"blackhole":           0xFFFF029A,
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
}

// ParseCommunity reads "asn:value" (each 0-65535) or a well-known name.
func ParseCommunity(s string) (uint32, error) {
	if v, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
		return v, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	a, errA := strconv.ParseUint(hi, 10, 16)
	b, errB := strconv.ParseUint(lo, 10, 16)
	if !ok || errA != nil || errB != nil {
		names := make([]string, 0, len(wellKnownCommunities))
		for n := range wellKnownCommunities {
			names = append(names, n)
		}
		slices.Sort(names)
		return 0, fmt.Errorf("must be asn:value with each 0-65535, or one of %s", strings.Join(names, ", "))
	}
	return uint32(a)<<16 | uint32(b), nil
}

// ParseLargeCommunity reads "global:local1:local2" (each 0-4294967295).
func ParseLargeCommunity(s string) ([3]uint32, error) {
	parts := strings.Split(s, ":")
	var out [3]uint32
	if len(parts) != 3 {
		return out, fmt.Errorf("must be global:local1:local2 with each 0-4294967295")
	}
	for i, part := range parts {
		v, err := strconv.ParseUint(part, 10, 32)
		if err != nil {
			return out, fmt.Errorf("must be global:local1:local2 with each 0-4294967295")
		}
		out[i] = uint32(v)
	}
	return out, nil
}

// routersWhitelist settles the routers whitelist in bgp mode: empty means
// the peers' addresses; otherwise every peer must be on it, or XDP would
// drop its BGP and BFD packets.
func (c *Config) routersWhitelist(res *Resolved) error {
	b := c.HA.BGP
	if c.HA.Mode != HAModeBGP || b == nil {
		return nil
	}
	if len(c.Whitelists.Routers) == 0 {
		var ps []netip.Prefix
		for _, peer := range b.Peers {
			ps = append(ps, netip.PrefixFrom(peer.Address.Addr, peer.Address.BitLen()))
		}
		res.Whitelists[WhitelistRouters] = addrlist.Normalize(ps)
		return nil
	}
	var p problems
	for i, peer := range b.Peers {
		if !slices.ContainsFunc(res.Whitelists[WhitelistRouters], func(pr netip.Prefix) bool { return pr.Contains(peer.Address.Addr) }) {
			p.add(fmt.Sprintf("ha.bgp.peers[%d].address", i), peer.Address.String(),
				"is not in whitelists.routers: XDP would drop its BGP and BFD packets (add it, or leave the list empty to admit exactly the peers)")
		}
	}
	return p.err()
}

// ReadSharedKey reads a secret the nodes of a site share (the handoff
// key, the TLS session ticket seed): the file's bytes, a final newline
// left out. It must hold at least MinHandoffKey bytes and be readable by
// its owner only, as a secret is.
func ReadSharedKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, errors.New(fileProblem(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("is not a regular file")
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("mode %04o lets others read the key; chmod 600 it", m)
	}
	data, err := readSmallFile(path)
	if err != nil {
		return nil, errors.New(fileProblem(err))
	}
	key := bytes.TrimRight(data, "\r\n")
	if len(key) < MinHandoffKey {
		return nil, fmt.Errorf("holds %d bytes; the key must have at least %d (openssl rand -hex 32)", len(key), MinHandoffKey)
	}
	return key, nil
}

func (h *Handoff) applyDefaults() {
	if h.Port == 0 {
		h.Port = DefaultHandoffPort
	}
	setDuration(&h.JoinWindow, DefaultJoinWindow)
	setDuration(&h.MaxTransition, DefaultMaxTransition)
	if h.Rate == nil {
		r := uint64(DefaultHandoffRate)
		h.Rate = &r
	}
	if h.Burst == 0 {
		h.Burst = DefaultHandoffBurst
	}
}

// validate checks a handoff block at prefix whose nodes are nodes, listed
// at nodesKey (its own list in BGP mode, ha.vrrp.nodes in VRRP mode).
func (h *Handoff) validate(p *problems, prefix, nodesKey string, nodes []Addr) {
	h.validateNodes(p, nodesKey, nodes)
	h.validateRest(p, prefix, nodesKey, nodes)
}

// validateNodes checks the nodes' addresses and number.
func (h *Handoff) validateNodes(p *problems, nodesKey string, nodes []Addr) {
	seenNode := map[netip.Addr]int{}
	for i, n := range nodes {
		path := fmt.Sprintf("%s[%d]", nodesKey, i)
		switch j, dup := seenNode[n.Addr]; {
		case !n.Is4() || n.IsUnspecified() || n.IsMulticast() || n.IsLoopback():
			p.add(path, addrValue(n.Addr), "must be a node's unicast IPv4 address (handoff tunnels are IPv4)")
		case dup:
			p.add(path, n.String(), "duplicate of %s[%d]", nodesKey, j)
		default:
			seenNode[n.Addr] = i
		}
	}
	if len(nodes) > MaxHandoffNodes {
		p.add(nodesKey, strconv.Itoa(len(nodes))+" nodes", "at most %d", MaxHandoffNodes)
	}
	if len(nodes) == 1 {
		p.add(nodesKey, nodes[0].String(), "one node has nobody to hand off to; list every node or none")
	}
}

// validateRest checks everything of the block but the nodes.
func (h *Handoff) validateRest(p *problems, prefix, nodesKey string, nodes []Addr) {
	if w := h.JoinWindow.Duration; w < 0 || w > time.Hour {
		p.add(prefix+".join_window", fmtDuration(w), "must be 0s to 1h")
	}
	switch k := h.KeyFile; {
	case len(nodes) > 0 && k == "":
		p.add(prefix+".key_file", "", "required with %s: the nodes authenticate each other with it (make one with `openssl rand -hex 32 > FILE; chmod 600 FILE` and copy it to every node)", nodesKey)
	case k != "":
		if _, err := ReadSharedKey(k); err != nil {
			p.add(prefix+".key_file", quote(k), "%v", err)
		}
	}
	if m := h.MaxTransition.Duration; m < time.Second || m > 24*time.Hour {
		p.add(prefix+".max_transition", fmtDuration(m), "must be 1s to 24h")
	}
	if r := h.Rate; r != nil && *r > 1_000_000_000 {
		p.add(prefix+".rate", strconv.FormatUint(*r, 10), "must be at most 1000000000 per second (0: no limit)")
	}
	if bu := h.Burst; bu > 1<<32-1 {
		p.add(prefix+".burst", strconv.FormatUint(bu, 10), "must be at most 4294967295")
	}
}
