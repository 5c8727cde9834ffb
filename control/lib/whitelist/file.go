package whitelist

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ober-ingress/ober/control/config"
)

// ErrInvalidConfig matches ReadFile's error for a file that reads but
// does not load.
var ErrInvalidConfig = errors.New("the configuration does not load; fix it first")

// File is the configuration file a transaction edits, as read before
// the transaction.
type File struct {
	// Path is the file's path as given.
	Path string
	// Config is what the file says.
	Config *config.Config

	// real is Path with symbolic links followed: the file that is
	// replaced, so that a link stays a link.
	real string
	data []byte
	mode fs.FileMode
}

// ReadFile reads the configuration file at path for a transaction. An
// error reading it starts with path and matches its cause (fs.ErrNotExist
// for a missing file). A file that does not load is an error matching
// ErrInvalidConfig: a transaction does not write into a file the daemon
// refuses already.
func ReadFile(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	f := &File{Path: path, mode: st.Mode()}
	if f.real, err = filepath.EvalSymlinks(path); err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	if f.data, err = os.ReadFile(path); err != nil {
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, config.OneLine(err))
	}
	f.Config = cfg
	return f, nil
}

// runtimeDir is where the daemon of this configuration keeps its
// sockets, HAProxy's lists and the lock: the configured one, or the
// default without a configuration file.
func (f *File) runtimeDir() string {
	if f == nil {
		return config.DefaultRuntimeDir
	}
	return f.Config.Node.RuntimeDir
}

// unwrapPath drops the path an *fs.PathError repeats; the message names
// the file.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}
