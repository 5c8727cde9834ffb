package whitelist

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/haproxy"
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
	"web1":     {"10.0.0.2"},
	"web2":     {"10.0.0.2"}, // same address as web1: must dedupe
	"dual":     {"10.0.0.4", "2001:db8::4"},
	"cli01":    {"10.1.0.1"},
	"cli02":    {"10.1.0.2"},
	"cli03":    {"10.1.0.3"},
	"client01": {"10.2.0.1"},
	"client02": {"10.2.0.2"},
	"client04": {"10.2.0.4"},
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func testOpts() Options {
	return Options{Resolver: testHosts, Logger: quiet()}
}

// testConfig is a valid ober.yaml with a note an operator keeps in it;
// RUNTIME is the test's runtime directory.
const testConfig = `# node 1
node:
  name: node1
  interfaces: [veth-s]
  runtime_dir: RUNTIME
vips: [10.99.0.100]
services:
  - port: 80
    mode: http
backends:
  servers:
    - address: 10.98.2.1:9000
whitelists:
  frontend_http:   # ticket OPS-12
    - 10.20.0.0/16
`

// env is a dataplane pinned in a private bpffs (nothing attached: a
// transaction only touches maps), a configuration file and its runtime
// directory.
type env struct {
	d            *loader.Dataplane // nil without one
	cfg, runtime string
}

func newEnv(t *testing.T, pinned bool) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{cfg: filepath.Join(dir, "ober.yaml"), runtime: filepath.Join(dir, "run")}
	require.NoError(t, os.Mkdir(e.runtime, 0o700))
	require.NoError(t, os.WriteFile(e.cfg, []byte(strings.Replace(testConfig, "RUNTIME", e.runtime, 1)), 0o640))
	if pinned {
		root := netnstest.BPFFS(t)
		d, err := loader.Open(loader.Options{Root: root + "/ober", Logger: quiet()})
		require.NoError(t, err)
		t.Cleanup(func() { d.Close() })
		e.d = d
	}
	return e
}

func (e *env) file(t *testing.T) *File {
	t.Helper()
	f, err := ReadFile(e.cfg)
	require.NoError(t, err)
	return f
}

func (e *env) plan(t *testing.T, list string, opts Options) (*Tx, error) {
	t.Helper()
	return Plan(context.Background(), e.file(t), e.d, []Request{{List: "frontend-http", Text: list}}, opts)
}

// sync plans and applies one change of frontend-http.
func (e *env) sync(t *testing.T, list string, opts Options) (*Change, error) {
	t.Helper()
	tx, err := e.plan(t, list, opts)
	if err != nil {
		return nil, err
	}
	if err := tx.Apply(context.Background()); err != nil {
		return nil, err
	}
	return tx.Changes[0], nil
}

func (e *env) requireLive(t *testing.T, gen uint64, want ...string) {
	t.Helper()
	live, info, err := e.d.Whitelist(loader.WhitelistFrontendHTTP)
	require.NoError(t, err)
	require.Equal(t, gen, info.Generation, "generation")
	if len(want) == 0 {
		require.Empty(t, live)
		return
	}
	require.Equal(t, prefixes(want...), live)
}

func (e *env) items(t *testing.T) []string {
	t.Helper()
	return e.file(t).Config.Whitelists.FrontendHTTP
}

func (e *env) text(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(e.cfg)
	require.NoError(t, err)
	return string(b)
}

