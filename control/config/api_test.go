package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The management socket follows node.runtime_dir unless set, and "off"
// turns it off; the TCP and GORB listeners stay off unless set.
func TestAPIDefaults(t *testing.T) {
	c, err := parse([]byte(minimalYAML), nodeA())
	require.NoError(t, err)
	require.Equal(t, API{Listen: "127.0.0.1:8404", Socket: "/run/ober/api.sock"}, c.API)

	c, err = parse([]byte(strings.Replace(minimalYAML, "interfaces: [eth0]", "interfaces: [eth0]\n  runtime_dir: /srv/ober/run", 1)), nodeA())
	require.NoError(t, err)
	require.Equal(t, "/srv/ober/run/api.sock", c.API.Socket)

	c, err = parse([]byte(minimalYAML+"api:\n  socket: \"off\"\n"), nodeA())
	require.NoError(t, err)
	require.Equal(t, APISocketOff, c.API.Socket)
}

// apiFiles are a listener certificate, a CA and a tokens file that pass.
type apiFiles struct{ dir, cert, key, ca, tokens string }

func writeAPIFiles(t *testing.T) apiFiles {
	t.Helper()
	dir := t.TempDir()
	cert, key := writeCert(t, dir, certOpts{cn: "ober.example.com"})
	ca, _ := writeCert(t, dir, certOpts{cn: "clients.example.com"})
	tokens := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("janitor write 0123456789abcdef0123\n"), 0o600))
	return apiFiles{dir: dir, cert: cert, key: key, ca: ca, tokens: tokens}
}

func TestAPIManageValid(t *testing.T) {
	f := writeAPIFiles(t)
	for name, m := range map[string]APIManage{
		"tokens":      {Listen: "0.0.0.0:8443", TLS: APITLS{Cert: f.cert, Key: f.key}, TokensFile: f.tokens},
		"client CA":   {Listen: "[::]:8443", TLS: APITLS{Cert: f.cert, Key: f.key, ClientCA: f.ca}},
		"both":        {Listen: "192.0.2.1:8443", TLS: APITLS{Cert: f.cert, Key: f.key, ClientCA: f.ca}, TokensFile: f.tokens},
		"not managed": {},
	} {
		t.Run(name, func(t *testing.T) {
			c := baseConfig()
			c.API.Manage = m
			c.API.GORBCompat = "127.0.0.1:4672"
			require.NoError(t, c.Validate())
		})
	}
}

