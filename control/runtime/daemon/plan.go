package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/loader"
)

// built is one configuration turned into everything the node runs: the
// dataplane's tables, the instance slots and listeners, and what the
// HAProxy renderer needs. Building it changes nothing on the node except
// writing certificate bundles and this build's whitelist files under the
// runtime directory.
type built struct {
	cfg       *config.Config
	res       *config.Resolved
	vips      []loader.VIP
	services  []loader.Service
	listeners []supervisor.Listener
	frontends []frontend
	slots     []supervisor.Slot
	servers   []haproxy.Server
	version   haproxy.Version
	// maxConn is instances.maxconn, lowered when the descriptor limit
	// cannot hold it (HAProxy refuses to start then).
	maxConn int
	// ids are the listener IDs by what they serve, kept across reloads.
	ids map[listenerKey]uint32
	// acls are the whitelist files HAProxy loads, by list name: named
	// by their content, as the certificate bundles are, so that an
	// unchanged list keeps its file.
	acls map[string]string
}

// listenerKey is what a listener serves. A reload keeps the ID of a
// listener whose key stays and never gives a new key an ID the running
// generation uses: between the sockmap swap and the service table switch,
// an old service's connections must not reach another service's sockets.
type listenerKey struct {
	service string
	mode    string
	port    uint16
	family  int
}

// listenerIDs hands out IDs: prev's for keys it had, else the lowest ID
// neither prev nor this build uses.
type listenerIDs struct {
	prev map[listenerKey]uint32
	used map[uint32]bool
	got  map[listenerKey]uint32
}

func newListenerIDs(prev map[listenerKey]uint32) *listenerIDs {
	l := &listenerIDs{prev: prev, used: map[uint32]bool{}, got: map[listenerKey]uint32{}}
	for _, id := range prev {
		l.used[id] = true
	}
	return l
}

func (l *listenerIDs) id(k listenerKey) (uint32, error) {
	if id, ok := l.got[k]; ok {
		return id, nil
	}
	id, ok := l.prev[k]
	if !ok {
		for id = 0; l.used[id]; id++ {
		}
		if id >= loader.MaxListeners {
			return 0, fmt.Errorf("services: more than %d listeners (service x address family, counting the running configuration's)", loader.MaxListeners)
		}
	}
	l.used[id] = true
	l.got[k] = id
	return id, nil
}

// frontend is one service as HAProxy sees it: its listeners by family.
type frontend struct {
	svc       config.Service
	listeners []supervisor.Listener
	pem       string
	vips      []netip.Addr
}

// build resolves names and lays the configuration out. The certificate
// bundles it writes are named by content, so building never changes a
// file that a running instance loaded.
func build(ctx context.Context, cfg *config.Config, r resolver, v haproxy.Version, prev *built) (*built, error) {
	res, err := cfg.Resolve(ctx, r)
	if err != nil {
		return nil, err
	}
	b := &built{cfg: cfg, res: res, version: v, maxConn: cfg.Instances.MaxConn, acls: map[string]string{}}
	if fit := maxConnFor(fdLimit()); b.maxConn > fit {
		b.maxConn = fit
	}
	for _, a := range cfg.VIPs {
		b.vips = append(b.vips, loader.VIP{Addr: a.Addr})
	}
	var prevIDs map[listenerKey]uint32
	if prev != nil {
		prevIDs = prev.ids
	}
	alloc := newListenerIDs(prevIDs)
	for i, svc := range cfg.Services {
		fe := frontend{svc: svc, vips: cfg.ServiceVIPs(i)}
		ids := map[int]uint32{}
		for _, vip := range fe.vips {
			fam := 4
			if vip.Is6() {
				fam = 6
			}
			id, ok := ids[fam]
			if !ok {
				var err error
				id, err = alloc.id(listenerKey{service: svc.Name, mode: svc.Mode, port: svc.Port, family: fam})
				if err != nil {
					return nil, err
				}
				ids[fam] = id
				l := supervisor.Listener{ID: id, Family: fam, MSS: clampedMSS(cfg, fam)}
				b.listeners = append(b.listeners, l)
				fe.listeners = append(fe.listeners, l)
			}
			s := loader.Service{VIP: vip, Proto: loader.ProtoTCP, Port: svc.Port, Listener: id, Dispatch: true}
			if svc.Mode == "http" {
				s.Enforce = true
				s.Reject = svc.Reject
				wl, err := loader.ParseWhitelistID(svc.Whitelist)
				if err != nil {
					return nil, fmt.Errorf("services[%d].whitelist: %w", i, err)
				}
				s.Whitelist = wl
			}
			b.services = append(b.services, s)
		}
		if svc.Mode == "http" && b.acls[svc.Whitelist] == "" {
			// HAProxy checks the whitelist too, from a file of this build.
			ps := res.Whitelists[svc.Whitelist]
			sum := sha256.Sum256(haproxy.ACLContent(ps))
			path := haproxy.ACLFile(cfg.Node.RuntimeDir, svc.Whitelist, hex.EncodeToString(sum[:6]))
			if err := haproxy.WriteACL(path, ps); err != nil {
				return nil, fmt.Errorf("services[%d].whitelist: %w", i, err)
			}
			b.acls[svc.Whitelist] = path
		}
		if svc.Mode == "tls" {
			pem, err := bundle(cfg, svc)
			if err != nil {
				return nil, fmt.Errorf("services[%d].tls: %w", i, err)
			}
			fe.pem = pem
		}
		b.frontends = append(b.frontends, fe)
	}
	b.ids = alloc.got
	if err := routerServices(cfg, b); err != nil {
		return nil, err
	}
	if err := loader.ValidateServices(b.vips, b.services); err != nil {
		return nil, err
	}
	for i, cpu := range cfg.CPUs() {
		b.slots = append(b.slots, supervisor.Slot{Index: i, CPU: cpu})
	}
	for _, s := range res.Backends {
		w := 100
		if s.Weight != nil {
			w = *s.Weight
		}
		b.servers = append(b.servers, haproxy.Server{
			Name: s.Name, Addr: s.Addr, Weight: w,
			TLS: s.TLS, CAFile: s.CAFile, SNI: s.SNI, ProxyProtocol: s.ProxyProtocol,
		})
	}
	return b, nil
}

