package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/lab/netsite"
)

// The lean bench topology: a client, one node, one backend.
//
//	client 10.96.1.1 --veth (N queues, XDP)-- 10.96.1.254 node, VIP 10.96.0.100
//	client 10.96.3.1 --veth (N queues)------- 10.96.3.254 node, baseline HAProxy
//	                                           10.96.2.254 node --veth-- 10.96.2.1:9000 backend
//
// The two client links are alike but for ober's XDP program, so the two
// targets differ only in what ober adds: XDP steering, sk_lookup and one
// single-threaded HAProxy per CPU against one HAProxy with as many
// threads.
var (
	vip         = netip.MustParseAddr("10.96.0.100")
	clientAddr  = netip.MustParseAddr("10.96.1.1")
	nodeFront   = netip.MustParseAddr("10.96.1.254")
	baseClient  = netip.MustParseAddr("10.96.3.1")
	baseNode    = netip.MustParseAddr("10.96.3.254")
	nodeBack    = netip.MustParseAddr("10.96.2.254")
	backendAddr = netip.MustParseAddrPort("10.96.2.1:9000")
)

// topology is the running bench site.
type topology struct {
	site                  *netsite.Site
	client, node, backend *netsite.NS
	bin, root             string
	queues                int
	backendLn             net.Listener
	backendSrv            *http.Server
	// received counts bytes the backend read from PUT bodies.
	received atomic.Int64
	dial     *netsite.Dialer
	nodeDial *netsite.Dialer
	// nodeAPI asks the node's ober, dialled in its namespace.
	nodeAPI *api.Client
	tls     *tls.Config

	steering config.Steering
	haproxy  string // the HAProxy binary of both targets
	// aa measures the baseline in both columns: no ober runs.
	aa bool
	// tune is both targets' haproxy.tune; variantTune, in an A/A run, is
	// what the first column's HAProxy (variant) sets over it.
	tune, variantTune haproxy.Tune
	// tls12 caps the client at TLS 1.2.
	tls12        bool
	oberPID      int
	instancePIDs []int
	// base is the baseline HAProxy; variant, in an A/A run with
	// variantTune, a second one that differs from it in that alone.
	base, variant plainHAProxy
}

// plainHAProxy is one HAProxy process run by the bench itself.
type plainHAProxy struct {
	pid int
	ln  *os.File
}

