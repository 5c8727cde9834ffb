package ipam

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// requests asks for an address of pool for each name, as services[0..].
func requests(pool string, names ...string) []Request {
	rs := make([]Request, len(names))
	for i, n := range names {
		rs[i] = Request{Service: n, Pool: pool, Index: i}
	}
	return rs
}

func mustAssign(t *testing.T, pools []Pool, reserved []netip.Addr, prev Allocations, want []Request) (Allocations, []Change) {
	t.Helper()
	got, changes, err := Assign(pools, reserved, prev, want)
	if err != nil {
		t.Fatal(err)
	}
	return got, changes
}

func wantAllocs(t *testing.T, got Allocations, want map[string]string) {
	t.Helper()
	w := Allocations{}
	for n, a := range want {
		w[n] = addr(a)
	}
	if !maps.Equal(got, w) {
		t.Errorf("allocations %v, want %v", got, w)
	}
}

func TestFirstFreeInPoolOrder(t *testing.T) {
	// A range listed before a CIDR is handed out first: the pool's order,
	// not the addresses' order.
	p := mustPool(t, "public", false, "10.0.0.10-10.0.0.12", "10.0.0.0/30")
	got, changes := mustAssign(t, []Pool{p}, nil, nil, requests("public", "a", "b", "c", "d", "e"))
	wantAllocs(t, got, map[string]string{"a": "10.0.0.10", "b": "10.0.0.11", "c": "10.0.0.12", "d": "10.0.0.0", "e": "10.0.0.1"})
	for _, c := range changes {
		if c.Kind != Assigned || c.Pool != "public" {
			t.Errorf("change %v, want assigned from public", c)
		}
	}
	if s := changes[0].String(); s != `service "a": assigned 10.0.0.10 from vip_pools[public]` {
		t.Errorf("change reads %q", s)
	}
}

func TestAvoidBuggyIPs(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	buggy := mustPool(t, "p", true, "10.0.0.254-10.0.1.2")
	got, _ := mustAssign(t, []Pool{buggy}, nil, nil, requests("p", names[:3]...))
	wantAllocs(t, got, map[string]string{"a": "10.0.0.254", "b": "10.0.1.1", "c": "10.0.1.2"})
	if t.Failed() {
		return
	}
	// Without it, .255 and .0 are addresses like any other, a CIDR's
	// network address included (MetalLB's meaning).
	plain := mustPool(t, "p", false, "10.0.0.254-10.0.1.2")
	got, _ = mustAssign(t, []Pool{plain}, nil, nil, requests("p", names...))
	wantAllocs(t, got, map[string]string{"a": "10.0.0.254", "b": "10.0.0.255", "c": "10.0.1.0", "d": "10.0.1.1"})
	cidr := mustPool(t, "p", false, "10.0.2.0/24")
	got, _ = mustAssign(t, []Pool{cidr}, nil, nil, requests("p", "a"))
	wantAllocs(t, got, map[string]string{"a": "10.0.2.0"})

	// A kept address that avoid_buggy_ips now leaves out moves.
	got, changes := mustAssign(t, []Pool{mustPool(t, "p", true, "10.0.2.0/24")}, nil, got, requests("p", "a"))
	wantAllocs(t, got, map[string]string{"a": "10.0.2.1"})
	if changes[0].Kind != Moved {
		t.Errorf("change %v, want moved", changes[0])
	}
}

func TestCIDRAndRangeInOnePool(t *testing.T) {
	p := mustPool(t, "mixed", true, "192.0.2.0/30", "198.51.100.7-198.51.100.8", "2001:db8::1-2001:db8::2")
	names := []string{"a", "b", "c", "d", "e", "f"}
	got, _ := mustAssign(t, []Pool{p}, nil, nil, requests("mixed", names...))
	wantAllocs(t, got, map[string]string{"a": "192.0.2.1", "b": "192.0.2.2", "c": "192.0.2.3",
		"d": "198.51.100.7", "e": "198.51.100.8", "f": "2001:db8::1"})
	if u := Usage([]Pool{p}, nil, got); u[0] != (PoolUsage{Name: "mixed", Size: 7, Used: 6, Free: 1}) {
		t.Errorf("usage %+v", u[0])
	}
}

