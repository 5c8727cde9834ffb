package kernelsvc

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/nftlb"
)

type fakeApplier struct {
	got     []nftlb.Ruleset
	removed int
	fail    error
}

func (f *fakeApplier) Counters() (map[nftlb.Key]nftlb.Counter, error) {
	return map[nftlb.Key]nftlb.Counter{{Service: "dns", Backend: "a"}: {Packets: 7, Bytes: 700}}, nil
}

func (f *fakeApplier) Remove() error {
	if f.fail != nil {
		return f.fail
	}
	f.removed++
	return nil
}

func (f *fakeApplier) Apply(r nftlb.Ruleset) error {
	if f.fail != nil {
		return f.fail
	}
	f.got = append(f.got, r)
	return nil
}

type cleaned struct {
	proto    uint8
	vip      netip.AddrPort
	backends []netip.AddrPort
}

type fakeCleaner struct {
	mu   sync.Mutex
	got  []cleaned
	fail error
}

func (f *fakeCleaner) clean(_ context.Context, proto uint8, vip netip.AddrPort, bs []netip.AddrPort) (map[netip.AddrPort]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	slices.SortFunc(bs, func(a, b netip.AddrPort) int { return a.Compare(b) })
	f.got = append(f.got, cleaned{proto, vip, bs})
	return nil, f.fail
}

func (f *fakeCleaner) take() []cleaned {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.got
	f.got = nil
	return out
}

var (
	vip = netip.MustParseAddr("10.0.0.1")
	a   = Backend{Name: "a", Addr: netip.MustParseAddrPort("10.1.0.1:53"), Weight: 100, Admin: config.StateEnabled, Key: "dns/a"}
	b   = Backend{Name: "b", Addr: netip.MustParseAddrPort("10.1.0.2:53"), Weight: 50, Admin: config.StateEnabled, Key: "dns/b"}
	c2  = Backend{Name: "c", Addr: netip.MustParseAddrPort("10.1.0.3:53"), Weight: 100, Priority: 2, Admin: config.StateEnabled, Key: "dns/c"}
)

func names(bs []Backend) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return out
}

// The rotation: enabled, weighted and up, of the best priority that has
// one; keep_last keeps the last rotation when none is left.
func TestChoose(t *testing.T) {
	s := Service{Name: "dns", Backends: []Backend{a, b, c2}, Fallback: config.FallbackReject}
	all := map[string]bool{"dns/a": true, "dns/b": true, "dns/c": true}
	require.Equal(t, []string{"a", "b"}, names(Choose(s, all, nil)), "priority 1 first")
	require.Equal(t, []string{"b"}, names(Choose(s, map[string]bool{"dns/b": true, "dns/c": true}, nil)))
	require.Equal(t, []string{"c"}, names(Choose(s, map[string]bool{"dns/c": true}, nil)), "the next tier when the first has none up")
	drained := s
	drained.Backends = []Backend{a, b, c2}
	drained.Backends[0].Admin = config.StateDrain
	drained.Backends[1].Weight = 0
	require.Equal(t, []string{"c"}, names(Choose(drained, all, nil)), "drained and weight 0 are out")
	require.Empty(t, Choose(s, nil, nil), "reject: nothing up, nothing in rotation")
	s.Fallback = config.FallbackKeepLast
	last := map[string]Backend{"a": a, "b": b}
	require.Equal(t, []string{"a", "b"}, names(Choose(s, nil, last)), "keep_last: the last rotation stays")
	s.Backends[1].Admin = config.StateDisabled
	require.Equal(t, []string{"a"}, names(Choose(s, nil, last)), "but not a disabled backend")
}

// A backend that goes down, is disabled or removed leaves the rules and
// its flows are deleted; a drained one leaves the rules and keeps its
// flows; an unchanged pass applies nothing.
func TestControllerRotation(t *testing.T) {
	ap, cl := &fakeApplier{}, &fakeCleaner{}
	up := map[string]bool{"dns/a": true, "dns/b": true}
	var mu sync.Mutex
	ctl := New(Options{Applier: ap, Clean: cl.clean, Health: func() map[string]bool {
		mu.Lock()
		defer mu.Unlock()
		return maps(up)
	}})
	svc := Service{Name: "dns", Protocol: config.ProtocolUDP, VIPs: []netip.Addr{vip}, Port: 53, Balance: config.BalanceConsistent,
		Forward: config.ForwardFullNAT, Fallback: config.FallbackReject, Backends: []Backend{a, b}}
	ctx := context.Background()
	require.NoError(t, ctl.Set(ctx, []Service{svc}))
	require.Len(t, ap.got, 1)
	r := ap.got[0].Services[0]
	require.Equal(t, uint8(unix.IPPROTO_UDP), r.Proto)
	require.Equal(t, nftlb.Consistent, r.Balance)
	require.Equal(t, []nftlb.Backend{{Name: "a", Addr: a.Addr, Weight: 100}, {Name: "b", Addr: b.Addr, Weight: 50}}, r.Backends)
	require.Empty(t, cl.take())

	pass := func() {
		ctl.mu.Lock()
		defer ctl.mu.Unlock()
		require.NoError(t, ctl.syncLocked(ctx))
	}
	pass()
	require.Len(t, ap.got, 1, "nothing changed: nothing applied")

	mu.Lock()
	up["dns/b"] = false
	mu.Unlock()
	pass()
	require.Len(t, ap.got, 2)
	require.Equal(t, []string{"a"}, ctl.Rotation()["dns"])
	require.Equal(t, []cleaned{{unix.IPPROTO_UDP, netip.AddrPortFrom(vip, 53), []netip.AddrPort{b.Addr}}}, cl.take(), "b's flows go with it")
	st, err := ctl.States()
	require.NoError(t, err)
	require.Equal(t, map[string]BackendState{"a": {InRotation: true, Flows: 7, Bytes: 700}, "b": {}}, st["dns"])

	mu.Lock()
	up["dns/b"] = true
	mu.Unlock()
	pass()
	svc.Backends[0].Admin = config.StateDrain
	require.NoError(t, ctl.Set(ctx, []Service{svc}))
	require.Equal(t, []string{"b"}, ctl.Rotation()["dns"])
	require.Empty(t, cl.take(), "a drained backend keeps its flows")

	svc.Backends = svc.Backends[1:] // a removed
	require.NoError(t, ctl.Set(ctx, []Service{svc}))
	require.Empty(t, cl.take(), "a was out of rotation already")
	svc.Backends = []Backend{a} // b removed, a enabled again
	require.NoError(t, ctl.Set(ctx, []Service{svc}))
	require.Equal(t, []cleaned{{unix.IPPROTO_UDP, netip.AddrPortFrom(vip, 53), []netip.AddrPort{b.Addr}}}, cl.take())
}

