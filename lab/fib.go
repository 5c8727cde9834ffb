package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// fib reads the router's kernel routes over netlink, the table the
// router forwards by: a next hop counts once BIRD has installed it.
type fib struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

func openFIB(nsName string) (*fib, error) {
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", nsName, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in %s: %w", nsName, err)
	}
	return &fib{ns: ns, h: h}, nil
}

func (f *fib) Close() {
	f.h.Close()
	f.ns.Close()
}

// nexthops returns the sorted gateways of prefix's route in the main
// table (the lowest metric's, which the kernel uses); nil without one.
func (f *fib) nexthops(prefix netip.Prefix) ([]netip.Addr, error) {
	family := unix.AF_INET
	if prefix.Addr().Is6() {
		family = unix.AF_INET6
	}
	dst := &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen())}
	filter := &netlink.Route{Dst: dst, Table: unix.RT_TABLE_MAIN}
	var (
		routes []netlink.Route
		err    error
	)
	// A dump that raced a change is retried, not trusted.
	for range 5 {
		routes, err = f.h.RouteListFiltered(family, filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("route %v: %w", prefix, err)
	}
	var best *netlink.Route
	for i := range routes {
		if best == nil || routes[i].Priority < best.Priority {
			best = &routes[i]
		}
	}
	if best == nil {
		return nil, nil
	}
	var out []netip.Addr
	add := func(gw net.IP) {
		if a, ok := netip.AddrFromSlice(gw); ok {
			out = append(out, a.Unmap())
		}
	}
	if len(best.MultiPath) == 0 {
		add(best.Gw)
	}
	for _, p := range best.MultiPath {
		add(p.Gw)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// waitNexthops polls until ok accepts prefix's next hops, and returns
// when that was seen and the set. The poll is every 2 ms, so times are
// good to a few milliseconds.
func (f *fib) waitNexthops(ctx context.Context, prefix netip.Prefix, timeout time.Duration, ok func([]netip.Addr) bool) (time.Time, []netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last []netip.Addr
	var lastErr error
	for {
		nh, err := f.nexthops(prefix)
		if err == nil && ok(nh) {
			return time.Now(), nh, nil
		}
		last, lastErr = nh, err
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return time.Time{}, nil, fmt.Errorf("route %v: %w (last error: %v)", prefix, ctx.Err(), lastErr)
			}
			return time.Time{}, last, fmt.Errorf("route %v: %w (next hops %v)", prefix, ctx.Err(), last)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
