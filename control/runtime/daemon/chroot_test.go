package daemon

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// prepareChroot creates the directory root's and unwritable, accepts it
// again as it is, and refuses every directory in which the unprivileged
// instances could find or leave something, naming haproxy.chroot.
func TestPrepareChroot(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	old := syscall.Umask(0o077) // the unit's
	err := prepareChroot(empty)
	syscall.Umask(old)
	require.NoError(t, err)
	fi, err := os.Stat(empty)
	require.NoError(t, err)
	require.True(t, fi.IsDir())
	require.Equal(t, os.FileMode(0o555), fi.Mode().Perm(), "0555 whatever the umask")
	require.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid)
	require.NoError(t, prepareChroot(empty), "a second start finds it as it left it")

	for _, c := range []struct {
		name  string
		setup func(t *testing.T, p string)
		want  string
	}{
		{"not empty", func(t *testing.T, p string) {
			require.NoError(t, os.Mkdir(p, 0o555))
			require.NoError(t, os.WriteFile(filepath.Join(p, "passwd"), nil, 0o644))
		}, `is not empty (1 entries, such as "passwd"): the instances' root must hold nothing`},
		{"writable by others", func(t *testing.T, p string) {
			require.NoError(t, os.Mkdir(p, 0o755))
			require.NoError(t, os.Chmod(p, 0o1777))
		}, "has mode 0777: group and others must not write to it (ober creates it 0555)"},
		{"writable by the group", func(t *testing.T, p string) {
			require.NoError(t, os.Mkdir(p, 0o755))
			require.NoError(t, os.Chmod(p, 0o575))
		}, "has mode 0575: group and others must not write to it"},
		{"not root's", func(t *testing.T, p string) {
			require.NoError(t, os.Mkdir(p, 0o555))
			require.NoError(t, os.Chown(p, 4242, 4242))
		}, "is owned by uid 4242: it must be root's, so that the instances' user cannot write to it"},
		{"a file", func(t *testing.T, p string) {
			require.NoError(t, os.WriteFile(p, nil, 0o444))
		}, "is not a directory"},
		{"a symbolic link", func(t *testing.T, p string) {
			require.NoError(t, os.Symlink(empty, p))
		}, "is a symbolic link: name the directory itself"},
		{"no parent", func(t *testing.T, p string) {}, "cannot create it: mkdir "},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "chroot")
			if c.name == "no parent" {
				p = filepath.Join(t.TempDir(), "missing", "chroot")
			}
			c.setup(t, p)
			err := prepareChroot(p)
			require.Error(t, err)
			require.Contains(t, err.Error(), `haproxy.chroot: "`+p+`": `+c.want)
		})
	}
}
