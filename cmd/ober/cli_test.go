package main

// The CLI's own tests: flag parsing, usage errors, help and prompts, run
// in process through run as main calls it. Nothing here opens a dataplane
// or starts a process; what the built binary does is tested in ../../e2e.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
)

// result is one run of the command line.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runInProcess runs one command line through run, as main does.
func runInProcess(args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// Usage errors are caught before anything is opened, so these need no
// namespace.
func TestUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "ober") // must stay untouched
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"detach"}, "detach: give --iface IF or --all"},
		{[]string{"detach", "--iface", "eth0", "--all"}, "detach: --iface and --all exclude each other"},
		{[]string{"attach"}, `required flag(s) "iface" not set`},
		{[]string{"attach", "--iface", "eth0", "--mode", "bogus"}, `--mode: invalid XDP mode "bogus" (want auto, native or generic)`},
		{[]string{"--log-level", "loud", "version"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"--bpffs-root", "", "status"}, "--bpffs-root must not be empty"},
		{[]string{"sync", "--bogus"}, "sync: unknown flag: --bogus (see 'ober sync --help')"},
		{[]string{"status", "extra"}, `unknown command "extra" for "ober status"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate" for "ober"`},
	} {
		res := runInProcess(append([]string{"--bpffs-root", missing}, tc.args...)...)
		require.Equal(t, 1, res.code, "%v\n%s", tc.args, res)
		require.Equal(t, "ober: "+tc.want+"\n", res.stderr, "%v", tc.args)
		require.Empty(t, res.stdout, "%v", tc.args)
	}
	_, err := os.Stat(missing)
	require.ErrorIs(t, err, os.ErrNotExist, "a usage error must not create anything")
}

func TestHelpHasExamples(t *testing.T) {
	for _, c := range [][]string{{}, {"attach"}, {"detach"}, {"sync"}, {"status"}, {"version"}} {
		res := runInProcess(append(c, "--help")...)
		require.Equal(t, 0, res.code, "%v\n%s", c, res)
		require.Contains(t, res.stdout, "Examples:\n  ober", "%v", c)
	}
	cmd := newRootCmd("x", &bytes.Buffer{}, &bytes.Buffer{})
	for _, sub := range cmd.Commands() {
		if sub.Name() != "help" {
			require.NotEmpty(t, sub.Example, "ober %s has no example", sub.Name())
		}
	}
}

// Every command, at every depth, has --help with examples, and an unknown
// flag is one line pointing at that help.
func TestEveryCommandHasExamplesAndFlagErrors(t *testing.T) {
	var walk func(c *cobra.Command)
	var paths [][]string
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			walk(sub)
		}
		if c.Runnable() && c.HasParent() {
			paths = append(paths, strings.Fields(strings.TrimPrefix(c.CommandPath(), "ober ")))
		}
	}
	walk(newRootCmd("x", &bytes.Buffer{}, &bytes.Buffer{}))
	require.Greater(t, len(paths), 20, "the command tree")
	for _, p := range paths {
		name := strings.Join(p, " ")
		res := runInProcess(append(p, "--help")...)
		require.Equal(t, 0, res.code, "%s --help\n%s", name, res)
		require.Contains(t, res.stdout, "Examples:\n  ", "ober %s --help has no examples", name)
		res = runInProcess(append(p, "--no-such-flag")...)
		require.Equal(t, 1, res.code, name)
		require.Equal(t, "ober: "+p[len(p)-1]+": unknown flag: --no-such-flag (see 'ober "+name+" --help')\n", res.stderr, name)
	}
}

// TestDoctorUsage: usage errors are one line, and doctor has help with
// examples.
func TestDoctorUsage(t *testing.T) {
	res := runInProcess("doctor", "extra")
	require.Equal(t, 1, res.code)
	require.Equal(t, "ober: unknown command \"extra\" for \"ober doctor\"\n", res.stderr)
	res = runInProcess("doctor", "--bogus")
	require.Equal(t, "ober: doctor: unknown flag: --bogus (see 'ober doctor --help')\n", res.stderr)
	res = runInProcess("doctor", "--help")
	require.Equal(t, 0, res.code)
	require.Contains(t, res.stdout, "Examples:\n  ober doctor")
}

func TestConfirm(t *testing.T) {
	for in, want := range map[string]bool{"y\n": true, "YES\n": true, " yes ": true, "\n": false, "no\n": false, "": false, "yep\n": false} {
		var out bytes.Buffer
		ok, err := confirm(&out, strings.NewReader(in), "proceed? [y/N] ")
		require.NoError(t, err)
		require.Equal(t, want, ok, "%q", in)
		require.Equal(t, "proceed? [y/N] ", out.String())
	}
}
