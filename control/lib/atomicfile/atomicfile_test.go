package atomicfile

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteReplacesWithModeAndLeavesNothingBeside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	require.NoError(t, Write(path, []byte("new"), 0o600))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "new", string(got))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left")
}

func TestWriteKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("run as root: the test gives the file another owner")
	}
	path := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	require.NoError(t, os.Chown(path, 65534, 65534))
	require.NoError(t, Write(path, []byte("new"), 0o644))
	st, err := os.Stat(path)
	require.NoError(t, err)
	sys := st.Sys().(*syscall.Stat_t)
	require.Equal(t, uint32(65534), sys.Uid)
	require.Equal(t, uint32(65534), sys.Gid)
}

func TestWriteTempUncommittedLeavesOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	tmp, err := WriteTemp(path, []byte("new"), 0o644)
	require.NoError(t, err)
	got, _ := os.ReadFile(path)
	require.Equal(t, "old", string(got), "the file changes only on Commit")
	require.NoError(t, Commit(tmp, path))
	got, _ = os.ReadFile(path)
	require.Equal(t, "new", string(got))
}

func TestWriteErrorNamesThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "f")
	err := Write(path, []byte("x"), 0o644)
	require.ErrorContains(t, err, path)
}

func TestCreateTempStreamsBesideThePath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bin")
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o755))
	f, err := CreateTemp(path, 0o755)
	require.NoError(t, err)
	left, err := filepath.Glob(filepath.Join(dir, ".bin-*"))
	require.NoError(t, err)
	require.Equal(t, []string{f.Name()}, left, "hidden beside the path, found by the documented glob")
	_, err = io.Copy(f, strings.NewReader("new"))
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
	st, err := os.Stat(f.Name())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o755), st.Mode().Perm())
	require.NoError(t, Commit(f.Name(), path))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "new", string(got))
	left, err = filepath.Glob(filepath.Join(dir, ".bin-*"))
	require.NoError(t, err)
	require.Empty(t, left)
}
