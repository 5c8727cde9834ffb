// Package handoff is the channel between the ober nodes that share the
// VIPs: it tells them when the routers are about to move connections
// between nodes, gives them each other's connections so that their
// dataplanes can hand every moved one back to its owner, and carries each
// node's view of its backends.
//
// ECMP routers move established connections whenever a node's route
// comes or goes: a draining node's connections go to the others, and
// (Linux's hash-threshold ECMP, most routers) some of the other nodes'
// connections move between them too; an announced node draws some of
// everyone's. The kernel of the node a connection lands on would reset
// it. Before a node withdraws (drains) or announces (joins), it sends a
// notice to each peer and waits for their acknowledgements. From then on,
// while any node is in transition, every node sends every other node the
// connections it owns: all of them at once, then the new ones every
// 20 ms (the dataplane records them), and all again every second, which
// heals a lost datagram. Each node's dataplane looks the orphans it gets
// up in those records and sends each to its owner, once (loader.Handoff).
// A peer acknowledges a notice only after it has sent its own records, so
// that when the routers move anything every node knows where it belongs.
// A notice carries a deadline, capped by the receiver, so that a node
// that dies mid-transition is forgotten when its transition would have
// ended.
//
// Every message is authenticated with HMAC-SHA256 under a key the nodes
// share, numbered against replays, and refused when its time is far from
// the receiver's clock (wire.go): a forged or replayed datagram changes
// nothing.
package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/loader"
)

// Dataplane is the part of *loader.Dataplane the handoff programs.
type Dataplane interface {
	SetHandoff(loader.Handoff) error
	AddOwners(owner netip.Addr, flows []loader.Flow) error
	ClearOwners() error
}

// FlowSource is where this node's own connections come from.
type FlowSource interface {
	// Established lists the connections this node owns now.
	Established() ([]loader.Flow, error)
	// New returns the connections made since the last call, waiting at
	// most wait for the first.
	New(wait time.Duration) ([]loader.Flow, error)
}

// Options configure a Handoff.
type Options struct {
	// Self is this node's address; it must be one of Nodes.
	Self netip.Addr
	// Nodes are every node's address, in the same order on every node.
	Nodes []netip.Addr
	// Port is the UDP port of every node's channel.
	Port uint16
	// Key is the secret every node shares; at least 32 bytes.
	Key []byte
	// MaxTransition caps how long a peer's notice keeps this node in
	// transition; default 5m.
	MaxTransition time.Duration
	// Rate and Burst limit the dataplane's forwards per CPU (see
	// loader.Handoff).
	Rate, Burst uint64
	// Dataplane is programmed with every change.
	Dataplane Dataplane
	// Flows lists this node's connections; nil sends none.
	Flows FlowSource
	// Health reports this node's backends to the peers every
	// HealthEvery (default 500ms); nil reports nothing.
	Health      func() (backendsUp, serving bool)
	HealthEvery time.Duration
	// Linger keeps the records and the orphan checks on after the last
	// transition ended, for the last segments of moved connections still
	// on their way; default 2s.
	Linger time.Duration
	// OnMove applies an operator's move of vip to target (the zero
	// address: back to its owner) on this node; nil refuses moves. It
	// runs on its own goroutine, and may use Join and Drain.
	OnMove func(ctx context.Context, vip, target netip.Addr) error
	Logger *slog.Logger
}

// DefaultHealthEvery is how often a node reports its backends.
const DefaultHealthEvery = 500 * time.Millisecond

// The rhythm of the flow records while a node is in transition.
const (
	newFlowsEvery = 20 * time.Millisecond
	allFlowsEvery = time.Second
	// newFlowsRepeats is how many ticks a new connection's record is
	// sent: the datagrams are not acknowledged, and a connection whose
	// SYN reached this node just before the VIP moved has its next
	// segments at the peer at once. Lost once, the record would wait for
	// the next full list, up to allFlowsEvery, longer than a client
	// waits (one request of 20,807 in a CI run of TestVRRPHandoff).
	// Repeated, it is at the peer within a tick or two of a loss.
	newFlowsRepeats = 5
	// retries and retryGap bound how long a notice waits for the peers.
	retries  = 4
	retryGap = 50 * time.Millisecond
)

