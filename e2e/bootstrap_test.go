package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/tuning"
	"github.com/ober-ingress/ober/control/ops/install"
	"github.com/ober-ingress/ober/systemd"
)

// os-release files of the supported distributions, as they ship.
var bsOSReleases = map[string]string{
	"ubuntu-24.04": "PRETTY_NAME=\"Ubuntu 24.04.2 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nVERSION=\"24.04.2 LTS (Noble Numbat)\"\n" +
		"VERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=noble\n",
	"debian-12": "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\n" +
		"VERSION_CODENAME=bookworm\nID=debian\n",
	"debian-13": "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nVERSION=\"13 (trixie)\"\n" +
		"VERSION_CODENAME=trixie\nID=debian\n",
	"rhel-10": "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"10.0 (Coughlan)\"\nID=\"rhel\"\nID_LIKE=\"centos fedora\"\n" +
		"VERSION_ID=\"10.0\"\nPLATFORM_ID=\"platform:el10\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 10.0 (Coughlan)\"\n",
	"rocky-10": "NAME=\"Rocky Linux\"\nVERSION=\"10.0 (Red Quartz)\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n" +
		"VERSION_ID=\"10.0\"\nPRETTY_NAME=\"Rocky Linux 10.0 (Red Quartz)\"\n",
}

// osTree is a root directory holding only etc/os-release.
func bsTree(t *testing.T, release string) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(release), 0o644))
	return root
}

// bsEntry is what a test compares of one path in a tree.
type bsEntry struct {
	mode    fs.FileMode
	content string // files: the bytes; symlinks: the target
	mtime   time.Time
}

// snapshot walks root. withTimes keeps modification times, which
// directories change whenever an entry comes or goes.
func bsSnapshot(t *testing.T, root string, withTimes bool) map[string]bsEntry {
	t.Helper()
	out := map[string]bsEntry{}
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := bsEntry{mode: info.Mode()}
		if withTimes {
			e.mtime = info.ModTime()
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			e.content, err = os.Readlink(p)
		case info.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			e.content = string(b)
		}
		out[rel] = e
		return err
	}))
	return out
}

// requireOneLine checks an error run: one line on stderr naming all of want.
func bsOneLine(t *testing.T, res result, want ...string) {
	t.Helper()
	require.Equal(t, 1, strings.Count(res.stderr, "\n"), "one line:\n%s", res)
	for _, w := range want {
		require.Contains(t, res.stderr, w, res.String())
	}
}

func bsLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }

