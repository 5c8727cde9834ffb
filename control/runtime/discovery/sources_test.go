package discovery

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/discovery"
)

// Each kind of the configuration makes its source; what a source refuses
// at set-up comes back naming the pool.
func TestSourceFor(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "backends.txt")
	require.NoError(t, os.WriteFile(list, []byte("10.1.0.1:80 5\n"), 0o600))
	sec := config.Duration{Duration: time.Second}
	for _, d := range []*config.Discovery{
		{Kind: config.DiscoverySRV, Name: "_s3._tcp.rgw.example", Server: "127.0.0.1:53", Protocol: "udp", Timeout: sec},
		{Kind: config.DiscoveryDNS, Name: "rgw.example", Port: 7480, Server: "127.0.0.1:53", Protocol: "tcp", Timeout: sec},
		{Kind: config.DiscoveryFile, Path: list, Timeout: sec},
		{Kind: config.DiscoveryHTTP, URL: "https://127.0.0.1:8443/backends", Timeout: sec},
		{Kind: config.DiscoveryExec, Command: []string{"/bin/cat", list}, Timeout: sec},
		{Kind: config.DiscoveryConsul, Name: "rgw", Timeout: sec},
	} {
		src, err := SourceFor("services[s3]", d, nil)
		require.NoError(t, err, d.Kind)
		closeSource(src)
	}
	src, err := SourceFor("services[s3]", &config.Discovery{Kind: config.DiscoveryExec, Command: []string{"/bin/cat", list}, Timeout: sec}, nil)
	require.NoError(t, err)
	res, err := src.Fetch(t.Context())
	require.NoError(t, err)
	require.Equal(t, []discovery.Backend{{Host: "10.1.0.1", Port: 80, Weight: 5}}, res.Backends)

	_, err = SourceFor("services[s3]", &config.Discovery{Kind: config.DiscoveryDNS, Name: "rgw.example", Server: "127.0.0.1:53"}, nil)
	require.ErrorContains(t, err, "services[s3].discovery: dns rgw.example: port 0")
	_, err = SourceFor("backends", &config.Discovery{Kind: config.DiscoveryStatic}, nil)
	require.EqualError(t, err, `backends.discovery.kind: "static" finds no backends`)
}
