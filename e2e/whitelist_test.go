package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// answer makes one plain HTTP request over c and reports the status, or
// why there was none.
func answer(c net.Conn, tlsOn bool, cfg *tls.Config) (int, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if tlsOn {
		c = tls.Client(c, cfg)
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: s3.test\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestServeWhitelistEveryPath: the plain-HTTP whitelist holds whatever
// way a connection comes in. XDP polices node.interfaces only; a second
// NIC without XDP, a local process, or a connection straight to an
// instance's loopback port never meet it, and HAProxy checks the same list
// (and the VIP the connection was for) itself. `ober sync` changes both
// copies live.
func TestServeWhitelistEveryPath(t *testing.T) {
	s := nodetest.New(t, oberBin, 2)
	// A second client on a second link of the node, without XDP.
	cli2 := netnstest.New(t, "cli2")
	netnstest.Veth(t, cli2, "veth-c2", s.Node, "veth-n2", 1)
	s.Node.IP(t, "addr", "add", "10.98.9.254/24", "dev", "veth-n2")
	cli2.IP(t, "addr", "add", "10.98.9.1/24", "dev", "veth-c2")
	cli2.IP(t, "route", "add", nodetest.VIP.String()+"/32", "via", "10.98.9.254")
	dial2 := nodetest.NewDialer(t, cli2, 2)
	s.Start()
	ctx := context.Background()
	via := func(d *nodetest.Dialer, port uint16) (int, error) {
		c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(nodetest.VIP, port).String())
		if err != nil {
			return 0, err
		}
		return answer(c, port == 443, s.TLSConfig())
	}

	code, err := via(s.ClientDialer(), 80)
	require.NoError(t, err, "the whitelisted client, through the XDP interface")
	require.Less(t, code, 500)
	code, err = via(dial2, 443)
	require.NoError(t, err, "the second NIC carries the TLS service (no whitelist)")
	require.Less(t, code, 500)
	_, err = via(dial2, 80)
	require.Error(t, err, "a client not on the list got an HTTP answer through the NIC without XDP")

	local := nodetest.NewDialer(t, s.Node, 1)
	_, err = via(local, 80)
	require.Error(t, err, "a local process got an HTTP answer from VIP:80")

	// Every instance's loopback listeners: HAProxy's own sockets on
	// 127.0.0.1, for the TLS and the plain service.
	ss := netnstest.Run(t, "ip", "netns", "exec", s.Node.Name, "ss", "-Hltnp")
	ports := regexp.MustCompile(`127\.0\.0\.1:(\d+)\s.*"haproxy"`).FindAllStringSubmatch(ss, -1)
	require.NotEmpty(t, ports, "no HAProxy listener on loopback:\n%s", ss)
	for _, m := range ports {
		for _, tlsOn := range []bool{false, true} {
			c, err := local.DialContext(ctx, "tcp", "127.0.0.1:"+m[1])
			if err != nil {
				continue // refused outright: as good
			}
			_, err = answer(c, tlsOn, s.TLSConfig())
			require.Error(t, err, "a connection straight to an instance's loopback port %s was answered (tls %v)", m[1], tlsOn)
		}
	}

	// `ober sync` adds the second client: HAProxy's copy follows at once.
	sync := func(list string) {
		t.Helper()
		out, code := oberIn(t, s.Node, "--bpffs-root", s.Root, "--config", s.ConfigPath, "sync", "--frontend-http", list)
		require.Equal(t, 0, code, out)
	}
	sync(nodetest.ClientAddr.String() + ",10.98.9.1")
	code, err = via(dial2, 80)
	require.NoError(t, err, "added by ober sync, yet refused by HAProxy")
	require.Less(t, code, 500)
	sync(nodetest.ClientAddr.String())
	_, err = via(dial2, 80)
	require.Error(t, err, "removed by ober sync, yet answered")
	code, err = via(s.ClientDialer(), 80)
	require.NoError(t, err)
	require.Less(t, code, 500)
}
