package install

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/tuning"
	"github.com/ober-ingress/ober/control/runtime/nftlb"
	"github.com/ober-ingress/ober/systemd"
)

// The machine's commands, faked: each appends its arguments to
// $FAKE/log as "name args...", and the package tools keep what is
// installed in $FAKE/installed ("name version" lines). sysctl -p and
// mount leave their effect where bootstrap looks for it, under $ROOT.
var fakeScripts = map[string]string{
	"dpkg-query": `printf '%s\n' "dpkg-query $*" >> "$FAKE/log"
for p; do :; done
v=$(awk -v p="$p" '$1 == p { v = $2 } END { print v }' "$FAKE/installed")
if [ -z "$v" ]; then echo "dpkg-query: no packages found matching $p" >&2; exit 1; fi
echo "installed $v"`,
	"rpm": `printf '%s\n' "rpm $*" >> "$FAKE/log"
for p; do :; done
v=$(awk -v p="$p" '$1 == p { v = $2 } END { print v }' "$FAKE/installed")
if [ -z "$v" ]; then echo "package $p is not installed"; exit 1; fi
echo "$v"`,
	"apt-get": `echo "apt-get $* (source list: $(cat "$ROOT/etc/apt/sources.list.d/ober-haproxy.list" 2>/dev/null | grep -c '^deb'))" >> "$FAKE/log"
[ -e "$FAKE/fail" ] && { echo "E: Unable to locate package haproxy" >&2; exit 100; }
[ "$1" = install ] || exit 0
shift
for s; do
  [ "$s" = -y ] && continue
  case "$s" in haproxy=*) echo "haproxy ${s#haproxy=}" | sed 's/\*$/9-1~bpo12+1/' ;; *) echo "$s 1.0" ;; esac >> "$FAKE/installed"
done`,
	"dnf": `echo "dnf $*" >> "$FAKE/log"
shift 2
for s; do echo "$s 1.0" >> "$FAKE/installed"; done`,
	"systemctl": `echo "systemctl $*" >> "$FAKE/log"
[ "$1" = is-active ] && { [ -e "$FAKE/active" ]; exit $?; }
exit 0`,
	"sysctl": `echo "sysctl $*" >> "$FAKE/log"
grep -v '^#' "$2" | grep . | while IFS= read -r l; do
  k=${l%% = *}; v=${l#* = }
  p="$ROOT/proc/sys/$(echo "$k" | tr . /)"
  mkdir -p "$(dirname "$p")"; echo "$v" > "$p"
done`,
	"mount": `echo "mount $*" >> "$FAKE/log"
mkdir -p "$ROOT/proc"; echo "bpf /sys/fs/bpf bpf rw 0 0" >> "$ROOT/proc/mounts"`,
	// The account tools write the tree's /etc/passwd and /etc/group.
	"groupadd": `echo "groupadd $*" >> "$FAKE/log"
for n; do :; done
echo "$n:x:990:" >> "$ROOT/etc/group"`,
	"useradd": `echo "useradd $*" >> "$FAKE/log"
for n; do :; done
g=$(awk -F: '$1 == "'"$n"'" { print $3 }' "$ROOT/etc/group")
echo "$n:x:991:$g:ober HAProxy instances:/nonexistent:/usr/sbin/nologin" >> "$ROOT/etc/passwd"`,
	"userdel": `echo "userdel $*" >> "$FAKE/log"
sed -i "/^$1:/d" "$ROOT/etc/passwd"`,
	"groupdel": `echo "groupdel $*" >> "$FAKE/log"
sed -i "/^$1:/d" "$ROOT/etc/group"`,
}

// machine is a root tree with the fake commands first (and alone) on PATH.
type machine struct {
	t          *testing.T
	root, fake string
}

