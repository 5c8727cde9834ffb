package haproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strings"
	"time"
)

// BackendName is the one backend every frontend forwards to.
const BackendName = "s3"

// MaxStatsSocketPath is the longest stats socket path HAProxy accepts:
// it binds "<path>.<pid>.tmp" first and renames it, and refuses paths
// longer than 97 bytes ("socket path ... too long (max 97)").
const MaxStatsSocketPath = 97

// Frontend modes.
const (
	ModeTLS  = "tls"
	ModeHTTP = "http"
)

// Balance algorithms Render accepts.
var balances = map[string]bool{
	"leastconn": true, "roundrobin": true, "source": true, "random": true, "first": true,
}

// Fixed values of the rendered configuration.
const (
	// finTimeout bounds half-closed connections (capped by the client
	// and server timeouts).
	finTimeout = 30 * time.Second
	// h2Window is the HTTP/2 receive window offered to clients. HAProxy's
	// default (65535) caps one stream's upload at about 5 Mbit/s over a
	// 100 ms path; 1 MiB lifts that 16-fold and costs no memory (HAProxy
	// stops reading the socket when its buffer is full).
	h2Window = 1 << 20
	// maxTimeout is the largest timer HAProxy takes (2^31-1 ms).
	maxTimeout = 2147483647 * time.Millisecond

	ciphers12    = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
	ciphersuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
	sslOptions   = "ssl-min-ver TLSv1.2 no-tls-tickets"
)

// Bind is one inherited listening socket of a frontend.
type Bind struct {
	// FD is the descriptor number HAProxy inherits (3, 4, ...).
	FD int
	// Family is 4 or 6; it only labels the bind in a comment.
	Family int
}

// Frontend is one service: its listening sockets and how it terminates.
type Frontend struct {
	// Name is unique, of [A-Za-z0-9_.-].
	Name string
	// Mode is "tls" (HAProxy terminates TLS) or "http" (plain HTTP).
	Mode string
	// Port labels the frontend in a comment.
	Port  uint16
	Binds []Bind
	// PEM is, for tls, a combined PEM file (chain and key).
	PEM string
	// VIPs are the destinations the frontend accepts: a connection to
	// any other address, one made to the listener's own loopback port,
	// did not come through sk_lookup and is closed at once. Empty
	// accepts any (a plain HAProxy bound to its addresses).
	VIPs []netip.Addr
	// Whitelist is a file of client prefixes, one per line (WriteACL):
	// only those may connect. Empty admits every client.
	Whitelist string
}

// Server is one S3 backend server.
type Server struct {
	// Name is unique, of [A-Za-z0-9_.-].
	Name string
	Addr netip.AddrPort
	// Weight is 0..256; 0 keeps the server checked but out of rotation.
	Weight int
	// TLS re-encrypts to the server; CAFile verifies it (without CAFile
	// the certificate is not verified). SNI is sent when set, and with
	// CAFile the certificate must match it.
	TLS    bool
	CAFile string
	SNI    string
	// ProxyProtocol sends a PROXY v2 header, also on health checks.
	ProxyProtocol bool
}

// HealthCheck is the active HTTP check of every server.
type HealthCheck struct {
	// Path of the GET, starting with "/".
	Path string
	// Host is the Host header of the check; default the first server SNI,
	// else "localhost". S3 answers an anonymous GET with 403 whatever the
	// Host, which counts as up.
	Host     string
	Interval time.Duration
	Fall     int
	Rise     int
}

// Timeouts bound each phase of a connection.
type Timeouts struct {
	Connect       time.Duration
	Client        time.Duration
	Server        time.Duration
	HTTPRequest   time.Duration
	HTTPKeepAlive time.Duration
	// Drain is how long a soft-stopped instance may finish its
	// connections (hard-stop-after); 0 waits for them indefinitely.
	Drain time.Duration
	// TLSHandshake bounds a TLS handshake where HAProxy can (timeout
	// client-hs, 3.0 and later); 0 leaves it to the client timeout.
	TLSHandshake time.Duration
}

