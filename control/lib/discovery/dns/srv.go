package dns

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// SRVOptions set up an SRV source.
type SRVOptions struct {
	// Name is _service._proto.domain, _proto being _tcp or _udp, such
	// as _s3._tcp.rgw.example.
	Name string
	// Server is the server to ask; the zero value means the first
	// nameserver of ResolvConf, port 53.
	Server netip.AddrPort
	// ResolvConf is read for the server when Server is zero; default
	// DefaultResolvConf.
	ResolvConf string
	// Protocol is udp (the default; a truncated answer is asked again
	// over tcp) or tcp.
	Protocol string
	// Timeout bounds one Fetch, all of its queries; default
	// DefaultTimeout.
	Timeout time.Duration
}

// SRV is a source of the targets of a name's SRV records.
type SRV struct {
	name string
	res  resolver
}

// NewSRV checks opts and sets up the source.
//
// Each address of each target is a backend with the record's port. The
// record's priority and weight map onto ober's as RFC 2782 means them:
//
//   - Priority: the distinct priorities of the records that give
//     backends, lowest (most preferred) first, are ober's priorities 1,
//     2, 3 and so on; 0, 10, 20 become 1, 2, 3.
//   - Weight: a weight is relative to the others of its priority, so each
//     is scaled by the largest of its priority: round(w × 256 / largest),
//     at least 1. The largest becomes 256; a weight of 0 next to
//     non-zero ones becomes 1, rarely chosen but in rotation (ober's
//     weight 0 would take it out, which RFC 2782's 0 does not mean). When
//     every weight of a priority is 0, all of them are 256: equal, as RFC
//     2782 chooses among them evenly. Every address of a target gets the
//     record's weight.
//
// A record whose target is "." (RFC 2782: the service is decidedly not
// available) gives no backend and no problem; a record with port 0, or
// whose target has no address, is a problem and the others stand. A name
// that does not exist or has no SRV record is a Fetch error.
func NewSRV(opts SRVOptions) (*SRV, error) {
	name, err := checkSRVName(opts.Name)
	if err != nil {
		return nil, err
	}
	res, err := newResolver(opts.Server, opts.ResolvConf, opts.Protocol, opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("srv %s: %w", opts.Name, err)
	}
	return &SRV{name: name, res: res}, nil
}

// checkSRVName returns name as a canonical, fully qualified name if it
// is _service._proto.domain.
func checkSRVName(name string) (string, error) {
	if _, ok := mdns.IsDomainName(name); !ok || name == "" {
		return "", fmt.Errorf("srv name %q: not a domain name", name)
	}
	labels := mdns.SplitDomainName(name)
	switch {
	case len(labels) < 3:
		return "", fmt.Errorf("srv name %q: want _service._proto.domain, such as _s3._tcp.rgw.example", name)
	case len(labels[0]) < 2 || labels[0][0] != '_':
		return "", fmt.Errorf("srv name %q: the first label %q is not _service: want _service._proto.domain, such as _s3._tcp.rgw.example", name, labels[0])
	case !strings.EqualFold(labels[1], "_tcp") && !strings.EqualFold(labels[1], "_udp"):
		return "", fmt.Errorf("srv name %q: the second label %q is not _tcp or _udp: want _service._proto.domain, such as _s3._tcp.rgw.example", name, labels[1])
	}
	return mdns.CanonicalName(name), nil
}

// target is one SRV record and what it resolved to.
type target struct {
	srv   *mdns.SRV
	addrs []netip.Addr
}

// Fetch asks for the SRV records and the addresses of their targets.
func (s *SRV) Fetch(ctx context.Context) (discovery.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.res.timeout)
	defer cancel()
	server, err := s.res.serverAddr()
	if err != nil {
		return discovery.Result{}, fmt.Errorf("srv %s: %w", s.name, err)
	}
	in, err := s.res.query(ctx, server, s.name, mdns.TypeSRV)
	if err != nil {
		return discovery.Result{}, fmt.Errorf("srv %s: %w", s.name, err)
	}
	var res discovery.Result
	var targets []*target
	records := 0
	for _, rr := range in.Answer {
		srv, ok := rr.(*mdns.SRV)
		if !ok {
			continue
		}
		records++
		switch {
		case srv.Target == ".":
		case srv.Port == 0:
			res.Problems = append(res.Problems, recordName(srv)+": port 0 refused")
		default:
			targets = append(targets, &target{srv: srv})
		}
	}
	if records == 0 {
		return discovery.Result{}, fmt.Errorf("srv %s at %s: no SRV records", s.name, server)
	}
	if len(targets) > discovery.MaxBackends {
		return discovery.Result{}, fmt.Errorf("srv %s at %s: %d records, more than %d", s.name, server, len(targets), discovery.MaxBackends)
	}
	if err := s.resolveTargets(ctx, server, in.Extra, targets); err != nil {
		return discovery.Result{}, fmt.Errorf("srv %s: %w", s.name, err)
	}
	backends, problems := srvBackends(targets)
	res.Backends = backends
	res.Problems = append(res.Problems, problems...)
	if len(res.Backends) > discovery.MaxBackends {
		return discovery.Result{}, fmt.Errorf("srv %s at %s: %d backends, more than %d", s.name, server, len(res.Backends), discovery.MaxBackends)
	}
	return res, nil
}

