package e2e

import (
	"encoding"
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// statusDoc documents `ober status --json`; scripts rely on it.
const statusDoc = "../docs/status-json.md"

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// jsonPaths lists every field path of the JSON encoding/json makes of a
// value of type t: "daemon.haproxy.instances[].pid" for a field of the
// elements of a list. Embedded structs without a JSON name are inlined,
// as encoding/json does; types with their own encoding (times,
// addresses) and maps are leaves.
func jsonPaths(t reflect.Type, prefix string, out map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) ||
		t.Implements(textMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		jsonPaths(t.Elem(), prefix+"[]", out)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || (!f.IsExported() && !f.Anonymous) {
				continue
			}
			if f.Anonymous && name == "" {
				jsonPaths(f.Type, prefix, out)
				continue
			}
			if name == "" {
				name = f.Name
			}
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			out[path] = true
			jsonPaths(f.Type, path, out)
		}
	}
}

// docPathRE finds the field paths in the first column of the document's
// tables.
var docPathRE = regexp.MustCompile("(?m)^\\| `([a-z0-9_.\\[\\]]+)` \\|")

// TestStatusJSONDocumented: every field `ober status --json` can print
// is in docs/status-json.md with its type and meaning, and the document
// names no field that is gone. A field added to api.Status or
// api.DataplaneStatus without a line in the document fails here.
func TestStatusJSONDocumented(t *testing.T) {
	fields := map[string]bool{}
	jsonPaths(reflect.TypeFor[api.Status](), "", fields)
	require.Contains(t, fields, "daemon.haproxy.instances[].backends[].up", "the walk reaches nested lists")
	require.Contains(t, fields, "attachments[].program_id", "the walk inlines the dataplane's report")
	require.Contains(t, fields, "daemon.bgp.peers[].state", "the walk inlines bgp.Status")

	text, err := os.ReadFile(statusDoc)
	require.NoError(t, err)
	documented := map[string]bool{}
	for _, m := range docPathRE.FindAllStringSubmatch(string(text), -1) {
		require.False(t, documented[m[1]], "%s is documented twice in %s", m[1], statusDoc)
		documented[m[1]] = true
	}
	var missing, gone []string
	for p := range fields {
		if !documented[p] {
			missing = append(missing, p)
		}
	}
	for p := range documented {
		if !fields[p] {
			gone = append(gone, p)
		}
	}
	slices.Sort(missing)
	slices.Sort(gone)
	require.Empty(t, missing, "fields of `ober status --json` missing from %s", statusDoc)
	require.Empty(t, gone, "%s documents fields `ober status --json` does not have (never remove a field: the promise is to add only)", statusDoc)
	require.Contains(t, string(text), "never renamed or removed", "the document states the stability promise")

	// Each row has a type and a meaning.
	rowRE := regexp.MustCompile("(?m)^\\| `[^`]+` \\| ([^|]*) \\| ([^|]*) \\|$")
	rows := rowRE.FindAllStringSubmatch(string(text), -1)
	require.Len(t, rows, len(documented), "every documented field is one row of | `path` | type | meaning |")
	for _, r := range rows {
		require.NotEmpty(t, strings.TrimSpace(r[1]), "type of %s", r[0])
		require.NotEmpty(t, strings.TrimSpace(r[2]), "meaning of %s", r[0])
	}
}

// flatPaths lists the field paths of a decoded JSON document, in the
// notation of jsonPaths; the keys of the counters' per-action maps are
// data, not fields.
func flatPaths(v any, prefix string, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		if strings.HasSuffix(prefix, ".packets") || strings.HasSuffix(prefix, ".bytes") {
			return
		}
		for k, e := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			out[p] = true
			flatPaths(e, p, out)
		}
	case []any:
		for _, e := range x {
			flatPaths(e, prefix+"[]", out)
		}
	}
}