// Handoff is the running channel.
type Handoff struct {
	opts Options
	log  *slog.Logger
	conn *net.UDPConn
	seal sealer

	counter atomic.Uint64
	stats   stats

	mu       sync.Mutex
	transit  map[netip.Addr]transition
	active   bool      // the dataplane hands orphans off and records new flows
	idleFrom time.Time // when the last transition ended, while lingering
	windows  map[netip.Addr]*replayWindow
	acks     map[uint64]map[netip.Addr]bool
	health   map[netip.Addr]PeerHealth
	noticeID uint64
	ackCh    chan struct{}
	// results collects the peers' answers to this node's moves, by id;
	// moving remembers the moves of peers being applied or applied, so
	// that a retry is answered and not applied twice.
	results  map[uint64]map[netip.Addr]string
	moving   map[moveKey]*moveDone
	resultCh chan struct{} // a result arrived; ackCh is the notices'

	// records serialises the snapshots: two at once would only double
	// the traffic.
	records sync.Mutex

	closed chan struct{}
	done   sync.WaitGroup
}

type stats struct {
	refused         [6]atomic.Uint64 // by refusal reason, see refusals
	flowsSent       atomic.Uint64
	flowsReceived   atomic.Uint64
	noticesReceived atomic.Uint64
}

var refusals = []error{errShort, errMAC, errStale, errReplay, errStranger, errBody}

// Start listens for the peers on Self:Port.
func Start(opts Options) (*Handoff, error) {
	if !slices.Contains(opts.Nodes, opts.Self) {
		return nil, fmt.Errorf("handoff: this node's address %s is not among the nodes %v", opts.Self, opts.Nodes)
	}
	if !opts.Self.Is4() {
		return nil, fmt.Errorf("handoff: this node's address %s is not IPv4", opts.Self)
	}
	if len(opts.Key) < 32 {
		return nil, fmt.Errorf("handoff: the shared key has %d bytes; at least 32 are required", len(opts.Key))
	}
	if opts.Dataplane == nil {
		return nil, errors.New("handoff: a dataplane is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxTransition <= 0 {
		opts.MaxTransition = 5 * time.Minute
	}
	if opts.HealthEvery <= 0 {
		opts.HealthEvery = DefaultHealthEvery
	}
	if opts.Linger <= 0 {
		opts.Linger = 2 * time.Second
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(opts.Self, opts.Port)))
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", netip.AddrPortFrom(opts.Self, opts.Port), err)
	}
	// A peer's full record may be a thousand datagrams at once: beyond
	// net.core.rmem_max (212992 on a stock Debian) where the daemon has
	// CAP_NET_ADMIN, so that a burst does not drop the records of new
	// connections that arrive behind it.
	forceBuffers(conn, 4<<20)
	h := &Handoff{
		opts: opts, log: opts.Logger, conn: conn,
		seal:     sealer{key: opts.Key, self: opts.Self.As4(), epoch: uint64(time.Now().UnixNano())},
		transit:  map[netip.Addr]transition{},
		windows:  map[netip.Addr]*replayWindow{},
		acks:     map[uint64]map[netip.Addr]bool{},
		health:   map[netip.Addr]PeerHealth{},
		ackCh:    make(chan struct{}, 1),
		results:  map[uint64]map[netip.Addr]string{},
		moving:   map[moveKey]*moveDone{},
		resultCh: make(chan struct{}, 1),
		closed:   make(chan struct{}),
	}
	// A restarted daemon starts with nobody in transition and no records.
	if err := errors.Join(h.program(false), opts.Dataplane.ClearOwners()); err != nil {
		conn.Close()
		return nil, fmt.Errorf("handoff: program dataplane: %w", err)
	}
	h.done.Add(2)
	go h.receive()
	go h.tick()
	return h, nil
}

// Close stops the channel; the dataplane keeps the last set until the
// next Start.
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

// Self is this node's address on the channel.
func (h *Handoff) Self() netip.Addr { return h.opts.Self }

// transition is one node's state and its deadline.
type transition struct {
	state byte
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
			out = append(out, Transition{Node: n.String(), State: stateName(t.state), Until: t.until})
		}
	}
	return out
}

// PeerHealth is what a peer last reported.
type PeerHealth struct {
	Node       string    `json:"node"`
	BackendsUp bool      `json:"backends_up"`
	Serving    bool      `json:"serving"`
	At         time.Time `json:"at"`
}

// Peers lists the peers' last reports that are fresh (within three
// report intervals), in Nodes order.
func (h *Handoff) Peers() []PeerHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []PeerHealth
	for _, n := range h.opts.Nodes {
		if p, ok := h.health[n]; ok && time.Since(p.At) <= 3*h.opts.HealthEvery {
			out = append(out, p)
		}
	}
	return out
}

