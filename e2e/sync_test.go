package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader"
)

// syncConfig is a valid ober.yaml with the notes an operator keeps in it.
const syncConfig = `# ingress node 1: keep this file in git
node:
  name: node1
  interfaces: [veth-s]   # the uplink
vips: [10.99.0.100]
services:
  - name: https
    port: 443
    mode: tls
    tls:
      self_signed: true
  - name: http
    port: 80
    mode: http
backends:
  servers:
    - name: s3a
      address: 10.98.2.1:9000

# Plain HTTP is for the compute nodes only.
whitelists:
  frontend_http:   # ticket OPS-12
    - 10.20.0.0/16    # the old partition
    - cli1
  backend_http: []

api:
  listen: 127.0.0.1:8404
`

// syncHosts are the names the tests resolve, through the hidden
// --hosts-file: neither DNS nor /etc/hosts is involved.
var syncHosts = []string{
	"10.99.1.1 cli1", "10.99.1.2 cli2", "10.99.1.3 cli3", "2001:db8:1::3 cli3",
	"10.99.2.1 client01", "10.99.2.2 client02", "10.99.2.4 client04",
	"10.99.2.8 client08", "10.99.2.9 client09", "10.99.2.10 client10",
	"10.99.3.8 node8", "10.99.3.9 node9", "10.99.3.10 node10",
	"10.99.4.1 r1n1", "10.99.4.2 r1n2", "10.99.4.3 r2n1", "10.99.4.4 r2n2",
	"10.99.5.1 web1 web2", // two names, one address
}

// syncEnv is a dataplane pinned in a private bpffs (nothing attached:
// sync only touches maps), a configuration file and a hosts file.
type syncEnv struct {
	root, cfg, hosts string
	d                *loader.Dataplane
}

func newSyncEnv(t *testing.T, cfgText string, pinned bool) *syncEnv {
	t.Helper()
	dir := t.TempDir()
	e := &syncEnv{
		root:  netnstest.BPFFS(t) + "/ober",
		cfg:   filepath.Join(dir, "ober.yaml"),
		hosts: filepath.Join(dir, "hosts"),
	}
	require.NoError(t, os.WriteFile(e.hosts, []byte(strings.Join(syncHosts, "\n")+"\n"), 0o644))
	require.NoError(t, os.WriteFile(e.cfg, []byte(cfgText), 0o640))
	require.NoError(t, os.Chmod(e.cfg, 0o640)) // whatever the umask
	if pinned {
		d, err := loader.Open(loader.Options{Root: e.root})
		require.NoError(t, err)
		t.Cleanup(func() { d.Close() })
		e.d = d
	}
	return e
}

// args puts the environment's flags before a sync's own.
func (e *syncEnv) args(args ...string) []string {
	return append([]string{"--bpffs-root", e.root, "--config", e.cfg, "sync", "--hosts-file", e.hosts}, args...)
}

func (e *syncEnv) sync(t *testing.T, code int, args ...string) result {
	t.Helper()
	return ober(t, nil, code, e.args(args...)...)
}

// live reads a list back from the maps.
func (e *syncEnv) live(t *testing.T, id loader.WhitelistID) ([]string, uint64) {
	t.Helper()
	ps, info, err := e.d.Whitelist(id)
	require.NoError(t, err)
	out := []string{}
	for _, p := range addrlist.Normalize(ps) {
		out = append(out, p.String())
	}
	return out, info.Generation
}

func (e *syncEnv) file(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(e.cfg)
	require.NoError(t, err)
	return string(b)
}

// state is everything a failed sync must leave as it was.
func (e *syncEnv) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(e.file(t))
	if e.d != nil {
		for _, id := range []loader.WhitelistID{loader.WhitelistFrontendHTTP, loader.WhitelistRouters, loader.WhitelistBackendHTTP} {
			l, gen := e.live(t, id)
			b.WriteString(id.String() + ": " + strings.Join(l, ",") + " @" + strconv.FormatUint(gen, 10) + "\n")
		}
	}
	entries, err := os.ReadDir(filepath.Dir(e.cfg))
	require.NoError(t, err)
	for _, en := range entries {
		b.WriteString(en.Name() + "\n") // no temporary file left behind
	}
	return b.String()
}

