package discovery

import (
	"fmt"
	"io"
	"net/netip"
	"syscall"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/discovery"
	"github.com/ober-ingress/ober/control/lib/discovery/consul"
	"github.com/ober-ingress/ober/control/lib/discovery/dns"
	"github.com/ober-ingress/ober/control/lib/discovery/exec"
	"github.com/ober-ingress/ober/control/lib/discovery/file"
	httpsrc "github.com/ober-ingress/ober/control/lib/discovery/http"
)

// SourceFor makes the source a discovery block describes. exec commands
// run as cred (haproxy.user's, never root's). The error names the pool.
func SourceFor(key string, d *config.Discovery, cred *syscall.Credential) (discovery.Source, error) {
	var (
		src discovery.Source
		err error
	)
	timeout := d.Timeout.Duration
	switch d.Kind {
	case config.DiscoverySRV, config.DiscoveryDNS:
		var server netip.AddrPort
		if d.Server != "" {
			if server, err = netip.ParseAddrPort(d.Server); err != nil {
				return nil, fmt.Errorf("%s.discovery.server: %w", key, err)
			}
		}
		if d.Kind == config.DiscoverySRV {
			src, err = dns.NewSRV(dns.SRVOptions{Name: d.Name, Server: server, Protocol: d.Protocol, Timeout: timeout})
		} else {
			src, err = dns.NewHost(dns.HostOptions{Name: d.Name, Port: d.Port, Server: server, Protocol: d.Protocol, Timeout: timeout})
		}
	case config.DiscoveryFile:
		src, err = file.New(d.Path)
	case config.DiscoveryHTTP:
		src, err = httpsrc.New(httpsrc.Options{URL: d.URL, CAFile: d.CAFile, TokenFile: d.TokenFile, Timeout: timeout})
	case config.DiscoveryExec:
		src, err = exec.New(exec.Options{Command: d.Command, Credential: cred, Timeout: timeout})
	case config.DiscoveryConsul:
		src, err = consul.New(consul.Options{Address: d.Address, Service: d.Name, Tag: d.Tag, Datacenter: d.Datacenter,
			PassingOnly: d.PassingOnly, TokenFile: d.TokenFile, Timeout: timeout})
	default:
		return nil, fmt.Errorf("%s.discovery.kind: %q finds no backends", key, d.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("%s.discovery: %w", key, err)
	}
	return src, nil
}

// closeSource releases what a source holds (a file's watcher).
func closeSource(s discovery.Source) {
	if c, ok := s.(io.Closer); ok {
		_ = c.Close()
	}
}
