package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// Bounds on one Ask, so that a wrong argument cannot turn a test into a
// flood or exhaust the namespace's ports.
const (
	MaxQueries = 1_000_000
	MaxPorts   = 4096
)

// answerBuf holds the largest answer taken: a plain UDP DNS answer is at
// most 512 bytes, and ours are far smaller.
const answerBuf = 2048

// errLost marks a query that got no answer in time.
var errLost = errors.New("no answer")

// Tally is what Ask saw. When Ask returns no error each query is counted
// exactly once: in ByBackend, Lost or Errors.
type Tally struct {
	// ByBackend counts the answers per backend name.
	ByBackend map[string]int
	// Lost counts the queries that got no answer within the timeout,
	// which is also how a query to a dead server or a dropped packet
	// ends: the sockets are unconnected, so ICMP errors do not surface.
	Lost int
	// Errors counts the queries answered wrongly (from another address
	// than the one asked, not NOERROR, naming no backend, unparsable) or
	// that could not be sent.
	Errors int
	// FirstError describes the first of Errors, for failure messages.
	FirstError string
	// PerPort counts the answers per client source port and backend. A
	// source port is one flow to the server, so a service that keeps
	// flows on their backend shows one backend per port.
	PerPort map[uint16]map[string]int
}

func newTally() Tally {
	return Tally{ByBackend: map[string]int{}, PerPort: map[uint16]map[string]int{}}
}

// Answered is the number of queries some backend answered.
func (t Tally) Answered() int {
	sum := 0
	for _, c := range t.ByBackend {
		sum += c
	}
	return sum
}

// MixedPorts lists, in order, the source ports that more than one backend
// answered: flows that did not stay on their backend.
func (t Tally) MixedPorts() []uint16 {
	var mixed []uint16
	for port, backends := range t.PerPort {
		if len(backends) > 1 {
			mixed = append(mixed, port)
		}
	}
	slices.Sort(mixed)
	return mixed
}

func (t *Tally) add(o Tally) {
	for b, c := range o.ByBackend {
		t.ByBackend[b] += c
	}
	t.Lost += o.Lost
	t.Errors += o.Errors
	if t.FirstError == "" {
		t.FirstError = o.FirstError
	}
	for port, backends := range o.PerPort {
		if t.PerPort[port] == nil {
			t.PerPort[port] = map[string]int{}
		}
		for b, c := range backends {
			t.PerPort[port][b] += c
		}
	}
}

