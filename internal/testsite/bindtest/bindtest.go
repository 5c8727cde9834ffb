// Package bindtest runs a real authoritative DNS server, BIND 9's named,
// inside a test network namespace, for tests of DNS-based backend
// discovery: it serves one zone of SRV, A and AAAA records that a test
// changes at run time through dynamic updates (nsupdate, signed with a
// TSIG key the fixture makes), and it can be stopped and started again
// to play a DNS server that goes away and comes back.
//
// The zone's TTLs are TTL (1 s), so that no cache holds old data for long.
package bindtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

const (
	namedPkg        = "bind9"
	namedDebianPath = "/usr/sbin/named"
	nsupdatePkg     = "bind9-dnsutils"

	// namedUser is the unprivileged user named switches to once it has
	// bound port 53; Debian's bind9 package creates it.
	namedUser = "bind"

	// keyName names the TSIG key that may update the zone.
	keyName = "bindtest-update"

	startTimeout  = 20 * time.Second
	updateTimeout = 10 * time.Second
	stopGrace     = 10 * time.Second
	queryTimeout  = 500 * time.Millisecond
	pollInterval  = 50 * time.Millisecond
)

// Server is a named serving one zone from a private directory, listening
// on port 53 (UDP and TCP) of one address in one network namespace.
type Server struct {
	ns   *netnstest.NS
	addr netip.AddrPort
	zone string // canonical, with the trailing dot
	dir  string
	bin  string
	uid  int
	gid  int

	mu  sync.Mutex
	run *run // the running named, nil when stopped
}

// run is one named process.
type run struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been reaped
	err  error         // how cmd ended, valid once done is closed
}

