package tables

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader"
)

func open(t *testing.T) (*loader.Dataplane, *Writer) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := loader.Open(loader.Options{Root: netnstest.BPFFS(t) + "/ober", Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d, New(d, log)
}

var (
	vip  = netip.MustParseAddr("192.0.2.10")
	wlFE = loader.WhitelistFrontendHTTP
)

func tablesWith(port uint16, fe ...string) plan.Tables {
	t := plan.Tables{
		VIPs:       []loader.VIP{{Addr: vip}},
		Services:   []loader.Service{{VIP: vip, Proto: loader.ProtoTCP, Port: port, Dispatch: true, Enforce: true, Whitelist: wlFE}},
		Whitelists: map[loader.WhitelistID][]netip.Prefix{wlFE: nil, loader.WhitelistRouters: nil},
		Steering:   true,
	}
	for _, s := range fe {
		t.Whitelists[wlFE] = append(t.Whitelists[wlFE], netip.MustParsePrefix(s))
	}
	return t
}

func live(t *testing.T, d *loader.Dataplane, id loader.WhitelistID) ([]string, uint64) {
	t.Helper()
	ps, info, err := d.Whitelist(id)
	require.NoError(t, err)
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out, info.Generation
}

func TestApplyWritesOnlyWhatChanged(t *testing.T) {
	d, w := open(t)
	base, err := w.ReadBase()
	require.NoError(t, err)
	require.NoError(t, w.Apply(tablesWith(80, "10.0.0.0/8"), base))
	got, gen := live(t, d, wlFE)
	require.Equal(t, []string{"10.0.0.0/8"}, got)
	require.Equal(t, uint64(1), gen)
	_, svcs, err := d.Services()
	require.NoError(t, err)
	require.Equal(t, uint16(80), svcs[0].Port)
	on, err := d.Steering()
	require.NoError(t, err)
	require.True(t, on)

	// The same plan again writes nothing: the generation stays.
	base, err = w.ReadBase()
	require.NoError(t, err)
	require.NoError(t, w.Apply(tablesWith(80, "10.0.0.0/8"), base))
	_, gen = live(t, d, wlFE)
	require.Equal(t, uint64(1), gen)
}

// A reload racing `ober sync`: the list sync changed after the reload
// read the configuration is never put back. If the reload leaves that
// list alone, the sync's list stays and the rest applies; if the reload
// changes it too, the reload is refused and nothing of it applies.
func TestApplyNeverUndoesASync(t *testing.T) {
	d, w := open(t)
	base, err := w.ReadBase()
	require.NoError(t, err)
	require.NoError(t, w.Apply(tablesWith(80, "10.0.0.0/8"), base))

	base, err = w.ReadBase() // the reload reads the file...
	require.NoError(t, err)
	_, err = d.SetWhitelist(wlFE, []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}) // ...ober sync swaps...
	require.NoError(t, err)
	require.NoError(t, w.Apply(tablesWith(8080, "10.0.0.0/8"), base), "...the reload changes the services only")
	got, _ := live(t, d, wlFE)
	require.Equal(t, []string{"172.16.0.0/12"}, got, "the synced list stays")
	_, svcs, err := d.Services()
	require.NoError(t, err)
	require.Equal(t, uint16(8080), svcs[0].Port)

	base, err = w.ReadBase()
	require.NoError(t, err)
	_, err = d.SetWhitelist(wlFE, []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")})
	require.NoError(t, err)
	err = w.Apply(tablesWith(9090, "10.1.0.0/16"), base)
	require.True(t, errors.Is(err, ErrChanged), "%v", err)
	require.ErrorContains(t, err, "whitelist frontend-http: changed by another writer since the configuration was read (ober sync, generation 3, was 2)")
	got, _ = live(t, d, wlFE)
	require.Equal(t, []string{"192.168.0.0/16"}, got)
	_, svcs, err = d.Services()
	require.NoError(t, err)
	require.Equal(t, uint16(8080), svcs[0].Port, "nothing of the refused plan applied")

	// Read again (reload again): the plan applies.
	base, err = w.ReadBase()
	require.NoError(t, err)
	require.NoError(t, w.Apply(tablesWith(9090, "10.1.0.0/16"), base))
	got, _ = live(t, d, wlFE)
	require.Equal(t, []string{"10.1.0.0/16"}, got)

	// A sync that already put the plan's list in place is no conflict.
	base, err = w.ReadBase()
	require.NoError(t, err)
	_, err = d.SetWhitelist(wlFE, []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")})
	require.NoError(t, err)
	require.NoError(t, w.Apply(tablesWith(9090, "10.2.0.0/16"), base))
}

// A refused write puts back what the same Apply wrote before it.
func TestApplyIsAllOrNothing(t *testing.T) {
	d, w := open(t)
	base, err := w.ReadBase()
	require.NoError(t, err)
	require.NoError(t, w.Apply(tablesWith(80, "10.0.0.0/8"), base))
	base, err = w.ReadBase()
	require.NoError(t, err)
	bad := tablesWith(80, "10.3.0.0/16")
	// A service on an address that is no VIP is refused by the loader,
	// after the whitelist was written.
	bad.Services[0].Port = 81
	bad.Services = append(bad.Services, loader.Service{VIP: netip.MustParseAddr("192.0.2.99"), Proto: loader.ProtoTCP, Port: 1})
	err = w.Apply(bad, base)
	require.Error(t, err)
	got, _ := live(t, d, wlFE)
	require.Equal(t, []string{"10.0.0.0/8"}, got, "the list written before the failure is put back")
	_, svcs, err := d.Services()
	require.NoError(t, err)
	require.Equal(t, uint16(80), svcs[0].Port)
}

// Access lists are written before the rows that point at them, and a
// list no row points at any more is cleared; on the first plan of a
// process, so is one an earlier ober left.
func TestApplyAccessLists(t *testing.T) {
	d, w := open(t)
	entries := func(allow bool) []loader.AccessEntry {
		es, err := loader.CompileAccess([]loader.AccessRule{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Allow: allow}}, !allow)
		require.NoError(t, err)
		return es
	}
	require.NoError(t, d.SetAccessList(7, entries(true)), "left by an earlier ober")

	with := func(id loader.AccessID, allow bool) plan.Tables {
		tb := tablesWith(80)
		tb.Services[0].Access = id
		tb.Access = map[loader.AccessID][]loader.AccessEntry{id: entries(allow)}
		return tb
	}
	base, err := w.ReadBase()
	require.NoError(t, err)
	require.NoError(t, w.Apply(with(1, true), base))
	got, set, err := d.AccessList(1)
	require.NoError(t, err)
	require.True(t, set)
	require.Equal(t, entries(true), got)
	_, set, err = d.AccessList(7)
	require.NoError(t, err)
	require.False(t, set, "the earlier ober's list no row uses is cleared")

	require.NoError(t, w.Apply(with(2, false), base))
	_, set, err = d.AccessList(1)
	require.NoError(t, err)
	require.False(t, set, "list 1 is unused now")
	got, set, err = d.AccessList(2)
	require.NoError(t, err)
	require.True(t, set)
	require.Equal(t, entries(false), got)
	_, svcs, err := d.Services()
	require.NoError(t, err)
	require.Equal(t, loader.AccessID(2), svcs[0].Access)
}