// requireFailed checks the one line a failed sync prints and that it
// changed nothing.
func (e *syncEnv) requireFailed(t *testing.T, before string, res result, want string) {
	t.Helper()
	require.Equal(t, "ober: sync: "+want+"\n", res.stderr)
	require.Empty(t, res.stdout)
	require.Equal(t, before, e.state(t), "a failed sync changed something")
}

func (e *syncEnv) loadConfig(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Load(e.cfg)
	require.NoError(t, err)
	return c
}

// requireDaemonAccepts resolves the file as the daemon does at start and
// on reload, with the same names.
func (e *syncEnv) requireDaemonAccepts(t *testing.T) *config.Resolved {
	t.Helper()
	r, err := addrlist.ReadHosts(e.hosts)
	require.NoError(t, err)
	res, err := e.loadConfig(t).Resolve(context.Background(), r)
	require.NoError(t, err, "the daemon would refuse the file sync wrote")
	return res
}

func TestSyncNeedsListsOffATerminal(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	before := e.state(t)
	for _, args := range [][]string{{}, {"--dry-run"}, {"--allow-empty"}} {
		res := e.sync(t, 1, args...) // stdin is /dev/null
		e.requireFailed(t, before, res, "give the lists to set: --routers LIST, --frontend-http LIST, "+
			"--backend-http LIST (or run sync on a terminal to be asked for them)")
	}
}

// Every form a LIST can take ends up in the maps as the addresses it
// names, and in the file as the items written.
func TestSyncHostlistForms(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	list := "client[01-02,04], client[08-10],node[8-10],r[1-2]n[1-2],web[1-2]," +
		"10.30.0.0/16,10.30.1.7,192.0.2.5,2001:db8:c::/48,2001:db8::7,cli3"
	res := e.sync(t, 0, "--frontend-http", list)
	require.Equal(t, `+ 10.30.0.0/16
+ 10.99.1.3/32 (cli3)
+ 10.99.2.1/32 (client01)
+ 10.99.2.2/32 (client02)
+ 10.99.2.4/32 (client04)
+ 10.99.2.8/32 (client08)
+ 10.99.2.9/32 (client09)
+ 10.99.2.10/32 (client10)
+ 10.99.3.8/32 (node8)
+ 10.99.3.9/32 (node9)
+ 10.99.3.10/32 (node10)
+ 10.99.4.1/32 (r1n1)
+ 10.99.4.2/32 (r1n2)
+ 10.99.4.3/32 (r2n1)
+ 10.99.4.4/32 (r2n2)
+ 10.99.5.1/32 (web1, web2)
+ 192.0.2.5/32
+ 2001:db8::7/128
+ 2001:db8:1::3/128 (cli3)
+ 2001:db8:c::/48
frontend-http: 20 entries, generation 0 -> 1
saved whitelists.frontend_http in `+e.cfg+"\n", res.stdout)
	require.Empty(t, res.stderr)
	live, gen := e.live(t, loader.WhitelistFrontendHTTP)
	require.Equal(t, uint64(1), gen)
	require.Len(t, live, 20)
	require.NotContains(t, live, "10.30.1.7/32", "covered by 10.30.0.0/16")

	c := e.loadConfig(t)
	require.Equal(t, []string{"client[01-02,04]", "client[08-10]", "node[8-10]", "r[1-2]n[1-2]", "web[1-2]",
		"10.30.0.0/16", "10.30.1.7", "192.0.2.5", "2001:db8:c::/48", "2001:db8::7", "cli3"}, c.Whitelists.FrontendHTTP)
	res2 := e.requireDaemonAccepts(t)
	want := make([]netip.Prefix, 0, len(live))
	for _, p := range live {
		want = append(want, netip.MustParsePrefix(p))
	}
	require.Equal(t, want, res2.Whitelists[config.WhitelistFrontendHTTP], "the daemon's next reload must set the same list")

	// The other two lists, in one run.
	res = e.sync(t, 0, "--backend-http", "cli[1-2]", "--routers", "10.99.0.1,fd00::1")
	require.Equal(t, `+ 10.99.0.1/32
+ fd00::1/128
routers: 2 entries, generation 0 -> 1
+ 10.99.1.1/32 (cli1)
+ 10.99.1.2/32 (cli2)
backend-http: 2 entries, generation 0 -> 1
saved whitelists.routers, whitelists.backend_http in `+e.cfg+"\n", res.stdout)
	l, _ := e.live(t, loader.WhitelistBackendHTTP)
	require.Equal(t, []string{"10.99.1.1/32", "10.99.1.2/32"}, l)
	l, _ = e.live(t, loader.WhitelistRouters)
	require.Equal(t, []string{"10.99.0.1/32", "fd00::1/128"}, l)
	c = e.loadConfig(t)
	require.Equal(t, []string{"cli[1-2]"}, c.Whitelists.BackendHTTP)
	require.Equal(t, []string{"10.99.0.1", "fd00::1"}, c.Whitelists.Routers)
}

