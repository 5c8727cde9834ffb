package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
)

// served is a listener behind Handler, in front of a handler that
// answers who it saw.
type served struct {
	calls atomic.Int32
}

func serve(t *testing.T, l net.Listener, tokens *Tokens) *served {
	t.Helper()
	s := &served{}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		json.NewEncoder(w).Encode(map[string]string{"who": Who(r.Context())})
	})
	srv := Server(Handler(next, Options{
		Tokens: func() *Tokens { return tokens },
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}))
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

// get does a request with client and returns the status and, on 200,
// the caller the server saw or, otherwise, the error message.
func get(t *testing.T, c *http.Client, method, url, secret string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var m struct{ Who, Error string }
	if json.Unmarshal(body, &m) != nil {
		return resp.StatusCode, string(body), nil
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, m.Who, nil
	}
	return resp.StatusCode, m.Error, nil
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// tlsSetup is a TLS listener with a tokens file and a client CA.
type tlsSetup struct {
	url      string
	served   *served
	serverCA *x509.CertPool
	client   tls.Certificate // from the client CA
	stranger tls.Certificate // from another CA
	manage   config.APIManage
	files    *TLSFiles
	dir      string
	otherCA  *testCA
}

func newTLS(t *testing.T, withTokens bool) *tlsSetup {
	t.Helper()
	dir := t.TempDir()
	serverCA := newCA(t, dir, "server-ca")
	_, certPath, keyPath := serverCA.issue(t, dir, "ober-node", true)
	clientCA := newCA(t, dir, "client-ca")
	client, _, _ := clientCA.issue(t, dir, "ops-laptop", false)
	otherCA := newCA(t, dir, "other-ca")
	stranger, _, _ := otherCA.issue(t, dir, "stranger", false)

	m := config.APIManage{Listen: "127.0.0.1:0", TLS: config.APITLS{Cert: certPath, Key: keyPath, ClientCA: clientCA.path}}
	var tokens *Tokens
	if withTokens {
		m.TokensFile = filepath.Join(dir, "tokens")
		require.NoError(t, os.WriteFile(m.TokensFile, []byte(tokensText), 0o600))
		var err error
		tokens, err = LoadTokens(m.TokensFile)
		require.NoError(t, err)
	}
	files, err := NewTLSFiles(m)
	require.NoError(t, err)
	l, err := ListenTLS(m.Listen, files.Config())
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(serverCA.cert)
	return &tlsSetup{
		url:      "https://" + l.Addr().String() + "/api/v1/services",
		served:   serve(t, l, tokens),
		serverCA: pool,
		client:   client,
		stranger: stranger,
		manage:   m,
		files:    files,
		dir:      dir,
		otherCA:  otherCA,
	}
}

// A renewed certificate and client CA are used from the Reload on,
// without a new listener; a Reload that fails keeps what was in use.
func TestTLSFilesReload(t *testing.T) {
	s := newTLS(t, true)
	code, _, err := get(t, s.httpClient(s.client), "GET", s.url, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)

	// The server's certificate, renewed by another CA, written over the
	// same files; and the client CA replaced.
	renewedCA := newCA(t, s.dir, "server-ca-2")
	_, cert2, key2 := renewedCA.issue(t, s.dir, "ober-node", true)
	for from, to := range map[string]string{cert2: s.manage.TLS.Cert, key2: s.manage.TLS.Key, s.otherCA.path: s.manage.TLS.ClientCA} {
		b, err := os.ReadFile(from)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(to, b, 0o600))
	}
	_, _, err = get(t, s.httpClient(s.client), "GET", s.url, "")
	require.NoError(t, err, "before the Reload the old material serves")

	require.NoError(t, s.files.Reload(s.manage))
	_, _, err = get(t, s.httpClient(s.client), "GET", s.url, "")
	require.Error(t, err, "the old server CA no longer verifies the server")
	renewed := x509.NewCertPool()
	renewed.AddCert(renewedCA.cert)
	s.serverCA = renewed
	code, who, err := get(t, s.httpClient(s.stranger), "GET", s.url, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cert stranger", who, "the new client CA admits its clients")
	_, _, err = get(t, s.httpClient(s.client), "GET", s.url, "")
	require.Error(t, err, "the old client CA's clients are refused")

	// A broken key: the Reload fails and the renewed material stays.
	require.NoError(t, os.WriteFile(s.manage.TLS.Key, []byte("not a key"), 0o600))
	err = s.files.Reload(s.manage)
	require.ErrorContains(t, err, "api.manage.tls")
	code, _, err = get(t, s.httpClient(s.stranger), "GET", s.url, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
}

// httpClient presents cert, if given, whatever CAs the server asks for.
func (s *tlsSetup) httpClient(cert ...tls.Certificate) *http.Client {
	c := &tls.Config{RootCAs: s.serverCA}
	if len(cert) > 0 {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert[0], nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: c}}
}

func TestTLSListener(t *testing.T) {
	s := newTLS(t, true)

	code, who, err := get(t, s.httpClient(), "PUT", s.url, writeSecret)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "janitor", who)

	code, msg, err := get(t, s.httpClient(), "GET", s.url, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, code)
	require.Contains(t, msg, "authentication required")

	code, msg, err = get(t, s.httpClient(), "PUT", s.url, readSecret)
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, code, msg)

	// A certificate from the client CA is a caller with write scope.
	code, who, err = get(t, s.httpClient(s.client), "DELETE", s.url, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cert ops-laptop", who)

	// One from another CA fails the handshake, token or not.
	before := s.served.calls.Load()
	_, _, err = get(t, s.httpClient(s.stranger), "GET", s.url, writeSecret)
	require.Error(t, err)
	require.Contains(t, err.Error(), "certificate")
	require.Equal(t, before, s.served.calls.Load())
}