// Instance is one HAProxy process: one configuration file.
type Instance struct {
	Index int
	CPU   int
	Node  string
	// StatsSocket is the runtime API socket path (level admin).
	StatsSocket string
	Frontends   []Frontend
	Servers     []Server
	// Balance is leastconn, roundrobin, source, random or first.
	Balance string
	Health  HealthCheck
	// Timeouts are all required except Drain.
	Timeouts Timeouts
	// MaxConn caps the instance's client connections (global and per
	// frontend). HAProxy needs about 2*MaxConn descriptors and refuses to
	// start ("Cannot raise FD limit") when RLIMIT_NOFILE's hard limit is
	// lower; haproxy -c does not check this.
	MaxConn int
	// ServedByHeader adds "X-Served-By: <Node>/<Index>" to responses.
	ServedByHeader bool
	// ConnsPerSource caps the connections one client address may have
	// open on this instance, RatePerSource the ones it may open per
	// second; 0 is no cap.
	ConnsPerSource, RatePerSource int
	// Version is the HAProxy release the file is for (DetectVersion).
	Version Version
	// Threads above 1 renders one unpinned process with that many
	// threads instead of a single thread pinned to CPU: what a plain
	// HAProxy deployment runs, for side-by-side benchmarks. ober's
	// instances leave it 0.
	Threads int
	// User and Group are the unprivileged account HAProxy switches to,
	// and Chroot the empty directory it confines itself to, once it has
	// read its configuration and certificates and created its runtime
	// socket as root. All three are required: no rendered instance
	// keeps root's privileges.
	User, Group, Chroot string
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	// accountRE is a user or group name HAProxy looks up (not a number).
	accountRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
	// hostRE covers DNS names and bracketed or bare IP literals.
	hostRE = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]-]+$`)
)

// checkName checks the name of the i-th frontend or server (kind) for
// presence, syntax and uniqueness among seen, and returns the label that
// names it in further errors.
func checkName(kind string, i int, name string, seen map[string]bool, bad func(string, ...any)) string {
	label := fmt.Sprintf("%s %d (%q)", kind, i, name)
	switch {
	case name == "":
		bad("%s %d: name is required", kind, i)
	case !nameRE.MatchString(name):
		bad("%s: only letters, digits, '_', '.' and '-' are allowed in names", label)
	case seen[name]:
		bad("%s: duplicate %s name", label, kind)
	}
	seen[name] = true
	return label
}

// Render writes the configuration of one instance. The output depends
// only on in, so an unchanged instance renders byte-identical text.
func Render(in Instance) ([]byte, error) {
	if err := validate(&in); err != nil {
		return nil, fmt.Errorf("haproxy config for instance %d: %w", in.Index, err)
	}
	f := FeaturesFor(in.Version)
	t := in.Timeouts
	var w writer

	node := ""
	if in.Node != "" {
		node = " of node " + in.Node
	}
	w.line("# Generated by ober for instance %d on CPU %d%s. Do not edit: ober", in.Index, in.CPU, node)
	raw := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, in.Version.Raw)
	if raw == "" {
		raw = "version line not recorded"
	}
	w.line("# rewrites it. For HAProxy %s (%s).", in.Version, raw)
	w.line("# Features: %s", f)
	w.line("")

	w.line("global")
	if in.Threads > 1 {
		// The unpinned multi-threaded layout: the benchmarks' baseline.
		w.opt("nbthread %d", in.Threads)
	} else {
		w.opt("nbthread 1")
		// "1/all": HAProxy 2.6 accepts "cpu-map 1/1 N" but does not apply
		// it with a single thread; "1/all" pins on 2.6 and later.
		w.opt("cpu-map 1/all %d", in.CPU)
	}
	w.opt("maxconn %d", in.MaxConn)
	w.opt("stats socket %s mode 600 level admin", in.StatsSocket)
	// Applied after the files above and below are read and the sockets
	// created, as root: the keys and the runtime socket stay root's, and
	// the running process has no capability and sees an empty tree.
	w.opt("user %s", in.User)
	w.opt("group %s", in.Group)
	w.opt("chroot %s", in.Chroot)
	if t.Drain > 0 {
		w.opt("hard-stop-after %s", duration(t.Drain))
	}
	// Raw lines on stdout: ober reads them. "notice" keeps server state
	// changes and, with log-separate-errors, failed requests; successful
	// requests log at "info" and are filtered out.
	w.opt("log stdout format raw local0 notice")
	w.opt("ssl-default-bind-ciphers %s", ciphers12)
	w.opt("ssl-default-bind-ciphersuites %s", ciphersuites)
	w.opt("ssl-default-bind-options %s", sslOptions)
	w.opt("ssl-default-server-ciphers %s", ciphers12)
	w.opt("ssl-default-server-ciphersuites %s", ciphersuites)
	w.opt("ssl-default-server-options %s", sslOptions)
	if hasTLSFrontend(in.Frontends) {
		if f.H2FrontendWindow {
			w.opt("tune.h2.fe.initial-window-size %d", h2Window)
		} else {
			w.opt("tune.h2.initial-window-size %d", h2Window)
		}
	}
	w.line("")

	w.line("defaults")
	w.opt("mode http")
	w.opt("log global")
	w.opt("option httplog")
	w.opt("option dontlognull")
	w.opt("option log-separate-errors")
	w.opt("option http-keep-alive")
	w.opt("option redispatch")
	w.opt("retries 3")
	w.opt("timeout connect %s", duration(t.Connect))
	w.opt("timeout client %s", duration(t.Client))
	w.opt("timeout server %s", duration(t.Server))
	w.opt("timeout http-request %s", duration(t.HTTPRequest))
	w.opt("timeout http-keep-alive %s", duration(t.HTTPKeepAlive))
	w.opt("timeout client-fin %s", duration(min(finTimeout, t.Client)))
	w.opt("timeout server-fin %s", duration(min(finTimeout, t.Server)))
	w.opt("timeout tunnel %s", duration(t.Client))
	if f.ClientHandshakeTimeout {
		hs := t.TLSHandshake
		if hs == 0 {
			hs = t.HTTPRequest
		}
		w.opt("timeout client-hs %s", duration(hs))
	}
	w.line("")

	for _, fe := range in.Frontends {
		w.line("frontend %s", fe.Name)
		for _, b := range fe.Binds {
			bind := fmt.Sprintf("bind fd@%d", b.FD)
			if fe.Mode == ModeTLS {
				bind += " ssl crt " + fe.PEM + " alpn h2,http/1.1"
			}
			w.opt("%s  # IPv%d port %d", bind, b.Family, fe.Port)
		}
		w.opt("maxconn %d", in.MaxConn)
		acceptRules(&w, in, fe)
		proto := "http"
		if fe.Mode == ModeTLS {
			proto = "https"
		}
		// Both headers replace whatever the client sent; S3 signatures
		// never cover them. Host, Authorization, x-amz-* and the body
		// (Expect: 100-continue, chunked) pass untouched.
		w.opt("http-request set-header X-Forwarded-Proto %s", proto)
		w.opt("http-request set-header X-Forwarded-For %%[src]")
		if in.ServedByHeader {
			w.opt("http-response set-header X-Served-By %s/%d", in.Node, in.Index)
		}
		w.opt("default_backend %s", BackendName)
		w.line("")
	}

	h := in.Health
	w.line("backend %s", BackendName)
	w.opt("balance %s", in.Balance)
	w.opt("option httpchk")
	w.opt("http-check send meth GET uri %s ver HTTP/1.1 hdr Host %s", h.Path, h.Host)
	// S3 answers an anonymous GET with 403: any 2xx-4xx means alive.
	w.opt("http-check expect rstatus ^[234]")
	w.opt("default-server inter %s fall %d rise %d", duration(h.Interval), h.Fall, h.Rise)
	for _, s := range in.Servers {
		w.opt("%s", serverLine(s))
	}
	return w.bytes(), nil
}

// acceptRules are the frontend's checks at accept, before TLS and before
// any byte is read: they close a connection at once.
func acceptRules(w *writer, in Instance, fe Frontend) {
	if len(fe.VIPs) > 0 {
		// sk_lookup hands over connections to the VIPs; one to the
		// listener's own loopback port came another way, past XDP.
		var vips []string
		for _, v := range fe.VIPs {
			vips = append(vips, v.Unmap().String())
		}
		w.opt("tcp-request connection reject unless { dst %s }", strings.Join(vips, " "))
	}
	if fe.Whitelist != "" {
		// The list XDP enforces on node.interfaces, again: a connection
		// through another NIC, a tunnel or from this node never met it.
		w.opt("tcp-request connection reject unless { src -f %s }", fe.Whitelist)
	}
	if in.ConnsPerSource == 0 && in.RatePerSource == 0 {
		return
	}
	// One row per client address; room for every connection the
	// instance may hold, each from another address, and as many gone.
	var store []string
	if in.ConnsPerSource > 0 {
		store = append(store, "conn_cur")
	}
	if in.RatePerSource > 0 {
		store = append(store, "conn_rate(1s)")
	}
	w.opt("stick-table type ipv6 size %d expire 10s store %s", 2*in.MaxConn, strings.Join(store, ","))
	w.opt("tcp-request connection track-sc0 src")
	if in.ConnsPerSource > 0 {
		w.opt("tcp-request connection reject if { sc0_conn_cur gt %d }", in.ConnsPerSource)
	}
	if in.RatePerSource > 0 {
		w.opt("tcp-request connection reject if { sc0_conn_rate gt %d }", in.RatePerSource)
	}
}

func serverLine(s Server) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server %s %s weight %d check", s.Name, serverAddr(s.Addr), s.Weight)
	if s.TLS {
		if s.CAFile != "" {
			b.WriteString(" ssl verify required ca-file " + s.CAFile)
			if s.SNI != "" {
				b.WriteString(" verifyhost " + s.SNI)
			}
		} else {
			b.WriteString(" ssl verify none")
		}
		if s.SNI != "" {
			// sni covers traffic; checks have no stream to evaluate it
			// and need check-sni.
			b.WriteString(" sni str(" + s.SNI + ") check-sni " + s.SNI)
		}
	}
	if s.ProxyProtocol {
		b.WriteString(" send-proxy-v2 check-send-proxy")
	}
	return b.String()
}

// serverAddr writes IPv4 as a.b.c.d:port and IPv6 as [addr]:port, which
// HAProxy parses unambiguously (a bare "2001:db8::1:80" would be read as
// address 2001:db8::1 port 80 only by the "last colon" rule).
func serverAddr(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return fmt.Sprintf("%s:%d", a, ap.Port())
	}
	return fmt.Sprintf("[%s]:%d", a, ap.Port())
}

func hasTLSFrontend(fes []Frontend) bool {
	for _, fe := range fes {
		if fe.Mode == ModeTLS {
			return true
		}
	}
	return false
}

// validate checks in and fills the defaults Render documents (the check
// Host).
func validate(in *Instance) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if err := in.Version.Supported(); err != nil {
		bad("%v", err)
	}
	if in.Index < 0 {
		bad("instance index %d is negative", in.Index)
	}
	if in.CPU < 0 {
		bad("CPU %d is negative", in.CPU)
	}
	if in.ServedByHeader && in.Node == "" {
		bad("node name is required for the X-Served-By header")
	}
	if in.Node != "" && !nameRE.MatchString(in.Node) {
		bad("node name %q: only letters, digits, '_', '.' and '-' are allowed", in.Node)
	}
	if in.MaxConn <= 0 {
		bad("maxconn %d must be positive", in.MaxConn)
	}
	if in.ConnsPerSource < 0 || in.RatePerSource < 0 {
		bad("per-source limits %d connections, %d per second: must not be negative", in.ConnsPerSource, in.RatePerSource)
	}
	switch {
	case in.StatsSocket == "":
		bad("stats socket path is required")
	case !strings.HasPrefix(in.StatsSocket, "/"):
		bad("stats socket path %q must be absolute", in.StatsSocket)
	case !safeWord(in.StatsSocket):
		bad("stats socket path %q has a space, quote, '#' or control character", in.StatsSocket)
	case len(in.StatsSocket) > MaxStatsSocketPath:
		bad("stats socket path %q is %d bytes; HAProxy takes at most %d", in.StatsSocket, len(in.StatsSocket), MaxStatsSocketPath)
	}
	if !balances[in.Balance] {
		bad("balance %q: want leastconn, roundrobin, source, random or first", in.Balance)
	}
	for _, a := range []struct{ kind, name string }{{"user", in.User}, {"group", in.Group}} {
		switch {
		case a.name == "":
			bad("%s is required: HAProxy must not keep root's privileges", a.kind)
		case !accountRE.MatchString(a.name):
			bad("%s %q is not a user or group name", a.kind, a.name)
		case a.name == "root":
			bad("%s root: HAProxy must not keep root's privileges", a.kind)
		}
	}
	switch {
	case in.Chroot == "":
		bad("chroot directory is required")
	case !strings.HasPrefix(in.Chroot, "/"):
		bad("chroot directory %q must be absolute", in.Chroot)
	case !safeWord(in.Chroot):
		bad("chroot directory %q has a space, quote, '#' or control character", in.Chroot)
	case path.Clean(in.Chroot) == "/":
		bad("chroot directory %q is the whole file system", in.Chroot)
	}
	validateTimeouts(in.Timeouts, bad)

	// Frontends.
	if len(in.Frontends) == 0 {
		bad("no frontends")
	}
	names := map[string]bool{}
	fds := map[int]string{}
	for i, fe := range in.Frontends {
		label := checkName("frontend", i, fe.Name, names, bad)
		switch fe.Mode {
		case ModeTLS:
			switch {
			case fe.PEM == "":
				bad("%s: mode tls needs a PEM file", label)
			case !safeWord(fe.PEM):
				bad("%s: PEM path %q has a space, quote, '#' or control character", label, fe.PEM)
			}
		case ModeHTTP:
			if fe.PEM != "" {
				bad("%s: mode http takes no PEM file", label)
			}
		default:
			bad("%s: mode %q: want tls or http", label, fe.Mode)
		}
		if fe.Port == 0 {
			bad("%s: port is required", label)
		}
		for _, v := range fe.VIPs {
			if !v.IsValid() || v.Zone() != "" {
				bad("%s: VIP %s is not an address", label, v)
			}
		}
		if fe.Whitelist != "" && (!strings.HasPrefix(fe.Whitelist, "/") || !safeWord(fe.Whitelist)) {
			bad("%s: whitelist file %q must be an absolute path without spaces, quotes, '#' or control characters", label, fe.Whitelist)
		}
		if len(fe.Binds) == 0 {
			bad("%s: no binds (inherited sockets)", label)
		}
		for _, b := range fe.Binds {
			if b.FD < 3 {
				bad("%s: fd %d: inherited sockets start at fd 3 (0-2 are stdio)", label, b.FD)
			} else if other, dup := fds[b.FD]; dup {
				bad("%s: fd %d is already bound by frontend %q", label, b.FD, other)
			} else {
				fds[b.FD] = fe.Name
			}
			if b.Family != 4 && b.Family != 6 {
				bad("%s: fd %d: family %d: want 4 or 6", label, b.FD, b.Family)
			}
		}
	}

	// Servers.
	if len(in.Servers) == 0 {
		bad("no backend servers")
	}
	snames := map[string]bool{}
	for i, s := range in.Servers {
		label := checkName("server", i, s.Name, snames, bad)
		switch {
		case !s.Addr.IsValid() || !s.Addr.Addr().IsValid():
			bad("%s: address is required", label)
		case s.Addr.Port() == 0:
			bad("%s: address %s has no port", label, s.Addr)
		case s.Addr.Addr().Zone() != "":
			bad("%s: address %s: HAProxy takes no IPv6 zone", label, s.Addr)
		case s.Addr.Addr().IsUnspecified():
			bad("%s: address %s is unspecified", label, s.Addr)
		}
		if s.Weight < 0 || s.Weight > 256 {
			bad("%s: weight %d: want 0..256", label, s.Weight)
		}
		if !s.TLS && (s.CAFile != "" || s.SNI != "") {
			bad("%s: CA file and SNI need TLS", label)
		}
		if s.CAFile != "" && !safeWord(s.CAFile) {
			bad("%s: CA file %q has a space, quote, '#' or control character", label, s.CAFile)
		}
		if s.SNI != "" && (!hostRE.MatchString(s.SNI) || strings.ContainsAny(s.SNI, "[]")) {
			bad("%s: SNI %q is not a host name", label, s.SNI)
		}
	}

	// Health check.
	h := &in.Health
	switch {
	case h.Path == "":
		bad("health check path is required")
	case !strings.HasPrefix(h.Path, "/"):
		bad("health check path %q must start with '/'", h.Path)
	case !safeWord(h.Path):
		bad("health check path %q has a space, quote, '#' or control character", h.Path)
	}
	if h.Host == "" {
		h.Host = "localhost"
		for _, s := range in.Servers {
			if s.SNI != "" {
				h.Host = s.SNI
				break
			}
		}
	} else if !hostRE.MatchString(h.Host) {
		bad("health check Host %q is not a host name", h.Host)
	}
	if h.Interval < time.Millisecond || h.Interval > maxTimeout {
		bad("health check interval %v: want 1ms..%v", h.Interval, maxTimeout)
	}
	if h.Fall < 1 {
		bad("health check fall %d must be at least 1", h.Fall)
	}
	if h.Rise < 1 {
		bad("health check rise %d must be at least 1", h.Rise)
	}
	return errors.Join(errs...)
}

func validateTimeouts(t Timeouts, bad func(string, ...any)) {
	for _, x := range []struct {
		name string
		d    time.Duration
	}{
		{"connect", t.Connect},
		{"client", t.Client},
		{"server", t.Server},
		{"http-request", t.HTTPRequest},
		{"http-keep-alive", t.HTTPKeepAlive},
	} {
		if x.d < time.Millisecond || x.d > maxTimeout {
			bad("timeout %s %v: want 1ms..%v", x.name, x.d, maxTimeout)
		}
	}
	if t.Drain < 0 || t.Drain > maxTimeout {
		bad("drain timeout %v: want 0..%v", t.Drain, maxTimeout)
	}
	if t.TLSHandshake < 0 || t.TLSHandshake > maxTimeout {
		bad("tls handshake timeout %v: want 0..%v", t.TLSHandshake, maxTimeout)
	}
}

// safeWord reports whether s can stand unquoted as one word of an HAProxy
// configuration line.
func safeWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`"'\#`, r) {
			return false
		}
	}
	return true
}

// duration writes d in HAProxy's time format with the largest exact unit,
// rounding sub-millisecond remainders up.
func duration(d time.Duration) string {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	switch {
	case ms%3600000 == 0:
		return fmt.Sprintf("%dh", ms/3600000)
	case ms%60000 == 0:
		return fmt.Sprintf("%dm", ms/60000)
	case ms%1000 == 0:
		return fmt.Sprintf("%ds", ms/1000)
	default:
		return fmt.Sprintf("%dms", ms)
	}
}

type writer struct{ b strings.Builder }

func (w *writer) line(format string, args ...any) {
	fmt.Fprintf(&w.b, format, args...)
	w.b.WriteByte('\n')
}

func (w *writer) opt(format string, args ...any) {
	w.b.WriteString("    ")
	w.line(format, args...)
}

func (w *writer) bytes() []byte { return []byte(w.b.String()) }