func newMachine(t *testing.T, osRelease string, installed ...string) *machine {
	t.Helper()
	m := &machine{t: t, root: t.TempDir(), fake: t.TempDir()}
	bin := filepath.Join(m.fake, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	sh, err := exec.LookPath("sh")
	require.NoError(t, err, "the fake commands need a POSIX sh (install dash or bash)")
	for _, tool := range []string{"awk", "sed", "grep", "cat", "tr", "dirname", "mkdir"} {
		p, err := exec.LookPath(tool)
		require.NoError(t, err, "the fake commands need %s (install coreutils, grep, sed, mawk)", tool)
		require.NoError(t, os.Symlink(p, filepath.Join(bin, tool)))
	}
	for name, body := range fakeScripts {
		require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte("#!"+sh+"\n"+body+"\n"), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(m.fake, "installed"), []byte(strings.Join(installed, "\n")+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(m.fake, "log"), nil, 0o644))
	t.Setenv("PATH", bin)
	t.Setenv("FAKE", m.fake)
	t.Setenv("ROOT", m.root)
	m.file("etc/os-release", osRelease, 0o644)
	// systemd is the init of this tree.
	require.NoError(t, os.MkdirAll(filepath.Join(m.root, "run/systemd/system"), 0o755))
	return m
}

func (m *machine) file(rel, content string, mode os.FileMode) {
	m.t.Helper()
	p := filepath.Join(m.root, rel)
	require.NoError(m.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(m.t, os.WriteFile(p, []byte(content), mode))
}

func (m *machine) read(rel string) string {
	m.t.Helper()
	b, err := os.ReadFile(filepath.Join(m.root, rel))
	require.NoError(m.t, err)
	return string(b)
}

// log is what the fake commands were asked, one line per call.
func (m *machine) log() []string {
	m.t.Helper()
	b, err := os.ReadFile(filepath.Join(m.fake, "log"))
	require.NoError(m.t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// calls are the log lines of one command.
func (m *machine) calls(name string) []string {
	var out []string
	for _, l := range m.log() {
		if strings.HasPrefix(l, name+" ") {
			out = append(out, strings.TrimPrefix(l, name+" "))
		}
	}
	return out
}

func (m *machine) opts(out *bytes.Buffer) Options {
	exe := filepath.Join(m.fake, "ober-binary")
	require.NoError(m.t, os.WriteFile(exe, []byte("#!/bin/sh\necho ober\n"), 0o755))
	return Options{Root: m.root, Live: true, Out: out, Binary: exe, Completion: []byte("complete -F _ober ober\n"),
		RuntimeWatchdog: DefaultRuntimeWatchdog, RebootWatchdog: DefaultRebootWatchdog}
}

const (
	debian12 = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n"
	rhel10   = "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"centos fedora\"\nVERSION_ID=\"10.0\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 10.0 (Coughlan)\"\n"
)

// A live bootstrap installs exactly the missing packages, applies the
// tuning, mounts bpffs and reloads systemd; the second run runs none of
// it and says nothing changed.
func TestBootstrapLiveDebian(t *testing.T) {
	m := newMachine(t, debian12, "iproute2 6.1.0-3", "ethtool 1:6.1-1")
	var out bytes.Buffer
	o := m.opts(&out)
	o.Yes = true
	require.NoError(t, Bootstrap(context.Background(), o), out.String())

	require.Equal(t, []string{"update (source list: 0)", "install -y haproxy keepalived (source list: 0)"}, m.calls("apt-get"))
	require.Contains(t, out.String(), "installed packages haproxy keepalived\n")
	require.Equal(t, []string{"daemon-reload"}, m.calls("systemctl"))
	require.Equal(t, []string{"-p " + filepath.Join(m.root, tuning.File)}, m.calls("sysctl"))
	require.Equal(t, []string{"-t bpf -o nosuid,nodev,noexec,mode=700 bpf " + filepath.Join(m.root, "/sys/fs/bpf")}, m.calls("mount"))
	for _, l := range []string{"reloaded  systemd (systemctl daemon-reload)", "applied   /etc/sysctl.d/90-ober.conf (sysctl -p)",
		"mounted   bpf filesystem at /sys/fs/bpf", "note      systemd reads /etc/systemd/system.conf.d/90-ober-watchdog.conf when it starts: run `systemctl daemon-reexec`"} {
		require.Contains(t, out.String(), l)
	}
	man, err := ReadManifest(m.root)
	require.NoError(t, err)
	require.Equal(t, []string{"haproxy", "keepalived"}, man.Packages)
	// The HAProxy instances' account: a system group, then a system user
	// in it without home or shell.
	require.Equal(t, []string{"--system ober-haproxy"}, m.calls("groupadd"))
	require.Equal(t, []string{"--system --gid ober-haproxy --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --comment ober HAProxy instances ober-haproxy"}, m.calls("useradd"))
	require.Contains(t, out.String(), "created   group ober-haproxy (gid 990, system group of the HAProxy instances)\n")
	require.Contains(t, out.String(), "created   user ober-haproxy (uid 991, the HAProxy instances run as it: no home, no login shell)\n")
	require.Equal(t, []string{"ober-haproxy"}, man.Users)
	require.Equal(t, []string{"ober-haproxy"}, man.Groups)

	before := len(m.log())
	out.Reset()
	o.Yes = false // nothing to install: nothing to ask either
	require.NoError(t, Bootstrap(context.Background(), o), out.String())
	calls := m.log()[before:]
	for _, c := range calls {
		require.True(t, strings.HasPrefix(c, "dpkg-query "), "second run ran %q", c)
	}
	require.Len(t, calls, 4, "one query per package")
	require.Contains(t, out.String(), "unchanged packages haproxy keepalived iproute2 ethtool (installed)\n")
	require.Contains(t, out.String(), "unchanged group ober-haproxy (gid 990, system group of the HAProxy instances)\n")
	require.Contains(t, out.String(), "unchanged user ober-haproxy (uid 991, the HAProxy instances run as it)\n")
	require.True(t, strings.HasSuffix(out.String(), "nothing changed: ober is bootstrapped\n"), out.String())
	man2, err := ReadManifest(m.root)
	require.NoError(t, err)
	require.Equal(t, man.Packages, man2.Packages, "the second run keeps what the first installed")
	require.Equal(t, man.Users, man2.Users, "the second run keeps the account the first created")

	// Uninstall removes the account bootstrap created, once ober is
	// stopped.
	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true}))
	require.Equal(t, []string{"ober-haproxy"}, m.calls("userdel"))
	require.Equal(t, []string{"ober-haproxy"}, m.calls("groupdel"))
	require.Contains(t, out.String(), "removed   user ober-haproxy (bootstrap created it)\n")
	require.Contains(t, out.String(), "removed   group ober-haproxy (bootstrap created it)\n")
	require.NotContains(t, m.read("etc/passwd"), "ober-haproxy")
	require.NotContains(t, m.read("etc/group"), "ober-haproxy")
}

// An ober-haproxy account that was there before bootstrap (made by hand,
// or by an image) is used, not recorded, and left by uninstall; one with
// uid 0 is refused.
func TestBootstrapKeepsExistingAccount(t *testing.T) {
	m := newMachine(t, debian12, "haproxy 2.6", "keepalived 2.2", "iproute2 6.1", "ethtool 6.1")
	m.file("etc/group", "root:x:0:\nober-haproxy:x:120:\n", 0o644)
	m.file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nober-haproxy:x:110:120::/nonexistent:/usr/sbin/nologin\n", 0o644)
	var out bytes.Buffer
	require.NoError(t, Bootstrap(context.Background(), m.opts(&out)))
	require.Empty(t, m.calls("groupadd"))
	require.Empty(t, m.calls("useradd"))
	require.Contains(t, out.String(), "unchanged group ober-haproxy (gid 120, system group of the HAProxy instances)\n")
	require.Contains(t, out.String(), "unchanged user ober-haproxy (uid 110, the HAProxy instances run as it)\n")
	man, err := ReadManifest(m.root)
	require.NoError(t, err)
	require.Empty(t, man.Users)
	require.Empty(t, man.Groups)

	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true}))
	require.Empty(t, m.calls("userdel"))
	require.Empty(t, m.calls("groupdel"))
	require.Contains(t, m.read("etc/passwd"), "ober-haproxy:x:110:")

	m.file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nober-haproxy:x:0:120::/nonexistent:/usr/sbin/nologin\n", 0o644)
	err = Bootstrap(context.Background(), m.opts(&out))
	require.EqualError(t, err, "user ober-haproxy has uid 0 in /etc/passwd: HAProxy must not run as root; give it a system uid of its own")
}

