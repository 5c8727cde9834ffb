package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
)

// The paths ober owns on a node, as seen from the root.
const (
	BinaryPath     = "/usr/local/sbin/ober"
	ConfigDir      = "/etc/ober"
	TLSDir         = "/etc/ober/tls"
	StateDir       = "/var/lib/ober"
	LogDir         = "/var/log/ober"
	RunDir         = "/run/ober"
	PIDFile        = "/run/ober/ober.pid"
	ManifestPath   = "/var/lib/ober/bootstrap.json"
	TmpfilesPath   = "/etc/tmpfiles.d/ober.conf"
	UnitDir        = "/etc/systemd/system"
	WatchdogPath   = "/etc/systemd/system.conf.d/90-ober-watchdog.conf"
	CompletionPath = "/usr/share/bash-completion/completions/ober"
	FstabPath      = "/etc/fstab"
	BPFFSPath      = "/sys/fs/bpf"
	PinRoot        = "/sys/fs/bpf/ober"
)

// Verbs of the report. Those in changeVerbs are changes to the machine;
// a run without any ends with "nothing changed".
const (
	vChecked   = "checked"
	vCreated   = "created"
	vChanged   = "changed"
	vUnchanged = "unchanged"
	vInstalled = "installed"
	vSkipped   = "skipped"
	vRemoved   = "removed"
	vApplied   = "applied"
	vMounted   = "mounted"
	vReloaded  = "reloaded"
	vStopped   = "stopped"
	vKept      = "kept"
	vNote      = "note"
)

var changeVerbs = []string{vCreated, vChanged, vInstalled, vRemoved, vApplied, vMounted, vReloaded, vStopped}

// report writes one line per step, "<verb> <what>", and counts changes.
type report struct {
	w       io.Writer
	changes int
}

func (r *report) line(verb, format string, args ...any) {
	if slices.Contains(changeVerbs, verb) {
		r.changes++
	}
	fmt.Fprintf(r.w, "%-9s %s\n", verb, fmt.Sprintf(format, args...))
}

// host joins root and a path of the node.
func host(root, p string) string { return filepath.Join(root, p) }

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeFile makes root/path hold content with mode, touching nothing when
// it already does (so a second run keeps mtimes). It returns the verb
// for the report: created, changed or unchanged. New files appear whole:
// they are written beside the target and renamed over it, which also
// replaces a running binary without "text file busy".
func writeFile(root, path string, content []byte, mode fs.FileMode, parents *[]string) (string, error) {
	full := host(root, path)
	old, err := os.ReadFile(full)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if exists && bytes.Equal(old, content) {
		st, err := os.Stat(full)
		if err != nil {
			return "", fmt.Errorf("stat %s: %w", path, err)
		}
		if st.Mode().Perm() == mode {
			return vUnchanged, nil
		}
		if err := os.Chmod(full, mode); err != nil {
			return "", fmt.Errorf("chmod %s: %w", path, err)
		}
		return vChanged, nil
	}
	if err := mkdirParents(root, filepath.Dir(path), parents); err != nil {
		return "", err
	}
	if err := atomicfile.Write(full, content, mode); err != nil {
		return "", err
	}
	if exists {
		return vChanged, nil
	}
	return vCreated, nil
}

// mkdirParents creates dir (a node path) and the missing directories
// above it, 0755, and appends each one it created to parents: uninstall
// removes those again when they are empty.
func mkdirParents(root, dir string, parents *[]string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(host(root, d)); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		missing = append(missing, d)
		if d == "/" || d == "." {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(host(root, missing[i]), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create directory %s: %w", missing[i], err)
		}
		// Mkdir applies the umask; the node's directories are 0755.
		if err := os.Chmod(host(root, missing[i]), 0o755); err != nil {
			return fmt.Errorf("chmod %s: %w", missing[i], err)
		}
		if parents != nil && !slices.Contains(*parents, missing[i]) {
			*parents = append(*parents, missing[i])
		}
	}
	return nil
}

// ensureDir makes root/path a directory with mode: created, changed (the
// mode) or unchanged.
func ensureDir(root, path string, mode fs.FileMode, parents *[]string) (string, error) {
	full := host(root, path)
	st, err := os.Stat(full)
	switch {
	case err == nil && !st.IsDir():
		return "", fmt.Errorf("%s exists and is not a directory: move it away", path)
	case err == nil && st.Mode().Perm() == mode:
		return vUnchanged, nil
	case err == nil:
		if err := os.Chmod(full, mode); err != nil {
			return "", fmt.Errorf("chmod %s: %w", path, err)
		}
		return vChanged, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("stat %s: %w", path, err)
	}
	if err := mkdirParents(root, filepath.Dir(path), parents); err != nil {
		return "", err
	}
	if err := os.Mkdir(full, mode); err != nil {
		return "", fmt.Errorf("create directory %s: %w", path, err)
	}
	if err := os.Chmod(full, mode); err != nil {
		return "", fmt.Errorf("chmod %s: %w", path, err)
	}
	return vCreated, nil
}

// runCmd runs a command of the machine and returns its output. The error
// is one line: the command, how it ended and the last line it printed,
// which is where apt-get, dnf and sysctl put the reason.
func runCmd(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		line := strings.Join(append([]string{name}, args...), " ")
		if last := lastLine(out); last != "" {
			return out, fmt.Errorf("%s: %w: %s", line, err, last)
		}
		return out, fmt.Errorf("%s: %w", line, err)
	}
	return out, nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// systemdRuns reports whether systemd is the init of the root (the test
// sd_booted(3) makes).
func systemdRuns(root string) bool {
	st, err := os.Stat(host(root, "/run/systemd/system"))
	return err == nil && st.IsDir()
}
