// Package doctor checks whether a machine can run ober well: kernel, BPF
// filesystem, NICs and their XDP support, CPU, sysctls, HAProxy,
// keepalived or BGP, ports, certificates and backends. Every check
// returns pass, warn or fail, and the fix for anything short of pass.
//
// The checks read the machine through Env, so that the tests can show
// them cases this machine cannot (no BTF, a one-queue virtio NIC, a CPU
// without AES-NI) with a fake /proc and /sys tree and fake commands.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/loader"
)

// Status is the outcome of one check.
type Status string

// The outcomes. Only Fail makes `ober doctor` exit non-zero: a warning is
// something that works but costs throughput or resilience.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Result is one line of the report.
type Result struct {
	// Name says what was checked, such as "kernel" or "iface eth1".
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail is what was found.
	Detail string `json:"detail"`
	// Fix says what to do; empty for a pass.
	Fix string `json:"fix,omitempty"`
}

// Env is the machine the checks look at. DefaultEnv is this machine;
// tests replace any part of it.
type Env struct {
	// Root is the filesystem root under which /proc, /sys and /etc are
	// read: "/" in production, a fake tree in tests.
	Root string
	// Exec runs a command and returns its combined output
	// (`haproxy -vv`, `keepalived --version`, `ethtool -l IF`).
	Exec func(ctx context.Context, name string, args ...string) ([]byte, error)
	// Listen binds network ("tcp", "tcp4", "tcp6", "udp") addr and
	// returns the socket, which the check closes at once: it only asks
	// whether the port is free.
	Listen func(network, addr string) (io.Closer, error)
	// Dial connects to a backend.
	Dial func(ctx context.Context, network, addr string) (io.Closer, error)
	// HTTPGet fetches url and returns the status code; it tells ober's
	// own API apart from another program holding its port.
	HTTPGet func(ctx context.Context, url string) (int, error)
	// Addrs lists the addresses of an interface (the VRRP self check).
	Addrs func(iface string) ([]netip.Addr, error)
	// Now is the clock certificates are checked against.
	Now func() time.Time
	// Sleep waits between two readings of the transmit counters; nil
	// does not wait.
	Sleep func(time.Duration)
}

// DefaultEnv is this machine.
func DefaultEnv() Env {
	return Env{
		Root: "/",
		Exec: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
			if err != nil {
				return out, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
			}
			return out, nil
		},
		Listen: listen,
		Dial: func(ctx context.Context, network, addr string) (io.Closer, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		HTTPGet: func(ctx context.Context, url string) (int, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return 0, fmt.Errorf("GET %s: %w", url, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0, fmt.Errorf("GET %s: %w", url, err)
			}
			resp.Body.Close()
			return resp.StatusCode, nil
		},
		Addrs: interfaceAddrs,
		Now:   time.Now,
		Sleep: time.Sleep,
	}
}

// listen binds like the daemon does: not MPTCP, so that a port held by
// an MPTCP socket and one held by a plain socket look the same.
func listen(network, addr string) (io.Closer, error) {
	lc := loader.ListenConfig()
	if strings.HasPrefix(network, "udp") {
		return lc.ListenPacket(context.Background(), network, addr)
	}
	return lc.Listen(context.Background(), network, addr)
}

func interfaceAddrs(iface string) ([]netip.Addr, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", iface, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// Run runs every check. cfg is nil when there is no valid configuration;
// the checks that need one are then reported as skipped (the caller
// reports why, see ConfigResult).
func Run(ctx context.Context, env Env, cfg *config.Config) []Result {
	var rs []Result
	rs = append(rs, checkKernel(env), checkBTF(env), checkBPFFS(env, cfg))
	rs = append(rs, checkCPU(env)...)
	rs = append(rs, checkSysctls(env)...)
	rs = append(rs, checkHAProxy(ctx, env, cfg))
	if cfg == nil {
		return append(rs, Result{
			Name:   "config checks",
			Status: Warn,
			Detail: "skipped: no valid configuration (interfaces, HA, ports, certificates, backends)",
			Fix:    "fix the configuration above and run ober doctor again",
		})
	}
	rs = append(rs, checkInterfaces(ctx, env, cfg)...)
	rs = append(rs, checkTransmit(ctx, env, cfg)...)
	rs = append(rs, checkForwarding(env, cfg)...)
	rs = append(rs, checkKernelServices(env, cfg)...)
	running := daemonRunning(ctx, env, cfg)
	rs = append(rs, checkHA(ctx, env, cfg, running)...)
	rs = append(rs, checkPorts(env, cfg, running)...)
	rs = append(rs, checkCerts(env, cfg)...)
	rs = append(rs, checkBackends(ctx, env, cfg))
	return rs
}

// ConfigResult reports the outcome of loading the configuration file.
func ConfigResult(path string, cfg *config.Config, err error) Result {
	if err != nil {
		// config errors already start with "config <path>: " on every
		// line; the report names the check, so drop the repetition.
		msg := strings.ReplaceAll(err.Error(), "config "+path+": ", "")
		fix := "correct the file (README \"Configuration\" lists every key)"
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			fix = "write " + path + " (README \"Configuration\") or pass --config FILE"
		}
		return Result{Name: "config", Status: Fail, Detail: path + ": " + msg, Fix: fix}
	}
	return Result{Name: "config", Status: Pass, Detail: fmt.Sprintf("%s: %d VIPs, %d services, %d backends, HA mode %s",
		path, len(cfg.VIPs), len(cfg.Services), len(cfg.Backends.Servers), cfg.HA.Mode)}
}

// path is name under env.Root.
func (e Env) path(name string) string {
	return filepath.Join(e.Root, name)
}

// proc is the /proc under env.Root.
func (e Env) proc() procstat.FS { return procstat.Under(e.Root) }

// readTrim reads a small file under env.Root.
func (e Env) readTrim(name string) (string, error) {
	b, err := os.ReadFile(e.path(name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func (e Env) sleep(d time.Duration) {
	if e.Sleep != nil {
		e.Sleep(d)
	}
}

// exec runs a command with a bound on its time: a hung binary must not
// hang the report.
func (e Env) exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return e.Exec(ctx, name, args...)
}

// daemonRunning reports whether ober's API answers on api.listen: then
// the ports ober uses are taken by ober itself.
func daemonRunning(ctx context.Context, env Env, cfg *config.Config) bool {
	if env.HTTPGet == nil || cfg.API.Listen == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	code, err := env.HTTPGet(ctx, "http://"+localAddr(cfg.API.Listen)+"/health")
	// /health answers 200 when the node can serve and 503 with the
	// reason when not; both mean the daemon is there.
	return err == nil && (code == http.StatusOK || code == http.StatusServiceUnavailable)
}

// localAddr turns a wildcard listen address into one a client can reach.
func localAddr(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// inUse reports whether a Listen error means that something holds the
// port, as opposed to the address not being on this node.
func inUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE)
}

// notLocal reports whether a Listen error means the address is not
// configured on this node (a VIP before the daemon adds it).
func notLocal(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL)
}

// joinFix joins fixes of one result.
func joinFix(fixes []string) string {
	return strings.Join(fixes, "; ")
}