func TestBootstrapLiveRHEL(t *testing.T) {
	m := newMachine(t, rhel10, "iproute 6.14.0-1.el10")
	var out bytes.Buffer
	o := m.opts(&out)
	o.Yes = true
	require.NoError(t, Bootstrap(context.Background(), o), out.String())
	require.Equal(t, []string{"install -y haproxy keepalived ethtool"}, m.calls("dnf"))
	require.Empty(t, m.calls("apt-get"))
	for _, q := range m.calls("rpm") {
		require.True(t, strings.HasPrefix(q, "-q --qf "), q)
	}
	out.Reset()
	require.NoError(t, Bootstrap(context.Background(), o), out.String())
	require.Len(t, m.calls("dnf"), 1, "nothing installed the second time")
	require.Contains(t, out.String(), "unchanged packages haproxy keepalived iproute ethtool (installed)\n")
	require.True(t, strings.HasSuffix(out.String(), "nothing changed: ober is bootstrapped\n"), out.String())
}

// Without -y and without a terminal the run stops before it changes
// anything; declining does the same; yes installs.
func TestBootstrapAsksBeforeInstalling(t *testing.T) {
	m := newMachine(t, debian12)
	var out bytes.Buffer
	o := m.opts(&out)
	err := Bootstrap(context.Background(), o)
	require.ErrorContains(t, err, "haproxy (not installed), keepalived (not installed), iproute2 (not installed), ethtool (not installed) to install, and stdin is not a terminal to ask: rerun with -y")
	requireUntouched(t, m)

	var asked []string
	o.Confirm = func(q string) (bool, error) { asked = append(asked, q); return false, nil }
	require.ErrorContains(t, Bootstrap(context.Background(), o), "not installing haproxy (not installed)")
	require.ErrorContains(t, Bootstrap(context.Background(), o), "(declined); nothing was changed")
	requireUntouched(t, m)
	require.Equal(t, "install haproxy (not installed), keepalived (not installed), iproute2 (not installed), ethtool (not installed) with apt-get?", asked[0])

	o.Confirm = func(string) (bool, error) { return true, nil }
	require.NoError(t, Bootstrap(context.Background(), o))
	require.Equal(t, []string{"update (source list: 0)", "install -y haproxy keepalived iproute2 ethtool (source list: 0)"}, m.calls("apt-get"))
}

