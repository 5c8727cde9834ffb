package haproxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// DefaultPool is the pool of the top-level backends, which the tls and
// http services share. Its priority-1 tier keeps the backend name "s3"
// of the releases that had one pool, so logs and dashboards keep it.
const DefaultPool = "s3"

// MaxStatsSocketPath is the longest stats socket path HAProxy accepts:
// it binds "<path>.<pid>.tmp" first and renames it, and refuses paths
// longer than 97 bytes ("socket path ... too long (max 97)").
const MaxStatsSocketPath = 97

// Frontend modes. A tcp frontend with Passthrough set routes TLS
// connections by their SNI without terminating them.
const (
	ModeTLS  = "tls"
	ModeHTTP = "http"
	ModeTCP  = "tcp"
)

// Balance methods: ober's vocabulary (config.Balance*), rendered as
// balanceLines says.
const (
	BalanceRoundRobin     = "roundrobin"
	BalanceWeighted       = "weighted"
	BalanceLeastConn      = "leastconn"
	BalanceSource         = "source"
	BalanceConsistent     = "consistent"
	BalanceRandom         = "random"
	BalanceFirst          = "first"
	BalanceLeastBandwidth = "leastbandwidth"
)

// balanceLines are the backend lines of each balance method. roundrobin
// and weighted differ only in the weights the caller gives (every
// server the same under roundrobin); leastbandwidth is weighted round
// robin whose weights ober sets from the servers' byte rates. "source"
// keeps HAProxy's map-based hash, a static algorithm: at run time a
// server's weight can only be set to 0% or 100% of its rendered one.
var balanceLines = map[string][]string{
	BalanceRoundRobin:     {"balance roundrobin"},
	BalanceWeighted:       {"balance roundrobin"},
	BalanceLeastConn:      {"balance leastconn"},
	BalanceSource:         {"balance source"},
	BalanceConsistent:     {"balance source", "hash-type consistent"},
	BalanceRandom:         {"balance random(2)"},
	BalanceFirst:          {"balance first"},
	BalanceLeastBandwidth: {"balance roundrobin"},
}

// Server admin states, as the runtime API's "set server ... state" takes
// them.
const (
	StateReady = "ready"
	StateDrain = "drain"
	StateMaint = "maint"
)

// PROXY protocol versions a server may be sent.
const (
	ProxyV1 = 1
	ProxyV2 = 2
)

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
	// h2Glitches is how many HTTP/2 protocol glitches a client connection
	// may commit before it is closed (HAProxy 3.0). A well-behaved client
	// commits next to none; a rapid-reset or CONTINUATION flood commits
	// thousands within a second. 3.0 sets no threshold by default.
	h2Glitches = 1000
	// h2TotalStreams is how many requests a client HTTP/2 connection
	// carries before a graceful GOAWAY (HAProxy 3.0): its client then
	// reconnects, so that long-lived connections spread again over the
	// instances and nodes after one was added. One new TLS handshake per
	// 10000 requests costs nothing measurable.
	h2TotalStreams = 10000
	// maxTimeout is the largest timer HAProxy takes (2^31-1 ms).
	maxTimeout = 2147483647 * time.Millisecond

	ciphers12    = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
	ciphersuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
	sslOptions   = "ssl-min-ver TLSv1.2 no-tls-tickets"
	// sslTicketOptions are the binds' with session tickets on
	// (Instance.TicketKeys).
	sslTicketOptions = "ssl-min-ver TLSv1.2"
)

// Bind is one inherited listening socket of a frontend.
type Bind struct {
	// FD is the descriptor number HAProxy inherits (3, 4, ...).
	FD int
	// Family is 4 or 6; it only labels the bind in a comment.
	Family int
}

