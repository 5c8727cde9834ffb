package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// VerdictCount is the traffic that got one action for one reason.
type VerdictCount struct {
	Reason Reason `json:"-"`
	Action Action `json:"-"`
	Counter
}

// Assignment counts the connections sk_lookup gave one instance.
type Assignment struct {
	Flows    uint64 `json:"flows"`
	Fallback uint64 `json:"fallback"` // its preferred instance had no socket
}

// Counters are the dataplane's counters summed over CPUs.
type Counters struct {
	// Verdicts holds every (reason, action) pair seen, in counter order.
	Verdicts []VerdictCount
	// Steered is per instance: packets the XDP program sent to its CPU.
	Steered [MaxInstances]Counter
	// Assigned is per instance: connections sk_lookup handed to it.
	Assigned [MaxInstances]Assignment
	// Unassigned counts lookups for a dispatched service that found no
	// socket at all (the kernel then refuses the connection).
	Unassigned uint64
}

// ByReason sums Verdicts per reason.
func (c *Counters) ByReason() map[Reason]Counter {
	out := make(map[Reason]Counter, numReasons)
	for _, v := range c.Verdicts {
		s := out[v.Reason]
		s.Packets += v.Packets
		s.Bytes += v.Bytes
		out[v.Reason] = s
	}
	return out
}

// Get returns the count for one reason and action.
func (c *Counters) Get(r Reason, a Action) Counter {
	for _, v := range c.Verdicts {
		if v.Reason == r && v.Action == a {
			return v.Counter
		}
	}
	return Counter{}
}

// Counters reads all counters and sums them over CPUs.
func (d *Dataplane) Counters() (*Counters, error) {
	out := &Counters{}
	verdicts, err := sumPerCPU(d.maps.OberCounters, func(a *Counter, c oberOberCounter) {
		a.Packets += c.Packets
		a.Bytes += c.Bytes
	})
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	for key, sum := range verdicts {
		if sum.Packets != 0 {
			out.Verdicts = append(out.Verdicts, VerdictCount{
				Reason: Reason(key / numActions), Action: Action(key % numActions), Counter: sum,
			})
		}
	}
	steered, err := sumPerCPU(d.maps.OberSteered, func(a *Counter, c oberOberCounter) {
		a.Packets += c.Packets
		a.Bytes += c.Bytes
	})
	if err != nil {
		return nil, fmt.Errorf("read steering counters: %w", err)
	}
	copy(out.Steered[:], steered)
	assigned, err := sumPerCPU(d.maps.OberAssigned, func(a *Assignment, c oberOberAssign) {
		a.Flows += c.Flows
		a.Fallback += c.Fallback
	})
	if err != nil {
		return nil, fmt.Errorf("read assignment counters: %w", err)
	}
	copy(out.Assigned[:], assigned[:MaxInstances])
	out.Unassigned = assigned[assignNoSocket].Flows
	return out, nil
}

// sumPerCPU reads a whole per-CPU array in one batch and folds each key's
// per-CPU values into one.
func sumPerCPU[V, S any](m *ebpf.Map, add func(*S, V)) ([]S, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	n := int(m.MaxEntries())
	keys := make([]uint32, n)
	vals := make([]V, n*ncpu)
	var cursor ebpf.MapBatchCursor
	got, err := m.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, err
	}
	out := make([]S, n)
	for i := 0; i < got; i++ {
		for c := 0; c < ncpu; c++ {
			add(&out[keys[i]], vals[i*ncpu+c])
		}
	}
	return out, nil
}
