// Package netnstest builds throwaway hosts for tests: network namespaces
// joined by veth pairs, and private bpffs mounts. Everything it makes is
// removed by t.Cleanup, also when the test fails, and carries a per-run
// prefix so that parallel runs on one machine do not collide.
//
// It never touches the root namespace's interfaces, routes or sysctls.
package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace the tests make, so that
// leftovers are easy to recognise (`ip netns list | grep obt-`).
const Prefix = "obt-"

// RequireRoot fails the test, with what to do, when not run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (BPF, network namespaces): run `sudo make test`")
	}
}

// RequireTool fails the test when a command is missing, naming the Debian
// package that provides it.
func RequireTool(t testing.TB, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s not found: install it with `apt-get install %s`", tool, pkg)
	}
}

// BPFFS mounts a private bpffs on a fresh directory and returns it.
func BPFFS(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	dir, err := os.MkdirTemp("", "ober-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(dir)
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	return dir
}

// NS is a network namespace made for one test.
type NS struct {
	Name    string
	Handle  netns.NsHandle
	deleted bool
}

// Delete removes the namespace now, as when a host goes away; the kernel
// tears it down once nothing else holds it.
func (n *NS) Delete(t testing.TB) {
	t.Helper()
	if err := n.del(); err != nil {
		t.Fatal(err)
	}
}

func (n *NS) del() error {
	if n.deleted {
		return nil
	}
	n.deleted = true
	n.Handle.Close()
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
	return nil
}

// New makes a namespace whose name ends in role, with lo up.
func New(t testing.TB, role string) *NS {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "ip", "iproute2")
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s%d-%s-%s", Prefix, os.Getpid(), hex.EncodeToString(b[:]), role)
	Run(t, "ip", "netns", "add", name)
	h, err := netns.GetFromName(name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open namespace %s: %v", name, err)
	}
	ns := &NS{Name: name, Handle: h}
	t.Cleanup(func() {
		if err := ns.del(); err != nil {
			t.Error(err)
		}
	})
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n NS args...` and fails the test on error.
func (n *NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Exec prepares a command that runs inside the namespace.
func (n *NS) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Do runs fn on an OS thread that has entered the namespace. Sockets fn
// creates stay in the namespace after it returns. The thread is thrown
// away afterwards rather than trusted to switch back.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(n.Handle); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Veth joins namespace a (interface aName) to b (bName) with a veth pair
// of the given number of queues, both ends up.
//
// Checksum offload is switched off on both ends. A veth otherwise hands
// its peer TCP segments whose checksum is still to be filled in
// (CHECKSUM_PARTIAL); native XDP turns the skb into a bare frame, and a
// frame redirected through a cpumap comes back as an skb with that
// unfinished checksum, which TCP then drops. A real NIC puts finished
// checksums on the wire, so this is a property of the test link only.
//
// GRO is switched on: a veth takes XDP frames (XDP_TX, redirects) into an
// end only when that end runs NAPI, which GRO turns on.
//
// Each end gets a queueing discipline (pfifo_fast), as a NIC has. A veth
// has none by default, and then a transmit that finds its peer's ring
// full is dropped; with one, the queue stops and the peer wakes it when
// it has drained the ring (docs/veth-xdp-tx-wedge.md). Under a load that
// outruns the peer, a veth without one dropped about 2 % of a lab
// node's packets.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string, queues int) {
	t.Helper()
	RequireTool(t, "ethtool", "ethtool")
	RequireTool(t, "tc", "iproute2")
	q := fmt.Sprint(queues)
	a.IP(t, "link", "add", aName, "numtxqueues", q, "numrxqueues", q, "type", "veth",
		"peer", "name", bName, "numtxqueues", q, "numrxqueues", q, "netns", b.Name)
	for _, end := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		Run(t, "ip", "netns", "exec", end.ns.Name, "ethtool", "-K", end.name, "tx", "off", "rx", "off", "gro", "on")
		Run(t, "ip", "netns", "exec", end.ns.Name, "tc", "qdisc", "replace", "dev", end.name, "root", "pfifo_fast")
		end.ns.IP(t, "link", "set", end.name, "up")
	}
}

// PassProgram loads an XDP program that passes every packet, closed at
// cleanup. Tests also use it to stand in for another ober release.
func PassProgram(t testing.TB) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "pass", Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
	})
	if err != nil {
		t.Fatalf("load pass-through XDP program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// PassXDP attaches a program that passes every packet to iface in ns.
// Put it on the peer of every interface that runs ober's XDP program,
// which answers with XDP_TX (the whitelist's RSTs, the drain handoff): a
// veth wakes its peer to take such frames only when the peer has an XDP
// program of its own. Without one they wait in the peer's ring, and once
// they fill it every later transmit is dropped and the link is stopped
// for good (docs/veth-xdp-tx-wedge.md, TestVethXDPTXWedge).
//
// It returns the attachment, closed at cleanup; a test that wants the
// wedge back closes it earlier.
func PassXDP(t testing.TB, ns *NS, iface string) link.Link {
	t.Helper()
	return attachXDP(t, ns, iface, PassProgram(t), "pass-through")
}

// BounceXDP attaches to iface in ns a program that sends every frame
// back out where it came in (XDP_TX), closed at cleanup. A burst of
// frames into it fills the peer's ring: what wedges a veth whose peer
// has no XDP program and whose sender no qdisc
// (docs/veth-xdp-tx-wedge.md).
func BounceXDP(t testing.TB, ns *NS, iface string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bounce", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 3 /* XDP_TX */), asm.Return()},
	})
	if err != nil {
		t.Fatalf("load the bouncing XDP program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	attachXDP(t, ns, iface, prog, "bouncing")
}

func attachXDP(t testing.TB, ns *NS, iface string, prog *ebpf.Program, what string) link.Link {
	t.Helper()
	var l link.Link
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		t.Fatalf("attach %s XDP to %s in %s: %v", what, iface, ns.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// SendUDP sends n datagrams of size bytes from ns to addr (host:port).
func SendUDP(t testing.TB, ns *NS, addr string, n, size int) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, size)
		for range n {
			c.Write(buf) // a full ring drops some: that is the point
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send to %s from %s: %v", addr, ns.Name, err)
	}
}

// Run runs a command and fails the test on error, returning its output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}
