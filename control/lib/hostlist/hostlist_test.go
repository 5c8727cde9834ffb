package hostlist

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestExpandComputeAndLogin(t *testing.T) {
	got, err := Expand("compute[001-100],login[01-02]")
	require.NoError(t, err)
	require.Len(t, got, 102)
	require.Equal(t, "compute001", got[0])
	require.Equal(t, "compute010", got[9])
	require.Equal(t, "compute100", got[99])
	require.Equal(t, "login01", got[100])
	require.Equal(t, "login02", got[101])
}

func TestExpand(t *testing.T) {
	tests := []struct {
		name string
		list string
		want []string
	}{
		{"plain name", "login01", []string{"login01"}},
		{"suffix after group", "rgw[01-08].internal", []string{
			"rgw01.internal", "rgw02.internal", "rgw03.internal", "rgw04.internal",
			"rgw05.internal", "rgw06.internal", "rgw07.internal", "rgw08.internal",
		}},
		{"cartesian product, leftmost slowest", "rack[1-2]-node[01-03]", []string{
			"rack1-node01", "rack1-node02", "rack1-node03",
			"rack2-node01", "rack2-node02", "rack2-node03",
		}},
		{"numbers and ranges in one group", "n[1-3,5,7-8]", []string{"n1", "n2", "n3", "n5", "n7", "n8"}},
		{"low bound with leading zero pads", "n[08-10]", []string{"n08", "n09", "n10"}},
		{"low bound without leading zero does not pad", "n[8-10]", []string{"n8", "n9", "n10"}},
		{"single zero is not padding", "n[0-2]", []string{"n0", "n1", "n2"}},
		{"single number keeps its digits", "n[007]", []string{"n007"}},
		{"padding is per range", "n[01-02,3,004-005]", []string{"n01", "n02", "n3", "n004", "n005"}},
		{"group only", "[1-3]", []string{"1", "2", "3"}},
		{"whitespace around items trimmed", "  a ,\tb[1-2]\n, c ", []string{"a", "b1", "b2", "c"}},
		{"duplicates removed, first kept", "b,a,b,n[1-2],n[2-3],a", []string{"b", "a", "n1", "n2", "n3"}},
		{"duplicates inside a group", "n[1,1-2,1]", []string{"n1", "n2"}},
		{"IPv4 passthrough", "10.0.0.1", []string{"10.0.0.1"}},
		{"CIDR passthrough", "10.1.0.0/16", []string{"10.1.0.0/16"}},
		{"IPv6 passthrough", "2001:db8::1", []string{"2001:db8::1"}},
		{"IPv6 CIDR passthrough", "2001:db8::/64", []string{"2001:db8::/64"}},
		{"IPv6 with zone passthrough (rejected later by addrlist)", "fe80::1%eth0", []string{"fe80::1%eth0"}},
		{"IPv4 last octet range", "10.0.0.[1-4]", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}},
		{"mixed operator list",
			"compute[1-2],login[01-02],10.1.0.0/16,rgw[01-02].internal,2001:db8::/64",
			[]string{"compute1", "compute2", "login01", "login02", "10.1.0.0/16", "rgw01.internal", "rgw02.internal", "2001:db8::/64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Expand(tt.list)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestExpandErrors(t *testing.T) {
	tests := []struct {
		name string
		list string
		pos  int
		msg  string // substring of SyntaxError.Msg
	}{
		{"empty list", "", 0, "empty hostlist"},
		{"blank list", "  \t ", 0, "empty hostlist"},
		{"empty item between commas", "a,,b", 2, "empty item"},
		{"blank item between commas", "a, ,b", 2, "empty item"},
		{"trailing comma", "a,b,", 4, "empty item"},
		{"leading comma", ",a", 0, "empty item"},
		{"unclosed bracket", "compute[01-", 7, `unclosed "["`},
		{"unclosed bracket in later item", "a,b[1-2,c", 3, `unclosed "["`},
		{"unmatched close bracket", "a,b1-2]", 6, `unmatched "]"`},
		{"nested bracket", "a[1-[2]]", 4, `nested "[" inside bracket group`},
		{"empty group", "node[]", 4, `empty bracket group "[]"`},
		{"empty element in group", "n[1,,3]", 4, "empty element in bracket group [1,,3]"},
		{"trailing comma in group", "n[1,]", 4, "empty element in bracket group [1,]"},
		{"non-numeric range", "n[a-b]", 2, `invalid number "a"`},
		{"non-numeric high bound", "n[1-b]", 4, `invalid number "b"`},
		{"missing high bound", "n[1-]", 4, "missing number in range"},
		{"missing low bound", "n[-3]", 2, "missing number in range"},
		{"double dash", "n[1-2-3]", 4, `invalid number "2-3"`},
		{"descending range", "n[5-1]", 2, `descending range "5-1"`},
		{"descending range after others", "x,n[1,5-1]", 6, `descending range "5-1"`},
		{"number too large", "n[12345678901]", 2, `number "12345678901" too large (more than 10 digits)`},
		{"high bound too large", "n[1-12345678901]", 4, `number "12345678901" too large`},
		{"huge range", "n[0-99999999]", 0, "expands to more than 100000 hosts"},
		{"huge product", "a,r[1-1000]n[1-1000]", 2, `item "r[1-1000]n[1-1000]" expands to more than 100000 hosts`},
		{"whitespace inside item", "a,compute01 login01", 11, `whitespace inside item "compute01 login01"`},
		{"whitespace inside group", "n[1, 2]", 4, "whitespace inside item"},
		{"brackets in IPv6", "2001:db8::[1-2]", 10, "never range-expanded"},
		{"bracketed IPv6 literal", "[2001:db8::1]", 0, "never range-expanded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Expand(tt.list)
			require.Error(t, err)
			require.Nil(t, got)
			var se *SyntaxError
			require.True(t, errors.As(err, &se), "want *SyntaxError, got %T", err)
			require.Equal(t, tt.list, se.List)
			require.Equal(t, tt.pos, se.Pos, "offset; error: %v", err)
			require.Contains(t, se.Msg, tt.msg)
			require.Equal(t, fmt.Sprintf("hostlist %q: offset %d: %s", tt.list, tt.pos, se.Msg), err.Error())
		})
	}
}

func TestSyntaxErrorFormat(t *testing.T) {
	_, err := Expand("compute[01-")
	require.EqualError(t, err, `hostlist "compute[01-": offset 7: unclosed "["`)
}

func TestExpandMaxHostsBoundary(t *testing.T) {
	tests := []struct {
		name    string
		list    string
		wantLen int // 0 means an error is expected
	}{
		{"exactly MaxHosts in one range", fmt.Sprintf("n[1-%d]", MaxHosts), MaxHosts},
		{"one more in one range", fmt.Sprintf("n[1-%d]", MaxHosts+1), 0},
		{"exactly MaxHosts as a product", "r[1-100]n[1-1000]", MaxHosts},
		{"one more as a product", "r[1-100]n[0-1000]", 0},
		{"exactly MaxHosts across items", fmt.Sprintf("n[1-%d],m", MaxHosts-1), MaxHosts},
		{"one more across items", fmt.Sprintf("n[1-%d],m", MaxHosts), 0},
		{"one more across items via literal IP", fmt.Sprintf("n[1-%d],10.0.0.1", MaxHosts), 0},
		// The limit bounds work, so duplicates count even though they are dropped.
		{"duplicates still count", fmt.Sprintf("n[1-%d],n1", MaxHosts), 0},
		{"many singles in one group", "n[" + strings.Repeat("1,", MaxHosts) + "1]", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Expand(tt.list)
			if tt.wantLen == 0 {
				var se *SyntaxError
				require.ErrorAs(t, err, &se)
				require.Contains(t, se.Msg, "expands to more than 100000 hosts")
				return
			}
			require.NoError(t, err)
			require.Len(t, got, tt.wantLen)
		})
	}
}

func FuzzExpand(f *testing.F) {
	for _, seed := range []string{
		"compute[001-100],login[01-02]",
		"rack[1-2]-node[01-03]",
		"n[1-3,5,7-8]",
		"10.0.0.[1-4],10.1.0.0/16,2001:db8::/64",
		"fe80::1%a[1]",
		"a[1-[2]]",
		"a,,b",
		"n[0-99999999]",
		" x , y ",
		"[]",
		"]",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, list string) {
		names, err := Expand(list)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error is %T, want *SyntaxError: %v", err, err)
			}
			if se.Pos < 0 || se.Pos > len(list) {
				t.Fatalf("offset %d outside list of length %d", se.Pos, len(list))
			}
			return
		}
		if len(names) == 0 || len(names) > MaxHosts {
			t.Fatalf("successful expansion of %q gave %d names", list, len(names))
		}
		seen := make(map[string]bool, len(names))
		for _, n := range names {
			if n == "" {
				t.Fatalf("empty name from %q", list)
			}
			if strings.ContainsAny(n, "[],") {
				t.Fatalf("name %q from %q contains bracket or comma", n, list)
			}
			if seen[n] {
				t.Fatalf("duplicate name %q from %q", n, list)
			}
			seen[n] = true
		}
	})
}
