package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/ops/upgrade"
)

const newerVersion = "v9.9.9"

// buildNewer links ober again with a newer version stamp, into the
// directory TestMain removes. Only the link step differs from oberBin's
// build, so it takes seconds.
var buildNewer = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(oberBin), "ober-"+newerVersion)
	return bin, buildOber(bin, newerVersion)
})

func newerBinary(t *testing.T) []byte {
	t.Helper()
	bin, err := buildNewer()
	require.NoError(t, err)
	b, err := os.ReadFile(bin)
	require.NoError(t, err)
	return b
}

// fakeOber is a shell script standing in for a release binary: it
// answers `version` with tag, and logs any other command line to log.
func fakeOber(tag, log string, restartExit int) []byte {
	return fmt.Appendf(nil, `#!/bin/sh
for a in "$@"; do
	if [ "$a" = version ]; then echo "ober %s (go1.26.0)"; exit 0; fi
done
echo "$*" >> %s
echo "fake restart done"
exit %d
`, tag, log, restartExit)
}

// releaseServer serves a GitHub-style release description at /latest
// with the binary for this machine and SHA256SUMS; sums, when set,
// replaces the right SHA256SUMS.
type releaseServer struct {
	tag       string
	bin       []byte
	sums      string
	downloads atomic.Int32
	url       string
}

