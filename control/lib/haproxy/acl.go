package haproxy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
)

// The whitelists HAProxy checks beside XDP live in files the instances
// load at start (`src -f FILE`), one per list and configuration build, in
// ACLDir: a build's file never changes under an instance that loaded
// another. A live change (`ober sync`) rewrites every build's file of the
// list and replaces the list in every running instance (ReplaceACL), so
// that an instance restarted later loads what the others hold.

// ACLDir is the directory of the whitelist files under a runtime
// directory.
func ACLDir(runtimeDir string) string { return filepath.Join(runtimeDir, "acl") }

// ACLFile is the file of list for one build, stamp telling builds apart.
func ACLFile(runtimeDir, list, stamp string) string {
	return filepath.Join(ACLDir(runtimeDir), list+"."+stamp+".acl")
}

// ACLFiles lists every build's file of list.
func ACLFiles(runtimeDir, list string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(ACLDir(runtimeDir), list+".*.acl"))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// ACLContent is a whitelist as an ACL file holds it: a prefix a line.
func ACLContent(ps []netip.Prefix) []byte {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.Masked().String())
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// WriteACL writes ps to path in one step (a file beside it, renamed over
// it), readable by root only: HAProxy reads it before it drops its
// privileges.
func WriteACL(path string, ps []netip.Prefix) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, ACLContent(ps), 0o600)
}

// WriteACLTemp writes ps to a new file beside path and returns its name,
// for a caller that renames it into place later (atomicfile.Commit).
func WriteACLTemp(path string, ps []netip.Prefix) (string, error) {
	return atomicfile.WriteTemp(path, ACLContent(ps), 0o600)
}

// RuntimeSockets lists the runtime sockets of the instances an ober with
// runtimeDir started (haproxy-<instance>.g<generation>.sock).
func RuntimeSockets(runtimeDir string) ([]string, error) {
	return filepath.Glob(filepath.Join(runtimeDir, "haproxy-*.sock"))
}

// LoadedACLFiles lists the files the instance loaded ACL patterns from.
func (r Runtime) LoadedACLFiles(ctx context.Context) ([]string, error) {
	out, err := r.Command(ctx, "show acl")
	if err != nil {
		return nil, err
	}
	// "0 (/run/ober/acl/frontend-http.x.acl) pattern loaded from file ..."
	var files []string
	for _, line := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(line, " (")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if f, _, ok := strings.Cut(rest, ") "); ok && f != "" {
			files = append(files, f)
		}
	}
	return files, nil
}

// ReplaceACL makes the patterns of the ACL the instance loaded from file
// ps, in one step: a new version is prepared, filled and committed, so
// that no connection meets a half-filled list.
func (r Runtime) ReplaceACL(ctx context.Context, file string, ps []netip.Prefix) error {
	if !safeWord(file) {
		return fmt.Errorf("replace acl %q: not a plain path", file)
	}
	out, err := r.Command(ctx, "prepare acl "+file)
	if err != nil {
		return fmt.Errorf("replace acl %s: %w", file, err)
	}
	var ver int
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "New version created: %d", &ver); err != nil {
		return fmt.Errorf("replace acl %s: prepare answered %q", file, strings.TrimSpace(out))
	}
	// Many patterns to one command line each, sent a batch at a time.
	const batch = 500
	for i := 0; i < len(ps); i += batch {
		var cmds []string
		for _, p := range ps[i:min(i+batch, len(ps))] {
			cmds = append(cmds, fmt.Sprintf("add acl @%d %s %s", ver, file, p.Masked()))
		}
		out, err := r.Command(ctx, strings.Join(cmds, ";"))
		if err != nil {
			return fmt.Errorf("replace acl %s: %w", file, err)
		}
		if msg := strings.TrimSpace(out); msg != "" {
			return fmt.Errorf("replace acl %s: add answered %q", file, firstLine(msg))
		}
	}
	out, err = r.Command(ctx, fmt.Sprintf("commit acl @%d %s", ver, file))
	if err != nil {
		return fmt.Errorf("replace acl %s: %w", file, err)
	}
	if msg := strings.TrimSpace(out); msg != "" {
		return fmt.Errorf("replace acl %s: commit answered %q", file, firstLine(msg))
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