// requireUntouched: the tree holds only what the test put there, and no
// command but the package queries ran.
func requireUntouched(t *testing.T, m *machine) {
	t.Helper()
	var paths []string
	require.NoError(t, filepath.Walk(m.root, func(p string, _ os.FileInfo, err error) error {
		rel, _ := filepath.Rel(m.root, p)
		paths = append(paths, rel)
		return err
	}))
	require.Equal(t, []string{".", "etc", "etc/os-release", "run", "run/systemd", "run/systemd/system"}, paths)
	for _, c := range m.log() {
		require.True(t, c == "" || strings.HasPrefix(c, "dpkg-query ") || strings.HasPrefix(c, "rpm "), "ran %q", c)
	}
}

// --haproxy-repo vendor on Debian: the installed 2.6 is not the wanted
// branch, so haproxy=3.2.* is installed, from the source list written
// (with its keyring) before apt-get update.
func TestBootstrapVendorUpgradesHAProxy(t *testing.T) {
	key := append([]byte{0x99, 0x01, 0x0d}, bytes.Repeat([]byte{7}, 32)...)
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits++; _, _ = w.Write(key) }))
	defer srv.Close()
	m := newMachine(t, debian12, "haproxy 2.6.12-1+deb12u2", "keepalived 1:2.2.7-1", "iproute2 6.1.0-3", "ethtool 1:6.1-1")
	var out bytes.Buffer
	o := m.opts(&out)
	o.Yes, o.HAProxyRepo, o.HAProxyVersion, o.KeyURL = true, RepoVendor, "3.2", srv.URL+"/key.gpg"
	require.NoError(t, Bootstrap(context.Background(), o), out.String())
	require.Equal(t, []string{"update (source list: 1)", "install -y haproxy=3.2.* (source list: 1)"}, m.calls("apt-get"))
	require.Contains(t, m.read(repoSourcePath), "\ndeb [signed-by=/etc/apt/keyrings/ober-haproxy.gpg] http://haproxy.debian.net bookworm-backports-3.2 main\n")
	require.Equal(t, string(key), m.read(debianKeyringPath))
	require.Equal(t, 1, hits)

	out.Reset()
	require.NoError(t, Bootstrap(context.Background(), o), out.String())
	require.Len(t, m.calls("apt-get"), 2, "3.2.9 is the wanted branch: nothing to install")
	require.Equal(t, 1, hits, "the keyring is there: no download")
	require.True(t, strings.HasSuffix(out.String(), "nothing changed: ober is bootstrapped\n"), out.String())
}

