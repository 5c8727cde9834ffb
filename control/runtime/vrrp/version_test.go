package vrrp

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseKeepalivedVersion(t *testing.T) {
	v, ok := ParseKeepalivedVersion("Keepalived v2.2.7 (01/16,2022)\n\nCopyright(C) 2001-2022 Alexandre Cassen\n")
	require.True(t, ok)
	require.Equal(t, KeepalivedVersion{Major: 2, Minor: 2, Text: "2.2.7"}, v)
	require.NoError(t, v.Supported())

	v, ok = ParseKeepalivedVersion("Keepalived v2.3\n")
	require.True(t, ok)
	require.Equal(t, "2.3", v.Text, "a build without a patch level")

	v, ok = ParseKeepalivedVersion("Keepalived v2.1.5 (07/13,2020)")
	require.True(t, ok)
	require.EqualError(t, v.Supported(), "keepalived 2.1 is too old: ober needs 2.2 or newer (VRRPv3 with unicast peers, track files)")
	v, _ = ParseKeepalivedVersion("Keepalived v1.9.0")
	require.Error(t, v.Supported())

	_, ok = ParseKeepalivedVersion("bash: keepalived: command not found")
	require.False(t, ok)
}
