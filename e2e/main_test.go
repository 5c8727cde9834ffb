package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

const testVersion = "v0.0.0-test"

// pkg is what the tests build: by import path, so that the working
// directory does not matter.
const pkg = "github.com/ober-ingress/ober/cmd/ober"

// oberBin is the binary TestMain builds, stamped testVersion; the tests
// run it for real, in namespaces, as an operator would.
var oberBin string

// init keeps the main goroutine on the process's main thread and every
// other goroutine off it. Tests enter namespaces on threads locked to
// their goroutines; had one of them been the main thread, which never
// ends, /proc/PID/ns/net would name that namespace for the whole test
// process, and `ober lab down` would stop it as a process of the lab.
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ober-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Every configuration the tests load names ober-haproxy, as on a
	// bootstrapped node.
	if _, err := sysuser.Ensure(context.Background(), sysuser.HAProxyUser); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	oberBin = filepath.Join(dir, "ober")
	if err := buildOber(oberBin, testVersion); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildOber links ober into bin, stamped with version unless it is
// empty (then it is an unstamped development build, "dev").
func buildOber(bin, version string) error {
	args := []string{"build", "-o", bin}
	if version != "" {
		args = append(args, "-ldflags", "-X main.version="+version)
	}
	out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("build ober %s: %v\n%s", version, err, out)
	}
	return nil
}

// buildDev links an unstamped ober, as `go build ./cmd/ober` makes it,
// into the directory TestMain removes. Only the link step differs from
// oberBin's build, so it takes seconds.
var buildDev = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(oberBin), "ober-dev")
	return bin, buildOber(bin, "")
})

// dev runs the unstamped binary with args outside any namespace and
// returns what it did, whatever its exit code.
func dev(t *testing.T, args ...string) result {
	t.Helper()
	bin, err := buildDev()
	require.NoError(t, err)
	res, err := runBin(context.Background(), bin, nil, args...)
	require.NoError(t, err)
	return res
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runOber runs the binary with args, inside ns when ns is not nil, for
// at most a minute unless ctx has a deadline of its own. It fails only
// when the binary could not be run at all.
func runOber(ctx context.Context, ns *netnstest.NS, args ...string) (result, error) {
	return runBin(ctx, oberBin, ns, args...)
}

// runBin is runOber with another build of ober.
func runBin(ctx context.Context, bin string, ns *netnstest.NS, args ...string) (result, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	var cmd *exec.Cmd
	if ns != nil {
		cmd = ns.Exec(ctx, bin, args...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		return res, fmt.Errorf("run ober %s: %w", strings.Join(args, " "), err)
	}
	return res, nil
}

// ober runs the binary for the test and requires it to exit with code.
func ober(t *testing.T, ns *netnstest.NS, code int, args ...string) result {
	t.Helper()
	res, err := runOber(context.Background(), ns, args...)
	require.NoError(t, err)
	require.Equal(t, code, res.code, "ober %s\n%s", strings.Join(args, " "), res)
	if code != 0 {
		require.True(t, strings.HasPrefix(res.stderr, "ober: "), "errors are printed as \"ober: <message>\":\n%s", res)
	}
	return res
}

// status runs `ober status --json` and decodes it.
func status(t *testing.T, ns *netnstest.NS, root string) *api.DataplaneStatus {
	t.Helper()
	res := ober(t, ns, 0, "--bpffs-root", root, "status", "--json")
	var st api.DataplaneStatus
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &st), res.stdout)
	return &st
}

// hostsFile makes ip netns exec show names to the commands it runs in ns:
// it bind-mounts /etc/netns/<ns>/hosts over /etc/hosts.
func hostsFile(t *testing.T, ns *netnstest.NS, lines ...string) {
	t.Helper()
	_, err := os.Stat("/etc/netns")
	madeParent := errors.Is(err, os.ErrNotExist)
	dir := filepath.Join("/etc/netns", ns.Name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	t.Cleanup(func() {
		os.RemoveAll(dir)
		if madeParent {
			os.Remove("/etc/netns") // only if empty: a parallel run may use it
		}
	})
	content := "127.0.0.1 localhost\n" + strings.Join(lines, "\n") + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hosts"), []byte(content), 0o644))
}

// hasXDP asks iproute2 whether iface in ns runs an XDP program.
func hasXDP(t *testing.T, ns *netnstest.NS, iface string) bool {
	t.Helper()
	return strings.Contains(ns.IP(t, "link", "show", "dev", iface), "prog/xdp")
}
