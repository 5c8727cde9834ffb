package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/control/lib/tuning"
	"github.com/ober-ingress/ober/control/runtime/nftlb"
	"github.com/ober-ingress/ober/loader"
	"github.com/ober-ingress/ober/systemd"
)

// UninstallOptions configure Uninstall.
type UninstallOptions struct {
	// Root, Live, Out, Yes and Confirm are as in Options.
	Root    string
	Live    bool
	Out     io.Writer
	Yes     bool
	Confirm func(question string) (bool, error)
	// KeepConfig keeps /etc/ober.
	KeepConfig bool
	// StopTimeout bounds the wait for a daemon stopped by SIGTERM; it
	// drains connections first (the unit gives it 120 s).
	StopTimeout time.Duration
	// Units are ober's unit files; systemd.Units() when nil.
	Units []systemd.Unit
	// PinRoot is where the dataplane is pinned (--bpffs-root); PinRoot
	// when empty.
	PinRoot string
	// Table is the nftables table of the udp and nat services; when nil,
	// table inet ober of this network namespace if Root is "/" and Live,
	// none otherwise (a tree has no kernel state).
	Table Table
}

// Table is what uninstall needs of ober's nftables table: nftlb.Applier.
type Table interface {
	// Owned reports whether the table exists, with nftlb.ErrNotOurs when
	// it is not ober's.
	Owned() (bool, error)
	Remove() error
}

// DefaultStopTimeout is a little more than the unit's TimeoutStopSec.
const DefaultStopTimeout = 150 * time.Second

// removal is one path uninstall removes.
type removal struct {
	path string
	what string // "directory", "pinned dataplane", ...
	// sum is the checksum bootstrap recorded, "" when it recorded none.
	sum string
}

type uninstaller struct {
	UninstallOptions
	r *report
	m *Manifest
}

// Uninstall stops ober and removes what bootstrap put on the machine:
// the dataplane's pins, units, sysctl and watchdog drop-ins, tmpfiles
// entry, completion, fstab line, ober's directories (the configuration
// unless KeepConfig), the vendor repository and, last, the binary. It
// keeps packages and anything not ober's. Without a manifest it removes
// ober's well-known paths only.
func Uninstall(ctx context.Context, o UninstallOptions) error {
	if o.Root == "" {
		return errors.New("--root must not be empty")
	}
	if o.PinRoot == "" {
		o.PinRoot = PinRoot
	}
	// The pin root is removed with everything in it: only a directory
	// below /sys/fs/bpf, or one on a bpf filesystem, can be it.
	o.PinRoot = filepath.Clean(o.PinRoot)
	if !filepath.IsAbs(o.PinRoot) || o.PinRoot == BPFFSPath ||
		!isUnder(o.PinRoot, BPFFSPath) && !(o.Live && o.PinRoot != "/" && isBPFFS(host(o.Root, o.PinRoot))) {
		return fmt.Errorf("--bpffs-root %s: uninstall removes a pin directory below %s or on a bpf filesystem only", o.PinRoot, BPFFSPath)
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Units == nil {
		o.Units = systemd.Units()
	}
	if o.Table == nil && o.Live && filepath.Clean(o.Root) == "/" {
		o.Table = &nftlb.Applier{}
	}
	if o.Live && os.Geteuid() != 0 {
		return errors.New("must run as root: it stops ober and removes files under /etc, /usr and /var (or give --root DIR)")
	}
	u := &uninstaller{UninstallOptions: o, r: &report{w: o.Out}}
	var err error
	if u.m, err = ReadManifest(o.Root); err != nil {
		return err
	}
	if u.m == nil {
		u.m = &Manifest{}
	}
	running, err := u.running(ctx)
	if err != nil {
		return err
	}
	files, dirs := u.plan()
	fstab := u.fstabHasOurs()
	table := u.hasTable()
	if running == nil && len(files) == 0 && len(dirs) == 0 && !fstab && !table {
		fmt.Fprintf(o.Out, "nothing to remove: ober is not installed under %s\n", o.Root)
		return nil
	}
	if !o.Yes {
		what := fmt.Sprintf("remove ober from %s (%d paths", o.Root, len(files)+len(dirs))
		if running != nil {
			what += ", stopping " + running.String() + " first"
		}
		what += ")?"
		if o.Confirm == nil {
			return errors.New("stdin is not a terminal to confirm on: rerun with -y")
		}
		ok, err := o.Confirm(what)
		if err != nil {
			return fmt.Errorf("confirm: %w", err)
		}
		if !ok {
			return errors.New("declined; nothing was changed")
		}
	}

	if running != nil {
		if err := running.stop(ctx, u); err != nil {
			return err
		}
	}
	// The pins next: with the daemon gone nothing re-creates them, and
	// the links go before the files the dataplane was set up from.
	for _, d := range dirs {
		if d.path == u.PinRoot {
			if err := u.remove(d); err != nil {
				return err
			}
		}
	}
	// The daemon leaves its nftables rules in place when it stops, so
	// that a restart keeps the kernel services' flows.
	if table {
		if err := u.Table.Remove(); err != nil {
			return fmt.Errorf("remove nftables table inet %s: %w", nftlb.TableName, err)
		}
		u.r.line(vRemoved, "nftables table inet %s (the udp and nat services' rules)", nftlb.TableName)
	}
	unitsRemoved, watchdogRemoved, sysctlRemoved := false, false, false
	for _, f := range files {
		if f.path == BinaryPath {
			continue // last: a failure before it leaves a working ober to retry with
		}
		if err := u.remove(f); err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(f.path, UnitDir+"/"):
			unitsRemoved = true
		case f.path == WatchdogPath:
			watchdogRemoved = true
		case f.path == tuning.File:
			sysctlRemoved = true
		}
	}
	if unitsRemoved {
		if err := u.daemonReload(ctx); err != nil {
			return err
		}
	}
	if fstab {
		if err := u.fstab(); err != nil {
			return err
		}
	}
	for _, d := range dirs {
		if d.path == u.PinRoot {
			continue
		}
		if err := u.remove(d); err != nil {
			return err
		}
	}
	if o.KeepConfig {
		if _, err := os.Stat(host(o.Root, ConfigDir)); err == nil {
			u.r.line(vKept, "%s (--keep-config)", ConfigDir)
		}
	}
	if err := u.accounts(ctx); err != nil {
		return err
	}
	for _, f := range files {
		if f.path == BinaryPath {
			if err := u.remove(f); err != nil {
				return err
			}
		}
	}
	u.removeParents()

	if sysctlRemoved && o.Live {
		u.r.line(vNote, "the kernel keeps the tuning of %s until the next reboot", tuning.File)
	}
	if watchdogRemoved && o.Live {
		u.r.line(vNote, "systemd keeps the hardware watchdog armed until `systemctl daemon-reexec` or a reboot")
	}
	if u.m.Repo != nil && o.Live {
		u.r.line(vNote, "run `apt-get update` to forget the removed HAProxy repository's package lists")
	}
	u.packagesNote()
	fmt.Fprintf(o.Out, "uninstalled: %d %s\n", u.r.changes, plural(u.r.changes, "change"))
	return nil
}

