package vrrp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// links talks netlink in one network namespace. The handle is bound to
// the namespace Start was called in, whichever thread the caller runs on.
type links struct {
	mu sync.Mutex // netlink.Handle's sockets are not for concurrent requests
	h  *netlink.Handle
}

// held returns which of vips are on iface now. A missing interface holds
// nothing.
func (l *links) held(iface string, vips []netip.Addr) (map[netip.Addr]bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[netip.Addr]bool{}
	_, addrs, err := l.addrs(iface)
	if err != nil {
		return out, err
	}
	want := map[netip.Addr]bool{}
	for _, v := range vips {
		want[v.Unmap()] = true
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && want[ip.Unmap()] {
			out[ip.Unmap()] = true
		}
	}
	return out, nil
}

// remove deletes every address on iface equal to one of vips, whatever its
// prefix length, and returns the ones it deleted.
func (l *links) remove(iface string, vips []netip.Addr) ([]netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	link, addrs, err := l.addrs(iface)
	if err != nil {
		return nil, err
	}
	want := map[netip.Addr]bool{}
	for _, v := range vips {
		want[v.Unmap()] = true
	}
	var removed []netip.Addr
	var errs []error
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !want[ip.Unmap()] {
			continue
		}
		if err := l.h.AddrDel(link, &a); err != nil {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", ip.Unmap(), iface, err))
			continue
		}
		removed = append(removed, ip.Unmap())
	}
	return removed, errors.Join(errs...)
}

func (l *links) addrs(iface string) (netlink.Link, []netlink.Addr, error) {
	link, err := l.h.LinkByName(iface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	addrs, err := l.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses of %s: %w", iface, err)
	}
	return link, addrs, nil
}