// buildTopology makes the namespaces, links and the backend. queues is
// the number of queues of the client links (at least the instances).
// baseXDP attaches a program that passes every packet to the node's end
// of the baseline's link, so that both links receive in XDP mode.
func buildTopology(ctx context.Context, dir, prefix, bin string, queues int, baseXDP bool) (t *topology, err error) {
	// ober's instances, and the baseline, drop to this user.
	if _, err := sysuser.Ensure(ctx, sysuser.HAProxyUser); err != nil {
		return nil, err
	}
	site, err := netsite.Open(dir, prefix)
	if err != nil {
		return nil, err
	}
	t = &topology{site: site, bin: bin, queues: queues}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.close())
		}
	}()
	for _, role := range []struct {
		ns   **netsite.NS
		name string
	}{{&t.client, "client"}, {&t.node, "node"}, {&t.backend, "backend"}} {
		if *role.ns, err = site.Namespace(ctx, role.name); err != nil {
			return t, err
		}
	}
	if t.root, err = site.BPFFS(); err != nil {
		return t, err
	}
	q := max(queues, 1)
	steps := []func() error{
		func() error { return netsite.Veth(ctx, t.client, "veth-c", t.node, "veth-n", q) },
		func() error { return netsite.Veth(ctx, t.client, "veth-c2", t.node, "veth-n2", q) },
		func() error { return netsite.Veth(ctx, t.backend, "veth-b", t.node, "veth-nb", q) },
		// ober's XDP on veth-n sends with XDP_TX; the baseline's client
		// end gets the same program, so both paths cost the same.
		func() error { return netsite.WakeOnXDPTX(t.client, "veth-c") },
		func() error { return netsite.WakeOnXDPTX(t.client, "veth-c2") },
		// A veth with an XDP program receives in NAPI and copies every
		// TCP segment the peer's stack still holds a clone of into a
		// page of its own before the program runs: a cost of the test
		// link, not of ober's program (BENCHMARKS.md, "The XDP receive
		// path of a veth"). --baseline-xdp gives the baseline's link the
		// same receive path with a program that only passes.
		func() error {
			if !baseXDP {
				return nil
			}
			return netsite.WakeOnXDPTX(t.node, "veth-n2")
		},
		func() error { return t.client.IP(ctx, "addr", "add", clientAddr.String()+"/24", "dev", "veth-c") },
		func() error { return t.client.IP(ctx, "addr", "add", baseClient.String()+"/24", "dev", "veth-c2") },
		func() error {
			return t.client.IP(ctx, "route", "add", vip.String()+"/32", "via", nodeFront.String())
		},
		func() error { return t.node.IP(ctx, "addr", "add", nodeFront.String()+"/24", "dev", "veth-n") },
		func() error { return t.node.IP(ctx, "addr", "add", baseNode.String()+"/24", "dev", "veth-n2") },
		func() error { return t.node.IP(ctx, "addr", "add", nodeBack.String()+"/24", "dev", "veth-nb") },
		func() error {
			return t.backend.IP(ctx, "addr", "add", backendAddr.Addr().String()+"/24", "dev", "veth-b")
		},
		func() error { return t.backend.IP(ctx, "route", "add", "default", "via", nodeBack.String()) },
	}
	// netsite.Veth switches checksum offload off, which XDP needs only
	// on frames it receives: from the client into the node. The other
	// directions get their offloads back (TSO needs tx checksumming), as
	// a real NIC would have them; without, every 1448-byte segment the
	// node sends is a trip through the stack of its own and the figures
	// would be the test link's, not HAProxy's.
	for _, end := range []struct {
		ns    *netsite.NS
		iface string
	}{{t.node, "veth-n"}, {t.node, "veth-n2"}, {t.node, "veth-nb"}, {t.backend, "veth-b"}} {
		steps = append(steps, func() error {
			_, err := end.ns.Run(ctx, "ethtool", "-K", end.iface, "tx", "on", "tso", "on", "gso", "on")
			return err
		})
	}
	for _, end := range []struct {
		ns    *netsite.NS
		iface string
	}{{t.node, "veth-nb"}, {t.client, "veth-c"}, {t.client, "veth-c2"}} {
		steps = append(steps, func() error {
			_, err := end.ns.Run(ctx, "ethtool", "-K", end.iface, "rx", "on")
			return err
		})
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return t, fmt.Errorf("bench topology: %w", err)
		}
	}
	if t.backendLn, err = t.backend.Listen(backendAddr.String()); err != nil {
		return t, err
	}
	t.backendSrv = &http.Server{Handler: http.HandlerFunc(t.serveBackend),
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	go func() { _ = t.backendSrv.Serve(t.backendLn) }()
	if t.dial, err = netsite.NewDialer(t.client, 32); err != nil {
		return t, err
	}
	if t.nodeDial, err = netsite.NewDialer(t.node, 1); err != nil {
		return t, err
	}
	t.nodeAPI = api.NewClient(config.DefaultAPIListen, api.ClientOptions{Dial: t.nodeDial.DialContext, Timeout: 3 * time.Second})
	return t, nil
}

// chunk is what the backend sends: its content does not matter to TLS's
// cost, and one shared buffer keeps the backend's own work small.
var chunk = make([]byte, 1<<20)

// serveBackend stands in for an S3 server: GET /bench/N answers N bytes,
// PUT /bench/... reads and drops the body, anything else answers 200 (the
// health checks). It does the least work a storage could, so that the
// figures are the ingress's.
func (t *topology) serveBackend(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/bench/")
	switch {
	case ok && r.Method == http.MethodPut:
		n, err := io.CopyBuffer(countingDiscard{&t.received}, r.Body, make([]byte, 256<<10))
		if err != nil {
			return
		}
		w.Header().Set("ETag", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusOK)
	case ok && r.Method == http.MethodGet:
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	default:
		w.WriteHeader(http.StatusOK)
	}
}

type countingDiscard struct{ n *atomic.Int64 }

func (c countingDiscard) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// nodeConfig is the bench node's configuration: one TLS service on the
// VIP, n instances pinned round robin over the CPUs.
func (t *topology) nodeConfig(n int) *config.Config {
	cpus := make([]int, n)
	for i := range cpus {
		cpus[i] = i % runtime.NumCPU()
	}
	return &config.Config{
		Node: config.Node{
			Name: "bench", Interfaces: []string{"veth-n"}, XDPMode: config.XDPModeNative,
			BPFFSRoot:  t.root + "/ober",
			RuntimeDir: filepath.Join(t.site.Dir, "node", "run"),
			StateDir:   filepath.Join(t.site.Dir, "node", "state"),
		},
		VIPs:     []config.Addr{{Addr: vip}},
		Services: []config.Service{{Name: "https", Port: 443, Mode: config.ModeTLS, TLS: &config.TLS{SelfSigned: true}}},
		Backends: config.Backends{
			Servers: []config.BackendServer{{Name: "s3a", Address: backendAddr.String()}},
			Health:  config.HealthCheck{Path: "/", Interval: config.Duration{Duration: time.Second}, Fall: 2, Rise: 1},
		},
		Instances: config.Instances{Count: n, CPUs: cpus, Steering: t.steering},
		HAProxy:   config.HAProxy{Binary: t.haproxy, Tune: config.TuneOf(t.tune)},
		Timeouts:  config.Timeouts{Drain: config.Duration{Duration: time.Second}},
	}
}