// TestStatusDaemon: with a daemon running, `ober status` shows its
// version, PID, uptime, the outcome of the last reload, the interfaces
// with their XDP mode and program ID and the VIPs the node holds, in
// both forms; a refused reload and an applied one show as such.
func TestStatusDaemon(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	good := s.Config(nodetest.Params{Instances: 1})
	s.WriteConfig(good)
	s.Start()
	statusOf := func() (*api.Status, string) {
		t.Helper()
		res := ober(t, s.Node, 0, "--config", s.ConfigPath, "--bpffs-root", s.Root, "status", "--json")
		var st api.Status
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &st), res.stdout)
		require.NotNil(t, st.Daemon, res.stdout)
		return &st, res.stdout
	}
	table := func() string {
		t.Helper()
		return ober(t, s.Node, 0, "--config", s.ConfigPath, "--bpffs-root", s.Root, "status").stdout
	}

	st, raw := statusOf()
	d := st.Daemon
	require.Equal(t, testVersion, d.Version)
	require.NotZero(t, d.PID)
	require.GreaterOrEqual(t, d.UptimeSeconds, int64(0))
	require.WithinDuration(t, time.Now(), d.StartedAt.Add(time.Duration(d.UptimeSeconds)*time.Second), 10*time.Second)
	require.Equal(t, uint64(1), d.Config.Generation)
	require.Equal(t, api.ReloadNone, d.Config.LastReload)
	require.Equal(t, []api.VIPHeldStatus{{VIP: nodetest.VIP, Held: true, State: "local"}}, d.VIPs)
	require.Len(t, st.Attachments, 1)
	a := st.Attachments[0]
	require.Equal(t, "veth-n", a.Iface)
	require.Equal(t, "native", a.Mode)
	require.NotZero(t, a.ProgramID)
	require.Contains(t, s.Node.IP(t, "link", "show", "dev", "veth-n"), "prog/xdp id "+strconv.Itoa(int(a.ProgramID))+" ",
		"program_id is the kernel's ID of the program on the interface")

	// Every field the daemon actually sends is one the document knows.
	var doc any
	require.NoError(t, json.Unmarshal([]byte(raw), &doc))
	sent, known := map[string]bool{}, map[string]bool{}
	flatPaths(doc, "", sent)
	jsonPaths(reflect.TypeFor[api.Status](), "", known)
	for p := range sent {
		require.True(t, known[p], "the daemon sends %s, which api.Status does not declare", p)
	}

	out := table()
	t.Logf("ober status:\n%s", out)
	require.Regexp(t, `(?m)^node +node1 \(ober `+regexp.QuoteMeta(testVersion)+`, pid \d+, up \d+\S* since \S+\)$`, out)
	require.Regexp(t, `(?m)^reload +none since start$`, out)
	require.Regexp(t, `(?m)^VIP +HELD HERE +STATE\n10\.98\.0\.100 +yes +local$`, out)
	require.Regexp(t, `(?m)^xdp +program id `+strconv.Itoa(int(a.ProgramID))+` on veth-n$`, out)
	require.Regexp(t, `(?m)^INTERFACE +IFINDEX +XDP MODE\nveth-n +\d+ +native$`, out)

	// A reload the daemon refuses: the old configuration stays, and
	// status says why.
	bad := s.Config(nodetest.Params{Instances: 1})
	bad.Services[0].Mode = "sctp"
	s.WriteConfig(bad)
	s.Signal(syscall.SIGHUP)
	waitStatus(t, statusOf, func(st *api.Status) bool { return st.Daemon.Config.LastReload == api.ReloadRefused })
	st, _ = statusOf()
	require.Equal(t, uint64(1), st.Daemon.Config.Generation)
	require.Equal(t, uint64(1), st.Daemon.Config.ReloadFailures)
	require.Contains(t, st.Daemon.Config.LastReloadError, "services[0].mode")
	require.Regexp(t, `(?m)^reload +REFUSED, the running configuration is unchanged \(1 refused in all\): .*services\[0\]\.mode`, table())

	// The good configuration again: applied, generation 2.
	s.WriteConfig(good)
	s.Signal(syscall.SIGHUP)
	waitStatus(t, statusOf, func(st *api.Status) bool { return st.Daemon.Config.LastReload == api.ReloadOK })
	st, _ = statusOf()
	require.Equal(t, uint64(2), st.Daemon.Config.Generation)
	require.Empty(t, st.Daemon.Config.LastReloadError)
	require.Regexp(t, `(?m)^reload +last reload ok \(1 refused in all\)$`, table())
}

func waitStatus(t *testing.T, get func() (*api.Status, string), cond func(*api.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, raw := get()
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status not as expected after 30s:\n%s", raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
