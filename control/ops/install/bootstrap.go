package install

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/kernelver"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/control/lib/tuning"
	"github.com/ober-ingress/ober/systemd"
)

// Options configure Bootstrap.
type Options struct {
	// Root is the tree to install into; "/" is the machine.
	Root string
	// Live runs the machine's commands: the package manager, systemctl,
	// sysctl and mount. Only for the running system's root: against a
	// tree, bootstrap writes files and says what it skipped.
	Live bool
	// Out receives the report, one line per step.
	Out io.Writer
	// Yes installs missing packages without asking.
	Yes bool
	// Confirm asks the operator a yes/no question; nil when there is no
	// terminal to ask on.
	Confirm func(question string) (bool, error)
	// Binary is the file installed as BinaryPath (os.Executable()).
	Binary string
	// Completion is the bash completion script.
	Completion []byte
	// HAProxyRepo is RepoDistro or RepoVendor; HAProxyVersion the
	// branch ("3.2") for RepoVendor.
	HAProxyRepo    string
	HAProxyVersion string
	// KeyURL replaces the vendor repository's key URL (a mirror, tests).
	KeyURL     string
	HTTPClient *http.Client
	// RuntimeWatchdog and RebootWatchdog are systemd's hardware
	// watchdog timeouts; RuntimeWatchdog 0 writes no drop-in.
	RuntimeWatchdog, RebootWatchdog time.Duration
	// Units are the unit files to install; systemd.Units() when nil.
	Units []systemd.Unit
}

// The defaults of the watchdog drop-in: systemd pets the watchdog every
// half timeout, and a reboot that hangs is cut short after two minutes.
const (
	DefaultRuntimeWatchdog = 10 * time.Second
	DefaultRebootWatchdog  = 2 * time.Minute
)

// FstabMarker precedes the bpffs line bootstrap adds to /etc/fstab; uninstall
// removes the two lines and nothing else.
const (
	FstabMarker = "# bpffs for ober's pinned dataplane, added by `ober bootstrap` (`ober uninstall` removes these two lines)"
	FstabLine   = "bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0"
)

