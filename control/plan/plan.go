// Package plan turns a validated configuration into a NodePlan: a typed
// description of everything one node runs. That is the dataplane's tables
// (VIPs, services, whitelists, steering), the HAProxy instances (slots,
// listeners and what their configuration is rendered from), the files
// those load, and the BGP speaker's or keepalived's configuration.
//
// Build is a pure function of the configuration, its resolved names and a
// few facts read from the node (Facts): it reads and writes nothing, so
// `ober run --check`, `ober test`, `ober config --dry-run` and the daemon
// get the same plan from the same input, and tests compare plans without
// root. The impure edges stand apart and say so: ReadFacts reads the node
// (interface addresses, certificates, the descriptor limit), WriteFiles
// puts a plan's files in place, CheckHAProxy has HAProxy check a rendered
// configuration. Diff says what applying a plan over another changes;
// applying it is the daemon's job.
package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/ipam"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
	"github.com/ober-ingress/ober/loader"
)

// NodePlan is one configuration laid out as what the node runs. Each
// runtime component gets its part in its own input type.
type NodePlan struct {
	Config   *config.Config
	Resolved *config.Resolved

	// Interfaces get the XDP program, in XDPMode.
	Interfaces []string
	XDPMode    loader.XDPMode

	// Tables are what the dataplane's maps hold.
	Tables Tables
	// SteeringReason says why Tables.Steering is what it is
	// (DecideSteering).
	SteeringReason string

	// Slots and Listeners are the supervisor's instance positions and
	// socket rows; ListenerIDs are the listeners' IDs by what they serve,
	// carried over to the next plan (see ListenerKey).
	Slots       []supervisor.Slot
	Listeners   []supervisor.Listener
	ListenerIDs map[ListenerKey]uint32

	// HAProxy is the release the instances' configuration is for.
	HAProxy haproxy.Version
	// MaxConn is instances.maxconn, lowered when FDLimit, the
	// descriptor limit, cannot hold it (HAProxy refuses to start then).
	MaxConn   int
	FDLimit   uint64
	Frontends []Frontend
	// Pools are the HAProxy pools of every service; Servers their
	// servers, as the health checks and the servers controller see them.
	Pools   []haproxy.Pool
	Servers []Server
	// Kernel are the services the kernel forwards (modes udp and nat).
	Kernel []KernelService
	// AccessIDs are the dataplane's access list IDs by service name,
	// carried over to the next plan.
	AccessIDs map[string]loader.AccessID
	// IPAM is the address allocation of the services without VIPs.
	IPAM IPAM
	// ACLs are the whitelist files HAProxy loads, by list name.
	ACLs map[string]string
	// CertNotAfter is when each TLS service's certificate expires, by
	// service name: the earliest NotAfter of its chain, since a chain
	// fails with its first certificate to expire.
	CertNotAfter map[string]time.Time
	// TicketKeys is the TLS session ticket keys file the instances
	// load (TicketKeysFile) while tls.session_tickets is on and a
	// service terminates TLS; empty otherwise. Its keys change with
	// time, so it is not one of Files: runtime/tickets writes it.
	TicketKeys string
	// Files are the certificate bundles and whitelist files the instances
	// load. Each is named by its content, so a file a running instance
	// loaded never changes under it.
	Files []File

	// BGP is set in ha.mode bgp, VRRP in ha.mode vrrp.
	BGP  *BGP
	VRRP *vrrp.Config
}

// Tables are the contents of the dataplane's maps that a plan decides.
type Tables struct {
	VIPs     []loader.VIP
	Services []loader.Service
	// Whitelists hold each list's prefixes by dataplane ID, normalized.
	Whitelists map[loader.WhitelistID][]netip.Prefix
	// Access are the services' access lists, compiled, by ID.
	Access   map[loader.AccessID][]loader.AccessEntry
	Steering bool
}