// A failing package manager is one line with its last words, and the
// files are not written.
func TestBootstrapPackageFailure(t *testing.T) {
	m := newMachine(t, debian12)
	require.NoError(t, os.WriteFile(filepath.Join(m.fake, "fail"), nil, 0o644))
	var out bytes.Buffer
	o := m.opts(&out)
	o.Yes = true
	err := Bootstrap(context.Background(), o)
	require.EqualError(t, err, "packages: apt-get update: exit status 100: E: Unable to locate package haproxy")
	_, statErr := os.Stat(filepath.Join(m.root, BinaryPath))
	require.ErrorIs(t, statErr, os.ErrNotExist)
}

func TestBootstrapWithoutSystemd(t *testing.T) {
	m := newMachine(t, debian12, "haproxy 2.6", "keepalived 2.2", "iproute2 6.1", "ethtool 6.1")
	require.NoError(t, os.RemoveAll(filepath.Join(m.root, "run/systemd")))
	var out bytes.Buffer
	require.NoError(t, Bootstrap(context.Background(), m.opts(&out)))
	require.Empty(t, m.calls("systemctl"))
	require.Contains(t, out.String(), "skipped   systemctl daemon-reload: systemd is not running\n")
}

// The watchdog drop-in follows the flags, and --runtime-watchdog 0
// removes the one an earlier run wrote.
func TestBootstrapWatchdog(t *testing.T) {
	m := newMachine(t, debian12, "haproxy 2.6", "keepalived 2.2", "iproute2 6.1", "ethtool 6.1")
	var out bytes.Buffer
	o := m.opts(&out)
	o.RuntimeWatchdog, o.RebootWatchdog = 30*time.Second, 5*time.Minute
	require.NoError(t, Bootstrap(context.Background(), o))
	require.True(t, strings.HasSuffix(m.read(WatchdogPath), "[Manager]\nRuntimeWatchdogSec=30s\nRebootWatchdogSec=5min\n"), m.read(WatchdogPath))
	o.RuntimeWatchdog = 0
	out.Reset()
	require.NoError(t, Bootstrap(context.Background(), o))
	require.Contains(t, out.String(), "removed   /etc/systemd/system.conf.d/90-ober-watchdog.conf (--runtime-watchdog 0)\n")
	_, err := os.Stat(filepath.Join(m.root, WatchdogPath))
	require.ErrorIs(t, err, os.ErrNotExist)
	man, err := ReadManifest(m.root)
	require.NoError(t, err)
	_, recorded := man.sum(WatchdogPath)
	require.False(t, recorded)
}

