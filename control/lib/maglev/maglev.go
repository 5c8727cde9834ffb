// Package maglev builds the Maglev lookup table that the BPF flow
// steering program reads to pick a local HAProxy instance.
//
// The BPF side hashes each flow and reads slot = hash % M from a table of
// prime size M; the value in the slot is the ID of the instance that owns
// the flow. Only this package writes the table, so every policy decision
// lives here and the BPF side stays a single array lookup.
//
// # Population
//
// The algorithm follows Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer" (NSDI 2016), section 3.4. Each instance
// has its own permutation of the slots,
//
//	perm[j] = (offset + j*skip) % M
//	offset  = h1(Name) % M
//	skip    = h2(Name) % (M-1) + 1
//
// which visits every slot exactly once because M is prime and
// 1 <= skip < M. Instances take turns, in ascending ID order, claiming the
// next slot of their permutation that is still free. Because the
// permutation depends only on the Name, an instance tends to land on the
// same slots whatever else is in the table, which is what keeps flows
// sticky across changes.
//
// h1 and h2 are FNV-1a 64 over a one-byte seed (1 and 2 respectively)
// followed by the name, passed through the MurmurHash3 fmix64 finalizer.
// FNV-1a alone mixes the last bytes of a string poorly, and instance names
// typically differ only in a trailing number, so the finalizer is what
// keeps "haproxy-1" and "haproxy-2" from getting related permutations.
// The hashes only shape a from-scratch table; changing them later would
// reshuffle such a table, so treat them as fixed.
//
// # Differences from the paper
//
// The paper's table is only approximately balanced and is rebuilt from
// scratch on every change, relying on the permutations to keep most slots
// in place. Ober needs two stronger guarantees, so this variant adds:
//
// Exact quotas. Each weighted instance's slot count is M*w/W (w its
// weight, W the sum of weights) rounded by the largest-remainder method,
// ties going to the lower ID. At equal weights every instance therefore
// gets floor(M/N) or ceil(M/N) slots, and any weight is honoured to within
// one slot. An instance stops claiming slots once it reaches its quota, so
// the paper's round-robin fill produces exactly these counts. With very
// skewed weights an instance's quota can round down to zero; that is still
// within one slot of its share.
//
// Minimal disruption. Build takes the previous table. A slot whose owner
// is still present, still weighted and not above its new quota keeps that
// owner. Only slots of instances that are gone (or now have weight 0), and
// the surplus of instances above their new quota, are freed; an instance
// above quota gives up the slots that come latest in its own permutation,
// i.e. the ones it would have been least likely to win from scratch. The
// freed slots are then filled by the paper's round-robin among the
// instances below quota. Every moved slot therefore goes from an instance
// whose quota fell to one whose quota rose: removing an instance moves
// only its slots, adding one moves slots only to it, and reweighting moves
// exactly the change in quota. Each moved slot breaks the flows hashed to
// it, so this is the number to keep small.
//
// Ownership in the previous table is by ID. If an ID is reassigned to a
// different Name, the new instance inherits the old one's slots; callers
// that want a clean slate should retire the ID or pass a nil prev.
//
// A build from scratch (prev nil or of the wrong length) is the same fill
// over an all-free table. Instances are processed in ID order, so the
// result depends only on the set of instances, not on the order they are
// passed in.
package maglev

import (
	"fmt"
	"slices"
)

// DefaultSize is the default table size: prime, and with ~1000 slots per
// instance at 64 instances, so quotas are fine-grained.
const DefaultSize uint32 = 65537

// MaxSize is the largest prime below 2^24. The bound keeps every
// intermediate product in the quota and permutation arithmetic well inside
// 64 bits and the table small enough for a BPF array map.
const MaxSize uint32 = 16777213

// NoInstance is the slot value meaning "no live instance". It is all ones
// so that it can never collide with an instance index.
const NoInstance uint32 = 0xFFFFFFFF

// Instance is one candidate backend for the table.
type Instance struct {
	ID     uint32 // value written into the table's slots (an instance index, < NoInstance)
	Name   string // stable identity; its hash decides the permutation
	Weight uint32 // relative weight; 0 keeps it out of the table (draining)
}

