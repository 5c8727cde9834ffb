package kernelver

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseAndJudge(t *testing.T) {
	want := map[string]Support{
		"6.1.0-18-amd64": Supported, "6.12.9": Supported, "10.0": Supported,
		"6.0.5": Untested, "5.15.0-91-generic": Untested,
		"5.14.21": TooOld, "4.19.0": TooOld,
	}
	for release, support := range want {
		v, err := Parse(release)
		require.NoError(t, err, release)
		require.Equal(t, support, Judge(v), release)
	}
	v, _ := Parse("5.15.0-91-generic")
	require.Equal(t, "5.15", v.String())
	_, err := Parse("linux-6")
	require.EqualError(t, err, `kernel release "linux-6" not understood`)
	_, err = Parse("99999999999999999999.1")
	require.Error(t, err, "a number too large is not a version")
}