func TestIPv6(t *testing.T) {
	p := mustPool(t, "v6", true, "2001:db8::ff/128", "2001:db8:1::/64")
	got, _ := mustAssign(t, []Pool{p}, []netip.Addr{addr("2001:db8:1::")}, nil, requests("v6", "a", "b", "c"))
	wantAllocs(t, got, map[string]string{"a": "2001:db8::ff", "b": "2001:db8:1::1", "c": "2001:db8:1::2"})
	u := Usage([]Pool{p}, []netip.Addr{addr("2001:db8:1::")}, got)
	want := PoolUsage{Name: "v6", Size: 1<<64 - 1, Used: 3, Reserved: 1, Free: 1<<64 - 5}
	if u[0] != want {
		t.Errorf("usage %+v, want %+v (saturated)", u[0], want)
	}
}

func TestPoolExhausted(t *testing.T) {
	p := mustPool(t, "public", true, "10.0.0.1-10.0.0.14")
	other := mustPool(t, "other", false, "10.9.0.0/24")
	prev := Allocations{}
	var want []Request
	for i := range 14 {
		name := fmt.Sprintf("s%d", i)
		prev[name] = addr(fmt.Sprintf("10.0.0.%d", i+1))
		want = append(want, Request{Service: name, Pool: "public", Index: i + 4})
	}
	want = append(want, Request{Service: "db", Pool: "public", Index: 3}, Request{Service: "web", Pool: "other", Index: 20})
	got, changes, err := Assign([]Pool{p, other}, nil, prev, want)
	if err == nil || err.Error() != `vip_pools[public]: no free address for services[3] ("db"): all 14 addresses are in use` {
		t.Fatalf("err = %v", err)
	}
	if got != nil || changes != nil {
		t.Errorf("an error still returns allocations %v and changes %v", got, changes)
	}

	// Two waiting, and configured VIPs taking some of the room.
	reserved := []netip.Addr{addr("10.0.0.2"), addr("10.0.0.3"), addr("10.0.0.3"), addr("10.9.0.1")}
	var many []Request
	for i := range 14 {
		many = append(many, Request{Service: fmt.Sprintf("s%d", i), Pool: "public", Index: i})
	}
	_, _, err = Assign([]Pool{p, other}, reserved, nil, many)
	wantErr := `vip_pools[public]: no free address for services[12] ("s12"), services[13] ("s13"): all 14 addresses are in use (2 by configured VIPs)`
	if err == nil || err.Error() != wantErr {
		t.Errorf("err = %v\nwant %s", err, wantErr)
	}
}

func TestDeleteThenCreateReusesTheAddress(t *testing.T) {
	pools := []Pool{mustPool(t, "p", false, "10.0.0.0/29")}
	first, _ := mustAssign(t, pools, nil, nil, requests("p", "a", "b", "c"))
	// b is deleted: its address goes back to the pool...
	second, changes := mustAssign(t, pools, nil, first, requests("p", "a", "c"))
	wantAllocs(t, second, map[string]string{"a": "10.0.0.0", "c": "10.0.0.2"})
	last := changes[len(changes)-1]
	if last != (Change{Kind: Released, Service: "b", Addr: addr("10.0.0.1")}) {
		t.Errorf("last change %v, want b released", last)
	}
	// ...and the next service created gets it.
	third, _ := mustAssign(t, pools, nil, second, requests("p", "a", "c", "d"))
	wantAllocs(t, third, map[string]string{"a": "10.0.0.0", "c": "10.0.0.2", "d": "10.0.0.1"})
}

func TestNoSharedAddressAfterRestart(t *testing.T) {
	pools := []Pool{mustPool(t, "p", true, "10.0.0.0/29")}
	path := filepath.Join(t.TempDir(), "ipam.json")
	allocs, _ := mustAssign(t, pools, nil, nil, requests("p", "a", "b", "c"))
	if err := Save(path, allocs); err != nil {
		t.Fatal(err)
	}
	// A restart: the allocations come back from the file only, and new
	// services arrive before the old ones in the configuration.
	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(loaded, allocs) {
		t.Fatalf("loaded %v, saved %v", loaded, allocs)
	}
	after, _ := mustAssign(t, pools, nil, loaded, requests("p", "x", "y", "c", "b", "a"))
	wantAllocs(t, after, map[string]string{"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3", "x": "10.0.0.4", "y": "10.0.0.5"})
	assertUnique(t, after)
}