// bootstrap --root on each supported distribution writes every file with
// its content and mode, says what it skipped, and a second run changes
// nothing: same bytes, same mtimes, "nothing changed".
func TestBootstrapRootTrees(t *testing.T) {
	bin, err := os.ReadFile(oberBin)
	require.NoError(t, err)
	for _, name := range []string{"ubuntu-24.04", "debian-12", "debian-13", "rhel-10", "rocky-10"} {
		t.Run(name, func(t *testing.T) {
			root := bsTree(t, bsOSReleases[name])
			res := ober(t, nil, 0, "bootstrap", "--root", root)
			out := res.stdout
			pkgs := "haproxy keepalived iproute2 ethtool"
			if strings.HasPrefix(name, "rhel") || strings.HasPrefix(name, "rocky") {
				pkgs = "haproxy keepalived iproute ethtool"
			}
			require.Contains(t, out, "skipped   packages "+pkgs+": --root, no package manager runs\n")
			require.Regexp(t, `(?m)^checked   kernel \S+: BTF, XDP, sk_lookup and bpf_link`, out)
			for _, l := range []string{
				"created   /usr/local/sbin/ober (this ober binary)",
				"created   /etc/ober (directory 0750, configuration)",
				"created   /etc/ober/tls (directory 0700, certificates and keys)",
				"created   /etc/sysctl.d/90-ober.conf (kernel tuning, " + fmt.Sprint(len(tuning.Tuning())) + " sysctls)",
				"skipped   systemctl daemon-reload: --root",
				"skipped   sysctl -p /etc/sysctl.d/90-ober.conf: --root",
				"skipped   mounting the bpf filesystem at /sys/fs/bpf: --root",
				"skipped   user and group ober-haproxy: --root, no useradd runs (bootstrap the node itself, or create them in the image)",
				"note      next: write /etc/ober/ober.yaml, check the machine with `ober doctor`, then `ober start`",
			} {
				require.Contains(t, out, l+"\n")
			}
			require.Regexp(t, `bootstrapped: \d+ changes\n$`, out)

			files := map[string]struct {
				mode    fs.FileMode
				content string
			}{
				"etc/os-release":                                  {0o644, bsOSReleases[name]},
				"usr/local/sbin/ober":                             {0o755, string(bin)},
				"etc/sysctl.d/90-ober.conf":                       {0o644, string(tuning.Conf())},
				"etc/tmpfiles.d/ober.conf":                        {0o644, ""},
				"etc/systemd/system.conf.d/90-ober-watchdog.conf": {0o644, ""},
				"etc/fstab":                                       {0o644, install.FstabMarker + "\n" + install.FstabLine + "\n"},
				"usr/share/bash-completion/completions/ober":      {0o644, ""},
				"var/lib/ober/bootstrap.json":                     {0o600, ""},
			}
			for _, u := range systemd.Units() {
				files["etc/systemd/system/"+u.Name] = struct {
					mode    fs.FileMode
					content string
				}{0o644, string(u.Content)}
			}
			dirs := map[string]fs.FileMode{"etc/ober": 0o750, "etc/ober/tls": 0o700, "var/lib/ober": 0o750, "var/log/ober": 0o750}
			snap := bsSnapshot(t, root, true)
			for p, e := range snap {
				if e.mode.IsDir() {
					if want, ok := dirs[p]; ok {
						require.Equal(t, want, e.mode.Perm(), p)
					} else if p != "." {
						require.Equal(t, fs.FileMode(0o755), e.mode.Perm(), "parent directory %s", p)
					}
					continue
				}
				want, ok := files[p]
				require.True(t, ok, "unexpected file %s", p)
				require.Equal(t, want.mode, e.mode, p)
				if want.content != "" {
					require.Equal(t, want.content, e.content, p)
				}
			}
			for p := range files {
				require.Contains(t, snap, p)
			}
			for p := range dirs {
				require.Contains(t, snap, p)
			}
			require.Contains(t, snap["etc/tmpfiles.d/ober.conf"].content, "\nd /run/ober 0750 root root -\n")
			require.True(t, strings.HasSuffix(snap["etc/systemd/system.conf.d/90-ober-watchdog.conf"].content,
				"\n[Manager]\nRuntimeWatchdogSec=10s\nRebootWatchdogSec=2min\n"), snap["etc/systemd/system.conf.d/90-ober-watchdog.conf"].content)
			require.Contains(t, snap["usr/share/bash-completion/completions/ober"].content, "complete -o default -F __start_ober ober")

			var m install.Manifest
			require.NoError(t, json.Unmarshal([]byte(snap["var/lib/ober/bootstrap.json"].content), &m))
			require.Equal(t, install.FstabLine, m.FstabLine)
			require.Empty(t, m.Packages, "--root installs no package")
			require.Len(t, m.Files, 5+len(systemd.Units()))
			for _, f := range m.Files {
				require.Contains(t, snap, strings.TrimPrefix(f.Path, "/"), f.Path)
			}

			res = ober(t, nil, 0, "bootstrap", "--root", root)
			require.Equal(t, snap, bsSnapshot(t, root, true), "the second run touched the tree")
			ls := bsLines(res.stdout)
			require.Equal(t, "nothing changed: ober is bootstrapped", ls[len(ls)-1])
			for _, l := range ls {
				require.False(t, strings.HasPrefix(l, "created") || strings.HasPrefix(l, "changed") || strings.HasPrefix(l, "removed"), l)
			}
			require.Contains(t, res.stdout, "unchanged /usr/local/sbin/ober (this ober binary)\n")
		})
	}
}

