// Package nodetest builds a one-node S3 site in network namespaces for
// end-to-end tests and benchmarks: a client host, an ober node running the
// real `ober run` with real HAProxy, and a backend host running the
// signature-checking S3 server of internal/testsite/s3server.
//
//	client 10.98.1.1 --veth-- 10.98.1.254 node (VIP 10.98.0.100 on lo) 10.98.2.254 --veth-- backend 10.98.2.1:9000
//
// Everything lives in the test's own namespaces and temporary
// directories and is removed at cleanup, also when the test fails.
package nodetest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/vishvananda/netns"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/internal/testsite/s3server"
)

// Addresses of the site.
var (
	VIP         = netip.MustParseAddr("10.98.0.100")
	ClientAddr  = netip.MustParseAddr("10.98.1.1")
	nodeFront   = netip.MustParseAddr("10.98.1.254")
	nodeBack    = netip.MustParseAddr("10.98.2.254")
	backendAddr = netip.MustParseAddrPort("10.98.2.1:9000")
)

// Credentials the S3 server accepts.
const (
	AccessKey = "OBERTESTACCESSKEY"
	SecretKey = "ober-test-secret-key-0123456789"
)

// Params shape the node's configuration.
type Params struct {
	Instances      int           // default 2
	ServedByHeader bool          // X-Served-By on responses
	Drain          time.Duration // default 3s
	// ExtraServices follow the site's https (443) and http (80).
	ExtraServices []config.Service
	// HealthInterval of the backend checks; default 200ms.
	HealthInterval time.Duration
	// NoSteering sets instances.steering to false.
	NoSteering bool
	// Timeouts are the node's timeouts, but for the drain, which is
	// Drain.
	Timeouts config.Timeouts
}

// requireHAProxyUser makes sure the machine has the system user ober's
// HAProxy instances drop to (`ober bootstrap` creates it on a node),
// creating it when it is missing.
func requireHAProxyUser(t testing.TB) {
	t.Helper()
	if _, err := sysuser.Ensure(context.Background(), sysuser.HAProxyUser); err != nil {
		t.Fatalf("the HAProxy instances' user: %v", err)
	}
}

// NewS3 is the signature-checking S3 server with the site's credentials.
func NewS3() *s3server.Server {
	return s3server.New(s3server.Options{Credentials: map[string]string{AccessKey: SecretKey}, MaxObjectSize: 1 << 30})
}

// Serve serves h over plain HTTP on addr inside ns until the test ends.
func Serve(t testing.TB, ns *netnstest.NS, addr netip.AddrPort, h http.Handler) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	srv := &http.Server{Handler: h, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// BytesPath answers Bytes(n) for "?n=<n>": a large download that is not
// in the S3 server's memory.
const BytesPath = "/bytes"

// Bytes is the first n bytes of what BytesPath sends: a pattern no
// compression, offset or splice mistake keeps intact.
func Bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = PatternByte(i)
	}
	return b
}

// PatternByte is byte i of what BytesPath sends.
func PatternByte(i int) byte { return byte(i*7 + i>>8) }

// ServeBytes answers BytesPath, streaming the pattern without holding
// it: n may be up to 4 GiB.
func ServeBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 0 || n > 4<<30 {
		http.Error(w, "n: want 0..4GiB", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(n))
	buf := make([]byte, 64<<10)
	for off := 0; off < n; off += len(buf) {
		k := min(len(buf), n-off)
		for i := range k {
			buf[i] = PatternByte(off + i)
		}
		if _, err := w.Write(buf[:k]); err != nil {
			return
		}
	}
}

// Site is the running site.
type Site struct {
	Client, Node          *netnstest.NS
	Root, Dir, ConfigPath string
	S3                    *s3server.Server
	// Wrap, when set, is a command ober run is started through, its
	// path and arguments following: setpriv with the unit's capability
	// bounding set, say.
	Wrap []string
	// ClientWake is the pass program on the client's end of the node's
	// link, which lets the node's XDP_TX frames wake it
	// (netnstest.PassXDP). Closing it gives back the kernel's wedge.
	ClientWake link.Link

	t          testing.TB
	backend    *netnstest.NS
	bin        string
	cmd        *exec.Cmd
	done       chan struct{}
	log        *LogBuffer
	clientDial *Dialer
	api        *api.Client
	extraMu    sync.Mutex
	extra      map[netip.Addr]bool
}

