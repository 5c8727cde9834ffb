package vipwatch

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/routertest"
)

// arpSegment is two hosts and an observer on one bridge.
type arpSegment struct {
	obs   *netnstest.NS
	hosts []*netnstest.NS
	macs  map[string]net.HardwareAddr
}

func newARPSegment(t *testing.T) *arpSegment {
	t.Helper()
	sw := routertest.NewSwitch(t)
	seg := &arpSegment{obs: netnstest.New(t, "wobs"), macs: map[string]net.HardwareAddr{}}
	sw.Attach(t, seg.obs, "o0", "sw-o")
	for i := range 2 {
		name := fmt.Sprintf("h%d", i+1)
		h := netnstest.New(t, "w"+name)
		sw.Attach(t, h, "eth0", "sw-"+name, netip.MustParsePrefix(fmt.Sprintf("10.99.9.%d/24", 11+i)))
		err := inNamespace(h.Handle, func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err == nil {
				seg.macs[name] = ifi.HardwareAddr
			}
			return err
		})
		require.NoError(t, err)
		seg.hosts = append(seg.hosts, h)
	}
	return seg
}

// watch observes vip for d and returns what was seen.
func (seg *arpSegment) watch(t *testing.T, vip netip.Addr, d time.Duration) ARPSummary {
	t.Helper()
	o, err := StartARP(seg.obs.Handle, ARPConfig{Iface: "o0", VIPs: []netip.Addr{vip}, Nodes: seg.macs})
	require.NoError(t, err)
	time.Sleep(d)
	o.Stop()
	require.NoError(t, o.Err())
	s := o.Summary()
	t.Logf("%s", s)
	return s
}

// On a real segment the observer sees the one host that has the VIP, two
// hosts that both have it as a double on single requests, and nobody
// when nobody has it.
func TestARPObserverSegment(t *testing.T) {
	seg := newARPSegment(t)
	vip := netip.MustParseAddr("10.99.9.100")
	seg.hosts[0].IP(t, "addr", "add", vip.String()+"/32", "dev", "eth0")

	one := seg.watch(t, vip, 300*time.Millisecond)
	require.Greater(t, one.Sent, 20, "a request every 5 ms")
	// Every request reaches the host on an idle bridge; a few may miss
	// the window on a busy machine.
	require.GreaterOrEqual(t, one.Answered, one.Sent*9/10)
	require.Empty(t, one.Doubles)
	require.Zero(t, one.Stray)

	seg.hosts[1].IP(t, "addr", "add", vip.String()+"/32", "dev", "eth0")
	two := seg.watch(t, vip, 300*time.Millisecond)
	require.GreaterOrEqual(t, len(two.Doubles), two.Sent*9/10, "both hosts answer each request")
	require.ElementsMatch(t, []string{"h1", "h2"}, two.Doubles[0].Nodes)

	for _, h := range seg.hosts {
		h.IP(t, "addr", "del", vip.String()+"/32", "dev", "eth0")
	}
	none := seg.watch(t, vip, 100*time.Millisecond)
	require.Greater(t, none.Sent, 5)
	require.Zero(t, none.Answered)
}

// The observer refuses what it cannot ask with ARP.
func TestARPObserverIPv6(t *testing.T) {
	_, err := StartARP(0, ARPConfig{Iface: "eth0", VIPs: []netip.Addr{netip.MustParseAddr("fd00::1")}})
	require.ErrorContains(t, err, "not IPv4")
}