// Frontend is one service: its listening sockets, how it terminates and
// which pool it forwards to.
type Frontend struct {
	// Name is unique among frontends, of [A-Za-z0-9_.-].
	Name string
	// Mode is "tls" (HAProxy terminates TLS), "http" (plain HTTP) or
	// "tcp" (an L4 proxy; with Passthrough, TLS routed by SNI).
	Mode string
	// Port labels the frontend in a comment; LastPort, when set, is the
	// end of the range of ports the one listener serves (mode tcp): the
	// dataplane hands it every port of the range.
	Port, LastPort uint16
	Binds          []Bind
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
	// Pool names the Instance pool the frontend forwards to. With
	// Passthrough it is the pool of a connection no route matches (or
	// without a name), and empty refuses those.
	Pool string
	// Passthrough routes the TLS connections of a tcp frontend by their
	// SNI.
	Passthrough *Passthrough
	// RejectWhenDown closes a connection at once, before any TLS
	// handshake or byte read, when no server of the pool it would go to
	// is usable in any tier (fallback reject). In http and tls modes a
	// request on a connection already open is closed without an answer
	// too. Unset, HAProxy answers 503 (http, tls) or closes the
	// connection once it finds no server (tcp).
	RejectWhenDown bool
	// MaxConn caps the frontend's connections; 0 is Instance.MaxConn.
	MaxConn int
	// ClientTimeout is the client side's idle timeout (timeout client);
	// 0 keeps Timeouts.Client. See Pool.ServerTimeout for tcp.
	ClientTimeout time.Duration
}

// Passthrough is SNI routing without TLS termination: HAProxy reads the
// ClientHello (waiting up to InspectDelay for it), sends the connection
// to the pool of the first route that matches, else to the frontend's
// Pool, else closes it. A connection that is not TLS is closed.
type Passthrough struct {
	InspectDelay time.Duration
	Routes       []SNIRoute
}

// SNIRoute sends the connections whose SNI matches to Pool. Names match
// exactly, Regexp (PCRE, which agrees with RE2 on the expressions host
// names need) anywhere in the name unless anchored; both ignore case,
// as DNS does. A route may have both: either matches.
type SNIRoute struct {
	Names  []string
	Regexp string
	Pool   string
}

// Pool is a service's set of servers. Each priority among its servers is
// a tier, rendered as its own HAProxy backend (TierBackend): a frontend
// sends a connection to the first tier, lowest priority number first,
// with a usable server (ready, weight above 0), else to the last tier.
type Pool struct {
	// Name is unique in the instance, of [A-Za-z0-9_.:-]; ':' is free
	// for the caller to join a service's and a pool's names
	// ("web:api"), and TierBackend appends ":p<priority>".
	Name string
	// Balance is one of the Balance* methods.
	Balance string
	Servers []Server
	// ConnectTimeout and ServerTimeout (the server side's idle timeout)
	// override Timeouts.Connect and Timeouts.Server when set.
	//
	// Once a connection is established HAProxy keeps one idle timeout
	// for both sides (timeout tunnel: every tcp connection, and the
	// tunnels of http ones). When the pool or a frontend using it sets
	// its own, that is the larger of the server's and the frontends'
	// client timeouts, so neither side's setting cuts a connection the
	// other allows.
	ConnectTimeout, ServerTimeout time.Duration
}

