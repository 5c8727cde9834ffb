package txwatch

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/vishvananda/netlink"
)

// Read takes iface's transmit counters by netlink, in the calling
// thread's network namespace.
func Read(iface string) (Counters, error) {
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return Counters{}, fmt.Errorf("link %s: %w", iface, err)
	}
	a := l.Attrs()
	c := Counters{
		// Unknown is what drivers without carrier reporting say (and
		// lo); only a link administratively up is expected to send.
		Up: a.Flags&net.FlagUp != 0 && (a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown),
	}
	if st := a.Statistics; st != nil {
		c.Packets, c.Dropped, c.Errors = st.TxPackets, st.TxDropped, st.TxErrors
	}
	// The root qdisc's counters cover its children (mq sums its
	// queues'): a stopped queue behind a qdisc fills it and then drops
	// there, not in the driver.
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return c, fmt.Errorf("qdiscs of %s: %w", iface, err)
	}
	for _, q := range qs {
		qa := q.Attrs()
		if qa.Parent != netlink.HANDLE_ROOT || qa.Statistics == nil || qa.Statistics.Queue == nil {
			continue
		}
		c.Dropped += uint64(qa.Statistics.Queue.Drops)
		c.Queued = uint64(qa.Statistics.Queue.Qlen)
	}
	return c, nil
}

// Run samples the links ifaces names every interval until ctx ends, and
// logs each change of verdict. A link that cannot be read is skipped
// (doctor and status name a missing interface on their own).
func (w *Watch) Run(ctx context.Context, every time.Duration, ifaces func() []string, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		names := ifaces()
		w.Forget(names)
		for _, name := range names {
			c, err := Read(name)
			if err != nil {
				continue
			}
			st, changed := w.Observe(name, time.Now(), c)
			switch {
			case !changed:
			case st.Transmit == Stalled:
				log.Warn("link cannot transmit", "iface", name, "reason", st.Reason)
			default:
				log.Info("link transmit state", "iface", name, "transmit", st.Transmit)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