// New builds the namespaces and the backend; Start runs ober.
func New(t testing.TB, bin string, queues int) *Site {
	t.Helper()
	netnstest.RequireRoot(t)
	requireHAProxyUser(t)
	s := &Site{t: t, bin: bin, Dir: t.TempDir(), log: &LogBuffer{}}
	// Registered first, so it runs last, after ober's own stop.
	t.Cleanup(func() { KillStrayHAProxy(t, s.Dir+"/") })
	s.Root = netnstest.BPFFS(t) + "/ober"
	s.Client, s.Node, s.backend = netnstest.New(t, "cli"), netnstest.New(t, "node"), netnstest.New(t, "be")
	netnstest.Veth(t, s.Client, "veth-c", s.Node, "veth-n", queues)
	netnstest.Veth(t, s.backend, "veth-b", s.Node, "veth-nb", 1)
	// ober's XDP on veth-n sends with XDP_TX (RSTs, handoff).
	s.ClientWake = netnstest.PassXDP(t, s.Client, "veth-c")
	s.Client.IP(t, "addr", "add", ClientAddr.String()+"/24", "dev", "veth-c")
	s.Client.IP(t, "route", "add", VIP.String()+"/32", "via", nodeFront.String())
	s.Node.IP(t, "addr", "add", nodeFront.String()+"/24", "dev", "veth-n")
	s.Node.IP(t, "addr", "add", nodeBack.String()+"/24", "dev", "veth-nb")
	s.backend.IP(t, "addr", "add", backendAddr.Addr().String()+"/24", "dev", "veth-b")
	s.backend.IP(t, "route", "add", "default", "via", nodeBack.String())

	s.S3 = NewS3()
	Serve(t, s.backend, backendAddr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == BytesPath {
			ServeBytes(w, r)
			return
		}
		s.S3.ServeHTTP(w, r)
	}))

	s.clientDial = NewDialer(t, s.Client, 8)
	s.api = NewAPI(NewDialer(t, s.Node, 2))
	return s
}

// Config is the node's configuration for p, as its file says it: Load
// fills in the defaults.
func (s *Site) Config(p Params) *config.Config {
	if p.Instances == 0 {
		p.Instances = 2
	}
	if p.Drain == 0 {
		p.Drain = 3 * time.Second
	}
	if p.HealthInterval == 0 {
		p.HealthInterval = 200 * time.Millisecond
	}
	cpus := make([]int, p.Instances)
	for i := range cpus {
		cpus[i] = i % runtime.NumCPU()
	}
	c := &config.Config{
		Node: config.Node{
			Name: "node1", Interfaces: []string{"veth-n"}, XDPMode: config.XDPModeNative,
			BPFFSRoot: s.Root, RuntimeDir: s.Dir + "/run", StateDir: s.Dir + "/state",
		},
		VIPs: []config.Addr{{Addr: VIP}},
		Services: append([]config.Service{
			{Name: "https", Port: 443, Mode: config.ModeTLS, TLS: &config.TLS{SelfSigned: true}},
			{Name: "http", Port: 80, Mode: config.ModeHTTP},
		}, p.ExtraServices...),
		Backends: config.Backends{
			Servers: []config.BackendServer{{Name: "s3a", Address: backendAddr.String()}},
			Health:  config.HealthCheck{Path: "/", Interval: config.Duration{Duration: p.HealthInterval}, Fall: 2, Rise: 1},
		},
		Instances:  config.Instances{Count: p.Instances, CPUs: cpus},
		Timeouts:   p.Timeouts,
		Whitelists: config.Whitelists{FrontendHTTP: []string{ClientAddr.String()}},
		HAProxy:    config.HAProxy{ServedByHeader: p.ServedByHeader},
	}
	c.Timeouts.Drain = config.Duration{Duration: p.Drain}
	// Explicit either way: the tests that predict an instance from the
	// Maglev table need the hop, whatever auto would choose for the
	// site's links.
	c.Instances.Steering = config.SteeringOn
	if p.NoSteering {
		c.Instances.Steering = config.SteeringOff
	}
	return c
}

