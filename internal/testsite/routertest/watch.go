package routertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Nexthops returns the sorted gateway addresses of prefix's route in the
// router namespace's main table, nil if there is no such route.
func (r *Router) Nexthops(prefix netip.Prefix) ([]netip.Addr, error) {
	h, err := netlink.NewHandleAt(r.NS.Handle, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", r.NS.Name, err)
	}
	defer h.Close()
	nh, err := nexthops(h, prefix.Masked())
	if err != nil {
		return nil, fmt.Errorf("route %v in %s: %w", prefix, r.NS.Name, err)
	}
	return nh, nil
}

// nexthops dumps prefix's routes from the main table. Of several routes
// for one prefix (different metrics) the kernel uses the lowest metric,
// so that one is reported.
func nexthops(h *netlink.Handle, prefix netip.Prefix) ([]netip.Addr, error) {
	family := unix.AF_INET
	if prefix.Addr().Is6() {
		family = unix.AF_INET6
	}
	filter := &netlink.Route{Dst: ipNet(prefix), Table: unix.RT_TABLE_MAIN}
	var (
		routes []netlink.Route
		err    error
	)
	// A dump that raced a change is retried, not trusted.
	for range 5 {
		routes, err = h.RouteListFiltered(family, filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
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
	return gateways(best), nil
}

// gateways collects a route's next hops: a single path carries Gw (or
// Via, for an IPv4 route through an IPv6 gateway), a multipath route one
// of those per path. A route without any (blackhole, device route)
// yields an empty, non-nil set, so that it is told apart from no route.
func gateways(rt *netlink.Route) []netip.Addr {
	out := []netip.Addr{}
	add := func(gw net.IP, via netlink.Destination) {
		if a, ok := netip.AddrFromSlice(gw); ok {
			out = append(out, a.Unmap())
			return
		}
		if v, ok := via.(*netlink.Via); ok {
			if a, ok := netip.AddrFromSlice(v.Addr); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	if len(rt.MultiPath) == 0 {
		add(rt.Gw, rt.Via)
	}
	for _, p := range rt.MultiPath {
		add(p.Gw, p.Via)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// Watch records the history of one prefix's next-hop set in the router's
// namespace.
type Watch struct {
	prefix netip.Prefix

	mu      sync.Mutex
	states  []watchState
	err     error         // why recording stopped early
	changed chan struct{} // closed and replaced whenever states or err change
}

type watchState struct {
	at       time.Time
	nexthops []netip.Addr
}

// Watch subscribes to route changes in the router's namespace before it
// returns and records every change of prefix's next-hop set with the
// time.Now() at which the kernel's notification was received. Recording
// stops at test cleanup.
//
// Notifications are taken as a cue, not as the state: on each one for
// prefix the route is read back from the kernel, as a notification can
// describe part of a route only (IPv6 next hops appended or deleted one
// at a time are notified one at a time). A state that lasts less than
// that read can therefore go unrecorded; BIRD and FRR as Start runs them
// replace a route in one step, so they leave none such.
func (r *Router) Watch(t testing.TB, prefix netip.Prefix) *Watch {
	t.Helper()
	prefix = prefix.Masked()
	h, err := netlink.NewHandleAt(r.NS.Handle, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("routertest: netlink handle in %s: %v", r.NS.Name, err)
	}
	w := &Watch{prefix: prefix, changed: make(chan struct{})}
	updates := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	stopping := make(chan struct{})
	err = netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{
		Namespace: &r.NS.Handle,
		ErrorCallback: func(err error) {
			select {
			case <-stopping:
			default:
				w.fail(fmt.Errorf("route notifications in %s: %w", r.NS.Name, err))
			}
		},
		// A notification dropped for a full socket would be a change
		// missed; a large buffer keeps bursts from overflowing it.
		ReceiveBufferSize:      4 << 20,
		ReceiveBufferForceSize: true,
	})
	if err != nil {
		h.Close()
		t.Fatalf("routertest: subscribe to routes in %s: %v", r.NS.Name, err)
	}
	// Read after subscribing: a change in between shows in both, and
	// recording only differences makes that harmless.
	nh, err := nexthops(h, prefix)
	if err != nil {
		close(done)
		h.Close()
		t.Fatalf("routertest: route %v in %s: %v", prefix, r.NS.Name, err)
	}
	w.record(time.Now(), nh)

	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer h.Close()
		for u := range updates {
			at := time.Now()
			if u.Table != unix.RT_TABLE_MAIN {
				continue
			}
			if p, ok := prefixOf(u.Dst); !ok || p != prefix {
				continue
			}
			nh, err := nexthops(h, prefix)
			if err != nil {
				w.fail(fmt.Errorf("route %v in %s: %w", prefix, r.NS.Name, err))
				continue
			}
			w.record(at, nh)
		}
		w.fail(errors.New("route notifications ended"))
	}()
	t.Cleanup(func() {
		close(stopping)
		close(done) // closes the socket, which ends updates
		<-finished
	})
	return w
}

// record appends a state if it differs from the last one.
func (w *Watch) record(at time.Time, nh []netip.Addr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.states); n > 0 && equalSet(w.states[n-1].nexthops, nh) {
		return
	}
	w.states = append(w.states, watchState{at: at, nexthops: nh})
	close(w.changed)
	w.changed = make(chan struct{})
}

// fail keeps the first reason recording stopped or went wrong.
func (w *Watch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	w.err = err
	close(w.changed)
	w.changed = make(chan struct{})
}

// equalSet compares next-hop sets, telling no route (nil) from a route
// without gateways (empty).
func equalSet(a, b []netip.Addr) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}

// Until returns the receipt time and next-hop set of the first recorded
// state (starting with the state when Watch was called, then each change)
// that satisfies cond and was received at or after since. It blocks until
// one arrives or ctx ends. cond sees nil when there is no route.
func (w *Watch) Until(ctx context.Context, since time.Time, cond func(nexthops []netip.Addr) bool) (time.Time, []netip.Addr, error) {
	next := 0
	for {
		w.mu.Lock()
		states, err, changed := w.states[next:], w.err, w.changed
		next = len(w.states)
		w.mu.Unlock()
		for _, s := range states {
			if !s.at.Before(since) && cond(slices.Clone(s.nexthops)) {
				return s.at, slices.Clone(s.nexthops), nil
			}
		}
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("watching %v: %w", w.prefix, err)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, nil, fmt.Errorf("watching %v: no matching state since %s; history: %s: %w",
				w.prefix, since.Format("15:04:05.000000"), w.History(), ctx.Err())
		case <-changed:
		}
	}
}

// History renders the recorded states, for failure messages.
func (w *Watch) History() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var s string
	for i, st := range w.states {
		if i > 0 {
			s += ", "
		}
		nh := "no route"
		if st.nexthops != nil {
			nh = fmt.Sprint(st.nexthops)
		}
		s += st.at.Format("15:04:05.000000") + " " + nh
	}
	if s == "" {
		return "(none)"
	}
	return s
}
