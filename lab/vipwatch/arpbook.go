package vipwatch

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Probe is one ARP request for a VIP and the answers to it.
type Probe struct {
	Seq uint32
	VIP netip.Addr
	At  time.Time // when it was sent
	// Answers holds one entry per distinct MAC that answered within the
	// window, in the order they came.
	Answers []Answer
	// Late holds answers that came after the window: the host that sent
	// one took the request in so late that it may describe another
	// moment, so it is kept apart from Answers.
	Late []Answer
}

// Answer is one host's reply to a probe.
type Answer struct {
	MAC   net.HardwareAddr
	Node  string        // the node whose interface has MAC; "" for none
	After time.Duration // from the request to the reply's arrival
}

// Who names the answering host: its node name, or its MAC when it is no
// node's.
func (a Answer) Who() string {
	if a.Node != "" {
		return a.Node
	}
	return a.MAC.String()
}

// ARPDouble is one request for a VIP answered by two or more hosts.
type ARPDouble struct {
	VIP   netip.Addr
	At    time.Time
	Nodes []string
	// After is, for each of Nodes, how long its answer took: answers
	// close together were given at nearly the same moment.
	After []time.Duration
}

func (d ARPDouble) String() string {
	who := make([]string, len(d.Nodes))
	for i, n := range d.Nodes {
		who[i] = fmt.Sprintf("%s (+%v)", n, d.After[i].Round(time.Microsecond))
	}
	return fmt.Sprintf("%s answered by %s for the request at %s", d.VIP, strings.Join(who, " and "), d.At.Format("15:04:05.000000"))
}

// ARPSummary counts what an observer saw.
type ARPSummary struct {
	Sent     int // requests sent
	Answered int // requests answered within the window
	Late     int // answers after the window
	Stray    int // tagged replies naming no request sent, or another VIP
	Doubles  []ARPDouble
	// Slowest is the longest time an answer within the window took.
	Slowest time.Duration
}

func (s ARPSummary) String() string {
	return fmt.Sprintf("%d ARP requests, %d answered, %d double answers, %d late answers, slowest answer %v",
		s.Sent, s.Answered, len(s.Doubles), s.Late, s.Slowest.Round(time.Microsecond))
}

// book keeps the requests and files each answer under the request it
// names. It is not safe for concurrent use; the observer locks it.
type book struct {
	window time.Duration
	names  map[string]string // MAC (as a string) to node name
	probes []Probe
	index  map[uint32]int // seq to position in probes
	stray  int
}

func newBook(window time.Duration, nodes map[string]net.HardwareAddr) *book {
	b := &book{window: window, names: map[string]string{}, index: map[uint32]int{}}
	for name, mac := range nodes {
		b.names[mac.String()] = name
	}
	return b
}

// sent records request seq for vip, sent at at.
func (b *book) sent(seq uint32, vip netip.Addr, at time.Time) {
	b.index[seq] = len(b.probes)
	b.probes = append(b.probes, Probe{Seq: seq, VIP: vip, At: at})
}

// answered files a reply that arrived at at. A MAC that answers one
// request twice counts once: the question is how many hosts claimed the
// VIP, not how many frames they sent.
func (b *book) answered(a arpAnswer, at time.Time) {
	k, ok := b.index[a.seq]
	if !ok || b.probes[k].VIP != a.vip {
		b.stray++
		return
	}
	p := &b.probes[k]
	ans := Answer{MAC: a.mac, Node: b.names[a.mac.String()], After: at.Sub(p.At)}
	if ans.After > b.window {
		p.Late = append(p.Late, ans)
		return
	}
	if slices.ContainsFunc(p.Answers, func(x Answer) bool { return x.MAC.String() == ans.MAC.String() }) {
		return
	}
	p.Answers = append(p.Answers, ans)
}

// summary counts the requests, their answers and the doubles.
func (b *book) summary() ARPSummary {
	s := ARPSummary{Sent: len(b.probes), Stray: b.stray}
	for _, p := range b.probes {
		s.Late += len(p.Late)
		if len(p.Answers) > 0 {
			s.Answered++
		}
		for _, a := range p.Answers {
			s.Slowest = max(s.Slowest, a.After)
		}
		if len(p.Answers) > 1 {
			d := ARPDouble{VIP: p.VIP, At: p.At}
			for _, a := range p.Answers {
				d.Nodes = append(d.Nodes, a.Who())
				d.After = append(d.After, a.After)
			}
			s.Doubles = append(s.Doubles, d)
		}
	}
	return s
}

// copyProbes returns the probes, safe to keep after the book changes.
func (b *book) copyProbes() []Probe {
	out := make([]Probe, len(b.probes))
	for i, p := range b.probes {
		p.Answers = slices.Clone(p.Answers)
		p.Late = slices.Clone(p.Late)
		out[i] = p
	}
	return out
}