// Server is one backend server of a pool.
type Server struct {
	// Name is unique in its pool, of [A-Za-z0-9_.-].
	Name string
	// Addr is the server's address. A port of 0 connects to the port
	// the client connected to (tcp pools only: a port range).
	Addr netip.AddrPort
	// Weight is 0..256, rendered as given whatever the balance method:
	// the caller gives every server of a roundrobin pool the same one.
	// 0 keeps the server out of rotation.
	Weight int
	// Priority is the server's tier: lower first; 0 counts as 1.
	Priority int
	// State is the server's admin state when the instance starts:
	// StateReady (or empty), StateDrain or StateMaint. Drain and maint
	// render "disabled": a new instance has no connection to let
	// finish, and the runtime API ("set server ... state") moves the
	// server on from there.
	State string
	// TLS re-encrypts to the server; CAFile verifies it (without CAFile
	// the certificate is not verified). SNI is sent when set, and with
	// CAFile the certificate must match it.
	TLS    bool
	CAFile string
	SNI    string
	// ProxyProtocol sends a PROXY header of that version (ProxyV1,
	// ProxyV2) first; 0 sends none.
	ProxyProtocol int
	// ID, when set, is the server's id in its backend instead of its
	// position. HAProxy places a server on a consistent hash's ring by
	// id: a stable one keeps the other servers' clients in place when a
	// server is added or removed before them.
	ID int
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
	// Pools are the pools the frontends use, each used by at least one,
	// all of whose frontends are http and tls ones or all tcp ones.
	Pools []Pool
	// Timeouts are all required except Drain.
	Timeouts Timeouts
	// MaxConn caps the instance's client connections (global, and each
	// frontend without its own). HAProxy needs about 2*MaxConn
	// descriptors and refuses to start ("Cannot raise FD limit") when
	// RLIMIT_NOFILE's hard limit is lower; haproxy -c does not check
	// this.
	MaxConn int
	// ServedByHeader adds "X-Served-By: <Node>/<Index>" to responses.
	ServedByHeader bool
	// ConnsPerSource caps the connections one client address may have
	// open on each frontend of this instance, RatePerSource the ones it
	// may open per second; 0 is no cap.
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
	// TicketKeys is the tls-ticket-keys file of the TLS frontends: set,
	// they issue session tickets encrypted with its keys, which every
	// instance given the same file accepts, and the runtime API changes
	// them ("set ssl tls-key <file>"). Empty, tickets are off and a
	// session resumes only on the instance that keeps it in its cache.
	TicketKeys string
	// Tune sets HAProxy's buffer and TLS record sizes; zero fields keep
	// the defaults.
	Tune Tune
}

// TierBackend is the HAProxy backend of a pool's servers of one
// priority: the pool's name for priority 1 (and 0), so that a pool
// without priorities keeps its name, else "<pool>:p<priority>".
func TierBackend(pool string, priority int) string {
	if priority <= 1 {
		return pool
	}
	return fmt.Sprintf("%s:p%d", pool, priority)
}

// tier is one rendered backend: the servers of one priority of a pool.
type tier struct {
	name    string
	servers []Server
}

// layout is what validate derives from an instance for rendering.
type layout struct {
	// tiers of each pool, lowest priority first.
	tiers map[string][]tier
	// tcp pools are rendered in mode tcp.
	tcp map[string]bool
	// tunnel is a pool's tunnel timeout when it needs its own.
	tunnel map[string]time.Duration
}