// YAML is c as the text of a configuration file; it fails the test when
// c cannot be written.
func YAML(t testing.TB, c *config.Config) string {
	t.Helper()
	b, err := config.Marshal(c)
	if err != nil {
		t.Fatalf("marshal the configuration: %v", err)
	}
	return "# written by an ober test site (internal/testsite)\n" + string(b)
}

// WriteConfig writes c as the node's configuration file.
func (s *Site) WriteConfig(c *config.Config) {
	s.t.Helper()
	s.WriteConfigText(YAML(s.t, c))
}

// WriteConfigText writes text as the node's configuration file: a file a
// test has broken on purpose.
func (s *Site) WriteConfigText(text string) {
	s.t.Helper()
	s.ConfigPath = filepath.Join(s.Dir, "ober.yaml")
	if err := os.WriteFile(s.ConfigPath, []byte(text), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// Start runs `ober run` in the node namespace with the written
// configuration and waits until /health answers 200.
func (s *Site) Start() {
	s.t.Helper()
	if s.ConfigPath == "" {
		s.WriteConfig(s.Config(Params{}))
	}
	args := append(slices.Clone(s.Wrap), s.bin, "run", "--config", s.ConfigPath, "--log-level", "debug")
	cmd := s.Node.Exec(context.Background(), args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start ober: %v", err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	s.t.Cleanup(func() {
		s.stop()
		if s.t.Failed() {
			s.t.Logf("ober's log:\n%s", s.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := s.Health()
		if err == nil && code == http.StatusOK {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("ober run exited during start: %v\n%s", cmd.ProcessState, s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("ober not healthy after 30s (last: %d %q %v)\n%s", code, body, err, s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for ober to drain and exit; it kills it
// after a minute.
func (s *Site) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Wait waits up to timeout for ober to exit and returns its exit code.
func (s *Site) Wait(timeout time.Duration) (int, error) {
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return -1, fmt.Errorf("ober still running after %v", timeout)
	}
}

// Kill kills ober with SIGKILL, as a crash would, and waits for it.
func (s *Site) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Signal sends sig to the ober process.
func (s *Site) Signal(sig os.Signal) { _ = s.cmd.Process.Signal(sig) }

// Log returns what ober wrote so far.
func (s *Site) Log() string { return s.log.String() }

// NewAPI is a client of a daemon's health, status and metrics API on its
// default address, dialled inside the node's namespace.
func NewAPI(d *Dialer) *api.Client {
	return api.NewClient(config.DefaultAPIListen, api.ClientOptions{Dial: d.DialContext})
}

// health is /health's status code and body, as the tests print them.
func health(c *api.Client) (int, string, error) {
	h, err := c.Health(context.Background())
	return h.Code, h.Body, err
}

// Health returns /health's status code and body.
func (s *Site) Health() (int, string, error) { return health(s.api) }

// Status returns the daemon's /status.
func (s *Site) Status() *api.Status {
	s.t.Helper()
	st, err := s.api.Status(context.Background())
	if err != nil {
		s.t.Fatalf("GET /status: %v", err)
	}
	return st
}

// Metrics returns /metrics as text.
func (s *Site) Metrics() string {
	s.t.Helper()
	m, err := s.api.Metrics(context.Background())
	if err != nil {
		s.t.Fatalf("GET /metrics: %v", err)
	}
	return m
}

// CertPool trusts the node's self-signed certificate.
func (s *Site) CertPool() *x509.CertPool {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, "state", "tls", "selfsigned.crt"))
	if err != nil {
		s.t.Fatalf("read the node's self-signed certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return pool
}

// TLSConfig verifies the node as the VIP.
func (s *Site) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.CertPool(), ServerName: VIP.String(), NextProtos: []string{"http/1.1"}}
}

// ClientDialer dials from the client namespace.
func (s *Site) ClientDialer() *Dialer { return s.clientDial }

// HTTPClient is an HTTPS (HTTP/1.1) client in the client namespace.
func (s *Site) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         s.clientDial.DialContext,
		TLSClientConfig:     s.TLSConfig(),
		MaxIdleConnsPerHost: 64,
	}}
}

// S3Client is a minio-go client in the client namespace, talking HTTPS
// to host (an address of the node) with the site's credentials.
func (s *Site) S3Client(host string) *minio.Client {
	s.t.Helper()
	mc, _ := s.S3ClientTransport(host)
	return mc
}

// S3ClientTransport is S3Client and its transport, whose kept-alive
// connections a test may close.
func (s *Site) S3ClientTransport(host string) (*minio.Client, *http.Transport) {
	s.t.Helper()
	tr := s.HTTPClient().Transport.(*http.Transport)
	mc, err := minio.New(host+":443", &minio.Options{
		Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Secure:       true,
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
	})
	if err != nil {
		s.t.Fatalf("S3 client for %s: %v", host, err)
	}
	return mc, tr
}

// Dialer makes connections from inside a namespace: sockets belong to
// the namespace of the thread that creates them, so each worker is a
// goroutine locked to a thread that entered the namespace.
type Dialer struct {
	reqs chan dialReq
}

type dialReq struct {
	ctx           context.Context
	network, addr string
	local         *net.TCPAddr
	res           chan dialRes
}

type dialRes struct {
	c   net.Conn
	err error
}

// NewDialer starts workers dialling in ns; they end at cleanup.
func NewDialer(t testing.TB, ns *netnstest.NS, workers int) *Dialer {
	d := &Dialer{reqs: make(chan dialReq)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
			if err := netns.Set(ns.Handle); err != nil {
				panic(fmt.Sprintf("enter %s: %v", ns.Name, err))
			}
			for {
				select {
				case <-stop:
					return
				case r := <-d.reqs:
					nd := net.Dialer{LocalAddr: r.local}
					nd.SetMultipathTCP(false)
					c, err := nd.DialContext(r.ctx, r.network, r.addr)
					r.res <- dialRes{c, err}
				}
			}
		}()
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
	return d
}

// DialContext dials addr from the namespace.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.DialFrom(ctx, network, addr, nil)
}

// DialFrom dials from a given local address (port 0: any).
func (d *Dialer) DialFrom(ctx context.Context, network, addr string, local *net.TCPAddr) (net.Conn, error) {
	r := dialReq{ctx: ctx, network: network, addr: addr, local: local, res: make(chan dialRes, 1)}
	select {
	case d.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := <-r.res
	return res.c, res.err
}

// LogBuffer collects a process's output for failure messages; it may be
// written and read at once.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Ober is `ober run` in a namespace, as the multi-node sites (ecmptest,
// vrrptest) start, stop, kill and ask it.
type Ober struct {
	t    testing.TB
	name string
	ns   *netnstest.NS
	bin  string
	// Wrap is as Site.Wrap.
	Wrap []string

	mu  sync.Mutex
	cmd *oberCmd
	api *api.Client
}

type oberCmd struct {
	pid  int
	done chan struct{}
	log  *LogBuffer
}

// NewOber prepares name's ober in ns; Start runs it.
func NewOber(t testing.TB, name string, ns *netnstest.NS, bin string) *Ober {
	requireHAProxyUser(t)
	return &Ober{t: t, name: name, ns: ns, bin: bin, api: NewAPI(NewDialer(t, ns, 2))}
}

// Start runs `ober run --config configPath` and waits until /health
// answers 200. The process is stopped at cleanup; its log is shown when
// the test failed.
func (o *Ober) Start(configPath string) {
	t := o.t
	t.Helper()
	args := append(slices.Clone(o.Wrap), o.bin, "run", "--config", configPath, "--log-level", "debug")
	cmd := o.ns.Exec(context.Background(), args[0], args[1:]...)
	log := &LogBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start ober: %v", o.name, err)
	}
	rc := &oberCmd{pid: cmd.Process.Pid, done: make(chan struct{}), log: log}
	go func() { _ = cmd.Wait(); close(rc.done) }()
	o.mu.Lock()
	o.cmd = rc
	o.mu.Unlock()
	t.Cleanup(func() {
		rc.stop(time.Minute)
		if t.Failed() {
			t.Logf("%s: ober's log:\n%s", o.name, log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := o.Health()
		if err == nil && code == http.StatusOK {
			return
		}
		select {
		case <-rc.done:
			t.Fatalf("%s: ober run exited during start\n%s", o.name, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not healthy after 30s (last: %d %q %v)\n%s", o.name, code, body, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits, killing after wait.
func (rc *oberCmd) stop(wait time.Duration) {
	select {
	case <-rc.done:
		return
	default:
	}
	_ = syscall.Kill(rc.pid, syscall.SIGTERM)
	select {
	case <-rc.done:
	case <-time.After(wait):
		_ = syscall.Kill(rc.pid, syscall.SIGKILL)
		<-rc.done
	}
}

func (o *Ober) current() *oberCmd {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cmd
}

// Stop sends SIGTERM (a graceful stop) and returns at once; Wait waits.
func (o *Ober) Stop() { _ = syscall.Kill(o.current().pid, syscall.SIGTERM) }

// Wait waits up to timeout for ober to exit.
func (o *Ober) Wait(timeout time.Duration) error {
	select {
	case <-o.current().done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s: ober still running after %v", o.name, timeout)
	}
}

// Kill kills ober with SIGKILL, as a crash would, and waits for it.
func (o *Ober) Kill() {
	rc := o.current()
	_ = syscall.Kill(rc.pid, syscall.SIGKILL)
	<-rc.done
}

// Reload sends SIGHUP: ober applies its configuration file again.
func (o *Ober) Reload() { _ = syscall.Kill(o.current().pid, syscall.SIGHUP) }

// Health returns /health's status code and body.
func (o *Ober) Health() (int, string, error) { return health(o.api) }

// Status returns the daemon's /status.
func (o *Ober) Status() (*api.Status, error) { return o.api.Status(context.Background()) }

// Metrics returns /metrics as text.
func (o *Ober) Metrics() (string, error) { return o.api.Metrics(context.Background()) }

// InstancePIDs are the PIDs of the node's HAProxy instances.
func (o *Ober) InstancePIDs() ([]int, error) {
	st, err := o.Status()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, in := range st.Daemon.HAProxy.Instances {
		if in.PID != 0 {
			out = append(out, in.PID)
		}
	}
	return out, nil
}

// Backend is the backend host's namespace, for tests that run their own
// servers there (at addresses of BackendIP).
func (s *Site) Backend() *netnstest.NS { return s.backend }

// BackendIP is the i-th further address of the backend host,
// 10.98.2.<10+i> (i < 200), added on first use: one per backend server a
// test runs.
func (s *Site) BackendIP(i int) netip.Addr {
	s.t.Helper()
	a := netip.AddrFrom4([4]byte{10, 98, 2, byte(10 + i)})
	s.addOnce(s.backend, "veth-b", a)
	return a
}

// ClientIP is the i-th further address of the client host,
// 10.98.1.<10+i> (i < 200), added on first use: for tests that need
// several clients (source hashing, access lists). Dial from it with
// ClientDialer().DialFrom.
func (s *Site) ClientIP(i int) netip.Addr {
	s.t.Helper()
	a := netip.AddrFrom4([4]byte{10, 98, 1, byte(10 + i)})
	s.addOnce(s.Client, "veth-c", a)
	return a
}

func (s *Site) addOnce(ns *netnstest.NS, dev string, a netip.Addr) {
	s.extraMu.Lock()
	defer s.extraMu.Unlock()
	if s.extra == nil {
		s.extra = map[netip.Addr]bool{}
	}
	if s.extra[a] {
		return
	}
	ns.IP(s.t, "addr", "add", a.String()+"/24", "dev", dev)
	s.extra[a] = true
}

// KillStrayHAProxy kills the HAProxy instances still running from a
// configuration under dir: ones an ober of the test started and left
// behind, as a kill -9 of it does (they would serve their connections
// for up to timeouts.max_transfer, an hour).
func KillStrayHAProxy(t testing.TB, dir string) {
	pids, err := procstat.Proc.PIDs()
	if err != nil {
		t.Logf("stray HAProxy instances not looked for: %v", err)
		return
	}
	var killed []int
	for _, pid := range pids {
		args, err := procstat.Proc.Cmdline(pid)
		// HAProxy 3.0's wrapper (lab/haproxy-root.sh) execs the trixie
		// loader, which names the binary in a later argument.
		if err != nil || len(args) < 3 || !slices.ContainsFunc(args, func(a string) bool { return filepath.Base(a) == "haproxy" }) {
			continue
		}
		if slices.ContainsFunc(args[1:], func(a string) bool { return strings.HasPrefix(a, dir) }) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
	}
	if len(killed) > 0 {
		t.Logf("killed %d HAProxy instances left running from %s: %v", len(killed), dir, killed)
	}
}