// Mistakes: one line naming the flag and the value, and nothing changed,
// neither the maps nor the file.
func TestSyncErrorsChangeNothing(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	e.sync(t, 0, "--frontend-http", "cli[1-2]")
	before := e.state(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--frontend-http", "cli[1-"}, `--frontend-http "cli[1-": hostlist "cli[1-": offset 3: unclosed "["`},
		{[]string{"--frontend-http", "cli[2-1]"}, `--frontend-http "cli[2-1]": hostlist "cli[2-1]": offset 4: descending range "2-1"`},
		{[]string{"--backend-http", "cli1,10.0.0.5/24"}, `--backend-http "cli1,10.0.0.5/24": "10.0.0.5/24" has host bits set (did you mean 10.0.0.0/24?)`},
		{[]string{"--routers", "10.0.0.0/33"}, `--routers "10.0.0.0/33": "10.0.0.0/33": invalid CIDR: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`},
		{[]string{"--frontend-http", "cli1,10.0.0.256"}, `--frontend-http "cli1,10.0.0.256": "10.0.0.256": invalid IP address: ParseAddr("10.0.0.256"): IPv4 field has value >255`},
		{[]string{"--frontend-http", "cli1,nosuch,gone[1-2]"}, `--frontend-http "cli1,nosuch,gone[1-2]": 3 of 4 host names did not resolve: ` +
			`"nosuch": lookup nosuch: no such host; "gone1": lookup gone1: no such host; "gone2": lookup gone2: no such host ` +
			`(pass --allow-unresolved to leave such names out)`},
		{[]string{"--frontend-http", ""}, `--frontend-http "": the new list is empty and would admit nobody (pass --allow-empty to empty it on purpose)`},
		{[]string{"--frontend-http", "nosuch", "--allow-unresolved"}, `--frontend-http "nosuch": the new list is empty and would admit nobody: ` +
			`none of its 1 names resolved (pass --allow-empty to empty it on purpose)`},
		// A good list does not go through beside a bad one.
		{[]string{"--frontend-http", "cli3", "--backend-http", "cli["}, `--backend-http "cli[": hostlist "cli[": offset 3: unclosed "["`},
	} {
		res := e.sync(t, 1, tc.args...)
		e.requireFailed(t, before, res, tc.want)
	}

	res := ober(t, nil, 1, "--bpffs-root", e.root, "--config", e.cfg+".missing", "sync", "--frontend-http", "cli1")
	e.requireFailed(t, before, res, "--config "+e.cfg+".missing: no such file or directory")
}

// The file keeps every byte sync has no business with: comments, blank
// lines, the other keys and their order.
func TestSyncPersistsOnlyTheList(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	res := e.sync(t, 0, "--frontend-http", "cli1,client[01-02]", "--backend-http", "cli2")
	require.Contains(t, res.stdout, "saved whitelists.frontend_http, whitelists.backend_http in "+e.cfg+"\n")
	require.Equal(t, strings.Replace(syncConfig, `    - 10.20.0.0/16    # the old partition
    - cli1
  backend_http: []
`, `    - cli1
    - client[01-02]
  backend_http:
    - cli2
`, 1), e.file(t))
	st, err := os.Stat(e.cfg)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), st.Mode().Perm(), "the file keeps its mode")
	e.requireDaemonAccepts(t)

	// A configuration reached through a symbolic link: the file it points
	// to is replaced, the link stays.
	link := filepath.Join(t.TempDir(), "ober.yaml")
	require.NoError(t, os.Symlink(e.cfg, link))
	ober(t, nil, 0, "--bpffs-root", e.root, "--config", link, "sync", "--hosts-file", e.hosts, "--frontend-http", "cli3")
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.Equal(t, os.ModeSymlink, fi.Mode().Type(), "the link stays a link")
	require.Equal(t, []string{"cli3"}, e.loadConfig(t).Whitelists.FrontendHTTP)

	// A file without whitelists gets them at the end.
	noLists := syncConfig[:strings.Index(syncConfig, "# Plain HTTP")] + "api:\n  listen: 127.0.0.1:8404\n"
	require.NoError(t, os.WriteFile(e.cfg, []byte(noLists), 0o640))
	e.sync(t, 0, "--routers", "10.99.0.1")
	require.Equal(t, noLists+"whitelists:\n  routers:\n    - 10.99.0.1\n", e.file(t))
	e.requireDaemonAccepts(t)
}

// The same list again swaps nothing and writes nothing; a dry run shows
// the change and applies none of it.
func TestSyncNoChangeAndDryRun(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	e.sync(t, 0, "--frontend-http", "cli[1-2]")
	before := e.state(t)
	res := e.sync(t, 0, "--frontend-http", "cli[1-2]")
	require.Equal(t, "frontend-http: no change (2 entries, generation 1)\n", res.stdout)
	require.Equal(t, before, e.state(t))

	// Live and file differ in form only: the file follows, the map stays.
	res = e.sync(t, 0, "--frontend-http", "cli2, cli1")
	require.Equal(t, "frontend-http: 2 entries, generation 1 (the live list already matched)\n"+
		"saved whitelists.frontend_http in "+e.cfg+"\n", res.stdout)
	require.Equal(t, []string{"cli2", "cli1"}, e.loadConfig(t).Whitelists.FrontendHTTP)
	before = e.state(t)

	res = e.sync(t, 0, "--frontend-http", "cli3,10.1.0.0/16", "--dry-run")
	require.Equal(t, `+ 10.1.0.0/16
+ 10.99.1.3/32 (cli3)
+ 2001:db8:1::3/128 (cli3)
- 10.99.1.1/32 (cli1)
- 10.99.1.2/32 (cli2)
frontend-http: 3 entries, generation 1 (dry run: nothing applied)
dry run: `+e.cfg+" not changed (would set whitelists.frontend_http)\n", res.stdout)
	require.Equal(t, before, e.state(t))

	// --allow-empty empties on purpose.
	res = e.sync(t, 0, "--frontend-http", "", "--allow-empty")
	require.Equal(t, "- 10.99.1.1/32 (cli1)\n- 10.99.1.2/32 (cli2)\nfrontend-http: 0 entries, generation 1 -> 2\n"+
		"saved whitelists.frontend_http in "+e.cfg+"\n", res.stdout)
	require.Contains(t, e.file(t), "  frontend_http: []   # ticket OPS-12\n")
	e.requireDaemonAccepts(t)
}

// Names that do not resolve, allowed: left out of the maps and of the
// file, so that the daemon, which refuses them, accepts the file.
func TestSyncAllowUnresolved(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	res := e.sync(t, 0, "--frontend-http", "client[01-04],gone,cli1", "--allow-unresolved")
	require.Regexp(t, `^\+ 10\.99\.1\.1/32 \(cli1\)
\+ 10\.99\.2\.1/32 \(client01\)
\+ 10\.99\.2\.2/32 \(client02\)
\+ 10\.99\.2\.4/32 \(client04\)
\? client03 left out: lookup client03: no such host
\? gone left out: lookup gone: no such host
frontend-http: 4 entries, generation 0 -> 1
saved whitelists.frontend_http in .+
$`, res.stdout)
	require.Equal(t, []string{"client[01-02,04]", "cli1"}, e.loadConfig(t).Whitelists.FrontendHTTP)
	e.requireDaemonAccepts(t)
}

// Without a pinned dataplane only the file changes, and nothing is
// created in bpffs.
func TestSyncWithoutDataplane(t *testing.T) {
	e := newSyncEnv(t, syncConfig, false)
	res := e.sync(t, 0, "--frontend-http", "cli[2-3]")
	require.Equal(t, `+ 10.99.1.2/32 (cli2)
+ 10.99.1.3/32 (cli3)
+ 2001:db8:1::3/128 (cli3)
- 10.20.0.0/16
- 10.99.1.1/32 (cli1)
frontend-http: 3 entries; no dataplane pinned at `+e.root+`: the daemon applies it when it starts
saved whitelists.frontend_http in `+e.cfg+"\n", res.stdout)
	require.Equal(t, []string{"cli[2-3]"}, e.loadConfig(t).Whitelists.FrontendHTTP)
	requireNoPins(t, filepath.Dir(e.root))

	// With neither a file nor a dataplane there is nothing to change.
	res = ober(t, nil, 1, "--bpffs-root", e.root, "sync", "--frontend-http", "10.0.0.1")
	require.Equal(t, "ober: sync: no configuration file at "+config.DefaultPath+" and no dataplane pinned at "+
		e.root+": nothing to change (give --config FILE, or attach first)\n", res.stderr)
}

const syncBGP = `node:
  name: node1
  interfaces: [veth-s]
vips: [10.99.0.100]
services:
  - port: 443
    mode: tls
    tls: {self_signed: true}
backends:
  servers:
    - address: 10.98.2.1:9000
ha:
  mode: bgp
  bgp:
    asn: 65010
    router_id: 10.99.1.254
    peers:
      - address: 10.99.1.1    # tor a
        asn: 65000
      - address: 10.99.1.2    # tor b
        asn: 65000
whitelists:
  routers: [cli1, cli2]
`

// In ha.mode bgp the routers list must hold every peer, and an empty one
// means the peers: sync applies what the daemon would.
func TestSyncRoutersInBGPMode(t *testing.T) {
	e := newSyncEnv(t, syncBGP, true)
	e.sync(t, 0, "--routers", "cli[1-2],10.99.9.0/24")
	before := e.state(t)
	res := e.sync(t, 1, "--routers", "cli1,10.99.9.0/24")
	e.requireFailed(t, before, res, `--routers "cli1,10.99.9.0/24": the daemon would refuse it: ha.bgp.peers[1].address: 10.99.1.2: `+
		`is not in whitelists.routers: XDP would drop its BGP and BFD packets (add it, or leave the list empty to admit exactly the peers)`)

	res = e.sync(t, 0, "--routers", "", "--allow-empty")
	require.Equal(t, "- 10.99.9.0/24\nrouters: 2 entries, generation 1 -> 2\nsaved whitelists.routers in "+e.cfg+"\n", res.stdout)
	l, _ := e.live(t, loader.WhitelistRouters)
	require.Equal(t, []string{"10.99.1.1/32", "10.99.1.2/32"}, l, "empty means the peers")
	require.Contains(t, e.file(t), "  routers: []\n")
	e.requireDaemonAccepts(t)
}

// unshared runs ober in a private mount namespace after a shell prelude
// sets up mounts there; the host's mounts are not touched.
func unshared(t *testing.T, prelude string, args ...string) result {
	t.Helper()
	netnstest.RequireTool(t, "unshare", "util-linux")
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	script := "set -e; " + prelude + "; exec " + oberBin + " " + strings.Join(quoted, " ")
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		res.code = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return res
}

// When the file cannot be written, nothing changes; when it cannot be
// replaced after the maps were swapped, the maps are put back.
func TestSyncRollsBack(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	e.sync(t, 0, "--frontend-http", "cli[1-2]")
	before := e.state(t)
	dir := filepath.Dir(e.cfg)

	// A read-only directory: the new file cannot even be written.
	res := unshared(t, "mount --bind "+dir+" "+dir+" && mount -o remount,ro,bind "+dir,
		e.args("--frontend-http", "cli3")...)
	require.Equal(t, 1, res.code, "%s", res)
	e.requireFailed(t, before, res, "write "+e.cfg+": read-only file system; nothing changed")

	// The file is a mount point (as a Kubernetes ConfigMap's is): the new
	// file is written and the map swapped, but the rename fails.
	res = unshared(t, "mount --bind "+e.cfg+" "+e.cfg, e.args("--frontend-http", "cli3")...)
	require.Equal(t, 1, res.code, "%s", res)
	require.Equal(t, "ober: sync: replace "+e.cfg+": device or resource busy; the live lists were put back, nothing changed\n", res.stderr)
	require.Empty(t, res.stdout)
	l, gen := e.live(t, loader.WhitelistFrontendHTTP)
	require.Equal(t, []string{"10.99.1.1/32", "10.99.1.2/32"}, l, "the list was put back")
	require.Equal(t, uint64(3), gen, "swapped, then swapped back")
	require.Equal(t, syncConfig[:strings.Index(syncConfig, "whitelists:")], e.file(t)[:strings.Index(syncConfig, "whitelists:")])
	require.Contains(t, e.file(t), "    - cli[1-2]\n")
	require.NotContains(t, e.file(t), "cli3")

	// A file that does not load (here: a key misspelt by hand) is not
	// made worse, and the maps stay.
	broken := strings.Replace(e.file(t), "  listen:", "  lisen:", 1)
	require.NoError(t, os.WriteFile(e.cfg, []byte(broken), 0o640))
	before = e.state(t)
	res = e.sync(t, 1, "--frontend-http", "cli3")
	e.requireFailed(t, before, res, "the configuration does not load; fix it first: config "+e.cfg+
		`: api.lisen: unknown key (line 27); did you mean "listen"?`)
}

// XDP enforces what sync sets: a SYN from an address the new list adds
// gets through, one from an address it removes is dropped.
func TestSyncLiveInXDP(t *testing.T) {
	ts := newTrafficSite(t)
	e := &syncEnv{root: ts.root, d: ts.d, cfg: filepath.Join(t.TempDir(), "ober.yaml")}
	e.hosts = filepath.Join(filepath.Dir(e.cfg), "hosts")
	require.NoError(t, os.WriteFile(e.hosts, []byte(strings.Join(syncHosts, "\n")+"\n"), 0o644))
	require.NoError(t, os.WriteFile(e.cfg, []byte(syncConfig), 0o640))
	run := func(list string) result {
		t.Helper()
		return ober(t, ts.srv, 0, e.args("--frontend-http", list)...)
	}

	res := run("cli[1-2]")
	require.Contains(t, res.stdout, "generation 0 -> 1")
	require.NoError(t, echo2(ts, srcA), "cli1 is on the list")
	c, err := ts.dial(srcC, dialTimeout)
	if c != nil {
		c.Close()
	}
	require.Error(t, err, "cli3 is not on the list yet")

	res = run("cli1,cli3")
	require.Contains(t, res.stdout, "+ 10.99.1.3/32 (cli3)\n")
	require.Contains(t, res.stdout, "- 10.99.1.2/32 (cli2)\n")
	require.NoError(t, echo2(ts, srcC), "cli3 was added")
	c, err = ts.dial(srcB, dialTimeout)
	if c != nil {
		c.Close()
	}
	require.Error(t, err, "cli2 was removed")
	require.Equal(t, []string{"cli1", "cli3"}, e.loadConfig(t).Whitelists.FrontendHTTP)
}

// On a terminal, sync asks for each list, shows the change, and applies
// it only when told to.
func TestSyncInteractive(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	e.sync(t, 0, "--frontend-http", "cli1")
	before := e.state(t)

	// Declined: nothing changes.
	s := startTerminal(t, e.args()...)
	s.answer("routers [(empty)]: ", "")
	s.answer("frontend-http [cli1]: ", "cli[2-3]")
	s.answer("backend-http [(empty)]: ", "")
	s.answer("Apply? [y/N] ", "")
	code, out := s.wait(), s.output()
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "+ 10.99.1.2/32 (cli2)\n+ 10.99.1.3/32 (cli3)\n+ 2001:db8:1::3/128 (cli3)\n"+
		"- 10.99.1.1/32 (cli1)\nfrontend-http: 3 entries, generation 1 -> 2 once applied\nApply? [y/N] \nnothing applied\n")
	require.Equal(t, before, e.state(t))

	// Accepted: both lists given change, the one kept does not.
	s = startTerminal(t, e.args()...)
	s.answer("routers [(empty)]: ", "10.99.0.1")
	s.answer("frontend-http [cli1]: ", "")
	s.answer("backend-http [(empty)]: ", "cli[2-3]")
	s.answer("Apply? [y/N] ", "y")
	code, out = s.wait(), s.output()
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "Apply? [y/N] y\nrouters: 1 entry, generation 0 -> 1\nbackend-http: 3 entries, generation 0 -> 1\n"+
		"saved whitelists.routers, whitelists.backend_http in "+e.cfg+"\n")
	c := e.loadConfig(t)
	require.Equal(t, []string{"10.99.0.1"}, c.Whitelists.Routers)
	require.Equal(t, []string{"cli1"}, c.Whitelists.FrontendHTTP)
	require.Equal(t, []string{"cli[2-3]"}, c.Whitelists.BackendHTTP)
	l, gen := e.live(t, loader.WhitelistFrontendHTTP)
	require.Equal(t, []string{"10.99.1.1/32"}, l)
	require.Equal(t, uint64(1), gen, "the list kept is not swapped")

	// A bad answer is the same one-line error as a bad flag.
	before = e.state(t)
	s = startTerminal(t, e.args()...)
	s.answer("routers [10.99.0.1]: ", "tor[1-")
	s.answer("frontend-http [cli1]: ", "")
	s.answer("backend-http [cli[2-3]]: ", "")
	code, out = s.wait(), s.output()
	require.Equal(t, 1, code, out)
	require.True(t, strings.HasSuffix(out, "\nober: sync: --routers \"tor[1-\": hostlist \"tor[1-\": offset 3: unclosed \"[\"\n"), out)
	require.Equal(t, before, e.state(t))

	// Ctrl-C at a prompt ends it, changing nothing.
	s = startTerminal(t, e.args()...)
	s.answer("routers [10.99.0.1]: ", "10.99.0.2")
	s.press("frontend-http [cli1]: ", "\x03")
	code, out = s.wait(), s.output()
	require.Equal(t, 1, code, out)
	require.True(t, strings.HasSuffix(out, "\nober: sync: interrupted; nothing changed\n"), out)
	require.Equal(t, before, e.state(t))
}

// Without --bpffs-root, sync finds the daemon's dataplane where the
// configuration pins it.
func TestSyncUsesTheConfiguredPinRoot(t *testing.T) {
	e := newSyncEnv(t, syncConfig, true)
	cfg := strings.Replace(syncConfig, "  name: node1\n", "  name: node1\n  bpffs_root: "+e.root+"\n", 1)
	require.NoError(t, os.WriteFile(e.cfg, []byte(cfg), 0o640))
	res := ober(t, nil, 0, "--config", e.cfg, "sync", "--hosts-file", e.hosts, "--frontend-http", "cli3")
	require.Contains(t, res.stdout, "frontend-http: 2 entries, generation 0 -> 1\n")
	l, _ := e.live(t, loader.WhitelistFrontendHTTP)
	require.Equal(t, []string{"10.99.1.3/32", "2001:db8:1::3/128"}, l)
}
