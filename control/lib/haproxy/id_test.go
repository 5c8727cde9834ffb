package haproxy

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A server's explicit id is rendered (HAProxy's consistent hash places
// servers by id); two servers of one backend cannot share one.
func TestServerID(t *testing.T) {
	in := baseInstance()
	in.Pools[0].Balance = BalanceConsistent
	in.Pools[0].Servers[0].ID = 7
	text, err := Render(in)
	require.NoError(t, err)
	require.Contains(t, string(text), "server s0 192.0.2.10:9000 weight 100 id 7\n")

	in.Pools[0].Servers[1].ID = 7
	_, err = Render(in)
	require.ErrorContains(t, err, `id 7 is server "s0"'s too`)
}