func assertUnique(t *testing.T, al Allocations) {
	t.Helper()
	owner := map[netip.Addr]string{}
	for n, a := range al {
		if o, dup := owner[a]; dup {
			t.Errorf("%s held by %s and %s", a, o, n)
		}
		owner[a] = n
	}
}

func TestMovedWhenItsPoolChanges(t *testing.T) {
	old := []Pool{mustPool(t, "p", false, "10.0.0.0/29"), mustPool(t, "q", false, "10.1.0.0/29")}
	prev, _ := mustAssign(t, old, nil, nil, requests("p", "a", "b", "c"))
	// p shrinks under c's address, and b now asks for pool q.
	pools := []Pool{mustPool(t, "p", false, "10.0.0.0/31", "10.0.0.5/32"), old[1]}
	want := []Request{{Service: "a", Pool: "p"}, {Service: "b", Pool: "q", Index: 1}, {Service: "c", Pool: "p", Index: 2}}
	got, changes := mustAssign(t, pools, nil, prev, want)
	wantAllocs(t, got, map[string]string{"a": "10.0.0.0", "b": "10.1.0.0", "c": "10.0.0.1"})
	wantChanges := []string{
		`service "a": keeps 10.0.0.0 from vip_pools[p]`,
		`service "b": moved from 10.0.0.1 to 10.1.0.0 from vip_pools[q]: 10.0.0.1 is not in vip_pools[q]`,
		`service "c": moved from 10.0.0.2 to 10.0.0.1 from vip_pools[p]: 10.0.0.2 is not in vip_pools[p]`,
	}
	var gotChanges []string
	for _, c := range changes {
		gotChanges = append(gotChanges, c.String())
	}
	if !slices.Equal(gotChanges, wantChanges) {
		t.Errorf("changes\n%s\nwant\n%s", strings.Join(gotChanges, "\n"), strings.Join(wantChanges, "\n"))
	}
}

func TestReservedAddressesAreSkipped(t *testing.T) {
	pools := []Pool{mustPool(t, "p", false, "10.0.0.0/29")}
	reserved := []netip.Addr{addr("10.0.0.0"), addr("10.0.0.2"), addr("192.0.2.1")}
	got, _ := mustAssign(t, pools, reserved, nil, requests("p", "a", "b", "c"))
	wantAllocs(t, got, map[string]string{"a": "10.0.0.1", "b": "10.0.0.3", "c": "10.0.0.4"})
	if u := Usage(pools, reserved, got); u[0] != (PoolUsage{Name: "p", Size: 8, Used: 3, Reserved: 2, Free: 3}) {
		t.Errorf("usage %+v", u[0])
	}

	// An address the operator now configures as a VIP is no longer the
	// service's.
	got, changes := mustAssign(t, pools, append(reserved, addr("10.0.0.3")), got, requests("p", "a", "b", "c"))
	wantAllocs(t, got, map[string]string{"a": "10.0.0.1", "b": "10.0.0.5", "c": "10.0.0.4"})
	if c := changes[1]; c.Kind != Moved || c.Why != "10.0.0.3 is a configured VIP" {
		t.Errorf("change %v, want b moved off the VIP", c)
	}
}

func TestTwoServicesWithOneAddressInPrev(t *testing.T) {
	// Assign never writes this, but a hand-edited prev must not pass it on:
	// the first of want keeps it.
	pools := []Pool{mustPool(t, "p", false, "10.0.0.0/29")}
	prev := Allocations{"a": addr("10.0.0.3"), "b": addr("10.0.0.3")}
	got, changes := mustAssign(t, pools, nil, prev, requests("p", "b", "a"))
	wantAllocs(t, got, map[string]string{"b": "10.0.0.3", "a": "10.0.0.0"})
	if c := changes[1]; c.Kind != Moved || c.Why != `10.0.0.3 is service "b"'s` {
		t.Errorf("change %v", c)
	}
}

