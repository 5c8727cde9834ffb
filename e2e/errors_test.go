package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// An operator who gets something wrong reads one line that names the
// problem: no usage dump, no stack trace, no bare "exit status 1". This
// sweeps every command through the real binary with a configuration and
// a pin root that do not exist.
func TestOperatorErrorsAreOneLine(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "missing", "ober.yaml")
	pins := filepath.Join(dir, "bpf", "ober")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"test"}, "ober: test: 1 of 1 checks failed"},
		{[]string{"doctor"}, "ober: doctor: 1 check failed"},
		{[]string{"start", "--direct"}, "ober: start: config " + cfg + ": no such file"},
		{[]string{"restart", "--direct"}, "ober: restart: config " + cfg + ": no such file"},
		{[]string{"status", "--api", "127.0.0.1:1"}, "ober: status: no daemon answers on 127.0.0.1:1"},
		{[]string{"sync", "--frontend-http", "10.0.0.1"}, "ober: sync: --config " + cfg + ": no such file or directory"},
		{[]string{"logs", "--log-file", filepath.Join(dir, "ober.log")}, "ober: logs: no log file at " + filepath.Join(dir, "ober.log")},
		{[]string{"config", "-y"}, "ober: config: --interfaces is required (no value in " + cfg + ")"},
		{[]string{"config", "-y", "--dry-run", "--interfaces", "lo", "--vips", "10.0.0.300"}, "ober: config: --vips: not an IP address: 10.0.0.300"},
		{[]string{"upgrade", "--check", "--release-url", "http://127.0.0.1:1/latest"}, "ober: upgrade: GET http://127.0.0.1:1/latest: "},
		{[]string{"uninstall", "-y"}, "ober: uninstall: --bpffs-root " + pins + ": "},
		{[]string{"bootstrap", "--root", filepath.Join(dir, "nope")}, "ober: bootstrap: --root " + filepath.Join(dir, "nope") + ": "},
		{[]string{"run"}, "ober: config " + cfg + ": no such file"},
		{[]string{"run", "--check"}, "ober: config " + cfg + ": no such file"},
		{[]string{"attach", "--iface", "nope0"}, `ober: attach: no interface "nope0"`},
		{[]string{"detach", "--iface", "nope0"}, "ober: detach nope0: open dataplane: no dataplane pinned at " + pins},
		{[]string{"completion", "tcsh"}, `ober: invalid argument "tcsh" for "ober completion"`},
		{[]string{"logs", "--service", "dns"}, `ober: logs: --service "dns"`},
	} {
		res, err := runOber(context.Background(), nil, append([]string{"--config", cfg, "--bpffs-root", pins}, tc.args...)...)
		require.NoError(t, err)
		name := strings.Join(tc.args, " ")
		require.NotEqual(t, 0, res.code, "%s\n%s", name, res)
		require.Equal(t, 1, strings.Count(res.stderr, "\n"), "%s: one line on stderr\n%s", name, res)
		require.True(t, strings.HasPrefix(res.stderr, tc.want), "%s: want a line starting %q\n%s", name, tc.want, res)
		require.NotContains(t, res.stderr, "goroutine", name)
	}
}