func TestApplyAddsRemovesDedupes(t *testing.T) {
	e := newEnv(t, true)

	// web1 and web2 share an address, 10.0.0.2 is also given literally,
	// and 10.9.0.7 is covered by 10.9.0.0/16: four names, three entries
	// plus dual's two addresses.
	c, err := e.sync(t, "web[1-2],10.0.0.2,dual,10.9.0.0/16,10.9.0.7", testOpts())
	require.NoError(t, err)
	require.Equal(t, prefixes("10.0.0.2/32", "10.0.0.4/32", "10.9.0.0/16", "2001:db8::4/128"), c.Added)
	require.Empty(t, c.Removed, "the live list was never set: the file's is not what it had")
	require.True(t, c.Swapped.Applied)
	require.Equal(t, 4, c.Swapped.After.Entries)
	require.Equal(t, uint64(0), c.Swapped.Before.Generation)
	require.Equal(t, uint64(1), c.Swapped.After.Generation)
	require.Equal(t, []string{"web1", "web2"}, c.Next.Sources[netip.MustParsePrefix("10.0.0.2/32")])
	e.requireLive(t, 1, "10.0.0.2/32", "10.0.0.4/32", "10.9.0.0/16", "2001:db8::4/128")
	require.Equal(t, []string{"web[1-2]", "10.0.0.2", "dual", "10.9.0.0/16", "10.9.0.7"}, e.items(t))
	require.Contains(t, e.text(t), "  frontend_http:   # ticket OPS-12\n", "the file keeps its notes")

	c, err = e.sync(t, "cli[01-03],web1", testOpts())
	require.NoError(t, err)
	require.Equal(t, prefixes("10.1.0.1/32", "10.1.0.2/32", "10.1.0.3/32"), c.Added)
	require.Equal(t, prefixes("10.0.0.4/32", "10.9.0.0/16", "2001:db8::4/128"), c.Removed)
	require.Equal(t, []string{"dual"}, c.Old.Sources[netip.MustParsePrefix("10.0.0.4/32")], "where a removed entry came from")
	require.Equal(t, uint64(2), c.Swapped.After.Generation)
	e.requireLive(t, 2, "10.0.0.2/32", "10.1.0.1/32", "10.1.0.2/32", "10.1.0.3/32")

	// The same set written differently is no change of the live list,
	// and no swap; the file follows.
	c, err = e.sync(t, "10.1.0.3, web2 ,cli01,cli02", testOpts())
	require.NoError(t, err)
	require.False(t, c.Swap)
	require.True(t, c.FileChange)
	require.Empty(t, c.Added)
	require.Empty(t, c.Removed)
	require.False(t, c.Swapped.Applied)
	e.requireLive(t, 2, "10.0.0.2/32", "10.1.0.1/32", "10.1.0.2/32", "10.1.0.3/32")
	require.Equal(t, []string{"10.1.0.3", "web2", "cli01", "cli02"}, e.items(t))

	tx, err := e.plan(t, "10.1.0.3,web2,cli01,cli02", testOpts())
	require.NoError(t, err)
	require.False(t, tx.Changed(), "the same list again")
}

// Plan changes nothing: a dry run is a Plan not applied.
func TestPlanAppliesNothing(t *testing.T) {
	e := newEnv(t, true)
	_, err := e.sync(t, "web1", testOpts())
	require.NoError(t, err)
	before := e.text(t)

	tx, err := e.plan(t, "cli01,10.2.0.0/24", testOpts())
	require.NoError(t, err)
	c := tx.Changes[0]
	require.Equal(t, prefixes("10.1.0.1/32", "10.2.0.0/24"), c.Added)
	require.Equal(t, prefixes("10.0.0.2/32"), c.Removed)
	require.Len(t, c.Effective, 2, "entries the list would hold")
	require.Equal(t, uint64(1), c.LiveInfo.Generation)
	require.True(t, tx.Changed())
	require.False(t, tx.Applied())
	e.requireLive(t, 1, "10.0.0.2/32")
	require.Equal(t, before, e.text(t))
}

func TestPlanUnresolved(t *testing.T) {
	e := newEnv(t, true)
	_, err := e.sync(t, "web1,cli01", testOpts())
	require.NoError(t, err)

	_, err = e.plan(t, "cli02,nosuch,10.3.0.1", testOpts())
	require.ErrorIs(t, err, ErrUnresolved)
	le, ok := err.(*ListError)
	require.True(t, ok, "%T", err)
	require.Equal(t, "frontend-http", le.List)
	require.Equal(t, "cli02,nosuch,10.3.0.1", le.Text)
	require.ErrorContains(t, err, `"nosuch"`)

	// Allowed: the names are left out of the live list and of the file,
	// a range written again without them.
	opts := testOpts()
	opts.AllowUnresolved = true
	c, err := e.sync(t, "client[01-04],nosuch,gone[1-2],cli02", opts)
	require.NoError(t, err)
	require.True(t, c.Swapped.Applied)
	hosts := []string{}
	for _, u := range c.Next.Unresolved {
		hosts = append(hosts, u.Host)
		require.Contains(t, u.Error, "no such host")
	}
	require.Equal(t, []string{"client03", "nosuch", "gone1", "gone2"}, hosts)
	e.requireLive(t, 2, "10.1.0.2/32", "10.2.0.1/32", "10.2.0.2/32", "10.2.0.4/32")
	require.Equal(t, []string{"client[01-02,04]", "cli02"}, e.items(t))

	// A list of which nothing resolves is an empty list: it needs
	// AllowEmpty like any other.
	_, err = e.plan(t, "nosuch,gone1", opts)
	require.ErrorIs(t, err, ErrEmpty)
	require.EqualError(t, err, `frontend-http "nosuch,gone1": the new list is empty and would admit nobody: none of its 2 names resolved`)
}

