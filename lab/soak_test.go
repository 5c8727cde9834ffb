package lab

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// A range read is checked against bytes made again from the seed, so
// any range must equal the same slice of the whole object.
func TestSoakBytesRanges(t *testing.T) {
	obj := &soakObject{size: 3*soakBlock + 12345, seed: 42}
	whole, err := io.ReadAll(obj.bytes(0, obj.size))
	require.NoError(t, err)
	require.Len(t, whole, int(obj.size))
	for _, r := range [][2]int64{{0, 1}, {1, 2}, {soakBlock - 1, soakBlock + 1}, {12, 2*soakBlock + 7}, {obj.size - 5, obj.size}, {0, obj.size}} {
		got, err := io.ReadAll(obj.bytes(r[0], r[1]))
		require.NoError(t, err)
		require.True(t, bytes.Equal(whole[r[0]:r[1]], got), "range %d-%d", r[0], r[1])
	}
	other, err := io.ReadAll((&soakObject{seed: 43}).bytes(0, soakBlock))
	require.NoError(t, err)
	require.False(t, bytes.Equal(whole[:soakBlock], other), "another seed, other bytes")
	second, err := io.ReadAll(obj.bytes(soakBlock, 2*soakBlock))
	require.NoError(t, err)
	require.False(t, bytes.Equal(whole[:soakBlock], second), "each block its own bytes")
}
