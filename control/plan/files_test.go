package plan

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
)

// WriteFiles writes what is missing, root's alone, and leaves a file in
// place that `ober sync` has changed since: the next instances load the
// lists the running ones hold.
func TestWriteFilesKeepsWhatIsThere(t *testing.T) {
	cfg := parse(t, `
vips: [10.20.0.10]
services:
  - {name: https, port: 443, mode: tls, tls: {self_signed: true}}
  - {name: http, port: 80, mode: http}
`)
	cfg.Node.RuntimeDir = t.TempDir()
	lists := map[string][]netip.Prefix{config.WhitelistFrontendHTTP: prefixes("192.0.2.0/24")}
	p, err := Build(cfg, resolved(t, cfg, lists), facts(), nil)
	require.NoError(t, err)
	require.NoError(t, p.WriteFiles())
	for _, f := range p.Files {
		got, err := os.ReadFile(f.Path)
		require.NoError(t, err)
		require.Equal(t, f.Data, got)
		st, err := os.Stat(f.Path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f.Path)
	}
	acl := p.ACLs[config.WhitelistFrontendHTTP]
	require.NoError(t, os.WriteFile(acl, []byte("192.0.2.0/24\n198.51.100.0/24\n"), 0o600))
	next, err := Build(cfg, resolved(t, cfg, lists), facts(), p)
	require.NoError(t, err)
	require.NoError(t, next.WriteFiles())
	got, err := os.ReadFile(acl)
	require.NoError(t, err)
	require.Equal(t, "192.0.2.0/24\n198.51.100.0/24\n", string(got), "the synced list stays")

	// A plan with another list gets its own file; pruning leaves only
	// the files of the plan in force.
	other, err := Build(cfg, resolved(t, cfg, map[string][]netip.Prefix{config.WhitelistFrontendHTTP: prefixes("203.0.113.0/24")}), facts(), p)
	require.NoError(t, err)
	require.NoError(t, other.WriteFiles())
	require.NotEqual(t, acl, other.ACLs[config.WhitelistFrontendHTTP])
	other.RemoveACLs(p)
	require.NoFileExists(t, other.ACLs[config.WhitelistFrontendHTTP], "a refused plan's file goes")
	require.FileExists(t, acl, "the running plan's stays")
	require.NoError(t, other.WriteFiles())
	other.PruneACLs()
	require.NoFileExists(t, acl)
	entries, err := os.ReadDir(filepath.Dir(acl))
	require.NoError(t, err)
	require.Len(t, entries, 1)
}
