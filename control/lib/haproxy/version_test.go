package haproxy

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      Version
		err       bool
	}{
		{
			name: "debian 12",
			out:  "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\nStatus: long-term supported branch - will stop receiving fixes around Q2 2027.\nKnown bugs: http://www.haproxy.org/bugs/bugs-2.6.12.html\n",
			want: Version{2, 6, 12, "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"},
		},
		{
			name: "3.0.5",
			out:  "HAProxy version 3.0.5 2024/09/19 - https://haproxy.org/\n",
			want: Version{3, 0, 5, "HAProxy version 3.0.5 2024/09/19 - https://haproxy.org/"},
		},
		{
			name: "debian 13",
			out:  "HAProxy version 3.0.11-1+deb13u3 2026/05/20 - https://haproxy.org/\r\nStatus: long-term supported branch\r\n",
			want: Version{3, 0, 11, "HAProxy version 3.0.11-1+deb13u3 2026/05/20 - https://haproxy.org/"},
		},
		{
			name: "3.2.0-dev",
			out:  "HAProxy version 3.2.0-dev 2025/01/01 - https://haproxy.org/",
			want: Version{3, 2, 0, "HAProxy version 3.2.0-dev 2025/01/01 - https://haproxy.org/"},
		},
		{
			name: "3.2-dev snapshot without patch",
			out:  "HAProxy version 3.2-dev5-1f2e3d4 2025/02/14 - https://haproxy.org/",
			want: Version{3, 2, 0, "HAProxy version 3.2-dev5-1f2e3d4 2025/02/14 - https://haproxy.org/"},
		},
		{
			name: "HA-Proxy 2.0",
			out:  "HA-Proxy version 2.0.33-0ubuntu0.1 2023/10/31 - https://haproxy.org/\n",
			want: Version{2, 0, 33, "HA-Proxy version 2.0.33-0ubuntu0.1 2023/10/31 - https://haproxy.org/"},
		},
		{
			name: "version line after a warning",
			out:  "[WARNING]  (1) : something\n  HAProxy version 2.8.3 2023/09/08 - https://haproxy.org/\n",
			want: Version{2, 8, 3, "HAProxy version 2.8.3 2023/09/08 - https://haproxy.org/"},
		},
		{name: "garbage", out: "nginx version: nginx/1.22.1\n", err: true},
		{name: "empty", out: "", err: true},
		{name: "no number", out: "HAProxy version x.y.z", err: true},
		{name: "mid-line mention", out: "see HAProxy version 2.6.12 notes", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVersion(tc.out)
			if tc.err {
				require.Error(t, err)
				require.Contains(t, err.Error(), "HAProxy version")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestVersionCompare(t *testing.T) {
	v := Version{Major: 2, Minor: 8, Patch: 3}
	require.True(t, v.AtLeast(2, 6))
	require.True(t, v.AtLeast(2, 8))
	require.False(t, v.AtLeast(2, 9))
	require.False(t, v.AtLeast(3, 0))
	require.True(t, v.AtLeast(1, 9))
	require.True(t, Version{Major: 3, Minor: 0}.AtLeast(2, 9))
	require.Equal(t, "2.8.3", v.String())

	require.NoError(t, Version{Major: 2, Minor: 6, Patch: 12}.Supported())
	require.NoError(t, Version{Major: 3, Minor: 2}.Supported())
	require.ErrorContains(t, Version{Major: 2, Minor: 4, Patch: 22}.Supported(), "too old")
	require.ErrorContains(t, Version{}.Supported(), "not set")
}

func TestFeaturesFor(t *testing.T) {
	for _, tc := range []struct {
		v    Version
		want Features
	}{
		{Version{Major: 2, Minor: 6, Patch: 12}, Features{}},
		{Version{Major: 2, Minor: 7}, Features{}},
		{Version{Major: 2, Minor: 8}, Features{H2FrontendWindow: true}},
		{Version{Major: 2, Minor: 9, Patch: 1}, Features{H2FrontendWindow: true}},
		{Version{Major: 3, Minor: 0, Patch: 5}, Features{H2FrontendWindow: true, ClientHandshakeTimeout: true, H2GlitchesThreshold: true, H2MaxTotalStreams: true}},
		{Version{Major: 3, Minor: 2}, Features{H2FrontendWindow: true, ClientHandshakeTimeout: true, H2GlitchesThreshold: true, H2MaxTotalStreams: true}},
	} {
		require.Equal(t, tc.want, FeaturesFor(tc.v), tc.v.String())
	}
	f := FeaturesFor(Version{Major: 2, Minor: 8})
	require.Equal(t, "h2-frontend-window=on client-handshake-timeout=off h2-glitches-threshold=off h2-max-total-streams=off", f.String())
	list := f.List()
	require.Len(t, list, 4)
	require.Equal(t, "tune.h2.fe.initial-window-size", list[0].Directive)
	require.Equal(t, "2.8", list[0].Since)
	require.True(t, list[0].Enabled)
	require.False(t, list[1].Enabled)
}

func TestDetectVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	v := haproxyVersion(t, haproxyBinary(t))
	require.NoError(t, v.Supported(), "installed HAProxy %s", v.Raw)
	require.Contains(t, v.Raw, "version")

	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-haproxy")
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\necho 'HAProxy version 3.1.7-1 2025/04/17 - https://haproxy.org/'\n"), 0o755))
	v, err := DetectVersion(ctx, fake)
	require.NoError(t, err)
	require.Equal(t, Version{3, 1, 7, "HAProxy version 3.1.7-1 2025/04/17 - https://haproxy.org/"}, v)

	bad := filepath.Join(dir, "not-haproxy")
	require.NoError(t, os.WriteFile(bad, []byte("#!/bin/sh\necho hello\n"), 0o755))
	_, err = DetectVersion(ctx, bad)
	require.ErrorContains(t, err, "no HAProxy version line")

	failing := filepath.Join(dir, "failing")
	require.NoError(t, os.WriteFile(failing, []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o755))
	_, err = DetectVersion(ctx, failing)
	require.ErrorContains(t, err, "broken")

	_, err = DetectVersion(ctx, filepath.Join(dir, "missing"))
	require.Error(t, err)
	_, err = DetectVersion(ctx, "")
	require.Error(t, err)
}