// Render writes the configuration of one instance. The output depends
// only on in, so an unchanged instance renders byte-identical text.
func Render(in Instance) ([]byte, error) {
	lay, err := validate(in)
	if err != nil {
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
	// No close-spread-time (2.6 and 3.0 have it): with it a soft-stopped
	// instance answers 408 to a request whose headers are still arriving
	// (TestRealSoftStop), where without it the request is served.
	// Raw lines on stdout: ober reads them. "notice" keeps server state
	// changes and, with log-separate-errors, failed requests; successful
	// requests log at "info" and are filtered out.
	w.opt("log stdout format raw local0 notice")
	w.opt("ssl-default-bind-ciphers %s", ciphers12)
	w.opt("ssl-default-bind-ciphersuites %s", ciphersuites)
	if in.TicketKeys != "" {
		w.opt("ssl-default-bind-options %s", sslTicketOptions)
	} else {
		w.opt("ssl-default-bind-options %s", sslOptions)
	}
	w.opt("ssl-default-server-ciphers %s", ciphers12)
	w.opt("ssl-default-server-ciphersuites %s", ciphersuites)
	w.opt("ssl-default-server-options %s", sslOptions)
	for _, tf := range in.Tune.Fields() {
		if *tf.Value != 0 {
			w.opt("%s %d", tf.Directive, *tf.Value)
		}
	}
	if hasTLSFrontend(in.Frontends) {
		if f.H2FrontendWindow {
			w.opt("tune.h2.fe.initial-window-size %d", h2Window)
		} else {
			w.opt("tune.h2.initial-window-size %d", h2Window)
		}
		if f.H2GlitchesThreshold {
			w.opt("tune.h2.fe.glitches-threshold %d", h2Glitches)
		}
		if f.H2MaxTotalStreams {
			w.opt("tune.h2.fe.max-total-streams %d", h2TotalStreams)
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
	// A soft-stopped instance (a reload) keeps a client's idle keep-alive
	// connection until the client's next request, answers it with
	// "Connection: close", and only then closes: closing it at once races
	// a request the client (an S3 SDK's pool) may be sending on it, which
	// then fails with a reset. hard-stop-after still bounds the wait.
	w.opt("option idle-close-on-response")
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
		frontend(&w, in, lay, fe)
		w.line("")
	}
	first := true
	for _, p := range in.Pools {
		for _, tr := range lay.tiers[p.Name] {
			if !first {
				w.line("")
			}
			first = false
			backend(&w, lay, p, tr)
		}
	}
	return w.bytes(), nil
}

func frontend(w *writer, in Instance, lay layout, fe Frontend) {
	w.line("frontend %s", fe.Name)
	if fe.Mode == ModeTCP {
		w.opt("mode tcp")
		// The defaults' httplog cannot describe a TCP session; tcplog
		// logs at the same levels (errors raised by
		// log-separate-errors, successes at info).
		w.opt("option tcplog")
	}
	ports := fmt.Sprint(fe.Port)
	if fe.LastPort > 0 {
		ports = fmt.Sprintf("%d-%d", fe.Port, fe.LastPort)
	}
	for _, b := range fe.Binds {
		bind := fmt.Sprintf("bind fd@%d", b.FD)
		if fe.Mode == ModeTLS {
			bind += " ssl crt " + fe.PEM + " alpn h2,http/1.1"
			if in.TicketKeys != "" {
				bind += " tls-ticket-keys " + in.TicketKeys
			}
		}
		w.opt("%s  # IPv%d port %s", bind, b.Family, ports)
	}
	maxconn := in.MaxConn
	if fe.MaxConn > 0 {
		maxconn = fe.MaxConn
	}
	w.opt("maxconn %d", maxconn)
	if fe.ClientTimeout > 0 {
		w.opt("timeout client %s", duration(fe.ClientTimeout))
	}
	acceptRules(w, in, fe)
	if fe.Passthrough != nil {
		passthrough(w, lay, fe)
		return
	}
	tiers := lay.tiers[fe.Pool]
	if fe.RejectWhenDown {
		w.opt("tcp-request connection reject if %s", allEmpty(tiers))
	}
	if fe.Mode != ModeTCP {
		if fe.RejectWhenDown {
			// A keep-alive or HTTP/2 connection opened while the pool
			// had servers.
			w.opt("http-request reject if %s", allEmpty(tiers))
		}
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
	}
	useTiers(w, tiers, "")
	w.opt("default_backend %s", tiers[len(tiers)-1].name)
}

// passthrough writes the SNI routing of a tcp frontend. The content
// rules wait (up to the inspect delay) until the ClientHello is whole:
// the SNI fetches report "not yet" on a partial one.
func passthrough(w *writer, lay layout, fe Frontend) {
	pt := fe.Passthrough
	for i, r := range pt.Routes {
		acl := fmt.Sprintf("sni%d", i)
		if len(r.Names) > 0 {
			w.opt("acl %s req.ssl_sni -i %s", acl, strings.Join(r.Names, " "))
		}
		if r.Regexp != "" {
			// Quoted: HAProxy reads a single-quoted word as is, where
			// it would take "\\", "\t" or "\n" for escapes.
			w.opt("acl %s req.ssl_sni -i -m reg '%s'", acl, r.Regexp)
		}
	}
	w.opt("tcp-request inspect-delay %s", duration(pt.InspectDelay))
	if fe.Pool == "" {
		var any []string
		for i := range pt.Routes {
			any = append(any, fmt.Sprintf("sni%d", i))
		}
		w.opt("tcp-request content reject unless %s", strings.Join(any, " || "))
	}
	if fe.RejectWhenDown {
		// The route a connection takes is the first that matches: the
		// ones before it did not.
		var not []string
		for i, r := range pt.Routes {
			acl := fmt.Sprintf("sni%d", i)
			cond := append(slices.Clone(not), acl)
			w.opt("tcp-request content reject if %s %s", strings.Join(cond, " "), allEmpty(lay.tiers[r.Pool]))
			not = append(not, "!"+acl)
		}
		if fe.Pool != "" {
			w.opt("tcp-request content reject if %s", strings.Join(append(not, allEmpty(lay.tiers[fe.Pool])), " "))
		}
	}
	w.opt("tcp-request content accept if { req.ssl_hello_type 1 }")
	// Not TLS, or no whole ClientHello within the inspect delay.
	w.opt("tcp-request content reject")
	for i, r := range pt.Routes {
		acl := fmt.Sprintf("sni%d", i)
		tiers := lay.tiers[r.Pool]
		useTiers(w, tiers, acl+" ")
		w.opt("use_backend %s if %s", tiers[len(tiers)-1].name, acl)
	}
	if fe.Pool != "" {
		tiers := lay.tiers[fe.Pool]
		useTiers(w, tiers, "")
		w.opt("default_backend %s", tiers[len(tiers)-1].name)
	}
}

// useTiers picks the first tier but the last with a usable server, under
// the condition cond (empty, or ACL names ending with a space). nbsrv
// counts the servers that are up, not in maintenance or drained, and of
// a weight above 0.
func useTiers(w *writer, tiers []tier, cond string) {
	for _, tr := range tiers[:len(tiers)-1] {
		w.opt("use_backend %s if %s{ nbsrv(%s) gt 0 }", tr.name, cond, tr.name)
	}
}

// allEmpty is the condition "no tier has a usable server".
func allEmpty(tiers []tier) string {
	var c []string
	for _, tr := range tiers {
		c = append(c, fmt.Sprintf("{ nbsrv(%s) eq 0 }", tr.name))
	}
	return strings.Join(c, " ")
}

func backend(w *writer, lay layout, p Pool, tr tier) {
	w.line("backend %s", tr.name)
	if lay.tcp[p.Name] {
		w.opt("mode tcp")
	}
	for _, l := range balanceLines[p.Balance] {
		w.opt("%s", l)
	}
	if p.ConnectTimeout > 0 {
		w.opt("timeout connect %s", duration(p.ConnectTimeout))
	}
	if p.ServerTimeout > 0 {
		w.opt("timeout server %s", duration(p.ServerTimeout))
	}
	if d, ok := lay.tunnel[p.Name]; ok {
		w.opt("timeout tunnel %s", duration(d))
	}
	for _, s := range tr.servers {
		w.opt("%s", serverLine(s))
	}
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

// serverLine is a server without health check: ober checks the servers
// and sets their state through the runtime API.
func serverLine(s Server) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server %s %s weight %d", s.Name, serverAddr(s.Addr), s.Weight)
	if s.ID > 0 {
		fmt.Fprintf(&b, " id %d", s.ID)
	}
	if s.State == StateDrain || s.State == StateMaint {
		b.WriteString(" disabled")
	}
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
			b.WriteString(" sni str(" + s.SNI + ")")
		}
	}
	switch s.ProxyProtocol {
	case ProxyV1:
		b.WriteString(" send-proxy")
	case ProxyV2:
		b.WriteString(" send-proxy-v2")
	}
	return b.String()
}

// serverAddr writes IPv4 as a.b.c.d:port and IPv6 as [addr]:port, which
// HAProxy parses unambiguously (a bare "2001:db8::1:80" would be read as
// address 2001:db8::1 port 80 only by the "last colon" rule). Port 0 is
// left out: HAProxy then connects to the client's destination port.
func serverAddr(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	host := a.String()
	if !a.Is4() {
		host = "[" + host + "]"
	}
	if ap.Port() == 0 {
		return host
	}
	return fmt.Sprintf("%s:%d", host, ap.Port())
}

func hasTLSFrontend(fes []Frontend) bool {
	for _, fe := range fes {
		if fe.Mode == ModeTLS {
			return true
		}
	}
	return false
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