func serveRelease(t *testing.T, tag string, bin []byte) *releaseServer {
	t.Helper()
	rs := &releaseServer{tag: tag, bin: bin}
	asset := upgrade.AssetName(runtime.GOOS, runtime.GOARCH)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /latest", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"tag_name": %q, "name": "ober %s", "assets": [
			{"name": %q, "browser_download_url": "download/%s/%s"},
			{"name": "SHA256SUMS", "browser_download_url": "http://%s/download/%s/SHA256SUMS"}]}`,
			rs.tag, rs.tag, asset, rs.tag, asset, r.Host, rs.tag)
	})
	mux.HandleFunc("GET /download/{tag}/SHA256SUMS", func(w http.ResponseWriter, r *http.Request) {
		if rs.sums != "" {
			io.WriteString(w, rs.sums)
			return
		}
		sum := sha256.Sum256(rs.bin)
		fmt.Fprintf(w, "%s  ober-linux-riscv64\n%x  %s\n", strings.Repeat("0", 64), sum, asset)
	})
	mux.HandleFunc("GET /download/{tag}/"+asset, func(w http.ResponseWriter, r *http.Request) {
		rs.downloads.Add(1)
		w.Write(rs.bin)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	rs.url = srv.URL + "/latest"
	return rs
}

// installedOber puts a copy of the test binary (testVersion) where an
// operator would have it, and returns its path.
func installedOber(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sbin")
	require.NoError(t, os.Mkdir(dir, 0o755))
	b, err := os.ReadFile(oberBin)
	require.NoError(t, err)
	bin := filepath.Join(dir, "ober")
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	return bin
}

// runWith runs the test binary with extra environment, stdin from
// /dev/null (not a terminal).
func runWith(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, oberBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		res.code = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return res
}

// requireOneLineError checks the operator's view of a failure: exit 1
// and one line "ober: <message>".
func requireOneLineError(t *testing.T, res result, contains ...string) {
	t.Helper()
	require.Equal(t, 1, res.code, "%s", res)
	require.True(t, strings.HasPrefix(res.stderr, "ober: upgrade: "), "%s", res)
	require.Equal(t, 1, strings.Count(res.stderr, "\n"), "one line:\n%s", res)
	for _, c := range contains {
		require.Contains(t, res.stderr, c)
	}
}

// requireUntouched checks that bin holds exactly want, that no
// .previous was made and no download was left beside it.
func requireUntouched(t *testing.T, bin string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "%s was changed", bin)
	_, err = os.Stat(bin + ".previous")
	require.ErrorIs(t, err, os.ErrNotExist, "a .previous was made")
	requireNoLeftovers(t, bin)
}

func requireNoLeftovers(t *testing.T, bin string) {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(filepath.Dir(bin), ".ober-*"))
	require.NoError(t, err)
	require.Empty(t, left, "temporary files left beside the binary")
}

// noPkgs keeps the tests off this machine's own package state.
var noPkgs = []string{"--packages", "none", "--api", "127.0.0.1:1"}

func TestUpgradeCheck(t *testing.T) {
	rs := serveRelease(t, newerVersion, []byte("unused"))
	res := runWith(t, nil, append([]string{"upgrade", "--check", "--release-url", rs.url}, noPkgs...)...)
	require.Equal(t, 10, res.code, "%s", res)
	require.Empty(t, res.stderr)
	require.Contains(t, res.stdout, "latest release: "+newerVersion+" ("+rs.url+")")
	require.Regexp(t, `(?m)^ober\s+`+regexp.QuoteMeta(testVersion)+`\s+v9\.9\.9\s+update available$`, res.stdout)
	require.Contains(t, res.stdout, "updates available: ober v9.9.9")
	require.Zero(t, rs.downloads.Load(), "--check downloads nothing")

	rs.tag = testVersion
	res = ober(t, nil, 0, append([]string{"upgrade", "--check", "--release-url", rs.url}, noPkgs...)...)
	require.Regexp(t, `(?m)^ober\s+\S+\s+\S+\s+current$`, res.stdout)
	require.Contains(t, res.stdout, "nothing to upgrade")

	rs.tag = "v0.0.0-alpha" // a pre-release before the test's v0.0.0-test
	res = ober(t, nil, 0, append([]string{"upgrade", "--check", "--release-url", rs.url}, noPkgs...)...)
	require.Regexp(t, `(?m)^ober\s+\S+\s+v0\.0\.0-alpha\s+newer than the latest release$`, res.stdout)

	// A development build cannot be ordered: reported, not an update.
	rs.tag = newerVersion
	res = dev(t, append([]string{"upgrade", "--check", "--release-url", rs.url}, noPkgs...)...)
	require.Equal(t, 0, res.code, "%s", res)
	require.Regexp(t, `(?m)^ober\s+dev\s+v9\.9\.9\s+development build`, res.stdout)

	rs.tag = "latest"
	requireOneLineError(t, ober(t, nil, 1, append([]string{"upgrade", "--check", "--release-url", rs.url}, noPkgs...)...),
		`release `+rs.url+`: tag_name: version "latest" is not vMAJOR.MINOR.PATCH`)
}

// Network and server errors are one line naming the URL.
func TestUpgradeNetworkErrors(t *testing.T) {
	dead := "http://127.0.0.1:1/repos/ober-ingress/ober/releases/latest"
	requireOneLineError(t, ober(t, nil, 1, append([]string{"upgrade", "--check", "--release-url", dead}, noPkgs...)...),
		"GET "+dead+": ", "connection refused")

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"message": "API rate limit exceeded for 127.0.0.1.", "documentation_url": "https://docs.github.com"}`)
	}))
	defer srv.Close()
	requireOneLineError(t, ober(t, nil, 1, append([]string{"upgrade", "--check", "--release-url", srv.URL + "/latest"}, noPkgs...)...),
		"GET "+srv.URL+"/latest: 403 Forbidden: API rate limit exceeded for 127.0.0.1.")
}

func TestUpgradeReplacesBinary(t *testing.T) {
	newer := newerBinary(t)
	rs := serveRelease(t, newerVersion, newer)
	bin := installedOber(t)
	old, err := os.ReadFile(bin)
	require.NoError(t, err)
	var before syscall.Stat_t
	require.NoError(t, syscall.Stat(bin, &before))

	res := ober(t, nil, 0, append([]string{"upgrade", "-y", "--binary", bin, "--release-url", rs.url}, noPkgs...)...)
	t.Logf("%s", res.stdout)
	got, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.True(t, bytes.Equal(newer, got), "the installed binary is not the release's")
	prev, err := os.ReadFile(bin + ".previous")
	require.NoError(t, err)
	require.True(t, bytes.Equal(old, prev), ".previous is not the old binary")
	// Replaced by a rename, not rewritten in place: the old file (inode)
	// lives on as .previous, a new one took the name.
	var after, kept syscall.Stat_t
	require.NoError(t, syscall.Stat(bin, &after))
	require.NoError(t, syscall.Stat(bin+".previous", &kept))
	require.NotEqual(t, before.Ino, after.Ino)
	require.Equal(t, before.Ino, kept.Ino)
	require.Equal(t, os.FileMode(0o755), os.FileMode(after.Mode&0o777))
	requireNoLeftovers(t, bin)

	out, err := exec.Command(bin, "version").Output()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(out), "ober "+newerVersion+" (go"), "%s", out)
	sum := sha256.Sum256(newer)
	require.Contains(t, res.stdout, "sha256 "+hex.EncodeToString(sum[:])+" matches SHA256SUMS")
	require.Contains(t, res.stdout, fmt.Sprintf("to roll back: mv %s.previous %s && %s restart", bin, bin, bin))
	require.Contains(t, res.stdout, "no daemon answers on 127.0.0.1:1")

	// The new binary is the latest release: it has nothing to do.
	rs.downloads.Store(0)
	cmd := exec.Command(bin, append([]string{"upgrade", "-y", "--binary", bin, "--release-url", rs.url}, noPkgs...)...)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "nothing to upgrade: ober "+newerVersion+" is the latest release (--force reinstalls it)")
	require.Zero(t, rs.downloads.Load())
	got2, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.True(t, bytes.Equal(newer, got2))
}