func TestPlanEmptyListGuard(t *testing.T) {
	e := newEnv(t, true)
	_, err := e.sync(t, "web1", testOpts())
	require.NoError(t, err)

	for _, list := range []string{"", "  ", "\t"} {
		_, err := e.plan(t, list, testOpts())
		require.ErrorIs(t, err, ErrEmpty, "list %q", list)
	}

	opts := testOpts()
	opts.AllowEmpty = true
	c, err := e.sync(t, "", opts)
	require.NoError(t, err)
	require.True(t, c.Swapped.Applied)
	require.Equal(t, prefixes("10.0.0.2/32"), c.Removed)
	require.Equal(t, 0, c.Swapped.After.Entries)
	e.requireLive(t, 2)
	require.Contains(t, e.text(t), "  frontend_http: []   # ticket OPS-12\n")
}

func TestPlanBadEntryNamesIt(t *testing.T) {
	e := newEnv(t, true)
	for list, want := range map[string]string{
		"web1,10.0.0.5/24":  `"10.0.0.5/24" has host bits set`,
		"web1,10.0.0.256":   `"10.0.0.256": invalid IP address`,
		"cli[01-03":         `unclosed "["`,
		"web1,bad_name.com": `"bad_name.com": invalid host name`,
	} {
		_, err := Plan(context.Background(), e.file(t), e.d, []Request{
			{List: "routers", Text: "10.9.0.1"},
			{List: "frontend-http", Text: list},
		}, Options{Resolver: blockingResolver{}})
		require.ErrorContains(t, err, want, "list %q", list)
		le, ok := err.(*ListError)
		require.True(t, ok, "%T", err)
		require.Equal(t, "frontend-http", le.List, "a bad list is found before any name is looked up")
	}
	_, err := Plan(context.Background(), nil, e.d, []Request{{List: "frontend", Text: "web1"}}, testOpts())
	require.EqualError(t, err, `unknown whitelist "frontend" (want frontend-http, routers or backend-http)`)
}

func TestPlanResolveTimeout(t *testing.T) {
	e := newEnv(t, true)
	opts := testOpts()
	opts.Resolver = blockingResolver{}
	opts.Timeout = 100 * time.Millisecond
	opts.AllowUnresolved = true // a timeout must fail even then
	start := time.Now()
	_, err := e.plan(t, "slow1,10.0.0.2", opts)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)
}

// The file is checked as the daemon would load it: a list it would
// refuse fails the plan.
func TestPlanDaemonWouldRefuse(t *testing.T) {
	e := newEnv(t, false)
	bgp := strings.Replace(e.text(t), "whitelists:", `ha:
  mode: bgp
  bgp:
    asn: 65010
    router_id: 10.99.1.254
    peers:
      - address: 10.1.0.1
        asn: 65000
whitelists:
  routers: [cli01]`, 1)
	require.NoError(t, os.WriteFile(e.cfg, []byte(bgp), 0o640))
	_, err := Plan(context.Background(), e.file(t), nil, []Request{{List: "routers", Text: "cli02"}}, testOpts())
	require.ErrorContains(t, err, `routers "cli02": the daemon would refuse it: ha.bgp.peers[0].address: 10.1.0.1: is not in whitelists.routers`)

	// Empty means the peers.
	tx, err := Plan(context.Background(), e.file(t), nil, []Request{{List: "routers", Text: ""}}, Options{AllowEmpty: true})
	require.NoError(t, err)
	require.Equal(t, prefixes("10.1.0.1/32"), tx.Changes[0].Effective)
}

// Without a dataplane only the file changes; the change is against the
// file's list.
func TestApplyFileOnly(t *testing.T) {
	e := newEnv(t, false)
	tx, err := e.plan(t, "cli0[1-2]", testOpts())
	require.NoError(t, err)
	c := tx.Changes[0]
	require.Equal(t, prefixes("10.1.0.1/32", "10.1.0.2/32"), c.Added)
	require.Equal(t, prefixes("10.20.0.0/16"), c.Removed)
	require.False(t, c.Swap)
	require.NoError(t, tx.Apply(context.Background()))
	require.Equal(t, []string{"cli0[1-2]"}, e.items(t))
	st, err := os.Stat(e.cfg)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), st.Mode().Perm(), "the file keeps its mode")
}

