package e2e

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// logFixture is a daemon's log as `ober start` appends it: slog JSON
// records of the daemon and its components, and plain lines (HAProxy's
// own output, the error main printed).
const logFixture = `{"time":"2026-11-21T10:00:00.100Z","level":"INFO","msg":"haproxy found","binary":"haproxy","version":"2.6.12"}
{"time":"2026-11-21T10:00:00.200123Z","level":"INFO","msg":"instance started","part":"haproxy","instance":0,"pid":1234}
[NOTICE]   (1234) : haproxy version is 2.6.12
{"time":"2026-11-21T10:00:01Z","level":"INFO","msg":"session established","part":"bgp","peer":"10.99.1.1"}
{"time":"2026-11-21T10:00:01.500Z","level":"WARN","msg":"peer acknowledged late","part":"handoff","node":"node2","after":"1.2s"}
{"time":"2026-11-21T10:00:02Z","level":"INFO","msg":"became master","part":"vrrp","vips":2}
{"time":"2026-11-21T10:00:03Z","level":"ERROR","msg":"reload refused; the running configuration stays","err":"config /etc/ober/ober.yaml: vips[0]: \"x\" is not an IP address"}
`

// The fixture as `ober logs` shows it, line by line.
var logRendered = []string{
	`2026-11-21T10:00:00.100Z INFO  haproxy found binary=haproxy version=2.6.12`,
	`2026-11-21T10:00:00.200Z INFO  [haproxy] instance started instance=0 pid=1234`,
	`[NOTICE]   (1234) : haproxy version is 2.6.12`,
	`2026-11-21T10:00:01.000Z INFO  [bgp] session established peer=10.99.1.1`,
	`2026-11-21T10:00:01.500Z WARN  [handoff] peer acknowledged late node=node2 after=1.2s`,
	`2026-11-21T10:00:02.000Z INFO  [vrrp] became master vips=2`,
	`2026-11-21T10:00:03.000Z ERROR reload refused; the running configuration stays err="config /etc/ober/ober.yaml: vips[0]: \"x\" is not an IP address"`,
}

func lines(idx ...int) string {
	var b strings.Builder
	for _, i := range idx {
		b.WriteString(logRendered[i] + "\n")
	}
	return b.String()
}

func TestLogsFileShowsFiltersAndCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ober.log")
	require.NoError(t, os.WriteFile(path, []byte(logFixture), 0o644))
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, lines(0, 1, 2, 3, 4, 5, 6)},
		{[]string{"-n", "2"}, lines(5, 6)},
		{[]string{"-n", "all"}, lines(0, 1, 2, 3, 4, 5, 6)},
		{[]string{"-n", "0"}, ""},
		{[]string{"--service", "bgp"}, lines(3, 4)},
		{[]string{"--service", "bgp", "-n", "1"}, lines(4)}, // -n counts after the filter
		{[]string{"--service", "http"}, lines(1)},           // HAProxy's plain line has no component
		{[]string{"--service", "ha"}, lines(5)},
		{[]string{"--service", "all", "-n", "3"}, lines(4, 5, 6)},
	} {
		res := ober(t, nil, 0, append([]string{"logs", "--log-file", path}, c.args...)...)
		require.Equal(t, c.want, res.stdout, "ober logs %v", c.args)
		require.Empty(t, res.stderr)
	}
}

func TestLogsBadFlagsNameFlagAndValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ober.log")
	require.NoError(t, os.WriteFile(path, []byte(logFixture), 0o644))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-n", "ten"}, `ober: logs: -n "ten": want a number of lines, 0 or more, or all` + "\n"},
		{[]string{"-n", "-3"}, `ober: logs: -n "-3": want a number of lines, 0 or more, or all` + "\n"},
		{[]string{"--service", "dns"}, `ober: logs: --service "dns": want http, bgp, ha or all` + "\n"},
		{[]string{"--log-file", path + ".missing"}, "ober: logs: no log file at " + path + ".missing (ober start writes it; under systemd the log is in the journal)\n"},
	} {
		res := ober(t, nil, 1, append([]string{"logs", "--log-file", path}, c.args...)...)
		require.Equal(t, c.want, res.stderr, "ober logs %v", c.args)
		require.Empty(t, res.stdout)
	}
}

func TestLogsFollowPicksUpAppendsAndTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ober.log")
	require.NoError(t, os.WriteFile(path, []byte(logFixture), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, oberBin, "logs", "-f", "-n", "1", "--service", "bgp", "--log-file", path)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	got := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-got:
			require.True(t, ok, "ober logs -f ended early: %s", stderr.String())
			return l
		case <-time.After(10 * time.Second):
			t.Fatalf("no line from ober logs -f in 10s; stderr: %s", stderr.String())
			return ""
		}
	}
	appendLog := func(text string) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		_, err = f.WriteString(text)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
	require.Equal(t, logRendered[4], next(), "the last bgp line of the history")

	appendLog(`{"time":"2026-11-21T10:05:00Z","level":"INFO","msg":"instance restarted","part":"haproxy"}` + "\n" +
		`{"time":"2026-11-21T10:05:01Z","level":"INFO","msg":"route withdrawn","part":"bgp","prefix":"10.0.0.1/32"}` + "\n")
	require.Equal(t, "2026-11-21T10:05:01.000Z INFO  [bgp] route withdrawn prefix=10.0.0.1/32", next())

	// copytruncate rotation: the file starts again from nothing.
	require.NoError(t, os.Truncate(path, 0))
	time.Sleep(time.Second) // several polls see the empty file
	appendLog(`{"time":"2026-11-21T10:06:00Z","level":"INFO","msg":"after rotation","part":"handoff"}` + "\n")
	require.Equal(t, "2026-11-21T10:06:00.000Z INFO  [handoff] after rotation", next())

	// Ctrl-C ends it cleanly.
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	for range got {
	}
	err = cmd.Wait()
	require.NoError(t, err, "ober logs -f after Ctrl-C; stderr: %s", stderr.String())
	require.NotContains(t, stderr.String(), "ober: ", "no error after Ctrl-C")
	require.Contains(t, stderr.String(), "was truncated")
}