// A symbolic link (/usr/local/sbin/ober -> /opt/ober/ober) stays a link;
// the file it points to is replaced.
func TestUpgradeFollowsSymlink(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	fake := fakeOber(newerVersion, log, 0)
	rs := serveRelease(t, newerVersion, fake)
	target := installedOber(t)
	link := filepath.Join(t.TempDir(), "ober")
	require.NoError(t, os.Symlink(target, link))
	ober(t, nil, 0, append([]string{"upgrade", "-y", "--binary", link, "--release-url", rs.url}, noPkgs...)...)
	dest, err := os.Readlink(link)
	require.NoError(t, err)
	require.Equal(t, target, dest)
	got, err := os.ReadFile(target)
	require.NoError(t, err)
	require.Equal(t, fake, got)
	_, err = os.Stat(target + ".previous")
	require.NoError(t, err)
}

// Every failure before the rename leaves the installed binary as it was,
// byte for byte, with no .previous and no download beside it.
func TestUpgradeRefusals(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	bin := installedOber(t)
	old, err := os.ReadFile(bin)
	require.NoError(t, err)
	run := func(rs *releaseServer, extra ...string) result {
		return ober(t, nil, 1, append(append([]string{"upgrade", "--binary", bin, "--release-url", rs.url}, noPkgs...), extra...)...)
	}

	rs := serveRelease(t, newerVersion, fakeOber(newerVersion, log, 0))
	rs.sums = strings.Repeat("ab", 32) + "  " + upgrade.AssetName(runtime.GOOS, runtime.GOARCH) + "\n"
	requireOneLineError(t, run(rs, "-y"), "checksum mismatch for "+upgrade.AssetName(runtime.GOOS, runtime.GOARCH),
		"SHA256SUMS says abab", bin+" left unchanged")
	requireUntouched(t, bin, old)

	rs.sums = strings.Repeat("ab", 32) + "  ober-linux-s390x\n"
	requireOneLineError(t, run(rs, "-y"), "SHA256SUMS of v9.9.9 lists no "+upgrade.AssetName(runtime.GOOS, runtime.GOARCH))
	requireUntouched(t, bin, old)

	// Right checksum, but the binary is not the release it claims to be.
	rs = serveRelease(t, newerVersion, fakeOber("v1.0.0", log, 0))
	requireOneLineError(t, run(rs, "-y"), "`version` says \"ober v1.0.0 (go1.26.0)\", want \"ober v9.9.9 ...\"")
	requireUntouched(t, bin, old)

	// Right checksum, but it does not run here.
	rs = serveRelease(t, newerVersion, []byte("\x7fELF not really"))
	requireOneLineError(t, run(rs, "-y"), "`version` failed: ", bin+" left unchanged")
	requireUntouched(t, bin, old)

	// An older release needs --force, and is then installed.
	rs = serveRelease(t, "v0.0.0-alpha", fakeOber("v0.0.0-alpha", log, 0))
	requireOneLineError(t, run(rs, "-y"), "the latest release v0.0.0-alpha is older than this ober v0.0.0-test: --force installs it")
	requireUntouched(t, bin, old)
	require.Zero(t, rs.downloads.Load(), "a refused release is not downloaded")

	// Without -y and without a terminal, nobody can be asked.
	rs = serveRelease(t, newerVersion, fakeOber(newerVersion, log, 0))
	requireOneLineError(t, run(rs), "stdin is not a terminal, so there is no one to ask: pass -y")
	requireUntouched(t, bin, old)

	requireOneLineError(t, ober(t, nil, 1, append([]string{"upgrade", "-y", "--binary", bin + ".nonexistent", "--release-url", rs.url}, noPkgs...)...),
		"--binary: stat "+bin+".nonexistent: no such file or directory")
	require.Zero(t, rs.downloads.Load())

	rs = serveRelease(t, "v0.0.0-alpha", fakeOber("v0.0.0-alpha", log, 0))
	ober(t, nil, 0, append([]string{"upgrade", "-y", "--force", "--binary", bin, "--release-url", rs.url}, noPkgs...)...)
	got, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.Equal(t, fakeOber("v0.0.0-alpha", log, 0), got)
}

