package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/doctor"
	"github.com/ober-ingress/ober/control/runtime/bgp"
	"github.com/ober-ingress/ober/control/runtime/daemon"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// The verdicts of a check. Only a failure makes `ober test` exit 1: a
// warning is something that works today but needs attention (a
// certificate close to expiry, generic XDP).
const (
	testOK   = "ok"
	testWarn = "warn"
	testFail = "fail"
)

// testCheck is one line of `ober test`, and one object of its --json
// array. Fields are added, never renamed: name, ok and detail are the
// original three, ok is false only for a failure.
type testCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Status string `json:"status"` // ok, warn or fail
	Detail string `json:"detail"`
	// Fix says what to do about a warning or a failure, where ober knows.
	Fix string `json:"fix,omitempty"`
	// Address is what a vrrp peer or backend check talked to (IP or
	// IP:port, after name resolution).
	Address string `json:"address,omitempty"`
	// RTTMillis is a vrrp peer's ICMP echo round trip, or a backend's TCP
	// connect time, in milliseconds.
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// HTTPStatus is a backend's answer to the health check.
	HTTPStatus int              `json:"http_status,omitempty"`
	BGP        *bgp.ProbeResult `json:"bgp,omitempty"`
}

func checkOK(name, detail string) testCheck {
	return testCheck{Name: name, OK: true, Status: testOK, Detail: detail}
}

func checkFail(name, detail string) testCheck {
	return testCheck{Name: name, Status: testFail, Detail: detail}
}

// fromDoctor turns one of doctor's results into a line of `ober test`;
// doctor's "cert <service>" is "tls <service>" here.
func fromDoctor(r doctor.Result) testCheck {
	name := r.Name
	if s, ok := strings.CutPrefix(name, "cert "); ok {
		name = "tls " + s
	}
	c := testCheck{Name: name, Detail: r.Detail, Fix: r.Fix}
	switch r.Status {
	case doctor.Pass:
		c.OK, c.Status = true, testOK
	case doctor.Warn:
		c.OK, c.Status = true, testWarn
	default:
		c.Status = testFail
	}
	return c
}

