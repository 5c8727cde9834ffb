// Package haproxytest gives tests the HAProxy releases ober supports:
// Debian 12's 2.6 (the system's haproxy) and Debian 13's 3.0, run from a
// trixie root that lab/haproxy-root.sh builds (the script `make deps`
// runs), so that every real-HAProxy test runs against both.
package haproxytest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// DefaultDir is where `make deps` builds the 3.0 root and its wrapper
// (Makefile HAPROXY30_DIR); OBER_HAPROXY30_DIR overrides it for tests.
const DefaultDir = "/var/cache/ober/haproxy-3.0"

// Binary is one HAProxy release a test runs.
type Binary struct {
	Name string // "2.6", "3.0", or the base name of an extra binary
	Path string
}

// System is the machine's haproxy: /usr/sbin/haproxy, else haproxy in
// PATH. Its absence fails the test.
func System(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	p, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("no haproxy on this machine: install it (apt-get install haproxy, or `make deps`): %v", err)
	}
	return p
}

// Dir is the directory of the 3.0 root and its wrapper.
func Dir() string {
	if d := os.Getenv("OBER_HAPROXY30_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

// V30 is the HAProxy 3.0 wrapper, built by lab/haproxy-root.sh when it
// is missing or broken (about a minute and 230 MB from the Debian
// mirror; a present root costs one `haproxy -v`). A failure fails the
// test and says to run `make deps`.
func V30(t testing.TB) string {
	t.Helper()
	dir := Dir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", Script(), dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("HAProxy 3.0 is not available at %s: run `make deps` (it runs lab/haproxy-root.sh, which needs debootstrap and the Debian mirror): %v\n%s",
			dir, err, out)
	}
	return filepath.Join(dir, "haproxy")
}

// All lists 2.6 (the system's) and 3.0, then the binaries listed in
// OBER_TEST_HAPROXY_EXTRA (colon-separated paths), such as a 3.x build
// with AWS-LC.
func All(t testing.TB) []Binary {
	t.Helper()
	bins := []Binary{{Name: "2.6", Path: System(t)}, {Name: "3.0", Path: V30(t)}}
	for _, p := range strings.Split(os.Getenv("OBER_TEST_HAPROXY_EXTRA"), ":") {
		if p != "" {
			bins = append(bins, Binary{Name: filepath.Base(p), Path: p})
		}
	}
	return bins
}

// Each runs f as a subtest per binary of All, named after the release.
func Each(t *testing.T, f func(t *testing.T, bin string)) {
	t.Helper()
	for _, b := range All(t) {
		t.Run(b.Name, func(t *testing.T) { f(t, b.Path) })
	}
}

// Script is lab/haproxy-root.sh in this source tree.
func Script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "lab", "haproxy-root.sh")
}
