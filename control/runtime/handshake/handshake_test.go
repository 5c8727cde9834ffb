package handshake

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/sockdiag"
)

func TestOnceReapsOnlyStaleHandshakes(t *testing.T) {
	vip := netip.MustParseAddrPort("192.0.2.10:443")
	plain := netip.MustParseAddrPort("192.0.2.10:80")
	c := func(local netip.AddrPort, port uint16, segs uint32, since time.Duration) sockdiag.Conn {
		return sockdiag.Conn{Local: local, Remote: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), port), DataSegsOut: segs, SinceSend: since}
	}
	conns := []sockdiag.Conn{
		c(vip, 1, 0, 11*time.Second),                                // idle past the bound: reaped
		c(vip, 2, 0, 9*time.Second),                                 // idle, within the bound
		c(vip, 3, 4, 60*time.Second),                                // answered long ago: a quiet S3 client
		c(plain, 4, 0, time.Minute),                                 // not a TLS service
		c(vip, 5, 0, 10*time.Second),                                // exactly the bound: reaped
		c(netip.MustParseAddrPort("10.0.0.1:443"), 6, 0, time.Hour), // not a VIP
	}
	var got []uint16
	r := &Reaper{Bound: func() time.Duration { return 10 * time.Second },
		Services: func() map[netip.AddrPort]bool { return map[netip.AddrPort]bool{vip: true} },
		list:     func() ([]sockdiag.Conn, error) { return conns, nil },
		destroy: func(l, rm netip.AddrPort) error {
			got = append(got, rm.Port())
			if rm.Port() == 5 {
				return errors.New("boom")
			}
			return nil
		}}
	require.EqualError(t, r.Once(), "boom")
	require.Equal(t, []uint16{1, 5}, got)
	require.Equal(t, uint64(1), r.Reaped())
}
