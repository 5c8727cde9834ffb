package config

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// editBase is a valid file with notes an operator would not want to lose.
const editBase = `# ober on ingress-a
node:
    interfaces: [eth0]   # the uplink

vips: [10.0.0.1, fd00::1]
services:
    - name: http
      mode: http
      port: 80
backends:
    servers:
        - address: 10.1.0.2:7480

# Who may use plain HTTP.
whitelists:
    frontend_http:   # clients
        # the compute partition
        - compute[001-064].hpc.example    # Slurm hostlist
        - 10.40.0.0/22
        # the login nodes
        - "login[1-2]"
    backend_http: []

# The API stays local.
api:
    listen: 127.0.0.1:8404
`

func TestEditWhitelistsKeepsEverythingElse(t *testing.T) {
	out, err := EditWhitelists([]byte(editBase), map[string][]string{
		WhitelistFrontendHTTP: {"login[1-2]", "client[01-40]", "2001:db8:c::/48", "compute[001-064].hpc.example"},
	})
	require.NoError(t, err)
	// Kept items keep their lines and the comments above them, in the new
	// order; the removed item goes; new items take the first item's style.
	require.Equal(t, strings.Replace(editBase, `        # the compute partition
        - compute[001-064].hpc.example    # Slurm hostlist
        - 10.40.0.0/22
        # the login nodes
        - "login[1-2]"
`, `        # the login nodes
        - "login[1-2]"
        - client[01-40]
        - 2001:db8:c::/48
        # the compute partition
        - compute[001-064].hpc.example    # Slurm hostlist
`, 1), string(out))
	c, err := parse(out, nodeA())
	require.NoError(t, err)
	require.Equal(t, []string{"login[1-2]", "client[01-40]", "2001:db8:c::/48", "compute[001-064].hpc.example"}, c.Whitelists.FrontendHTTP)
	require.Empty(t, c.Whitelists.BackendHTTP)
}