// Frontend is one service as HAProxy sees it.
type Frontend struct {
	Service   config.Service
	Listeners []supervisor.Listener
	// PEM is the certificate bundle of a TLS service.
	PEM  string
	VIPs []netip.Addr
	// Key is what the service is; PoolNames maps its pools' names
	// (config.DefaultPool, pools[]) to their HAProxy pools.
	Key       ServiceKey
	PoolNames map[string]string
}

// File is one file the instances load.
type File struct {
	Path string
	Data []byte
	// Secret files (private keys) are never shown, only named.
	Secret bool
}

// BGP is what the daemon's speaker runs with: its configuration (peers
// with ha.bgp.graceful_restart applied) and the routes it announces when the node is
// healthy.
type BGP struct {
	Speaker bgp.Config
	Routes  []bgp.Route
}

// Facts are what a plan needs from the node besides the configuration.
type Facts struct {
	// HAProxy is the version of haproxy.binary.
	HAProxy haproxy.Version
	// FDLimit is the descriptor limit the instances inherit.
	FDLimit uint64
	// Addrs are interface addresses by interface name: node.interfaces'
	// in ha.mode bgp, ha.vrrp.interface's in ha.mode vrrp without
	// ha.vrrp.self.
	Addrs map[string][]netip.Addr
	// PEM is each TLS service's certificate chain and key, by service
	// name, as HAProxy loads them.
	PEM map[string][]byte
	// Allocations are the addresses IPAM gave services before (read
	// from node.state_dir), which they keep.
	Allocations ipam.Allocations
	// RXQueues are the receive queues of node.interfaces, by name, for
	// instances.steering: auto.
	RXQueues map[string]int
}

// Build lays cfg out as a NodePlan. prev is the running plan, or nil: a
// listener keeps its ID across plans (see ListenerKey), and so does an
// access list. The plan's Config is cfg with the addresses IPAM gives the
// services without VIPs written in (see assignVIPs).
func Build(cfg *config.Config, res *config.Resolved, f Facts, prev *NodePlan) (*NodePlan, error) {
	cfg, ipamPlan, err := assignVIPs(cfg, f.Allocations)
	if err != nil {
		return nil, err
	}
	p := &NodePlan{
		IPAM:   ipamPlan,
		Config: cfg, Resolved: res, HAProxy: f.HAProxy, FDLimit: f.FDLimit,
		Interfaces:   cfg.Node.Interfaces,
		MaxConn:      min(cfg.Instances.MaxConn, MaxConnFor(f.FDLimit)),
		ACLs:         map[string]string{},
		CertNotAfter: map[string]time.Time{},
	}
	mode, err := loader.ParseXDPMode(cfg.Node.XDPMode)
	if err != nil {
		return nil, fmt.Errorf("node.xdp_mode: %w", err)
	}
	p.XDPMode = mode
	t := &p.Tables
	t.Steering, p.SteeringReason = DecideSteering(cfg.Instances.Steering, cfg.Instances.Count, cfg.Node.Interfaces, f.RXQueues)
	for _, a := range cfg.VIPs {
		t.VIPs = append(t.VIPs, loader.VIP{Addr: a.Addr})
	}
	var prevIDs map[ListenerKey]uint32
	if prev != nil {
		prevIDs = prev.ListenerIDs
	}
	alloc := newListenerIDs(prevIDs)
	if err := p.accessLists(prev); err != nil {
		return nil, err
	}
	for i, svc := range cfg.Services {
		fe, err := p.frontend(i, svc, alloc, f)
		if err != nil {
			return nil, err
		}
		p.Frontends = append(p.Frontends, fe)
	}
	p.ListenerIDs = alloc.got
	// Every listener holds a descriptor of each instance, beside the two
	// of each connection.
	if n := uint64(len(p.Listeners)); f.FDLimit > n {
		p.MaxConn = min(cfg.Instances.MaxConn, MaxConnFor(f.FDLimit-n))
	} else {
		p.MaxConn = min(cfg.Instances.MaxConn, MaxConnFor(0))
	}
	if err := p.pools(); err != nil {
		return nil, err
	}
	if cfg.HA.Mode == config.HAModeBGP && cfg.HA.BGP != nil {
		p.routerServices(f.Addrs)
	}
	if err := loader.ValidateServices(t.VIPs, t.Services); err != nil {
		return nil, err
	}
	t.Whitelists = map[loader.WhitelistID][]netip.Prefix{}
	for name, ps := range res.Whitelists {
		if id, err := loader.ParseWhitelistID(name); err == nil {
			t.Whitelists[id] = addrlist.Normalize(ps)
		}
	}
	for i, cpu := range cfg.CPUs() {
		p.Slots = append(p.Slots, supervisor.Slot{Index: i, CPU: cpu})
	}
	if cfg.TLS.SessionTickets.On() && slices.ContainsFunc(cfg.Services, func(s config.Service) bool { return s.Mode == config.ModeTLS }) {
		p.TicketKeys = TicketKeysFile(cfg.Node.RuntimeDir)
	}
	switch {
	case cfg.HA.Mode == config.HAModeBGP && cfg.HA.BGP != nil:
		sc, err := Speaker(cfg, f.Addrs)
		if err != nil {
			return nil, err
		}
		sc.Peers = withGracefulRestart(cfg.HA.BGP, sc.Peers)
		p.BGP = &BGP{Speaker: sc, Routes: Routes(cfg)}
	case cfg.HA.Mode == config.HAModeVRRP && cfg.HA.VRRP != nil:
		kc, err := VRRP(cfg, f.Addrs)
		if err != nil {
			return nil, err
		}
		p.VRRP = &kc
	}
	return p, nil
}

