package check

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/config"
)

// backendWait bounds each backend's connect, TLS handshake and answer
// together, as HAProxy's check does with timeouts.connect.
const backendWait = 3 * time.Second

// backendChecks checks every backend server at once.
func backendChecks(ctx context.Context, cfg *config.Config) []Result {
	servers := cfg.Backends.Servers
	out := make([]Result, len(servers))
	host := healthHost(servers)
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { out[i] = backendCheck(ctx, s, cfg.Backends.Health.Path, host) })
	}
	wg.Wait()
	return out
}

// healthHost is the Host header of HAProxy's check: the first server's
// SNI, else localhost (control/lib/haproxy).
func healthHost(servers []config.BackendServer) string {
	for _, s := range servers {
		if s.SNI != "" {
			return s.SNI
		}
	}
	return "localhost"
}

// backendCheck does what HAProxy's health check of one server does:
// connect (with the PROXY header and TLS when the server has them), GET
// the health path, read the status.
func backendCheck(ctx context.Context, s config.BackendServer, path, host string) Result {
	name := "backend " + s.Name
	ctx, cancel := context.WithTimeout(ctx, backendWait)
	defer cancel()
	addr, err := resolveBackend(ctx, s.Address)
	if err != nil {
		c := fail(name, fmt.Sprintf("%s: %v", s.Address, err))
		c.Fix = "check backends.servers[].address and this node's DNS"
		return c
	}
	c := Result{Name: name, Address: addr.String()}
	where := addr.String()
	if h, _, _ := net.SplitHostPort(s.Address); h != addr.Addr().String() {
		where = fmt.Sprintf("%s (%s)", s.Address, addr)
	}
	failed := func(detail, fix string) Result {
		c.Status, c.Detail, c.Fix = Fail, where+": "+detail, fix
		return c
	}
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return failed(fmt.Sprintf("TCP connect: %v", unwrapOp(err)), "check that the S3 gateway runs and that this node can route to it")
	}
	defer conn.Close()
	took := time.Since(start)
	c.RTTMillis = toMillis(took)
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if s.ProxyProtocol {
		// A LOCAL header, as HAProxy's check-send-proxy sends: no client
		// addresses, the server answers for itself.
		hdr := []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
		if _, err := conn.Write(hdr); err != nil {
			return failed(fmt.Sprintf("send PROXY header: %v", unwrapOp(err)), "")
		}
	}
	if s.TLS {
		tc := &tls.Config{ServerName: s.SNI, InsecureSkipVerify: s.CAFile == ""}
		if tc.ServerName == "" {
			tc.ServerName = addr.Addr().String()
		}
		if s.CAFile != "" {
			pem, err := os.ReadFile(s.CAFile)
			if err != nil {
				return failed(fmt.Sprintf("read ca_file: %v", err), "correct backends.servers[].ca_file")
			}
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM(pem)
		}
		t := tls.Client(conn, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			return failed(fmt.Sprintf("TLS handshake: %v", err), "check backends.servers[].tls, sni and ca_file against the gateway's certificate")
		}
		conn = t
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ober-test\r\nConnection: close\r\n\r\n", path, host)
	if _, err := conn.Write([]byte(req)); err != nil {
		return failed(fmt.Sprintf("send GET %s: %v", path, unwrapOp(err)), "")
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return failed(fmt.Sprintf("GET %s: no HTTP answer: %v", path, unwrapOp(err)), "check that the address is an S3 gateway speaking HTTP (or set tls: true)")
	}
	resp.Body.Close()
	c.HTTPStatus = resp.StatusCode
	got := fmt.Sprintf("connect %s, GET %s answered %s", fmtRTT(took), path, resp.Status)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 400:
		c.OK, c.Status, c.Detail = true, OK, where+": "+got
	case resp.StatusCode < 500:
		c.OK, c.Status = true, OK
		c.Detail = where + ": " + got + ", which HAProxy's check counts as up (S3 answers anonymous requests with 403)"
	default:
		return failed(got+": HAProxy's check counts it as down (it wants 2xx-4xx)", "check the gateway's health, or set backends.health.path")
	}
	return c
}

// resolveBackend picks the address ober connects to: the literal, or the
// first address of the name, IPv4 before IPv6 and in ascending order
// (the rule of config.Resolve).
func resolveBackend(ctx context.Context, hostport string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: not a number", port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a, uint16(p)), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("does not resolve: %v", err)
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, errors.New("does not resolve: no address")
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int {
		if a.Is4() != b.Is4() {
			if a.Is4() {
				return -1
			}
			return 1
		}
		return a.Compare(b)
	})
	return netip.AddrPortFrom(addrs[0], uint16(p)), nil
}

// unwrapOp drops the "dial tcp A->B: connect:" prefix of a network
// error: the line names the address and the step already.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) && sys.Err != nil {
		err = sys.Err
	}
	return err
}
