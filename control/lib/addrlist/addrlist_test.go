package addrlist

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ober-ingress/ober/control/lib/hostlist"
	"github.com/stretchr/testify/require"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, pfx(s))
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		list string
		want []Entry
	}{
		{"IPv4 address becomes /32", "10.0.0.1", []Entry{{Text: "10.0.0.1", Prefix: pfx("10.0.0.1/32")}}},
		{"IPv6 address becomes /128", "2001:db8::1", []Entry{{Text: "2001:db8::1", Prefix: pfx("2001:db8::1/128")}}},
		{"IPv4 CIDR", "10.1.0.0/16", []Entry{{Text: "10.1.0.0/16", Prefix: pfx("10.1.0.0/16")}}},
		{"IPv6 CIDR", "2001:db8::/64", []Entry{{Text: "2001:db8::/64", Prefix: pfx("2001:db8::/64")}}},
		{"IPv4-mapped address is unmapped", "::ffff:10.0.0.1", []Entry{{Text: "::ffff:10.0.0.1", Prefix: pfx("10.0.0.1/32")}}},
		{"IPv4-mapped CIDR is unmapped", "::ffff:10.0.0.0/120", []Entry{{Text: "::ffff:10.0.0.0/120", Prefix: pfx("10.0.0.0/24")}}},
		{"host name", "login01", []Entry{{Text: "login01", Host: "login01"}}},
		{"fully qualified name", "rgw01.internal.", []Entry{{Text: "rgw01.internal.", Host: "rgw01.internal."}}},
		{"hyphens and digits inside labels", "3com-x.a-1.example", []Entry{{Text: "3com-x.a-1.example", Host: "3com-x.a-1.example"}}},
		{"63-character label", strings.Repeat("a", 63), []Entry{{Text: strings.Repeat("a", 63), Host: strings.Repeat("a", 63)}}},
		{"expanded mix in order", "n[1-2],10.0.0.[1-2],2001:db8::/64", []Entry{
			{Text: "n1", Host: "n1"},
			{Text: "n2", Host: "n2"},
			{Text: "10.0.0.1", Prefix: pfx("10.0.0.1/32")},
			{Text: "10.0.0.2", Prefix: pfx("10.0.0.2/32")},
			{Text: "2001:db8::/64", Prefix: pfx("2001:db8::/64")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.list)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	name253 := strings.Repeat(strings.Repeat("a", 63)+".", 4)[:253]
	tests := []struct {
		name string
		list string
		want string // exact error text, or its prefix when it ends in the stdlib's wording
	}{
		{"host bits set", "a,10.0.0.5/24", `"10.0.0.5/24" has host bits set (did you mean 10.0.0.0/24?)`},
		{"host bits set IPv6", "2001:db8::1/64", `"2001:db8::1/64" has host bits set (did you mean 2001:db8::/64?)`},
		{"zone on address", "fe80::1%eth0", `"fe80::1%eth0": IPv6 zone "eth0" is not allowed (packets carry no zone, so it could never match)`},
		{"zone on prefix", "fe80::%eth0/64", `"fe80::%eth0/64": IPv6 zone "eth0" is not allowed (packets carry no zone, so it could never match)`},
		{"underscore", "good,bad_host", `"bad_host": invalid host name: label "bad_host" contains invalid character '_'`},
		{"leading hyphen", "-web", `"-web": invalid host name: label "-web" starts with a hyphen`},
		{"trailing hyphen", "web-.example", `"web-.example": invalid host name: label "web-" ends with a hyphen`},
		{"empty label", "a..b", `"a..b": invalid host name: empty label`},
		{"label too long", long + ".example", fmt.Sprintf(`%q: invalid host name: label %q is 64 characters long (max 63)`, long+".example", long)},
		{"name too long", name253 + "a", fmt.Sprintf(`%q: invalid host name: name is 254 characters long (max 253)`, name253+"a")},
		{"octet out of range", "10.0.0.[254-256]", `"10.0.0.256": invalid IP address: `},
		{"bad IPv6", "2001:db8::g", `"2001:db8::g": invalid IP address: `},
		{"bad prefix length", "10.0.0.0/33", `"10.0.0.0/33": invalid CIDR: `},
		{"hostlist syntax error", "compute[01-", `hostlist "compute[01-": offset 7: unclosed "["`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.list)
			require.Nil(t, got)
			require.Error(t, err)
			if strings.HasSuffix(tt.want, ": ") {
				require.True(t, strings.HasPrefix(err.Error(), tt.want), "error %q lacks prefix %q", err, tt.want)
				require.Greater(t, len(err.Error()), len(tt.want), "stdlib reason missing")
				return
			}
			require.EqualError(t, err, tt.want)
		})
	}
	t.Run("253-character name is fine", func(t *testing.T) {
		_, err := Parse(name253)
		require.NoError(t, err)
	})
	t.Run("hostlist errors keep their type", func(t *testing.T) {
		_, err := Parse("a,,b")
		var se *hostlist.SyntaxError
		require.ErrorAs(t, err, &se)
		require.Equal(t, 2, se.Pos)
	})
}