func TestBadRequests(t *testing.T) {
	pools := []Pool{mustPool(t, "p", false, "10.0.0.0/29")}
	_, _, err := Assign(pools, nil, nil, []Request{
		{Service: "a", Pool: "p"}, {Service: "b", Pool: "nope", Index: 1}, {Service: "a", Pool: "p", Index: 2}, {Pool: "p", Index: 3},
	})
	want := `services[1] ("b").vip_pool: "nope": no such pool` + "\n" +
		`services[2] ("a"): asks for an address a second time (first as services[0])` + "\n" +
		`services[3]: a service needs a name to hold an address`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
	hand := Pool{Name: "h", Ranges: []Range{{From: addr("10.0.0.9"), To: addr("10.0.0.1")}}}
	if _, _, err := Assign([]Pool{hand}, nil, nil, requests("h", "a")); err == nil {
		t.Error("a range running downwards is accepted")
	}
}

func TestDeterministic(t *testing.T) {
	pools := []Pool{mustPool(t, "p", true, "10.0.0.250-10.0.1.10"), mustPool(t, "q", false, "2001:db8::/126")}
	var names []string
	prev := map[string]string{}
	for i := range 12 {
		names = append(names, fmt.Sprintf("s%02d", i))
		if i%3 != 0 {
			prev[fmt.Sprintf("s%02d", i)] = fmt.Sprintf("10.0.1.%d", 12-i)
		}
	}
	// Two services gone, s01's address out of p, s04's s02's too, s11's
	// a configured VIP.
	prev["gone1"], prev["gone2"], prev["s04"] = "10.0.0.251", "10.0.0.252", "10.0.1.10"
	want := requests("p", names...)
	want[5].Pool, want[7].Pool = "q", "q"

	var first Allocations
	var firstChanges []Change
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 50 {
		keys := slices.Sorted(maps.Keys(prev))
		rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		p := Allocations{}
		for _, k := range keys {
			p[k] = addr(prev[k])
		}
		got, changes := mustAssign(t, pools, []netip.Addr{addr("10.0.1.1")}, p, want)
		if run == 0 {
			first, firstChanges = got, changes
			continue
		}
		if !maps.Equal(got, first) || !reflect.DeepEqual(changes, firstChanges) {
			t.Fatalf("run %d: %v %v, first run: %v %v", run, got, changes, first, firstChanges)
		}
	}
	assertUnique(t, first)
}

