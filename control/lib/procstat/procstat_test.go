package procstat

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	// A command name with spaces and a parenthesis, as a process may
	// name itself.
	line := "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 1 0 123456 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := parse(4242, line)
	require.NoError(t, err)
	require.Equal(t, Stat{State: 'S', UTime: 250, STime: 75, Start: 123456}, st)
	require.InDelta(t, 3.25, st.CPUSeconds(), 1e-9)

	_, err = parse(7, "7 (x) S 1 2")
	require.EqualError(t, err, "short /proc/7/stat")
	_, err = parse(7, "garbage")
	require.EqualError(t, err, "unreadable /proc/7/stat")
}

func TestSelf(t *testing.T) {
	st, err := Read(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, st.Start)
	require.True(t, Alive(os.Getpid()))
	require.False(t, Alive(1<<30), "no such PID")
}