// ValidateSize reports whether m can be used as a table size. It must be
// prime, or some skips would not generate a full permutation, and within
// [3, MaxSize].
func ValidateSize(m uint32) error {
	if m < 3 || m > MaxSize {
		return fmt.Errorf("maglev size %d is out of range [3, %d]", m, MaxSize)
	}
	if !isPrime(m) {
		return fmt.Errorf("maglev size %d is not prime", m)
	}
	return nil
}

// isPrime uses trial division, which is cheap enough for n < 2^24
// (at most ~2000 odd divisors) and has no failure modes to reason about.
func isPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint64(3); d*d <= uint64(n); d += 2 {
		if uint64(n)%d == 0 {
			return false
		}
	}
	return true
}

// member is a weighted instance during a build.
type member struct {
	id     uint32
	name   string
	weight uint32
	quota  uint32 // target slot count
	count  uint32 // slots currently owned in the table under construction
	offset uint32 // perm[0]
	skip   uint32 // perm stride
	next   uint32 // next slot of perm to try while filling
}

// Build returns a table of m slots. prev is the previous table (may be
// nil); when it has exactly m slots, ownership is carried over as
// described in the package documentation, otherwise the table is built
// from scratch. With no weighted instance every slot is NoInstance.
func Build(m uint32, instances []Instance, prev []uint32) ([]uint32, error) {
	if err := ValidateSize(m); err != nil {
		return nil, fmt.Errorf("build maglev table: %w", err)
	}
	members, err := weightedMembers(instances)
	if err != nil {
		return nil, fmt.Errorf("build maglev table: %w", err)
	}
	// Quotas must sum to m with each weighted instance able to hold a
	// slot; beyond m some would silently get nothing.
	if len(members) > int(m) {
		return nil, fmt.Errorf("build maglev table: %d weighted instances exceed table size %d", len(members), m)
	}

	table := make([]uint32, m)
	for i := range table {
		table[i] = NoInstance
	}
	if len(members) == 0 {
		return table, nil
	}

	assignQuotas(m, members)
	for i := range members {
		mb := &members[i]
		mb.offset = uint32(hashName(1, mb.name) % uint64(m))
		mb.skip = uint32(hashName(2, mb.name)%uint64(m-1)) + 1
		mb.next = mb.offset
	}
	if len(prev) == int(m) {
		carryOver(m, table, prev, members)
	}
	fill(m, table, members)
	return table, nil
}

// weightedMembers validates all instances, including unweighted ones so a
// bad config is caught while an instance drains, and returns the weighted
// ones sorted by ID so the build does not depend on input order.
func weightedMembers(instances []Instance) ([]member, error) {
	byID := make(map[uint32]int, len(instances))
	byName := make(map[string]int, len(instances))
	members := make([]member, 0, len(instances))
	for i, in := range instances {
		if in.ID == NoInstance {
			return nil, fmt.Errorf("instances[%d]: id %d is reserved for NoInstance", i, in.ID)
		}
		if in.Name == "" {
			return nil, fmt.Errorf("instances[%d]: empty name (id %d)", i, in.ID)
		}
		if j, dup := byID[in.ID]; dup {
			return nil, fmt.Errorf("instances[%d]: duplicate id %d (also instances[%d])", i, in.ID, j)
		}
		if j, dup := byName[in.Name]; dup {
			return nil, fmt.Errorf("instances[%d]: duplicate name %q (also instances[%d])", i, in.Name, j)
		}
		byID[in.ID] = i
		byName[in.Name] = i
		if in.Weight > 0 {
			members = append(members, member{id: in.ID, name: in.Name, weight: in.Weight})
		}
	}
	slices.SortFunc(members, func(a, b member) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return members, nil
}

// assignQuotas sets each member's quota to m*w/W by the largest-remainder
// method. Members must be sorted by ID, which makes the stable sort below
// break remainder ties towards the lower ID. Products stay below 2^56
// because m < 2^24, w < 2^32 and there are at most m members.
func assignQuotas(m uint32, members []member) {
	var total uint64
	for _, mb := range members {
		total += uint64(mb.weight)
	}
	rem := make([]uint64, len(members))
	left := uint64(m)
	for i := range members {
		share := uint64(m) * uint64(members[i].weight)
		members[i].quota = uint32(share / total)
		rem[i] = share % total
		left -= uint64(members[i].quota)
	}
	if left == 0 {
		return
	}
	order := make([]int, len(members))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case rem[a] > rem[b]:
			return -1
		case rem[a] < rem[b]:
			return 1
		}
		return 0
	})
	// left < len(members): each floor loses less than one slot.
	for _, i := range order[:left] {
		members[i].quota++
	}
}

