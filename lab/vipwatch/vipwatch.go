// Package vipwatch watches which nodes hold which VIPs every few
// milliseconds, for the VRRP tests and the lab's VRRP demo: when a VIP
// moved, and whether two nodes ever held it at once. Sampler reads the
// nodes' addresses over netlink, one node after the other; ARPObserver
// asks the segment with ARP, where one request is answered by every
// holder at the same moment.
package vipwatch

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Sample is which nodes held the VIPs at one moment.
type Sample struct {
	At      time.Time
	Holders map[netip.Addr][]string
}

// Sampler reads the holders every period until stopped.
type Sampler struct {
	mu   sync.Mutex
	hist []Sample
	err  error
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start samples read every period. A read that fails is left out; the
// first error is kept for Err.
func Start(every time.Duration, read func() (map[netip.Addr][]string, error)) *Sampler {
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			h, err := read()
			s.mu.Lock()
			if err != nil && s.err == nil {
				s.err = err
			}
			if err == nil {
				s.hist = append(s.hist, Sample{At: time.Now(), Holders: h})
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling; it may be called more than once.
func (s *Sampler) Stop() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// Err is the first failed read, if any.
func (s *Sampler) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Count is the number of samples taken.
func (s *Sampler) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hist)
}

// Last is the latest sample; ok is false before the first.
func (s *Sampler) Last() (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hist) == 0 {
		return Sample{}, false
	}
	return s.hist[len(s.hist)-1], true
}

// First returns the time of the first sample at or after since in which
// cond holds for vip's holders.
func (s *Sampler) First(since time.Time, vip netip.Addr, cond func([]string) bool) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.hist {
		if !x.At.Before(since) && cond(x.Holders[vip]) {
			return x.At, true
		}
	}
	return time.Time{}, false
}

// Doubles lists, from since on, the VIPs held by more than one node in two
// samples in a row: a real double holder. One sample alone may catch a
// handover in passing, because a sample reads the nodes one after the
// other while the new holder adds the VIP and the old one removes it;
// those are only counted, as passing.
func (s *Sampler) Doubles(since time.Time) (doubles []string, passing int) {
	doubles, p := s.classify(since)
	return doubles, len(p)
}

// Passing is one sample alone that showed a VIP on more than one node.
type Passing struct {
	VIP   netip.Addr
	At    time.Time
	Nodes []string
}

func (p Passing) String() string {
	return fmt.Sprintf("%s on %s at %s", p.VIP, strings.Join(p.Nodes, "+"), p.At.Format("15:04:05.000"))
}

// Passing lists the samples Doubles counts as passing, from since on, to
// set them beside an atomic observation of the same moments.
func (s *Sampler) Passing(since time.Time) []Passing {
	_, p := s.classify(since)
	return p
}

func (s *Sampler) classify(since time.Time) (doubles []string, passing []Passing) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, x := range s.hist {
		if x.At.Before(since) {
			continue
		}
		for vip, hs := range x.Holders {
			if len(hs) < 2 {
				continue
			}
			prev := k > 0 && len(s.hist[k-1].Holders[vip]) > 1
			next := k+1 < len(s.hist) && len(s.hist[k+1].Holders[vip]) > 1
			if !prev && !next {
				passing = append(passing, Passing{VIP: vip, At: x.At, Nodes: hs})
				continue
			}
			doubles = append(doubles, fmt.Sprintf("%s on %s at %s", vip, strings.Join(hs, "+"), x.At.Format("15:04:05.000")))
		}
	}
	return doubles, passing
}
