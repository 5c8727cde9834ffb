// Package netsite builds long-lived sites of network namespaces outside
// of tests: the lab and the bench's topology. Unlike netnstest, whose
// hosts end with the test, a site may outlive the command that built it
// (`ober lab up` returns with the lab running), so everything it makes
// is written to a ledger first and one Teardown removes it all, also
// after a crash of the builder.
//
// It never touches the root namespace's interfaces, routes or sysctls:
// every link it makes is created inside a site namespace.
package netsite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/lab/ledger"
)

// Site is one site: its namespaces share Prefix, its files live in Dir.
type Site struct {
	Prefix string
	Dir    string
	Ledger *ledger.Ledger
}

// LedgerFile is the ledger's name inside a site's directory.
const LedgerFile = "ledger.json"

// Open starts (or continues) the site whose files live in dir and whose
// namespaces begin with prefix. dir is recorded for removal.
func Open(dir, prefix string) (*Site, error) {
	dir = filepath.Clean(dir)
	l, err := ledger.Open(filepath.Join(dir, LedgerFile), prefix)
	if err != nil {
		return nil, err
	}
	if err := l.Dir(dir); err != nil {
		return nil, err
	}
	return &Site{Prefix: prefix, Dir: dir, Ledger: l}, nil
}

// Teardown removes the site whose files live in dir: its processes
// (the recorded ones and any other process living in one of its
// namespaces), mounts, namespaces (also those with its prefix the ledger
// lacks) and directories.
func Teardown(dir, prefix string, grace time.Duration) (ledger.Report, error) {
	dir = filepath.Clean(dir)
	st, serr := stopProcesses(dir, prefix, grace)
	rep, err := ledger.Teardown(filepath.Join(dir, LedgerFile), prefix, grace)
	// The ledger finds the processes stopped above gone; say who was
	// killed and who had ended before.
	killed := map[string]bool{}
	for _, k := range st.killed {
		killed[k] = true
	}
	gone := st.gone
	for _, g := range rep.Gone {
		if !killed[g] && !slices.Contains(gone, g) {
			gone = append(gone, g)
		}
	}
	// A process stopped above may still be a zombie when the ledger
	// looks (its start time still matches), and be listed again.
	all := st.killed
	for _, k := range rep.Killed {
		if !killed[k] {
			all = append(all, k)
		}
	}
	rep.Killed, rep.Gone = all, gone
	return rep, errors.Join(serr, err)
}

// NS is a namespace of a site.
type NS struct {
	Name string
}

// Namespace makes the namespace prefix+role with lo up.
func (s *Site) Namespace(ctx context.Context, role string) (*NS, error) {
	name := s.Prefix + role
	if err := s.Ledger.Namespace(name); err != nil {
		return nil, err
	}
	if _, err := Run(ctx, "ip", "netns", "add", name); err != nil {
		return nil, err
	}
	ns := &NS{Name: name}
	return ns, ns.IP(ctx, "link", "set", "lo", "up")
}

// BPFFS mounts a bpffs for the site's nodes at Dir/bpffs and returns it.
// `ip netns exec` gives its command a fresh /sys, so the nodes' pinned
// objects live on this mount instead of /sys/fs/bpf.
func (s *Site) BPFFS() (string, error) {
	dir := filepath.Join(s.Dir, "bpffs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := s.Ledger.Mount(dir); err != nil {
		return "", err
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return "", fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return dir, nil
}

// IP runs `ip -n NS args...`.
func (n *NS) IP(ctx context.Context, args ...string) error {
	_, err := Run(ctx, "ip", append([]string{"-n", n.Name}, args...)...)
	return err
}

// Command prepares a command that runs inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its output.
func (n *NS) Run(ctx context.Context, name string, args ...string) (string, error) {
	return Run(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Sysctl writes a sysctl inside the namespace (key as a /proc/sys path
// below /proc/sys, e.g. "net/ipv4/ip_forward").
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, n.Name, err)
		}
		return nil
	})
}

// Do runs fn on an OS thread that has entered the namespace. Sockets fn
// creates stay in the namespace. The thread is thrown away afterwards
// rather than trusted to switch back.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.GetFromName(n.Name)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", n.Name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Veth joins a (interface aName) to b (bName) with a veth pair of the
// given number of queues, both ends up, with checksum offload off and GRO
// on (see netnstest.Veth for why native XDP on veth needs both), and a
// queueing discipline on each end, so that a full peer ring stops the
// queue instead of dropping the packet, as on a NIC.
func Veth(ctx context.Context, a *NS, aName string, b *NS, bName string, queues int) error {
	q := fmt.Sprint(queues)
	if err := a.IP(ctx, "link", "add", aName, "numtxqueues", q, "numrxqueues", q, "type", "veth",
		"peer", "name", bName, "numtxqueues", q, "numrxqueues", q, "netns", b.Name); err != nil {
		return err
	}
	for _, end := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		if _, err := end.ns.Run(ctx, "ethtool", "-K", end.name, "tx", "off", "rx", "off", "gro", "on"); err != nil {
			return err
		}
		if _, err := end.ns.Run(ctx, "tc", "qdisc", "replace", "dev", end.name, "root", "pfifo_fast"); err != nil {
			return err
		}
		if err := end.ns.IP(ctx, "link", "set", end.name, "up"); err != nil {
			return err
		}
	}
	return nil
}

