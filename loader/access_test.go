package loader

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func entries(t testing.TB, s ...string) []AccessEntry {
	t.Helper()
	var out []AccessEntry
	for _, r := range rules(t, s...) {
		out = append(out, AccessEntry(r))
	}
	return out
}

func TestCompileAccess(t *testing.T) {
	for _, c := range []struct {
		name         string
		rules        []string
		defaultAllow bool
		want         []string
	}{
		{"nothing: the defaults", nil, false, []string{"deny 0.0.0.0/0", "deny ::/0"}},
		{"default allow", []string{"deny 10.0.0.0/8"}, true, []string{"allow 0.0.0.0/0", "deny 10.0.0.0/8", "allow ::/0"}},
		{"a later rule inside an earlier one is dropped", []string{"allow 10.0.0.0/8", "deny 10.1.0.0/16", "deny 10.1.2.3/32"}, false,
			[]string{"deny 0.0.0.0/0", "allow 10.0.0.0/8", "deny ::/0"}},
		{"a later rule around an earlier one stays", []string{"deny 10.1.0.0/16", "allow 10.0.0.0/8"}, false,
			[]string{"deny 0.0.0.0/0", "allow 10.0.0.0/8", "deny 10.1.0.0/16", "deny ::/0"}},
		{"repeats: the first decides", []string{"allow 192.0.2.0/24", "deny 192.0.2.0/24", "allow 192.0.2.0/24"}, false,
			[]string{"deny 0.0.0.0/0", "allow 192.0.2.0/24", "deny ::/0"}},
		{"a rule for everything replaces the default", []string{"deny 10.0.0.0/8", "allow 0.0.0.0/0", "deny 192.0.2.0/24"}, false,
			[]string{"allow 0.0.0.0/0", "deny 10.0.0.0/8", "deny ::/0"}},
		{"families never shadow each other", []string{"allow ::/0", "deny 10.0.0.0/8"}, true,
			[]string{"allow 0.0.0.0/0", "deny 10.0.0.0/8", "allow ::/0"}},
		{"host bits cleared", []string{"allow 10.1.2.3/8", "deny 2001:db8::1/32"}, false,
			[]string{"deny 0.0.0.0/0", "allow 10.0.0.0/8", "deny ::/0", "deny 2001:db8::/32"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := CompileAccess(rules(t, c.rules...), c.defaultAllow)
			require.NoError(t, err)
			require.Equal(t, entries(t, c.want...), got)
		})
	}
}

func TestCompileAccessRefuses(t *testing.T) {
	for _, c := range []struct {
		rules []AccessRule
		want  string
	}{
		{[]AccessRule{{Prefix: netip.Prefix{}}}, "compile access list: rule 0: invalid Prefix is not a valid prefix"},
		{rules(t, "allow 10.0.0.0/8", "deny ::ffff:10.1.0.0/112"), "compile access list: rule 1: ::ffff:10.1.0.0/112 is IPv4-mapped; write it as 10.1.0.0/16"},
		{rules(t, "deny ::ffff:0:0/90"), "compile access list: rule 0: ::ffff:0.0.0.0/90 is IPv4-mapped; give the IPv4 prefix"},
	} {
		_, err := CompileAccess(c.rules, false)
		require.EqualError(t, err, c.want)
	}
	many := make([]AccessRule, MaxAccessEntries-1)
	for i := range many {
		many[i] = AccessRule{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)}
	}
	_, err := CompileAccess(many, false)
	require.EqualError(t, err, "compile access list: 65537 entries (of 65535 rules and the defaults) exceed the limit 65536")
	_, err = CompileAccess(many[:MaxAccessEntries-2], false)
	require.NoError(t, err, "the limit itself fits")
}

// firstMatch is what the rules say of an address, read as written.
func firstMatch(rs []AccessRule, def bool, a netip.Addr) bool {
	for _, r := range rs {
		if r.Prefix.Masked().Contains(a) {
			return r.Allow
		}
	}
	return def
}

// longestMatch is what an LPM table says of an address; no entry denies.
func longestMatch(es []AccessEntry, a netip.Addr) bool {
	best, allow := -1, false
	for _, e := range es {
		if e.Prefix.Bits() > best && e.Prefix.Contains(a) {
			best, allow = e.Prefix.Bits(), e.Allow
		}
	}
	return allow
}