func TestBootstrapOptionErrors(t *testing.T) {
	for _, c := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.HAProxyRepo = "ppa" }, `--haproxy-repo "ppa": want distro or vendor`},
		{func(o *Options) { o.HAProxyRepo, o.HAProxyVersion = RepoVendor, "3" }, `--haproxy-version "3": want a branch such as 3.2`},
		{func(o *Options) { o.RuntimeWatchdog = 1500 * time.Millisecond }, "--runtime-watchdog 1.5s: want whole seconds"},
		{func(o *Options) { o.RebootWatchdog = -time.Second }, "--reboot-watchdog -1s: want whole seconds, 0 or more"},
		{func(o *Options) { o.HAProxyRepo = RepoVendor }, "--haproxy-repo vendor: no vendor repository is supported on Red Hat Enterprise Linux 10.0 (Coughlan); its AppStream ships HAProxy 3.x"},
	} {
		t.Run(c.want, func(t *testing.T) {
			m := newMachine(t, rhel10)
			var out bytes.Buffer
			o := m.opts(&out)
			o.Yes = true
			c.change(&o)
			require.ErrorContains(t, Bootstrap(context.Background(), o), c.want)
			requireUntouched(t, m)
		})
	}
}

func TestDetectOS(t *testing.T) {
	for _, c := range []struct {
		release string
		want    OS
	}{
		{"ID=ubuntu\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\n", OS{ID: "ubuntu", VersionID: "24.04", Codename: "noble", Family: Debian}},
		{"ID=debian\nVERSION_ID=\"12\"\n", OS{ID: "debian", VersionID: "12", Codename: "bookworm", Family: Debian}},
		{"ID=debian\nVERSION_ID=\"13\"\nVERSION_CODENAME=trixie\n", OS{ID: "debian", VersionID: "13", Codename: "trixie", Family: Debian}},
		{"ID=\"rhel\"\nVERSION_ID=\"10.1\"\n", OS{ID: "rhel", VersionID: "10.1", Family: RHEL}},
		{"ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"10.0\"\n", OS{ID: "rocky", VersionID: "10.0", Family: RHEL}},
		{"ID='almalinux'\nID_LIKE='rhel centos fedora'\nVERSION_ID='10.0'\n", OS{ID: "almalinux", VersionID: "10.0", Family: RHEL}},
	} {
		root := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, "usr/lib/os-release"), []byte(c.release), 0o644))
		got, err := DetectOS(root)
		require.NoError(t, err, c.release)
		require.Equal(t, c.want, got)
	}
	for _, c := range []struct{ release, id, version string }{
		{"ID=ubuntu\nVERSION_ID=\"22.04\"\n", "ubuntu", "22.04"},
		{"ID=debian\nVERSION_ID=\"11\"\n", "debian", "11"},
		{"ID=\"rhel\"\nVERSION_ID=\"9.4\"\n", "rhel", "9.4"},
		{"ID=fedora\nVERSION_ID=41\n", "fedora", "41"},
	} {
		root := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(c.release), 0o644))
		_, err := DetectOS(root)
		require.EqualError(t, err, "os: unsupported: ID "+strconv.Quote(c.id)+", VERSION_ID "+strconv.Quote(c.version)+
			" in /etc/os-release; ober supports "+Supported)
	}
	_, err := DetectOS(t.TempDir())
	require.ErrorContains(t, err, "os: cannot read /usr/lib/os-release")
}

