package sockdiag

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// TestDumpAndDestroy: in a namespace of its own, a connection is listed
// with what each side sent, and destroying the server's side resets the
// client, for IPv4 and IPv6.
func TestDumpAndDestroy(t *testing.T) {
	ns := netnstest.New(t, "sd")
	ns.IP(t, "link", "set", "lo", "up")
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		var ln net.Listener
		var client, server net.Conn
		require.NoError(t, ns.Do(func() (err error) {
			if ln, err = net.Listen("tcp", addr); err != nil {
				return err
			}
			if client, err = net.Dial("tcp", ln.Addr().String()); err != nil {
				return err
			}
			server, err = ln.Accept()
			return err
		}))
		defer ln.Close()
		defer client.Close()
		defer server.Close()
		local := server.LocalAddr().(*net.TCPAddr).AddrPort()
		remote := server.RemoteAddr().(*net.TCPAddr).AddrPort()
		find := func() Conn {
			var cs []Conn
			require.NoError(t, ns.Do(func() (err error) { cs, err = Established(); return err }))
			for _, c := range cs {
				if c.Local == local && c.Remote == remote {
					return c
				}
			}
			t.Fatalf("%s-%s not among %v", local, remote, cs)
			return Conn{}
		}
		time.Sleep(20 * time.Millisecond)
		c := find()
		require.Zero(t, c.DataSegsOut, "%s: the server sent nothing yet", addr)
		require.Zero(t, c.BytesReceived)
		require.NotZero(t, c.Cookie)
		cookie := c.Cookie
		require.GreaterOrEqual(t, c.SinceSend, 20*time.Millisecond, "the clock runs from the handshake")

		_, err := client.Write([]byte("hello"))
		require.NoError(t, err)
		buf := make([]byte, 5)
		_, err = server.Read(buf)
		require.NoError(t, err)
		_, err = server.Write([]byte("hi"))
		require.NoError(t, err)
		time.Sleep(20 * time.Millisecond)
		c = find()
		require.Equal(t, uint64(5), c.BytesReceived)
		require.Equal(t, uint64(2), c.BytesAcked, "the client acknowledged the server's 2 bytes")
		require.Equal(t, cookie, c.Cookie, "one socket, one cookie")
		require.Equal(t, uint32(1), c.DataSegsOut)
		require.Less(t, c.SinceSend, 20*time.Millisecond+10*time.Millisecond)

		require.NoError(t, ns.Do(func() error { return Destroy(local, remote) }))
		_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = client.Read(make([]byte, 16)) // "hi", then the reset
		if err == nil {
			_, err = client.Read(make([]byte, 16))
		}
		require.True(t, errors.Is(err, syscall.ECONNRESET), "%s: the client is reset, got %v", addr, err)
		require.Error(t, ns.Do(func() error { return Destroy(local, remote) }), "already gone")
	}
	require.Error(t, Destroy(netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2")))
}
