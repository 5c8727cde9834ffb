package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/config"
)

// ListenUnix makes the API's unix socket at path: mode 0600, owned by
// the daemon's user (root), in a directory that it creates 0750 when
// missing and that nobody else may write to (or they could put a socket
// of theirs in its place).
//
// A socket left by a daemon that died is replaced; one that answers is
// another daemon's, and refused, as is anything that is not a socket.
// The socket is bound under a temporary name, restricted and then renamed
// into place, so that it is never reachable with a wider mode. Closing
// the listener removes the socket, unless another has replaced it.
func ListenUnix(path string) (net.Listener, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("api socket %q: %s", path, fmt.Sprintf(format, args...))
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fail("%v", err)
	}
	dst, err := os.Lstat(dir)
	if err != nil {
		return nil, fail("%v", err)
	}
	switch {
	case !dst.IsDir():
		return nil, fail("%s is not a directory", dir)
	case dst.Mode().Perm()&0o022 != 0:
		return nil, fail("directory %s has mode %04o: group or others could replace the socket (chmod go-w)", dir, dst.Mode().Perm())
	}
	if sys, ok := dst.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fail("directory %s is owned by uid %d, not %d: its owner could replace the socket", dir, sys.Uid, os.Geteuid())
	}

	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != os.ModeSocket {
			return nil, fail("exists and is not a socket: remove it if nothing needs it")
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fail("in use: another process answers on it (another ober?)")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fail("exists and cannot be tested: %v", err)
		}
		// Stale: the rename below replaces it.
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fail("%v", err)
	}

	tmp := filepath.Join(dir, "."+filepath.Base(path)+"."+strconv.Itoa(os.Getpid())+".tmp")
	_ = os.Remove(tmp) // a leftover of this pid's predecessor
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fail("%v", err)
	}
	l.SetUnlinkOnClose(false)
	abort := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, fail("%v", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return abort(err)
	}
	// In a setgid directory the socket would take the directory's group.
	if err := os.Lchown(tmp, os.Geteuid(), os.Getegid()); err != nil {
		return abort(err)
	}
	st, err := os.Lstat(tmp)
	if err != nil {
		return abort(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return abort(err)
	}
	return &unixListener{UnixListener: l, path: path, st: st}, nil
}

type unixListener struct {
	*net.UnixListener
	path string
	st   os.FileInfo
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	if st, serr := os.Lstat(l.path); serr == nil && os.SameFile(st, l.st) {
		os.Remove(l.path)
	}
	return err
}

// TLSConfig is the management listener's TLS: its certificate, TLS 1.2
// at least, and, with tls.client_ca, client certificates verified against
// it. Without a tokens file the certificate is the only way in and is
// required of every client; with one, a client may present either.
func TLSConfig(m config.APIManage) (*tls.Config, error) {
	key := m.TLS.Key
	if key == "" {
		key = m.TLS.Cert
	}
	cert, err := tls.LoadX509KeyPair(m.TLS.Cert, key)
	if err != nil {
		return nil, fmt.Errorf("api.manage.tls: %w", err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"},
	}
	if m.TLS.ClientCA != "" {
		pem, err := os.ReadFile(m.TLS.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("api.manage.tls.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("api.manage.tls.client_ca: %q: no certificate", m.TLS.ClientCA)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
		if m.TokensFile == "" {
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return c, nil
}

// TLSFiles is the management listener's TLS material, read again on
// every Reload (the daemon's reloads, SIGHUP among them): a renewed
// certificate, key or client CA is used from the next handshake on,
// without a restart. A Reload that fails keeps the material in use.
type TLSFiles struct {
	cur atomic.Pointer[tls.Config]
}

// NewTLSFiles reads m's files (TLSConfig).
func NewTLSFiles(m config.APIManage) (*TLSFiles, error) {
	t := &TLSFiles{}
	if err := t.Reload(m); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads m's files again.
func (t *TLSFiles) Reload(m config.APIManage) error {
	c, err := TLSConfig(m)
	if err != nil {
		return err
	}
	t.cur.Store(c)
	return nil
}

// Swap takes o's material: read with NewTLSFiles, so that a caller can
// check every file before changing anything.
func (t *TLSFiles) Swap(o *TLSFiles) { t.cur.Store(o.cur.Load()) }

// Config is the listener's configuration: each handshake takes the
// material read last.
func (t *TLSFiles) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.cur.Load(), nil
		},
	}
}

// ListenTLS listens on addr (host:port) and speaks TLS only: a client
// that sends plain HTTP fails the handshake and never reaches a handler
// (Go's server answers it a bare 400 that says so).
func ListenTLS(addr string, c *tls.Config) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(l, c), nil
}

// Server is an http.Server for the API's listeners: it records each
// connection's peer (ConnContext) and bounds slow clients.
func Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ConnContext:       ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// peer is the local process at the other end of a connection.
type peer struct {
	uid  int
	pid  int32
	unix bool // over a unix socket, not loopback TCP
}

type peerKey struct{}

// ConnContext is http.Server.ConnContext for the API's listeners: it
// records the uid of the process at the other end of a unix socket
// (SO_PEERCRED) or of a plain TCP connection from a loopback address
// (the owner of the client's socket in the kernel's table, for the GORB
// listener), which Handler then authenticates. TLS connections record
// nothing: their clients prove who they are with a token or certificate.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	switch c := c.(type) {
	case *net.UnixConn:
		if p, err := unixPeer(c); err == nil {
			return context.WithValue(ctx, peerKey{}, p)
		}
	case *net.TCPConn:
		local, lok := c.LocalAddr().(*net.TCPAddr)
		remote, rok := c.RemoteAddr().(*net.TCPAddr)
		if lok && rok && remote.IP.IsLoopback() {
			if uid, err := loopbackUID(remote.AddrPort(), local.AddrPort()); err == nil {
				return context.WithValue(ctx, peerKey{}, peer{uid: uid})
			}
		}
	}
	return ctx
}

func peerOf(ctx context.Context) (peer, bool) {
	p, ok := ctx.Value(peerKey{}).(peer)
	return p, ok
}

func unixPeer(c *net.UnixConn) (peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var (
		cred *unix.Ucred
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if gerr != nil {
		return peer{}, gerr
	}
	return peer{uid: int(cred.Uid), pid: cred.Pid, unix: true}, nil
}
