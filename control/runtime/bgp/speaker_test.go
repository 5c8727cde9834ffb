package bgp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/stretchr/testify/require"
)

// localRIB lists what the speaker holds for announcing, by prefix.
func localRIB(t *testing.T, s *Speaker) map[string][]bgppkt.PathAttributeInterface {
	t.Helper()
	out := map[string][]bgppkt.PathAttributeInterface{}
	for _, fam := range []bgppkt.Family{bgppkt.RF_IPv4_UC, bgppkt.RF_IPv6_UC} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(prefix bgppkt.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					out[prefix.String()] = p.Attrs
				}
			})
		require.NoError(t, err)
	}
	return out
}

func attr[T bgppkt.PathAttributeInterface](attrs []bgppkt.PathAttributeInterface) (T, bool) {
	for _, a := range attrs {
		if v, ok := a.(T); ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// A speaker with no peers still keeps its local table: what Announce
// puts there is what every router would be sent.
func TestAnnounceWithdraw(t *testing.T) {
	ctx := context.Background()
	s, err := Start(ctx, Config{ASN: 65010, RouterID: netip.MustParseAddr("192.0.2.1"), ListenPort: -1}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop(ctx) })

	med := uint32(50)
	v4 := Route{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Communities: []uint32{65010<<16 | 100},
		LargeCommunities: []LargeCommunity{{65010, 1, 2}}}
	v6 := Route{Prefix: netip.MustParsePrefix("2001:db8::10/128"), MED: &med}
	require.NoError(t, s.Announce([]Route{v4, v6}))

	rib := localRIB(t, s)
	require.Len(t, rib, 2)
	nh, ok := attr[*bgppkt.PathAttributeNextHop](rib["192.0.2.10/32"])
	require.True(t, ok)
	require.True(t, nh.Value.IsUnspecified(), "next-hop self: GoBGP fills in the session's address")
	cs, ok := attr[*bgppkt.PathAttributeCommunities](rib["192.0.2.10/32"])
	require.True(t, ok)
	require.Equal(t, []uint32{65010<<16 | 100}, cs.Value)
	lc, ok := attr[*bgppkt.PathAttributeLargeCommunities](rib["192.0.2.10/32"])
	require.True(t, ok)
	require.Equal(t, uint32(65010), lc.Values[0].ASN)
	m, ok := attr[*bgppkt.PathAttributeMultiExitDisc](rib["2001:db8::10/128"])
	require.True(t, ok)
	require.Equal(t, uint32(50), m.Value)

	st := s.Status(ctx)
	require.Equal(t, []string{"192.0.2.10/32", "2001:db8::10/128"}, st.Announced)
	require.NotNil(t, st.AnnouncedSince)

	// A changed attribute replaces the path; a dropped route goes.
	med2 := uint32(70)
	v4.MED = &med2
	require.NoError(t, s.Announce([]Route{v4}))
	rib = localRIB(t, s)
	require.Len(t, rib, 1)
	m, ok = attr[*bgppkt.PathAttributeMultiExitDisc](rib["192.0.2.10/32"])
	require.True(t, ok)
	require.Equal(t, uint32(70), m.Value)

	before := time.Now()
	require.NoError(t, s.Withdraw("no healthy HAProxy instance (of 2)"))
	require.Empty(t, localRIB(t, s))
	st = s.Status(ctx)
	require.Empty(t, st.Announced)
	require.Equal(t, uint64(1), st.Withdraws)
	require.Equal(t, "no healthy HAProxy instance (of 2)", st.LastWithdrawReason)
	require.False(t, st.LastWithdraw.Before(before))

	// Withdrawing nothing is not a withdraw.
	require.NoError(t, s.Withdraw("again"))
	require.Equal(t, uint64(1), s.Status(ctx).Withdraws)
}

func TestPeerConfig(t *testing.T) {
	p := Peer{Address: netip.MustParseAddr("2001:db8::1"), ASN: 65000, Port: 1179, Password: "k",
		HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: 5 * time.Second,
		Passive: true, BFD: &BFD{Interval: 100 * time.Millisecond, Multiplier: 3}}
	a := apiPeer(p, false)
	require.Equal(t, "2001:db8::1", a.Conf.NeighborAddress)
	require.Equal(t, "k", a.Conf.AuthPassword)
	require.Equal(t, uint64(9), a.Timers.Config.HoldTime)
	require.Equal(t, uint64(3), a.Timers.Config.KeepaliveInterval)
	require.True(t, a.Transport.PassiveMode)
	require.Equal(t, uint32(1179), a.Transport.RemotePort)
	require.Len(t, a.AfiSafis, 1)
	require.Equal(t, api.Family_AFI_IP6, a.AfiSafis[0].Config.Family.Afi, "an IPv6 session carries IPv6 routes only")
	require.Equal(t, uint32(100000), a.Bfd.DesiredMinimumTxInterval)
	require.Equal(t, uint32(3), a.Bfd.DetectionMultiplier)
	require.Nil(t, a.EbgpMultihop)

	p.Multihop, p.BFD = 4, nil
	a = apiPeer(p, false)
	require.Equal(t, uint32(4), a.EbgpMultihop.MultihopTtl)
	require.Nil(t, a.Bfd)

	q := p
	require.True(t, samePeer(p, q))
	q.BFD = &BFD{Interval: time.Second, Multiplier: 3}
	require.False(t, samePeer(p, q))
}

// Graceful restart goes on the session only when asked for, with the
// capability for the session's family, and the restarting bit only on
// the first sessions of a speaker that follows a handover.
func TestPeerGracefulRestart(t *testing.T) {
	p := Peer{Address: netip.MustParseAddr("10.9.0.1"), ASN: 65000}
	require.Nil(t, apiPeer(p, true).GracefulRestart, "off unless configured")

	p.GracefulRestart = 30 * time.Second
	a := apiPeer(p, false)
	require.True(t, a.GracefulRestart.Enabled)
	require.Equal(t, uint32(30), a.GracefulRestart.RestartTime)
	require.False(t, a.GracefulRestart.LocalRestarting)
	require.True(t, a.AfiSafis[0].MpGracefulRestart.Config.Enabled)
	require.Equal(t, api.Family_AFI_IP, a.AfiSafis[0].Config.Family.Afi)
	require.True(t, apiPeer(p, true).GracefulRestart.LocalRestarting)

	q := p
	q.GracefulRestart = 60 * time.Second
	require.False(t, samePeer(p, q), "a new restart time re-opens the session")
}
