package access

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock               { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func limiterOn(c *fakeClock, max int) *Limiter {
	l := NewLimiter(DefaultFailRate, DefaultFailBurst, max)
	l.now = c.now
	return l
}

func TestLimiterBurstThenRate(t *testing.T) {
	c := newClock()
	l := limiterOn(c, 10)
	for i := range DefaultFailBurst {
		ok, _ := l.Allow("192.0.2.1")
		require.True(t, ok, "failure %d", i)
		l.Fail("192.0.2.1")
	}
	ok, after := l.Allow("192.0.2.1")
	require.False(t, ok)
	require.Equal(t, 200*time.Millisecond, after)
	ok, _ = l.Allow("192.0.2.2")
	require.True(t, ok, "another source is not limited")

	c.add(200 * time.Millisecond)
	ok, _ = l.Allow("192.0.2.1")
	require.True(t, ok, "one more try after 1/rate")
	l.Fail("192.0.2.1")
	ok, _ = l.Allow("192.0.2.1")
	require.False(t, ok)

	c.add(2 * time.Second)
	for range DefaultFailBurst {
		ok, _ = l.Allow("192.0.2.1")
		require.True(t, ok)
		l.Fail("192.0.2.1")
	}
	ok, _ = l.Allow("192.0.2.1")
	require.False(t, ok)
}

// However many sources fail, the table stays bounded, and a source that
// keeps failing stays limited while new sources churn through the table.
func TestLimiterBounded(t *testing.T) {
	c := newClock()
	l := limiterOn(c, 100)
	tries := 0
	for i := range 1000 {
		c.add(time.Millisecond)
		if ok, _ := l.Allow("attacker"); ok {
			tries++
			l.Fail("attacker")
		}
		l.Fail("198.51.100." + strconv.Itoa(i))
		require.LessOrEqual(t, l.Len(), 100)
	}
	// A burst, then 5 a second for the one second the loop lasted.
	require.LessOrEqual(t, tries, DefaultFailBurst+DefaultFailRate)
	require.GreaterOrEqual(t, tries, DefaultFailBurst)
}
