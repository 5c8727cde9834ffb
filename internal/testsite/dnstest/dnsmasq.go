// Package dnstest provides real DNS servers and a counting DNS client for
// tests of UDP services: a dnsmasq per backend, each inside a test network
// namespace and naming itself in its answer, and Ask, which sends a bounded
// burst of queries over many source ports and tallies who answered.
//
// Every server answers the TXT query for QName with "backend=<name>", so a
// test behind a VIP learns from each answer which backend served it.
package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

const (
	// Zone is the domain the servers answer for themselves; they forward
	// nothing, so other names in it get NXDOMAIN rather than a timeout.
	Zone = "ober.test."
	// QName is the name whose TXT record identifies the server.
	QName = "who." + Zone

	txtPrefix = "backend="

	dnsmasqPkg        = "dnsmasq-base"
	dnsmasqDebianPath = "/usr/sbin/dnsmasq"

	startTimeout = 10 * time.Second
	stopGrace    = 5 * time.Second
)

// validName keeps backend names free of the commas and quotes that
// dnsmasq's --txt-record syntax gives a meaning.
var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,63}$`)

// Server is a dnsmasq started by a test, listening on UDP and TCP at Addr
// inside one network namespace.
type Server struct {
	Name string         // what its answers name as the backend
	Addr netip.AddrPort // where it listens
	Log  string         // path of its log (stderr), for failure messages

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // how it ended, valid once done is closed
	once sync.Once
}

// StartDnsmasq runs dnsmasq in ns, listening on listen only, answering
// the TXT query for QName with "backend=<name>". It returns once the
// server has answered such a query, and stops it at cleanup. The address
// must already be on an interface of ns. Add an IPv6 one with nodad: an
// address under duplicate address detection cannot be bound, so dnsmasq
// would wait for the detection to end (about a second or two) before it
// answers.
func StartDnsmasq(t testing.TB, ns *netnstest.NS, name string, listen netip.AddrPort) *Server {
	t.Helper()
	netnstest.RequireRoot(t)
	bin := dnsmasqPath(t)
	if !validName.MatchString(name) {
		t.Fatalf("dnsmasq backend name %q: want 1-63 of [A-Za-z0-9_.-]", name)
	}
	if !listen.IsValid() || listen.Port() == 0 {
		t.Fatalf("dnsmasq %s: listen address %v needs an address and a port", name, listen)
	}
	logPath := filepath.Join(t.TempDir(), "dnsmasq-"+name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create log of dnsmasq %s: %v", name, err)
	}
	defer logFile.Close() // the child holds its own descriptor

	addr := listen.Addr().Unmap()
	args := []string{
		"--keep-in-foreground", // so that the PID we hold is the server's
		"--conf-file=/dev/null",
		"--pid-file=", // none: several servers share one machine
		"--log-facility=-",
		"--no-resolv", "--no-hosts", "--no-poll",
		// --bind-interfaces binds the exact address rather than the
		// wildcard, so that several servers share a port in one
		// namespace; --listen-address alone adds no loopback.
		"--bind-interfaces",
		"--listen-address=" + addr.String(),
		fmt.Sprintf("--port=%d", listen.Port()),
		"--local=/" + Zone[:len(Zone)-1] + "/",
		"--txt-record=" + QName[:len(QName)-1] + "," + txtPrefix + name,
		"--user=nobody", "--group=nogroup",
	}
	cmd := ns.Exec(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so that Kill also takes the children
	// dnsmasq forks for TCP connections.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dnsmasq %s: %v", name, err)
	}
	s := &Server{Name: name, Addr: netip.AddrPortFrom(addr, listen.Port()), Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(s.stop)
	if err := s.waitReady(ns); err != nil {
		s.stop()
		log, _ := os.ReadFile(logPath)
		t.Fatalf("dnsmasq %s on %s: %v\n%s", name, s.Addr, err, log)
	}
	return s
}

// dnsmasqPath finds dnsmasq also where sudo's PATH lacks /usr/sbin.
func dnsmasqPath(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("dnsmasq"); err == nil {
		return p
	}
	netnstest.RequireTool(t, dnsmasqDebianPath, dnsmasqPkg)
	return dnsmasqDebianPath
}

// waitReady asks the server who it is until it answers with its own name.
func (s *Server) waitReady(ns *netnstest.NS) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		tally, err := Ask(ctx, ns, s.Addr, 1, 1, 200*time.Millisecond)
		if err != nil {
			return fmt.Errorf("wait for first answer: %w", err)
		}
		if tally.ByBackend[s.Name] == 1 {
			return nil
		}
		if len(tally.ByBackend) > 0 {
			// Another server holds the address: fail rather than
			// let a test count the wrong backend.
			return fmt.Errorf("answered by another server: %v", tally.ByBackend)
		}
		select {
		case <-s.done:
			return fmt.Errorf("exited before answering: %v", s.err)
		case <-ctx.Done():
			return fmt.Errorf("no answer within %v (last: %+v)", startTimeout, tally)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID is the dnsmasq process's id (ip netns exec replaces itself with it).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Kill ends the server with SIGKILL, as a crashing backend ends, and
// returns once it is gone. Calling it again does nothing.
func (s *Server) Kill() {
	s.once.Do(func() {
		s.signal(syscall.SIGKILL)
		<-s.done
	})
}

// stop ends the server at cleanup, politely first.
func (s *Server) stop() {
	s.once.Do(func() {
		select {
		case <-s.done:
			return
		default:
		}
		s.signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopGrace):
			s.signal(syscall.SIGKILL)
			<-s.done
		}
	})
}

// signal sends sig to the server's process group, which it leads, or to
// the server alone should the group refuse it.
func (s *Server) signal(sig syscall.Signal) {
	if err := syscall.Kill(-s.PID(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = s.cmd.Process.Signal(sig)
	}
}
