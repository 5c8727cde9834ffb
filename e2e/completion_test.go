package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The bash script must be valid bash and complete ober's own commands and
// flag values through the binary, as a shell does on <TAB>.
func TestCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	require.NoError(t, err, "completion test needs bash: apt-get install bash")

	res := ober(t, nil, 0, "completion", "bash")
	require.Contains(t, res.stdout, "__start_ober")
	syntax := exec.Command(bash, "-n")
	syntax.Stdin = strings.NewReader(res.stdout)
	out, err := syntax.CombinedOutput()
	require.NoError(t, err, "bash -n on the completion script: %s", out)

	for _, shell := range []string{"zsh", "fish"} {
		res := ober(t, nil, 0, "completion", shell)
		require.Contains(t, res.stdout, "ober", shell)
		require.Contains(t, res.stdout, "__complete", shell)
	}
	res = ober(t, nil, 1, "completion", "tcsh")
	require.Equal(t, "ober: invalid argument \"tcsh\" for \"ober completion\"\n", res.stderr)

	// What the scripts ask the binary: "ober __complete <words>".
	words := func(args ...string) []string {
		res := ober(t, nil, 0, append([]string{"__complete"}, args...)...)
		lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
		var got []string
		for _, l := range lines[:len(lines)-1] { // the last line is the directive
			got = append(got, strings.SplitN(l, "\t", 2)[0])
		}
		return got
	}
	require.Subset(t, words("st"), []string{"status"})
	require.Equal(t, []string{"debug", "info", "warn", "error"}, words("--log-level", ""))
	require.Equal(t, []string{"bash", "zsh", "fish"}, words("completion", ""))
}
