package e2e

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/bench"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/lab/netsite"
)

// `ober bench --quick` runs the whole harness in its own namespaces,
// within its stated bound (under three minutes), and writes a JSON report
// whose every figure is positive and plausible, and a plot of both
// targets; it leaves no namespace behind.
func TestBenchQuick(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, "haproxy", "haproxy")
	netnstest.RequireTool(t, "openssl", "openssl")
	bound := bench.Options{Quick: true}.Bound()
	require.Less(t, bound, 4*time.Minute, "the quick run's own bound")

	out := t.TempDir()
	siteDir := filepath.Join(t.TempDir(), "site")
	prefix := fmt.Sprintf("%s%d-bench-", netnstest.Prefix, os.Getpid())
	t.Cleanup(func() {
		if _, err := netsite.Teardown(siteDir, prefix, 5*time.Second); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), bound+30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, oberBin, "bench", "--quick", "--out", out, "--dir", siteDir, "--prefix", prefix)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	require.NoError(t, err, "ober bench --quick\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	t.Logf("ober bench --quick took %v:\n%s", took.Round(time.Second), stdout.String())
	require.Less(t, took, 3*time.Minute)
	// Progress while it runs: one line per point.
	require.Contains(t, stdout.String(), "[12/12]")

	rep, err := bench.ReadReport(filepath.Join(out, "bench.json"))
	require.NoError(t, err)
	require.NoError(t, rep.Check())
	require.True(t, rep.Quick)
	require.Equal(t, testVersion, rep.Version)
	require.NotEmpty(t, rep.Machine.CPUModel)
	require.Positive(t, rep.Machine.Cores)
	require.Len(t, rep.Throughput, 12, "2 ops x 3 conn counts x 2 targets")
	for _, p := range rep.Throughput {
		where := fmt.Sprintf("%s %s %d conns", p.Target, p.Op, p.Conns)
		require.Positive(t, p.MachineCPUSeconds, where)
		require.GreaterOrEqual(t, p.MachineCPUSeconds, p.SoftirqCPUSeconds, where)
		// A 64 MiB object crosses the link in tens of thousands of packets.
		require.Greater(t, p.ClientTxPackets+p.ClientRxPackets, int64(10_000), where)
	}
	// ober's default, auto, on links with a receive queue per instance
	// (the quick run's 2 instances on 2-queue veths): no cpumap hop.
	require.Equal(t, "auto", rep.Settings.SteeringMode)
	require.Equal(t, []bool{false}, rep.Settings.SteeringOn, "auto with 2 receive queues for 2 instances")

	svg, err := os.ReadFile(filepath.Join(out, "bench.svg"))
	require.NoError(t, err)
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "bench.svg is not well-formed XML")
	}
	for _, want := range []string{"<svg", "ober", "haproxy", "GET", "PUT"} {
		require.Contains(t, string(svg), want)
	}

	list, err := exec.Command("ip", "netns", "list").Output()
	require.NoError(t, err)
	require.NotContains(t, string(list), prefix, "the bench left namespaces behind")
	_, err = os.Stat(siteDir)
	require.True(t, os.IsNotExist(err), "the bench left its site directory %s", siteDir)
}

// Bad flags name the flag and the value, and nothing runs.
func TestBenchFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--sizes", "64XB"}, `--sizes: "64XB" is not a positive number`},
		{[]string{"--conns", "8,0"}, `--conns: "0" is not a positive number`},
		{[]string{"--instances", "two"}, `--instances: "two" is not a positive number`},
		{[]string{"--instances", "100"}, "--instances: 100 out of range [1, 64]"},
		{[]string{"--window", "10ms"}, "--window: 10ms must be at least 100ms"},
	} {
		dir := filepath.Join(t.TempDir(), "site")
		res := ober(t, nil, 1, append([]string{"bench", "--dir", dir, "--out", t.TempDir()}, c.args...)...)
		require.Contains(t, res.stderr, c.want, "%v", c.args)
		require.Equal(t, 1, strings.Count(strings.TrimSpace(res.stderr), "\n")+1, "one line:\n%s", res.stderr)
		_, err := os.Stat(dir)
		require.True(t, os.IsNotExist(err), "%v: a site was built", c.args)
	}
}
