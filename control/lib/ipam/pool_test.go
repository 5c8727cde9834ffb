package ipam

import (
	"math"
	"net/netip"
	"strings"
	"testing"
)

func mustPool(t *testing.T, name string, avoidBuggy bool, addresses ...string) Pool {
	t.Helper()
	p, err := ParsePool(name, addresses, avoidBuggy)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePoolErrorsNameEntryAndValue(t *testing.T) {
	for _, tc := range []struct {
		addresses  []string
		avoidBuggy bool
		want       string
	}{
		{nil, false, `vip_pools[public].addresses: no address given`},
		{[]string{"10.0.0.0/24", "10.1.0.5/24"}, false,
			`vip_pools[public].addresses[1]: "10.1.0.5/24": has host bits set: did you mean 10.1.0.0/24?`},
		{[]string{"10.0.0.9-10.0.0.1"}, false, `vip_pools[public].addresses[0]: "10.0.0.9-10.0.0.1": ends before it starts`},
		{[]string{"10.0.0.1-2001:db8::1"}, false, `vip_pools[public].addresses[0]: "10.0.0.1-2001:db8::1": mixes IPv4 and IPv6`},
		{[]string{"10.0.0.1-10.0.0"}, false, `vip_pools[public].addresses[0]: "10.0.0.1-10.0.0": not a range`},
		{[]string{"10.0.0.0/33"}, false, `vip_pools[public].addresses[0]: "10.0.0.0/33": not a CIDR`},
		{[]string{"public"}, false, `vip_pools[public].addresses[0]: "public": not a CIDR`},
		{[]string{"10.0.0.1"}, false, `vip_pools[public].addresses[0]: "10.0.0.1": not a CIDR (such as 10.20.0.0/28) or a range`},
		{[]string{"::ffff:10.0.0.1/128"}, false, `"::ffff:10.0.0.1/128": write the IPv4 address 10.0.0.1 as such`},
		{[]string{"fe80::1%eth0-fe80::2"}, false, `"fe80::1%eth0-fe80::2": an address with a zone cannot be a VIP`},
		{[]string{"10.0.0.0/24", "10.0.1.0/24", "10.0.0.128-10.0.1.4"}, false,
			`vip_pools[public].addresses[2]: "10.0.0.128-10.0.1.4": overlaps addresses[0] ("10.0.0.0/24")`},
		{[]string{"10.0.0.255-10.0.1.0"}, true, `vip_pools[public]: avoid_buggy_ips leaves no address to hand out`},
	} {
		_, err := ParsePool("public", tc.addresses, tc.avoidBuggy)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePool(%q, %v) = %v, want an error with %q", tc.addresses, tc.avoidBuggy, err, tc.want)
		}
	}
	_, err := ParsePool("public", []string{"nonsense", "10.0.0.0/24", "10.0.0.9-10.0.0.1"}, false)
	if err == nil || strings.Count(err.Error(), "\n") != 1 {
		t.Errorf("two bad entries: %v, want both named, one per line", err)
	}
	if _, err := ParsePool("", []string{"10.0.0.0/24"}, false); err == nil {
		t.Error("a pool without a name is accepted")
	}
}

func TestPoolSize(t *testing.T) {
	for _, tc := range []struct {
		addresses  []string
		avoidBuggy bool
		want       uint64
	}{
		{[]string{"10.0.0.0/24"}, false, 256}, // MetalLB: network and broadcast included
		{[]string{"10.0.0.0/24"}, true, 254},
		{[]string{"10.0.0.0/23"}, true, 508},
		{[]string{"10.0.0.1-10.0.0.14"}, true, 14},
		{[]string{"10.0.0.250-10.0.1.5"}, true, 10},
		{[]string{"10.0.0.7/32"}, false, 1},
		{[]string{"10.0.0.7-10.0.0.7"}, true, 1},
		{[]string{"0.0.0.0/0"}, false, 1 << 32},
		{[]string{"0.0.0.0/0"}, true, 1<<32 - 2<<24},
		{[]string{"10.0.0.0/30", "10.0.1.10-10.0.1.12"}, false, 7},
		{[]string{"2001:db8::/120"}, true, 256}, // avoid_buggy_ips is about IPv4
		{[]string{"2001:db8::/65"}, false, 1 << 63},
		{[]string{"2001:db8::/64"}, false, math.MaxUint64},
		{[]string{"2001:db8::/65", "2001:db9::/65", "2001:dba::/65"}, false, math.MaxUint64},
		{[]string{"::/0"}, false, math.MaxUint64},
	} {
		if got := mustPool(t, "p", tc.avoidBuggy, tc.addresses...).Size(); got != tc.want {
			t.Errorf("Size of %q (avoid_buggy_ips %v) = %d, want %d", tc.addresses, tc.avoidBuggy, got, tc.want)
		}
	}
}

func TestRangeString(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/24":         "10.0.0.0/24",
		"10.0.0.0-10.0.0.255": "10.0.0.0/24",
		"10.0.0.1-10.0.0.255": "10.0.0.1-10.0.0.255",
		"10.0.0.0-10.0.0.254": "10.0.0.0-10.0.0.254",
		"10.0.0.4-10.0.0.4":   "10.0.0.4",
		"10.0.0.4/32":         "10.0.0.4",
		"0.0.0.0/0":           "0.0.0.0/0",
		"2001:db8::/64":       "2001:db8::/64",
	} {
		r, err := ParseRange(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.String(); got != want {
			t.Errorf("ParseRange(%q).String() = %q, want %q", in, got, want)
		}
	}
}

func TestCheckPools(t *testing.T) {
	a := mustPool(t, "a", false, "10.0.0.0/24")
	b := mustPool(t, "b", false, "10.0.1.0/24", "10.0.0.250-10.0.0.252")
	c := mustPool(t, "c", false, "2001:db8::/64")
	if err := CheckPools([]Pool{a, c}); err != nil {
		t.Errorf("disjoint pools: %v", err)
	}
	err := CheckPools([]Pool{a, b, c, mustPool(t, "a", false, "10.9.0.0/24")})
	want := "vip_pools[b]: 10.0.0.250-10.0.0.252 overlaps vip_pools[a] (10.0.0.0/24)\nvip_pools[a]: a second pool of that name"
	if err == nil || err.Error() != want {
		t.Errorf("CheckPools = %v, want %q", err, want)
	}
}

func TestContainsFollowsAvoidBuggyIPs(t *testing.T) {
	p := mustPool(t, "p", true, "10.0.0.0/23")
	for a, want := range map[string]bool{"10.0.0.0": false, "10.0.0.1": true, "10.0.0.255": false, "10.0.1.0": false, "10.0.1.254": true, "10.0.2.1": false} {
		if got := p.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", a, got, want)
		}
	}
}