// fakeResolver answers from a map. Hosts in errs fail with that error;
// hosts in neither map are "not found". delay, when set, randomises timing
// so ordering bugs in the concurrent code show up.
type fakeResolver struct {
	answers map[string][]netip.Addr
	errs    map[string]error
	delay   time.Duration

	mu       sync.Mutex
	calls    map[string]int
	inFlight atomic.Int32
	maxSeen  atomic.Int32
}

func (f *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if network != "ip" {
		return nil, fmt.Errorf("fake: unexpected network %q", network)
	}
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	f.mu.Lock()
	if f.calls == nil {
		f.calls = make(map[string]int)
	}
	f.calls[host]++
	f.mu.Unlock()
	if f.delay > 0 {
		select {
		case <-time.After(rand.N(f.delay)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err, ok := f.errs[host]; ok {
		return nil, err
	}
	if a, ok := f.answers[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestResolve(t *testing.T) {
	errServfail := errors.New("server misbehaving")
	newFake := func() *fakeResolver {
		return &fakeResolver{
			answers: map[string][]netip.Addr{
				// Mapped form, as net.Resolver really returns A records, and
				// out of order, as DNS rotation delivers them.
				"web": addrs("::ffff:10.0.0.3", "2001:db8::1", "::ffff:10.0.0.2", "10.0.0.2"),
				"db":  addrs("10.0.1.1"),
				"v6":  addrs("fe80::1%eth0"),
				"nil": {},
			},
			errs:  map[string]error{"broken": errServfail},
			delay: 5 * time.Millisecond,
		}
	}
	entries := []Entry{
		{Text: "web", Host: "web"},
		{Text: "192.168.0.0/16", Prefix: pfx("192.168.0.0/16")},
		{Text: "broken", Host: "broken"},
		{Text: "db", Host: "db"},
		{Text: "nil", Host: "nil"},
		{Text: "v6", Host: "v6"},
		{Text: "web", Host: "web"},
	}
	wantPrefixes := pfxs("10.0.0.2/32", "10.0.0.3/32", "2001:db8::1/128", "192.168.0.0/16", "10.0.1.1/32", "fe80::1/128")

	t.Run("allowUnresolved", func(t *testing.T) {
		f := newFake()
		got, unresolved, err := Resolve(context.Background(), f, entries, true)
		require.NoError(t, err)
		require.Equal(t, wantPrefixes, got)
		require.Len(t, unresolved, 2)
		require.Equal(t, "broken", unresolved[0].Host)
		require.ErrorIs(t, unresolved[0].Err, errServfail)
		require.Equal(t, "nil", unresolved[1].Host)
		require.ErrorIs(t, unresolved[1].Err, ErrNoAddresses)
		require.Equal(t, 1, f.calls["web"], "a repeated name is looked up once")
	})

	t.Run("disallowUnresolved", func(t *testing.T) {
		got, unresolved, err := Resolve(context.Background(), newFake(), entries, false)
		require.Nil(t, got)
		require.Len(t, unresolved, 2)
		require.EqualError(t, err, `2 of 5 host names did not resolve: "broken": server misbehaving; "nil": no addresses`)
		require.ErrorIs(t, err, errServfail)
		require.ErrorIs(t, err, ErrNoAddresses)
	})

	t.Run("not found is reported with the resolver's reason", func(t *testing.T) {
		_, unresolved, err := Resolve(context.Background(), newFake(), []Entry{{Text: "ghost", Host: "ghost"}}, false)
		require.EqualError(t, err, `1 of 1 host names did not resolve: "ghost": lookup ghost: no such host`)
		require.Len(t, unresolved, 1)
		var dnsErr *net.DNSError
		require.ErrorAs(t, err, &dnsErr)
		require.True(t, dnsErr.IsNotFound)
	})

	t.Run("all resolved", func(t *testing.T) {
		got, unresolved, err := Resolve(context.Background(), newFake(), []Entry{{Host: "db"}, {Prefix: pfx("10.9.0.0/16")}}, false)
		require.NoError(t, err)
		require.Empty(t, unresolved)
		require.Equal(t, pfxs("10.0.1.1/32", "10.9.0.0/16"), got)
	})

	t.Run("literals only never touch the resolver", func(t *testing.T) {
		got, _, err := Resolve(context.Background(), nil, []Entry{{Prefix: pfx("10.0.0.0/8")}}, false)
		require.NoError(t, err)
		require.Equal(t, pfxs("10.0.0.0/8"), got)
	})

	t.Run("invalid entry", func(t *testing.T) {
		_, _, err := Resolve(context.Background(), newFake(), []Entry{{Text: "oops"}}, true)
		require.EqualError(t, err, `entry "oops" has neither a prefix nor a host name`)
	})
}

func TestResolveDeterministicAndBounded(t *testing.T) {
	f := &fakeResolver{answers: map[string][]netip.Addr{}, delay: 10 * time.Millisecond}
	var entries []Entry
	var want []netip.Prefix
	for i := range 100 {
		h := fmt.Sprintf("compute%03d", i+1)
		a := netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i % 256)})
		f.answers[h] = []netip.Addr{a}
		entries = append(entries, Entry{Text: h, Host: h})
		want = append(want, netip.PrefixFrom(a, 32))
	}
	for range 5 {
		start := time.Now()
		got, unresolved, err := Resolve(context.Background(), f, entries, false)
		require.NoError(t, err)
		require.Empty(t, unresolved)
		require.Equal(t, want, got)
		// Sequential lookups would average 100 * 5ms = 500ms.
		require.Less(t, time.Since(start), 400*time.Millisecond)
	}
	require.LessOrEqual(t, f.maxSeen.Load(), int32(maxConcurrentLookups))
	require.Greater(t, f.maxSeen.Load(), int32(1), "lookups should run concurrently")
}

// blockingResolver never answers; if honourCtx is false it also ignores
// cancellation, like a misbehaving custom resolver.
type blockingResolver struct {
	honourCtx bool
	release   chan struct{}
	started   chan struct{}
	once      sync.Once
}

func (b *blockingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	b.once.Do(func() { close(b.started) })
	if b.honourCtx {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.release:
			return nil, errors.New("released")
		}
	}
	<-b.release
	return nil, errors.New("released")
}

func TestResolveCancellation(t *testing.T) {
	var entries []Entry
	for i := range 40 { // more than the concurrency bound, so some wait to start
		h := fmt.Sprintf("n%d", i)
		entries = append(entries, Entry{Text: h, Host: h})
	}
	for _, honour := range []bool{true, false} {
		t.Run(fmt.Sprintf("resolver honours ctx=%v", honour), func(t *testing.T) {
			b := &blockingResolver{honourCtx: honour, release: make(chan struct{}), started: make(chan struct{})}
			t.Cleanup(func() { close(b.release) })
			ctx, cancel := context.WithCancel(context.Background())
			type result struct {
				ps  []netip.Prefix
				u   []Unresolved
				err error
			}
			ch := make(chan result, 1)
			go func() {
				// allowUnresolved=true: cancellation must still be an error.
				ps, u, err := Resolve(ctx, b, entries, true)
				ch <- result{ps, u, err}
			}()
			<-b.started
			cancel()
			select {
			case r := <-ch:
				require.ErrorIs(t, r.err, context.Canceled)
				require.Contains(t, r.err.Error(), "resolving 40 host names")
				require.Nil(t, r.ps)
				require.Nil(t, r.u)
			case <-time.After(2 * time.Second):
				t.Fatal("Resolve did not return after cancellation")
			}
		})
	}
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		f := &fakeResolver{answers: map[string][]netip.Addr{"n0": addrs("10.0.0.1")}}
		_, _, err := Resolve(ctx, f, entries[:1], true)
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("deadline", func(t *testing.T) {
		b := &blockingResolver{honourCtx: true, release: make(chan struct{}), started: make(chan struct{})}
		t.Cleanup(func() { close(b.release) })
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, _, err := Resolve(ctx, b, entries, false)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

func TestResolveLocalhostRealResolver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	entries, err := Parse("localhost")
	require.NoError(t, err)
	got, unresolved, err := Resolve(ctx, net.DefaultResolver, entries, false)
	require.NoError(t, err)
	require.Empty(t, unresolved)
	require.NotEmpty(t, got)
	for _, p := range got {
		require.Contains(t, pfxs("127.0.0.1/32", "::1/128"), p, "unexpected localhost address %s", p)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name string
		in   []netip.Prefix
		want []netip.Prefix
	}{
		{"empty", nil, []netip.Prefix{}},
		{"duplicates removed", pfxs("10.0.0.1/32", "10.0.0.1/32"), pfxs("10.0.0.1/32")},
		{"covered prefix removed", pfxs("10.1.0.0/16", "10.0.0.0/8"), pfxs("10.0.0.0/8")},
		{"covered host removed", pfxs("10.1.2.3/32", "10.1.0.0/16", "10.2.0.0/16"), pfxs("10.1.0.0/16", "10.2.0.0/16")},
		{"nested chain collapses to outermost", pfxs("10.1.1.0/24", "10.1.0.0/16", "10.0.0.0/8", "10.1.1.1/32"), pfxs("10.0.0.0/8")},
		{"IPv4 before IPv6, then address, then bits", pfxs("2001:db8::/64", "192.168.1.0/24", "::1/128", "10.0.0.0/24", "10.0.1.0/24"),
			pfxs("10.0.0.0/24", "10.0.1.0/24", "192.168.1.0/24", "::1/128", "2001:db8::/64")},
		{"IPv6 covered", pfxs("2001:db8::1/128", "2001:db8::/32"), pfxs("2001:db8::/32")},
		{"IPv4 default route does not cover IPv6", pfxs("::/0", "0.0.0.0/0", "10.0.0.0/8", "2001:db8::/32"), pfxs("0.0.0.0/0", "::/0")},
		{"adjacent prefixes kept", pfxs("10.0.1.0/24", "10.0.0.0/24"), pfxs("10.0.0.0/24", "10.0.1.0/24")},
		{"host bits masked", pfxs("10.0.0.5/24", "10.0.0.0/24"), pfxs("10.0.0.0/24")},
		{"invalid dropped", []netip.Prefix{{}, pfx("10.0.0.0/8")}, pfxs("10.0.0.0/8")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]netip.Prefix(nil), tt.in...)
			got := Normalize(tt.in)
			require.Equal(t, tt.want, got)
			require.Equal(t, in, tt.in, "input must not be modified")
		})
	}
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name           string
		prev, next     []netip.Prefix
		added, removed []netip.Prefix
	}{
		{"identical", pfxs("10.0.0.0/8", "::1/128"), pfxs("::1/128", "10.0.0.0/8"), nil, nil},
		{"from empty", nil, pfxs("2001:db8::/64", "10.0.0.1/32"), pfxs("10.0.0.1/32", "2001:db8::/64"), nil},
		{"to empty", pfxs("10.0.0.1/32"), nil, nil, pfxs("10.0.0.1/32")},
		{"add and remove", pfxs("10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"), pfxs("10.0.0.2/32", "10.0.0.4/32", "10.0.0.3/32"),
			pfxs("10.0.0.4/32"), pfxs("10.0.0.1/32")},
		{"widening replaces covered entries", pfxs("10.1.0.0/16", "10.2.0.0/16"), pfxs("10.0.0.0/8", "10.1.0.0/16"),
			pfxs("10.0.0.0/8"), pfxs("10.1.0.0/16", "10.2.0.0/16")},
		{"duplicates in input ignored", pfxs("10.0.0.1/32", "10.0.0.1/32"), pfxs("10.0.0.1/32"), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			added, removed := Diff(tt.prev, tt.next)
			require.Equal(t, tt.added, added)
			require.Equal(t, tt.removed, removed)
		})
	}
}
