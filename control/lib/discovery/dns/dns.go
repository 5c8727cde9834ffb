// Package dns finds backends in the DNS: SRV records (NewSRV), whose
// priorities and weights become the backends' priorities and weights,
// and the A/AAAA records of one name with a fixed port (NewHost).
//
// Each source asks one server, by default the first nameserver of
// /etc/resolv.conf, and nothing else: no search list, no fallback to
// other servers, no cache. The runner polls on its interval, and a
// failed fetch is an error so that its failpolicy decides, rather than
// this package guessing from a second server.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// DefaultTimeout bounds one Fetch, all of its queries together, when
// the options give none.
const DefaultTimeout = 5 * time.Second

// DefaultResolvConf is where the server to ask is read from when the
// options name none.
const DefaultResolvConf = "/etc/resolv.conf"

// ednsSize is the UDP payload size advertised, the size the DNS flag day
// 2020 settled on: large enough for most SRV answers with their
// additional section, small enough not to be fragmented.
const ednsSize = 1232

// lookupParallel is how many targets are looked up at once, so that a
// name with hundreds of targets and no additional section is neither
// asked one target at a time nor all at once.
const lookupParallel = 8

// errNXDOMAIN is the answer that a name does not exist.
var errNXDOMAIN = errors.New("NXDOMAIN (no such name)")

// resolver is what both sources share: where to ask, how, and for how
// long.
type resolver struct {
	server     netip.AddrPort
	resolvConf string
	proto      string
	timeout    time.Duration
}

func newResolver(server netip.AddrPort, resolvConf, proto string, timeout time.Duration) (resolver, error) {
	r := resolver{server: server, resolvConf: resolvConf, proto: proto, timeout: timeout}
	switch proto {
	case "":
		r.proto = "udp"
	case "udp", "tcp":
	default:
		return r, fmt.Errorf("protocol %q: want udp or tcp", proto)
	}
	switch {
	case timeout < 0:
		return r, fmt.Errorf("timeout %s: must not be negative", timeout)
	case timeout == 0:
		r.timeout = DefaultTimeout
	}
	if server.IsValid() {
		if server.Port() == 0 {
			return r, fmt.Errorf("server %s: port 0", server)
		}
		return r, nil
	}
	if r.resolvConf == "" {
		r.resolvConf = DefaultResolvConf
	}
	// Read now so that a machine without a nameserver is refused when
	// the source is set up; Fetch reads it again, as it may change.
	_, err := r.serverAddr()
	return r, err
}

// serverAddr is the server to ask, host:port.
func (r resolver) serverAddr() (string, error) {
	if r.server.IsValid() {
		return r.server.String(), nil
	}
	cc, err := mdns.ClientConfigFromFile(r.resolvConf)
	if err != nil {
		return "", fmt.Errorf("read the nameserver from %s: %w", r.resolvConf, err)
	}
	if len(cc.Servers) == 0 {
		return "", fmt.Errorf("read the nameserver from %s: no nameserver line", r.resolvConf)
	}
	a, err := netip.ParseAddr(cc.Servers[0])
	if err != nil {
		return "", fmt.Errorf("nameserver %q in %s: %w", cc.Servers[0], r.resolvConf, err)
	}
	return net.JoinHostPort(a.String(), cc.Port), nil
}

// query asks server for name's records of qtype. A truncated answer
// over udp is asked again over tcp. An answer other than NOERROR is an
// error (errNXDOMAIN for NXDOMAIN).
func (r resolver) query(ctx context.Context, server, name string, qtype uint16) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	// The server is normally a resolver, which must recurse for us.
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)
	what := mdns.TypeToString[qtype] + " " + name
	proto := r.proto
	in, err := exchange(ctx, proto, m, server)
	if err == nil && in.Truncated && proto == "udp" {
		proto = "tcp"
		in, err = exchange(ctx, proto, m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("ask %s for %s over %s: %w", server, what, proto, err)
	}
	if in.Truncated {
		return nil, fmt.Errorf("ask %s for %s over %s: the answer is truncated", server, what, proto)
	}
	if len(in.Question) != 1 || in.Question[0].Qtype != qtype || !strings.EqualFold(in.Question[0].Name, name) {
		return nil, fmt.Errorf("ask %s for %s over %s: the answer is for another question", server, what, proto)
	}
	switch in.Rcode {
	case mdns.RcodeSuccess:
		return in, nil
	case mdns.RcodeNameError:
		return in, fmt.Errorf("%s at %s: %w", what, server, errNXDOMAIN)
	default:
		return nil, fmt.Errorf("%s at %s: the server answered %s", what, server, rcodeString(in.Rcode))
	}
}

func rcodeString(rc int) string {
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return "rcode " + strconv.Itoa(rc)
}

// exchange sends m once over proto. It closes the connection when ctx
// is cancelled, not only at its deadline, so that a runner stopping
// does not wait out the timeout.
func exchange(ctx context.Context, proto string, m *mdns.Msg, server string) (*mdns.Msg, error) {
	c := &mdns.Client{Net: proto}
	if d, ok := ctx.Deadline(); ok {
		// The client's own timeouts (2 s each) would otherwise cut
		// a longer deadline short.
		c.Timeout = time.Until(d)
	}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	in, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// The socket's deadline is the context's and may fire a
		// moment before it: the same timeout, said the same way.
		var ne net.Error
		if d, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(d) {
			return nil, fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
	}
	return in, err
}

// lookupAddrs asks for name's A and AAAA records. A name without
// addresses gives none and no error (nx says whether it is because the
// name does not exist); a failed query is an error.
func (r resolver) lookupAddrs(ctx context.Context, server, name string) (addrs []netip.Addr, nx bool, err error) {
	type answer struct {
		addrs []netip.Addr
		nx    bool
		err   error
	}
	qtypes := []uint16{mdns.TypeA, mdns.TypeAAAA}
	answers := make([]answer, len(qtypes))
	var wg sync.WaitGroup
	for i, qt := range qtypes {
		wg.Go(func() {
			in, err := r.query(ctx, server, name, qt)
			switch {
			case errors.Is(err, errNXDOMAIN):
				answers[i].nx = true
			case err != nil:
				answers[i].err = err
			default:
				answers[i].addrs = addrsOf(in.Answer, "")
			}
		})
	}
	wg.Wait()
	nx = true
	for _, a := range answers {
		if a.err != nil {
			return nil, false, a.err
		}
		addrs = append(addrs, a.addrs...)
		nx = nx && a.nx
	}
	return addrs, nx, nil
}

// addrsOf is the addresses in rrs, of owner name only unless name is
// empty (an answer to an A query may start with the CNAME chain to the
// name that holds the address).
func addrsOf(rrs []mdns.RR, name string) []netip.Addr {
	var addrs []netip.Addr
	for _, rr := range rrs {
		if name != "" && !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		var ip net.IP
		switch rr := rr.(type) {
		case *mdns.A:
			ip = rr.A
		case *mdns.AAAA:
			ip = rr.AAAA
		default:
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	return addrs
}
