package supervisor

import (
	"cmp"
	"context"
	"slices"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/lib/haproxy"
)

// probeFailures is how many probes in a row an instance may miss before
// it is killed and restarted: a wedged HAProxy holds connections it will
// never serve, and its exit is the one event the supervisor acts on.
const probeFailures = 3

// BackendState is one backend server as one instance's checks see it.
type BackendState struct {
	// Backend is the HAProxy backend (a pool's priority tier) the server
	// is in.
	Backend     string `json:"backend,omitempty"`
	Name        string `json:"name"`
	Up          bool   `json:"up"`
	Status      string `json:"status"`
	CheckStatus string `json:"check_status,omitempty"`
	Connections int64  `json:"connections"`
	// TotalConnections, BytesIn and BytesOut count since the instance
	// started.
	TotalConnections int64 `json:"total_connections,omitempty"`
	BytesIn          int64 `json:"bytes_in,omitempty"`
	BytesOut         int64 `json:"bytes_out,omitempty"`
	Weight           int   `json:"weight,omitempty"`
}

// InstanceStatus describes one instance slot.
type InstanceStatus struct {
	Index       int            `json:"index"`
	CPU         int            `json:"cpu"`
	PID         int            `json:"pid,omitempty"`
	Generation  uint64         `json:"generation,omitempty"`
	State       State          `json:"state"`
	Restarts    int            `json:"restarts"`
	Since       time.Time      `json:"since,omitzero"`
	LastExit    string         `json:"last_exit,omitempty"`
	Connections int64          `json:"connections"`
	Backends    []BackendState `json:"backends,omitempty"`
}

// Status is the supervisor's view of its instances.
type Status struct {
	Generation uint64           `json:"generation"`
	Reloads    uint64           `json:"reloads"`
	Restarts   uint64           `json:"restarts"`
	Draining   int              `json:"draining"`
	Instances  []InstanceStatus `json:"instances"`
	// Retired are the instances of earlier generations still finishing
	// their transfers, oldest first.
	Retired []RetiredStatus `json:"retired,omitempty"`
	// OldGenerations counts the earlier generations among them.
	OldGenerations int `json:"old_generations"`
}

// RetiredStatus is one replaced instance still finishing its transfers.
// An instance an earlier ober left has Generation 0 and Index -1.
type RetiredStatus struct {
	Index      int       `json:"index"`
	PID        int       `json:"pid"`
	Generation uint64    `json:"generation"`
	RetiredAt  time.Time `json:"retired_at"`
	// StopBy is when it is stopped whatever it still carries.
	StopBy time.Time `json:"stop_by"`
}

// Healthy counts instances in service.
func (st Status) Healthy() int {
	n := 0
	for _, in := range st.Instances {
		if in.State == StateHealthy {
			n++
		}
	}
	return n
}

// Status reports every slot, in index order.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Generation: s.gen, Reloads: s.reloads, Restarts: s.restarts, Draining: len(s.retired)}
	for _, sl := range s.slots {
		in := InstanceStatus{Index: sl.Index, CPU: sl.CPU, State: sl.state, Restarts: sl.restarts, LastExit: sl.lastExit}
		if p := sl.cur; p != nil {
			in.PID = p.cmd.pid
			in.Generation = p.gen
			in.Since = p.started
			in.Connections = p.conns
			in.Backends = slices.Clone(p.backends)
		}
		st.Instances = append(st.Instances, in)
	}
	slices.SortFunc(st.Instances, func(a, b InstanceStatus) int { return a.Index - b.Index })
	gens := map[uint64]bool{}
	for _, p := range s.retired {
		st.Retired = append(st.Retired, RetiredStatus{Index: p.slot.Index, PID: p.cmd.pid, Generation: p.gen,
			RetiredAt: p.retiredAt, StopBy: p.retiredAt.Add(p.maxTransfer)})
		gens[p.gen] = true
	}
	// An earlier ober's instances are one old generation more, of no
	// number this supervisor knows (0).
	for pid, at := range s.staleRetiring {
		st.Retired = append(st.Retired, RetiredStatus{Index: -1, PID: pid, RetiredAt: at, StopBy: at.Add(s.opts.MaxTransfer)})
		gens[0] = true
	}
	slices.SortFunc(st.Retired, func(a, b RetiredStatus) int {
		return cmp.Or(cmp.Compare(a.Generation, b.Generation), a.Index-b.Index, a.PID-b.PID)
	})
	st.OldGenerations = len(gens)
	return st
}

// probeLoop asks every serving instance for its state each interval.
func (s *Supervisor) probeLoop() {
	defer close(s.probeDone)
	tick := time.NewTicker(s.opts.ProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.probeStop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		var procs []*proc
		for _, sl := range s.slots {
			if sl.cur != nil {
				procs = append(procs, sl.cur)
			}
		}
		s.mu.Unlock()
		for _, p := range procs {
			s.probe(p)
		}
	}
}

func (s *Supervisor) probe(p *proc) {
	timeout := min(s.opts.ProbeInterval/2, 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rt := haproxy.Runtime{Path: p.sock, Timeout: timeout}
	rows, err := rt.Stat(ctx)

	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[p.slot.Index]
	if s.stopping || sl == nil || sl.cur != p {
		return
	}
	before, upBefore := sl.state, upCount(p.backends)
	defer func() {
		if sl.state != before || upCount(p.backends) != upBefore {
			s.changed()
		}
	}()
	if err != nil {
		p.failed++
		sl.state = StateUnhealthy
		s.log.Warn("instance probe failed", "instance", p.slot.Index, "pid", p.cmd.pid, "err", err, "in_a_row", p.failed)
		if p.failed >= probeFailures {
			s.log.Error("instance does not answer; killing it", "instance", p.slot.Index, "pid", p.cmd.pid)
			p.cmd.signal(syscall.SIGKILL)
		}
		return
	}
	p.failed = 0
	sl.state = StateHealthy
	var conns int64
	for _, r := range rows {
		if r.Type == 0 {
			conns += r.CurConns
		}
	}
	p.conns = conns
	p.backends = p.backends[:0]
	for _, r := range rows {
		if r.Type != haproxy.TypeServer {
			continue
		}
		b := haproxy.ServerStates([]haproxy.StatRow{r})[0]
		p.backends = append(p.backends, BackendState{
			Backend: b.Backend, Name: b.Name, Up: b.Up, Status: b.Status, CheckStatus: b.CheckStatus, Connections: b.CurConns,
			TotalConnections: r.TotalConns, BytesIn: r.BytesIn, BytesOut: r.BytesOut, Weight: b.Weight,
		})
	}
}

func upCount(bs []BackendState) int {
	n := 0
	for _, b := range bs {
		if b.Up {
			n++
		}
	}
	return n
}

// LiveInstance is an instance of the serving generation whose sockets
// are in the sockmap.
type LiveInstance struct {
	Index  int
	PID    int
	Socket string
	// Backends are its servers as its last probe read them.
	Backends []BackendState
}

// Live lists the serving generation's instances in service, in index
// order: those whose servers the node keeps in step.
func (s *Supervisor) Live() []LiveInstance {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []LiveInstance
	for _, sl := range s.slots {
		if p := sl.cur; p != nil && p.live {
			out = append(out, LiveInstance{Index: sl.Index, PID: p.cmd.pid, Socket: p.sock, Backends: slices.Clone(p.backends)})
		}
	}
	slices.SortFunc(out, func(a, b LiveInstance) int { return cmp.Compare(a.Index, b.Index) })
	return out
}