func newTestCmd(a *app) *cobra.Command {
	var timeout time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test [--config FILE] [--timeout D] [--json]",
		Short: "Check the configuration, routers or VRRP peers, backends and certificates without starting anything",
		Long: `test checks what the node needs, changing nothing:

  config     the configuration file is valid and its names resolve;
  haproxy    HAProxy accepts the rendered configuration of every instance;
  bgp        (ha.mode bgp) each peer: a session is opened with the node's
             identity, its state and the router's capabilities are reported,
             and it is closed again. Nothing is announced. When the ober
             daemon runs, its established sessions are reported instead: a
             router refuses a second session from the same address;
  vrrp       (ha.mode vrrp) keepalived's version, ha.vrrp.interface exists
             and holds this node's address, every other node answers an ICMP
             echo sent from that interface (with its round trip), and
             keepalived -t accepts the rendered keepalived.conf;
  backend    each backend server (after name resolution) accepts a TCP
             connection and answers backends.health.path; 2xx and 3xx are
             ok, and so is 4xx, which HAProxy's check also counts as up
             (S3 answers anonymous requests with 403);
  tls        each TLS service's certificate: the chain parses, the key
             matches, it is valid now (warn within 30 days of expiry) and
             names a DNS name or a VIP; self-signed services say so;
  iface      each of node.interfaces exists here, its driver, and whether
             it has native XDP.

When the configuration does not load, the checks that need only part of
it (backend, tls, iface) still run on what the file says, so that one run
names every problem.

Each check prints one line: its name, ok, warn or FAIL, and what was found.
--json prints the same as an array of objects (name, ok, status, detail,
and where they apply fix, address, rtt_ms, http_status, bgp). Run test in
the network namespace that holds node.interfaces.

The exit code is 0 when no check fails (warnings included), 1 otherwise.`,
		Example: `  ober test
  ober test --config /etc/ober/ober.yaml --timeout 30s
  ober test --json | jq '.[] | select(.ok == false)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := runTests(cmd.Context(), a, timeout)
			failures := 0
			for _, c := range checks {
				if !c.OK {
					failures++
				}
			}
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(checks); err != nil {
					return fmt.Errorf("test: write JSON: %w", err)
				}
			} else {
				for _, c := range checks {
					line := c.Detail
					if c.Fix != "" {
						line += "; fix: " + c.Fix
					}
					fmt.Fprintf(a.out, "%-4s %-22s %s\n", testLabel(c), c.Name, line)
				}
			}
			if failures > 0 {
				return fmt.Errorf("test: %d of %d checks failed", failures, len(checks))
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "how long each BGP session may take to establish")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checks as JSON")
	return cmd
}

func testLabel(c testCheck) string {
	switch {
	case !c.OK:
		return "FAIL"
	case c.Status == testWarn:
		return "warn"
	}
	return "ok"
}

func runTests(ctx context.Context, a *app, timeout time.Duration) []testCheck {
	cfg, err := config.Load(a.configPath)
	if err != nil {
		checks := []testCheck{checkFail("config", oneLine(err))}
		// A certificate that expired or a key that does not match is a
		// configuration error too; the tls check then says which service
		// and which files, and the backends are still worth knowing.
		if raw := rawConfig(a.configPath); raw != nil {
			checks = append(checks, joinGroups(runGroups(ctx,
				func(ctx context.Context) []testCheck { return backendChecks(ctx, raw) },
				func(context.Context) []testCheck { return tlsChecks(raw) },
				func(ctx context.Context) []testCheck { return ifaceChecks(ctx, raw) },
			))...)
		}
		return checks
	}
	return joinGroups(runGroups(ctx,
		func(ctx context.Context) []testCheck { return configChecks(ctx, a.configPath, cfg) },
		func(ctx context.Context) []testCheck { return haChecks(ctx, a, cfg, timeout) },
		func(ctx context.Context) []testCheck { return backendChecks(ctx, cfg) },
		func(context.Context) []testCheck { return tlsChecks(cfg) },
		func(ctx context.Context) []testCheck { return ifaceChecks(ctx, cfg) },
	))
}

// runGroups runs every group of checks at once and returns their results
// in the order of the groups: the slowest check (a BGP session, a dead
// backend) sets the time of the whole run.
func runGroups(ctx context.Context, groups ...func(context.Context) []testCheck) [][]testCheck {
	out := make([][]testCheck, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { out[i] = g(ctx) })
	}
	wg.Wait()
	return out
}

func joinGroups(groups [][]testCheck) []testCheck {
	var out []testCheck
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// rawConfig reads the file without validating it: what it says, with
// the defaults filled in, or nil when it is no ober configuration at all.
func rawConfig(path string) *config.Config {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var c config.Config
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil
	}
	c.ApplyDefaults()
	return &c
}

func configChecks(ctx context.Context, path string, cfg *config.Config) []testCheck {
	res, err := daemon.Check(ctx, path, nil)
	if err != nil {
		return []testCheck{checkFail("config", oneLine(err))}
	}
	return []testCheck{
		checkOK("config", fmt.Sprintf("%s: %d VIPs, %d services, %d backends", path,
			len(cfg.VIPs), len(cfg.Services), len(cfg.Backends.Servers))),
		checkOK("haproxy", fmt.Sprintf("HAProxy %s accepts the configuration of %d instances", res.HAProxy, res.Instances)),
	}
}

func haChecks(ctx context.Context, a *app, cfg *config.Config, timeout time.Duration) []testCheck {
	switch {
	case cfg.HA.Mode == config.HAModeBGP && cfg.HA.BGP != nil:
		return bgpChecks(ctx, a, cfg, timeout)
	case cfg.HA.Mode == config.HAModeVRRP && cfg.HA.VRRP != nil:
		return vrrpChecks(ctx, cfg)
	}
	return nil
}

func bgpChecks(ctx context.Context, a *app, cfg *config.Config, timeout time.Duration) []testCheck {
	if st, err := fetchStatus(ctx, cfg.API.Listen); err == nil && st.Daemon.BGP != nil {
		var checks []testCheck
		for _, p := range st.Daemon.BGP.Peers {
			detail := fmt.Sprintf("AS%d %s in the running daemon (pid %d)", p.ASN, p.State, st.Daemon.PID)
			c := checkOK("bgp "+p.Address, detail)
			if !p.Up() {
				if p.LastError != "" {
					detail += ": " + p.LastError
				}
				c = checkFail("bgp "+p.Address, detail)
			}
			checks = append(checks, c)
		}
		return checks
	}
	sc, err := daemon.SpeakerConfig(cfg)
	if err != nil {
		return []testCheck{checkFail("bgp", oneLine(err))}
	}
	out := make([]testCheck, len(sc.Peers))
	var wg sync.WaitGroup
	for i, peer := range sc.Peers {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			// Each probe is its own speaker: with one listener at most, a
			// passive peer is probed alone.
			r := bgp.Probe(pctx, sc, peer, a.log)
			var c testCheck
			if r.OK {
				c = checkOK("bgp "+r.Peer, fmt.Sprintf("AS%d established in %s, router id %s; offers %s", r.ASN,
					r.Took.Round(time.Millisecond), r.RouterID, strings.Join(r.Capabilities, ", ")))
			} else {
				c = checkFail("bgp "+r.Peer, fmt.Sprintf("AS%d %s: %s", r.ASN, r.State, r.Error))
				c.Fix = "check the address, ha.bgp.asn, the peer's asn and password, and the router's neighbor entry for this node"
			}
			c.BGP = &r
			out[i] = c
		})
	}
	wg.Wait()
	return out
}

// pingWait is how long a VRRP peer has to answer: keepalived declares a
// master dead after about three advert intervals, so a peer that needs
// seconds to answer an echo is as good as unreachable.
const pingWait = 2 * time.Second

// vrrpChecks checks keepalived, the VRRP interface and this node's
// address on it (doctor's checks), then every peer over the path the
// adverts take, and keepalived's own check of the rendered configuration.
func vrrpChecks(ctx context.Context, cfg *config.Config) []testCheck {
	var checks []testCheck
	selfOK := true
	for _, r := range doctor.CheckVRRP(ctx, doctor.DefaultEnv(), cfg.HA.VRRP) {
		checks = append(checks, fromDoctor(r))
		if r.Name == "vrrp" && r.Status == doctor.Fail {
			selfOK = false
		}
	}
	if !selfOK {
		// Without its own address the node cannot send adverts at all.
		return checks
	}
	kc, err := daemon.VRRPConfig(cfg)
	if err != nil {
		return append(checks, checkFail("vrrp", oneLine(err)))
	}
	peers := make([]testCheck, len(kc.Peers))
	var wg sync.WaitGroup
	for i, peer := range kc.Peers {
		wg.Go(func() {
			name := "vrrp peer " + peer.String()
			rtt, err := pingFrom(ctx, kc.Interface, kc.Self, peer, pingWait)
			var c testCheck
			if err != nil {
				c = checkFail(name, fmt.Sprintf("%s from %s (%s): %v", peer, kc.Interface, kc.Self, err))
				c.Fix = "check that the node is up, its link to the VRRP segment, and that ICMP and VRRP (IP protocol 112) pass between the nodes"
			} else {
				c = checkOK(name, fmt.Sprintf("%s answers ICMP echo from %s (%s) in %s", peer, kc.Interface, kc.Self, fmtRTT(rtt)))
				c.RTTMillis = toMillis(rtt)
			}
			c.Address = peer.String()
			peers[i] = c
		})
	}
	checks = append(checks, keepalivedCheck(ctx, cfg.HA.VRRP.Keepalived, kc))
	wg.Wait()
	return append(checks, peers...)
}

// keepalivedCheck has keepalived check the keepalived.conf ober would
// run it with. The track and notify files are scratch paths: -t reads
// neither.
func keepalivedCheck(ctx context.Context, binary string, kc vrrp.Config) testCheck {
	const name = "keepalived config"
	tmp, err := os.MkdirTemp("", "ober-test-keepalived-")
	if err != nil {
		return checkFail(name, fmt.Sprintf("scratch directory: %v", err))
	}
	defer os.RemoveAll(tmp)
	kc.TrackFile = filepath.Join(tmp, "track")
	kc.NotifyFIFO = filepath.Join(tmp, "notify")
	text, err := vrrp.Render(kc)
	if err != nil {
		return checkFail(name, oneLine(err))
	}
	conf := filepath.Join(tmp, "keepalived.conf")
	if err := os.WriteFile(conf, text, 0o600); err != nil {
		return checkFail(name, fmt.Sprintf("write %s: %v", conf, err))
	}
	if err := os.WriteFile(kc.TrackFile, []byte("0\n"), 0o600); err != nil {
		return checkFail(name, fmt.Sprintf("write %s: %v", kc.TrackFile, err))
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, binary, "-t", "-f", conf).CombinedOutput()
	if err != nil {
		msg := strings.ReplaceAll(strings.TrimSpace(strings.ReplaceAll(string(out), conf, "keepalived.conf")), "\n", "; ")
		if msg == "" {
			msg = "no output"
		}
		c := checkFail(name, fmt.Sprintf("%s -t rejects the rendered keepalived.conf: %v: %s", binary, err, msg))
		c.Fix = "check ha.vrrp (interface, nodes) and ha.vrrp.keepalived"
		return c
	}
	return checkOK(name, fmt.Sprintf("%s -t accepts the rendered keepalived.conf: %d VRRP instances on %s, self %s, %d peers",
		binary, len(kc.Instances), kc.Interface, kc.Self, len(kc.Peers)))
}

// pingFrom sends ICMP echo requests to peer from iface and self, the way
// keepalived's unicast adverts leave, and returns the round trip of the
// first answer. An echo goes out every quarter of a second, so one lost
// packet (or the first one waiting for ARP) does not fail the check.
func pingFrom(ctx context.Context, iface string, self, peer netip.Addr, wait time.Duration) (time.Duration, error) {
	network, reqType, replyType := "ip4:icmp", byte(8), byte(0)
	if self.Is6() {
		network, reqType, replyType = "ip6:ipv6-icmp", 128, 129
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
		})
		return cmp.Or(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, network, self.String())
	if err != nil {
		return 0, fmt.Errorf("ICMP socket on %s: %w", iface, err)
	}
	defer pc.Close()
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = pc.SetDeadline(deadline)
	id := uint16(rand.Uint32())
	sent := map[uint16]time.Time{}
	dst := &net.IPAddr{IP: peer.AsSlice()}
	send := func(seq uint16) error {
		msg := []byte{reqType, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
		msg = append(msg, "ober test"...)
		if self.Is4() {
			binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		} // the kernel fills in ICMPv6's checksum, which covers the IPv6 header
		sent[seq] = time.Now()
		_, err := pc.WriteTo(msg, dst)
		return err
	}
	// The reader gets every ICMP packet of the namespace; the sender
	// ticks in the same loop through short read deadlines.
	var seq uint16
	next := time.Now()
	var lastErr error
	buf := make([]byte, 1500)
	for {
		now := time.Now()
		if !now.Before(deadline) {
			if lastErr != nil {
				return 0, fmt.Errorf("no answer in %s (last error: %v)", wait, lastErr)
			}
			return 0, fmt.Errorf("no answer to %d ICMP echo requests in %s", len(sent), wait)
		}
		if !now.Before(next) {
			seq++
			if err := send(seq); err != nil {
				lastErr = err
			}
			next = now.Add(wait / 8)
		}
		rd := next
		if deadline.Before(rd) {
			rd = deadline
		}
		_ = pc.SetReadDeadline(rd)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			lastErr = err
			continue
		}
		src, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if !ok || src.Unmap() != peer.Unmap() || n < 8 {
			continue
		}
		p := buf[:n]
		if p[0] != replyType || binary.BigEndian.Uint16(p[4:]) != id {
			continue
		}
		if at, ok := sent[binary.BigEndian.Uint16(p[6:])]; ok {
			return time.Since(at), nil
		}
	}
}

// icmpChecksum is the Internet checksum (RFC 1071) of an ICMPv4 message.
func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func toMillis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

func fmtRTT(d time.Duration) string {
	return strconv.FormatFloat(toMillis(d), 'f', 3, 64) + " ms"
}

// backendWait bounds each backend's connect, TLS handshake and answer
// together, as HAProxy's check does with timeouts.connect.
const backendWait = 3 * time.Second

// backendChecks checks every backend server at once.
func backendChecks(ctx context.Context, cfg *config.Config) []testCheck {
	servers := cfg.Backends.Servers
	out := make([]testCheck, len(servers))
	host := healthHost(servers)
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { out[i] = backendCheck(ctx, s, cfg.Backends.Health.Path, host) })
	}
	wg.Wait()
	return out
}

// healthHost is the Host header of HAProxy's check: the first server's
// SNI, else localhost (control/lib/haproxy).
func healthHost(servers []config.BackendServer) string {
	for _, s := range servers {
		if s.SNI != "" {
			return s.SNI
		}
	}
	return "localhost"
}

// backendCheck does what HAProxy's health check of one server does:
// connect (with the PROXY header and TLS when the server has them), GET
// the health path, read the status.
func backendCheck(ctx context.Context, s config.BackendServer, path, host string) testCheck {
	name := "backend " + s.Name
	ctx, cancel := context.WithTimeout(ctx, backendWait)
	defer cancel()
	addr, err := resolveBackend(ctx, s.Address)
	if err != nil {
		c := checkFail(name, fmt.Sprintf("%s: %v", s.Address, err))
		c.Fix = "check backends.servers[].address and this node's DNS"
		return c
	}
	c := testCheck{Name: name, Address: addr.String()}
	where := addr.String()
	if h, _, _ := net.SplitHostPort(s.Address); h != addr.Addr().String() {
		where = fmt.Sprintf("%s (%s)", s.Address, addr)
	}
	fail := func(detail, fix string) testCheck {
		c.Status, c.Detail, c.Fix = testFail, where+": "+detail, fix
		return c
	}
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return fail(fmt.Sprintf("TCP connect: %v", unwrapOp(err)), "check that the S3 gateway runs and that this node can route to it")
	}
	defer conn.Close()
	took := time.Since(start)
	c.RTTMillis = toMillis(took)
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if s.ProxyProtocol {
		// A LOCAL header, as HAProxy's check-send-proxy sends: no client
		// addresses, the server answers for itself.
		hdr := []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
		if _, err := conn.Write(hdr); err != nil {
			return fail(fmt.Sprintf("send PROXY header: %v", unwrapOp(err)), "")
		}
	}
	if s.TLS {
		tc := &tls.Config{ServerName: s.SNI, InsecureSkipVerify: s.CAFile == ""}
		if tc.ServerName == "" {
			tc.ServerName = addr.Addr().String()
		}
		if s.CAFile != "" {
			pem, err := os.ReadFile(s.CAFile)
			if err != nil {
				return fail(fmt.Sprintf("read ca_file: %v", err), "correct backends.servers[].ca_file")
			}
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM(pem)
		}
		t := tls.Client(conn, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			return fail(fmt.Sprintf("TLS handshake: %v", err), "check backends.servers[].tls, sni and ca_file against the gateway's certificate")
		}
		conn = t
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ober-test\r\nConnection: close\r\n\r\n", path, host)
	if _, err := conn.Write([]byte(req)); err != nil {
		return fail(fmt.Sprintf("send GET %s: %v", path, unwrapOp(err)), "")
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fail(fmt.Sprintf("GET %s: no HTTP answer: %v", path, unwrapOp(err)), "check that the address is an S3 gateway speaking HTTP (or set tls: true)")
	}
	resp.Body.Close()
	c.HTTPStatus = resp.StatusCode
	got := fmt.Sprintf("connect %s, GET %s answered %s", fmtRTT(took), path, resp.Status)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 400:
		c.OK, c.Status, c.Detail = true, testOK, where+": "+got
	case resp.StatusCode < 500:
		c.OK, c.Status = true, testOK
		c.Detail = where + ": " + got + ", which HAProxy's check counts as up (S3 answers anonymous requests with 403)"
	default:
		return fail(got+": HAProxy's check counts it as down (it wants 2xx-4xx)", "check the gateway's health, or set backends.health.path")
	}
	return c
}

// resolveBackend picks the address ober connects to: the literal, or the
// first address of the name, IPv4 before IPv6 and in ascending order
// (the rule of config.Resolve).
func resolveBackend(ctx context.Context, hostport string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: not a number", port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a, uint16(p)), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("does not resolve: %v", err)
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, errors.New("does not resolve: no address")
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int {
		if a.Is4() != b.Is4() {
			if a.Is4() {
				return -1
			}
			return 1
		}
		return a.Compare(b)
	})
	return netip.AddrPortFrom(addrs[0], uint16(p)), nil
}

// unwrapOp drops the "dial tcp A->B: connect:" prefix of a network
// error: the line names the address and the step already.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) && sys.Err != nil {
		err = sys.Err
	}
	return err
}

func tlsChecks(cfg *config.Config) []testCheck {
	var out []testCheck
	for _, r := range doctor.CheckCerts(doctor.DefaultEnv(), cfg) {
		c := fromDoctor(r)
		if !c.OK {
			// doctor's detail names the files at fault; the service
			// leads, for the operator who greps for it.
			c.Detail = "service " + strings.TrimPrefix(c.Name, "tls ") + ": " + c.Detail
		}
		out = append(out, c)
	}
	return out
}

func ifaceChecks(ctx context.Context, cfg *config.Config) []testCheck {
	var out []testCheck
	for _, r := range doctor.CheckInterfaces(ctx, doctor.DefaultEnv(), cfg) {
		out = append(out, fromDoctor(r))
	}
	return out
}

// oneLine joins a multi-problem error for a one-line report.
func oneLine(err error) string {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}
