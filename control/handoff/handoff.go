// Package handoff tells the other ober nodes when this one drains, so
// that they forward the draining node's connections back to it.
//
// When a node withdraws its routes, the routers rehash its established
// connections onto the other nodes, whose kernels would answer them with
// a RST. With handoff, the dataplane of every node forwards such
// segments (no SYN, no local socket) to the draining nodes, which
// deliver them to their own sockets (loader.Handoff). This package is
// the small protocol that keeps every node's list of draining nodes:
// a draining node sends a notice to each peer over UDP before it
// withdraws and waits for their acknowledgements; a notice carries a
// deadline, so a node that dies while draining is forgotten when its
// drain would have ended anyway.
//
// Notices are accepted only from the configured node addresses. A forged
// notice can at most make peers forward connections they would have
// reset to a configured node.
package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Options configure a Handoff.
type Options struct {
	// Self is this node's address; it must be one of Nodes.
	Self netip.Addr
	// Nodes are every node's address, in the same order on every node.
	Nodes []netip.Addr
	// Port is the UDP port of every node's notices.
	Port uint16
	// Apply gets the draining nodes (in Nodes order, Self included when
	// it drains) each time the set changes. It programs the dataplane.
	Apply  func(draining []netip.Addr) error
	Logger *slog.Logger
}

// notice is the wire format, one JSON object per datagram.
type notice struct {
	V     int    `json:"v"`
	Node  string `json:"node"`
	State string `json:"state"` // "draining" or "serving"
	// Until is the end of the drain (Unix ms).
	Until int64  `json:"until,omitempty"`
	Seq   uint64 `json:"seq"`
	Ack   bool   `json:"ack,omitempty"`
}

const (
	stateDraining = "draining"
	stateServing  = "serving"
	// retries and retryGap bound how long Drain waits for the peers.
	retries  = 4
	retryGap = 50 * time.Millisecond
)

// Handoff is the running protocol.
type Handoff struct {
	opts Options
	log  *slog.Logger
	conn *net.UDPConn

	mu       sync.Mutex
	draining map[netip.Addr]time.Time // node -> end of its drain
	seq      uint64
	acks     map[uint64]map[netip.Addr]bool
	ackCh    chan struct{}
	closed   chan struct{}
	done     sync.WaitGroup
}

// Start listens for the peers' notices on Self:Port.
func Start(opts Options) (*Handoff, error) {
	if !slices.Contains(opts.Nodes, opts.Self) {
		return nil, fmt.Errorf("handoff: this node's address %s is not among the nodes %v", opts.Self, opts.Nodes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(opts.Self, opts.Port)))
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", netip.AddrPortFrom(opts.Self, opts.Port), err)
	}
	h := &Handoff{
		opts: opts, log: opts.Logger, conn: conn,
		draining: map[netip.Addr]time.Time{},
		acks:     map[uint64]map[netip.Addr]bool{},
		ackCh:    make(chan struct{}, 1),
		closed:   make(chan struct{}),
	}
	if err := h.apply(); err != nil {
		conn.Close()
		return nil, err
	}
	h.done.Add(2)
	go h.receive()
	go h.expire()
	return h, nil
}

// Close stops listening; the dataplane keeps the last set until the next
// Start (a restarted daemon starts with nobody draining).
func (h *Handoff) Close() {
	select {
	case <-h.closed:
		return
	default:
	}
	close(h.closed)
	h.conn.Close()
	h.done.Wait()
}

// Draining lists the nodes draining now, in Nodes order.
func (h *Handoff) Draining() []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.drainingLocked()
}

