package daemon

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A reload keeps the IDs of listeners that stay and never reuses an ID
// the running generation still has, so no old service's connection can
// reach a new service's socket while the tables switch.
func TestListenerIDsAcrossReloads(t *testing.T) {
	key := func(name string, fam int) listenerKey {
		return listenerKey{service: name, mode: "tls", port: 443, family: fam}
	}
	first := newListenerIDs(nil)
	for _, k := range []listenerKey{key("a", 4), key("b", 4), key("c", 4)} {
		_, err := first.id(k)
		require.NoError(t, err)
	}
	require.Equal(t, map[listenerKey]uint32{key("a", 4): 0, key("b", 4): 1, key("c", 4): 2}, first.got)

	second := newListenerIDs(first.got)
	for _, k := range []listenerKey{key("a", 4), key("c", 4), key("d", 4), key("a", 6)} {
		_, err := second.id(k)
		require.NoError(t, err)
	}
	require.Equal(t, map[listenerKey]uint32{key("a", 4): 0, key("c", 4): 2, key("d", 4): 3, key("a", 6): 4}, second.got,
		"b's ID 1 is not reused while the running generation has it")

	third := newListenerIDs(second.got)
	id, err := third.id(key("e", 4))
	require.NoError(t, err)
	require.Equal(t, uint32(1), id, "free again once no running generation uses it")

	// A changed mode is a different listener.
	k := key("a", 4)
	k.mode = "http"
	id, err = third.id(k)
	require.NoError(t, err)
	require.Equal(t, uint32(5), id)
}

func TestMaxConnFor(t *testing.T) {
	require.Equal(t, 9900, maxConnFor(20000))
	require.Equal(t, fdReserve, maxConnFor(100))
	require.Equal(t, 524188, maxConnFor(1<<20))
}