// clampedMSS is the MSS of a VIP listener of the family: under ECMP (BGP
// mode) clamped to ha.bgp.path_mtu less the IP and TCP headers, since a
// router's "fragmentation needed" may reach another node than the
// flow's; 0 (the route's) otherwise.
func clampedMSS(cfg *config.Config, family int) int {
	b := cfg.HA.BGP
	if cfg.HA.Mode != config.HAModeBGP || b == nil || b.PathMTU == nil || *b.PathMTU == 0 {
		return 0
	}
	if family == 6 {
		return *b.PathMTU - 60
	}
	return *b.PathMTU - 40
}

// bundle writes the PEM HAProxy loads for a TLS service and returns its
// path.
func bundle(cfg *config.Config, svc config.Service) (string, error) {
	certPath, keyPath := svc.TLS.Cert, svc.TLS.Key
	if certPath == "" && svc.TLS.SelfSigned {
		var addrs []netip.Addr
		for _, a := range cfg.VIPs {
			addrs = append(addrs, a.Addr)
		}
		var err error
		certPath, keyPath, err = certs.SelfSigned(filepath.Join(cfg.Node.StateDir, "tls"), []string{cfg.Node.Name}, addrs)
		if err != nil {
			return "", err
		}
	}
	pem, err := certs.Bundle(certPath, keyPath)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pem)
	dir := filepath.Join(cfg.Node.RuntimeDir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, svc.Name+"-"+hex.EncodeToString(sum[:6])+".pem")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, certs.WriteFile(path, pem, 0o600)
}

// instance is the renderer's input for one slot.
func (b *built) instance(sl supervisor.Slot, fds map[uint32]int, statsSocket string) haproxy.Instance {
	c := b.cfg
	in := haproxy.Instance{
		Index:          sl.Index,
		CPU:            sl.CPU,
		Node:           c.Node.Name,
		StatsSocket:    statsSocket,
		Servers:        b.servers,
		Balance:        c.Backends.Balance,
		MaxConn:        b.maxConn,
		ServedByHeader: c.HAProxy.ServedByHeader,
		Version:        b.version,
		User:           c.HAProxy.User,
		Group:          c.HAProxy.Group,
		Chroot:         c.HAProxy.Chroot,
	}
	in.Health.Path = c.Backends.Health.Path
	in.Health.Interval = c.Backends.Health.Interval.Duration
	in.Health.Fall = c.Backends.Health.Fall
	in.Health.Rise = c.Backends.Health.Rise
	t := c.Timeouts
	in.Timeouts.Connect = t.Connect.Duration
	in.Timeouts.Client = t.Client.Duration
	in.Timeouts.Server = t.Server.Duration
	in.Timeouts.HTTPRequest = t.HTTPRequest.Duration
	in.Timeouts.HTTPKeepAlive = t.HTTPKeepAlive.Duration
	// A replaced instance finishes its transfers (a reload, a restart
	// handover); a stop ends them sooner, the supervisor's drain.
	in.Timeouts.Drain = t.MaxTransfer.Duration
	in.Timeouts.TLSHandshake = t.TLSHandshake.Duration
	// Each instance holds its share of a client's limits: the flow hash
	// spreads a client's connections over the instances.
	in.ConnsPerSource = ceilDiv(*c.Limits.ConnectionsPerSource, len(b.slots))
	in.RatePerSource = ceilDiv(c.Limits.ConnectionRatePerSource, len(b.slots))
	for _, fe := range b.frontends {
		f := haproxy.Frontend{Name: fe.svc.Name, Mode: fe.svc.Mode, Port: fe.svc.Port, PEM: fe.pem,
			VIPs: fe.vips, Whitelist: b.acls[fe.svc.Whitelist]}
		for _, l := range fe.listeners {
			f.Binds = append(f.Binds, haproxy.Bind{FD: fds[l.ID], Family: l.Family})
		}
		in.Frontends = append(in.Frontends, f)
	}
	return in
}