// An unstamped build ("dev", as `go build` makes it) is not replaced
// without --force.
func TestUpgradeDevBuild(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	rs := serveRelease(t, newerVersion, fakeOber(newerVersion, log, 0))
	bin := installedOber(t)
	old, err := os.ReadFile(bin)
	require.NoError(t, err)
	args := append([]string{"upgrade", "-y", "--binary", bin, "--release-url", rs.url}, noPkgs...)
	res := dev(t, args...)
	requireOneLineError(t, res, "this ober dev is a development build, which cannot be ordered against release v9.9.9: --force installs it")
	require.NotContains(t, res.stdout, "downloaded")
	requireUntouched(t, bin, old)

	res = dev(t, append(args, "--force")...)
	require.Equal(t, 0, res.code, "%s", res)
	got, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.Equal(t, fakeOber(newerVersion, log, 0), got)
}

// With a daemon answering, the new binary's `restart` is run with the
// same --config and --bpffs-root, and its output and failure reported.
func TestUpgradeRestartsDaemon(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Status{DataplaneStatus: &api.DataplaneStatus{Root: "/x"}, Daemon: &api.DaemonStatus{Node: "n1"}})
	}))
	defer api.Close()
	addr := strings.TrimPrefix(api.URL, "http://")
	dir := t.TempDir()
	log, cfg, root := filepath.Join(dir, "log"), filepath.Join(dir, "ober.yaml"), filepath.Join(dir, "bpf")
	args := func(bin, url string, extra ...string) []string {
		return append([]string{"--config", cfg, "--bpffs-root", root, "upgrade", "-y", "--packages", "none",
			"--api", addr, "--binary", bin, "--release-url", url}, extra...)
	}

	rs := serveRelease(t, newerVersion, fakeOber(newerVersion, log, 0))
	bin := installedOber(t)
	res := ober(t, nil, 0, args(bin, rs.url)...)
	require.Contains(t, res.stdout, "fake restart done")
	logged, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, "--config "+cfg+" --bpffs-root "+root+" restart\n", string(logged))

	// --no-restart: installed, not restarted.
	require.NoError(t, os.Remove(log))
	bin = installedOber(t)
	res = ober(t, nil, 0, args(bin, rs.url, "--no-restart")...)
	require.Contains(t, res.stdout, "not restarted (--no-restart)")
	_, err = os.Stat(log)
	require.ErrorIs(t, err, os.ErrNotExist, "restart ran despite --no-restart")

	// A failing restart is an error; the new binary stays installed and
	// the message says how to roll back.
	fail := fakeOber(newerVersion, log, 3)
	rs = serveRelease(t, newerVersion, fail)
	bin = installedOber(t)
	res = ober(t, nil, 1, args(bin, rs.url)...)
	require.Contains(t, res.stdout, "fake restart done")
	require.Contains(t, res.stderr, "ober: upgrade: ober v9.9.9 is installed, but '"+bin+" restart' failed (exit status 3)")
	require.Contains(t, res.stderr, "roll back with mv "+bin+".previous "+bin)
	got, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.Equal(t, fail, got)
}

