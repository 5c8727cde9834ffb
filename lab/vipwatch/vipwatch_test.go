package vipwatch

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A handover seen in one sample is passing; two samples in a row are a
// double holder.
func TestDoubles(t *testing.T) {
	vip := netip.MustParseAddr("10.0.0.1")
	seq := [][]string{{"a"}, {"a", "b"}, {"b"}, {"b"}, {"a", "b"}, {"a", "b"}, {"a"}}
	var mu sync.Mutex
	i := 0
	done := make(chan struct{})
	s := Start(time.Millisecond, func() (map[netip.Addr][]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if i == len(seq) {
			select {
			case <-done:
			default:
				close(done)
			}
			return map[netip.Addr][]string{vip: {"a"}}, nil
		}
		i++
		return map[netip.Addr][]string{vip: seq[i-1]}, nil
	})
	<-done
	s.Stop()
	doubles, passing := s.Doubles(time.Time{})
	require.Equal(t, 1, passing)
	require.Len(t, doubles, 2)
	p := s.Passing(time.Time{})
	require.Len(t, p, 1)
	require.Equal(t, []string{"a", "b"}, p[0].Nodes)
	require.Equal(t, vip, p[0].VIP)
	at, ok := s.First(time.Time{}, vip, func(h []string) bool { return len(h) == 1 && h[0] == "b" })
	require.True(t, ok)
	require.False(t, at.IsZero())
	s.Stop() // twice is fine
}