// Plain HTTP on the TLS listener never reaches the API, not even with a
// good token: Go's server answers it a bare 400.
func TestTLSListenerRefusesPlainHTTP(t *testing.T) {
	s := newTLS(t, true)
	plain := strings.Replace(s.url, "https://", "http://", 1)
	code, body, err := get(t, http.DefaultClient, "PUT", plain, writeSecret)
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, "HTTP request to an HTTPS server")
	require.Zero(t, s.served.calls.Load())

	// An old TLS version is refused too.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: s.serverCA, MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10,
	}}}
	_, _, err = get(t, c, "GET", s.url, writeSecret)
	require.Error(t, err)
	require.Zero(t, s.served.calls.Load())
}

// Without a tokens file, a client certificate is the only way in: the
// handshake requires one.
func TestTLSListenerCertificatesOnly(t *testing.T) {
	s := newTLS(t, false)
	_, _, err := get(t, s.httpClient(), "GET", s.url, writeSecret)
	require.Error(t, err)
	code, who, err := get(t, s.httpClient(s.client), "GET", s.url, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cert ops-laptop", who)
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// asNobody runs curl as uid 65534 and returns its output (the status
// code, then the body) and error.
func asNobody(t *testing.T, args ...string) (string, error) {
	t.Helper()
	for _, bin := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s", bin)
		}
	}
	cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups",
		"curl", "-sS", "-w", " %{http_code}", "-X", "PUT"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// openDirs lets others traverse dir and its parents up to the test's
// temporary directory, so that a non-root process reaches the socket.
func openDirs(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
}

func TestUnixSocket(t *testing.T) {
	requireRoot(t)
	run := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(run, "api.sock")
	l, err := ListenUnix(path)
	require.NoError(t, err)
	s := serve(t, l, nil)

	st, err := os.Stat(run)
	require.NoError(t, err)
	require.Equal(t, os.ModeDir|0o750, st.Mode())
	st, err = os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, os.ModeSocket|0o600, st.Mode())
	require.Zero(t, st.Sys().(*syscall.Stat_t).Uid)
	require.Zero(t, st.Sys().(*syscall.Stat_t).Gid)
	entries, err := os.ReadDir(run)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary name left behind")

	code, who, err := get(t, unixClient(path), "PUT", "http://ober/api/v1/services/web", "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "uid 0", who)

	// Another user cannot even connect: the socket is 0600.
	openDirs(t, run)
	out, err := asNobody(t, "--unix-socket", path, "http://ober/api/v1/services/web")
	require.Error(t, err, out)
	require.Contains(t, out, "Couldn't connect")
	require.Equal(t, int32(1), s.calls.Load())

	// Opened by hand, it still refuses them.
	require.NoError(t, os.Chmod(path, 0o666))
	out, err = asNobody(t, "--unix-socket", path, "http://ober/api/v1/services/web")
	require.NoError(t, err, out)
	require.Contains(t, out, "only root may use the management API without a token (peer uid 65534)")
	require.True(t, strings.HasSuffix(out, " 403"), out)
	require.Equal(t, int32(1), s.calls.Load())

	// A second daemon is refused while the first serves.
	_, err = ListenUnix(path)
	require.EqualError(t, err, `api socket "`+path+`": in use: another process answers on it (another ober?)`)

	require.NoError(t, l.Close())
	_, err = os.Lstat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "closing removes the socket")
}