// What was shown is what gets applied: a live list changed by another
// writer after the plan fails the transaction, and nothing changes.
func TestApplyRefusesAListChangedMeanwhile(t *testing.T) {
	e := newEnv(t, true)
	_, err := e.sync(t, "web1", testOpts())
	require.NoError(t, err)
	tx, err := Plan(context.Background(), e.file(t), e.d, []Request{
		{List: "routers", Text: "10.9.0.1"},
		{List: "frontend-http", Text: "cli01"},
	}, testOpts())
	require.NoError(t, err)
	before := e.text(t)
	_, err = e.d.SetWhitelist(loader.WhitelistFrontendHTTP, prefixes("10.7.0.1/32"))
	require.NoError(t, err)

	err = tx.Apply(context.Background())
	require.ErrorIs(t, err, ErrChanged)
	require.EqualError(t, err, "frontend-http: the live list changed meanwhile (another sync or a daemon reload); run sync again; nothing changed")
	e.requireLive(t, 2, "10.7.0.1/32")
	_, info, err := e.d.Whitelist(loader.WhitelistRouters)
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.Generation, "routers: swapped, then put back")
	require.Equal(t, before, e.text(t))
}

// When the file cannot be replaced after the swaps, the live lists and
// HAProxy's files are put back.
func TestApplyPutsBackWhenTheRenameFails(t *testing.T) {
	e := newEnv(t, true)
	_, err := e.sync(t, "web1", testOpts())
	require.NoError(t, err)
	acl := haproxy.ACLFile(e.runtime, "frontend-http", "abc")
	require.NoError(t, haproxy.WriteACL(acl, prefixes("10.0.0.2/32")))

	tx, err := e.plan(t, "cli01", testOpts())
	require.NoError(t, err)
	// A directory where the file was: the rename is refused.
	require.NoError(t, os.Remove(e.cfg))
	require.NoError(t, os.Mkdir(e.cfg, 0o700))
	err = tx.Apply(context.Background())
	require.EqualError(t, err, "replace "+e.cfg+": file exists; the live lists were put back, nothing changed")
	e.requireLive(t, 3, "10.0.0.2/32")
	b, err := os.ReadFile(acl)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.2/32\n", string(b))
	entries, err := os.ReadDir(filepath.Dir(e.cfg))
	require.NoError(t, err)
	for _, en := range entries {
		require.False(t, strings.HasPrefix(en.Name(), "."), "left behind: %s", en.Name())
	}
}

// HAProxy's files of the list follow the live list.
func TestApplyWritesHAProxyFiles(t *testing.T) {
	e := newEnv(t, true)
	acl := haproxy.ACLFile(e.runtime, "frontend-http", "abc")
	other := haproxy.ACLFile(e.runtime, "backend-http", "abc")
	require.NoError(t, haproxy.WriteACL(acl, nil))
	require.NoError(t, haproxy.WriteACL(other, prefixes("10.5.0.0/16")))
	_, err := e.sync(t, "web1,dual", testOpts())
	require.NoError(t, err)
	b, err := os.ReadFile(acl)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.2/32\n10.0.0.4/32\n2001:db8::4/128\n", string(b))
	b, err = os.ReadFile(other)
	require.NoError(t, err)
	require.Equal(t, "10.5.0.0/16\n", string(b), "another list's file")
}

