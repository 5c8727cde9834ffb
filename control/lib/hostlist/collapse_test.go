package hostlist

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCollapse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"client01,client02,client04", "client[01-02,04]"},
		{"n8,n9,n10,n12", "n[8-10,12]"},
		{"n08,n09,n10", "n[08-10]"},
		{"r1n1,r1n2,r2n2", "r1n[1-2],r2n2"},
		{"node01.rack7,node03.rack7", "node[01,03].rack7"},
		{"gw,web1,web2", "gw,web[1-2]"},
		{"a1", "a1"},
		// Out of order: a group would expand in another order, so the
		// names stay apart.
		{"n2,n1", "n2,n1"},
		{"n1,gw,n2", "n1,gw,n2"},
		// 9 then 010 is no run: [9-10] would give 10, [09-10] 09.
		{"n9,n010", "n9,n010"},
	} {
		names := strings.Split(tc.in, ",")
		got := Collapse(names)
		require.Equal(t, tc.want, got, tc.in)
		back, err := Expand(got)
		require.NoError(t, err)
		require.Equal(t, names, back, "Collapse(%s) = %s expands to other names", tc.in, got)
	}
}

func TestSplit(t *testing.T) {
	got, err := Split(" client[01-02,04] ,gw, 10.0.0.0/8,2001:db8::1")
	require.NoError(t, err)
	require.Equal(t, []string{"client[01-02,04]", "gw", "10.0.0.0/8", "2001:db8::1"}, got)

	_, err = Split("cli[1-")
	require.EqualError(t, err, `hostlist "cli[1-": offset 3: unclosed "["`)
}
