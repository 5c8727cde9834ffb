package maglev

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// equalInstances returns n instances with IDs 0..n-1 and weight 1.
func equalInstances(n int) []Instance {
	out := make([]Instance, n)
	for i := range out {
		out[i] = Instance{ID: uint32(i), Name: fmt.Sprintf("haproxy-%d", i), Weight: 1}
	}
	return out
}

// weightedInstances returns one instance per weight with IDs 0..len-1.
func weightedInstances(weights ...uint32) []Instance {
	out := make([]Instance, len(weights))
	for i, w := range weights {
		out[i] = Instance{ID: uint32(i), Name: fmt.Sprintf("haproxy-%d", i), Weight: w}
	}
	return out
}

func without(in []Instance, id uint32) []Instance {
	var out []Instance
	for _, x := range in {
		if x.ID != id {
			out = append(out, x)
		}
	}
	return out
}

func mustBuild(t testing.TB, m uint32, in []Instance, prev []uint32) []uint32 {
	t.Helper()
	table, err := Build(m, in, prev)
	require.NoError(t, err)
	require.Len(t, table, int(m))
	return table
}

func mustMoved(t testing.TB, a, b []uint32) int {
	t.Helper()
	n, err := Moved(a, b)
	require.NoError(t, err)
	return n
}

// requireBalanced checks that exactly the given IDs own slots, each
// floor(m/n) or ceil(m/n) of them, and that no slot is empty.
func requireBalanced(t *testing.T, table []uint32, ids []uint32) {
	t.Helper()
	m, n := len(table), len(ids)
	counts := Counts(table)
	require.NotContains(t, counts, NoInstance, "every slot must be filled")
	require.Len(t, counts, n, "only the live instances own slots")
	lo, hi := m/n, (m+n-1)/n
	for _, id := range ids {
		c := counts[id]
		require.True(t, c == lo || c == hi, "instance %d has %d slots, want %d or %d", id, c, lo, hi)
	}
}

func ids(in []Instance) []uint32 {
	out := make([]uint32, len(in))
	for i, x := range in {
		out[i] = x.ID
	}
	return out
}

func TestValidateSize(t *testing.T) {
	for _, m := range []uint32{3, 5, 251, 1009, 65537, MaxSize} {
		require.NoError(t, ValidateSize(m), "size %d", m)
	}
	for _, m := range []uint32{0, 1, 2, 4, 9, 65536, 65535, 1 << 20, MaxSize + 2, 1<<24 + 43, NoInstance} {
		err := ValidateSize(m)
		require.Error(t, err, "size %d", m)
		require.ErrorContains(t, err, strconv.FormatUint(uint64(m), 10))
	}
	require.EqualError(t, ValidateSize(65536), "maglev size 65536 is not prime")
	require.ErrorContains(t, ValidateSize(2), "out of range")
	require.ErrorContains(t, ValidateSize(1<<24+43), "out of range") // prime, but too big
}

func TestMaxSizeIsLargestPrimeBelow2To24(t *testing.T) {
	require.True(t, isPrime(MaxSize))
	for n := MaxSize + 1; n < 1<<24; n++ {
		require.False(t, isPrime(n), "%d is prime and larger than MaxSize", n)
	}
	require.True(t, isPrime(DefaultSize))
}

func TestIsPrime(t *testing.T) {
	// Cross-check trial division against a sieve.
	const limit = 20000
	composite := make([]bool, limit)
	for i := 2; i < limit; i++ {
		if !composite[i] {
			for j := i * i; j < limit; j += i {
				composite[j] = true
			}
		}
	}
	for n := 0; n < limit; n++ {
		require.Equal(t, n >= 2 && !composite[n], isPrime(uint32(n)), "n=%d", n)
	}
}