// BackendsUpElsewhere reports whether a peer that reported lately sees a
// backend up.
func (h *Handoff) BackendsUpElsewhere() bool {
	for _, p := range h.Peers() {
		if p.BackendsUp {
			return true
		}
	}
	return false
}

// Stats are the channel's counters, for status and metrics.
type Stats struct {
	// Refused counts datagrams refused, by reason.
	Refused         map[string]uint64 `json:"refused"`
	NoticesReceived uint64            `json:"notices_received"`
	FlowsSent       uint64            `json:"flows_sent"`
	FlowsReceived   uint64            `json:"flows_received"`
	// Active says the dataplane hands orphans off now.
	Active bool `json:"active"`
}

// Refusal reasons, as Stats names them.
var refusalNames = []string{"malformed", "authentication", "stale", "replay", "stranger", "body"}

// Stats reads the counters.
func (h *Handoff) Stats() Stats {
	s := Stats{Refused: map[string]uint64{}, NoticesReceived: h.stats.noticesReceived.Load(),
		FlowsSent: h.stats.flowsSent.Load(), FlowsReceived: h.stats.flowsReceived.Load()}
	for i, n := range refusalNames {
		s.Refused[n] = h.stats.refused[i].Load()
	}
	h.mu.Lock()
	s.Active = h.active
	h.mu.Unlock()
	return s
}

// program sets the dataplane: active or not.
func (h *Handoff) program(active bool) error {
	return h.opts.Dataplane.SetHandoff(loader.Handoff{
		Self: h.opts.Self, Nodes: h.opts.Nodes, Active: active, Rate: h.opts.Rate, Burst: h.opts.Burst,
	})
}

// update programs the dataplane for the transitions now known and, the
// first time one appears, sends this node's records to every peer. It
// returns once they are sent.
func (h *Handoff) update() error {
	h.mu.Lock()
	start := len(h.transit) > 0 && !h.active
	if len(h.transit) > 0 {
		h.idleFrom = time.Time{}
	}
	if start {
		h.active = true
	}
	h.mu.Unlock()
	if !start {
		return nil
	}
	if err := h.program(true); err != nil {
		return fmt.Errorf("handoff: program dataplane: %w", err)
	}
	h.log.Info("handing off: recording connections for the other nodes")
	h.sendAllFlows()
	return nil
}

// Drain marks this node as draining for d and tells every peer before
// the node withdraws: from then on the dataplanes hand the connections
// the routers move away from this node back to it. It returns once every
// peer acknowledged or the retries ran out; the silent peers are named in
// the error, which is worth a warning and no more.
func (h *Handoff) Drain(ctx context.Context, d time.Duration) error {
	return h.begin(ctx, stateDraining, d)
}

// Join marks this node as joining for d and tells every peer before the
// node announces: the routers then move some of the other nodes'
// connections to it, and this node hands them back.
func (h *Handoff) Join(ctx context.Context, d time.Duration) error {
	return h.begin(ctx, stateJoining, d)
}

func (h *Handoff) begin(ctx context.Context, state byte, d time.Duration) error {
	until := time.Now().Add(min(d, h.opts.MaxTransition))
	h.mu.Lock()
	h.transit[h.opts.Self] = transition{state: state, until: until}
	h.mu.Unlock()
	if err := h.update(); err != nil {
		return err
	}
	return h.announce(ctx, state, until)
}

// Done tells the peers this node's transition is over (its instances have
// finished draining).
func (h *Handoff) Done(ctx context.Context) error {
	h.mu.Lock()
	delete(h.transit, h.opts.Self)
	h.mu.Unlock()
	return h.announce(ctx, stateServing, time.Time{})
}

// send seals and sends one message to one peer.
func (h *Handoff) send(kind byte, body []byte, to netip.Addr) {
	b := h.seal.seal(kind, h.counter.Add(1), time.Now(), body)
	if _, err := h.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(to, h.opts.Port)); err != nil {
		h.log.Debug("handoff message not sent", "peer", to, "err", err)
	}
}

func (h *Handoff) peers() []netip.Addr {
	var out []netip.Addr
	for _, n := range h.opts.Nodes {
		if n != h.opts.Self {
			out = append(out, n)
		}
	}
	return out
}