// plan lists the files and directories to remove that exist: ober's
// well-known paths and whatever the manifest adds (the vendor
// repository). Files come first, in the order they are removed.
func (u *uninstaller) plan() (files, dirs []removal) {
	exists := func(p string) bool {
		_, err := os.Lstat(host(u.Root, p))
		return err == nil
	}
	add := func(p, what string) {
		if !exists(p) || slices.ContainsFunc(files, func(r removal) bool { return r.path == p }) {
			return
		}
		sum, _ := u.m.sum(p)
		files = append(files, removal{path: p, what: what, sum: sum})
	}
	if exists(u.PinRoot) {
		dirs = append(dirs, removal{path: u.PinRoot, what: "pinned dataplane"})
	}
	// Links that enable ober's units (what `systemctl disable` removes).
	var names []string
	for _, unit := range u.Units {
		names = append(names, unit.Name)
	}
	wants, _ := filepath.Glob(host(u.Root, UnitDir+"/*.wants/*"))
	requires, _ := filepath.Glob(host(u.Root, UnitDir+"/*.requires/*"))
	for _, l := range append(wants, requires...) {
		if st, err := os.Lstat(l); err == nil && st.Mode()&fs.ModeSymlink != 0 && slices.Contains(names, filepath.Base(l)) {
			rel, _ := filepath.Rel(u.Root, l)
			add("/"+rel, "enables the unit")
		}
	}
	for _, n := range names {
		add(path.Join(UnitDir, n), "systemd unit")
	}
	add(tuning.File, "kernel tuning")
	add(WatchdogPath, "watchdog drop-in")
	add(TmpfilesPath, "tmpfiles.d entry")
	add(CompletionPath, "bash completion")
	if u.m.Repo != nil {
		add(u.m.Repo.Source, "HAProxy repository")
		add(u.m.Repo.Keyring, "HAProxy repository key")
	}
	add(BinaryPath, "ober binary")
	for _, f := range u.m.Files {
		if f.Path != ManifestPath && !isUnder(f.Path, StateDir) && !isUnder(f.Path, ConfigDir) {
			add(f.Path, "written by bootstrap")
		}
	}
	for _, d := range []string{StateDir, RunDir, LogDir, ConfigDir} {
		if d == ConfigDir && u.KeepConfig {
			continue
		}
		if exists(d) {
			dirs = append(dirs, removal{path: d, what: "directory"})
		}
	}
	return files, dirs
}

