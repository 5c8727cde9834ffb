package dns

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// HostOptions set up a source of one name's addresses.
type HostOptions struct {
	// Name is the name whose A and AAAA records are the backends.
	Name string
	// Port is every backend's port; 0 is refused.
	Port uint16
	// Server, ResolvConf, Protocol and Timeout are as in SRVOptions.
	Server     netip.AddrPort
	ResolvConf string
	Protocol   string
	Timeout    time.Duration
}

// Host is a source of one name's A and AAAA records.
type Host struct {
	name string
	port uint16
	res  resolver
}

// NewHost checks opts and sets up the source. Each address of the name
// is a backend with opts.Port, with no weight or priority of its own
// (the pool's apply). A name that does not exist or has no address is a
// Fetch error.
func NewHost(opts HostOptions) (*Host, error) {
	if _, ok := mdns.IsDomainName(opts.Name); !ok || opts.Name == "" || opts.Name == "." {
		return nil, fmt.Errorf("dns name %q: not a host name", opts.Name)
	}
	if opts.Port == 0 {
		return nil, fmt.Errorf("dns %s: port 0: want the backends' port, 1-65535", opts.Name)
	}
	res, err := newResolver(opts.Server, opts.ResolvConf, opts.Protocol, opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("dns %s: %w", opts.Name, err)
	}
	return &Host{name: mdns.CanonicalName(opts.Name), port: opts.Port, res: res}, nil
}

// Fetch asks for the name's A and AAAA records.
func (h *Host) Fetch(ctx context.Context) (discovery.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, h.res.timeout)
	defer cancel()
	server, err := h.res.serverAddr()
	if err != nil {
		return discovery.Result{}, fmt.Errorf("dns %s: %w", h.name, err)
	}
	addrs, nx, err := h.res.lookupAddrs(ctx, server, h.name)
	switch {
	case err != nil:
		return discovery.Result{}, fmt.Errorf("dns %s: %w", h.name, err)
	case nx:
		return discovery.Result{}, fmt.Errorf("dns %s at %s: %w", h.name, server, errNXDOMAIN)
	case len(addrs) == 0:
		return discovery.Result{}, fmt.Errorf("dns %s at %s: no A or AAAA records", h.name, server)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if len(addrs) > discovery.MaxBackends {
		return discovery.Result{}, fmt.Errorf("dns %s at %s: %d addresses, more than %d", h.name, server, len(addrs), discovery.MaxBackends)
	}
	var res discovery.Result
	for _, a := range addrs {
		res.Backends = append(res.Backends, discovery.Backend{Host: a.String(), Port: h.port, Weight: -1})
	}
	return res, nil
}