// frontend lays out service i: its listeners, one per address family of
// its VIPs, its rows in the service table (one per VIP and port of its
// range, all handed to the one listener), and the files HAProxy loads
// for it.
func (p *NodePlan) frontend(i int, svc config.Service, alloc *listenerIDs, f Facts) (Frontend, error) {
	cfg := p.Config
	fe := Frontend{Service: svc, VIPs: cfg.ServiceVIPs(i)}
	from, to := cfg.ServicePorts(i)
	if config.IsKernelMode(svc.Mode) {
		// The kernel forwards it (Kernel): XDP polices and passes its
		// packets to the stack, where nftables translates them; no
		// listener, no HAProxy.
		proto := loader.ProtoTCP
		if cfg.ServiceProtocol(i) == config.ProtocolUDP {
			proto = loader.ProtoUDP
		}
		for _, vip := range fe.VIPs {
			s := loader.Service{VIP: vip, Proto: proto, Access: p.AccessIDs[svc.Name]}
			s.Reject = svc.Reject && s.Access != 0 && proto == loader.ProtoTCP
			for port := int(from); port <= int(to); port++ {
				s.Port = uint16(port)
				p.Tables.Services = append(p.Tables.Services, s)
			}
		}
		return fe, nil
	}
	ids := map[int]uint32{}
	for _, vip := range fe.VIPs {
		fam := 4
		if vip.Is6() {
			fam = 6
		}
		id, ok := ids[fam]
		if !ok {
			var err error
			id, err = alloc.id(ListenerKey{Service: svc.Name, Mode: svc.Mode, Port: from, Family: fam})
			if err != nil {
				return fe, err
			}
			ids[fam] = id
			l := supervisor.Listener{ID: id, Family: fam, MSS: ClampedMSS(cfg, fam)}
			p.Listeners = append(p.Listeners, l)
			fe.Listeners = append(fe.Listeners, l)
		}
		s := loader.Service{VIP: vip, Proto: loader.ProtoTCP, Listener: id, Dispatch: true, Access: p.AccessIDs[svc.Name]}
		// reject answers what XDP refuses: a service it polices (an
		// access list, or the whitelist of plain HTTP) only.
		s.Reject = svc.Reject && (s.Access != 0 || svc.Mode == config.ModeHTTP)
		if svc.Mode == config.ModeHTTP {
			wl, err := loader.ParseWhitelistID(svc.Whitelist)
			if err != nil {
				return fe, fmt.Errorf("services[%d].whitelist: %w", i, err)
			}
			s.Enforce, s.Whitelist = true, wl
		}
		for port := int(from); port <= int(to); port++ {
			s.Port = uint16(port)
			p.Tables.Services = append(p.Tables.Services, s)
		}
	}
	if svc.Mode == config.ModeHTTP && p.ACLs[svc.Whitelist] == "" {
		// HAProxy checks the whitelist too, from a file of this plan.
		data := haproxy.ACLContent(p.Resolved.Whitelists[svc.Whitelist])
		path := haproxy.ACLFile(cfg.Node.RuntimeDir, svc.Whitelist, stamp(data))
		p.ACLs[svc.Whitelist] = path
		p.Files = append(p.Files, File{Path: path, Data: data})
	}
	if svc.Mode == config.ModeTLS {
		pem, ok := f.PEM[svc.Name]
		if !ok {
			return fe, fmt.Errorf("services[%d].tls: no certificate read for %q", i, svc.Name)
		}
		fe.PEM = filepath.Join(cfg.Node.RuntimeDir, "tls", svc.Name+"-"+stamp(pem)+".pem")
		p.Files = append(p.Files, File{Path: fe.PEM, Data: pem, Secret: true})
		// Loading the configuration checked the chain (config's
		// tlsfiles); one that does not parse here has no expiry to show.
		blocks, _ := certs.Split(pem)
		chain, _ := certs.ParseChain(blocks)
		for _, c := range chain {
			if t, ok := p.CertNotAfter[svc.Name]; !ok || c.NotAfter.Before(t) {
				p.CertNotAfter[svc.Name] = c.NotAfter
			}
		}
	}
	return fe, nil
}