func (h *Handoff) announce(ctx context.Context, state byte, until time.Time) error {
	h.mu.Lock()
	h.noticeID++
	id := h.noticeID
	acked := map[netip.Addr]bool{}
	h.acks[id] = acked
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.acks, id)
		h.mu.Unlock()
	}()
	body := noticeBody(state, until, id)
	missing := func() []netip.Addr {
		h.mu.Lock()
		defer h.mu.Unlock()
		var out []netip.Addr
		for _, p := range h.peers() {
			if !acked[p] {
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
			h.send(kindNotice, body, p)
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
		return &NotAckedError{What: stateName(state), Peers: left}
	}
	return nil
}

// NotAckedError names the peers that did not acknowledge a notice.
type NotAckedError struct {
	What  string
	Peers []netip.Addr
}

func (e *NotAckedError) Error() string {
	return fmt.Sprintf("handoff: no acknowledgement of %q from %v", e.What, e.Peers)
}

// refuse counts a refused datagram and says so, at most once a minute
// per reason, so that a flood cannot flood the log.
func (h *Handoff) refuse(err error, from netip.AddrPort, last []time.Time) {
	i := slices.Index(refusals, err)
	if i < 0 {
		return
	}
	h.stats.refused[i].Add(1)
	if time.Since(last[i]) > time.Minute {
		last[i] = time.Now()
		h.log.Warn("handoff datagram refused", "from", from, "reason", err,
			"refused_so_far", h.stats.refused[i].Load())
	}
}

func (h *Handoff) receive() {
	defer h.done.Done()
	buf := make([]byte, 2048)
	lastWarn := make([]time.Time, len(refusals))
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
			h.refuse(errStranger, from, lastWarn)
			continue
		}
		msg, err := open(h.opts.Key, buf[:nb], time.Now())
		if err == nil && msg.node != src {
			err = errStranger
		}
		if err != nil {
			h.refuse(err, from, lastWarn)
			continue
		}
		h.mu.Lock()
		w := h.windows[src]
		if w == nil {
			w = &replayWindow{}
			h.windows[src] = w
		}
		fresh := w.accept(msg.epoch, msg.counter)
		h.mu.Unlock()
		if !fresh {
			h.refuse(errReplay, from, lastWarn)
			continue
		}
		if err := h.handle(src, msg); err != nil {
			h.refuse(err, from, lastWarn)
		}
	}
}

func (h *Handoff) handle(src netip.Addr, msg message) error {
	switch msg.kind {
	case kindAck:
		id, err := parseAck(msg.body)
		if err != nil {
			return err
		}
		h.mu.Lock()
		if m, ok := h.acks[id]; ok {
			m[src] = true
		}
		h.mu.Unlock()
		select {
		case h.ackCh <- struct{}{}:
		default:
		}
	case kindNotice:
		state, until, id, err := parseNotice(msg.body)
		if err != nil {
			return err
		}
		h.stats.noticesReceived.Add(1)
		h.notice(src, state, until)
		h.send(kindAck, ackBody(id), src)
	case kindFlows:
		flows, err := parseFlows(msg.body)
		if err != nil {
			return err
		}
		h.stats.flowsReceived.Add(uint64(len(flows)))
		if err := h.opts.Dataplane.AddOwners(src, flows); err != nil {
			h.log.Error("handoff: record a peer's connections", "peer", src, "err", err)
		}
	case kindMove:
		id, vip, target, err := parseMove(msg.body)
		if err != nil {
			return err
		}
		h.moveAsked(src, msg.epoch, id, vip, target)
	case kindResult:
		id, refusal, err := parseResult(msg.body)
		if err != nil {
			return err
		}
		h.mu.Lock()
		if m, ok := h.results[id]; ok {
			m[src] = refusal
		}
		h.mu.Unlock()
		select {
		case h.resultCh <- struct{}{}:
		default:
		}
	case kindHealth:
		if len(msg.body) != 1 {
			return errBody
		}
		h.mu.Lock()
		h.health[src] = PeerHealth{Node: src.String(), BackendsUp: msg.body[0]&healthBackendsUp != 0,
			Serving: msg.body[0]&healthServing != 0, At: time.Now()}
		h.mu.Unlock()
	default:
		return errBody
	}
	return nil
}

