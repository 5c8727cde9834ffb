package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// plainInstance is an instance with one plain-HTTP frontend on an
// inherited listener, and no backend worth reaching: the frontend's own
// rules are what the tests look at.
func plainInstance(t *testing.T, dir string, fe Frontend) Instance {
	in := baseInstance()
	in.Version = haproxyVersion(t, haproxyBinary(t))
	in.StatsSocket = filepath.Join(dir, "s.sock")
	in.ServedByHeader = false
	in.MaxConn = 1000 // within the test process's descriptor limit
	fe.Name, fe.Mode, fe.Port, fe.Binds, fe.Pool = "http-80", ModeHTTP, 80, []Bind{{FD: 3, Family: 4}}, DefaultPool
	in.Frontends = []Frontend{fe}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(be.Close)
	in.Pools = []Pool{{Name: DefaultPool, Balance: BalanceLeastConn,
		Servers: []Server{{Name: "s0", Addr: netip.MustParseAddrPort(be.Listener.Addr().String()), Weight: 100}}}}
	unprivileged(t, &in, dir)
	return in
}

// answered reports whether a plain request through addr gets an HTTP
// answer (any status), rather than the connection closed unanswered.
func answered(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	_, err = http.ReadResponse(bufio.NewReader(c), nil)
	return err
}

func runPlain(t *testing.T, in Instance, dir string) (string, Runtime) {
	f, addr := listenerFile(t)
	text, err := Render(in)
	require.NoError(t, err)
	cfg := filepath.Join(dir, "h.cfg")
	require.NoError(t, os.WriteFile(cfg, text, 0o600))
	_, _, done := startHAProxy(t, haproxyBinary(t), cfg, f)
	rt := Runtime{Path: in.StatsSocket}
	waitReady(t, context.Background(), rt, done)
	return addr, rt
}

// TestRealWhitelist: a frontend with a whitelist file admits only the
// listed sources, and a live replacement of the list (ober sync) takes
// effect at once, in one step; the file is what an instance loads.
func TestRealWhitelist(t *testing.T) {
	dir := shortTempDir(t)
	acl := ACLFile(dir, "frontend-http", "1")
	require.NoError(t, WriteACL(acl, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}))
	got, err := os.ReadFile(acl)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.0/8\n2001:db8::/32\n", string(got))
	fi, err := os.Stat(acl)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "root's only: HAProxy reads it before dropping privileges")
	files, err := ACLFiles(dir, "frontend-http")
	require.NoError(t, err)
	require.Equal(t, []string{acl}, files)

	in := plainInstance(t, dir, Frontend{Whitelist: acl})
	addr, rt := runPlain(t, in, dir)
	require.Error(t, answered(addr), "127.0.0.1 is not on the list")
	loaded, err := rt.LoadedACLFiles(context.Background())
	require.NoError(t, err)
	require.Contains(t, loaded, acl)

	require.NoError(t, rt.ReplaceACL(context.Background(), acl, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}))
	require.NoError(t, answered(addr), "admitted once the list holds it")
	require.NoError(t, rt.ReplaceACL(context.Background(), acl, nil))
	require.Error(t, answered(addr), "an empty list admits nobody")
	err = rt.ReplaceACL(context.Background(), filepath.Join(dir, "acl", "nope.acl"), nil)
	require.Error(t, err, "a list the instance did not load")
}

// TestRealVIPsOnly: a frontend told its VIPs closes a connection to any
// other address at once: one made to the listener's loopback port did
// not come through sk_lookup.
func TestRealVIPsOnly(t *testing.T) {
	for _, c := range []struct {
		vips []netip.Addr
		ok   bool
	}{
		{[]netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}, false},
		{[]netip.Addr{netip.MustParseAddr("127.0.0.1")}, true},
	} {
		dir := shortTempDir(t)
		addr, _ := runPlain(t, plainInstance(t, dir, Frontend{VIPs: c.vips}), dir)
		err := answered(addr)
		if c.ok {
			require.NoError(t, err, "to a VIP")
		} else {
			require.Error(t, err, "to the loopback port, not a VIP")
		}
	}
}

// TestRealPerSourceLimit: one client address may hold ConnsPerSource
// connections; the next is closed at once, and a slot comes back when one
// closes.
func TestRealPerSourceLimit(t *testing.T) {
	dir := shortTempDir(t)
	in := plainInstance(t, dir, Frontend{})
	in.ConnsPerSource = 3
	addr, _ := runPlain(t, in, dir)
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	// Closed at once: reset before the dial returns, or right after.
	if c, err := net.Dial("tcp", addr); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		require.True(t, errors.Is(err, io.EOF) || isReset(err), "the fourth is closed at once, got %v", err)
	}
	require.Error(t, answered(addr), "no answer over the limit")
	held[0].Close()
	require.Eventually(t, func() bool { return answered(addr) == nil }, 3*time.Second, 50*time.Millisecond,
		"a slot comes back when a connection closes")
	for _, c := range held[1:] {
		c.Close()
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