// randomRules draws rules over a few base addresses at random lengths, so
// that they nest, repeat and shadow each other often.
func randomRules(rng *rand.Rand, n int) []AccessRule {
	bases := []netip.Addr{
		netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.1.200.9"), netip.MustParseAddr("192.0.2.77"),
		netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8:ffff::5"), netip.MustParseAddr("fd00::9"),
	}
	out := make([]AccessRule, n)
	for i := range out {
		a := bases[rng.IntN(len(bases))]
		if rng.IntN(4) == 0 {
			b := a.AsSlice()
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			a, _ = netip.AddrFromSlice(b)
		}
		out[i] = AccessRule{Prefix: netip.PrefixFrom(a, rng.IntN(a.BitLen()+1)), Allow: rng.IntN(2) == 0}
	}
	return out
}

// randomAddr is near the rules' addresses, or anywhere.
func randomAddr(rng *rand.Rand, rs []AccessRule) netip.Addr {
	var a netip.Addr
	if len(rs) > 0 && rng.IntN(4) != 0 {
		b := rs[rng.IntN(len(rs))].Prefix.Addr().AsSlice()
		for n := rng.IntN(3); n > 0; n-- {
			b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
		}
		a, _ = netip.AddrFromSlice(b)
		return a
	}
	b := make([]byte, []int{4, 16}[rng.IntN(2)])
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	a, _ = netip.AddrFromSlice(b)
	return a
}

// TestCompileAccessMatchesFirstMatch: for random rule lists and
// addresses, the longest match in the compiled table is the first match
// of the rules.
func TestCompileAccessMatchesFirstMatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 0xacc))
	dropped := 0
	for i := 0; i < 3000; i++ {
		rs := randomRules(rng, rng.IntN(40))
		def := rng.IntN(2) == 0
		es, err := CompileAccess(rs, def)
		require.NoError(t, err)
		require.True(t, slices.IsSortedFunc(es, compareAccessEntry))
		dropped += len(rs) + 2 - len(es)
		for j := 0; j < 50; j++ {
			a := randomAddr(rng, rs)
			require.Equal(t, firstMatch(rs, def, a), longestMatch(es, a), "rules %v default %v: address %s, table %v", rs, def, a, es)
		}
	}
	require.Greater(t, dropped, 10000, "the rules must shadow each other often for the test to mean anything")
}

func TestSetAccessList(t *testing.T) {
	d := openTestDataplane(t)
	strict := siteAccess(t)[aclStrict]
	got, set, err := d.AccessList(aclStrict)
	require.NoError(t, err)
	require.True(t, set)
	require.Equal(t, strict, got)

	_, set, err = d.AccessList(aclUnset)
	require.NoError(t, err)
	require.False(t, set, "never set")
	ids, err := d.AccessListIDs()
	require.NoError(t, err)
	require.Equal(t, []AccessID{aclStrict, aclOpen}, ids)

	// Repeats with one verdict are stored once; host bits are cleared.
	require.NoError(t, d.SetAccessList(aclUnset, entries(t, "allow 10.1.2.3/8", "allow 10.0.0.0/8", "deny ::/0")))
	got, set, err = d.AccessList(aclUnset)
	require.NoError(t, err)
	require.True(t, set)
	require.Equal(t, entries(t, "allow 10.0.0.0/8", "deny ::/0"), got)

	// An empty list is set, and denies everyone.
	require.NoError(t, d.SetAccessList(aclUnset, nil))
	got, set, err = d.AccessList(aclUnset)
	require.NoError(t, err)
	require.True(t, set)
	require.Empty(t, got)

	require.NoError(t, d.ClearAccessList(aclUnset))
	_, set, err = d.AccessList(aclUnset)
	require.NoError(t, err)
	require.False(t, set)
	require.NoError(t, d.ClearAccessList(aclUnset), "clearing a list that is not set")

	for _, c := range []struct {
		id   AccessID
		es   []AccessEntry
		want string
	}{
		{0, nil, "set access list: access list id 0 out of range (1..4095)"},
		{MaxAccessLists, nil, "set access list: access list id 4096 out of range (1..4095)"},
		{5, entries(t, "allow 10.0.0.0/8", "deny 10.9.9.9/8"), "set access list access-5: entry 1 (10.0.0.0/8) repeats entry 0 with the other verdict"},
		{5, entries(t, "allow ::ffff:10.0.0.0/104"), "set access list access-5: entry 0: ::ffff:10.0.0.0/104 is IPv4-mapped; write it as 10.0.0.0/8"},
		{5, make([]AccessEntry, MaxAccessEntries+1), "set access list access-5: 65537 entries exceed the limit 65536"},
	} {
		require.EqualError(t, d.SetAccessList(c.id, c.es), c.want)
		require.EqualError(t, ValidateAccessList(c.id, c.es), c.want)
	}
	_, set, err = d.AccessList(5)
	require.NoError(t, err)
	require.False(t, set, "nothing is written on an error")
	require.EqualError(t, d.ClearAccessList(0), "clear access list: access list id 0 out of range (1..4095)")
	_, _, err = d.AccessList(MaxAccessLists)
	require.EqualError(t, err, "read access list: access list id 4096 out of range (1..4095)")

	// The largest list fits.
	big := make([]AccessEntry, MaxAccessEntries)
	for i := range big {
		big[i] = AccessEntry{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), Allow: i%2 == 0}
	}
	require.NoError(t, d.SetAccessList(MaxAccessLists-1, big))
	got, _, err = d.AccessList(MaxAccessLists - 1)
	require.NoError(t, err)
	require.Len(t, got, MaxAccessEntries)
}

