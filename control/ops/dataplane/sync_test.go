package dataplane

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader"
)

// fakeResolver answers from a table; any other name does not exist.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := f[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = netip.MustParseAddr(a)
	}
	return out, nil
}

// blockingResolver never answers; it returns when its context ends.
type blockingResolver struct{}

func (blockingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

var testHosts = fakeResolver{
	"web1":  {"10.0.0.2"},
	"web2":  {"10.0.0.2"}, // same address as web1: must dedupe
	"dual":  {"10.0.0.4", "2001:db8::4"},
	"cli01": {"10.1.0.1"},
	"cli02": {"10.1.0.2"},
	"cli03": {"10.1.0.3"},
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openTestDataplane opens a fresh dataplane on a private bpffs.
func openTestDataplane(t *testing.T) *loader.Dataplane {
	t.Helper()
	root := netnstest.BPFFS(t)
	d, err := loader.Open(loader.Options{Root: root + "/ober", Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func syncOpts() SyncOptions {
	return SyncOptions{Resolver: testHosts, Logger: quiet()}
}

func requireLive(t *testing.T, d *loader.Dataplane, gen uint64, want ...string) {
	t.Helper()
	live, info, err := d.Whitelist(loader.WhitelistFrontendHTTP)
	require.NoError(t, err)
	require.Equal(t, gen, info.Generation, "generation")
	if len(want) == 0 {
		require.Empty(t, live)
		return
	}
	require.Equal(t, prefixes(want...), live)
}

func TestSyncAddsRemovesDedupes(t *testing.T) {
	ctx := context.Background()
	d := openTestDataplane(t)
	id := loader.WhitelistFrontendHTTP

	// web1 and web2 share an address, 10.0.0.2 is also given literally,
	// and 10.9.0.7 is covered by 10.9.0.0/16: four names, three entries
	// plus dual's two addresses.
	res, err := Sync(ctx, d, id, "web[1-2],10.0.0.2,dual,10.9.0.0/16,10.9.0.7", syncOpts())
	require.NoError(t, err)
	require.Equal(t, "frontend-http", res.List)
	require.Equal(t, prefixes("10.0.0.2/32", "10.0.0.4/32", "10.9.0.0/16", "2001:db8::4/128"), res.Added)
	require.Empty(t, res.Removed)
	require.True(t, res.Applied)
	require.True(t, res.Changed())
	require.Equal(t, 4, res.Entries)
	require.Equal(t, uint64(0), res.GenerationBefore)
	require.Equal(t, uint64(1), res.GenerationAfter)
	requireLive(t, d, 1, "10.0.0.2/32", "10.0.0.4/32", "10.9.0.0/16", "2001:db8::4/128")

	res, err = Sync(ctx, d, id, "cli[01-03],web1", syncOpts())
	require.NoError(t, err)
	require.Equal(t, prefixes("10.1.0.1/32", "10.1.0.2/32", "10.1.0.3/32"), res.Added)
	require.Equal(t, prefixes("10.0.0.4/32", "10.9.0.0/16", "2001:db8::4/128"), res.Removed)
	require.Equal(t, 4, res.Entries)
	require.Equal(t, uint64(1), res.GenerationBefore)
	require.Equal(t, uint64(2), res.GenerationAfter)
	requireLive(t, d, 2, "10.0.0.2/32", "10.1.0.1/32", "10.1.0.2/32", "10.1.0.3/32")

	// The same set written differently is no change, and no swap.
	res, err = Sync(ctx, d, id, "10.1.0.3, web2 ,cli01,cli02", syncOpts())
	require.NoError(t, err)
	require.False(t, res.Changed())
	require.False(t, res.Applied)
	require.Equal(t, 4, res.Entries)
	require.Equal(t, uint64(2), res.GenerationAfter)
	requireLive(t, d, 2, "10.0.0.2/32", "10.1.0.1/32", "10.1.0.2/32", "10.1.0.3/32")
}

func TestSyncDryRunAppliesNothing(t *testing.T) {
	ctx := context.Background()
	d := openTestDataplane(t)
	id := loader.WhitelistFrontendHTTP
	_, err := Sync(ctx, d, id, "web1", syncOpts())
	require.NoError(t, err)

	opts := syncOpts()
	opts.DryRun = true
	res, err := Sync(ctx, d, id, "cli01,10.2.0.0/24", opts)
	require.NoError(t, err)
	require.Equal(t, prefixes("10.1.0.1/32", "10.2.0.0/24"), res.Added)
	require.Equal(t, prefixes("10.0.0.2/32"), res.Removed)
	require.Equal(t, 2, res.Entries, "entries the list would hold")
	require.False(t, res.Applied)
	require.Equal(t, res.GenerationBefore, res.GenerationAfter)
	requireLive(t, d, 1, "10.0.0.2/32")
}

func TestSyncUnresolvedLeavesLiveListUntouched(t *testing.T) {
	ctx := context.Background()
	d := openTestDataplane(t)
	id := loader.WhitelistFrontendHTTP
	_, err := Sync(ctx, d, id, "web1,cli01", syncOpts())
	require.NoError(t, err)

	_, err = Sync(ctx, d, id, "cli02,nosuch,10.3.0.1", syncOpts())
	require.ErrorIs(t, err, ErrUnresolved)
	require.ErrorContains(t, err, `sync frontend-http: `)
	require.ErrorContains(t, err, `"nosuch"`)
	requireLive(t, d, 1, "10.0.0.2/32", "10.1.0.1/32")
}

func TestSyncAllowUnresolved(t *testing.T) {
	ctx := context.Background()
	d := openTestDataplane(t)
	id := loader.WhitelistFrontendHTTP
	opts := syncOpts()
	opts.AllowUnresolved = true

	res, err := Sync(ctx, d, id, "cli02,nosuch,gone[1-2]", opts)
	require.NoError(t, err)
	require.True(t, res.Applied)
	require.Equal(t, prefixes("10.1.0.2/32"), res.Added)
	hosts := []string{}
	for _, u := range res.Unresolved {
		hosts = append(hosts, u.Host)
		require.Contains(t, u.Error, "no such host")
	}
	require.Equal(t, []string{"nosuch", "gone1", "gone2"}, hosts)
	requireLive(t, d, 1, "10.1.0.2/32")

	// A list of which nothing resolves is an empty list: it needs
	// AllowEmpty like any other, and leaves the live list alone.
	_, err = Sync(ctx, d, id, "nosuch,gone1", opts)
	require.ErrorIs(t, err, ErrEmpty)
	require.ErrorContains(t, err, "none of its 2 names resolved")
	requireLive(t, d, 1, "10.1.0.2/32")
}

func TestSyncEmptyListGuard(t *testing.T) {
	ctx := context.Background()
	d := openTestDataplane(t)
	id := loader.WhitelistFrontendHTTP
	_, err := Sync(ctx, d, id, "web1", syncOpts())
	require.NoError(t, err)

	for _, list := range []string{"", "  ", "\t"} {
		_, err := Sync(ctx, d, id, list, syncOpts())
		require.ErrorIs(t, err, ErrEmpty, "list %q", list)
		requireLive(t, d, 1, "10.0.0.2/32")
	}

	opts := syncOpts()
	opts.AllowEmpty = true
	res, err := Sync(ctx, d, id, "", opts)
	require.NoError(t, err)
	require.True(t, res.Applied)
	require.Equal(t, prefixes("10.0.0.2/32"), res.Removed)
	require.Equal(t, 0, res.Entries)
	require.Equal(t, uint64(2), res.GenerationAfter)
	requireLive(t, d, 2)
}

func TestSyncBadEntryNamesIt(t *testing.T) {
	ctx := context.Background()
	d := openTestDataplane(t)
	id := loader.WhitelistFrontendHTTP
	_, err := Sync(ctx, d, id, "web1", syncOpts())
	require.NoError(t, err)

	for list, want := range map[string]string{
		"web1,10.0.0.5/24":  `"10.0.0.5/24" has host bits set`,
		"web1,10.0.0.256":   `"10.0.0.256": invalid IP address`,
		"cli[01-03":         `unclosed "["`,
		"web1,bad_name.com": `"bad_name.com": invalid host name`,
	} {
		_, err := Sync(ctx, d, id, list, syncOpts())
		require.ErrorContains(t, err, want, "list %q", list)
		requireLive(t, d, 1, "10.0.0.2/32")
	}
}

func TestSyncResolveTimeout(t *testing.T) {
	d := openTestDataplane(t)
	id := loader.WhitelistFrontendHTTP
	_, err := Sync(context.Background(), d, id, "10.0.0.1", syncOpts())
	require.NoError(t, err)

	opts := syncOpts()
	opts.Resolver = blockingResolver{}
	opts.Timeout = 100 * time.Millisecond
	opts.AllowUnresolved = true // a timeout must fail even then
	start := time.Now()
	_, err = Sync(context.Background(), d, id, "slow1,10.0.0.2", opts)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)
	requireLive(t, d, 1, "10.0.0.1/32")
}

// SwapWhitelists changes every list or none: a swap that cannot be done
// puts back the ones before it, and undo puts back all of them.
func TestSwapWhitelistsAllOrNothing(t *testing.T) {
	d := openTestDataplane(t)
	fe, rt := loader.WhitelistFrontendHTTP, loader.WhitelistRouters
	_, err := d.SetWhitelist(fe, prefixes("10.0.0.1/32"))
	require.NoError(t, err)
	_, err = d.SetWhitelist(rt, prefixes("10.9.0.1/32"))
	require.NoError(t, err)

	// The second list is no longer what the change was planned against.
	_, _, err = SwapWhitelists(d, []Swap{
		{ID: fe, Prefixes: prefixes("10.0.0.2/32"), Expect: prefixes("10.0.0.1/32")},
		{ID: rt, Prefixes: prefixes("10.9.0.2/32"), Expect: prefixes("10.9.0.7/32")},
	}, quiet())
	require.ErrorIs(t, err, ErrChanged)
	requireLive(t, d, 3, "10.0.0.1/32") // swapped, then put back
	live, _, err := d.Whitelist(rt)
	require.NoError(t, err)
	require.Equal(t, prefixes("10.9.0.1/32"), live)

	done, undo, err := SwapWhitelists(d, []Swap{
		{ID: fe, Prefixes: prefixes("10.0.0.2/32"), Expect: prefixes("10.0.0.1/32")},
		{ID: rt, Prefixes: prefixes("10.9.0.1/32"), Expect: prefixes("10.9.0.1/32")},
	}, quiet())
	require.NoError(t, err)
	require.True(t, done[0].Applied)
	require.Equal(t, uint64(4), done[0].After.Generation)
	require.False(t, done[1].Applied, "an equal list is not swapped")
	requireLive(t, d, 4, "10.0.0.2/32")
	require.NoError(t, undo())
	requireLive(t, d, 5, "10.0.0.1/32")
	_, info, err := d.Whitelist(rt)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.Generation, "undo leaves a list it did not swap alone")
}

func TestResolveListNamesSources(t *testing.T) {
	l, err := ResolveList(context.Background(), "web[1-2],dual,10.0.0.0/8", syncOpts())
	require.NoError(t, err)
	require.Equal(t, []string{"web1", "web2"}, l.Sources[netip.MustParsePrefix("10.0.0.2/32")])
	require.Equal(t, []string{"dual"}, l.Sources[netip.MustParsePrefix("2001:db8::4/128")])
	require.Empty(t, l.Sources[netip.MustParsePrefix("10.0.0.0/8")])
}
