package handoff

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// An operator's move of a VIP (VRRP mode) goes to every node over this
// channel, the only one the nodes share that is authenticated: the target
// raises its priority for the VIP once it has told the others to record
// their connections, and every other node lowers its own. Each node
// answers with a result once its part is done, or with why it refused.

// moveTimeout bounds one node's part of a move (a notice and its
// acknowledgements, a priority file).
const moveTimeout = 5 * time.Second

// moveKey names a peer's move: its process (epoch) as well as its
// number, since a restarted node numbers its moves from 1 again.
type moveKey struct {
	node  netip.Addr
	epoch uint64
	id    uint64
}

// moveDone is a peer's move being applied (done open) or applied.
type moveDone struct {
	done    chan struct{}
	refusal string
	at      time.Time
}

// MoveError says which nodes refused a move or did not answer.
type MoveError struct {
	Refused map[netip.Addr]string
	Silent  []netip.Addr
}

func (e *MoveError) Error() string {
	var parts []string
	for _, n := range slices.SortedFunc(func(yield func(netip.Addr) bool) {
		for n := range e.Refused {
			if !yield(n) {
				return
			}
		}
	}, netip.Addr.Compare) {
		parts = append(parts, fmt.Sprintf("%s refused: %s", n, e.Refused[n]))
	}
	if len(e.Silent) > 0 {
		parts = append(parts, fmt.Sprintf("no answer from %v", e.Silent))
	}
	return "move: " + strings.Join(parts, "; ")
}

// Move tells every node that vip moves to target (the zero address: back
// to its owner) and applies it here too. It returns once every node
// answered, or the retries ran out; a *MoveError then names the nodes
// that refused or stayed silent.
func (h *Handoff) Move(ctx context.Context, vip, target netip.Addr) error {
	if h.opts.OnMove == nil {
		return errors.New("move: this node takes no moves")
	}
	if !vip.IsValid() {
		return errors.New("move: no VIP")
	}
	if target.IsValid() && !slices.Contains(h.opts.Nodes, target) {
		return fmt.Errorf("move: %s is not one of the nodes %v", target, h.opts.Nodes)
	}
	h.mu.Lock()
	h.noticeID++
	id := h.noticeID
	got := map[netip.Addr]string{}
	h.results[id] = got
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.results, id)
		h.mu.Unlock()
	}()
	body := moveBody(id, vip, target)
	missing := func() []netip.Addr {
		h.mu.Lock()
		defer h.mu.Unlock()
		var out []netip.Addr
		for _, p := range h.peers() {
			if _, ok := got[p]; !ok {
				out = append(out, p)
			}
		}
		return out
	}
	// The peers first: the target's part takes longest (a notice to every
	// node), and this node's own part runs meanwhile.
	for _, p := range missing() {
		h.send(kindMove, body, p)
	}
	local := make(chan error, 1)
	go func() {
		lctx, cancel := context.WithTimeout(ctx, moveTimeout)
		defer cancel()
		local <- h.opts.OnMove(lctx, vip, target)
	}()
	deadline := time.NewTimer(moveTimeout + time.Second)
	defer deadline.Stop()
	resend := time.NewTicker(250 * time.Millisecond)
	defer resend.Stop()
wait:
	for len(missing()) > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			break wait
		case <-resend.C:
			for _, p := range missing() {
				h.send(kindMove, body, p)
			}
		case <-h.resultCh:
		}
	}
	e := &MoveError{Refused: map[netip.Addr]string{}, Silent: missing()}
	select {
	case err := <-local:
		if err != nil {
			e.Refused[h.opts.Self] = err.Error()
		}
	case <-time.After(time.Second):
		// Its context ended a second ago.
		e.Refused[h.opts.Self] = "not applied within " + moveTimeout.String()
	}
	h.mu.Lock()
	for n, r := range got {
		if r != "" {
			e.Refused[n] = r
		}
	}
	h.mu.Unlock()
	if len(e.Refused) == 0 && len(e.Silent) == 0 {
		return nil
	}
	return e
}

// moveAsked applies a peer's move once and answers it, again for each
// retry.
func (h *Handoff) moveAsked(src netip.Addr, epoch, id uint64, vip, target netip.Addr) {
	k := moveKey{src, epoch, id}
	h.mu.Lock()
	now := time.Now()
	for key, m := range h.moving {
		if now.Sub(m.at) > time.Minute {
			delete(h.moving, key)
		}
	}
	m, seen := h.moving[k]
	if !seen {
		m = &moveDone{done: make(chan struct{}), at: now}
		h.moving[k] = m
	}
	h.mu.Unlock()
	if seen {
		select {
		case <-m.done:
			h.send(kindResult, resultBody(id, m.refusal), src)
		default: // still being applied: its result follows
		}
		return
	}
	h.log.Info("vip move asked", "by", src, "vip", vip, "to", targetName(target))
	// Counted with the receiver, which is still running: Close waits.
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		refusal := ""
		if h.opts.OnMove == nil {
			refusal = "this node takes no moves"
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), moveTimeout)
			if err := h.opts.OnMove(ctx, vip, target); err != nil {
				refusal = err.Error()
			}
			cancel()
		}
		h.mu.Lock()
		m.refusal = refusal
		h.mu.Unlock()
		close(m.done)
		h.send(kindResult, resultBody(id, refusal), src)
	}()
}

func targetName(t netip.Addr) string {
	if !t.IsValid() {
		return "owner"
	}
	return t.String()
}