// A port range's backend without a port is cleaned on every port.
func TestControllerCleansRange(t *testing.T) {
	ap, cl := &fakeApplier{}, &fakeCleaner{}
	up := map[string]bool{"r/x": true}
	ctl := New(Options{Applier: ap, Clean: cl.clean, Health: func() map[string]bool { return maps(up) }})
	x := Backend{Name: "x", Addr: netip.AddrPortFrom(netip.MustParseAddr("10.1.0.9"), 0), Weight: 1, Key: "r/x"}
	svc := Service{Name: "r", Protocol: config.ProtocolTCP, VIPs: []netip.Addr{vip, netip.MustParseAddr("fd00::1")}, Port: 7000, LastPort: 7001,
		Balance: config.BalanceWeighted, Forward: config.ForwardDNAT, Backends: []Backend{x}}
	require.NoError(t, ctl.Set(context.Background(), []Service{svc}))
	require.Equal(t, uint16(7001), ap.got[0].Services[0].LastPort)
	require.NoError(t, ctl.Set(context.Background(), nil))
	require.Equal(t, 1, ap.removed, "no kernel service: no table")
	require.Len(t, ap.got, 1)
	require.Equal(t, []cleaned{
		{unix.IPPROTO_TCP, netip.MustParseAddrPort("10.0.0.1:7000"), []netip.AddrPort{netip.MustParseAddrPort("10.1.0.9:7000")}},
		{unix.IPPROTO_TCP, netip.MustParseAddrPort("10.0.0.1:7001"), []netip.AddrPort{netip.MustParseAddrPort("10.1.0.9:7001")}},
	}, cl.take(), "an IPv4 backend's flows on each port, none on the IPv6 VIP")
}

// A refused Apply changes nothing: not the services, not the rotation,
// and no flow is deleted.
func TestControllerApplyRefused(t *testing.T) {
	ap, cl := &fakeApplier{}, &fakeCleaner{}
	up := map[string]bool{"dns/a": true, "dns/b": true}
	ctl := New(Options{Applier: ap, Clean: cl.clean, Health: func() map[string]bool { return maps(up) }})
	svc := Service{Name: "dns", Protocol: config.ProtocolUDP, VIPs: []netip.Addr{vip}, Port: 53, Balance: config.BalanceWeighted,
		Forward: config.ForwardFullNAT, Backends: []Backend{a, b}}
	require.NoError(t, ctl.Set(context.Background(), []Service{svc}))
	ap.fail = errors.New("table inet ober is someone else's")
	require.ErrorContains(t, ctl.Set(context.Background(), nil), "someone else's")
	require.Equal(t, []string{"a", "b"}, ctl.Rotation()["dns"])
	require.Empty(t, cl.take())
	require.Error(t, ctl.Err())
}

func maps(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Serving answers from the checks' verdicts of now, before a pass has
// applied them: the node withdraws its VIPs as soon as no kernel service
// has a backend, and keep_last keeps a service serving.
func TestServing(t *testing.T) {
	up := map[string]bool{"dns/a": true}
	ctl := New(Options{Applier: &fakeApplier{}, Clean: (&fakeCleaner{}).clean, Health: func() map[string]bool { return maps(up) }})
	require.False(t, ctl.Serving(), "no services")
	svc := Service{Name: "dns", Protocol: config.ProtocolUDP, VIPs: []netip.Addr{vip}, Port: 53, Balance: config.BalanceWeighted,
		Forward: config.ForwardFullNAT, Backends: []Backend{a, b}}
	require.NoError(t, ctl.Set(context.Background(), []Service{svc}))
	require.True(t, ctl.Serving())
	up = map[string]bool{}
	require.False(t, ctl.Serving(), "a is down though the last pass put it in rotation")
	svc.Fallback = config.FallbackKeepLast
	up = map[string]bool{"dns/a": true}
	require.NoError(t, ctl.Set(context.Background(), []Service{svc}))
	up = map[string]bool{}
	require.True(t, ctl.Serving(), "keep_last keeps the last rotation")
}
