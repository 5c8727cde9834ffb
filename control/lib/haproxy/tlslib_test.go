package haproxy

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTLSLibrary(t *testing.T) {
	vv := "HAProxy version 3.2.4-1 2025/08/20\nBuilt with SSL library version : OpenSSL 3.5.1\nRunning on SSL library version : AWS-LC 1.49.0\n"
	require.Equal(t, "AWS-LC 1.49.0", TLSLibrary(vv))
	require.Equal(t, "OpenSSL 3.0.22 25 Aug 2026", TLSLibrary("Built with OpenSSL version : OpenSSL 3.0.22 25 Aug 2026\n"))
	require.Empty(t, TLSLibrary("HAProxy version 2.6.12\n"))
}
