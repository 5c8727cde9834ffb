package haproxy

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseTune(t *testing.T) {
	got, err := ParseTune(" bufsize=65536, client_sndbuf=1048576 ")
	require.NoError(t, err)
	require.Equal(t, Tune{BufSize: 65536, ClientSndBuf: 1 << 20}, got)
	got, err = ParseTune("")
	require.NoError(t, err)
	require.Equal(t, Tune{}, got)

	for in, want := range map[string]string{
		"bufsize":                     `"bufsize": want key=value`,
		"bufsise=65536":               `"bufsise=65536": unknown key "bufsise" (known: bufsize, ssl_maxrecord, client_sndbuf, client_rcvbuf, server_sndbuf, server_rcvbuf)`,
		"bufsize=64k":                 `"bufsize=64k": "64k" is not a whole number of bytes`,
		"ssl_maxrecord=20000":         `"ssl_maxrecord=20000": must be 0 (tune.ssl.maxrecord's default) or between 512 and 16384 bytes`,
		"bufsize=65536,bufsize=32768": `"bufsize=32768": bufsize given twice`,
	} {
		_, err := ParseTune(in)
		require.EqualError(t, err, want, in)
	}
}

func TestTuneOver(t *testing.T) {
	base := Tune{BufSize: 32768, ServerRcvBuf: 1 << 20}
	require.Equal(t, Tune{BufSize: 65536, ServerRcvBuf: 1 << 20, SSLMaxRecord: 4096}, base.Over(Tune{BufSize: 65536, SSLMaxRecord: 4096}))
	require.Equal(t, base, base.Over(Tune{}))
}