// A socket left by a daemon that died is replaced; a file that is not a
// socket, or a directory others may write to, is refused.
func TestUnixSocketStaleAndUnsafe(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	dead.SetUnlinkOnClose(false)
	require.NoError(t, dead.Close())
	_, err = os.Lstat(path)
	require.NoError(t, err, "the stale socket is there")

	l, err := ListenUnix(path)
	require.NoError(t, err)
	serve(t, l, nil)
	code, who, err := get(t, unixClient(path), "GET", "http://ober/", "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "uid 0", who)
	require.NoError(t, l.Close())

	require.NoError(t, os.WriteFile(path, []byte("precious"), 0o600))
	_, err = ListenUnix(path)
	require.EqualError(t, err, `api socket "`+path+`": exists and is not a socket: remove it if nothing needs it`)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "precious", string(data))

	open := filepath.Join(dir, "open")
	require.NoError(t, os.Mkdir(open, 0o777))
	require.NoError(t, os.Chmod(open, 0o777))
	_, err = ListenUnix(filepath.Join(open, "api.sock"))
	require.EqualError(t, err, `api socket "`+filepath.Join(open, "api.sock")+`": directory `+open+` has mode 0777: group or others could replace the socket (chmod go-w)`)
}

// On plain TCP from loopback (the GORB listener) the caller is the uid
// that owns the client's socket: root gets in, others get 403.
func TestLoopbackPeer(t *testing.T) {
	requireRoot(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := serve(t, l, nil)
	url := "http://" + l.Addr().String() + "/service/web"

	code, who, err := get(t, http.DefaultClient, "PUT", url, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "uid 0", who)

	out, err := asNobody(t, url)
	require.NoError(t, err, out)
	require.Contains(t, out, "(peer uid 65534)")
	require.True(t, strings.HasSuffix(out, " 403"), out)
	require.Equal(t, int32(1), s.calls.Load())
}

func TestFindUID(t *testing.T) {
	// /proc/net/tcp as a little-endian machine writes it.
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1240 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1240 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1240 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
`
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	server := netip.MustParseAddrPort("127.0.0.1:4672")
	uid, err := findUID(strings.NewReader(tcp), client, server)
	require.NoError(t, err)
	require.Equal(t, 1000, uid)
	_, err = findUID(strings.NewReader(tcp), netip.MustParseAddrPort("127.0.0.1:40001"), server)
	require.EqualError(t, err, "no such connection")

	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1240 01 00000000:00000000 00:00000000 00000000   33        0 4 1 0000000000000000 20 4 30 10 -1
`
	uid, err = findUID(strings.NewReader(tcp6), netip.MustParseAddrPort("[::1]:40000"), netip.MustParseAddrPort("[::1]:4672"))
	require.NoError(t, err)
	require.Equal(t, 33, uid)
}