// Ask sends n TXT queries for QName to server and tallies the answers. It
// opens ports UDP sockets, each on its own ephemeral source port, inside
// ns, or in the calling thread's namespace when ns is nil; each socket
// sends its share of n queries one after another, waiting up to timeout
// for each answer, and all sockets run at once. It therefore takes at
// most about ceil(n/ports) × timeout.
//
// An error means the sockets could not be opened or ctx ended; the tally
// then holds what was counted until then.
func Ask(ctx context.Context, ns *netnstest.NS, server netip.AddrPort, n, ports int, timeout time.Duration) (Tally, error) {
	total := newTally()
	switch {
	case n < 1 || n > MaxQueries:
		return total, fmt.Errorf("ask %s: %d queries, want 1 to %d", server, n, MaxQueries)
	case ports < 1 || ports > min(n, MaxPorts):
		return total, fmt.Errorf("ask %s: %d source ports for %d queries, want 1 to %d", server, ports, n, min(n, MaxPorts))
	case timeout <= 0:
		return total, fmt.Errorf("ask %s: timeout %v, want more than 0", server, timeout)
	case !server.IsValid() || server.Port() == 0:
		return total, fmt.Errorf("ask %v: want an address and a port", server)
	}
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	network := "udp4"
	if server.Addr().Is6() {
		network = "udp6"
	}
	conns, err := openSockets(ns, network, ports)
	if err != nil {
		return total, fmt.Errorf("ask %s: %w", server, err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	tallies := make([]Tally, ports)
	var wg sync.WaitGroup
	for i, c := range conns {
		share := n / ports
		if i < n%ports {
			share++
		}
		wg.Go(func() { tallies[i] = askOn(ctx, c, server, share, timeout) })
	}
	wg.Wait()
	for _, t := range tallies {
		total.add(t)
	}
	if err := ctx.Err(); err != nil {
		return total, fmt.Errorf("ask %s: %w", server, err)
	}
	return total, nil
}

// openSockets opens the sockets where the queries are to come from; they
// stay in that namespace whichever thread uses them later.
func openSockets(ns *netnstest.NS, network string, ports int) ([]*net.UDPConn, error) {
	conns := make([]*net.UDPConn, 0, ports)
	open := func() error {
		for range ports {
			c, err := net.ListenUDP(network, nil)
			if err != nil {
				return fmt.Errorf("open source port %d of %d: %w", len(conns)+1, ports, err)
			}
			conns = append(conns, c)
		}
		return nil
	}
	var err error
	if ns == nil {
		err = open()
	} else {
		err = ns.Do(open)
	}
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	return conns, nil
}

// askOn sends n queries on c, one at a time.
func askOn(ctx context.Context, c *net.UDPConn, server netip.AddrPort, n int, timeout time.Duration) Tally {
	t := newTally()
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	// Wakes a read blocked on an answer when ctx ends; exchange checks
	// ctx after setting its own deadline, so none is missed.
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, answerBuf)
	for i := range n {
		backend, err := exchange(ctx, c, server, uint16(i), timeout, buf)
		switch {
		case ctx.Err() != nil:
			return t // the query was cut short, not lost
		case errors.Is(err, errLost):
			t.Lost++
		case err != nil:
			t.Errors++
			if t.FirstError == "" {
				t.FirstError = fmt.Sprintf("source port %d: %v", port, err)
			}
		default:
			t.ByBackend[backend]++
			if t.PerPort[port] == nil {
				t.PerPort[port] = map[string]int{}
			}
			t.PerPort[port][backend]++
		}
	}
	return t
}

// exchange sends one query and returns the backend its answer names.
func exchange(ctx context.Context, c *net.UDPConn, server netip.AddrPort, id uint16, timeout time.Duration, buf []byte) (string, error) {
	q := new(dns.Msg).SetQuestion(QName, dns.TypeTXT)
	q.Id = id
	wire, err := q.Pack()
	if err != nil {
		return "", fmt.Errorf("pack query %d: %w", id, err)
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", fmt.Errorf("set deadline of query %d: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if _, err := c.WriteToUDPAddrPort(wire, server); err != nil {
		return "", fmt.Errorf("send query %d: %w", id, err)
	}
	for {
		size, from, err := c.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "", errLost
		}
		if err != nil {
			return "", fmt.Errorf("read answer to query %d: %w", id, err)
		}
		var r dns.Msg
		if err := r.Unpack(buf[:size]); err != nil {
			return "", fmt.Errorf("unpack answer to query %d from %s: %w", id, from, err)
		}
		if r.Id != id {
			continue // a late answer to an earlier query, counted lost already
		}
		if got := netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); got != server {
			return "", fmt.Errorf("answer to query %d came from %s, not %s", id, got, server)
		}
		return backendOf(&r)
	}
}

// backendOf reads the backend name out of an answer to the TXT query.
func backendOf(r *dns.Msg) (string, error) {
	if !r.Response {
		return "", fmt.Errorf("message %d is not a response", r.Id)
	}
	if r.Rcode != dns.RcodeSuccess {
		return "", fmt.Errorf("answer %d: %s", r.Id, dns.RcodeToString[r.Rcode])
	}
	for _, rr := range r.Answer {
		txt, ok := rr.(*dns.TXT)
		if !ok || !strings.EqualFold(txt.Hdr.Name, QName) {
			continue
		}
		if name, ok := strings.CutPrefix(strings.Join(txt.Txt, ""), txtPrefix); ok && name != "" {
			return name, nil
		}
	}
	return "", fmt.Errorf("answer %d has no TXT %q for %s: %v", r.Id, txtPrefix+"<name>", QName, r.Answer)
}
