// Package consul finds a pool's backends in Consul and registers ober's
// own services there. It is a thin layer over the official client,
// github.com/hashicorp/consul/api: a Source asks the health endpoint for a
// service's instances and waits for a change with Consul's blocking
// queries; an Agent registers and deregisters services in the local
// agent. Settings the options leave empty fall back to the client's own
// (its CONSUL_HTTP_* environment variables included).
package consul

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/hashicorp/consul/api"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

const (
	// DefaultAddress is the local agent's HTTP API.
	DefaultAddress = "127.0.0.1:8500"
	// DefaultTimeout bounds one request that is not a blocking query.
	DefaultTimeout = 5 * time.Second
	// BlockingWait is how long one blocking query may hang, Consul's own
	// default: the longer, the fewer idle requests.
	BlockingWait = 5 * time.Minute

	// minRequery is the least time between two blocking queries that saw
	// no change, so that an agent (or a proxy before it) that answers at
	// once instead of blocking cannot turn Wait into a busy loop.
	minRequery = time.Second
	// maxTokenBytes bounds the token file: an ACL token is a UUID.
	maxTokenBytes = 4096
)

// Options set up a Source.
type Options struct {
	// Address is the agent, host:port or a URL (http://, https://,
	// unix://); default DefaultAddress.
	Address string
	// Service is the Consul service whose instances are the backends.
	Service string
	// Tag, when set, keeps the instances that carry it.
	Tag string
	// Datacenter to ask; default the agent's own.
	Datacenter string
	// PassingOnly keeps the instances all of whose checks pass. Without
	// it every registered instance is a backend, whatever its checks
	// say, and ober's own health checks judge it.
	PassingOnly bool
	// TokenFile holds the ACL token, read once by New. It must be a
	// regular file that neither group nor others may read (mode 0600).
	TokenFile string
	// Timeout bounds one Fetch; default DefaultTimeout.
	Timeout time.Duration
}

// Source is a Consul service's instances. It is a discovery.Waiter.
type Source struct {
	client      *api.Client
	addr        string
	service     string
	tag         string
	dc          string
	passingOnly bool
	timeout     time.Duration
	// waitTime is BlockingWait; tests shorten it.
	waitTime time.Duration

	mu sync.Mutex
	// index is the X-Consul-Index last seen, 0 for none: a Wait blocks
	// until the service's index moves past it.
	index uint64
}

var _ discovery.Waiter = (*Source)(nil)

// New checks opts, reads the token file and sets up the source. It does
// not reach the agent: an agent that is down is a Fetch error.
//
// Each instance is a backend: Host is the service's address, or its
// node's address when the service has none (as Consul's DNS interface
// answers); Port is the service's port. An instance without either is a
// problem that names it, and the others stand.
//
// Weight comes from the instance's Weights.Passing (1 when not set,
// Consul's default). Consul's weights, 1-65535, are relative like RFC
// 2782's, so each is scaled by the largest of the fetch: round(w × 256 /
// largest), at least 1. The largest becomes 256, and instances that all
// have the default weight are all 256, equal. Priority is left unset:
// Consul has none.
func New(opts Options) (*Source, error) {
	if err := checkName(opts.Service); err != nil {
		return nil, fmt.Errorf("consul service %q: %w", opts.Service, err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	client, addr, err := newClient(opts.Address, opts.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("consul service %q: %w", opts.Service, err)
	}
	return &Source{
		client:      client,
		addr:        addr,
		service:     opts.Service,
		tag:         opts.Tag,
		dc:          opts.Datacenter,
		passingOnly: opts.PassingOnly,
		timeout:     timeout,
		waitTime:    BlockingWait,
	}, nil
}

// checkName refuses a service name or ID that the client would put into
// a URL path wrongly: the client does not escape a slash.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case strings.Contains(name, "/"):
		return errors.New("contains a slash")
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return errors.New("contains a space or a control character")
	}
	return nil
}

// newClient makes a client of the agent at address (default
// DefaultAddress) with the token in tokenFile, and returns the address
// for error messages.
func newClient(address, tokenFile string) (*api.Client, string, error) {
	if address == "" {
		address = DefaultAddress
	}
	cfg := &api.Config{Address: address}
	if tokenFile != "" {
		token, err := readToken(tokenFile)
		if err != nil {
			return nil, "", err
		}
		cfg.Token = token
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("agent address %q: %w", address, err)
	}
	return client, address, nil
}

// readToken reads an ACL token from path, refusing a file that others
// could read: the token is a credential.
func readToken(path string) (string, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("token file %s: %s", path, fmt.Sprintf(format, args...))
	}
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fail("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fail("%v", err)
	}
	if !st.Mode().IsRegular() {
		return "", fail("not a regular file")
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fail("mode %04o lets group or others read the token: chmod 600 it", perm)
	}
	// A token someone else could have planted is not ours to send.
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if uid := int(sys.Uid); uid != 0 && uid != os.Geteuid() {
			return "", fail("owned by uid %d: want root or uid %d, the user ober runs as", uid, os.Geteuid())
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fail("%v", err)
	}
	if len(data) > maxTokenBytes {
		return "", fail("larger than %d bytes", maxTokenBytes)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fail("empty")
	}
	return token, nil
}

