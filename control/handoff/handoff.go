// Package handoff tells the other ober nodes when the routers are about
// to move connections between nodes, so that their dataplanes hand each
// moved connection back to the node that owns it.
//
// ECMP routers move established connections whenever a node's route
// comes or goes: a draining node's connections go to the others, and
// (Linux's hash-threshold ECMP, most routers) some of the other nodes'
// connections move between them too; an announced node draws some of
// everyone's. The kernel of the node a connection lands on would reset
// it. While any node is in such a transition, every node's dataplane
// passes a segment that no local socket owns around the other nodes
// (loader.Handoff) until its owner takes it.
//
// This package is the small protocol that keeps every node's list of
// nodes in transition: before it withdraws (drains) or announces (joins),
// a node sends a notice to each peer over UDP and waits for their
// acknowledgements. A notice carries a deadline, so a node that dies
// mid-transition is forgotten when its transition would have ended.
//
// Notices are accepted only from the configured node addresses. A forged
// notice can at most make peers pass around connections they would have
// reset.
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
	// Apply gets the nodes in transition (in Nodes order, Self included)
	// each time the set changes. It programs the dataplane.
	Apply  func(inTransition []netip.Addr) error
	Logger *slog.Logger
}

// notice is the wire format, one JSON object per datagram.
type notice struct {
	V     int    `json:"v"`
	Node  string `json:"node"`
	State string `json:"state"` // "draining", "joining" or "serving"
	// Until is the end of the transition (Unix ms).
	Until int64  `json:"until,omitempty"`
	Seq   uint64 `json:"seq"`
	Ack   bool   `json:"ack,omitempty"`
}

const (
	stateDraining = "draining"
	stateJoining  = "joining"
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

	mu      sync.Mutex
	transit map[netip.Addr]transition
	seq     uint64
	acks    map[uint64]map[netip.Addr]bool
	ackCh   chan struct{}
	closed  chan struct{}
	done    sync.WaitGroup
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
		transit: map[netip.Addr]transition{},
		acks:    map[uint64]map[netip.Addr]bool{},
		ackCh:   make(chan struct{}, 1),
		closed:  make(chan struct{}),
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

// transition is one node's state and its deadline.
type transition struct {
	state string
	until time.Time
}

// Transition is a node in transition, for status.
type Transition struct {
	Node  string    `json:"node"`
	State string    `json:"state"` // draining or joining
	Until time.Time `json:"until"`
}

// InTransition lists the nodes draining or joining now, in Nodes order.
func (h *Handoff) InTransition() []Transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Transition
	for _, n := range h.opts.Nodes {
		if t, ok := h.transit[n]; ok {
			out = append(out, Transition{Node: n.String(), State: t.state, Until: t.until})
		}
	}
	return out
}

func (h *Handoff) activeLocked() []netip.Addr {
	var out []netip.Addr
	for _, n := range h.opts.Nodes {
		if _, ok := h.transit[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

func (h *Handoff) apply() error {
	h.mu.Lock()
	d := h.activeLocked()
	h.mu.Unlock()
	if h.opts.Apply == nil {
		return nil
	}
	if err := h.opts.Apply(d); err != nil {
		return fmt.Errorf("handoff: program dataplane: %w", err)
	}
	return nil
}

// Drain marks this node as draining for d and tells every peer before
// the node withdraws: from then on the dataplanes pass connections that
// no local socket owns around the nodes, so the ones the routers move
// away from this node come back to it. It returns once every peer
// acknowledged or the retries ran out; the silent peers are named in the
// error, which is worth a warning and no more.
func (h *Handoff) Drain(ctx context.Context, d time.Duration) error {
	return h.begin(ctx, stateDraining, d)
}

// Join marks this node as joining for d and tells every peer before the
// node announces: the routers then move some of the other nodes'
// connections to it, and this node hands them back.
func (h *Handoff) Join(ctx context.Context, d time.Duration) error {
	return h.begin(ctx, stateJoining, d)
}

func (h *Handoff) begin(ctx context.Context, state string, d time.Duration) error {
	until := time.Now().Add(d)
	h.mu.Lock()
	h.transit[h.opts.Self] = transition{state: state, until: until}
	h.mu.Unlock()
	if err := h.apply(); err != nil {
		return err
	}
	return h.announce(ctx, notice{State: state, Until: until.UnixMilli()})
}

// Done tells the peers this node's transition is over (its instances have
// finished draining).
func (h *Handoff) Done(ctx context.Context) error {
	h.mu.Lock()
	delete(h.transit, h.opts.Self)
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
		_, was := h.transit[src]
		switch n.State {
		case stateDraining, stateJoining:
			h.transit[src] = transition{state: n.State, until: time.UnixMilli(n.Until)}
		case stateServing:
			delete(h.transit, src)
		}
		_, is := h.transit[src]
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

// expire forgets transitions whose deadline passed: a node that died
// while draining must not keep the others forwarding to it, and a join
// ends by itself.
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
		for n, t := range h.transit {
			// This node's own drain lasts until Done: its instances
			// may outlive the estimate.
			if now.After(t.until) && (n != h.opts.Self || t.state == stateJoining) {
				delete(h.transit, n)
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
