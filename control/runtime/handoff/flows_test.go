package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader"
)

// TestEstablishedLeavesTimeWaitOut: a node advertises its live
// connections to a service, not the ones it closed first and holds in
// TIME_WAIT, whose client ports a connection on another node may have
// taken since; nor connections to other ports.
func TestEstablishedLeavesTimeWaitOut(t *testing.T) {
	ns := netnstest.New(t, "hoflows")
	vip := netip.MustParseAddrPort("127.0.0.1:8443")
	l := NewLocalFlows(func() map[netip.AddrPort]bool { return map[netip.AddrPort]bool{vip: true} }, nil)
	var live, closed netip.AddrPort
	var got []loader.Flow
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Nothing in fn may stop its goroutine (no require): it runs on the
	// namespace's thread.
	err := ns.Do(func() error {
		lc := net.ListenConfig{}
		ln, err := lc.Listen(context.Background(), "tcp", vip.String())
		if err != nil {
			return err
		}
		defer ln.Close()
		lo, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer lo.Close()
		dial := func(l net.Listener) (net.Conn, net.Conn, error) {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				return nil, nil, err
			}
			s, err := l.Accept()
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			conns = append(conns, c, s)
			return c, s, nil
		}
		// Closed by the service's side first: TIME_WAIT there.
		c1, s1, err := dial(ln)
		if err != nil {
			return err
		}
		closed = c1.LocalAddr().(*net.TCPAddr).AddrPort()
		s1.Close()
		if _, err := c1.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			return fmt.Errorf("the service's close: %v", err)
		}
		c1.Close()
		c2, _, err := dial(ln)
		if err != nil {
			return err
		}
		live = c2.LocalAddr().(*net.TCPAddr).AddrPort()
		if _, _, err := dial(lo); err != nil {
			return err
		}
		// The last ACK of the closed one may still be on its way.
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err = l.Established()
			if err != nil || (len(got) == 1 && got[0].Client == live) || time.Now().After(deadline) {
				return err
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	require.NoError(t, err)
	require.Equal(t, []loader.Flow{{Client: live, VIP: vip}}, got, "only the live connection to the service (the one closed first came from %v)", closed)
}