func TestBuildEqualWeights(t *testing.T) {
	for _, m := range []uint32{251, 1009, DefaultSize} {
		for _, n := range []int{1, 2, 3, 7, 64} {
			if int(m) < n {
				continue
			}
			t.Run(fmt.Sprintf("M=%d/N=%d", m, n), func(t *testing.T) {
				in := equalInstances(n)
				requireBalanced(t, mustBuild(t, m, in, nil), ids(in))
			})
		}
	}
}

func TestQuotaTieBreakLowerID(t *testing.T) {
	// 251/3 = 83.67: two instances get 84; equal remainders go to the lower IDs.
	in := []Instance{
		{ID: 9, Name: "c", Weight: 1},
		{ID: 4, Name: "a", Weight: 1},
		{ID: 5, Name: "b", Weight: 1},
	}
	counts := Counts(mustBuild(t, 251, in, nil))
	require.Equal(t, map[uint32]int{4: 84, 5: 84, 9: 83}, counts)
}

func TestBuildRemoveInstance(t *testing.T) {
	for _, m := range []uint32{1009, DefaultSize} {
		for _, tc := range []struct {
			n  int
			ks []uint32
		}{
			{8, []uint32{0, 3, 7}},
			{64, []uint32{0, 1, 31, 63}},
		} {
			for _, k := range tc.ks {
				t.Run(fmt.Sprintf("M=%d/N=%d/k=%d", m, tc.n, k), func(t *testing.T) {
					in := equalInstances(tc.n)
					before := mustBuild(t, m, in, nil)
					oldCount := Counts(before)[k]
					require.Positive(t, oldCount)

					rest := without(in, k)
					after := mustBuild(t, m, rest, before)

					require.Equal(t, oldCount, mustMoved(t, before, after))
					for s := range before {
						if before[s] != k {
							require.Equal(t, before[s], after[s], "slot %d moved but was not owned by the removed instance", s)
						}
					}
					requireBalanced(t, after, ids(rest))
				})
			}
		}
	}
}

func TestBuildDrainIsLikeRemoval(t *testing.T) {
	const m = DefaultSize
	in := equalInstances(8)
	before := mustBuild(t, m, in, nil)
	in[5].Weight = 0
	after := mustBuild(t, m, in, before)
	require.Equal(t, mustBuild(t, m, without(in, 5), before), after)
	require.NotContains(t, Counts(after), uint32(5))
	require.Equal(t, Counts(before)[5], mustMoved(t, before, after))
}

func TestBuildAddInstance(t *testing.T) {
	for _, m := range []uint32{1009, DefaultSize} {
		t.Run(fmt.Sprintf("M=%d", m), func(t *testing.T) {
			in := equalInstances(8)
			before := mustBuild(t, m, in[:7], nil)
			after := mustBuild(t, m, in, before)

			const added = uint32(7)
			for s := range before {
				if before[s] != after[s] {
					require.Equal(t, added, after[s], "slot %d moved to an existing instance", s)
				}
			}
			require.Equal(t, Counts(after)[added], mustMoved(t, before, after))
			requireBalanced(t, after, ids(in))
		})
	}
}

