package handoff

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/loader"
)

func TestSealOpen(t *testing.T) {
	s := sealer{key: testKey, self: [4]byte{10, 0, 0, 1}, epoch: 42}
	now := time.Now()
	b := s.seal(kindHealth, 7, now, []byte{healthBackendsUp})
	m, err := open(testKey, b, now)
	require.NoError(t, err)
	require.Equal(t, kindHealth, m.kind)
	require.Equal(t, netip.MustParseAddr("10.0.0.1"), m.node)
	require.Equal(t, uint64(42), m.epoch)
	require.Equal(t, uint64(7), m.counter)
	require.Equal(t, []byte{healthBackendsUp}, m.body)
	require.Equal(t, now.UnixMilli(), m.at.UnixMilli())

	// Any bit changed anywhere fails the MAC.
	for i := 4; i < len(b); i++ {
		c := append([]byte(nil), b...)
		c[i] ^= 0x10
		_, err := open(testKey, c, now)
		require.ErrorIs(t, err, errMAC, "byte %d", i)
	}
	_, err = open(testKey, b[:10], now)
	require.ErrorIs(t, err, errShort)
	_, err = open(testKey, b, now.Add(maxSkew+time.Second))
	require.ErrorIs(t, err, errStale)
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	require.True(t, w.accept(5, 1))
	require.False(t, w.accept(5, 1), "the same message again")
	require.True(t, w.accept(5, 3))
	require.True(t, w.accept(5, 2), "late, within the window")
	require.False(t, w.accept(5, 2))
	require.True(t, w.accept(5, 100))
	require.False(t, w.accept(5, 100-window), "older than the window")
	require.True(t, w.accept(5, 100-window+1))
	require.False(t, w.accept(4, 1000), "an older process of the sender")
	require.True(t, w.accept(6, 1), "a newer process starts afresh")
	require.False(t, w.accept(5, 101))
}

func TestFlowBodies(t *testing.T) {
	flows := flowsOf(3, 500)
	bodies := flowBodies(flows)
	var got []loader.Flow
	for _, b := range bodies {
		require.LessOrEqual(t, headerLen+len(b)+macLen, maxDatagram, "a datagram stays within one packet")
		fs, err := parseFlows(b)
		require.NoError(t, err)
		got = append(got, fs...)
	}
	require.Equal(t, flows, got)
	require.Greater(t, len(bodies), 5, "500 flows take several datagrams")

	for _, bad := range [][]byte{{5}, {4, 1, 2, 3}, {6, 1}, append([]byte{4}, make([]byte, 11)...)} {
		_, err := parseFlows(bad)
		require.ErrorIs(t, err, errBody, "%x", bad)
	}
	mixed := append([]byte{4}, make([]byte, 12)...)
	fs, err := parseFlows(mixed)
	require.NoError(t, err)
	require.Len(t, fs, 1)
}

func TestNoticeBody(t *testing.T) {
	until := time.UnixMilli(time.Now().Add(time.Minute).UnixMilli())
	state, u, id, err := parseNotice(noticeBody(stateJoining, until, 9))
	require.NoError(t, err)
	require.Equal(t, stateJoining, state)
	require.True(t, until.Equal(u))
	require.Equal(t, uint64(9), id)
	_, u, _, err = parseNotice(noticeBody(stateServing, time.Time{}, 1))
	require.NoError(t, err)
	require.True(t, u.IsZero())
	for _, bad := range [][]byte{nil, make([]byte, 17), append([]byte{4}, make([]byte, 16)...), make([]byte, 18)} {
		_, _, _, err := parseNotice(bad)
		require.ErrorIs(t, err, errBody)
	}
}