// Start runs named in ns, authoritative for zone with records (and the
// zone's SOA and NS, whose name server ns.<zone> has the address listen),
// and returns once it answers the zone's SOA. listen must already be on
// an interface of ns; add an IPv6 one with nodad, since an address under
// duplicate address detection cannot be bound. named is stopped at
// cleanup, also when the test fails.
//
// Only updates signed with the fixture's TSIG key are allowed: Update
// signs its own, anything else is refused.
func Start(t testing.TB, ns *netnstest.NS, listen netip.Addr, zone string, records []Record) *Server {
	t.Helper()
	netnstest.RequireRoot(t)
	bin := sbinPath(t, "named", namedDebianPath, namedPkg)
	netnstest.RequireTool(t, "nsupdate", nsupdatePkg)
	listen = listen.Unmap()
	if !listen.IsValid() || listen.IsUnspecified() || listen.Zone() != "" {
		t.Fatalf("named: listen address %v: want one unicast address without zone", listen)
	}
	canon, err := absolute(dns.Fqdn(zone), ".")
	if err != nil || canon == "." {
		t.Fatalf("named: zone %q: want a domain name below the root (%v)", zone, err)
	}
	zone = canon

	u, err := user.Lookup(namedUser)
	if err != nil {
		t.Fatalf("named's user %q: %v: install it with `apt-get install %s`", namedUser, err, namedPkg)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	// Not t.TempDir: its parent is root's alone (0700), and named, once
	// it is the bind user, must reach the directory to write the journal.
	dir, err := os.MkdirTemp("", "ober-bindtest-")
	if err != nil {
		t.Fatalf("named: working directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	s := &Server{ns: ns, addr: netip.AddrPortFrom(listen, 53), zone: zone, dir: dir, bin: bin, uid: uid, gid: gid}
	if err := s.writeFiles(records); err != nil {
		t.Fatalf("named for %s: %v", zone, err)
	}
	t.Cleanup(func() {
		// A named that died during the test fails it here, with why.
		if err := s.halt(); err != nil {
			t.Errorf("stop named for %s: %v\n%s", s.zone, err, s.Log())
		}
	})
	if err := s.start(); err != nil {
		_ = s.halt()
		t.Fatalf("named for %s on %s: %v\n%s", zone, s.addr, err, s.Log())
	}
	return s
}

// sbinPath finds a tool also where sudo's PATH lacks /usr/sbin.
func sbinPath(t testing.TB, tool, debianPath, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	netnstest.RequireTool(t, debianPath, pkg)
	return debianPath
}

// Addr is where the server answers, UDP and TCP.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Zone is the zone the server is authoritative for, with the trailing dot.
func (s *Server) Zone() string { return s.zone }

// KeyFile is the path of the TSIG key that may update the zone, in the
// form `nsupdate -k` and named.conf read.
func (s *Server) KeyFile() string { return filepath.Join(s.dir, "update.key") }

// Log is what named wrote, over all its runs, for failure messages.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no log of named: %v)", err)
	}
	return string(b)
}

func (s *Server) logPath() string  { return filepath.Join(s.dir, "named.log") }
func (s *Server) zonePath() string { return filepath.Join(s.dir, "zone.db") }

// writeFiles writes the key, zone file and configuration, owned by the
// user named runs as.
func (s *Server) writeFiles(records []Record) error {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("TSIG secret: %w", err)
	}
	key := fmt.Sprintf("key %q {\n\talgorithm hmac-sha256;\n\tsecret %q;\n};\n", keyName, base64.StdEncoding.EncodeToString(secret))

	var zone strings.Builder
	fmt.Fprintf(&zone, "$TTL %d\n", TTL)
	// Serial 1; refresh, retry and expire do not matter without
	// secondaries; the last field is the negative-caching TTL.
	fmt.Fprintf(&zone, "@ IN SOA ns.%s hostmaster.%s 1 3600 600 86400 %d\n", s.zone, s.zone, TTL)
	fmt.Fprintf(&zone, "@ IN NS ns.%s\n", s.zone)
	glue := A("ns", s.addr.Addr())
	if s.addr.Addr().Is6() {
		glue = AAAA("ns", s.addr.Addr())
	}
	for _, r := range append([]Record{glue}, records...) {
		rr, err := r.RR(s.zone)
		if err != nil {
			return err
		}
		fmt.Fprintln(&zone, rr.String())
	}

	v4, v6 := "none", "none"
	if s.addr.Addr().Is4() {
		v4 = s.addr.Addr().String()
	} else {
		v6 = s.addr.Addr().String()
	}
	// Every path named would otherwise take from /run/named or /etc/bind
	// is in the private directory, so that servers of parallel tests and
	// the machine's own named never share a file. No controls: no rndc.
	conf := fmt.Sprintf(`include %[1]q;
options {
	directory %[2]q;
	pid-file "named.pid";
	lock-file "named.lock";
	session-keyfile "session.key";
	managed-keys-directory %[2]q;
	dump-file "named_dump.db";
	statistics-file "named.stats";
	listen-on port 53 { %[3]s; };
	listen-on-v6 port 53 { %[4]s; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
	allow-transfer { none; };
};
controls { };
zone %[5]q {
	type primary;
	file %[6]q;
	update-policy { grant %[7]q zonesub ANY; };
};
`, s.KeyFile(), s.dir, v4, v6, s.zone, s.zonePath(), keyName)

	files := []struct {
		name, data string
		mode       os.FileMode
	}{
		{"update.key", key, 0o600},
		{"zone.db", zone.String(), 0o644},
		{"named.conf", conf, 0o644},
	}
	for _, f := range files {
		p := filepath.Join(s.dir, f.name)
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return filepath.Walk(s.dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if err := os.Chown(p, s.uid, s.gid); err != nil {
			return fmt.Errorf("give %s to user %s: %w", p, namedUser, err)
		}
		return nil
	})
}

