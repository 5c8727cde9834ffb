// Package servers keeps every HAProxy instance's backend servers in the
// state the node wants them in: ready, drained or in maintenance, at the
// weight that the configuration, the health checks (control/runtime/pulse),
// a returning server's slow start and, for leastbandwidth, the measured
// byte rates make.
//
// HAProxy checks nothing itself (its servers are rendered without
// `check`): the controller computes each server's desired state
// (Compute, a pure function) and pushes what differs to every live
// instance over its runtime API. A new instance starts from Snapshot,
// rendered into its configuration, and is brought up to date on the next
// pass.
package servers

import (
	"math"
	"net/netip"
	"time"
)

// HAProxy admin states a server is put in.
const (
	Ready = "ready"
	Drain = "drain"
	Maint = "maint"
)

// Admin states of the configuration.
const (
	AdminEnabled  = "enabled"
	AdminDrain    = "drain"
	AdminDisabled = "disabled"
)

// Ref names a server in HAProxy: its backend (one priority tier of a
// pool) and its name there.
type Ref struct{ Backend, Server string }

// Server is one backend server and what decides its state.
type Server struct {
	Ref Ref
	// Key is its health's key in pulse.
	Key string
	// Group is its pool: fallback keep_last looks at a pool as a whole.
	Group string
	// Weight is the configured weight, 0-256; Equal (balance roundrobin)
	// gives every server of the pool the same one, but 0 stays 0.
	Weight int
	Equal  bool
	// Admin is the operator's state: enabled, drain or disabled.
	Admin string
	// Slowstart ramps the weight of a server that came back up.
	Slowstart time.Duration
	// KeepLast keeps the servers last up in service when none is.
	KeepLast bool
	// Bandwidth (balance leastbandwidth) weighs servers by their byte
	// rate: the busier, the lighter. The rate is measured on the node's
	// connections to Addr (any port when it has none).
	Bandwidth bool
	Addr      netip.AddrPort
	// Static says the balance cannot change a weight at run time
	// (HAProxy's map-based hash, balance source): the weight stays the
	// configured one, without a slow start.
	Static bool
}

// Desired is a server's state and effective weight in HAProxy.
type Desired struct {
	State  string
	Weight int
}

// Health is a server's verdict: up or down, and since when it is up
// after having been seen down (zero when it was up from the start, so
// that a restart of ober ramps nothing).
type Health struct {
	Up      bool
	UpSince time.Time
}

// equalWeight is the weight of every server of a roundrobin pool: high
// enough for a slow start to ramp it in steps.
const equalWeight = 100

// minRamp is where a slow start begins: a tenth of the weight, never 0
// (GORB truncated a weight of 1 to 0 and starved the server).
const minRamp = 0.1

// bandwidthFloor keeps idle servers apart from busy ones without
// dividing by a rate of zero: a server moving 1 MB/s counts as idle.
const bandwidthFloor = 1 << 20

// Compute gives every server its desired state. lastUp holds, per group,
// the servers that were up the last time any was (KeepLast); rates are
// bytes per second by server.
func Compute(servers []Server, health map[string]Health, lastUp map[string]map[Ref]bool, rates map[Ref]float64, now time.Time) map[Ref]Desired {
	anyUp := map[string]bool{}
	for _, s := range servers {
		if h := health[s.Key]; h.Up && s.Admin != AdminDisabled {
			anyUp[s.Group] = true
		}
	}
	minRate := map[string]float64{}
	for _, s := range servers {
		if !s.Bandwidth {
			continue
		}
		r := rates[s.Ref]
		if m, ok := minRate[s.Group]; !ok || r < m {
			minRate[s.Group] = r
		}
	}
	out := make(map[Ref]Desired, len(servers))
	for _, s := range servers {
		h := health[s.Key]
		up := h.Up
		if !up && s.KeepLast && !anyUp[s.Group] && lastUp[s.Group][s.Ref] {
			up = true // no server of the pool is up: the last ones stay
		}
		d := Desired{State: Ready, Weight: s.Weight}
		if s.Equal && s.Weight > 0 {
			d.Weight = equalWeight
		}
		switch {
		case s.Admin == AdminDisabled || !up:
			d.State = Maint
		case s.Admin == AdminDrain:
			d.State = Drain
		}
		if d.State == Ready && d.Weight > 0 && !s.Static {
			f := 1.0
			if s.Slowstart > 0 && !h.UpSince.IsZero() {
				if in := now.Sub(h.UpSince); in < s.Slowstart {
					f = max(minRamp, float64(in)/float64(s.Slowstart))
				}
			}
			if s.Bandwidth {
				f *= (minRate[s.Group] + bandwidthFloor) / (rates[s.Ref] + bandwidthFloor)
			}
			d.Weight = max(1, int(math.Round(float64(d.Weight)*f)))
		}
		out[s.Ref] = d
	}
	return out
}

// RememberUp updates lastUp with the servers up now: a group keeps its
// previous set while none of its servers is up.
func RememberUp(servers []Server, health map[string]Health, lastUp map[string]map[Ref]bool) {
	now := map[string]map[Ref]bool{}
	for _, s := range servers {
		if health[s.Key].Up && s.Admin != AdminDisabled {
			if now[s.Group] == nil {
				now[s.Group] = map[Ref]bool{}
			}
			now[s.Group][s.Ref] = true
		}
	}
	groups := map[string]bool{}
	for _, s := range servers {
		groups[s.Group] = true
	}
	for g := range lastUp {
		if !groups[g] {
			delete(lastUp, g)
		}
	}
	for g, set := range now {
		lastUp[g] = set
	}
}
