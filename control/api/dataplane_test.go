package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader"
)

// openTestDataplane creates a dataplane pinned in a bpffs of its own.
func openTestDataplane(t *testing.T) *loader.Dataplane {
	t.Helper()
	root := netnstest.BPFFS(t)
	d, err := loader.Open(loader.Options{Root: root + "/ober", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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

// keysOf returns the sorted keys of a JSON object.
func keysOf(t *testing.T, v any) []string {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "want a JSON object, got %T", v)
	return slices.Sorted(maps.Keys(m))
}

func first(t *testing.T, v any) any {
	t.Helper()
	l, ok := v.([]any)
	require.True(t, ok, "want a JSON list, got %T", v)
	require.NotEmpty(t, l)
	return l[0]
}

func statusJSON(t *testing.T, d *loader.Dataplane) (*DataplaneStatus, map[string]any) {
	t.Helper()
	st, err := ReadDataplane(d)
	require.NoError(t, err)
	b, err := json.Marshal(st)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return st, m
}

// The documented JSON shape is an interface: this pins its field names.
func TestDataplaneJSONShape(t *testing.T) {
	d := openTestDataplane(t)
	vip := netip.MustParseAddr("192.0.2.10")
	require.NoError(t, d.SetServices(
		[]loader.VIP{{Addr: vip}},
		[]loader.Service{{VIP: vip, Proto: loader.ProtoTCP, Port: 80, Dispatch: true,
			Enforce: true, Whitelist: loader.WhitelistFrontendHTTP}},
	))
	_, err := d.SetWhitelist(loader.WhitelistFrontendHTTP, prefixes("198.51.100.0/24", "203.0.113.7/32"))
	require.NoError(t, err)
	slots := make([]uint32, 251)
	for i := range slots {
		slots[i] = uint32(i % 2)
	}
	slots[0] = loader.NoInstance
	require.NoError(t, d.SetMaglev(7, slots))
	require.NoError(t, d.SetInstances([]loader.Instance{{Index: 0, CPU: 0}, {Index: 1, CPU: 0}}))
	require.NoError(t, d.SetSteering(true))

	st, m := statusJSON(t, d)
	require.Equal(t, []string{
		"attachments", "counters", "cpumap", "instances", "maglev", "root", "services",
		"sk_lookup_attached", "sockets", "steering", "vips", "whitelists",
	}, keysOf(t, m))
	require.Equal(t, []string{"addr", "host"}, keysOf(t, first(t, m["vips"])))
	require.Equal(t, []string{
		"dispatch", "enforce_whitelist", "listener", "port", "proto", "reject", "vip", "whitelist",
	}, keysOf(t, first(t, m["services"])))
	require.Equal(t, []string{"entries", "generation", "name"}, keysOf(t, first(t, m["whitelists"])))
	require.Equal(t, []string{"empty_slots", "seed", "size", "slots_per_instance"}, keysOf(t, m["maglev"]))
	require.Equal(t, []string{"instance", "slots"}, keysOf(t, first(t, m["maglev"].(map[string]any)["slots_per_instance"])))
	require.Equal(t, []string{"cpu", "index"}, keysOf(t, first(t, m["instances"])))
	counters := m["counters"]
	require.Equal(t, []string{"assigned", "reasons", "steered", "unassigned"}, keysOf(t, counters))
	cm := counters.(map[string]any)
	require.Equal(t, []string{"bytes", "packets", "reason"}, keysOf(t, first(t, cm["reasons"])))
	require.Equal(t, []string{"bytes", "instance", "packets"}, keysOf(t, first(t, cm["steered"])))
	require.Equal(t, []string{"fallback", "flows", "instance"}, keysOf(t, first(t, cm["assigned"])))

	// Values: only what exists is listed.
	require.Equal(t, []VIPStatus{{Addr: vip}}, st.VIPs)
	require.Equal(t, "tcp", st.Services[0].Proto)
	require.Equal(t, "frontend-http", st.Services[0].Whitelist)
	require.Equal(t, []WhitelistStatus{{Name: "frontend-http", Entries: 2, Generation: 1}}, st.Whitelists)
	require.Equal(t, &MaglevStatus{Size: 251, Seed: 7, EmptySlots: 1, SlotsPerInstance: []SlotsStatus{
		{Instance: 0, Slots: 125}, {Instance: 1, Slots: 125},
	}}, st.Maglev)
	require.Equal(t, []InstanceStatus{{Index: 0, CPU: 0}, {Index: 1, CPU: 0}}, st.Instances)
	require.Equal(t, []int{0}, st.CPUMap)
	require.True(t, st.Steering)
	require.Len(t, st.Counters.Steered, 2)
	require.Len(t, st.Counters.Assigned, 2)
	require.Len(t, st.Counters.Reasons, len(loader.Reasons()))
	for i, r := range loader.Reasons() {
		require.Equal(t, r.String(), st.Counters.Reasons[i].Reason)
	}
	require.Empty(t, st.UnsetWhitelists())
}

// An empty dataplane still has every field, with empty lists rather than
// nulls (except maglev, documented as null when no table was set).
func TestDataplaneEmpty(t *testing.T) {
	d := openTestDataplane(t)
	st, m := statusJSON(t, d)
	for _, k := range []string{"attachments", "vips", "services", "whitelists", "instances", "cpumap", "sockets"} {
		require.Equal(t, []any{}, m[k], k)
	}
	require.Nil(t, m["maglev"])
	cm := m["counters"].(map[string]any)
	require.Equal(t, []any{}, cm["steered"])
	require.Equal(t, []any{}, cm["assigned"])
	require.False(t, st.SkLookupAttached)
	require.Equal(t, d.Root(), st.Root)
}

func TestDataplaneUnsetWhitelists(t *testing.T) {
	d := openTestDataplane(t)
	vip := netip.MustParseAddr("192.0.2.10")
	require.NoError(t, d.SetServices(
		[]loader.VIP{{Addr: vip}},
		[]loader.Service{
			{VIP: vip, Proto: loader.ProtoTCP, Port: 80, Enforce: true, Whitelist: loader.WhitelistFrontendHTTP},
			{VIP: vip, Proto: loader.ProtoTCP, Port: 8080, Enforce: true, Whitelist: loader.WhitelistFrontendHTTP},
			{VIP: vip, Proto: loader.ProtoTCP, Port: 443},
		},
	))
	st, err := ReadDataplane(d)
	require.NoError(t, err)
	require.Equal(t, []string{"frontend-http"}, st.UnsetWhitelists())
}
