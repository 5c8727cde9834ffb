package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"

	"github.com/ober-ingress/ober/control/config"
)

// chrootMode is what ober gives the chroot it creates: root's, and
// nobody may write to it.
const chrootMode = 0o555

// prepareChroot makes sure dir (haproxy.chroot) can be the instances'
// root before a generation starts in it: it creates the directory when it
// is missing, and refuses one that is not a directory owned by root, that
// others than root may write to, or that holds anything. A compromised
// HAProxy sees only that directory, as the unprivileged user; nothing
// there may be readable, and it must not be able to plant anything for
// the next instance.
func prepareChroot(dir string) error {
	bad := func(format string, args ...any) error {
		return &config.FieldError{Path: "haproxy.chroot", Value: strconv.Quote(dir), Msg: fmt.Sprintf(format, args...)}
	}
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, chrootMode); err != nil {
			return bad("cannot create it: %v", err)
		}
		// Mkdir applies the umask (the unit's is 0077).
		if err := os.Chmod(dir, chrootMode); err != nil {
			return bad("cannot set its mode: %v", err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return bad("%v", err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return bad("is a symbolic link: name the directory itself")
	case !fi.IsDir():
		return bad("is not a directory")
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		return bad("is owned by uid %d: it must be root's, so that the instances' user cannot write to it", st.Uid)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return bad("has mode %04o: group and others must not write to it (ober creates it %04o)", perm, chrootMode)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return bad("%v", err)
	}
	if len(entries) > 0 {
		return bad("is not empty (%d entries, such as %q): the instances' root must hold nothing", len(entries), entries[0].Name())
	}
	return nil
}