// startOber runs `ober run` on the node with n instances, pinned round
// robin over the CPUs, and waits until it is healthy.
func (t *topology) startOber(ctx context.Context, n int) error {
	text, err := config.Marshal(t.nodeConfig(n))
	if err != nil {
		return fmt.Errorf("the node's configuration: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(t.site.Dir, "node"), 0o700); err != nil {
		return err
	}
	cfg := filepath.Join(t.site.Dir, "node", "ober.yaml")
	if err := os.WriteFile(cfg, append([]byte("# written by ober bench\n"), text...), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(t.site.Dir, "node", "ober.log")
	pid, err := t.site.Spawn(t.node, "ober run", logPath, t.bin, "run", "--config", cfg)
	if err != nil {
		return err
	}
	t.oberPID = pid
	deadline := time.Now().Add(45 * time.Second)
	for {
		st, err := t.status(ctx)
		if err == nil && st.Healthy(n) {
			t.instancePIDs = t.instancePIDs[:0]
			for _, in := range st.Daemon.HAProxy.Instances {
				t.instancePIDs = append(t.instancePIDs, in.PID)
			}
			break
		}
		if !procstat.Alive(pid) {
			return fmt.Errorf("ober run exited during start:\n%s", tail(logPath, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ober run not healthy with %d instances after 45s (%v):\n%s", n, err, tail(logPath, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if t.tls == nil {
		pems, _ := filepath.Glob(filepath.Join(t.site.Dir, "node", "run", "tls", "https-*.pem"))
		if len(pems) != 1 {
			return fmt.Errorf("the node's certificate bundle: found %v", pems)
		}
		pem, err := os.ReadFile(pems[0])
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", pems[0])
		}
		// Both targets present ober's certificate for the VIP.
		t.tls = &tls.Config{RootCAs: pool, ServerName: vip.String(), NextProtos: []string{"http/1.1"}}
		if t.tls12 {
			t.tls.MaxVersion = tls.VersionTLS12
		}
	}
	return nil
}

// nodeStatus is what startOber waits for.
type nodeStatus struct{ *api.Status }

// Healthy: every instance is healthy and the node says it is.
func (s nodeStatus) Healthy(n int) bool {
	ins := s.Daemon.HAProxy.Instances
	return len(ins) == n && s.Daemon.Health.OK &&
		!slices.ContainsFunc(ins, func(in supervisor.InstanceStatus) bool { return in.State != supervisor.StateHealthy })
}

// steeringOn reads whether the node's XDP steers: with
// instances.steering auto, the node decides.
func (t *topology) steeringOn(ctx context.Context) (bool, error) {
	st, err := t.nodeAPI.Status(ctx)
	if err != nil {
		return false, fmt.Errorf("the node's steering: %w", err)
	}
	if st.DataplaneStatus == nil {
		return false, errors.New("the node's steering: the status has no dataplane part")
	}
	return st.Steering, nil
}

// onOff is "on" or "off".
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (t *topology) status(ctx context.Context) (nodeStatus, error) {
	st, err := t.nodeAPI.Status(ctx)
	return nodeStatus{st}, err
}

// stopOber stops the node's ober (SIGTERM, a graceful stop) and waits.
func (t *topology) stopOber() error {
	if t.oberPID == 0 {
		return nil
	}
	pid := t.oberPID
	t.oberPID = 0
	return stopPID(pid, "ober run", 30*time.Second)
}

func stopPID(pid int, name string, grace time.Duration) error {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for procstat.Alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("%s (pid %d) did not stop within %v: killed", name, pid, grace)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Ports of the baseline and of the variant, on the baseline's address.
const (
	basePort    uint16 = 443
	variantPort uint16 = 8443
)

// startBaseline runs the baseline HAProxy, and in an A/A run with a
// variant tune the variant beside it.
func (t *topology) startBaseline(ctx context.Context, threads int) error {
	if err := t.startPlain(ctx, &t.base, "baseline", basePort, threads, t.tune); err != nil {
		return err
	}
	if t.aa && t.variantTune != (haproxy.Tune{}) {
		return t.startPlain(ctx, &t.variant, "variant", variantPort, threads, t.tune.Over(t.variantTune))
	}
	return nil
}

// startPlain runs one HAProxy process with threads threads, rendered
// by ober's renderer from the same certificate, backend and timeouts, on
// the second client link (no XDP, no sk_lookup), at port.
func (t *topology) startPlain(ctx context.Context, h *plainHAProxy, name string, port uint16, threads int, tune haproxy.Tune) error {
	ln, err := t.node.Listen(netip.AddrPortFrom(baseNode, port).String())
	if err != nil {
		return err
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return err
	}
	h.ln = f
	pems, _ := filepath.Glob(filepath.Join(t.site.Dir, "node", "run", "tls", "https-*.pem"))
	if len(pems) != 1 {
		return fmt.Errorf("the node's certificate bundle: found %v", pems)
	}
	v, err := haproxy.DetectVersion(ctx, t.haproxy)
	if err != nil {
		return err
	}
	dir := filepath.Join(t.site.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Unprivileged in an empty root, as ober's instances are, so that the
	// two differ only in what ober adds.
	chroot := filepath.Join(dir, "empty")
	if err := os.Mkdir(chroot, 0o555); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.Chmod(chroot, 0o555); err != nil {
		return err
	}
	in := haproxy.Instance{
		Index: 0, Node: name, StatsSocket: filepath.Join(dir, "stats.sock"), Threads: threads, CPU: 0,
		Frontends: []haproxy.Frontend{{Name: "https", Mode: "tls", Port: port, PEM: pems[0], Binds: []haproxy.Bind{{FD: 3, Family: 4}},
			Pool: haproxy.DefaultPool}},
		// ober checks the backends itself, not HAProxy: the baseline has
		// no check either, so the two differ only in what ober adds.
		Pools: []haproxy.Pool{{Name: haproxy.DefaultPool, Balance: haproxy.BalanceLeastConn,
			Servers: []haproxy.Server{{Name: "s3a", Addr: backendAddr, Weight: 100}}}},
		Timeouts: haproxy.Timeouts{Connect: 5 * time.Second, Client: 5 * time.Minute, Server: 5 * time.Minute,
			HTTPRequest: 30 * time.Second, HTTPKeepAlive: time.Minute},
		MaxConn: 5000,
		Version: v,
		User:    sysuser.HAProxyUser, Group: sysuser.HAProxyUser, Chroot: chroot,
		// The node's session ticket keys: both targets resume sessions
		// the same way (the resumed handshakes' point).
		TicketKeys: plan.TicketKeysFile(filepath.Join(t.site.Dir, "node", "run")),
		Tune:       tune,
	}
	if _, err := os.Stat(in.TicketKeys); err != nil {
		return fmt.Errorf("the node's ticket keys, for the %s: %w", name, err)
	}
	text, err := haproxy.Render(in)
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, text, 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "haproxy.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", t.node.Name, t.haproxy, "-f", cfg, "-db")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s haproxy: %w", name, err)
	}
	go func() { _ = cmd.Wait() }()
	h.pid = cmd.Process.Pid
	if err := t.site.Ledger.Process(h.pid, name+" haproxy"); err != nil {
		return err
	}
	rt := haproxy.Runtime{Path: in.StatsSocket, Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		rows, err := rt.Stat(ctx)
		if err == nil && slices.ContainsFunc(haproxy.ServerStates(rows), func(st haproxy.ServerState) bool { return st.Up }) {
			return nil
		}
		if !procstat.Alive(h.pid) {
			return fmt.Errorf("%s haproxy exited:\n%s", name, tail(logPath, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s haproxy not ready after 20s (%v):\n%s", name, err, tail(logPath, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (t *topology) stopBaseline() error {
	return errors.Join(t.base.stop("baseline"), t.variant.stop("variant"))
}

func (h *plainHAProxy) stop(name string) error {
	if h.ln != nil {
		h.ln.Close()
		h.ln = nil
	}
	if h.pid == 0 {
		return nil
	}
	pid := h.pid
	h.pid = 0
	return stopPID(pid, name+" haproxy", 10*time.Second)
}

// addr is the HTTPS address of a target. In an A/A run both targets
// are the baseline, or the variant in ober's column when there is one.
func (t *topology) addr(target string) string {
	switch {
	case target == TargetOber && !t.aa:
		return vip.String() + ":443"
	case target == TargetOber && t.variant.pid != 0:
		return netip.AddrPortFrom(baseNode, variantPort).String()
	}
	return netip.AddrPortFrom(baseNode, basePort).String()
}

// close stops what the bench started and removes the site.
func (t *topology) close() error {
	var errs []error
	errs = append(errs, t.stopBaseline(), t.stopOber())
	if t.backendSrv != nil {
		t.backendSrv.Close()
	}
	if t.dial != nil {
		t.dial.Close()
	}
	if t.nodeDial != nil {
		t.nodeDial.Close()
	}
	_, err := netsite.Teardown(t.site.Dir, t.site.Prefix, 10*time.Second)
	errs = append(errs, err)
	return errors.Join(errs...)
}

// tail is the last n lines of a log file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
