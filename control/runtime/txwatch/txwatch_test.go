package txwatch

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVerdict(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	type step struct {
		after string // since t0
		c     Counters
		want  string
	}
	up := func(p, d, e uint64) Counters { return Counters{Up: true, Packets: p, Dropped: d, Errors: e} }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"sending", []step{{"0s", up(10, 0, 0), OK}, {"1s", up(20, 0, 0), OK}, {"5s", up(30, 5, 0), OK}}},
		{"quiet link, no drops: not a stall", []step{{"0s", up(10, 0, 0), OK}, {"2s", up(10, 0, 0), OK}, {"10s", up(10, 0, 0), OK}}},
		{"drops with nothing sent, a whole window", []step{
			{"0s", up(10, 0, 0), OK}, {"1s", up(10, 4, 0), OK}, {"2s", up(10, 9, 0), OK}, {"3s", up(10, 12, 0), Stalled},
			// Still nothing sent, no more drops: still stalled.
			{"4s", up(10, 12, 0), Stalled},
			// The first packet out ends it.
			{"5s", up(11, 12, 0), OK},
		}},
		{"errors count as drops", []step{{"0s", up(10, 0, 0), OK}, {"3s", up(10, 0, 3), Stalled}}},
		{"a backlog that stays, nothing sent", []step{{"0s", Counters{Up: true, Packets: 10, Queued: 40}, OK}, {"3s", Counters{Up: true, Packets: 10, Queued: 60}, Stalled}}},
		{"a backlog that drains", []step{{"0s", Counters{Up: true, Packets: 10, Queued: 40}, OK}, {"3s", Counters{Up: true, Packets: 10, Queued: 0}, OK}}},
		{"less than a window", []step{{"0s", up(10, 0, 0), OK}, {"2900ms", up(10, 50, 0), OK}}},
		{"some packets out among drops: congested, not stopped", []step{{"0s", up(10, 0, 0), OK}, {"1s", up(10, 5, 0), OK}, {"3s", up(11, 9, 0), OK}}},
		{"down", []step{{"0s", up(10, 0, 0), OK}, {"1s", Counters{Packets: 10, Dropped: 3}, Down}, {"2s", up(10, 3, 0), OK},
			// Up again: a whole window up is needed before a stall.
			{"4s", up(10, 8, 0), OK}, {"5s", up(10, 9, 0), Stalled}}},
		{"counters made anew", []step{{"0s", up(1000, 500, 0), OK}, {"1s", up(0, 0, 0), OK}, {"3s", up(0, 2, 0), OK}, {"4s", up(0, 3, 0), Stalled}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := New(3 * time.Second)
			for i, s := range tc.steps {
				d, err := time.ParseDuration(s.after)
				require.NoError(t, err)
				st, _ := w.Observe("eth0", t0.Add(d), s.c)
				require.Equal(t, s.want, st.Transmit, "step %d (%s)", i, s.after)
				if st.Transmit == Stalled {
					assert.Contains(t, st.Reason, "sent no packet")
				}
			}
		})
	}
}

func TestStateFields(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	w := New(3 * time.Second)
	w.Observe("eth1", t0, Counters{Up: true, Packets: 5})
	st, changed := w.Observe("eth1", t0.Add(3*time.Second), Counters{Up: true, Packets: 5, Dropped: 7})
	require.True(t, changed)
	assert.Equal(t, Stalled, st.Transmit)
	assert.Equal(t, t0.Add(3*time.Second), st.Since)
	assert.Equal(t, uint64(1), st.Stalls)
	assert.Equal(t, "up but sent no packet in 3s while dropping 7 and failing 0: its transmit queue is stopped", st.Reason)
	_, changed = w.Observe("eth1", t0.Add(4*time.Second), Counters{Up: true, Packets: 6, Dropped: 7})
	require.True(t, changed)
	w.Observe("eth0", t0, Counters{Up: true})
	names := []string{}
	for _, s := range w.States() {
		names = append(names, s.Iface)
	}
	assert.Equal(t, "eth0 eth1", strings.Join(names, " "))
	w.Forget([]string{"eth1"})
	require.Len(t, w.States(), 1)
	assert.Equal(t, uint64(1), w.States()[0].Stalls, "kept across recoveries")
}
