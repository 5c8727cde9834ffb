// Package backends is the logic of `ober backend`: it changes a backend's
// weight and admin state in ober.yaml, and lists the backends the file
// gives each service.
//
// The file is the truth the daemon applies, so an operator's change goes
// there first: Set edits it in place (control/lib/yamledit keeps every
// other line, comment and quoting as it was), checks that the edited file
// says what was asked and nothing else, that it loads as the daemon would
// load it, and only then replaces it atomically. On any error nothing is
// written. Asking the daemon to apply it is the caller's (a reload; the
// daemon applies a weight or state change through HAProxy's runtime API
// without renewing its instances).
package backends

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/atomicfile"
)

// Request is one change to one backend.
type Request struct {
	// Service is the service's name (default "<mode>-<port>").
	Service string
	// Backend is the backend's name (default "s<index>" in its pool).
	Backend string
	// Pool names the pool when the backend's name is in several pools of
	// the service: config.DefaultPool or one of its pools[]. Empty: the
	// one pool that has the name.
	Pool string
	// Weight, when not nil, is the new weight: 0..config.MaxWeight.
	Weight *int
	// State, when not empty, is the new admin state: enabled, drain or
	// disabled.
	State string
}

// Change is one value Set changed, as the file says it before and after.
type Change struct {
	// Field is the backend's key: "weight" or "state".
	Field string
	// Path is the value's place in the file, such as
	// "services[2].backends[1].weight".
	Path     string
	Old, New string
}

// String writes "weight 100 -> 50".
func (c Change) String() string { return c.Field + " " + c.Old + " -> " + c.New }

// Result is what Set found and did.
type Result struct {
	// Service, Pool and Backend name the backend changed.
	Service, Pool, Backend string
	// Path is the backend's place in the file, such as
	// "backends.servers[1]" or "services[2].pools[0].backends[3]".
	Path string
	// SharedBy lists, when the backend is in the top-level
	// backends.servers, every service that uses that pool: the change
	// applies to all of them.
	SharedBy []string
	// Changes are the values that differ from what the file said, in the
	// order weight, state. Empty when the file said so already.
	Changes []Change
	// Changed reports that the file was (or, from Edit, must be)
	// rewritten: false when every value asked for was the file's already.
	Changed bool
	// Named is set when the backend had no name in the file (it was
	// matched by its default name) and Set wrote that name into it, so
	// that the name stays the backend's when the list changes.
	Named bool
}

// Set applies req to the configuration file at path. It reads the file,
// edits it (Edit), checks that the edited file loads, and replaces it in
// one step with the same mode and owner; a symbolic link stays a link
// and its target is replaced. When nothing changes, nothing is written.
// On any error the file is left as it was.
func Set(path string, req Request) (Result, error) {
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return Result{}, fmt.Errorf("config %s: %w", path, unwrapPath(err))
	}
	st, err := os.Stat(target)
	if err != nil {
		return Result{}, fmt.Errorf("config %s: %w", path, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return Result{}, fmt.Errorf("config %s: not a regular file", path)
	}
	data, err := os.ReadFile(target)
	if err != nil {
		return Result{}, fmt.Errorf("config %s: %w", path, unwrapPath(err))
	}
	out, res, err := Edit(data, req)
	if err != nil {
		var le *LoadError
		if errors.As(err, &le) {
			le.Path = path
		}
		return Result{}, err
	}
	if !res.Changed {
		return res, nil
	}
	tmp, err := atomicfile.WriteTemp(target, out, st.Mode().Perm())
	if err != nil {
		return Result{}, fmt.Errorf("%w; nothing was written", err)
	}
	defer os.Remove(tmp) // a no-op once renamed
	// Another editor (ober sync, a second ober backend, a person) may
	// have replaced the file since it was read: replacing it now would
	// undo that edit without a word.
	if now, err := os.ReadFile(target); err != nil || !bytes.Equal(now, data) {
		return Result{}, fmt.Errorf("config %s changed while it was being edited; nothing was written, try again", path)
	}
	if err := atomicfile.Commit(tmp, target); err != nil {
		return Result{}, fmt.Errorf("%w; nothing was written", err)
	}
	return res, nil
}

// LoadError is the error of a file that does not load: its problems,
// as config.Parse reports them. Nothing was written.
type LoadError struct {
	// Path is the file's (empty from Edit).
	Path string
	Err  error
	// before is set when the file as read does not even decode, which
	// leaves no backend to find; otherwise it is the edited file that
	// does not load.
	before bool
}

// Error writes each problem on a line of its own, each starting with
// "config <path>: " as config.Load's do.
func (e *LoadError) Error() string {
	prefix := "config: "
	if e.Path != "" {
		prefix = "config " + e.Path + ": "
	}
	var b bytes.Buffer
	if e.before {
		b.WriteString("the file does not load, nothing was written:")
	} else {
		b.WriteString("the edited file does not load, nothing was written:")
	}
	for _, l := range config.ErrorLines(e.Err) {
		b.WriteString("\n" + prefix + l)
	}
	return b.String()
}

func (e *LoadError) Unwrap() error { return e.Err }

// checkRequest checks the values asked for, naming the place in the file
// they would take: "services[2].backends[1].weight: 300: must be 0-256".
func checkRequest(req Request, path string) error {
	var errs []error
	if req.Weight != nil && (*req.Weight < 0 || *req.Weight > config.MaxWeight) {
		errs = append(errs, &config.FieldError{Path: path + ".weight", Value: strconv.Itoa(*req.Weight),
			Msg: fmt.Sprintf("must be 0-%d", config.MaxWeight)})
	}
	switch req.State {
	case "", config.StateEnabled, config.StateDrain, config.StateDisabled:
	default:
		errs = append(errs, &config.FieldError{Path: path + ".state", Value: strconv.Quote(req.State),
			Msg: "must be enabled, drain or disabled"})
	}
	return errors.Join(errs...)
}

// unwrapPath drops the path an *os.PathError repeats; the message names
// the file as the operator gave it.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}