// fakeJournal makes a directory that looks like journald's and a
// journalctl on PATH that records its arguments, prints the log fixture
// and, asked for a cursor, one.
func fakeJournal(t *testing.T) (sdDir, pathEnv, calls string) {
	t.Helper()
	dir := t.TempDir()
	sdDir = filepath.Join(dir, "systemd")
	require.NoError(t, os.MkdirAll(filepath.Join(sdDir, "journal"), 0o755))
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	calls = filepath.Join(dir, "calls")
	fixture := filepath.Join(dir, "fixture")
	require.NoError(t, os.WriteFile(fixture, []byte(logFixture), 0o644))
	script := `#!/bin/sh
echo "$*" >> ` + calls + `
case " $* " in
*" --after-cursor "*) echo '{"level":"INFO","msg":"new bgp line","part":"bgp"}'; echo '{"level":"INFO","msg":"new vrrp line","part":"vrrp"}' ;;
*) cat ` + fixture + ` ;;
esac
case " $* " in *" --show-cursor "*) echo '-- cursor: s=abc;i=7' ;; esac
`
	require.NoError(t, os.WriteFile(filepath.Join(bin, "journalctl"), []byte(script), 0o755))
	return sdDir, "PATH=" + bin + ":" + os.Getenv("PATH"), calls
}

// runOberEnv runs the binary with extra environment.
func runOberEnv(env []string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, oberBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		res.code, err = exit.ExitCode(), nil
	}
	return res, err
}

// oberEnv runs the binary with extra environment and requires exit code.
func oberEnv(t *testing.T, env []string, code int, args ...string) result {
	t.Helper()
	res, err := runOberEnv(env, args...)
	require.NoError(t, err)
	require.Equal(t, code, res.code, "ober %s\n%s", strings.Join(args, " "), res)
	if code != 0 {
		require.True(t, strings.HasPrefix(res.stderr, "ober: "), "errors are printed as \"ober: <message>\":\n%s", res)
	}
	return res
}

func readCalls(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	os.Remove(path)
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func TestLogsJournald(t *testing.T) {
	sdDir, pathEnv, calls := fakeJournal(t)
	env := []string{pathEnv}

	res := oberEnv(t, env, 0, "logs", "--systemd-dir", sdDir)
	require.Equal(t, []string{"-u ober -o cat --no-pager -n 50"}, readCalls(t, calls))
	require.Equal(t, lines(0, 1, 2, 3, 4, 5, 6), res.stdout, "journal records are rendered too")

	oberEnv(t, env, 0, "logs", "--systemd-dir", sdDir, "-f", "-n", "5")
	require.Equal(t, []string{"-u ober -o cat --no-pager -n 5 -f"}, readCalls(t, calls))

	// Filtered, the history is counted here and following resumes
	// after its cursor.
	res = oberEnv(t, env, 0, "logs", "--systemd-dir", sdDir, "-f", "-n", "1", "--service", "bgp")
	require.Equal(t, []string{
		"-u ober -o cat --no-pager --show-cursor",
		"-u ober -o cat --no-pager -f --after-cursor s=abc;i=7 -n all",
	}, readCalls(t, calls))
	require.Equal(t, lines(4)+"INFO  [bgp] new bgp line\n", res.stdout)

	res = oberEnv(t, env, 0, "logs", "--systemd-dir", sdDir, "--service", "ha", "-n", "all")
	require.Equal(t, []string{"-u ober -o cat --no-pager"}, readCalls(t, calls))
	require.Equal(t, lines(5), res.stdout)

	// --direct and --log-file read the file, not the journal.
	path := filepath.Join(t.TempDir(), "ober.log")
	require.NoError(t, os.WriteFile(path, []byte(logFixture), 0o644))
	res = oberEnv(t, env, 0, "logs", "--systemd-dir", sdDir, "--log-file", path, "-n", "1")
	require.Equal(t, lines(6), res.stdout)
	require.Nil(t, readCalls(t, calls), "journalctl ran although --log-file was given")

	// Without journald, the default log file (which this machine may
	// or may not have).
	res, err := runOberEnv(env, "logs", "--systemd-dir", t.TempDir(), "-n", "1")
	require.NoError(t, err)
	require.Nil(t, readCalls(t, calls), "journalctl ran without journald")
	if res.code != 0 {
		require.Equal(t, "ober: logs: no log file at /var/log/ober/ober.log (ober start writes it; under systemd the log is in the journal)\n", res.stderr)
	}
}
