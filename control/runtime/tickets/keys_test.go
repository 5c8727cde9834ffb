package tickets

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	seedA = []byte("0123456789abcdef0123456789abcdef")
	seedB = []byte("fedcba9876543210fedcba9876543210")
)

// A key depends on the seed, the period and the epoch, and on nothing
// else: two nodes with the same seed compute the same keys.
func TestDeriveIsDeterministic(t *testing.T) {
	a1, err := Derive(seedA, time.Hour, 100)
	require.NoError(t, err)
	a2, err := Derive(append([]byte(nil), seedA...), time.Hour, 100)
	require.NoError(t, err)
	require.Equal(t, a1, a2, "same seed and epoch")

	seen := map[[KeySize]byte]string{a1: "seedA/1h/100"}
	for name, k := range map[string]func() ([KeySize]byte, error){
		"seedA/1h/101": func() ([KeySize]byte, error) { return Derive(seedA, time.Hour, 101) },
		"seedA/1h/99":  func() ([KeySize]byte, error) { return Derive(seedA, time.Hour, 99) },
		"seedB/1h/100": func() ([KeySize]byte, error) { return Derive(seedB, time.Hour, 100) },
		"seedA/2h/100": func() ([KeySize]byte, error) { return Derive(seedA, 2*time.Hour, 100) },
	} {
		got, err := k()
		require.NoError(t, err)
		require.NotContains(t, seen, got, "%s gives the key of %s", name, seen[got])
		require.NotEqual(t, a1[:16], got[:16], "%s: HAProxy tells keys apart by their first 16 bytes", name)
		seen[got] = name
	}
	_, err = Derive(nil, time.Hour, 1)
	require.Error(t, err)
}

func TestEpoch(t *testing.T) {
	p := 12 * time.Hour
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	e := Epoch(t0, p)
	require.Equal(t, t0.Unix()/(12*3600), e)
	require.Equal(t, e, Epoch(t0.Add(p-time.Second), p))
	require.Equal(t, e+1, Epoch(t0.Add(p), p))
	require.Equal(t, t0, Start(e, p).UTC())
	require.Equal(t, int64(-1), Epoch(time.Unix(-1, 0), p), "before 1970 rounds down too")
}

// The file lists the previous, the current and the next epoch's keys,
// one a line in base64: HAProxy encrypts with the penultimate line, so
// the current key encrypts and its neighbours decrypt.
func TestFileOrder(t *testing.T) {
	data, err := File(seedA, time.Hour, 500)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	require.Len(t, lines, Slots)
	for i, e := range []int64{499, 500, 501} {
		k, err := Derive(seedA, time.Hour, e)
		require.NoError(t, err)
		require.Equal(t, base64.StdEncoding.EncodeToString(k[:]), lines[i], "line %d is epoch %d's key", i, e)
		raw, err := base64.StdEncoding.DecodeString(lines[i])
		require.NoError(t, err)
		require.Len(t, raw, 80, "HAProxy takes 48 or 80 bytes")
	}
	next, err := Keys(seedA, time.Hour, 501)
	require.NoError(t, err)
	require.Equal(t, lines[1:], next[:2], "a rotation shifts the list by one key")
}
