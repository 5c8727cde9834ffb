package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/ober-ingress/ober/control/api"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/control/runtime/tickets"
)

// ticketSeed is what p's session ticket keys derive from: the configured
// key_file's secret (shared: the site's nodes have the same), else the
// node's own, made on its first start and kept on node.runtime_dir so
// that a restart keeps the sessions resumable. Nil when p renders no
// ticket keys.
func ticketSeed(p *plan.NodePlan) (seed []byte, shared bool, err error) {
	if p.TicketKeys == "" {
		return nil, false, nil
	}
	st := p.Config.TLS.SessionTickets
	if st.KeyFile != "" {
		k, err := config.ReadSharedKey(st.KeyFile)
		if err != nil {
			return nil, false, fmt.Errorf("tls.session_tickets.key_file: %q: %w", st.KeyFile, err)
		}
		return k, true, nil
	}
	path := st.SeedFile(p.Config.Node.RuntimeDir)
	if err := handoff.NewKeyFile(path); err != nil {
		return nil, false, fmt.Errorf("tls session tickets: the node's seed %s: %w", path, err)
	}
	k, err := config.ReadSharedKey(path)
	if err != nil {
		return nil, false, fmt.Errorf("tls session tickets: the node's seed %s: %w", path, err)
	}
	return k, false, nil
}

// startTickets writes p's ticket keys, which its first instances load,
// and keeps every instance on the current epoch's until ctx ends.
func (d *Daemon) startTickets(ctx context.Context, p *plan.NodePlan) error {
	d.tickets = tickets.New(tickets.Options{
		File:      plan.TicketKeysFile(p.Config.Node.RuntimeDir),
		Instances: d.ticketInstances,
		Logger:    d.log.With("part", "tickets"),
	})
	seed, shared, err := ticketSeed(p)
	if err != nil {
		return err
	}
	if err := d.setTickets(p, seed, shared); err != nil {
		return err
	}
	go d.tickets.Run(ctx)
	return nil
}

// setTickets gives the rotator p's seed and period, or stops it.
func (d *Daemon) setTickets(p *plan.NodePlan, seed []byte, shared bool) error {
	if seed == nil {
		d.tickets.Off()
		return nil
	}
	if err := d.tickets.Set(seed, p.Config.TLS.SessionTickets.Rotate.Duration, shared); err != nil {
		return fmt.Errorf("tls session tickets: %w", err)
	}
	d.tickets.Kick()
	return nil
}

// ticketInstances are the runtime sockets of the serving instances
// when they load ticket keys.
func (d *Daemon) ticketInstances() []string {
	if p := d.plan(); p == nil || p.TicketKeys == "" || d.sup == nil {
		return nil
	}
	var out []string
	for _, in := range d.sup.Live() {
		out = append(out, in.Socket)
	}
	return out
}

// ticketStatus is the rotator's state for /status; nil while tickets are
// off.
func (d *Daemon) ticketStatus() *api.TicketStatus {
	if d.tickets == nil {
		return nil
	}
	st := d.tickets.Status()
	if st.Period == 0 {
		return nil
	}
	return &api.TicketStatus{
		Epoch: st.Epoch, RotateSeconds: int64(st.Period / time.Second), NextRotation: st.Next.UTC(),
		Shared: st.Shared, Rotations: st.Rotations, PushFailures: st.Failures,
	}
}
