package ipam

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Allocations maps a service's name to its address.
type Allocations map[string]netip.Addr

// Request is a service that wants an address.
type Request struct {
	// Service is the service's name, the key of Allocations.
	Service string
	// Pool is the name of the pool it takes its address from.
	Pool string
	// Index is the service's index in the configuration's services,
	// for messages ("services[3]").
	Index int
}

func (r Request) label() string { return fmt.Sprintf("services[%d] (%q)", r.Index, r.Service) }

// Kind is what happened to a service's address.
type Kind int

const (
	// Assigned: a service that had no address got one.
	Assigned Kind = iota
	// Kept: a service keeps its address.
	Kept
	// Moved: a service's address can no longer be its own (Change.Why);
	// it got another one.
	Moved
	// Released: a service that is gone gave its address back.
	Released
)

func (k Kind) String() string {
	switch k {
	case Assigned:
		return "assigned"
	case Kept:
		return "kept"
	case Moved:
		return "moved"
	case Released:
		return "released"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Change is what Assign did to one service's address, for the logs.
type Change struct {
	Kind    Kind
	Service string
	// Pool is the pool Addr came from; empty for Released.
	Pool string
	// Addr is the service's address now, or the one it gave back.
	Addr netip.Addr
	// Prev and Why, for Moved: the address it had, and why it lost it.
	Prev netip.Addr
	Why  string
}

func (c Change) String() string {
	switch c.Kind {
	case Assigned:
		return fmt.Sprintf("service %q: assigned %s from %s", c.Service, c.Addr, poolPath(c.Pool))
	case Kept:
		return fmt.Sprintf("service %q: keeps %s from %s", c.Service, c.Addr, poolPath(c.Pool))
	case Moved:
		return fmt.Sprintf("service %q: moved from %s to %s from %s: %s", c.Service, c.Prev, c.Addr, poolPath(c.Pool), c.Why)
	case Released:
		return fmt.Sprintf("service %q: released %s", c.Service, c.Addr)
	}
	return fmt.Sprintf("service %q: %v %s", c.Service, c.Kind, c.Addr)
}

// Assign computes the allocations of the services in want from those in
// prev. It is pure and deterministic: the same arguments give the same
// answer, whatever the order of prev's map.
//
//   - A service keeps its address from prev while the address is in the
//     service's pool now, is not reserved and no earlier service in want
//     keeps it too; else it moves to a new address, and its Change says
//     why.
//   - A service without one gets the first free address of its pool:
//     ranges in the pool's order, addresses ascending. Free means held by
//     no service kept or assigned in this call and not in reserved (the
//     configured VIPs). Services get theirs in want's order.
//   - A service of prev that is not in want gives its address back: the
//     next service to need one may get it.
//
// Changes lists want's services in want's order, then the released ones
// by name. On error (an unknown pool, a service asked for twice, a pool
// with fewer free addresses than services waiting) nothing is returned:
// the error names every problem, such as `vip_pools[public]: no free
// address for services[3] ("db"): all 14 addresses are in use`.
func Assign(pools []Pool, reserved []netip.Addr, prev Allocations, want []Request) (Allocations, []Change, error) {
	byName := make(map[string]int, len(pools))
	var errs []error
	for i, p := range pools {
		if err := p.check(); err != nil {
			errs = append(errs, err)
		}
		if _, dup := byName[p.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: a second pool of that name", poolPath(p.Name)))
			continue
		}
		byName[p.Name] = i
	}
	taken := make(map[netip.Addr]string, len(reserved)+len(want)) // address -> service, "" when reserved
	for _, a := range reserved {
		taken[a] = ""
	}
	seen := make(map[string]int, len(want))
	for i, r := range want {
		if r.Service == "" {
			errs = append(errs, fmt.Errorf("services[%d]: a service needs a name to hold an address", r.Index))
			continue
		}
		if j, dup := seen[r.Service]; dup {
			errs = append(errs, fmt.Errorf("%s: asks for an address a second time (first as services[%d])", r.label(), want[j].Index))
			continue
		}
		seen[r.Service] = i
		if _, ok := byName[r.Pool]; !ok {
			errs = append(errs, fmt.Errorf("%s.vip_pool: %q: no such pool", r.label(), r.Pool))
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}

	// Every address that stays goes first, so that no new service takes
	// one a later service of want still holds.
	next := make(Allocations, len(want))
	changes := make([]Change, len(want))
	for i, r := range want {
		changes[i] = Change{Kind: Assigned, Service: r.Service, Pool: r.Pool}
		a, had := prev[r.Service]
		if !had {
			continue
		}
		switch owner, held := taken[a]; {
		case !pools[byName[r.Pool]].Contains(a):
			changes[i].Kind, changes[i].Prev, changes[i].Why = Moved, a, fmt.Sprintf("%s is not in %s", a, poolPath(r.Pool))
		case held && owner == "":
			changes[i].Kind, changes[i].Prev, changes[i].Why = Moved, a, fmt.Sprintf("%s is a configured VIP", a)
		case held:
			changes[i].Kind, changes[i].Prev, changes[i].Why = Moved, a, fmt.Sprintf("%s is service %q's", a, owner)
		default:
			changes[i].Kind, changes[i].Addr = Kept, a
			taken[a] = r.Service
			next[r.Service] = a
		}
	}

	cursors := make([]cursor, len(pools))
	waiting := make([][]Request, len(pools)) // per pool, the services left without an address
	for i, r := range want {
		if changes[i].Kind == Kept {
			continue
		}
		p := byName[r.Pool]
		a, ok := cursors[p].take(pools[p], taken)
		if !ok {
			waiting[p] = append(waiting[p], r)
			continue
		}
		taken[a] = r.Service
		next[r.Service] = a
		changes[i].Addr = a
	}
	for p, rs := range waiting {
		if len(rs) > 0 {
			errs = append(errs, exhausted(pools[p], rs, reserved))
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}

	for _, name := range slices.Sorted(maps.Keys(prev)) {
		if _, ok := seen[name]; !ok {
			changes = append(changes, Change{Kind: Released, Service: name, Addr: prev[name]})
		}
	}
	return next, changes, nil
}

func exhausted(p Pool, rs []Request, reserved []netip.Addr) error {
	labels := make([]string, len(rs))
	for i, r := range rs {
		labels[i] = r.label()
	}
	var vips int
	for _, a := range dedup(reserved) {
		if p.Contains(a) {
			vips++
		}
	}
	size := p.Size()
	msg := fmt.Sprintf("%s: no free address for %s: all %d addresses are in use", poolPath(p.Name), strings.Join(labels, ", "), size)
	if size == 1 {
		msg = fmt.Sprintf("%s: no free address for %s: its one address is in use", poolPath(p.Name), strings.Join(labels, ", "))
	}
	switch {
	case vips == 1:
		msg += " (1 by a configured VIP)"
	case vips > 1:
		msg += fmt.Sprintf(" (%d by configured VIPs)", vips)
	}
	return errors.New(msg)
}

func dedup(as []netip.Addr) []netip.Addr {
	s := slices.Clone(as)
	slices.SortFunc(s, netip.Addr.Compare)
	return slices.Compact(s)
}

// cursor walks a pool in handing-out order. Within one Assign addresses
// are only ever taken, so the first free address never lies before the
// last one handed out: each pool is walked once, however many services
// it serves.
type cursor struct {
	ri   int        // the range being walked
	next netip.Addr // the next candidate in it; invalid at the range's start
}

func (c *cursor) take(p Pool, taken map[netip.Addr]string) (netip.Addr, bool) {
	for c.ri < len(p.Ranges) {
		r := p.Ranges[c.ri]
		a := c.next
		if !a.IsValid() {
			a = r.From
		}
		for {
			_, held := taken[a]
			free := !held && !(p.AvoidBuggyIPs && buggy(a))
			if a == r.To {
				c.ri, c.next = c.ri+1, netip.Addr{}
			} else {
				c.next = a.Next()
			}
			if free {
				return a, true
			}
			if a == r.To {
				break
			}
			a = c.next
		}
	}
	return netip.Addr{}, false
}