// TestAssignProperties checks random pools, configured VIPs, previous
// allocations and requests: no address twice, every address handed out
// by its service's pool and not a configured VIP, every address that can
// be kept kept, every new one the first free of its pool, and an error
// only when a pool has fewer free addresses than services waiting.
func TestAssignProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 9))
	randAddr := func() netip.Addr {
		if rng.IntN(4) == 0 {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.IntN(40))})
		}
		return netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(3)), byte(rng.IntN(256))})
	}
	for iter := range 3000 {
		// Pools: disjoint slices of 10.0.0.0/22 and 2001:db8::/120.
		var pools []Pool
		var addresses []string
		for i := range 1 + rng.IntN(3) {
			addresses = addresses[:0]
			for range 1 + rng.IntN(3) {
				base := netip.AddrFrom4([4]byte{10, 0, byte(i), byte(rng.IntN(8) * 32)})
				switch rng.IntN(3) {
				case 0:
					addresses = append(addresses, netip.PrefixFrom(base, 27+rng.IntN(6)).String())
				case 1:
					from := base.As4()
					from[3] += byte(rng.IntN(16))
					to := from
					to[3] += byte(rng.IntN(16))
					addresses = append(addresses, netip.AddrFrom4(from).String()+"-"+netip.AddrFrom4(to).String())
				default:
					addresses = append(addresses, fmt.Sprintf("2001:db8::%x-2001:db8::%x", i*10, i*10+rng.IntN(10)))
				}
			}
			p, err := ParsePool(fmt.Sprintf("p%d", i), addresses, rng.IntN(2) == 0)
			if err != nil {
				continue // overlapping entries or nothing left: not a pool
			}
			pools = append(pools, p)
		}
		if len(pools) == 0 {
			continue
		}
		// Addresses near the start of the pools' ranges, where the
		// allocations go, so that previous allocations and configured
		// VIPs often collide with them and with each other.
		randAddr := func() netip.Addr {
			if rng.IntN(3) == 0 {
				return randAddr()
			}
			p := pools[rng.IntN(len(pools))]
			r := p.Ranges[rng.IntN(len(p.Ranges))]
			a := r.From
			for range rng.IntN(5) {
				if a != r.To {
					a = a.Next()
				}
			}
			return a
		}
		var reserved []netip.Addr
		for range rng.IntN(6) {
			reserved = append(reserved, randAddr())
		}
		prev := Allocations{}
		for range rng.IntN(20) {
			prev[fmt.Sprintf("s%d", rng.IntN(30))] = randAddr()
		}
		var want []Request
		for _, i := range rng.Perm(30)[:rng.IntN(25)] {
			want = append(want, Request{Service: fmt.Sprintf("s%d", i), Pool: pools[rng.IntN(len(pools))].Name, Index: i})
		}

		got, changes, err := Assign(pools, reserved, prev, want)
		ctx := fmt.Sprintf("iteration %d: pools %v reserved %v prev %v want %v", iter, pools, reserved, prev, want)
		pool := map[string]Pool{}
		for _, p := range pools {
			pool[p.Name] = p
		}
		isReserved := func(a netip.Addr) bool { return slices.Contains(reserved, a) }
		// Who can keep: the first of want whose prev address is still valid.
		keeps := map[string]bool{}
		held := map[netip.Addr]bool{}
		for _, r := range want {
			a, ok := prev[r.Service]
			if ok && pool[r.Pool].Contains(a) && !isReserved(a) && !held[a] {
				keeps[r.Service], held[a] = true, true
			}
		}
		if err != nil {
			// Only a pool short of addresses is an error here.
			short := false
			for _, p := range pools {
				need, free := 0, uint64(0)
				for _, r := range want {
					if r.Pool == p.Name && !keeps[r.Service] {
						need++
					}
				}
				for _, r := range p.Ranges {
					for a := r.From; ; a = a.Next() {
						if p.Contains(a) && !held[a] && !isReserved(a) {
							free++
						}
						if a == r.To {
							break
						}
					}
				}
				if uint64(need) > free {
					short = true
				}
			}
			if !short || !strings.Contains(err.Error(), "no free address") {
				t.Fatalf("%s: error %v with room in every pool", ctx, err)
			}
			continue
		}
		if len(got) != len(want) || len(changes) < len(want) {
			t.Fatalf("%s: %d allocations, %d changes for %d services", ctx, len(got), len(changes), len(want))
		}
		owner := map[netip.Addr]string{}
		for i, r := range want {
			a := got[r.Service]
			if o, dup := owner[a]; dup {
				t.Fatalf("%s: %s given to %s and %s", ctx, a, o, r.Service)
			}
			owner[a] = r.Service
			if !pool[r.Pool].Contains(a) || isReserved(a) {
				t.Fatalf("%s: %s got %s, not its pool's to hand out", ctx, r.Service, a)
			}
			if keeps[r.Service] != (a == prev[r.Service] && changes[i].Kind == Kept) {
				t.Fatalf("%s: %s had %s, now %s (%v)", ctx, r.Service, prev[r.Service], a, changes[i])
			}
		}
		// First free: every address a new service skipped is someone's, a
		// VIP, or left out by avoid_buggy_ips.
		for _, r := range want {
			if keeps[r.Service] {
				continue
			}
			p := pool[r.Pool]
		walk:
			for _, rg := range p.Ranges {
				for a := rg.From; ; a = a.Next() {
					if a == got[r.Service] {
						break walk
					}
					if _, used := owner[a]; p.Contains(a) && !used && !isReserved(a) {
						t.Fatalf("%s: %s got %s while %s was free", ctx, r.Service, got[r.Service], a)
					}
					if a == rg.To {
						break
					}
				}
			}
		}
	}
}
