package addrlist

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadHosts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.WriteFile(p, []byte("# test names\n10.0.0.1 Web1 web2  # two names\n\n2001:db8::1 WEB1\n10.0.0.3 web1\n"), 0o644))
	h, err := ReadHosts(p)
	require.NoError(t, err)
	ctx := context.Background()

	got, err := h.LookupNetIP(ctx, "ip4", "wEb1.")
	require.NoError(t, err)
	require.Equal(t, addrs("10.0.0.1", "10.0.0.3"), got, "neither case nor a trailing dot matter")
	got, err = h.LookupNetIP(ctx, "ip", "web1")
	require.NoError(t, err)
	require.Equal(t, addrs("10.0.0.1", "2001:db8::1", "10.0.0.3"), got, "in the file's order")
	got, err = h.LookupNetIP(ctx, "ip6", "web1.")
	require.NoError(t, err)
	require.Equal(t, addrs("2001:db8::1"), got)
	_, err = h.LookupNetIP(ctx, "ip6", "web2")
	dnsErr, ok := err.(*net.DNSError)
	require.True(t, ok, "%v", err)
	require.True(t, dnsErr.IsNotFound)

	// Resolve takes it as any resolver.
	entries, err := Parse("web[1-2]")
	require.NoError(t, err)
	ps, _, err := Resolve(ctx, h, entries, false)
	require.NoError(t, err)
	require.Equal(t, pfxs("10.0.0.1/32", "10.0.0.3/32", "2001:db8::1/128"), Normalize(ps))

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = h.LookupNetIP(cancelled, "ip", "web2")
	require.ErrorIs(t, err, context.Canceled)
}

func TestReadHostsErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(bad, []byte("10.0.0.1 web1\nweb2 10.0.0.2\n"), 0o644))
	_, err := ReadHosts(bad)
	require.EqualError(t, err, bad+": line 2: want an address and names")
	require.NoError(t, os.WriteFile(bad, []byte("10.0.0.1\n"), 0o644))
	_, err = ReadHosts(bad)
	require.EqualError(t, err, bad+": line 1: want an address and names")

	_, err = ReadHosts(filepath.Join(dir, "none"))
	require.EqualError(t, err, filepath.Join(dir, "none")+": no such file or directory")
	require.ErrorIs(t, err, os.ErrNotExist)
}