func TestCheckRelease(t *testing.T) {
	for rel, old := range map[string]bool{"6.18.44-fc-v509": false, "6.1.0-18-amd64": false, "6.12.0-55.el10.x86_64": false, "5.15.0-91-generic": true} {
		got, err := checkRelease(rel)
		require.NoError(t, err, rel)
		require.Equal(t, old, got, rel)
	}
	_, err := checkRelease("5.10.0-28-amd64")
	require.ErrorContains(t, err, "kernel 5.10.0-28-amd64 is older than 5.15")
	_, err = checkRelease("garbage")
	require.ErrorContains(t, err, `kernel release "garbage" not understood`)
	// The running kernel is the tests' machine's: it must pass, or
	// nothing here could bootstrap.
	k, err := CheckKernel()
	require.NoError(t, err)
	require.NotEmpty(t, k.Release)
}

func TestSystemdDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{10 * time.Second: "10s", 2 * time.Minute: "2min", 90 * time.Second: "90s", 0: "0min"} {
		require.Equal(t, want, systemdDuration(d))
	}
}

func TestFetchKeyRefusesWhatIsNotAKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("<html>captive portal</html>"))
	}))
	defer srv.Close()
	_, err := fetchKey(context.Background(), srv.Client(), srv.URL+"/k", false)
	require.ErrorContains(t, err, "not a binary OpenPGP keyring")
	_, err = fetchKey(context.Background(), srv.Client(), srv.URL+"/k", true)
	require.ErrorContains(t, err, "not an armoured OpenPGP public key")
	_, err = fetchKey(context.Background(), srv.Client(), srv.URL+"/missing", true)
	require.ErrorContains(t, err, "HTTP 404 Not Found")
}

// A daemon in the pid file gets SIGTERM and is waited for; a pid file
// naming another program leaves that program alone.
func TestUninstallStopsTheDaemon(t *testing.T) {
	sleepPath, err := exec.LookPath("sleep")
	require.NoError(t, err, "install coreutils (sleep)")
	m := newMachine(t, debian12, "haproxy 2.6", "keepalived 2.2", "iproute2 6.1", "ethtool 6.1")
	require.NoError(t, os.RemoveAll(filepath.Join(m.root, "run/systemd"))) // no systemd: the pid file is the way
	var out bytes.Buffer
	require.NoError(t, Bootstrap(context.Background(), m.opts(&out)))

	daemon := exec.Command(sleepPath, "60")
	require.NoError(t, daemon.Start())
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	t.Cleanup(func() { _ = daemon.Process.Kill() })
	stranger := exec.Command(sleepPath, "60")
	require.NoError(t, stranger.Start())
	t.Cleanup(func() { _ = stranger.Process.Kill(); _ = stranger.Wait() })

	// The tree's /proc says which of the two is `ober run`.
	m.file(filepath.Join("proc", strconv.Itoa(daemon.Process.Pid), "cmdline"), "/usr/local/sbin/ober\x00run\x00", 0o644)
	m.file(filepath.Join("proc", strconv.Itoa(stranger.Process.Pid), "cmdline"), "sleep\x0060\x00", 0o644)

	m.file("run/ober/ober.pid", strconv.Itoa(stranger.Process.Pid)+"\n", 0o644)
	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true, KeepConfig: true}))
	require.Contains(t, out.String(), "skipped   stopping ober: pid "+strconv.Itoa(stranger.Process.Pid)+" of /run/ober/ober.pid is not `ober run` (stale pid file)\n")
	require.NoError(t, stranger.Process.Signal(syscall.Signal(0)), "the stranger still runs")

	require.NoError(t, Bootstrap(context.Background(), m.opts(&out)))
	m.file("run/ober/ober.pid", strconv.Itoa(daemon.Process.Pid)+"\n", 0o644)
	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true}))
	require.Contains(t, out.String(), "stopped   ober run (pid "+strconv.Itoa(daemon.Process.Pid)+", SIGTERM)\n")
	select {
	case err := <-exited:
		require.ErrorContains(t, err, "signal: terminated")
	case <-time.After(5 * time.Second):
		t.Fatal("the daemon still runs")
	}
	require.Empty(t, m.calls("systemctl"))
}