// Fetch asks the agent for the service's instances once.
func (s *Source) Fetch(ctx context.Context) (discovery.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	entries, meta, err := s.query(ctx, 0, 0)
	if err != nil {
		return discovery.Result{}, err
	}
	// Kept even when the answer is refused below: Wait should still wake
	// when the service changes.
	s.setIndex(saneIndex(meta.LastIndex))
	if len(entries) > discovery.MaxBackends {
		return discovery.Result{}, fmt.Errorf("consul at %s: service %q: %d instances, more than %d", s.addr, s.service, len(entries), discovery.MaxBackends)
	}
	return backends(entries), nil
}

// Wait returns when the service's index moves past the last one seen by
// Fetch or Wait: a change of an instance, its checks or its node; before
// any, it returns at once. Consul does not promise that a new index means
// a changed answer, so a Wait may return for nothing. A blocking query
// that ends without a change is asked again, at most once per minRequery.
func (s *Source) Wait(ctx context.Context) error {
	for {
		last := s.lastIndex()
		start := time.Now()
		// Consul adds up to wait/16 to spread the wake-ups; the rest is
		// for the answer to arrive.
		qctx, cancel := context.WithTimeout(ctx, s.waitTime+s.waitTime/16+s.timeout)
		_, meta, err := s.query(qctx, last, s.waitTime)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		next := saneIndex(meta.LastIndex)
		switch {
		case next < last:
			// Consul's indexes can go backwards (a snapshot restored, an
			// upgrade). Blocking on the old, higher one would miss every
			// change until the index caught up again, so start over from
			// 0, as Consul's documentation asks; the runner's Fetch sets
			// the new index.
			s.setIndex(0)
			return nil
		case next != last:
			s.setIndex(next)
			return nil
		}
		if err := sleep(ctx, minRequery-time.Since(start)); err != nil {
			return err
		}
	}
}

// query asks for the service's instances, blocking while the index is
// still index when that is not 0.
func (s *Source) query(ctx context.Context, index uint64, wait time.Duration) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	q := &api.QueryOptions{Datacenter: s.dc, WaitIndex: index, WaitTime: wait}
	entries, meta, err := s.client.Health().Service(s.service, s.tag, s.passingOnly, q.WithContext(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("consul at %s: instances of service %q: %w", s.addr, s.service, err)
	}
	return entries, meta, nil
}

// saneIndex turns an index of 0 into 1. Consul should never answer 0, but
// some versions did; waiting on index 0 does not block, so a client that
// kept it would ask in a busy loop. Waiting on 1 is always safe.
func saneIndex(i uint64) uint64 { return max(i, 1) }

func (s *Source) lastIndex() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.index
}

func (s *Source) setIndex(i uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index = i
}

// sleep waits for d, or returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backends turns the instances into backends, with problems for the
// instances that cannot be one (see New).
func backends(entries []*api.ServiceEntry) discovery.Result {
	type found struct {
		b      discovery.Backend
		weight int
		name   string
	}
	var (
		res     discovery.Result
		kept    []found
		largest = 1
		seen    = make(map[string]string, len(entries))
	)
	for _, e := range entries {
		if e == nil || e.Service == nil {
			res.Problems = append(res.Problems, "an instance without a service")
			continue
		}
		name := instanceName(e)
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		port := e.Service.Port
		switch {
		case host == "":
			res.Problems = append(res.Problems, name+": no address (neither the service's nor its node's)")
			continue
		case port == 0:
			res.Problems = append(res.Problems, name+": port 0")
			continue
		case port < 0 || port > math.MaxUint16:
			res.Problems = append(res.Problems, fmt.Sprintf("%s: port %d out of range", name, port))
			continue
		}
		b := discovery.Backend{Host: host, Port: uint16(port)}
		if other, dup := seen[b.ID()]; dup {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: %s is also %s", name, b.ID(), other))
			continue
		}
		seen[b.ID()] = name
		w := max(e.Service.Weights.Passing, 1)
		largest = max(largest, w)
		kept = append(kept, found{b: b, weight: w, name: name})
	}
	res.Backends = make([]discovery.Backend, 0, len(kept))
	for _, k := range kept {
		k.b.Weight = scaleWeight(k.weight, largest)
		res.Backends = append(res.Backends, k.b)
	}
	return res
}

// scaleWeight maps w, 1..largest, onto 1..MaxWeight (see New).
func scaleWeight(w, largest int) int {
	// In floating point: an agent gone wrong could give a weight whose
	// product with MaxWeight overflows an int.
	scaled := int(math.Round(float64(w) * discovery.MaxWeight / float64(largest)))
	return min(max(scaled, 1), discovery.MaxWeight)
}

// instanceName names an instance in a problem: its ID, its node and
// whatever address it has, so that an operator finds it in Consul.
func instanceName(e *api.ServiceEntry) string {
	node, nodeAddr := "", ""
	if e.Node != nil {
		node, nodeAddr = e.Node.Node, e.Node.Address
	}
	return fmt.Sprintf("instance %q of node %q (%s)", e.Service.ID, node, cmp.Or(e.Service.Address, nodeAddr, "no address"))
}