func isUnder(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// remove deletes one planned path and reports it, flagging a file whose
// content is no longer what bootstrap wrote.
func (u *uninstaller) remove(r removal) error {
	full := host(u.Root, r.path)
	note := r.what
	switch {
	case r.path == u.PinRoot:
		// Live pins on a bpffs hold the XDP and sk_lookup links:
		// Destroy detaches them so the hooks are free when it returns.
		// Anything else (a tree) is plain files.
		if u.Live && isBPFFS(full) {
			if err := loader.Destroy(full); err != nil {
				return err
			}
			note = "pinned dataplane: XDP and sk_lookup detached"
			break
		}
		if err := os.RemoveAll(full); err != nil {
			return fmt.Errorf("remove %s: %w", r.path, err)
		}
	case r.what == "directory":
		n := countEntries(full)
		if err := os.RemoveAll(full); err != nil {
			return fmt.Errorf("remove %s: %w", r.path, err)
		}
		switch n {
		case 0:
			note = "directory, empty"
		case 1:
			note = "directory, 1 entry"
		default:
			note = fmt.Sprintf("directory, %d entries", n)
		}
	default:
		if r.sum != "" {
			if b, err := os.ReadFile(full); err == nil && sha(b) != r.sum {
				note += ", modified since bootstrap"
			}
		}
		if err := os.Remove(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", r.path, err)
		}
	}
	u.r.line(vRemoved, "%s (%s)", r.path, note)
	return nil
}

func countEntries(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err == nil && p != dir {
			n++
		}
		return nil
	})
	return n
}

func isBPFFS(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && uint32(st.Type) == unix.BPF_FS_MAGIC
}

func (u *uninstaller) daemonReload(ctx context.Context) error {
	switch {
	case !u.Live:
		u.r.line(vSkipped, "systemctl daemon-reload: --root")
	case !systemdRuns(u.Root):
	default:
		if _, err := runCmd(ctx, nil, "systemctl", "daemon-reload"); err != nil {
			return fmt.Errorf("units: %w", err)
		}
		u.r.line(vReloaded, "systemd (systemctl daemon-reload)")
	}
	return nil
}

func (u *uninstaller) fstabHasOurs() bool {
	b, err := os.ReadFile(host(u.Root, FstabPath))
	return err == nil && hasOurFstabLines(b)
}

// fstab removes the marker and the bpffs line under it, nothing else.
// The mount itself stays: other tools pin into /sys/fs/bpf too.
func (u *uninstaller) fstab() error {
	full := host(u.Root, FstabPath)
	b, err := os.ReadFile(full)
	if err != nil {
		return fmt.Errorf("fstab: %w", err)
	}
	st, err := os.Stat(full)
	if err != nil {
		return fmt.Errorf("fstab: %w", err)
	}
	next := bytes.Replace(b, []byte(FstabMarker+"\n"+FstabLine+"\n"), nil, 1)
	if u.m.FstabCreated && len(bytes.TrimSpace(next)) == 0 {
		if err := os.Remove(full); err != nil {
			return fmt.Errorf("fstab: %w", err)
		}
		u.r.line(vRemoved, "%s (bootstrap created it for the bpffs line alone)", FstabPath)
		return nil
	}
	if _, err := writeFile(u.Root, FstabPath, next, st.Mode().Perm(), nil); err != nil {
		return fmt.Errorf("fstab: %w", err)
	}
	u.r.line(vChanged, "%s (removed ober's bpffs line; %s stays mounted for other tools)", FstabPath, BPFFSPath)
	return nil
}

// accounts removes the users and groups bootstrap created, now that the
// instances that ran as them are stopped. Accounts bootstrap found in
// place are not in the manifest and stay.
func (u *uninstaller) accounts(ctx context.Context) error {
	for _, name := range u.m.Users {
		if _, _, ok, err := sysuser.FindUser(u.Root, name); err != nil || !ok {
			continue
		}
		if !u.Live {
			u.r.line(vSkipped, "user %s: --root, no userdel runs", name)
			continue
		}
		args := sysuser.UserDel(name)
		if _, err := runCmd(ctx, nil, args[0], args[1:]...); err != nil {
			return fmt.Errorf("remove user %s: %w", name, err)
		}
		u.r.line(vRemoved, "user %s (bootstrap created it)", name)
	}
	for _, name := range u.m.Groups {
		// userdel removes a user's own group where login.defs says
		// USERGROUPS_ENAB yes.
		if _, ok, err := sysuser.FindGroup(u.Root, name); err != nil || !ok {
			continue
		}
		if !u.Live {
			u.r.line(vSkipped, "group %s: --root, no groupdel runs", name)
			continue
		}
		args := sysuser.GroupDel(name)
		if _, err := runCmd(ctx, nil, args[0], args[1:]...); err != nil {
			return fmt.Errorf("remove group %s: %w", name, err)
		}
		u.r.line(vRemoved, "group %s (bootstrap created it)", name)
	}
	return nil
}