// stamp names a file by its content.
func stamp(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6])
}

// ClampedMSS is the MSS of a VIP listener of the family: under ECMP (BGP
// mode) clamped to ha.bgp.path_mtu less the IP and TCP headers, since a
// router's "fragmentation needed" may reach another node than the
// flow's; in VRRP mode with the handoff to ha.vrrp.path_mtu; 0 (the
// route's) otherwise.
func ClampedMSS(cfg *config.Config, family int) int {
	var mtu *int
	switch {
	case cfg.HA.Mode == config.HAModeBGP && cfg.HA.BGP != nil:
		mtu = cfg.HA.BGP.PathMTU
	case cfg.HA.Mode == config.HAModeVRRP && cfg.HA.VRRP != nil && cfg.HA.VRRP.Handoff != nil:
		// The new holder of a VIP hands the previous one's segments back
		// in IP-in-IP: they must fit with 20 bytes more.
		mtu = cfg.HA.VRRP.PathMTU
	}
	if mtu == nil || *mtu == 0 {
		return 0
	}
	if family == 6 {
		return *mtu - 60
	}
	return *mtu - 40
}

// MaxTransfer is how long a replaced instance of this plan may finish its
// transfers.
func (p *NodePlan) MaxTransfer() time.Duration {
	return p.Config.Timeouts.MaxTransfer.Duration
}

// TLSServices are the VIP:port pairs of the TLS services.
func (p *NodePlan) TLSServices() map[netip.AddrPort]bool {
	out := map[netip.AddrPort]bool{}
	for _, fe := range p.Frontends {
		if fe.Service.Mode != config.ModeTLS {
			continue
		}
		for _, v := range fe.VIPs {
			out[netip.AddrPortFrom(v.Unmap(), fe.Key.Port)] = true
		}
	}
	return out
}

// TicketKeysFile is where the TLS session ticket keys of the instances
// are: on node.runtime_dir, a tmpfs, beside the certificate bundles.
func TicketKeysFile(runtimeDir string) string {
	return filepath.Join(runtimeDir, "tls", "ticket-keys")
}