func (o *Options) validate() error {
	if o.Root == "" {
		return errors.New("--root must not be empty")
	}
	switch o.HAProxyRepo {
	case "":
		o.HAProxyRepo = RepoDistro
	case RepoDistro, RepoVendor:
	default:
		return fmt.Errorf("--haproxy-repo %q: want distro or vendor", o.HAProxyRepo)
	}
	if o.HAProxyRepo == RepoVendor {
		if o.HAProxyVersion == "" {
			o.HAProxyVersion = DefaultHAProxyVersion
		}
		if !branchRE.MatchString(o.HAProxyVersion) {
			return fmt.Errorf("--haproxy-version %q: want a branch such as %s", o.HAProxyVersion, DefaultHAProxyVersion)
		}
	}
	for _, w := range []struct {
		flag string
		d    time.Duration
	}{{"--runtime-watchdog", o.RuntimeWatchdog}, {"--reboot-watchdog", o.RebootWatchdog}} {
		if w.d < 0 || w.d%time.Second != 0 {
			return fmt.Errorf("%s %s: want whole seconds, 0 or more (hardware watchdogs count seconds)", w.flag, w.d)
		}
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Units == nil {
		o.Units = systemd.Units()
	}
	return nil
}

// bootstrapper is one run of Bootstrap.
type bootstrapper struct {
	Options
	r  *report
	os OS
	m  *Manifest
}

// Bootstrap puts ober and what it runs with on the machine (or the tree
// at Root): it checks the OS and the kernel, installs the missing
// packages, then writes ober's files, each only when it differs, and
// a manifest for Uninstall. The error is one line; before the first
// change (OS, kernel, packages question) it leaves everything as it was.
func Bootstrap(ctx context.Context, o Options) error {
	if err := o.validate(); err != nil {
		return err
	}
	b := &bootstrapper{Options: o, r: &report{w: o.Out}}
	var err error
	if b.os, err = DetectOS(o.Root); err != nil {
		return err
	}
	var repo Repo
	var keyURL string
	if o.HAProxyRepo == RepoVendor {
		if repo, keyURL, err = vendorRepo(b.os, o.HAProxyVersion, o.KeyURL); err != nil {
			return err
		}
	}
	b.r.line(vChecked, "os %s", b.os)
	if o.Live && os.Geteuid() != 0 {
		return errors.New("must run as root: it installs packages and writes /etc (or give --root DIR to fill a tree)")
	}
	k, err := CheckKernel()
	if err != nil {
		return err
	}
	if k.Old {
		b.r.line(vChecked, "kernel %s: BTF, XDP, sk_lookup and bpf_link (older than %s, the oldest ober is tested on)", k.Release, kernelver.Tested())
	} else {
		b.r.line(vChecked, "kernel %s: BTF, XDP, sk_lookup and bpf_link", k.Release)
	}
	old, err := ReadManifest(o.Root)
	if err != nil {
		return err
	}
	b.m = &Manifest{Version: manifestVersion, OS: b.os.ID + " " + b.os.VersionID}
	if old != nil {
		b.m.Files, b.m.Packages, b.m.Repo = old.Files, old.Packages, old.Repo
		b.m.Users, b.m.Groups = old.Users, old.Groups
		b.m.FstabLine, b.m.FstabCreated = old.FstabLine, old.FstabCreated
		for _, p := range old.Parents {
			if _, err := os.Stat(host(o.Root, p)); err == nil {
				b.m.Parents = append(b.m.Parents, p)
			}
		}
	}

	missing, err := b.planPackages(ctx)
	if err != nil {
		return err
	}
	steps := []func(context.Context) error{
		func(ctx context.Context) error { return b.vendorRepo(ctx, repo, keyURL) },
		func(ctx context.Context) error { return b.installPackages(ctx, missing) },
		b.account, b.binary, b.dirs, b.tmpfiles, b.units, b.sysctl, b.watchdog, b.bpffs, b.completion, b.manifest,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	b.r.line(vNote, "next: write %s/ober.yaml, check the machine with `ober doctor`, then `ober start`", ConfigDir)
	if b.r.changes == 0 {
		fmt.Fprintln(o.Out, "nothing changed: ober is bootstrapped")
	} else {
		fmt.Fprintf(o.Out, "bootstrapped: %d %s\n", b.r.changes, plural(b.r.changes, "change"))
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func (b *bootstrapper) branch() string {
	if b.HAProxyRepo == RepoVendor {
		return b.HAProxyVersion
	}
	return ""
}

func (b *bootstrapper) manager() string {
	if b.os.Family == RHEL {
		return "dnf"
	}
	return "apt-get"
}

// planPackages finds the missing packages and, when some are, gets the
// operator's yes before anything changes.
func (b *bootstrapper) planPackages(ctx context.Context) ([]pkgState, error) {
	if !b.Live {
		var specs []string
		for _, p := range packagesFor(b.os.Family) {
			if p == "haproxy" && b.branch() != "" {
				p = "haproxy=" + b.branch() + ".*"
			}
			specs = append(specs, p)
		}
		b.r.line(vSkipped, "packages %s: --root, no package manager runs", strings.Join(specs, " "))
		return nil, nil
	}
	plan, err := planPackages(ctx, b.os, b.branch())
	if err != nil {
		return nil, err
	}
	var missing []pkgState
	var have, specs []string
	for _, p := range plan {
		if p.missing {
			missing = append(missing, p)
			specs = append(specs, p.spec+" ("+p.why+")")
		} else {
			have = append(have, p.name)
		}
	}
	if len(missing) == 0 {
		b.r.line(vUnchanged, "packages %s (installed)", strings.Join(have, " "))
		return nil, nil
	}
	if b.Yes {
		return missing, nil
	}
	what := strings.Join(specs, ", ")
	if b.Confirm == nil {
		return nil, fmt.Errorf("packages: %s to install, and stdin is not a terminal to ask: rerun with -y", what)
	}
	ok, err := b.Confirm(fmt.Sprintf("install %s with %s?", what, b.manager()))
	if err != nil {
		return nil, fmt.Errorf("packages: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("packages: not installing %s (declined); nothing was changed", what)
	}
	return missing, nil
}

func (b *bootstrapper) installPackages(ctx context.Context, missing []pkgState) error {
	if len(missing) == 0 {
		return nil
	}
	var specs, names []string
	for _, p := range missing {
		specs, names = append(specs, p.spec), append(names, p.name)
	}
	fmt.Fprintf(b.Out, "%-9s %s %s (this takes a while)\n", "running", b.manager(), strings.Join(append([]string{"install", "-y"}, specs...), " "))
	if err := installPackages(ctx, b.os, specs, true); err != nil {
		return err
	}
	b.r.line(vInstalled, "packages %s", strings.Join(specs, " "))
	for _, n := range names {
		if !slices.Contains(b.m.Packages, n) {
			b.m.Packages = append(b.m.Packages, n)
		}
	}
	return nil
}

// vendorRepo writes the apt source and its keyring. The key is fetched
// only when the keyring is missing, so a rerun needs no network.
func (b *bootstrapper) vendorRepo(ctx context.Context, repo Repo, keyURL string) error {
	if repo.Source == "" {
		return nil
	}
	if f := foreignHAProxySource(b.Root); f != "" {
		b.r.line(vSkipped, "vendor repository: %s lists one already; ober adds no second", f)
		return nil
	}
	have, err := keyringExists(b.Root, repo.Keyring)
	if err != nil {
		return fmt.Errorf("repository keyring %s: %w", repo.Keyring, err)
	}
	var key []byte
	if have {
		if key, err = os.ReadFile(host(b.Root, repo.Keyring)); err != nil {
			return fmt.Errorf("repository keyring %s: %w", repo.Keyring, err)
		}
	} else if key, err = fetchKey(ctx, b.HTTPClient, keyURL, strings.HasSuffix(repo.Keyring, ".asc")); err != nil {
		return err
	}
	verb, err := writeFile(b.Root, repo.Keyring, key, 0o644, &b.m.Parents)
	if err != nil {
		return err
	}
	b.r.line(verb, "%s (key of the HAProxy %s repository, from %s)", repo.Keyring, b.HAProxyVersion, keyURL)
	b.m.file(repo.Keyring, key)
	src := []byte(fmt.Sprintf("# HAProxy %s, added by `ober bootstrap --haproxy-repo vendor`; `ober uninstall` removes it.\n%s\n",
		b.HAProxyVersion, repo.Line))
	if verb, err = writeFile(b.Root, repo.Source, src, 0o644, &b.m.Parents); err != nil {
		return err
	}
	b.r.line(verb, "%s (%s)", repo.Source, repo.Line)
	b.m.file(repo.Source, src)
	b.m.Repo = &repo
	return nil
}

// account creates the system group and user the HAProxy instances drop
// to (haproxy.user, haproxy.group): no home, no login shell. Accounts
// that exist are left as they are and not recorded, so uninstall removes
// only what bootstrap made.
func (b *bootstrapper) account(ctx context.Context) error {
	name := sysuser.HAProxyUser
	if !b.Live {
		b.r.line(vSkipped, "user and group %s: --root, no useradd runs (bootstrap the node itself, or create them in the image)", name)
		return nil
	}
	gid, haveGroup, err := sysuser.FindGroup(b.Root, name)
	if err != nil {
		return fmt.Errorf("group %s: %w", name, err)
	}
	if !haveGroup {
		args := sysuser.GroupAdd(name)
		if _, err := runCmd(ctx, nil, args[0], args[1:]...); err != nil {
			return fmt.Errorf("group %s: %w", name, err)
		}
		if gid, haveGroup, err = sysuser.FindGroup(b.Root, name); err != nil || !haveGroup {
			return fmt.Errorf("group %s: not in /etc/group after groupadd (%v)", name, err)
		}
		b.r.line(vCreated, "group %s (gid %d, system group of the HAProxy instances)", name, gid)
		if !slices.Contains(b.m.Groups, name) {
			b.m.Groups = append(b.m.Groups, name)
		}
	} else {
		if gid == 0 {
			return fmt.Errorf("group %s has gid 0 in /etc/group: HAProxy must not run with the root group; give it a system gid of its own", name)
		}
		b.r.line(vUnchanged, "group %s (gid %d, system group of the HAProxy instances)", name, gid)
	}
	uid, _, haveUser, err := sysuser.FindUser(b.Root, name)
	if err != nil {
		return fmt.Errorf("user %s: %w", name, err)
	}
	if !haveUser {
		args := sysuser.UserAdd(name, name)
		if _, err := runCmd(ctx, nil, args[0], args[1:]...); err != nil {
			return fmt.Errorf("user %s: %w", name, err)
		}
		if uid, _, haveUser, err = sysuser.FindUser(b.Root, name); err != nil || !haveUser {
			return fmt.Errorf("user %s: not in /etc/passwd after useradd (%v)", name, err)
		}
		b.r.line(vCreated, "user %s (uid %d, the HAProxy instances run as it: no home, no login shell)", name, uid)
		if !slices.Contains(b.m.Users, name) {
			b.m.Users = append(b.m.Users, name)
		}
		return nil
	}
	if uid == 0 {
		return fmt.Errorf("user %s has uid 0 in /etc/passwd: HAProxy must not run as root; give it a system uid of its own", name)
	}
	b.r.line(vUnchanged, "user %s (uid %d, the HAProxy instances run as it)", name, uid)
	return nil
}

func (b *bootstrapper) binary(context.Context) error {
	content, err := os.ReadFile(b.Binary)
	if err != nil {
		return fmt.Errorf("binary: read %s: %w", b.Binary, err)
	}
	verb, err := writeFile(b.Root, BinaryPath, content, 0o755, &b.m.Parents)
	if err != nil {
		return err
	}
	b.r.line(verb, "%s (this ober binary)", BinaryPath)
	b.m.file(BinaryPath, content)
	return nil
}

// The directories and their modes: the configuration holds private keys'
// paths and the TLS directory the keys themselves.
var oberDirs = []struct {
	path string
	mode fs.FileMode
	what string
}{
	{ConfigDir, 0o750, "configuration"},
	{TLSDir, 0o700, "certificates and keys"},
	{StateDir, 0o750, "state that survives a reboot"},
	{LogDir, 0o750, "logs"},
}

func (b *bootstrapper) dirs(context.Context) error {
	for _, d := range oberDirs {
		verb, err := ensureDir(b.Root, d.path, d.mode, &b.m.Parents)
		if err != nil {
			return err
		}
		b.r.line(verb, "%s (directory %04o, %s)", d.path, d.mode, d.what)
		if d.path != TLSDir && !slices.Contains(b.m.Dirs, d.path) {
			b.m.Dirs = append(b.m.Dirs, d.path)
		}
	}
	return nil
}

func (b *bootstrapper) put(path string, content []byte, mode fs.FileMode, what string) (string, error) {
	verb, err := writeFile(b.Root, path, content, mode, &b.m.Parents)
	if err != nil {
		return "", err
	}
	b.r.line(verb, "%s (%s)", path, what)
	b.m.file(path, content)
	return verb, nil
}

func (b *bootstrapper) tmpfiles(context.Context) error {
	content := "# ober's runtime directory (sockets, pid file, HAProxy's files), made at\n" +
		"# every boot; written by `ober bootstrap`.\n" +
		"d " + RunDir + " 0750 root root -\n"
	_, err := b.put(TmpfilesPath, []byte(content), 0o644, "tmpfiles.d entry for "+RunDir)
	return err
}

func (b *bootstrapper) units(ctx context.Context) error {
	changed := false
	for _, u := range b.Units {
		verb, err := b.put(path.Join(UnitDir, u.Name), u.Content, 0o644, "systemd unit")
		if err != nil {
			return err
		}
		changed = changed || verb != vUnchanged
	}
	switch {
	case !changed:
	case !b.Live:
		b.r.line(vSkipped, "systemctl daemon-reload: --root")
	case !systemdRuns(b.Root):
		b.r.line(vSkipped, "systemctl daemon-reload: systemd is not running")
	default:
		if _, err := runCmd(ctx, nil, "systemctl", "daemon-reload"); err != nil {
			return fmt.Errorf("units: %w", err)
		}
		b.r.line(vReloaded, "systemd (systemctl daemon-reload)")
	}
	return nil
}

// sysctl writes the tuning and applies it when the file changed or the
// running kernel falls short of it (a value reset by hand, an earlier run
// whose apply failed).
func (b *bootstrapper) sysctl(ctx context.Context) error {
	verb, err := b.put(tuning.File, tuning.Conf(), 0o644, fmt.Sprintf("kernel tuning, %d sysctls", len(tuning.Tuning())))
	if err != nil {
		return err
	}
	switch {
	case !b.Live:
		if verb != vUnchanged {
			b.r.line(vSkipped, "sysctl -p %s: --root", tuning.File)
		}
	case verb != vUnchanged || !b.tuningMet():
		if _, err := runCmd(ctx, nil, "sysctl", "-p", host(b.Root, tuning.File)); err != nil {
			return fmt.Errorf("kernel tuning: %w", err)
		}
		b.r.line(vApplied, "%s (sysctl -p)", tuning.File)
	}
	return nil
}

func (b *bootstrapper) tuningMet() bool {
	for _, s := range tuning.Tuning() {
		cur, err := procstat.Under(b.Root).Sysctl(s.Key)
		if err != nil {
			return false
		}
		if ok, err := s.Compare(cur); err != nil || !ok {
			return false
		}
	}
	return true
}

// systemdDuration writes d as systemd's time span: "2min", "90s".
func systemdDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%dmin", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// watchdog: with RuntimeWatchdogSec systemd opens the hardware watchdog
// (a VM's emulated one too) and pets it; a node whose kernel freezes is
// reset by the hardware, and its peers take the VIPs meanwhile.
func (b *bootstrapper) watchdog(context.Context) error {
	if b.RuntimeWatchdog == 0 {
		if _, recorded := b.m.sum(WatchdogPath); recorded {
			if err := os.Remove(host(b.Root, WatchdogPath)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("watchdog: %w", err)
			}
			b.m.dropFile(WatchdogPath)
			b.r.line(vRemoved, "%s (--runtime-watchdog 0)", WatchdogPath)
			if !b.Live {
				return nil
			}
			b.r.line(vNote, "systemd keeps the watchdog armed until `systemctl daemon-reexec` or a reboot")
			return nil
		}
		b.r.line(vSkipped, "hardware watchdog: --runtime-watchdog 0")
		return nil
	}
	content := fmt.Sprintf("# Written by `ober bootstrap`: systemd arms the hardware watchdog and pets it,\n"+
		"# so a frozen node is reset rather than left half alive; a reboot that hangs\n"+
		"# is cut short too. Without a watchdog device this does nothing.\n"+
		"[Manager]\nRuntimeWatchdogSec=%s\nRebootWatchdogSec=%s\n",
		systemdDuration(b.RuntimeWatchdog), systemdDuration(b.RebootWatchdog))
	verb, err := b.put(WatchdogPath, []byte(content), 0o644, fmt.Sprintf("hardware watchdog: runtime %s, reboot %s",
		systemdDuration(b.RuntimeWatchdog), systemdDuration(b.RebootWatchdog)))
	if err != nil {
		return err
	}
	if verb != vUnchanged && b.Live {
		b.r.line(vNote, "systemd reads %s when it starts: run `systemctl daemon-reexec` (or reboot) to arm the watchdog", WatchdogPath)
	}
	return nil
}

// bpffs mounts the BPF filesystem the dataplane pins into, and makes it
// come back at boot through fstab when nothing there mounts one yet.
func (b *bootstrapper) bpffs(ctx context.Context) error {
	switch {
	case !b.Live:
		b.r.line(vSkipped, "mounting the bpf filesystem at %s: --root", BPFFSPath)
	case bpffsMounted(b.Root):
		b.r.line(vUnchanged, "%s (bpf filesystem mounted)", BPFFSPath)
	default:
		if err := os.MkdirAll(host(b.Root, BPFFSPath), 0o755); err != nil {
			return fmt.Errorf("bpffs: %w", err)
		}
		if _, err := runCmd(ctx, nil, "mount", "-t", "bpf", "-o", "nosuid,nodev,noexec,mode=700", "bpf", host(b.Root, BPFFSPath)); err != nil {
			return fmt.Errorf("bpffs: %w", err)
		}
		b.r.line(vMounted, "bpf filesystem at %s", BPFFSPath)
	}

	full := host(b.Root, FstabPath)
	content, err := os.ReadFile(full)
	created := errors.Is(err, fs.ErrNotExist)
	if err != nil && !created {
		return fmt.Errorf("fstab: %w", err)
	}
	if hasOurFstabLines(content) {
		b.m.FstabLine = FstabLine
	}
	if l := bpfFstabLine(content); l != "" {
		b.r.line(vUnchanged, "%s (mounts the bpf filesystem: %s)", FstabPath, l)
		return nil
	}
	mode := fs.FileMode(0o644)
	if st, err := os.Stat(full); err == nil {
		mode = st.Mode().Perm()
	}
	next := slices.Clone(content)
	if len(next) > 0 && next[len(next)-1] != '\n' {
		next = append(next, '\n')
	}
	next = append(next, FstabMarker+"\n"+FstabLine+"\n"...)
	verb, err := writeFile(b.Root, FstabPath, next, mode, &b.m.Parents)
	if err != nil {
		return fmt.Errorf("fstab: %w", err)
	}
	b.r.line(verb, "%s (added %s)", FstabPath, FstabLine)
	b.m.FstabLine, b.m.FstabCreated = FstabLine, created
	return nil
}

// bpfFstabLine is the first fstab line that mounts a bpf filesystem.
func bpfFstabLine(content []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && !strings.HasPrefix(f[0], "#") && (f[2] == "bpf" || f[1] == BPFFSPath) {
			return strings.Join(f, " ")
		}
	}
	return ""
}

func hasOurFstabLines(content []byte) bool {
	return bytes.Contains(content, []byte(FstabMarker+"\n"+FstabLine+"\n"))
}

// bpffsMounted looks in root's /proc/mounts for a bpf filesystem at
// /sys/fs/bpf.
func bpffsMounted(root string) bool {
	ms, err := procstat.Under(root).Mounts()
	return err == nil && slices.ContainsFunc(ms, func(m procstat.Mount) bool {
		return m.Target == BPFFSPath && m.Type == "bpf"
	})
}

func (b *bootstrapper) completion(context.Context) error {
	if len(b.Completion) == 0 {
		return nil
	}
	_, err := b.put(CompletionPath, b.Completion, 0o644, "bash completion")
	return err
}

func (b *bootstrapper) manifest(context.Context) error {
	verb, err := writeFile(b.Root, ManifestPath, b.m.encode(), 0o600, &b.m.Parents)
	if err != nil {
		return err
	}
	b.r.line(verb, "%s (what bootstrap installed, for `ober uninstall`)", ManifestPath)
	return nil
}