// Bad input is one line naming it, and the tree stays as it was.
func TestBootstrapRejects(t *testing.T) {
	for _, c := range []struct {
		name, release string
		args          []string
		want          []string
	}{
		{"fedora", "ID=fedora\nVERSION_ID=41\n", nil, []string{`ID "fedora", VERSION_ID "41"`, "ober supports Ubuntu 24.04, Debian 12 and 13, RHEL 10"}},
		{"debian 11", "ID=debian\nVERSION_ID=\"11\"\n", nil, []string{`ID "debian", VERSION_ID "11"`}},
		{"ubuntu 22.04", "ID=ubuntu\nVERSION_ID=\"22.04\"\n", nil, []string{`ID "ubuntu", VERSION_ID "22.04"`}},
		{"rhel 9", "ID=\"rhel\"\nVERSION_ID=\"9.4\"\n", nil, []string{`ID "rhel", VERSION_ID "9.4"`}},
		{"repo", bsOSReleases["debian-12"], []string{"--haproxy-repo", "ppa"}, []string{`--haproxy-repo "ppa": want distro or vendor`}},
		{"version", bsOSReleases["debian-12"], []string{"--haproxy-repo", "vendor", "--haproxy-version", "3"}, []string{`--haproxy-version "3": want a branch such as 3.2`}},
		{"version without vendor", bsOSReleases["debian-12"], []string{"--haproxy-version", "3.0"}, []string{"--haproxy-version 3.0 needs --haproxy-repo vendor"}},
		{"vendor on rhel", bsOSReleases["rhel-10"], []string{"--haproxy-repo", "vendor"}, []string{"--haproxy-repo vendor: no vendor repository is supported on Red Hat Enterprise Linux 10.0", "use --haproxy-repo distro"}},
		{"watchdog", bsOSReleases["debian-12"], []string{"--runtime-watchdog", "1500ms"}, []string{"--runtime-watchdog 1.5s: want whole seconds"}},
		{"reboot watchdog", bsOSReleases["debian-12"], []string{"--reboot-watchdog", "-1m"}, []string{"--reboot-watchdog -1m0s: want whole seconds, 0 or more"}},
		{"duration", bsOSReleases["debian-12"], []string{"--runtime-watchdog", "soon"}, []string{`invalid argument "soon" for "--runtime-watchdog"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := bsTree(t, c.release)
			before := bsSnapshot(t, root, true)
			res := ober(t, nil, 1, append([]string{"bootstrap", "--root", root, "-y"}, c.args...)...)
			bsOneLine(t, res, c.want...)
			require.Empty(t, res.stdout)
			require.Equal(t, before, bsSnapshot(t, root, true))
		})
	}
	res := ober(t, nil, 1, "bootstrap", "--root", "/nonexistent/ober-tree")
	bsOneLine(t, res, "--root /nonexistent/ober-tree: no such file or directory")
}

// keyServer serves the vendor keys and counts the downloads.
func bsKeyServer(t *testing.T) (*httptest.Server, *atomic.Int32, []byte, []byte) {
	t.Helper()
	binKey := append([]byte{0x99, 0x02, 0x0d}, bytes.Repeat([]byte{0x42}, 64)...)
	ascKey := []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBFake\n-----END PGP PUBLIC KEY BLOCK-----\n")
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/haproxy-archive-keyring.gpg":
			_, _ = w.Write(binKey)
		case "/pks/lookup":
			_, _ = w.Write(ascKey)
		default:
			_, _ = w.Write([]byte("<html>not a key</html>"))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &hits, binKey, ascKey
}

// --haproxy-repo vendor writes the apt source for the release and branch
// and the keyring it names, fetched once; uninstall removes both.
func TestBootstrapVendorRepo(t *testing.T) {
	srv, hits, binKey, ascKey := bsKeyServer(t)
	for _, c := range []struct {
		name, version, keyPath, line string
		key                          []byte
	}{
		{"debian-12", "3.2", "/haproxy-archive-keyring.gpg", "deb [signed-by=/etc/apt/keyrings/ober-haproxy.gpg] http://haproxy.debian.net bookworm-backports-3.2 main", binKey},
		{"debian-13", "3.0", "/haproxy-archive-keyring.gpg", "deb [signed-by=/etc/apt/keyrings/ober-haproxy.gpg] http://haproxy.debian.net trixie-backports-3.0 main", binKey},
		{"ubuntu-24.04", "3.2", "/pks/lookup?op=get&search=0xCFFB779AADC995E4F350A060505D97A41C61B9CD", "deb [signed-by=/etc/apt/keyrings/ober-haproxy.asc] https://ppa.launchpadcontent.net/vbernat/haproxy-3.2/ubuntu noble main", ascKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := bsTree(t, bsOSReleases[c.name])
			before := bsSnapshot(t, root, false)
			hits.Store(0)
			args := []string{"bootstrap", "--root", root, "--haproxy-repo", "vendor", "--haproxy-key-url", srv.URL + c.keyPath}
			if c.version != "3.2" {
				args = append(args, "--haproxy-version", c.version)
			}
			res := ober(t, nil, 0, args...)
			require.Contains(t, res.stdout, "skipped   packages haproxy="+c.version+".* keepalived iproute2 ethtool: --root")
			require.Contains(t, res.stdout, "created   /etc/apt/sources.list.d/ober-haproxy.list ("+c.line+")\n")
			src, err := os.ReadFile(filepath.Join(root, "etc/apt/sources.list.d/ober-haproxy.list"))
			require.NoError(t, err)
			require.Equal(t, []string{"# HAProxy " + c.version + ", added by `ober bootstrap --haproxy-repo vendor`; `ober uninstall` removes it.", c.line}, bsLines(string(src)))
			keyring := strings.TrimPrefix(strings.Fields(strings.TrimPrefix(c.line, "deb [signed-by="))[0], "")
			keyring = strings.TrimSuffix(keyring, "]")
			got, err := os.ReadFile(filepath.Join(root, keyring))
			require.NoError(t, err)
			require.Equal(t, c.key, got)
			st, err := os.Stat(filepath.Join(root, keyring))
			require.NoError(t, err)
			require.Equal(t, fs.FileMode(0o644), st.Mode())
			require.Equal(t, int32(1), hits.Load())

			snap := bsSnapshot(t, root, true)
			res = ober(t, nil, 0, args...)
			require.True(t, strings.HasSuffix(res.stdout, "nothing changed: ober is bootstrapped\n"), res.stdout)
			require.Equal(t, snap, bsSnapshot(t, root, true))
			require.Equal(t, int32(1), hits.Load(), "the keyring is there: no second download")

			res = ober(t, nil, 0, "uninstall", "--root", root, "-y")
			require.Contains(t, res.stdout, "removed   /etc/apt/sources.list.d/ober-haproxy.list (HAProxy repository)\n")
			require.Contains(t, res.stdout, "removed   "+keyring+" (HAProxy repository key)\n")
			require.Equal(t, before, bsSnapshot(t, root, false), "uninstall left something behind")
		})
	}

	t.Run("not a key", func(t *testing.T) {
		root := bsTree(t, bsOSReleases["debian-12"])
		before := bsSnapshot(t, root, true)
		res := ober(t, nil, 1, "bootstrap", "--root", root, "--haproxy-repo", "vendor", "--haproxy-key-url", srv.URL+"/portal")
		bsOneLine(t, res, "repository key "+srv.URL+"/portal: not a binary OpenPGP keyring")
		require.Equal(t, before, bsSnapshot(t, root, true))
	})

	t.Run("foreign source", func(t *testing.T) {
		root := bsTree(t, bsOSReleases["debian-12"])
		theirs := "deb [signed-by=/usr/share/keyrings/haproxy-archive-keyring.gpg] http://haproxy.debian.net bookworm-backports-3.0 main\n"
		require.NoError(t, os.MkdirAll(filepath.Join(root, "etc/apt/sources.list.d"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, "etc/apt/sources.list.d/haproxy.list"), []byte(theirs), 0o644))
		hits.Store(0)
		res := ober(t, nil, 0, "bootstrap", "--root", root, "--haproxy-repo", "vendor", "--haproxy-key-url", srv.URL+"/haproxy-archive-keyring.gpg")
		require.Contains(t, res.stdout, "skipped   vendor repository: /etc/apt/sources.list.d/haproxy.list lists one already; ober adds no second\n")
		require.NoFileExists(t, filepath.Join(root, "etc/apt/sources.list.d/ober-haproxy.list"))
		require.Zero(t, hits.Load())
	})
}

// uninstall --root removes what bootstrap wrote and nothing else: the
// foreign unit, the other fstab lines and sysctl files stay, the tree is
// as before bootstrap. Without -y and without a terminal it changes
// nothing; a second run has nothing to remove.
func TestUninstallRoot(t *testing.T) {
	root := bsTree(t, bsOSReleases["debian-12"])
	put := func(rel, content string) {
		p := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	fstab := "UUID=0a1b / ext4 errors=remount-ro 0 1\n/dev/vdb none swap sw 0 0\n"
	put("etc/fstab", fstab)
	put("etc/systemd/system/foreign.service", "[Service]\nExecStart=/bin/true\n")
	put("etc/sysctl.d/10-local.conf", "vm.swappiness = 10\n")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc/systemd/system/multi-user.target.wants"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "sys/fs/bpf"), 0o755))
	before := bsSnapshot(t, root, false)

	ober(t, nil, 0, "bootstrap", "--root", root)
	require.Equal(t, fstab+install.FstabMarker+"\n"+install.FstabLine+"\n", bsReadFile(t, root, "etc/fstab"))
	// What the node gathers in use: configuration, an enabled unit, a
	// pinned dataplane, a hand-edited tuning file.
	unit := systemd.Units()[0].Name
	put("etc/ober/ober.yaml", "node: {}\n")
	put("var/log/ober/ober.log", "started\n")
	put("sys/fs/bpf/ober/maps/vips", "")
	require.NoError(t, os.Symlink("/etc/systemd/system/"+unit, filepath.Join(root, "etc/systemd/system/multi-user.target.wants", unit)))
	f, err := os.OpenFile(filepath.Join(root, "etc/sysctl.d/90-ober.conf"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("net.core.somaxconn = 8192\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())

	installed := bsSnapshot(t, root, true)
	res := ober(t, nil, 1, "uninstall", "--root", root)
	bsOneLine(t, res, "ober: uninstall: stdin is not a terminal to confirm on: rerun with -y")
	require.Equal(t, installed, bsSnapshot(t, root, true), "a refused uninstall changed the tree")
	// The pin root goes with all it holds: never a directory outside bpffs.
	res = ober(t, nil, 1, "--bpffs-root", "/etc", "uninstall", "--root", root, "-y")
	bsOneLine(t, res, "--bpffs-root /etc: uninstall removes a pin directory below /sys/fs/bpf or on a bpf filesystem only")
	require.Equal(t, installed, bsSnapshot(t, root, true))

	res = ober(t, nil, 0, "uninstall", "--root", root, "-y")
	out := res.stdout
	for _, l := range []string{
		"removed   /sys/fs/bpf/ober (pinned dataplane)",
		"removed   /etc/systemd/system/multi-user.target.wants/" + unit + " (enables the unit)",
		"removed   /etc/systemd/system/" + unit + " (systemd unit)",
		"removed   /etc/sysctl.d/90-ober.conf (kernel tuning, modified since bootstrap)",
		"removed   /etc/systemd/system.conf.d/90-ober-watchdog.conf (watchdog drop-in)",
		"removed   /etc/tmpfiles.d/ober.conf (tmpfiles.d entry)",
		"removed   /usr/share/bash-completion/completions/ober (bash completion)",
		"changed   /etc/fstab (removed ober's bpffs line; /sys/fs/bpf stays mounted for other tools)",
		"removed   /var/lib/ober (directory, 1 entry)",
		"removed   /var/log/ober (directory, 1 entry)",
		"removed   /etc/ober (directory, 2 entries)",
		"removed   /usr/local/sbin/ober (ober binary)",
		"kept      packages haproxy keepalived iproute2 ethtool (ober runs with them): remove them with `apt-get remove haproxy keepalived iproute2 ethtool`",
	} {
		require.Contains(t, out, l+"\n")
	}
	require.NotContains(t, out, "(ober binary, modified since bootstrap)")
	require.Less(t, strings.Index(out, "removed   /etc/ober "), strings.Index(out, "removed   /usr/local/sbin/ober "), "the binary goes last")
	require.NotContains(t, out, "foreign.service")
	require.Equal(t, before, bsSnapshot(t, root, false), "uninstall left something, or took something not ober's")

	for _, args := range [][]string{{"-y"}, nil} {
		res = ober(t, nil, 0, append([]string{"uninstall", "--root", root}, args...)...)
		require.Equal(t, "nothing to remove: ober is not installed under "+root+"\n", res.stdout)
	}
}

func TestUninstallKeepConfig(t *testing.T) {
	root := bsTree(t, bsOSReleases["rhel-10"])
	ober(t, nil, 0, "bootstrap", "--root", root, "--runtime-watchdog", "0")
	require.NoFileExists(t, filepath.Join(root, install.WatchdogPath))
	conf := filepath.Join(root, "etc/ober/ober.yaml")
	require.NoError(t, os.WriteFile(conf, []byte("node: {}\n"), 0o640))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/ober/tls/s3.pem"), []byte("key\n"), 0o600))

	res := ober(t, nil, 0, "uninstall", "--root", root, "-y", "--keep-config")
	require.Contains(t, res.stdout, "kept      /etc/ober (--keep-config)\n")
	require.NotContains(t, res.stdout, "removed   /etc/ober")
	require.Contains(t, res.stdout, "remove them with `dnf remove haproxy keepalived iproute ethtool`")
	require.Equal(t, "node: {}\n", bsReadFile(t, root, "etc/ober/ober.yaml"))
	require.Equal(t, "key\n", bsReadFile(t, root, "etc/ober/tls/s3.pem"))
	require.NoFileExists(t, filepath.Join(root, install.BinaryPath))
	require.NoDirExists(t, filepath.Join(root, install.StateDir))

	res = ober(t, nil, 0, "uninstall", "--root", root, "-y", "--keep-config")
	require.Equal(t, "nothing to remove: ober is not installed under "+root+"\n", res.stdout)
}

// An fstab that mounts bpffs already gets no second line, and uninstall
// leaves it alone.
func TestBootstrapKeepsExistingBPFFSLine(t *testing.T) {
	root := bsTree(t, bsOSReleases["ubuntu-24.04"])
	fstab := "LABEL=root / ext4 defaults 0 1\nbpffs /sys/fs/bpf bpf defaults 0 0\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/fstab"), []byte(fstab), 0o644))
	res := ober(t, nil, 0, "bootstrap", "--root", root)
	require.Contains(t, res.stdout, "unchanged /etc/fstab (mounts the bpf filesystem: bpffs /sys/fs/bpf bpf defaults 0 0)\n")
	res = ober(t, nil, 0, "uninstall", "--root", root, "-y")
	require.NotContains(t, res.stdout, "/etc/fstab")
	require.Equal(t, fstab, bsReadFile(t, root, "etc/fstab"))
}

func bsReadFile(t *testing.T, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	require.NoError(t, err)
	return string(b)
}

// bsPrompted runs ober on a pseudo-terminal, waits for prompt and types
// answer; it returns the exit code and everything the terminal showed.
func bsPrompted(t *testing.T, prompt, answer string, args ...string) (int, string) {
	t.Helper()
	tm := startTerminal(t, args...)
	tm.answer(prompt, answer)
	return tm.wait(), tm.output()
}

// On a terminal uninstall asks: no keeps everything, yes removes.
func TestUninstallAsksOnATerminal(t *testing.T) {
	root := bsTree(t, bsOSReleases["debian-13"])
	ober(t, nil, 0, "bootstrap", "--root", root)
	installed := bsSnapshot(t, root, true)
	n := len(systemd.Units()) + 8 // units, tuning, watchdog, tmpfiles, completion, binary; 3 directories
	prompt := fmt.Sprintf("remove ober from %s (%d paths)? [y/N] ", root, n)

	code, shown := bsPrompted(t, prompt, "n", "uninstall", "--root", root)
	require.Equal(t, 1, code, shown)
	require.Contains(t, shown, "ober: uninstall: declined; nothing was changed")
	require.Equal(t, installed, bsSnapshot(t, root, true))

	code, shown = bsPrompted(t, prompt, "y", "uninstall", "--root", root)
	require.Equal(t, 0, code, shown)
	require.Contains(t, shown, "removed   /usr/local/sbin/ober (ober binary)")
	require.NoFileExists(t, filepath.Join(root, install.BinaryPath))
}