// fakeTools writes shell scripts into a directory put first in PATH;
// each logs its command line to log.
func fakeTools(t *testing.T, scripts map[string]string) (env []string, log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls.log")
	for name, body := range scripts {
		// printf, not echo: dash's echo expands the \t of a format.
		script := "#!/bin/sh\nprintf '%s\\n' \"" + name + " $*\" >> " + log + "\n" + body + "\n"
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755))
	}
	return []string{"PATH=" + dir + ":" + os.Getenv("PATH")}, log
}

func calls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestUpgradePackagesApt(t *testing.T) {
	env, log := fakeTools(t, map[string]string{
		"dpkg-query": `printf 'haproxy\tii \t2.6.12-1+deb12u1\nkeepalived\tii \t1:2.2.7-1+b2\n'`,
		"apt-cache": `cat <<EOF
haproxy:
  Installed: 2.6.12-1+deb12u1
  Candidate: 2.6.12-1+deb12u2
  Version table:
keepalived:
  Installed: 1:2.2.7-1+b2
  Candidate: 1:2.2.7-1+b2
  Version table:
EOF`,
		"apt-get": `[ -n "$FAIL_APT" ] && { echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2; exit 100; }; echo "Setting up haproxy (2.6.12-1+deb12u2) ..."`,
	})
	rs := serveRelease(t, testVersion, []byte("unused"))
	bin := installedOber(t)
	old, err := os.ReadFile(bin)
	require.NoError(t, err)
	base := []string{"upgrade", "--packages", "apt", "--api", "127.0.0.1:1", "--binary", bin, "--release-url", rs.url}

	res := runWith(t, env, append(base, "--check")...)
	require.Equal(t, 10, res.code, "a newer haproxy is an update\n%s", res)
	require.Regexp(t, `(?m)^haproxy\s+2\.6\.12-1\+deb12u1\s+2\.6\.12-1\+deb12u2\s+update available$`, res.stdout)
	require.Regexp(t, `(?m)^keepalived\s+1:2\.2\.7-1\+b2\s+1:2\.2\.7-1\+b2\s+current$`, res.stdout)
	require.Contains(t, res.stdout, "updates available: haproxy 2.6.12-1+deb12u2")
	require.Equal(t, []string{
		`dpkg-query -W -f=${Package}\t${db:Status-Abbrev}\t${Version}\n haproxy keepalived`,
		"apt-cache policy haproxy keepalived",
	}, calls(t, log), "--check only queries")

	require.NoError(t, os.Remove(log))
	res = runWith(t, env, append(base, "-y")...)
	require.Equal(t, 0, res.code, "%s", res)
	require.Contains(t, res.stdout, "Setting up haproxy")
	require.Contains(t, res.stdout, "running HAProxy instances keep the old binary until they are next reloaded or restarted")
	require.Equal(t, "apt-get install -y --only-upgrade haproxy", calls(t, log)[2], "only the package with a newer candidate")
	requireUntouched(t, bin, old) // ober itself is current

	// A failing apt-get with a newer ober: ober stays as it was.
	rs.tag, rs.bin = newerVersion, fakeOber(newerVersion, log, 0)
	res = runWith(t, append(env, "FAIL_APT=1"), append(base, "-y")...)
	require.Equal(t, 1, res.code, "%s", res)
	require.Contains(t, res.stderr, "ober: upgrade: apt-get install -y --only-upgrade haproxy: exit status 100; ober was left at "+testVersion+"\n")
	requireUntouched(t, bin, old)
}