func TestBuildWeights(t *testing.T) {
	for _, weights := range [][]uint32{
		{1, 2, 3, 4},
		{1, 1, 1, 10},
		{7, 1000, 1, 3},
		{1 << 31, 1 << 30, 1<<32 - 1},
	} {
		for _, m := range []uint32{251, 1009, DefaultSize} {
			t.Run(fmt.Sprintf("w=%v/M=%d", weights, m), func(t *testing.T) {
				in := weightedInstances(weights...)
				counts := Counts(mustBuild(t, m, in, nil))
				require.NotContains(t, counts, NoInstance)
				var total float64
				for _, w := range weights {
					total += float64(w)
				}
				for i, w := range weights {
					share := float64(w) / total
					exact := float64(m) * share
					got := counts[uint32(i)]
					require.Less(t, abs(float64(got)-exact), 1.0,
						"instance %d: %d slots, exact share %.3f", i, got, exact)
					if m == DefaultSize && exact >= 100 {
						require.InEpsilon(t, share, float64(got)/float64(m), 0.01, "instance %d", i)
					}
				}
			})
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// requireOnlyQuotaMoves checks the disruption bound for any change of
// weights: every moved slot leaves an instance whose count fell and lands
// on one whose count rose, and the number moved is the total rise.
func requireOnlyQuotaMoves(t *testing.T, before, after []uint32) {
	t.Helper()
	oldC, newC := Counts(before), Counts(after)
	rise := 0
	for id, c := range newC {
		if c > oldC[id] {
			rise += c - oldC[id]
		}
	}
	for s := range before {
		if before[s] == after[s] {
			continue
		}
		from, to := before[s], after[s]
		require.Less(t, newC[from], oldC[from], "slot %d left instance %d whose quota did not fall", s, from)
		require.Greater(t, newC[to], oldC[to], "slot %d went to instance %d whose quota did not rise", s, to)
	}
	require.Equal(t, rise, mustMoved(t, before, after))
}

func TestBuildReweight(t *testing.T) {
	const m = DefaultSize
	const x = uint32(2)
	in := weightedInstances(1, 1, 1, 1)
	before := mustBuild(t, m, in, nil)

	in[x].Weight = 3
	up := mustBuild(t, m, in, before)
	for s := range before {
		if before[s] != up[s] {
			require.NotEqual(t, x, before[s], "slot %d left the instance whose weight rose", s)
			require.Equal(t, x, up[s], "slot %d moved between instances whose weight did not change", s)
		}
	}
	gain := Counts(up)[x] - Counts(before)[x]
	require.Equal(t, 65537*3/6-65537/4, gain) // 32768 - 16384
	require.Equal(t, gain, mustMoved(t, before, up))
	requireOnlyQuotaMoves(t, before, up)
	// Carrying over must not cost accuracy: quotas are the same as from scratch.
	require.Equal(t, Counts(mustBuild(t, m, in, nil)), Counts(up))

	in[x].Weight = 1
	down := mustBuild(t, m, in, up)
	for s := range up {
		if up[s] != down[s] {
			require.Equal(t, x, up[s], "slot %d left an instance whose weight did not change", s)
			require.NotEqual(t, x, down[s], "slot %d went to the instance whose weight fell", s)
		}
	}
	require.Equal(t, Counts(up)[x]-Counts(down)[x], mustMoved(t, up, down))
	requireOnlyQuotaMoves(t, up, down)
	require.Equal(t, Counts(before), Counts(down))
}

func TestBuildReweightMany(t *testing.T) {
	for _, m := range []uint32{1009, DefaultSize} {
		t.Run(fmt.Sprintf("M=%d", m), func(t *testing.T) {
			before := mustBuild(t, m, weightedInstances(1, 2, 3, 4, 5), nil)
			after := mustBuild(t, m, weightedInstances(5, 4, 3, 2, 1), before)
			requireOnlyQuotaMoves(t, before, after)
		})
	}
}

func TestBuildIsFixedPoint(t *testing.T) {
	in := weightedInstances(3, 1, 4, 1, 5, 9, 2, 6)
	table := mustBuild(t, DefaultSize, in, nil)
	require.Equal(t, table, mustBuild(t, DefaultSize, in, table))
}

func TestOverQuotaReleasesLeastPreferred(t *testing.T) {
	const m = uint32(1009)
	in := equalInstances(3)
	prev := make([]uint32, m) // instance 0 owns everything
	table := mustBuild(t, m, in, prev)

	// Instance 0 must keep exactly the first quota slots of its permutation.
	quota := Counts(table)[0]
	require.Equal(t, 337, quota)
	off := uint32(hashName(1, in[0].Name) % uint64(m))
	skip := uint32(hashName(2, in[0].Name)%uint64(m-1)) + 1
	s := off
	for j := uint32(0); j < m; j++ {
		if j < uint32(quota) {
			require.Equal(t, uint32(0), table[s], "preferred slot %d (position %d) was released", s, j)
		} else {
			require.NotEqual(t, uint32(0), table[s], "slot %d (position %d) kept over a preferred one", s, j)
		}
		s = (s + skip) % m
	}
}

func TestModInverse(t *testing.T) {
	for _, p := range []uint64{3, 251, 65537, uint64(MaxSize)} {
		for _, a := range []uint64{1, 2, p / 2, p - 1} {
			require.Equal(t, uint64(1), a*modInverse(a, p)%p, "a=%d p=%d", a, p)
		}
	}
}

func TestBuildPrevWithForeignOwners(t *testing.T) {
	// Unknown IDs, NoInstance and a mix of live owners must all be
	// tolerated; only live owners within quota are kept.
	const m = uint32(1009)
	in := equalInstances(4)
	prev := make([]uint32, m)
	for i := range prev {
		switch i % 4 {
		case 0:
			prev[i] = NoInstance
		case 1:
			prev[i] = 1000 + uint32(i)
		default:
			prev[i] = uint32(i % 3)
		}
	}
	table := mustBuild(t, m, in, prev)
	requireBalanced(t, table, ids(in))
	for s := range prev {
		if prev[s] == 2 {
			// 2 owned ~168 slots, under its quota of 252, so it keeps them all.
			require.Equal(t, uint32(2), table[s])
		}
	}
}

func TestBuildZeroWeight(t *testing.T) {
	const m = uint32(1009)
	in := weightedInstances(1, 0, 1, 1)
	table := mustBuild(t, m, in, nil)
	require.NotContains(t, Counts(table), uint32(1))
	requireBalanced(t, table, []uint32{0, 2, 3})

	for _, in := range [][]Instance{nil, weightedInstances(0, 0, 0)} {
		table := mustBuild(t, m, in, nil)
		require.Equal(t, map[uint32]int{NoInstance: int(m)}, Counts(table))
		// A stale prev must not resurrect anything.
		require.Equal(t, table, mustBuild(t, m, in, mustBuild(t, m, equalInstances(3), nil)))
	}

	// Unweighted instances do not count against the table size.
	in = append(weightedInstances(1, 1, 1), weightedInstances(0, 0, 0, 0, 0, 0)...)
	for i := 3; i < len(in); i++ {
		in[i].ID = uint32(100 + i)
		in[i].Name = fmt.Sprintf("drained-%d", i)
	}
	requireBalanced(t, mustBuild(t, 3, in, nil), []uint32{0, 1, 2})
}

func TestBuildDeterministic(t *testing.T) {
	const m = DefaultSize
	in := weightedInstances(5, 1, 1, 2, 3, 8, 1, 1, 4, 2)
	for i := range in {
		in[i].ID = uint32(i * 7) // sparse IDs
	}
	want := mustBuild(t, m, in, nil)
	prev := mustBuild(t, m, in[:6], nil)
	wantFromPrev := mustBuild(t, m, in, prev)

	rng := rand.New(rand.NewPCG(1, 2))
	for range 10 {
		shuffled := append([]Instance(nil), in...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		require.Equal(t, want, mustBuild(t, m, shuffled, nil))
		require.Equal(t, wantFromPrev, mustBuild(t, m, shuffled, prev))
	}

	// A prev of the wrong size is ignored, not partially applied.
	for _, n := range []uint32{0, 1, m - 1, m + 1} {
		bad := make([]uint32, n) // all owned by instance 0
		require.Equal(t, want, mustBuild(t, m, in, bad), "prev of %d slots", n)
	}
}

func TestBuildDistinctPermutations(t *testing.T) {
	// Names differing in one trailing digit must not collapse onto the
	// same offsets, or a from-scratch table would be clumped.
	const m = DefaultSize
	offsets := make(map[uint32]bool)
	skips := make(map[uint32]bool)
	for i := range 64 {
		name := fmt.Sprintf("haproxy-%d", i)
		offsets[uint32(hashName(1, name)%uint64(m))] = true
		skips[uint32(hashName(2, name)%uint64(m-1))+1] = true
	}
	require.Len(t, offsets, 64)
	require.Len(t, skips, 64)
}

func TestBuildErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    uint32
		in   []Instance
		want string
	}{
		{"bad size", 65536, equalInstances(2), "maglev size 65536 is not prime"},
		{"size out of range", MaxSize + 2, equalInstances(2), "16777215"},
		{"duplicate id", 251, []Instance{
			{ID: 0, Name: "a", Weight: 1},
			{ID: 1, Name: "b", Weight: 1},
			{ID: 2, Name: "c", Weight: 1},
			{ID: 2, Name: "d", Weight: 0},
		}, "instances[3]: duplicate id 2"},
		{"duplicate name", 251, []Instance{
			{ID: 0, Name: "a", Weight: 1},
			{ID: 1, Name: "b", Weight: 1},
			{ID: 2, Name: "b", Weight: 1},
		}, `instances[2]: duplicate name "b"`},
		{"NoInstance id", 251, []Instance{
			{ID: 0, Name: "a", Weight: 1},
			{ID: NoInstance, Name: "b", Weight: 1},
		}, "instances[1]: id 4294967295"},
		{"empty name", 251, []Instance{
			{ID: 0, Name: "a", Weight: 1},
			{ID: 1, Name: "", Weight: 0},
		}, "instances[1]: empty name"},
		{"too many instances", 61, equalInstances(62), "62 weighted instances exceed table size 61"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table, err := Build(tc.m, tc.in, nil)
			require.ErrorContains(t, err, tc.want)
			require.Nil(t, table)
		})
	}
	// Exactly as many instances as slots is fine: one slot each.
	require.Equal(t, map[uint32]int{0: 1, 1: 1, 2: 1}, Counts(mustBuild(t, 3, equalInstances(3), nil)))
}

func TestSpread(t *testing.T) {
	const m = DefaultSize
	const flows = 100_000
	table := mustBuild(t, m, equalInstances(4), nil)
	rng := rand.New(rand.NewPCG(42, 43))
	hits := make(map[uint32]int)
	for range flows {
		hits[table[rng.Uint32()%m]]++
	}
	require.Len(t, hits, 4)
	for id, n := range hits {
		require.InDelta(t, 0.25, float64(n)/flows, 0.02, "instance %d", id)
	}
}

func TestCountsAndMoved(t *testing.T) {
	a := []uint32{0, 1, 1, NoInstance}
	b := []uint32{0, 2, 1, 1}
	require.Equal(t, map[uint32]int{0: 1, 1: 2, NoInstance: 1}, Counts(a))
	require.Equal(t, 2, mustMoved(t, a, b))
	require.Equal(t, 0, mustMoved(t, a, a))
	_, err := Moved(a, b[:3])
	require.ErrorContains(t, err, "4 and 3")
}

func TestBuildMaxSize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 16M-slot table")
	}
	in := equalInstances(3)
	before := mustBuild(t, MaxSize, in, nil)
	requireBalanced(t, before, ids(in))
	after := mustBuild(t, MaxSize, in[:2], before)
	require.Equal(t, Counts(before)[2], mustMoved(t, before, after))
	requireBalanced(t, after, []uint32{0, 1})
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{8, 64} {
		in := equalInstances(n)
		b.Run(fmt.Sprintf("scratch/N=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Build(DefaultSize, in, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("remove-one/N=%d", n), func(b *testing.B) {
			prev := mustBuild(b, DefaultSize, in, nil)
			rest := in[1:]
			for b.Loop() {
				if _, err := Build(DefaultSize, rest, prev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