// carryOver copies into table the slots of prev whose owner is still a
// member, then frees each member's surplus over its quota, taking the
// slots latest in that member's permutation.
func carryOver(m uint32, table, prev []uint32, members []member) {
	index := make(map[uint32]int, len(members))
	for i, mb := range members {
		index[mb.id] = i
	}
	for s, id := range prev {
		if id == NoInstance {
			continue
		}
		i, ok := index[id]
		if !ok {
			continue
		}
		table[s] = id
		members[i].count++
	}

	over := false
	for _, mb := range members {
		if mb.count > mb.quota {
			over = true
			break
		}
	}
	if !over {
		return
	}

	// Rank each over-quota member's slots by their position in its
	// permutation. The position of slot s is j = (s-offset)/skip mod m,
	// and division by skip is multiplication by its inverse since m is
	// prime. Packing (j, s) into one uint64 lets a plain sort order them.
	inv := make([]uint64, len(members))
	ranked := make([][]uint64, len(members))
	for i, mb := range members {
		if mb.count > mb.quota {
			inv[i] = modInverse(uint64(mb.skip), uint64(m))
			ranked[i] = make([]uint64, 0, mb.count)
		}
	}
	for s, id := range table {
		if id == NoInstance {
			continue
		}
		i := index[id]
		if ranked[i] == nil {
			continue
		}
		mb := &members[i]
		d := (uint64(s) + uint64(m) - uint64(mb.offset)) % uint64(m)
		j := d * inv[i] % uint64(m)
		ranked[i] = append(ranked[i], j<<32|uint64(s))
	}
	for i, r := range ranked {
		if r == nil {
			continue
		}
		slices.Sort(r)
		mb := &members[i]
		for _, v := range r[mb.quota:] {
			table[uint32(v)] = NoInstance
		}
		mb.count = mb.quota
	}
}

// fill is the paper's round-robin population restricted to members below
// quota. It terminates because quotas sum to m: while a member is below
// quota a free slot exists, and since slots never become free during the
// fill, the member's walk has not yet passed it, so each walk is at most m
// steps.
func fill(m uint32, table []uint32, members []member) {
	active := make([]int, 0, len(members))
	for i, mb := range members {
		if mb.count < mb.quota {
			active = append(active, i)
		}
	}
	for len(active) > 0 {
		kept := active[:0]
		for _, i := range active {
			mb := &members[i]
			for table[mb.next] != NoInstance {
				mb.next += mb.skip
				if mb.next >= m {
					mb.next -= m
				}
			}
			table[mb.next] = mb.id
			mb.count++
			if mb.count < mb.quota {
				kept = append(kept, i)
			}
		}
		active = kept
	}
}

// modInverse returns a^-1 mod p for prime p and 0 < a < p, by Fermat's
// little theorem. Operands are below 2^24 so products fit in 64 bits.
func modInverse(a, p uint64) uint64 {
	result := uint64(1)
	base := a % p
	for e := p - 2; e > 0; e >>= 1 {
		if e&1 == 1 {
			result = result * base % p
		}
		base = base * base % p
	}
	return result
}

// hashName is FNV-1a 64 over seed followed by name, finished with
// MurmurHash3's fmix64 so that names differing only in their last byte
// still get unrelated offsets and skips.
func hashName(seed byte, name string) uint64 {
	const (
		fnvOffset = 14695981039346656037
		fnvPrime  = 1099511628211
	)
	h := uint64(fnvOffset)
	h ^= uint64(seed)
	h *= fnvPrime
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= fnvPrime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Counts returns slots per instance ID (NoInstance included if present).
func Counts(table []uint32) map[uint32]int {
	counts := make(map[uint32]int)
	for _, id := range table {
		counts[id]++
	}
	return counts
}

// Moved returns how many slots differ between two tables of equal length;
// each such slot is a bucket of flows that changes instance.
func Moved(a, b []uint32) (int, error) {
	if len(a) != len(b) {
		return 0, fmt.Errorf("maglev tables differ in size: %d and %d slots", len(a), len(b))
	}
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n, nil
}
