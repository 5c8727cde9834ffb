package loader

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/loader/packet"
)

// collider returns an IPv4 address that is no VIP of the site but hashes
// to the slot of want's: the filter lets it through to the table.
func collider(t *testing.T, want netip.Addr, vips []VIP) netip.Addr {
	t.Helper()
	slot := vipSlot(addr16(want))
	taken := map[netip.Addr]bool{}
	for _, v := range vips {
		taken[v.Addr] = true
	}
	for i := uint32(1); i < 1<<24; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !taken[a] && vipSlot(addr16(a)) == slot {
			return a
		}
	}
	t.Fatalf("no address in 10.0.0.0/8 hashes to %s's slot %d", want, slot)
	return netip.Addr{}
}

// The filter lets every VIP and host address through to the table and
// passes the host's other traffic without it; an address that shares a
// VIP's slot is judged by the table, which finds no VIP there.
func TestVIPFilterFollowsTheTable(t *testing.T) {
	d := openTestDataplane(t)
	f, err := d.readAbsent()
	require.NoError(t, err)
	for _, v := range siteVIPs() {
		require.True(t, f.mayBeVIP(v.Addr), "%s must reach the table", v.Addr)
	}
	require.False(t, f.mayBeVIP(other4), "%s is no VIP: the filter must answer for it", other4)
	require.False(t, f.mayBeVIP(other6), "%s is no VIP: the filter must answer for it", other6)
	near := collider(t, vip4, siteVIPs())
	require.True(t, f.mayBeVIP(near))

	onCPU(t, 0, func() {
		r := newXDPRunner(t, d)
		for _, c := range []struct {
			dst    netip.Addr
			reason Reason
			action Action
		}{
			{other4, ReasonNotVIP, ActionPass},
			{other6, ReasonNotVIP, ActionPass},
			{near, ReasonNotVIP, ActionPass},
			{vip4, ReasonNoService, ActionDrop}, // a VIP's port without a service
		} {
			src := client4
			if c.dst.Is6() {
				src = client6
			}
			got, err := r.run(tcp(src, 40000, c.dst, 22, packet.ACK).Bytes())
			require.NoError(t, err, c.dst)
			require.Equal(t, c.reason, got.Reason, "%s:22", c.dst)
			require.Equal(t, c.action, got.Action, "%s:22", c.dst)
		}
	})

	// A new table moves the filter with it: the old VIP becomes host
	// traffic, the new one is policed.
	moved := netip.MustParseAddr("192.0.2.77")
	require.NoError(t, d.SetServices([]VIP{{Addr: moved}},
		[]Service{{VIP: moved, Proto: ProtoTCP, Port: portHTTPS, Listener: listenHTTPS, Dispatch: true}}))
	f, err = d.readAbsent()
	require.NoError(t, err)
	require.True(t, f.mayBeVIP(moved))
	require.False(t, f.mayBeVIP(vip4))
	onCPU(t, 0, func() {
		r := newXDPRunner(t, d)
		got, err := r.run(tcp(client4, 40000, vip4, 22, packet.ACK).Bytes())
		require.NoError(t, err)
		require.Equal(t, ReasonNotVIP, got.Reason)
		got, err = r.run(tcp(client4, 40000, moved, 22, packet.ACK).Bytes())
		require.NoError(t, err)
		require.Equal(t, ReasonNoService, got.Reason)
	})
}

// A filter that no longer matches the table (an ober that knew no filter
// swapped the table since) is rebuilt when the dataplane opens, before its
// programs run: a VIP's packets are never passed as host traffic.
func TestOpenRebuildsAStaleVIPFilter(t *testing.T) {
	d := openTestDataplane(t)
	root := d.Root()
	stale := &vipAbsent{}
	for i := range stale.Words {
		stale.Words[i] = ^uint64(0) // "no VIP anywhere"
	}
	require.NoError(t, d.writeAbsent(stale))
	require.NoError(t, d.Close())

	d, err := Open(Options{Root: root, Logger: discardLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	f, err := d.readAbsent()
	require.NoError(t, err)
	require.Equal(t, absentFor(keysOf(siteVIPs())), f)
	onCPU(t, 0, func() {
		r := newXDPRunner(t, d)
		got, err := r.run(tcp(stranger4, 40000, vip4, portHTTP, packet.SYN).Bytes())
		require.NoError(t, err)
		require.Equal(t, ReasonWhitelistDrop, got.Reason)
	})
}

func keysOf(vips []VIP) []svcKey {
	var ks []svcKey
	for _, v := range vips {
		ks = append(ks, makeSvcKey(v.Addr, 0, 0))
	}
	return ks
}

// While a swap is under way the filter may only say "no VIP" where
// neither table has one, and afterwards where the new one has none.
func TestVIPFilterSwapSteps(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 5))
	addrs := func(n int) []svcKey {
		var ks []svcKey
		for range n {
			ks = append(ks, makeSvcKey(netip.AddrFrom4([4]byte{192, 0, byte(rng.IntN(256)), byte(rng.IntN(256))}), 0, 0))
		}
		// Service rows carry no VIP: they must not clear a bit.
		return append(ks, makeSvcKey(netip.MustParseAddr("203.0.113.5"), 6, 443))
	}
	for range 20 {
		oldKeys, newKeys := addrs(rng.IntN(300)), addrs(rng.IntN(300))
		cur, next := absentFor(oldKeys), absentFor(newKeys)
		during := cur.and(next)
		for _, k := range append(append([]svcKey{}, oldKeys...), newKeys...) {
			if k.Proto != 0 {
				continue
			}
			a := netip.AddrFrom16(k.Addr)
			require.True(t, during.mayBeVIP(a), "%s hidden mid-swap", a)
		}
		for _, k := range newKeys {
			if k.Proto == 0 {
				require.True(t, next.mayBeVIP(netip.AddrFrom16(k.Addr)), "%s hidden after the swap", k.addr())
			}
		}
		if svc := netip.MustParseAddr("203.0.113.5"); !sharesSlot(newKeys, svc) {
			require.False(t, next.mayBeVIP(svc), "a service row cleared a bit")
		}
	}
}

func sharesSlot(keys []svcKey, a netip.Addr) bool {
	s := vipSlot(addr16(a))
	for _, k := range keys {
		if k.Proto == 0 && vipSlot(k.Addr) == s {
			return true
		}
	}
	return false
}