func TestUpgradePackagesDnf(t *testing.T) {
	env, log := fakeTools(t, map[string]string{
		"rpm": `printf 'haproxy\t3.0.5-1.el10\npackage keepalived is not installed\n'; exit 1`,
		"dnf": `case "$*" in
*check-update*) printf '\nhaproxy.x86_64    3.0.7-1.el10    appstream\n'; exit 100;;
*upgrade*) echo "Upgraded: haproxy-3.0.7-1.el10.x86_64";;
esac`,
	})
	rs := serveRelease(t, testVersion, []byte("unused"))
	base := []string{"upgrade", "--packages", "dnf", "--api", "127.0.0.1:1", "--binary", installedOber(t), "--release-url", rs.url}

	res := runWith(t, env, append(base, "--check")...)
	require.Equal(t, 10, res.code, "%s", res)
	require.Regexp(t, `(?m)^haproxy\s+3\.0\.5-1\.el10\s+3\.0\.7-1\.el10\s+update available$`, res.stdout)
	require.Regexp(t, `(?m)^keepalived\s+-\s+-\s+not installed$`, res.stdout)

	require.NoError(t, os.Remove(log))
	res = runWith(t, env, append(base, "-y")...)
	require.Equal(t, 0, res.code, "%s", res)
	require.Contains(t, res.stdout, "Upgraded: haproxy-3.0.7-1.el10.x86_64")
	require.Equal(t, []string{
		`rpm -q --qf %{NAME}\t%{VERSION}-%{RELEASE}\n haproxy keepalived`,
		"dnf -q check-update haproxy keepalived",
		"dnf -y upgrade haproxy",
	}, calls(t, log))

	// Nothing newer: exit 0.
	env, _ = fakeTools(t, map[string]string{
		"rpm": `printf 'haproxy\t3.0.7-1.el10\nkeepalived\t2.2.8-6.el10\n'`,
		"dnf": `exit 0`,
	})
	res = runWith(t, env, append(base, "--check")...)
	require.Equal(t, 0, res.code, "%s", res)
	require.Regexp(t, `(?m)^keepalived\s+2\.2\.8-6\.el10\s+2\.2\.8-6\.el10\s+current$`, res.stdout)

	// dnf failing (no repository reachable) is an error, not "current".
	env, _ = fakeTools(t, map[string]string{
		"rpm": `printf 'haproxy\t3.0.7-1.el10\n'`,
		"dnf": `echo "Error: Failed to download metadata for repo 'appstream'" >&2; exit 1`,
	})
	res = runWith(t, env, append(base, "--check")...)
	requireOneLineError(t, res, "packages: dnf -q check-update haproxy keepalived: exit status 1: Error: Failed to download metadata for repo 'appstream'")
}

func TestVersionJSON(t *testing.T) {
	env, _ := fakeTools(t, map[string]string{
		"haproxy": `cat <<EOF
HAProxy version 3.2.4-1~bpo12+1 2025/08/20 - https://haproxy.org/
Built with SSL library version : OpenSSL 3.5.1
Running on SSL library version : AWS-LC 1.49.0
EOF`,
		"keepalived": `echo "Keepalived v2.3.1 (05/24,2024)" >&2`,
	})
	dir := strings.TrimPrefix(strings.SplitN(env[0], ":", 2)[0], "PATH=")
	missing := []string{"--config", filepath.Join(t.TempDir(), "none.yaml")}

	res := runWith(t, env, append(missing, "version", "--json")...)
	require.Equal(t, 0, res.code, "%s", res)
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &v), res.stdout)
	require.Equal(t, map[string]any{
		"version": testVersion, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH, "development": false,
		"haproxy":    map[string]any{"binary": filepath.Join(dir, "haproxy"), "version": "3.2.4-1~bpo12+1", "tls_library": "AWS-LC 1.49.0"},
		"keepalived": map[string]any{"binary": filepath.Join(dir, "keepalived"), "version": "2.3.1"},
	}, v)

	res = runWith(t, env, append(missing, "version")...)
	require.Equal(t, 0, res.code, "%s", res)
	require.Equal(t, fmt.Sprintf("ober %s (%s)\nplatform:   %s/%s\nhaproxy:    3.2.4-1~bpo12+1, AWS-LC 1.49.0 (%s/haproxy)\nkeepalived: 2.3.1 (%s/keepalived)\n",
		testVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH, dir, dir), res.stdout)

	// Neither installed: null, and the reason.
	empty := []string{"PATH=" + t.TempDir()}
	res = runWith(t, empty, append(missing, "version", "--json")...)
	require.Equal(t, 0, res.code, "%s", res)
	v = nil
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &v), res.stdout)
	require.Nil(t, v["haproxy"])
	require.Equal(t, "haproxy not found", v["haproxy_error"])
	require.Nil(t, v["keepalived"])
	require.Equal(t, "keepalived not found", v["keepalived_error"])

	res = dev(t, "version", "--json")
	require.Equal(t, 0, res.code, "%s", res)
	require.Contains(t, res.stdout, `"development": true`)
}