// start runs named and waits until it answers the zone's SOA.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != nil {
		return errors.New("named is running already")
	}
	log, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer log.Close() // the child holds its own descriptor
	fmt.Fprintf(log, "--- bindtest: starting named at %s\n", time.Now().Format(time.RFC3339Nano))

	// -g: foreground, logging to stderr, so that the PID held is
	// named's (ip netns exec replaces itself with it). -u: named binds
	// port 53 as root, then runs as the bind user. -n 1: one worker
	// thread is plenty, and the machine is shared.
	cmd := s.ns.Exec(context.Background(), s.bin, "-g", "-u", namedUser, "-n", "1", "-c", filepath.Join(s.dir, "named.conf"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	r := &run{cmd: cmd, done: make(chan struct{})}
	s.run = r
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		m, err := query(ctx, s.ns, s.addr, s.zone, dns.TypeSOA)
		if err == nil && m.Rcode == dns.RcodeSuccess && m.Authoritative && len(m.Answer) > 0 {
			return nil
		}
		select {
		case <-r.done:
			return fmt.Errorf("named exited before answering: %v", r.err)
		case <-ctx.Done():
			return fmt.Errorf("no authoritative SOA of %s within %v (last: %v)", s.zone, startTimeout, describe(m, err))
		case <-time.After(pollInterval):
		}
	}
}

// Stop ends named (SIGTERM, then SIGKILL after a grace period) and returns
// once it has exited, as a DNS server that goes away. The address stays,
// so queries to Addr fail as they do when a server's process is gone: the
// namespace answers them with ICMP port unreachable, which a connected
// UDP socket reports as "connection refused" and a resolver that ignores
// ICMP sees as a timeout. A test that wants the silence of a vanished
// host removes the address (or the link) itself. The zone file and the
// journal of the updates stay for Restart.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.halt(); err != nil {
		t.Fatalf("stop named for %s: %v\n%s", s.zone, err, s.Log())
	}
}

// Restart stops named if it is running and starts it again on the same
// files, so that it serves the zone with every update made so far; it
// returns once the zone answers.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.halt(); err != nil {
		t.Fatalf("stop named for %s: %v\n%s", s.zone, err, s.Log())
	}
	if err := s.start(); err != nil {
		_ = s.halt()
		t.Fatalf("restart named for %s on %s: %v\n%s", s.zone, s.addr, err, s.Log())
	}
}

func (s *Server) halt() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.run
	if r == nil {
		return nil
	}
	s.run = nil
	select {
	case <-r.done:
		// It ended on its own: a test that stops a server it believed
		// running should learn why it had gone.
		return fmt.Errorf("named had exited already: %v", r.err)
	default:
	}
	pid := r.cmd.Process.Pid
	// Should SIGTERM fail, the wait below ends in SIGKILL.
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		return nil
	case <-time.After(stopGrace):
		_ = r.cmd.Process.Kill()
		<-r.done
		return fmt.Errorf("named (PID %d) ignored SIGTERM for %v and was killed", pid, stopGrace)
	}
}

// Update sends one dynamic update, signed with the fixture's key, that
// deletes the records of del and adds those of add, and returns once the
// server answers with the result. Deleting a record the zone lacks is no
// error, as in DNS. To change an SRV record's priority, delete the old
// record and add the new one in the same Update.
func (s *Server) Update(t testing.TB, add, del []Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), updateTimeout)
	defer cancel()
	addRR, err := s.rrs(add)
	if err != nil {
		t.Fatalf("update of %s: add: %v", s.zone, err)
	}
	delRR, err := s.rrs(del)
	if err != nil {
		t.Fatalf("update of %s: delete: %v", s.zone, err)
	}
	var script strings.Builder
	for _, rr := range delRR {
		fmt.Fprintf(&script, "update delete %s\n", rr)
	}
	for _, rr := range addRR {
		fmt.Fprintf(&script, "update add %s\n", rr)
	}
	if out, err := s.nsupdate(ctx, s.KeyFile(), script.String()); err != nil {
		t.Fatalf("update of %s: %v\n%s\nnamed:\n%s", s.zone, err, out, s.Log())
	}
	if err := s.waitFor(ctx, addRR, delRR); err != nil {
		t.Fatalf("update of %s: %v\nnamed:\n%s", s.zone, err, s.Log())
	}
}