func (h *Handoff) drainingLocked() []netip.Addr {
	var out []netip.Addr
	for _, n := range h.opts.Nodes {
		if _, ok := h.draining[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

func (h *Handoff) apply() error {
	h.mu.Lock()
	d := h.drainingLocked()
	h.mu.Unlock()
	if h.opts.Apply == nil {
		return nil
	}
	if err := h.opts.Apply(d); err != nil {
		return fmt.Errorf("handoff: program dataplane: %w", err)
	}
	return nil
}

// Drain marks this node as draining for d: its own dataplane forwards
// what it cannot serve to the other draining nodes, and every peer is
// told to forward this node's connections to it. It returns once every
// peer acknowledged or the retries ran out; the missing peers are named
// in the error, which is worth a warning and no more.
func (h *Handoff) Drain(ctx context.Context, d time.Duration) error {
	until := time.Now().Add(d)
	h.mu.Lock()
	h.draining[h.opts.Self] = until
	h.mu.Unlock()
	if err := h.apply(); err != nil {
		return err
	}
	return h.announce(ctx, notice{State: stateDraining, Until: until.UnixMilli()})
}

// Done tells the peers this node no longer needs its connections
// forwarded (its instances have finished).
func (h *Handoff) Done(ctx context.Context) error {
	h.mu.Lock()
	delete(h.draining, h.opts.Self)
	h.mu.Unlock()
	if err := h.apply(); err != nil {
		return err
	}
	return h.announce(ctx, notice{State: stateServing})
}

func (h *Handoff) announce(ctx context.Context, n notice) error {
	h.mu.Lock()
	h.seq++
	n.V, n.Node, n.Seq = 1, h.opts.Self.String(), h.seq
	acked := map[netip.Addr]bool{}
	h.acks[n.Seq] = acked
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.acks, n.Seq)
		h.mu.Unlock()
	}()
	msg, _ := json.Marshal(n)
	missing := func() []netip.Addr {
		h.mu.Lock()
		defer h.mu.Unlock()
		var out []netip.Addr
		for _, p := range h.opts.Nodes {
			if p != h.opts.Self && !acked[p] {
				out = append(out, p)
			}
		}
		return out
	}
	for range retries {
		todo := missing()
		if len(todo) == 0 {
			return nil
		}
		for _, p := range todo {
			if _, err := h.conn.WriteToUDPAddrPort(msg, netip.AddrPortFrom(p, h.opts.Port)); err != nil {
				h.log.Debug("handoff notice not sent", "peer", p, "err", err)
			}
		}
		// Return as soon as the last acknowledgement arrives; resend to
		// the silent ones after retryGap.
		t := time.NewTimer(retryGap)
	wait:
		for len(missing()) > 0 {
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
				break wait
			case <-h.ackCh:
			}
		}
		t.Stop()
	}
	if left := missing(); len(left) > 0 {
		return fmt.Errorf("handoff: no acknowledgement of %q from %v", n.State, left)
	}
	return nil
}

func (h *Handoff) receive() {
	defer h.done.Done()
	buf := make([]byte, 1500)
	for {
		nb, from, err := h.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		src := from.Addr().Unmap()
		if src == h.opts.Self || !slices.Contains(h.opts.Nodes, src) {
			h.log.Warn("handoff notice from an address not among the nodes; ignored", "from", from)
			continue
		}
		var n notice
		if err := json.Unmarshal(buf[:nb], &n); err != nil || n.V != 1 || n.Node != src.String() {
			h.log.Warn("handoff notice malformed or naming another node; ignored", "from", from)
			continue
		}
		if n.Ack {
			h.mu.Lock()
			if m, ok := h.acks[n.Seq]; ok {
				m[src] = true
			}
			h.mu.Unlock()
			select {
			case h.ackCh <- struct{}{}:
			default:
			}
			continue
		}
		h.mu.Lock()
		_, was := h.draining[src]
		switch n.State {
		case stateDraining:
			h.draining[src] = time.UnixMilli(n.Until)
		case stateServing:
			delete(h.draining, src)
		}
		_, is := h.draining[src]
		h.mu.Unlock()
		if was != is {
			h.log.Info("peer node "+n.State, "node", src)
			if err := h.apply(); err != nil {
				h.log.Error("handoff", "err", err)
			}
		}
		ack, _ := json.Marshal(notice{V: 1, Node: h.opts.Self.String(), Seq: n.Seq, Ack: true})
		_, _ = h.conn.WriteToUDPAddrPort(ack, from)
	}
}

// expire forgets peers whose drain deadline passed: a node that died
// while draining must not keep the others forwarding to it.
func (h *Handoff) expire() {
	defer h.done.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-h.closed:
			return
		case <-tick.C:
		}
		now := time.Now()
		changed := false
		h.mu.Lock()
		for n, until := range h.draining {
			if n != h.opts.Self && now.After(until) {
				delete(h.draining, n)
				changed = true
			}
		}
		h.mu.Unlock()
		if changed {
			if err := h.apply(); err != nil {
				h.log.Error("handoff", "err", err)
			}
		}
	}
}