// Spawn starts a long-lived process inside ns, detached from the caller
// (own session, stdin from /dev/null, output appended to logPath), and
// records it in the ledger. The process outlives the caller; Teardown
// stops it.
func (s *Site) Spawn(ns *NS, name, logPath string, argv ...string) (int, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	args := argv
	if ns != nil {
		args = append([]string{"ip", "netns", "exec", ns.Name}, argv...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Not the caller's working directory: the process may outlive the
	// caller by days and should not pin a directory that is not the
	// site's.
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	// `ip netns exec` execs its command, so the PID is the process's own.
	if err := s.Ledger.Process(pid, name); err != nil {
		_ = cmd.Process.Kill()
		return 0, err
	}
	// Reap it if it ends while this process still runs; after that, the
	// reaper of orphans does.
	go func() { _ = cmd.Wait() }()
	return pid, nil
}

// Run runs a command with a 30 s bound and returns its output; the error
// carries the command line and what it printed.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Dialer makes connections from inside a namespace: each worker is a
// goroutine locked to a thread that entered it.
type Dialer struct {
	reqs chan dialReq
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

type dialReq struct {
	ctx           context.Context
	network, addr string
	res           chan dialRes
}

type dialRes struct {
	c   net.Conn
	err error
}

// NewDialer starts workers dialling in ns; Close ends them.
func NewDialer(ns *NS, workers int) (*Dialer, error) {
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns.Name, err)
	}
	d := &Dialer{reqs: make(chan dialReq), stop: make(chan struct{})}
	ready := make(chan error, workers)
	for range workers {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			runtime.LockOSThread()
			// The thread goes back to its namespace before it is
			// unlocked; if it cannot, it stays locked and dies with the
			// goroutine. Were it the main thread, which never dies, the
			// process would otherwise stay in ns for good.
			home, err := netns.Get()
			if err != nil {
				ready <- fmt.Errorf("open this thread's namespace: %w", err)
				return
			}
			defer home.Close()
			if err := netns.Set(h); err != nil {
				ready <- fmt.Errorf("enter %s: %w", ns.Name, err)
				return
			}
			defer func() {
				if netns.Set(home) == nil {
					runtime.UnlockOSThread()
				}
			}()
			ready <- nil
			for {
				select {
				case <-d.stop:
					return
				case r := <-d.reqs:
					nd := net.Dialer{}
					nd.SetMultipathTCP(false)
					c, err := nd.DialContext(r.ctx, r.network, r.addr)
					r.res <- dialRes{c, err}
				}
			}
		}()
	}
	var errs []error
	for range workers {
		errs = append(errs, <-ready)
	}
	h.Close()
	if err := errors.Join(errs...); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// DialContext dials addr from the namespace.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r := dialReq{ctx: ctx, network: network, addr: addr, res: make(chan dialRes, 1)}
	select {
	case d.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := <-r.res
	return res.c, res.err
}

// Close stops the workers.
func (d *Dialer) Close() {
	d.once.Do(func() { close(d.stop) })
	d.wg.Wait()
}

// Listen opens a TCP listener (not MPTCP) on addr inside ns.
func (n *NS) Listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(false)
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", addr, n.Name, err)
	}
	return ln, nil
}

// WakeOnXDPTX attaches a program that passes every packet to iface in ns
// by netlink, so that it stays attached after this process ends, for as
// long as the interface lives. Put it on the peer of every veth whose
// other end runs ober's XDP program: a veth wakes its peer for frames
// sent with XDP_TX (ober's RSTs, the drain handoff) only when the peer
// has an XDP program. Without one those frames wait in the peer's ring,
// and once they fill it the link stops transmitting for good
// (docs/veth-xdp-tx-wedge.md).
func WakeOnXDPTX(ns *NS, iface string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "ober_wake_tx", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("wake on XDP_TX: load the pass program: %w", err)
	}
	// The attachment holds its own reference to the program.
	defer prog.Close()
	err = ns.Do(func() error {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(l, prog.FD(), nl.XDP_FLAGS_DRV_MODE)
	})
	if err != nil {
		return fmt.Errorf("wake on XDP_TX: attach to %s in %s: %w", iface, ns.Name, err)
	}
	return nil
}