func (s *Server) rrs(records []Record) ([]dns.RR, error) {
	rrs := make([]dns.RR, 0, len(records))
	for _, r := range records {
		rr, err := r.RR(s.zone)
		if err != nil {
			return nil, err
		}
		rrs = append(rrs, rr)
	}
	return rrs, nil
}

// nsupdate runs nsupdate in the server's namespace with the update lines
// of script, signed with keyFile ("" for an unsigned update), and returns
// its output.
func (s *Server) nsupdate(ctx context.Context, keyFile, script string) (string, error) {
	var in strings.Builder
	fmt.Fprintf(&in, "server %s %d\nzone %s\n%ssend\n", s.addr.Addr(), s.addr.Port(), s.zone, script)
	args := []string{"-t", "5"}
	if keyFile != "" {
		args = append(args, "-k", keyFile)
	}
	var out bytes.Buffer
	cmd := s.ns.Exec(ctx, "nsupdate", args...)
	cmd.Stdin = strings.NewReader(in.String())
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("nsupdate: %w", err)
	}
	return out.String(), nil
}

// waitFor polls until every record of add is served and no record of del
// is, except those also in add.
func (s *Server) waitFor(ctx context.Context, add, del []dns.RR) error {
	for {
		missing, err := s.check(ctx, add, del)
		if err == nil && missing == "" {
			return nil
		}
		if err == nil {
			err = errors.New(missing)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server did not answer the updated data in time: %w", err)
		case <-time.After(pollInterval):
		}
	}
}

// check says which of the wanted changes the server does not answer yet.
func (s *Server) check(ctx context.Context, add, del []dns.RR) (string, error) {
	type key struct {
		name  string
		rtype uint16
	}
	answers := map[key][]dns.RR{}
	lookup := func(rr dns.RR) ([]dns.RR, error) {
		k := key{rr.Header().Name, rr.Header().Rrtype}
		if a, ok := answers[k]; ok {
			return a, nil
		}
		m, err := query(ctx, s.ns, s.addr, k.name, k.rtype)
		if err != nil {
			return nil, fmt.Errorf("query %s %s: %w", k.name, dns.TypeToString[k.rtype], err)
		}
		if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
			return nil, fmt.Errorf("query %s %s: %s", k.name, dns.TypeToString[k.rtype], dns.RcodeToString[m.Rcode])
		}
		answers[k] = m.Answer
		return m.Answer, nil
	}
	has := func(set []dns.RR, rr dns.RR) bool {
		for _, a := range set {
			if dns.IsDuplicate(a, rr) {
				return true
			}
		}
		return false
	}
	var missing []string
	for _, rr := range add {
		a, err := lookup(rr)
		if err != nil {
			return "", err
		}
		if !has(a, rr) {
			missing = append(missing, "not yet added: "+rr.String())
		}
	}
	for _, rr := range del {
		if has(add, rr) {
			continue
		}
		a, err := lookup(rr)
		if err != nil {
			return "", err
		}
		if has(a, rr) {
			missing = append(missing, "not yet deleted: "+rr.String())
		}
	}
	return strings.Join(missing, "; "), nil
}

// query asks server for name and qtype over UDP from inside ns, as a
// stub resolver asks an authoritative server (no recursion).
func query(ctx context.Context, ns *netnstest.NS, server netip.AddrPort, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = false
	c := &dns.Client{Net: "udp", Timeout: queryTimeout}
	var r *dns.Msg
	err := ns.Do(func() error {
		var err error
		r, _, err = c.ExchangeContext(ctx, m, server.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func describe(m *dns.Msg, err error) string {
	if err != nil {
		return err.Error()
	}
	if m == nil {
		return "no query made"
	}
	return fmt.Sprintf("rcode %s, authoritative %v, %d answers", dns.RcodeToString[m.Rcode], m.Authoritative, len(m.Answer))
}
