// Package handshake bounds the TLS handshake on HAProxy releases that
// have no timeout of their own for it (`timeout client-hs` came in 3.0;
// before, a connection that never finishes its handshake is held for
// `timeout client`, minutes for S3). A Reaper looks at the node's
// connections to its TLS services every quarter of the bound and destroys
// the ones whose server side has sent nothing since they were
// established longer ago than the bound: a server answers a ClientHello
// at once, so such a connection is one whose client never sent a complete
// one, the idle or trickling half of a slowloris.
package handshake

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/ober-ingress/ober/control/lib/sockdiag"
)

// Reaper ends handshakes that last longer than Bound.
type Reaper struct {
	// Bound is how long a connection may go without the server's first
	// answer; read at every look, so that a reload may change it.
	Bound func() time.Duration
	// Services are the VIP:port pairs of the TLS services.
	Services func() map[netip.AddrPort]bool
	Logger   *slog.Logger
	// list and destroy are sockdiag's, replaced in tests.
	list    func() ([]sockdiag.Conn, error)
	destroy func(local, remote netip.AddrPort) error

	reaped atomic.Uint64
}

// Reaped counts the connections ended so far.
func (r *Reaper) Reaped() uint64 { return r.reaped.Load() }

// Run reaps until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	failed := false
	for {
		t := time.NewTimer(max(r.Bound()/4, 100*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := r.Once(); err != nil && !failed {
			// Said once: a kernel without CONFIG_INET_DIAG_DESTROY keeps
			// failing the same way.
			failed = true
			r.Logger.Error("tls handshake bound not enforced", "err", err)
		}
	}
}

// Once looks at the connections once and destroys the stale handshakes.
func (r *Reaper) Once() error {
	list, destroy := r.list, r.destroy
	if list == nil {
		list, destroy = sockdiag.Established, sockdiag.Destroy
	}
	conns, err := list()
	if err != nil {
		return err
	}
	svcs, bound := r.Services(), r.Bound()
	var firstErr error
	for _, c := range conns {
		if !svcs[c.Local] || c.DataSegsOut > 0 || c.SinceSend < bound {
			continue
		}
		if err := destroy(c.Local, c.Remote); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		r.reaped.Add(1)
	}
	return firstErr
}