func ceilDiv(n, d int) int {
	if d <= 0 {
		return n
	}
	return (n + d - 1) / d
}

// pruneACLs removes the whitelist files of builds before b: their
// instances are retired and never restarted, and each has its lists in
// memory.
func (b *built) pruneACLs() {
	for list := range b.acls {
		files, _ := haproxy.ACLFiles(b.cfg.Node.RuntimeDir, list)
		for _, f := range files {
			if f != b.acls[list] {
				os.Remove(f)
			}
		}
	}
}

// removeACLs removes this build's whitelist files, it was refused, but
// for the ones the running build loads too.
func (b *built) removeACLs(running *built) {
	for list, f := range b.acls {
		if running == nil || running.acls[list] != f {
			os.Remove(f)
		}
	}
}

// tlsServices are the VIP:port pairs of the TLS services.
func (b *built) tlsServices() map[netip.AddrPort]bool {
	out := map[netip.AddrPort]bool{}
	for _, fe := range b.frontends {
		if fe.svc.Mode != config.ModeTLS {
			continue
		}
		for _, v := range fe.vips {
			out[netip.AddrPortFrom(v.Unmap(), fe.svc.Port)] = true
		}
	}
	return out
}

func (b *built) render(sl supervisor.Slot, fds map[uint32]int, statsSocket string) ([]byte, error) {
	return haproxy.Render(b.instance(sl, fds, statsSocket))
}

// check renders the first slot's configuration and has HAProxy check it,
// so an HAProxy-level mistake fails before anything is started.
func (b *built) check(ctx context.Context) error {
	fds := map[uint32]int{}
	var list []int
	for i, l := range b.listeners {
		fds[l.ID] = 3 + i
		list = append(list, 3+i)
	}
	dir, err := os.MkdirTemp(b.cfg.Node.RuntimeDir, "check-")
	if err != nil {
		return fmt.Errorf("haproxy check: %w", err)
	}
	defer os.RemoveAll(dir)
	text, err := b.render(b.slots[0], fds, filepath.Join(dir, "check.sock"))
	if err != nil {
		return fmt.Errorf("render haproxy config: %w", err)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		return fmt.Errorf("haproxy check: %w", err)
	}
	if err := haproxy.Check(ctx, b.cfg.HAProxy.Binary, path, list); err != nil {
		return fmt.Errorf("haproxy refuses the rendered config: %w", err)
	}
	return nil
}

// whitelists returns each list's prefixes by dataplane id.
func (b *built) whitelists() map[loader.WhitelistID][]netip.Prefix {
	out := map[loader.WhitelistID][]netip.Prefix{}
	for name, ps := range b.res.Whitelists {
		id, err := loader.ParseWhitelistID(name)
		if err == nil {
			out[id] = ps
		}
	}
	return out
}

// fdReserve is what an instance needs beside two descriptors per
// connection (client and server side): listeners, checks, logs, runtime
// socket.
const fdReserve = 200

// maxConnFor is the most connections an instance can hold within limit
// descriptors.
func maxConnFor(limit uint64) int {
	if limit <= 2*fdReserve {
		return fdReserve
	}
	return int(min((limit-fdReserve)/2, 1<<30))
}

// fdLimit raises this process's descriptor limit to the hard limit, which
// the HAProxy instances inherit, and returns it. Go raises its own soft
// limit at start but gives children the original one back unless the
// program sets the limit itself, as here.
func fdLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 1024
	}
	r.Cur = r.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	return r.Max
}