func TestEditWhitelistsShapes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string
		lists      map[string][]string
		want       string
		wantErrSub string
	}{{
		name:  "no whitelists: appended, in the file's indentation",
		in:    "node:\n    interfaces: [eth0]\n# end\n",
		lists: map[string][]string{WhitelistRouters: {"tor[1-2]"}},
		want:  "node:\n    interfaces: [eth0]\n# end\n\nwhitelists:\n    routers:\n        - tor[1-2]\n",
	}, {
		name:  "no newline at the end",
		in:    "node:\n  interfaces: [eth0]",
		lists: map[string][]string{WhitelistBackendHTTP: {"10.0.0.0/8"}},
		want:  "node:\n  interfaces: [eth0]\nwhitelists:\n  backend_http:\n    - 10.0.0.0/8\n",
	}, {
		name:  "list missing from whitelists: added at its end, before the notes that follow",
		in:    "whitelists:\n  routers:\n  - 10.0.0.1\n\n# api\napi: {}\n",
		lists: map[string][]string{WhitelistFrontendHTTP: {"a", "b"}},
		want:  "whitelists:\n  routers:\n  - 10.0.0.1\n  frontend_http:\n    - a\n    - b\n\n# api\napi: {}\n",
	}, {
		name:  "empty whitelists",
		in:    "whitelists:   # none yet\napi: {}\n",
		lists: map[string][]string{WhitelistFrontendHTTP: {"a"}},
		want:  "whitelists:   # none yet\n  frontend_http:\n    - a\napi: {}\n",
	}, {
		name:  "whitelists: {}",
		in:    "whitelists: {}\n",
		lists: map[string][]string{WhitelistFrontendHTTP: {}},
		want:  "whitelists:\n  frontend_http: []\n",
	}, {
		name:  "flow list stays flow, comment kept",
		in:    "whitelists:\n  routers: [10.0.0.1, 10.0.0.2]  # tors\n  backend_http: [x]\n",
		lists: map[string][]string{WhitelistRouters: {"10.0.0.2", "tor[3-4]"}},
		want:  "whitelists:\n  routers: [10.0.0.2, 'tor[3-4]']  # tors\n  backend_http: [x]\n",
	}, {
		name:  "empty flow list becomes a block list",
		in:    "whitelists:\n  routers: []\n",
		lists: map[string][]string{WhitelistRouters: {"10.0.0.2"}},
		want:  "whitelists:\n  routers:\n    - 10.0.0.2\n",
	}, {
		name:  "null list",
		in:    "whitelists:\n  routers: ~ # later\n  backend_http: [x]\n",
		lists: map[string][]string{WhitelistRouters: {"r1"}},
		want:  "whitelists:\n  routers: # later\n    - r1\n  backend_http: [x]\n",
	}, {
		name:  "emptied block list",
		in:    "whitelists:\n  frontend_http:\n    - a\n    - b # two\n  routers: [r]\n",
		lists: map[string][]string{WhitelistFrontendHTTP: nil},
		want:  "whitelists:\n  frontend_http: []\n  routers: [r]\n",
	}, {
		name:  "several lists at once",
		in:    "whitelists:\n  frontend_http:\n    - a\n  routers:\n    - r\n",
		lists: map[string][]string{WhitelistFrontendHTTP: {"a", "c"}, WhitelistRouters: {"s"}, WhitelistBackendHTTP: {"b"}},
		want:  "whitelists:\n  frontend_http:\n    - a\n    - c\n  routers:\n    - s\n  backend_http:\n    - b\n",
	}, {
		name:  "CRLF line ends",
		in:    "whitelists:\r\n  routers:\r\n    - r\r\napi: {}\r\n",
		lists: map[string][]string{WhitelistRouters: {"r", "s"}},
		want:  "whitelists:\r\n  routers:\r\n    - r\r\n    - s\r\napi: {}\r\n",
	}, {
		name:  "values that need quotes",
		in:    "whitelists:\n  routers:\n    - r\n",
		lists: map[string][]string{WhitelistRouters: {"[1-2]x", "yes", "10"}},
		want:  "whitelists:\n  routers:\n    - '[1-2]x'\n    - \"yes\"\n    - \"10\"\n",
	}, {
		name:       "anchor",
		in:         "x: &l [a]\nwhitelists:\n  routers: *l\n",
		lists:      map[string][]string{WhitelistRouters: {"b"}},
		wantErrSub: "whitelists.routers: line 3: whitelists.routers uses a YAML anchor or alias; edit the file by hand",
	}, {
		name:       "merge",
		in:         "base: &b {routers: [a]}\nwhitelists:\n  <<: *b\n",
		lists:      map[string][]string{WhitelistRouters: {"b"}},
		wantErrSub: `line 3: a YAML merge (<<) next to "routers"; edit the file by hand`,
	}, {
		name:       "flow mapping",
		in:         "whitelists: {routers: [a]}\n",
		lists:      map[string][]string{WhitelistRouters: {"b"}},
		wantErrSub: "whitelists is written in flow style",
	}, {
		name:       "not a mapping",
		in:         "- a\n",
		lists:      map[string][]string{WhitelistRouters: {"b"}},
		wantErrSub: "the file is not a mapping of keys",
	}, {
		name:       "unknown list",
		in:         "whitelists: {}\n",
		lists:      map[string][]string{"clients": {"b"}},
		wantErrSub: `unknown whitelist "clients" (want frontend-http, routers or backend-http)`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := EditWhitelists([]byte(tc.in), tc.lists)
			if tc.wantErrSub != "" {
				require.ErrorContains(t, err, tc.wantErrSub)
				require.NotContains(t, err.Error(), "\n")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, string(out))
		})
	}
}

// The example in the repository is what operators start from.
func TestEditWhitelistsExample(t *testing.T) {
	data, err := os.ReadFile("testdata/example.yaml")
	require.NoError(t, err)
	out, err := EditWhitelists(data, map[string][]string{
		WhitelistFrontendHTTP: {"compute[001-064].hpc.example", "10.41.0.0/22"},
		WhitelistBackendHTTP:  {"rgw[1-3].storage.example"},
	})
	require.NoError(t, err)
	want := strings.Replace(string(data), "    - 10.40.0.0/22\n", "    - 10.41.0.0/22\n", 1)
	want = strings.Replace(want, "  backend_http: []\n", "  backend_http:\n    - rgw[1-3].storage.example\n", 1)
	require.Equal(t, want, string(out))
}

func TestSettleWhitelist(t *testing.T) {
	c := baseConfig()
	ps := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16")}
	got, err := c.SettleWhitelist(WhitelistFrontendHTTP, ps)
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, got)

	c.HA.Mode = HAModeBGP
	c.HA.BGP = &BGP{Peers: []BGPPeer{{Address: addr("192.0.2.1")}, {Address: addr("2001:db8::1")}}}
	got, err = c.SettleWhitelist(WhitelistRouters, nil)
	require.NoError(t, err, "empty means the peers")
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::1/128")}, got)
	c.Whitelists.Routers = []string{"192.0.2.0/24"}
	_, err = c.SettleWhitelist(WhitelistRouters, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
	require.EqualError(t, err, "ha.bgp.peers[1].address: 2001:db8::1: is not in whitelists.routers: "+
		"XDP would drop its BGP and BFD packets (add it, or leave the list empty to admit exactly the peers)")
}