// Every way to get the management listeners wrong is named with its
// field, its value and why.
func TestAPIErrors(t *testing.T) {
	f := writeAPIFiles(t)
	groupReadable := filepath.Join(f.dir, "tokens-640")
	require.NoError(t, os.WriteFile(groupReadable, []byte("janitor write 0123456789abcdef0123\n"), 0o640))
	require.NoError(t, os.Chmod(groupReadable, 0o640)) // whatever the umask
	worldReadable := filepath.Join(f.dir, "tokens-604")
	require.NoError(t, os.WriteFile(worldReadable, []byte("janitor write 0123456789abcdef0123\n"), 0o600))
	require.NoError(t, os.Chmod(worldReadable, 0o604))
	missing := filepath.Join(f.dir, "nope")
	tlsOK := APITLS{Cert: f.cert, Key: f.key}

	for _, tt := range []struct {
		name string
		set  func(a *API)
		want string
	}{
		{"socket relative", func(a *API) { a.Socket = "api.sock" },
			`api.socket: "api.sock": must be an absolute path, or off`},
		{"socket directory", func(a *API) { a.Socket = "/run/ober/" },
			`api.socket: "/run/ober/": must name a file, not a directory`},
		{"socket too long", func(a *API) { a.Socket = "/" + strings.Repeat("a", 107) },
			`api.socket: "/` + strings.Repeat("a", 107) + `": longer than 107 bytes, the limit of a unix socket's path`},
		{"manage without TLS", func(a *API) { a.Manage = APIManage{Listen: "0.0.0.0:8443", TokensFile: f.tokens} },
			`api.manage.tls.cert: required when api.manage.listen is set: the TCP listener speaks HTTPS only`},
		{"manage without authentication", func(a *API) { a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: tlsOK} },
			`api.manage.listen: "0.0.0.0:8443": needs api.manage.tokens_file or api.manage.tls.client_ca: every request over TCP must authenticate`},
		{"manage not host:port", func(a *API) { a.Manage = APIManage{Listen: "8443", TLS: tlsOK, TokensFile: f.tokens} },
			`api.manage.listen: "8443": must be host:port (such as 0.0.0.0:8443)`},
		{"manage host name", func(a *API) { a.Manage = APIManage{Listen: "ober.example.com:8443", TLS: tlsOK, TokensFile: f.tokens} },
			`api.manage.listen: "ober.example.com:8443": host must be an IP address (0.0.0.0 or [::] for all addresses)`},
		{"manage same port as status", func(a *API) { a.Manage = APIManage{Listen: "0.0.0.0:8404", TLS: tlsOK, TokensFile: f.tokens} },
			`api.manage.listen: "0.0.0.0:8404": same port as api.listen ("127.0.0.1:8404")`},
		{"tokens group readable", func(a *API) { a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: tlsOK, TokensFile: groupReadable} },
			`api.manage.tokens_file: "` + groupReadable + `": mode 0640 lets group or others read or change the tokens: chmod 600 it`},
		{"tokens world readable", func(a *API) { a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: tlsOK, TokensFile: worldReadable} },
			`api.manage.tokens_file: "` + worldReadable + `": mode 0604 lets group or others read or change the tokens: chmod 600 it`},
		{"tokens missing", func(a *API) { a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: tlsOK, TokensFile: missing} },
			`api.manage.tokens_file: "` + missing + `": no such file`},
		{"tokens relative", func(a *API) { a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: tlsOK, TokensFile: "tokens"} },
			`api.manage.tokens_file: "tokens": must be an absolute path`},
		{"tokens a directory", func(a *API) { a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: tlsOK, TokensFile: f.dir} },
			`api.manage.tokens_file: "` + f.dir + `": is a directory`},
		{"cert missing", func(a *API) {
			a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: APITLS{Cert: missing}, TokensFile: f.tokens}
		}, `api.manage.tls.cert: "` + missing + `": no such file`},
		{"client CA missing", func(a *API) {
			a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: APITLS{Cert: f.cert, Key: f.key, ClientCA: missing}}
		}, `api.manage.tls.client_ca: "` + missing + `": no such file`},
		{"client CA not PEM", func(a *API) {
			a.Manage = APIManage{Listen: "0.0.0.0:8443", TLS: APITLS{Cert: f.cert, Key: f.key, ClientCA: f.tokens}}
		}, `api.manage.tls.client_ca: "` + f.tokens + `": no PEM CERTIFICATE block`},
		{"settings without a listener", func(a *API) { a.Manage = APIManage{TokensFile: f.tokens} },
			`api.manage.tokens_file: "` + f.tokens + `": has no effect without api.manage.listen (the TCP listener is off)`},
		{"gorb not loopback", func(a *API) { a.GORBCompat = "0.0.0.0:4672" },
			`api.gorb_compat: "0.0.0.0:4672": must be a loopback address (127.0.0.1 or [::1]): GORB's clients send no credentials, so only root on this node is let in`},
		{"gorb not host:port", func(a *API) { a.GORBCompat = "4672" },
			`api.gorb_compat: "4672": must be host:port (such as 127.0.0.1:4672)`},
		{"gorb port 0", func(a *API) { a.GORBCompat = "127.0.0.1:0" },
			`api.gorb_compat: "127.0.0.1:0": port must be 1-65535`},
		{"gorb same port as status", func(a *API) { a.GORBCompat = "127.0.0.1:8404" },
			`api.gorb_compat: "127.0.0.1:8404": same port as api.listen ("127.0.0.1:8404")`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tt.set(&c.API)
			require.EqualError(t, c.Validate(), tt.want)
		})
	}
}
