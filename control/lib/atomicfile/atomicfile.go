// Package atomicfile replaces files in one step. The new content is
// written and synced beside the file, then renamed over it, and the
// directory is synced: a reader (HAProxy, keepalived, systemd, the next
// ober) sees the old file or the new one, never half of one, and a crash
// leaves one of the two.
//
// Write does it all at once. WriteTemp and Commit split it for a caller
// that has to change something else between the two (ober sync swaps the
// live whitelists after the file is safely written and before it
// replaces the old one), so that the rename is the only step left that
// can fail. CreateTemp is WriteTemp for content that comes as a stream
// (a download, a copy of a binary).
//
// The file beside path is named ".<name>-<random>.new": hidden, and
// found by a glob of ".<name>-*" when something must check that none
// was left behind.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Write replaces path with data, with mode set and, when path exists, its
// owner kept, before the content becomes visible.
func Write(path string, data []byte, mode fs.FileMode) error {
	tmp, err := WriteTemp(path, data, mode)
	if err != nil {
		return err
	}
	if err := Commit(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// WriteTemp writes data to a new file beside path and returns its name:
// mode set, path's owner kept when path exists, content synced. The
// caller renames it over path with Commit, or removes it.
func WriteTemp(path string, data []byte, mode fs.FileMode) (string, error) {
	f, err := CreateTemp(path, mode)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	return f.Name(), nil
}

// CreateTemp creates a new file beside path, with mode set and path's
// owner kept when path exists, and returns it open for writing. The
// caller writes it, syncs and closes it, then renames it over path with
// Commit, or removes it.
func CreateTemp(path string, mode fs.FileMode) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*.new")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	err = f.Chmod(mode.Perm())
	if st, serr := os.Stat(path); err == nil && serr == nil {
		sys, ok := st.Sys().(*syscall.Stat_t)
		if ok && (int(sys.Uid) != os.Geteuid() || int(sys.Gid) != os.Getegid()) {
			err = f.Chown(int(sys.Uid), int(sys.Gid))
		}
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	return f, nil
}

// Commit renames tmp over path and syncs the directory, so that the new
// file survives a crash.
func Commit(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, unwrapPath(err))
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}

// unwrapPath drops the os package's own naming of the temporary file:
// the caller's message names the file that matters.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	if le, ok := errors.AsType[*os.LinkError](err); ok {
		return le.Err
	}
	return err
}
