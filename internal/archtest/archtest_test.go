package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/ober-ingress/ober/"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// packages lists the module's packages with their imports (tests not
// counted: a test may reach anything it exercises).
func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", "../../...")
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", errText(err))
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var all []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else {
			require.NoError(t, err)
		}
		p.ImportPath = strings.TrimPrefix(p.ImportPath, module)
		p.Imports = local(p.Imports)
		p.Deps = local(p.Deps)
		all = append(all, p)
	}
	require.NotEmpty(t, all)
	return all
}

func errText(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func local(paths []string) []string {
	var out []string
	for _, p := range paths {
		if strings.HasPrefix(p, module) {
			out = append(out, strings.TrimPrefix(p, module))
		}
	}
	return out
}

func under(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }

// rule forbids packages under from to import packages under to.
type rule struct {
	why  string
	from []string
	to   []string
}

func TestImportDirections(t *testing.T) {
	rules := []rule{
		{why: "only the CLI runs the daemon; everything else reads what it needs from plan and api",
			from: []string{"bench", "lab", "loader", "control/api", "control/config", "control/lib", "control/ops", "control/plan", "internal", "systemd"},
			to:   []string{"control/runtime/daemon"}},
		{why: "the loader knows nothing of the control plane (cmd -> control -> loader)",
			from: []string{"loader"}, to: []string{"control", "cmd", "lab", "bench", "internal"}},
		{why: "leaf libraries depend on nothing that runs or plans",
			from: []string{"control/lib"}, to: []string{"control/runtime", "control/ops", "control/plan", "control/api"}},
		{why: "the configuration is parsed and validated on its own",
			from: []string{"control/config"}, to: []string{"control/runtime", "control/ops", "control/plan", "control/api"}},
		{why: "a plan is computed, not applied: it takes the runtime components' input types only",
			from: []string{"control/plan"}, to: []string{"control/runtime/daemon", "control/runtime/tables", "control/ops", "control/api"}},
		{why: "what runs never calls the operator tools",
			from: []string{"control/runtime"}, to: []string{"control/ops"}},
		{why: "the wire types of the API are a leaf the clients can take",
			from: []string{"control/api"}, to: []string{"control/ops", "control/plan"}},
		{why: "one writer of a running node's maps: the daemon owns the tables writer",
			from: []string{"bench", "lab", "control/ops", "control/lib", "control/plan", "control/api"},
			to:   []string{"control/runtime/tables"}},
	}
	for _, p := range packages(t) {
		for _, r := range rules {
			if !slices.ContainsFunc(r.from, func(d string) bool { return under(p.ImportPath, d) }) {
				continue
			}
			for _, imp := range p.Imports {
				if slices.ContainsFunc(r.to, func(d string) bool { return under(imp, d) }) {
					t.Errorf("%s imports %s: %s (docs/ARCHITECTURE.md)", p.ImportPath, imp, r.why)
				}
			}
		}
	}
}

// The product never links a test fixture: internal/testsite is for the
// tests alone.
func TestBinaryHasNoFixtures(t *testing.T) {
	for _, p := range packages(t) {
		if p.ImportPath != "cmd/ober" {
			continue
		}
		for _, d := range p.Deps {
			require.False(t, under(d, "internal/testsite"), "ober links %s", d)
		}
		return
	}
	t.Fatal("cmd/ober not found")
}