// Apply holds the lock over its changes: it waits for another holder,
// gives up when its context ends, and then changes nothing.
func TestApplyTakesTheLock(t *testing.T) {
	e := newEnv(t, true)
	_, err := e.sync(t, "web1", testOpts())
	require.NoError(t, err)
	before := e.text(t)
	unlock, err := Lock(context.Background(), e.runtime)
	require.NoError(t, err)

	tx, err := e.plan(t, "cli01", testOpts())
	require.NoError(t, err)
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = tx.Apply(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "lock "+filepath.Join(e.runtime, LockFile)+": ")
	require.True(t, strings.HasSuffix(err.Error(), "; nothing changed"), err.Error())
	e.requireLive(t, 1, "10.0.0.2/32")
	require.Equal(t, before, e.text(t))

	done := make(chan error, 1)
	go func() { done <- tx.Apply(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("applied while another held the lock: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	e.requireLive(t, 1, "10.0.0.2/32")
	unlock()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Apply did not go on once the lock was released")
	}
	e.requireLive(t, 2, "10.1.0.1/32")
	require.Equal(t, []string{"cli01"}, e.items(t))
}

func TestKeptItems(t *testing.T) {
	for _, tc := range []struct {
		list, gone string
		want       []string
	}{
		{"client[01-04], gw ,10.0.0.0/8", "", []string{"client[01-04]", "gw", "10.0.0.0/8"}},
		{"client[01-04],gw", "client03", []string{"client[01-02,04]", "gw"}},
		{"client[01-02],gw,web1", "gw,client01,client02", []string{"web1"}},
		{"r[1-2]n[1-2]", "r1n2", []string{"r1n1", "r2n[1-2]"}},
		{"", "", nil},
	} {
		var unresolved []UnresolvedName
		for _, g := range strings.Split(tc.gone, ",") {
			if g != "" {
				unresolved = append(unresolved, UnresolvedName{Host: g})
			}
		}
		got, err := keptItems(tc.list, unresolved)
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "%q without %s", tc.list, tc.gone)
	}
}

// swapTries changes every list or none: a swap that cannot be done puts
// back the ones before it, and undo puts back all of them.
func TestSwapTriesAllOrNothing(t *testing.T) {
	e := newEnv(t, true)
	d := e.d
	fe, rt := loader.WhitelistFrontendHTTP, loader.WhitelistRouters
	_, err := d.SetWhitelist(fe, prefixes("10.0.0.1/32"))
	require.NoError(t, err)
	_, err = d.SetWhitelist(rt, prefixes("10.9.0.1/32"))
	require.NoError(t, err)

	// The second list is no longer what the change was planned against.
	_, _, err = swapTries(d, []trieSwap{
		{id: fe, prefixes: prefixes("10.0.0.2/32"), expect: prefixes("10.0.0.1/32")},
		{id: rt, prefixes: prefixes("10.9.0.2/32"), expect: prefixes("10.9.0.7/32")},
	}, quiet())
	require.ErrorIs(t, err, ErrChanged)
	e.requireLive(t, 3, "10.0.0.1/32") // swapped, then put back
	live, _, err := d.Whitelist(rt)
	require.NoError(t, err)
	require.Equal(t, prefixes("10.9.0.1/32"), live)

	done, undo, err := swapTries(d, []trieSwap{
		{id: fe, prefixes: prefixes("10.0.0.2/32"), expect: prefixes("10.0.0.1/32")},
		{id: rt, prefixes: prefixes("10.9.0.1/32"), expect: prefixes("10.9.0.1/32")},
	}, quiet())
	require.NoError(t, err)
	require.True(t, done[0].Applied)
	require.Equal(t, uint64(4), done[0].After.Generation)
	require.False(t, done[1].Applied, "an equal list is not swapped")
	e.requireLive(t, 4, "10.0.0.2/32")
	require.NoError(t, undo())
	e.requireLive(t, 5, "10.0.0.1/32")
	_, info, err := d.Whitelist(rt)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.Generation, "undo leaves a list it did not swap alone")
}

func TestResolveListNamesSources(t *testing.T) {
	l, err := resolveList(context.Background(), "web[1-2],dual,10.0.0.0/8", resolveOptions{resolver: testHosts})
	require.NoError(t, err)
	require.Equal(t, []string{"web1", "web2"}, l.Sources[netip.MustParsePrefix("10.0.0.2/32")])
	require.Equal(t, []string{"dual"}, l.Sources[netip.MustParsePrefix("2001:db8::4/128")])
	require.Empty(t, l.Sources[netip.MustParsePrefix("10.0.0.0/8")])
}

func TestReadFile(t *testing.T) {
	e := newEnv(t, false)
	link := filepath.Join(t.TempDir(), "ober.yaml")
	require.NoError(t, os.Symlink(e.cfg, link))
	f, err := ReadFile(link)
	require.NoError(t, err)
	tx, err := Plan(context.Background(), f, nil, []Request{{List: "backend-http", Text: "cli01"}}, testOpts())
	require.NoError(t, err)
	require.NoError(t, tx.Apply(context.Background()))
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.Equal(t, os.ModeSymlink, fi.Mode().Type(), "the link stays a link")
	require.Equal(t, []string{"cli01"}, e.file(t).Config.Whitelists.BackendHTTP)

	_, err = ReadFile(e.cfg + ".missing")
	require.ErrorIs(t, err, os.ErrNotExist)
	require.EqualError(t, err, e.cfg+".missing: no such file or directory")

	require.NoError(t, os.WriteFile(e.cfg, []byte(strings.Replace(e.text(t), "  name:", "  nme:", 1)), 0o640))
	_, err = ReadFile(e.cfg)
	require.ErrorContains(t, err, "the configuration does not load; fix it first: config "+e.cfg+": node.nme: unknown key")
	require.NotErrorIs(t, err, os.ErrNotExist)
}