// notice applies a peer's notice; the caller acknowledges it after this
// node's records went out.
func (h *Handoff) notice(src netip.Addr, state byte, until time.Time) {
	h.mu.Lock()
	_, was := h.transit[src]
	switch state {
	case stateDraining, stateJoining:
		// A deadline in the past ends at the next expiry; one too far
		// ahead is capped.
		if limit := time.Now().Add(h.opts.MaxTransition); until.After(limit) || until.IsZero() {
			until = limit
		}
		h.transit[src] = transition{state: state, until: until}
	case stateServing:
		delete(h.transit, src)
	}
	_, is := h.transit[src]
	h.mu.Unlock()
	if was != is {
		h.log.Info("peer node "+stateName(state), "node", src)
	}
	if err := h.update(); err != nil {
		h.log.Error("handoff", "err", err)
	}
}

// sendAllFlows sends every connection this node owns to every peer.
func (h *Handoff) sendAllFlows() {
	if h.opts.Flows == nil {
		return
	}
	h.records.Lock()
	defer h.records.Unlock()
	flows, err := h.opts.Flows.Established()
	if err != nil {
		h.log.Error("handoff: list this node's connections", "err", err)
		return
	}
	h.sendFlows(flows)
}

func (h *Handoff) sendFlows(flows []loader.Flow) {
	if len(flows) == 0 {
		return
	}
	bodies := flowBodies(flows)
	for _, p := range h.peers() {
		for _, b := range bodies {
			h.send(kindFlows, b, p)
		}
	}
	h.stats.flowsSent.Add(uint64(len(flows)))
}

// tick expires transitions, sends the new flows and the periodic full
// records while active, ends the activity after the linger, and reports
// this node's health.
func (h *Handoff) tick() {
	defer h.done.Done()
	t := time.NewTicker(newFlowsEvery)
	defer t.Stop()
	var lastAll, lastHealth time.Time
	// recent holds the new connections of the last newFlowsRepeats
	// ticks, oldest first.
	var recent [][]loader.Flow
	for {
		select {
		case <-h.closed:
			return
		case <-t.C:
		}
		now := time.Now()
		h.expire(now)
		h.mu.Lock()
		active := h.active
		h.mu.Unlock()
		if active && h.opts.Flows != nil {
			if fs, err := h.opts.Flows.New(0); err != nil {
				h.log.Error("handoff: read new connections", "err", err)
			} else {
				recent = append(recent, fs)
				if len(recent) > newFlowsRepeats {
					recent = recent[1:]
				}
				var batch []loader.Flow
				for _, r := range recent {
					batch = append(batch, r...)
				}
				h.sendFlows(batch)
			}
			if now.Sub(lastAll) >= allFlowsEvery {
				lastAll = now
				h.sendAllFlows()
			}
		} else {
			recent = nil
		}
		if h.opts.Health != nil && now.Sub(lastHealth) >= h.opts.HealthEvery {
			lastHealth = now
			up, serving := h.opts.Health()
			var f byte
			if up {
				f |= healthBackendsUp
			}
			if serving {
				f |= healthServing
			}
			for _, p := range h.peers() {
				h.send(kindHealth, []byte{f}, p)
			}
		}
	}
}

// expire forgets transitions whose deadline passed (a node that died
// while draining must not keep the others handing off to it, and a join
// ends by itself), and once none is left for linger, turns the dataplane's
// handoff off and forgets the records.
func (h *Handoff) expire(now time.Time) {
	h.mu.Lock()
	for n, t := range h.transit {
		// This node's own drain lasts until Done: its instances may
		// outlive the estimate.
		if now.After(t.until) && (n != h.opts.Self || t.state == stateJoining) {
			delete(h.transit, n)
			h.log.Info("node transition over", "node", n, "state", stateName(t.state))
		}
	}
	stop := false
	if h.active && len(h.transit) == 0 {
		if h.idleFrom.IsZero() {
			h.idleFrom = now
		} else if now.Sub(h.idleFrom) >= h.opts.Linger {
			h.active, h.idleFrom, stop = false, time.Time{}, true
		}
	}
	h.mu.Unlock()
	if stop {
		if err := errors.Join(h.program(false), h.opts.Dataplane.ClearOwners()); err != nil {
			h.log.Error("handoff: end the handoff", "err", err)
		}
		h.log.Info("handoff over: records cleared")
	}
}

// forceBuffers sets conn's socket buffers to n bytes, past the sysctl
// caps when the process may (SO_RCVBUFFORCE, SO_SNDBUFFORCE), else as
// far as the caps allow.
func forceBuffers(conn *net.UDPConn, n int) {
	forced := false
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			forced = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) == nil &&
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) == nil
		})
	}
	if !forced {
		_ = conn.SetReadBuffer(n)
		_ = conn.SetWriteBuffer(n)
	}
}
