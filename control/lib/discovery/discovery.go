// Package discovery is what every source of backends has in common: the
// backend a source finds, the bounds on what a source may return, and
// the Source a runner polls (or waits on, for the kinds that can tell a
// change at once). Each kind lives in a package of its own below this
// one (dns for kinds srv and dns, file, httpsrc, exec, consul); none of
// them knows about ober's configuration or plan.
package discovery

import (
	"context"
	"net"
	"net/netip"
	"strconv"
)

// Bounds on what one fetch may return: a source gone wrong (a file of a
// million lines, an endless HTTP body) is refused with an error that says
// which bound, never read whole.
const (
	// MaxBackends is the most backends one source may name.
	MaxBackends = 4096
	// MaxBytes is the most a file, a command's output or an HTTP body
	// may hold.
	MaxBytes = 4 << 20
	// MaxWeight is ober's highest weight; a source's weight above it is
	// refused (a record, a line), never silently clamped.
	MaxWeight = 256
)

// Backend is one backend a source found.
type Backend struct {
	// Host is what the source named: an IP address, or a host name that
	// the source did not resolve (file, exec and http sources may give
	// names; the runner resolves them).
	Host string
	// Port is never 0: a source that gives port 0 is refused.
	Port uint16
	// Weight is 0-MaxWeight, or -1 when the source gave none (the pool's
	// default applies).
	Weight int
	// Priority is 1 (best) and up, or 0 when the source gave none.
	Priority int
}

// ID is the backend's identity, host:port: what an operator's drain or
// weight is kept under, so that it applies again when the backend comes
// back.
func (b Backend) ID() string { return net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))) }

// Addr is the backend's address when Host is an IP address.
func (b Backend) Addr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(b.Host)
	return a.Unmap(), err == nil
}

// Result is one fetch: the backends found, and the entries refused with
// why (a line number, a record), which leave the rest standing.
type Result struct {
	Backends []Backend
	// Problems name each refused entry, such as `line 3: "10.0.0.1:0":
	// port 0`. A fetch with problems still succeeded.
	Problems []string
}

// Source is one kind of discovery, set up for one pool.
type Source interface {
	// Fetch asks the source once. An error is a failed fetch (the runner
	// keeps the last backends or empties the pool, as its failpolicy
	// says); refused entries are Result.Problems, not an error.
	Fetch(ctx context.Context) (Result, error)
}

// Waiter is a Source that can tell a change before the next interval:
// a file's inotify, Consul's blocking query.
type Waiter interface {
	Source
	// Wait returns when the source may have changed since the last
	// Fetch, or with ctx's error. The runner fetches again on its
	// interval all the same, in case a notification was lost.
	Wait(ctx context.Context) error
}