func TestValidateServicesAccess(t *testing.T) {
	vips := []VIP{{Addr: vip4}}
	for _, c := range []struct {
		svc  Service
		want string
	}{
		{Service{VIP: vip4, Proto: ProtoTCP, Port: 80, Access: MaxAccessLists},
			"services[0] 192.0.2.10:80/tcp: access list 4096 out of range (max 4095)"},
		{Service{VIP: vip4, Proto: ProtoTCP, Port: 80, Reject: true},
			"services[0] 192.0.2.10:80/tcp: reject needs an enforced whitelist or an access list"},
	} {
		require.EqualError(t, ValidateServices(vips, []Service{c.svc}), c.want)
	}
	require.NoError(t, ValidateServices(vips, []Service{{VIP: vip4, Proto: ProtoTCP, Port: 80, Access: 1, Reject: true}}))

	// The table holds MaxServiceEntries rows, VIPs included: 63 full port
	// ranges of 1024 ports and one more row than that is too many.
	var svcs []Service
	for p := 1; len(svcs) < MaxServiceEntries-1; p++ {
		svcs = append(svcs, Service{VIP: vip4, Proto: ProtoTCP, Port: uint16(p), Listener: 1, Access: 1})
	}
	require.NoError(t, ValidateServices(vips, svcs))
	svcs = append(svcs, Service{VIP: vip4, Proto: ProtoUDP, Port: 1})
	require.EqualError(t, ValidateServices(vips, svcs), "services: 65537 VIPs and services exceed the table size 65536")
}

// TestSetServicesFillsTheTable: a table filled to its size goes in, and
// reads back whole.
func TestSetServicesFillsTheTable(t *testing.T) {
	d := openTestDataplane(t)
	vips := []VIP{{Addr: vip4}, {Addr: vip6}}
	var svcs []Service
	svcs = append(svcs, Service{VIP: vip6, Proto: ProtoTCP, Port: 443, Listener: 4, Dispatch: true})
	for p := 1; len(svcs) < MaxServiceEntries-len(vips); p++ {
		svcs = append(svcs, Service{VIP: vip4, Proto: Proto([]uint8{6, 17}[p%2]), Port: uint16(p/2 + 1),
			Listener: 3, Dispatch: true, Access: aclOpen})
	}
	require.NoError(t, d.SetServices(vips, svcs))
	gotV, gotS, err := d.Services()
	require.NoError(t, err)
	require.Equal(t, vips, gotV)
	require.Equal(t, len(svcs), len(gotS))
	require.True(t, slices.Contains(gotS, svcs[12345]))
	require.True(t, slices.Contains(gotS, svcs[0]))
}