// With systemd, a running unit is stopped with systemctl, the links that
// enable it go, and systemd reloads.
func TestUninstallStopsTheUnit(t *testing.T) {
	m := newMachine(t, debian12, "haproxy 2.6", "keepalived 2.2", "iproute2 6.1", "ethtool 6.1")
	var out bytes.Buffer
	require.NoError(t, Bootstrap(context.Background(), m.opts(&out)))
	unit := systemd.Units()[0].Name
	link := filepath.Join("etc/systemd/system/multi-user.target.wants", unit)
	require.NoError(t, os.MkdirAll(filepath.Join(m.root, filepath.Dir(link)), 0o755))
	require.NoError(t, os.Symlink("/etc/systemd/system/"+unit, filepath.Join(m.root, link)))
	require.NoError(t, os.WriteFile(filepath.Join(m.fake, "active"), nil, 0o644))
	before := len(m.calls("systemctl"))

	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true}))
	require.Equal(t, []string{"is-active --quiet " + unit, "stop " + unit, "daemon-reload"}, m.calls("systemctl")[before:])
	require.Contains(t, out.String(), "stopped   "+unit+" (systemctl stop)\n")
	require.Contains(t, out.String(), "removed   /"+link+" (enables the unit)\n")
	require.Contains(t, out.String(), "note      the kernel keeps the tuning of /etc/sysctl.d/90-ober.conf until the next reboot\n")
	_, err := os.Lstat(filepath.Join(m.root, link))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Len(t, m.calls("mount"), 1, "one mount at bootstrap; uninstall never unmounts /sys/fs/bpf")
}

func TestManifestIsStable(t *testing.T) {
	m := newMachine(t, debian12, "haproxy 2.6", "keepalived 2.2", "iproute2 6.1", "ethtool 6.1")
	var out bytes.Buffer
	require.NoError(t, Bootstrap(context.Background(), m.opts(&out)))
	var man Manifest
	require.NoError(t, json.Unmarshal([]byte(m.read(ManifestPath)), &man))
	for _, f := range man.Files {
		require.Equal(t, sha([]byte(m.read(f.Path))), f.SHA256, f.Path)
	}
	require.Contains(t, man.Dirs, ConfigDir)
	require.Equal(t, FstabLine, man.FstabLine)
	require.True(t, man.FstabCreated)
}

// fakeTable is ober's nftables table as uninstall sees it.
type fakeTable struct {
	exists  bool
	err     error
	removed int
}

func (f *fakeTable) Owned() (bool, error) { return f.exists, f.err }
func (f *fakeTable) Remove() error {
	f.removed++
	f.exists = false
	return nil
}

// Uninstall deletes the udp and nat services' nftables table, which the
// daemon leaves when it stops, also when nothing else is left; a table of
// that name that ober did not make stays.
func TestUninstallRemovesTheNFTablesTable(t *testing.T) {
	m := newMachine(t, debian12, "haproxy 2.6", "keepalived 2.2", "iproute2 6.1", "ethtool 6.1")
	var out bytes.Buffer
	require.NoError(t, Bootstrap(context.Background(), m.opts(&out)))
	tbl := &fakeTable{exists: true}
	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true, Table: tbl}))
	require.Equal(t, 1, tbl.removed)
	require.Contains(t, out.String(), "removed   nftables table inet ober (the udp and nat services' rules)\n")

	// Only the table is left: uninstall still has that to do.
	tbl.exists = true
	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true, Table: tbl}))
	require.Equal(t, 2, tbl.removed)
	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true, Table: tbl}))
	require.Equal(t, 2, tbl.removed)
	require.Contains(t, out.String(), "nothing to remove")

	foreign := &fakeTable{exists: true, err: nftlb.ErrNotOurs}
	out.Reset()
	require.NoError(t, Uninstall(context.Background(), UninstallOptions{Root: m.root, Live: true, Out: &out, Yes: true, Table: foreign}))
	require.Zero(t, foreign.removed)
	require.Contains(t, out.String(), "kept      nftables table inet ober: ober did not make it\n")
}
