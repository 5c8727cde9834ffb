// Package sysuser finds and creates the unprivileged system account the
// HAProxy instances drop to after they have read their configuration,
// certificates and sockets as root. `ober bootstrap` creates it on a
// node; the lab, the bench and the tests create it on the machine they
// run on with Ensure.
package sysuser

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// HAProxyUser is the default user and group of the HAProxy instances
// (haproxy.user, haproxy.group). It is not the distribution's "haproxy"
// user: that one belongs to the haproxy package's own service and may own
// its files.
const HAProxyUser = "ober-haproxy"

// lockPath serialises Ensure between processes: two test binaries, or a
// test and `ober lab up`, may find the user missing at the same moment.
const lockPath = "/run/lock/ober-sysuser.lock"

// GroupAdd is the command that creates group name as a system group.
// shadow-utils' groupadd takes the same options on Debian, Ubuntu and RHEL.
func GroupAdd(name string) []string { return []string{"groupadd", "--system", name} }

// UserAdd is the command that creates name as a system user in group:
// no home directory, no login shell.
func UserAdd(name, group string) []string {
	return []string{"useradd", "--system", "--gid", group, "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
		"--comment", "ober HAProxy instances", name}
}

// UserDel and GroupDel remove them again.
func UserDel(name string) []string  { return []string{"userdel", name} }
func GroupDel(name string) []string { return []string{"groupdel", name} }

// Hint is a shell line an operator can run to create user name (with a
// group of the same name), for error messages.
func Hint(name string) string {
	return "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin " + name
}

// FindUser looks name up in root's /etc/passwd and returns its uid and
// primary gid. ok is false when no line names it or the file is missing.
func FindUser(root, name string) (uid, gid int, ok bool, err error) {
	f, err := findLine(filepath.Join(root, "/etc/passwd"), name)
	if err != nil || f == nil {
		return 0, 0, false, err
	}
	if len(f) < 4 {
		return 0, 0, false, fmt.Errorf("/etc/passwd: the line of %s has %d fields, want 7", name, len(f))
	}
	if uid, err = strconv.Atoi(f[2]); err != nil {
		return 0, 0, false, fmt.Errorf("/etc/passwd: uid of %s: %w", name, err)
	}
	if gid, err = strconv.Atoi(f[3]); err != nil {
		return 0, 0, false, fmt.Errorf("/etc/passwd: gid of %s: %w", name, err)
	}
	return uid, gid, true, nil
}

// FindGroup looks name up in root's /etc/group and returns its gid.
func FindGroup(root, name string) (gid int, ok bool, err error) {
	f, err := findLine(filepath.Join(root, "/etc/group"), name)
	if err != nil || f == nil {
		return 0, false, err
	}
	if len(f) < 3 {
		return 0, false, fmt.Errorf("/etc/group: the line of %s has %d fields, want 4", name, len(f))
	}
	if gid, err = strconv.Atoi(f[2]); err != nil {
		return 0, false, fmt.Errorf("/etc/group: gid of %s: %w", name, err)
	}
	return gid, true, nil
}

// findLine returns the colon-separated fields of the line of path whose
// first field is name, nil when there is none.
func findLine(path, name string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if fields[0] == name {
			return fields, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return nil, nil
}

// Ensure makes sure this machine has the system user name and the group
// of the same name, creating what is missing with groupadd and useradd.
// It returns whether it created anything. Several processes may call it
// at once: a lock serialises them, and a name another process created
// meanwhile counts as there.
func Ensure(ctx context.Context, name string) (created bool, err error) {
	if Exists(name) {
		return false, nil
	}
	if os.Geteuid() != 0 {
		return false, fmt.Errorf("system user %s is missing and only root can create it: run `%s` as root", name, Hint(name))
	}
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		return false, fmt.Errorf("create system user %s: %w", name, err)
	}
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("create system user %s: lock: %w", name, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return false, fmt.Errorf("create system user %s: lock %s: %w", name, lockPath, err)
	}
	if _, err := user.LookupGroup(name); err != nil {
		if err := run(ctx, GroupAdd(name)); err != nil {
			return false, err
		}
		created = true
	}
	if _, err := user.Lookup(name); err != nil {
		if err := run(ctx, UserAdd(name, name)); err != nil {
			return created, err
		}
		created = true
	}
	if !Exists(name) {
		return created, fmt.Errorf("system user %s: still missing after useradd", name)
	}
	return created, nil
}

// Exists reports whether this machine has the user name and the group name.
func Exists(name string) bool {
	_, uerr := user.Lookup(name)
	_, gerr := user.LookupGroup(name)
	return uerr == nil && gerr == nil
}

// alreadyExists is the exit status of useradd and groupadd for a name
// that is in use: another process was quicker, which is fine.
const alreadyExists = 9

func run(ctx context.Context, args []string) error {
	bin, err := exec.LookPath(args[0])
	if err != nil {
		// root's PATH may lack /usr/sbin (su without -, some CI shells).
		bin = filepath.Join("/usr/sbin", args[0])
		if _, serr := os.Stat(bin); serr != nil {
			return fmt.Errorf("%s not found: install the passwd package (shadow-utils on RHEL)", args[0])
		}
	}
	out, err := exec.CommandContext(ctx, bin, args[1:]...).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == alreadyExists {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