// recordName names a record in a problem.
func recordName(srv *mdns.SRV) string {
	return fmt.Sprintf("SRV %s port %d (priority %d, weight %d)", srv.Target, srv.Port, srv.Priority, srv.Weight)
}

// resolveTargets fills in each target's addresses: from the additional
// section when it holds any for the target, else by asking for A and
// AAAA, a few targets at a time.
func (s *SRV) resolveTargets(ctx context.Context, server string, extra []mdns.RR, targets []*target) error {
	var ask []string
	for _, t := range targets {
		t.addrs = addrsOf(extra, t.srv.Target)
		if len(t.addrs) == 0 && !slices.Contains(ask, strings.ToLower(t.srv.Target)) {
			ask = append(ask, strings.ToLower(t.srv.Target))
		}
	}
	if len(ask) == 0 {
		return nil
	}
	found := make(map[string][]netip.Addr, len(ask))
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, lookupParallel)
	for _, name := range ask {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			addrs, _, err := s.res.lookupAddrs(ctx, server, name)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = cmp.Or(firstErr, err)
				return
			}
			found[name] = addrs
		})
	}
	wg.Wait()
	if firstErr != nil {
		// A target that could not be asked about is not a target
		// without addresses: leaving it out would shrink the pool
		// on a lost packet.
		return fmt.Errorf("look up a target: %w", firstErr)
	}
	for _, t := range targets {
		if len(t.addrs) == 0 {
			t.addrs = found[strings.ToLower(t.srv.Target)]
		}
	}
	return nil
}

// srvBackends maps the resolved targets onto backends, as NewSRV says.
func srvBackends(targets []*target) ([]discovery.Backend, []string) {
	var problems []string
	var usable []*target
	for _, t := range targets {
		if len(t.addrs) == 0 {
			problems = append(problems, fmt.Sprintf("%s: %s has no A or AAAA record", recordName(t.srv), t.srv.Target))
			continue
		}
		usable = append(usable, t)
	}
	// Each address of the best priority first, so that an address two
	// records name is kept at its best priority.
	slices.SortStableFunc(usable, func(a, b *target) int { return cmp.Compare(a.srv.Priority, b.srv.Priority) })
	var backends []discovery.Backend
	seen := map[string]string{}
	tier := 0
	for i := 0; i < len(usable); {
		j := i
		var largest uint16
		for j < len(usable) && usable[j].srv.Priority == usable[i].srv.Priority {
			largest = max(largest, usable[j].srv.Weight)
			j++
		}
		tier++
		for _, t := range usable[i:j] {
			weight := scaleWeight(t.srv.Weight, largest)
			for _, a := range t.addrs {
				b := discovery.Backend{Host: a.String(), Port: t.srv.Port, Weight: weight, Priority: tier}
				if by, dup := seen[b.ID()]; dup {
					if by != recordName(t.srv) {
						problems = append(problems, fmt.Sprintf("%s: %s is given already by %s", recordName(t.srv), b.ID(), by))
					}
					continue
				}
				seen[b.ID()] = recordName(t.srv)
				backends = append(backends, b)
			}
		}
		i = j
	}
	// DNS servers rotate the order of records; a stable order keeps
	// the runner's comparisons and logs quiet.
	slices.SortFunc(backends, func(a, b discovery.Backend) int {
		aa, _ := a.Addr()
		ba, _ := b.Addr()
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), aa.Compare(ba), cmp.Compare(a.Port, b.Port))
	})
	return backends, problems
}

// scaleWeight maps an RFC 2782 weight onto ober's 1-256, relative to
// the largest weight of its priority, as NewSRV says.
func scaleWeight(w, largest uint16) int {
	if largest == 0 {
		return discovery.MaxWeight
	}
	scaled := (int(w)*discovery.MaxWeight + int(largest)/2) / int(largest)
	return max(scaled, 1)
}
