package plan

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/ipam"
)

// Make resolves cfg's names with r (nil: the system's), reads the facts
// and builds the plan: what the daemon runs for cfg, with v the HAProxy
// it runs. A self-signed certificate the configuration asks for is made
// (or renewed) in node.state_dir.
func Make(ctx context.Context, cfg *config.Config, r addrlist.Resolver, v haproxy.Version, prev *NodePlan) (*NodePlan, error) {
	res, err := cfg.Resolve(ctx, r)
	if err != nil {
		return nil, err
	}
	f, err := ReadFacts(cfg, v)
	if err != nil {
		return nil, err
	}
	return Build(cfg, res, f, prev)
}

// ReadFacts reads what Build needs from the node for cfg: the interface
// addresses, the certificates (making the self-signed one in
// node.state_dir when the configuration asks for it and none covers the
// node yet) and the descriptor limit, which it raises to the hard limit
// for the instances to inherit.
func ReadFacts(cfg *config.Config, v haproxy.Version) (Facts, error) {
	f := Facts{HAProxy: v, FDLimit: fdLimit(), PEM: map[string][]byte{},
		RXQueues: rxQueues("/sys", cfg.Node.Interfaces)}
	var err error
	switch {
	case cfg.HA.Mode == config.HAModeBGP && cfg.HA.BGP != nil:
		if f.Addrs, err = HostAddrs(cfg.Node.Interfaces); err != nil {
			return f, err
		}
	case cfg.HA.Mode == config.HAModeVRRP && cfg.HA.VRRP != nil && !cfg.HA.VRRP.Self.Addr.IsValid():
		if f.Addrs, err = HostAddrs([]string{cfg.HA.VRRP.Interface}); err != nil {
			return f, fmt.Errorf("ha.vrrp.interface: %w", err)
		}
	}
	for i, svc := range cfg.Services {
		if svc.Mode != config.ModeTLS {
			continue
		}
		pem, err := bundle(cfg, svc)
		if err != nil {
			return f, fmt.Errorf("services[%d].tls: %w", i, err)
		}
		f.PEM[svc.Name] = pem
	}
	if len(cfg.VIPPools) > 0 {
		allocs, err := ipam.Load(IPAMPath(cfg))
		if err != nil {
			return f, fmt.Errorf("vip_pools: %w", err)
		}
		f.Allocations = allocs
	}
	return f, nil
}

// bundle reads the certificate chain and key HAProxy loads for a TLS
// service.
func bundle(cfg *config.Config, svc config.Service) ([]byte, error) {
	certPath, keyPath := svc.TLS.Cert, svc.TLS.Key
	if certPath == "" && svc.TLS.SelfSigned {
		var addrs []netip.Addr
		for _, a := range cfg.VIPs {
			addrs = append(addrs, a.Addr)
		}
		var err error
		certPath, keyPath, err = certs.SelfSigned(filepath.Join(cfg.Node.StateDir, "tls"), []string{cfg.Node.Name}, addrs)
		if err != nil {
			return nil, err
		}
	}
	return certs.Bundle(certPath, keyPath)
}

// HostAddrs lists the addresses of each interface, the ones routers open
// BGP sessions and send BFD to, and VRRP adverts come from.
func HostAddrs(ifaces []string) (map[string][]netip.Addr, error) {
	out := map[string][]netip.Addr{}
	for _, name := range ifaces {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("node.interfaces: %q: %w", name, err)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("node.interfaces: %q: list addresses: %w", name, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out[name] = append(out[name], ip.Unmap())
			}
		}
	}
	return out, nil
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