// removeParents removes the directories bootstrap created to hold its
// files, deepest first, when nothing else is in them.
func (u *uninstaller) removeParents() {
	ps := slices.Clone(u.m.Parents)
	sort.Slice(ps, func(i, j int) bool { return strings.Count(ps[i], "/") > strings.Count(ps[j], "/") })
	for _, p := range ps {
		if p == "/" || p == "." {
			continue
		}
		if err := os.Remove(host(u.Root, p)); err == nil {
			u.r.line(vRemoved, "%s (empty directory bootstrap created)", p)
		}
	}
}

func (u *uninstaller) packagesNote() {
	fam := Debian
	if o, err := DetectOS(u.Root); err == nil {
		fam = o.Family
	} else if strings.HasPrefix(u.m.OS, "rhel") {
		fam = RHEL
	}
	pkgs, why := u.m.Packages, "bootstrap installed them"
	if len(pkgs) == 0 {
		pkgs, why = packagesFor(fam), "ober runs with them"
	}
	cmd := "apt-get remove"
	if fam == RHEL {
		cmd = "dnf remove"
	}
	u.r.line(vKept, "packages %s (%s): remove them with `%s %s`", strings.Join(pkgs, " "), why, cmd, strings.Join(pkgs, " "))
}

// daemon is a running ober to stop first: the systemd unit, or the
// process in the pid file.
type daemon struct {
	unit string
	pid  int
}

func (d *daemon) String() string {
	if d.unit != "" {
		return d.unit
	}
	return fmt.Sprintf("ober run (pid %d)", d.pid)
}

// running finds a running ober: the unit when systemd runs it, else the
// pid file's process, if that is still `ober run` (a stale file's pid may
// belong to anything by now).
func (u *uninstaller) running(ctx context.Context) (*daemon, error) {
	if !u.Live {
		return nil, nil
	}
	if systemdRuns(u.Root) {
		for _, unit := range u.Units {
			if strings.HasSuffix(unit.Name, ".service") {
				if _, err := runCmd(ctx, nil, "systemctl", "is-active", "--quiet", unit.Name); err == nil {
					return &daemon{unit: unit.Name}, nil
				}
			}
		}
	}
	b, err := os.ReadFile(host(u.Root, PIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stop ober: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		u.r.line(vSkipped, "stopping ober: %s holds %q, not a pid", PIDFile, strings.TrimSpace(string(b)))
		return nil, nil
	}
	if !isOberRun(u.Root, pid) {
		u.r.line(vSkipped, "stopping ober: pid %d of %s is not `ober run` (stale pid file)", pid, PIDFile)
		return nil, nil
	}
	return &daemon{pid: pid}, nil
}

// isOberRun reports whether pid's command line is ober's daemon: a
// binary named ober with the argument run.
func isOberRun(root string, pid int) bool {
	args, err := procstat.Under(root).Cmdline(pid)
	return err == nil && len(args) >= 2 && filepath.Base(args[0]) == "ober" && slices.Contains(args[1:], "run")
}

func (d *daemon) stop(ctx context.Context, u *uninstaller) error {
	if d.unit != "" {
		if _, err := runCmd(ctx, nil, "systemctl", "stop", d.unit); err != nil {
			return fmt.Errorf("stop ober: %w", err)
		}
		u.r.line(vStopped, "%s (systemctl stop)", d.unit)
		return nil
	}
	if err := unix.Kill(d.pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop ober: signal pid %d: %w", d.pid, err)
	}
	ctx, cancel := context.WithTimeout(ctx, u.StopTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := unix.Kill(d.pid, 0); errors.Is(err, unix.ESRCH) {
			u.r.line(vStopped, "ober run (pid %d, SIGTERM)", d.pid)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop ober: pid %d still runs %s after SIGTERM (it drains connections first): wait, or stop it yourself, then rerun", d.pid, u.StopTimeout)
		case <-tick.C:
		}
	}
}

// hasTable reports whether ober's nftables table is there to remove. A
// table of that name that ober did not make is kept, and said so;
// nftables that cannot be read (no nf_tables) has no table of ober's.
func (u *uninstaller) hasTable() bool {
	if u.Table == nil {
		return false
	}
	ok, err := u.Table.Owned()
	switch {
	case errors.Is(err, nftlb.ErrNotOurs):
		u.r.line(vKept, "nftables table inet %s: ober did not make it", nftlb.TableName)
		return false
	case err != nil:
		u.r.line(vNote, "nftables not read, no table removed: %v", err)
		return false
	}
	return ok
}
