// Package txwatch tells when a link that is up has stopped transmitting:
// over a window, it sent no packet while the driver or the queueing
// discipline dropped or failed some, or held a backlog the whole time.
//
// A node in that state loses its BGP sessions and health checks and is
// withdrawn, which is right, but the withdraw alone does not say why,
// and the state does not end by itself. It happens to a veth whose peer
// ring was filled by XDP_TX frames while the peer had no XDP program
// (docs/veth-xdp-tx-wedge.md), and to NIC drivers that share transmit
// queues between XDP and the stack and lose a wake-up. Nothing in the
// counters of a quiet link looks like it: without drops or a backlog
// there is no stall.
package txwatch

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// DefaultWindow is how long a link must send nothing while dropping to
// be called stalled: several of BGP's and BFD's transmits, few enough
// that status says it before the hold timers end the sessions.
const DefaultWindow = 3 * time.Second

// Counters are a link's transmit counters at one moment.
type Counters struct {
	// Up: administratively up and the carrier present.
	Up bool
	// Packets sent; Dropped by the driver or the root queueing
	// discipline; Errors of the driver.
	Packets, Dropped, Errors uint64
	// Queued is the root queueing discipline's backlog, in packets: a
	// stopped queue with a qdisc shows as a backlog that stays.
	Queued uint64
}

// State is one link's verdict, for status.
type State struct {
	Iface string `json:"iface"`
	Up    bool   `json:"up"`
	// Transmit is "ok", "stalled" or "down" (the link is down, so no
	// transmit is expected).
	Transmit string `json:"transmit"`
	// Since is when Transmit took its value.
	Since time.Time `json:"since"`
	// Reason says what the counters showed, while stalled.
	Reason    string `json:"reason,omitempty"`
	TxPackets uint64 `json:"tx_packets"`
	TxDropped uint64 `json:"tx_dropped"`
	TxErrors  uint64 `json:"tx_errors"`
	// Queued is the queueing discipline's backlog at the last sample.
	Queued uint64 `json:"queued"`
	// Stalls counts the times the link went stalled.
	Stalls uint64 `json:"stalls"`
}

// The values of State.Transmit.
const (
	OK      = "ok"
	Stalled = "stalled"
	Down    = "down"
)

type sample struct {
	at time.Time
	c  Counters
}

type linkState struct {
	samples []sample
	state   State
}

// Watch keeps the recent counters of each link and its verdict. It is
// safe for concurrent use.
type Watch struct {
	window time.Duration
	mu     sync.Mutex
	links  map[string]*linkState
}

// New makes a Watch; window 0 means DefaultWindow.
func New(window time.Duration) *Watch {
	if window <= 0 {
		window = DefaultWindow
	}
	return &Watch{window: window, links: map[string]*linkState{}}
}

// Observe records iface's counters at a moment and returns its state,
// and whether Transmit changed with this sample.
func (w *Watch) Observe(iface string, at time.Time, c Counters) (State, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.links[iface]
	if l == nil {
		l = &linkState{state: State{Iface: iface, Transmit: OK, Since: at}}
		w.links[iface] = l
	}
	if n := len(l.samples); n > 0 {
		if p := l.samples[n-1].c; c.Packets < p.Packets || c.Dropped < p.Dropped || c.Errors < p.Errors {
			// The counters went back: the link was made anew.
			l.samples = l.samples[:0]
		}
	}
	l.samples = append(l.samples, sample{at, c})
	// Keep the newest sample at least a window old, as the base the
	// window is measured from, and those after it.
	for len(l.samples) > 1 && !l.samples[1].at.After(at.Add(-w.window)) {
		l.samples = l.samples[1:]
	}
	was := l.state.Transmit
	next, reason := w.verdict(l.samples, was)
	if next != was {
		l.state.Since = at
		if next == Stalled {
			l.state.Stalls++
		}
	}
	l.state.Transmit, l.state.Reason = next, reason
	l.state.Up = c.Up
	l.state.TxPackets, l.state.TxDropped, l.state.TxErrors, l.state.Queued = c.Packets, c.Dropped, c.Errors, c.Queued
	return l.state, next != was
}

// verdict: down while the link is down; ok at any packet sent;
// stalled once a whole window with the link up sent no packet and
// dropped or failed some, or kept a backlog from start to end; from
// then on until a packet is sent.
func (w *Watch) verdict(s []sample, was string) (string, string) {
	last := s[len(s)-1]
	if !last.c.Up {
		return Down, ""
	}
	if len(s) >= 2 && last.c.Packets != s[len(s)-2].c.Packets {
		return OK, ""
	}
	first := s[0]
	if was == Stalled {
		return Stalled, reason(first, last)
	}
	upThroughout := !slices.ContainsFunc(s, func(x sample) bool { return !x.c.Up })
	lost := (last.c.Dropped - first.c.Dropped) + (last.c.Errors - first.c.Errors)
	held := first.c.Queued > 0 && last.c.Queued > 0
	if upThroughout && last.at.Sub(first.at) >= w.window && last.c.Packets == first.c.Packets && (lost > 0 || held) {
		return Stalled, reason(first, last)
	}
	return OK, ""
}

func reason(first, last sample) string {
	r := fmt.Sprintf("up but sent no packet in %s while dropping %d and failing %d",
		last.at.Sub(first.at).Round(100*time.Millisecond),
		last.c.Dropped-first.c.Dropped, last.c.Errors-first.c.Errors)
	if last.c.Queued > 0 {
		r += fmt.Sprintf(", %d packets waiting in its qdisc", last.c.Queued)
	}
	return r + ": its transmit queue is stopped"
}

// States are every watched link's state, by name.
func (w *Watch) States() []State {
	if w == nil {
		return []State{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]State, 0, len(w.links))
	for _, name := range slices.Sorted(maps.Keys(w.links)) {
		out = append(out, w.links[name].state)
	}
	return out
}

// Forget drops links not in keep (a reload took them out of
// node.interfaces).
func (w *Watch) Forget(keep []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name := range w.links {
		if !slices.Contains(keep, name) {
			delete(w.links, name)
		}
	}
}
