package haproxy

import (
	"cmp"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	// poolRE also admits ':', which joins a service's and a pool's
	// names and TierBackend's suffix; HAProxy takes it in proxy names.
	poolRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
	// accountRE is a user or group name HAProxy looks up (not a number).
	accountRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
	// hostRE covers DNS names and bracketed or bare IP literals.
	hostRE = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]-]+$`)
	// sniRE is a name a ClientHello may carry.
	sniRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// checkName checks the name of the i-th item (kind, in what names its
// container or is empty) for presence, syntax (re, described by chars)
// and uniqueness among seen, and returns the label that names it in
// further errors.
func checkName(in, kind string, i int, name string, re *regexp.Regexp, chars string, seen map[string]bool, bad func(string, ...any)) string {
	if in != "" {
		in += ": "
	}
	label := fmt.Sprintf("%s%s %d (%q)", in, kind, i, name)
	switch {
	case name == "":
		bad("%s%s %d: name is required", in, kind, i)
	case !re.MatchString(name):
		bad("%s: only %s are allowed in names", label, chars)
	case seen[name]:
		bad("%s: duplicate %s name", label, kind)
	}
	seen[name] = true
	return label
}

const (
	nameChars = "letters, digits, '_', '.' and '-'"
	poolChars = "letters, digits, '_', '.', ':' and '-'"
)

// validate checks in and derives how its pools are rendered. Every
// problem is reported at once.
func validate(in Instance) (layout, error) {
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
		bad("node name %q: only %s are allowed", in.Node, nameChars)
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
	for _, tf := range in.Tune.Fields() {
		if msg := tf.Problem(*tf.Value); msg != "" {
			bad("%s %d: %s", tf.Directive, *tf.Value, msg)
		}
	}
	if k := in.TicketKeys; k != "" && (!strings.HasPrefix(k, "/") || !safeWord(k)) {
		bad("ticket keys path %q must be absolute, without a space, quote, '#' or control character", k)
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

	lay := layout{tiers: map[string][]tier{}, tcp: map[string]bool{}, tunnel: map[string]time.Duration{}}
	if len(in.Frontends) == 0 && len(in.Pools) == 0 {
		// Idle: a node whose services are all forwarded by the kernel
		// still runs its instances (their runtime API answers), so that
		// health, announcements and reloads work as anywhere else.
		return lay, errors.Join(errs...)
	}
	pools := validatePools(in.Pools, lay, bad)
	validateFrontends(in, pools, lay, bad)
	return lay, errors.Join(errs...)
}

// poolUse is how the frontends use a pool.
type poolUse struct {
	label string
	// http and tcp name a frontend of each kind that uses the pool.
	http, tcp string
	// clients are the client timeouts of the frontends that use it.
	clients []time.Duration
	// own is set when the pool or one of its frontends sets a timeout.
	own bool
}

func validatePools(ps []Pool, lay layout, bad func(string, ...any)) map[string]*poolUse {
	if len(ps) == 0 {
		bad("no pools")
	}
	uses := map[string]*poolUse{}
	names := map[string]bool{}
	backends := map[string]string{} // rendered backend -> pool
	for i, p := range ps {
		label := checkName("", "pool", i, p.Name, poolRE, poolChars, names, bad)
		uses[p.Name] = &poolUse{label: label, own: p.ConnectTimeout > 0 || p.ServerTimeout > 0}
		if _, ok := balanceLines[p.Balance]; !ok {
			bad("%s: balance %q: want roundrobin, weighted, leastconn, source, consistent, random, first or leastbandwidth", label, p.Balance)
		}
		optionalTimeout(label+": connect timeout", p.ConnectTimeout, bad)
		optionalTimeout(label+": server timeout", p.ServerTimeout, bad)
		snames := map[string]bool{}
		ids := map[[2]int]string{}
		byPrio := map[int][]Server{}
		for j, s := range p.Servers {
			sl := checkName(label, "server", j, s.Name, nameRE, nameChars, snames, bad)
			validateServer(sl, s, bad)
			if s.ID < 0 {
				bad("%s: id %d is negative", sl, s.ID)
			} else if s.ID > 0 {
				k := [2]int{max(s.Priority, 1), s.ID}
				if other, dup := ids[k]; dup {
					bad("%s: id %d is server %q's too", sl, s.ID, other)
				}
				ids[k] = s.Name
			}
			byPrio[max(s.Priority, 1)] = append(byPrio[max(s.Priority, 1)], s)
		}
		prios := make([]int, 0, len(byPrio))
		for pr := range byPrio {
			prios = append(prios, pr)
		}
		slices.Sort(prios)
		if len(prios) == 0 {
			// A pool without servers is one backend with none: HAProxy
			// closes what it is given (a tcp service whose backends are
			// still to come).
			prios = []int{1}
		}
		for _, pr := range prios {
			name := TierBackend(p.Name, pr)
			if other, dup := backends[name]; dup && p.Name != "" {
				bad("%s: priority %d renders backend %q, which pool %q renders too", label, pr, name, other)
			}
			backends[name] = p.Name
			lay.tiers[p.Name] = append(lay.tiers[p.Name], tier{name: name, servers: byPrio[pr]})
		}
	}
	return uses
}

func validateServer(label string, s Server, bad func(string, ...any)) {
	switch {
	case !s.Addr.IsValid() || !s.Addr.Addr().IsValid():
		bad("%s: address is required", label)
	case s.Addr.Addr().Zone() != "":
		bad("%s: address %s: HAProxy takes no IPv6 zone", label, s.Addr)
	case s.Addr.Addr().IsUnspecified():
		bad("%s: address %s is unspecified", label, s.Addr)
	}
	if s.Weight < 0 || s.Weight > 256 {
		bad("%s: weight %d: want 0..256", label, s.Weight)
	}
	if s.Priority < 0 {
		bad("%s: priority %d is negative", label, s.Priority)
	}
	switch s.State {
	case "", StateReady, StateDrain, StateMaint:
	default:
		bad("%s: state %q: want ready, drain or maint", label, s.State)
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
	if s.ProxyProtocol != 0 && s.ProxyProtocol != ProxyV1 && s.ProxyProtocol != ProxyV2 {
		bad("%s: PROXY protocol version %d: want 1 or 2", label, s.ProxyProtocol)
	}
}

func validateFrontends(in Instance, pools map[string]*poolUse, lay layout, bad func(string, ...any)) {
	if len(in.Frontends) == 0 {
		bad("no frontends")
	}
	names := map[string]bool{}
	fds := map[int]string{}
	for i, fe := range in.Frontends {
		label := checkName("", "frontend", i, fe.Name, nameRE, nameChars, names, bad)
		switch fe.Mode {
		case ModeTLS:
			switch {
			case fe.PEM == "":
				bad("%s: mode tls needs a PEM file", label)
			case !safeWord(fe.PEM):
				bad("%s: PEM path %q has a space, quote, '#' or control character", label, fe.PEM)
			}
		case ModeHTTP, ModeTCP:
			if fe.PEM != "" {
				bad("%s: mode %s takes no PEM file", label, fe.Mode)
			}
		default:
			bad("%s: mode %q: want tls, http or tcp", label, fe.Mode)
		}
		if fe.Port == 0 {
			bad("%s: port is required", label)
		}
		if fe.LastPort != 0 {
			if fe.LastPort <= fe.Port {
				bad("%s: port range %d-%d: the last port must be above the first", label, fe.Port, fe.LastPort)
			}
			if fe.Mode != ModeTCP {
				bad("%s: a port range needs mode tcp, not %s", label, fe.Mode)
			}
		}
		for _, v := range fe.VIPs {
			if !v.IsValid() || v.Zone() != "" {
				bad("%s: VIP %s is not an address", label, v)
			}
		}
		if fe.Whitelist != "" && (!strings.HasPrefix(fe.Whitelist, "/") || !safeWord(fe.Whitelist)) {
			bad("%s: whitelist file %q must be an absolute path without spaces, quotes, '#' or control characters", label, fe.Whitelist)
		}
		if fe.MaxConn < 0 {
			bad("%s: maxconn %d is negative", label, fe.MaxConn)
		}
		optionalTimeout(label+": client timeout", fe.ClientTimeout, bad)
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

		use := func(what, pool string) {
			u, ok := pools[pool]
			if !ok {
				bad("%s: %s %q is not a pool of the instance", label, what, pool)
				return
			}
			if fe.Mode == ModeTCP {
				u.tcp = cmp.Or(u.tcp, fe.Name)
			} else {
				u.http = cmp.Or(u.http, fe.Name)
			}
			u.clients = append(u.clients, cmp.Or(fe.ClientTimeout, in.Timeouts.Client))
			u.own = u.own || fe.ClientTimeout > 0
		}
		if pt := fe.Passthrough; pt != nil {
			if fe.Mode != ModeTCP {
				bad("%s: TLS passthrough needs mode tcp, not %s", label, fe.Mode)
			}
			if pt.InspectDelay < time.Millisecond || pt.InspectDelay > maxTimeout {
				bad("%s: TLS passthrough inspect delay %v: want 1ms..%v", label, pt.InspectDelay, maxTimeout)
			}
			if len(pt.Routes) == 0 && fe.Pool == "" {
				bad("%s: TLS passthrough has neither routes nor a default pool", label)
			}
			for j, r := range pt.Routes {
				rl := fmt.Sprintf("%s: route %d", label, j)
				if len(r.Names) == 0 && r.Regexp == "" {
					bad("%s: names or a regexp are required", rl)
				}
				for _, n := range r.Names {
					if len(n) > 255 || !sniRE.MatchString(n) {
						bad("%s: %q is not a host name", rl, n)
					}
				}
				if r.Regexp != "" {
					if _, err := regexp.Compile(r.Regexp); err != nil {
						bad("%s: regexp %q: %v", rl, r.Regexp, err)
					} else if strings.ContainsFunc(r.Regexp, func(c rune) bool { return c < ' ' || c == 0x7f || c == '\'' }) {
						bad("%s: regexp %q has a quote or control character", rl, r.Regexp)
					}
				}
				use(fmt.Sprintf("route %d's pool", j), r.Pool)
			}
			if fe.Pool != "" {
				use("default pool", fe.Pool)
			}
		} else {
			if fe.Pool == "" {
				bad("%s: pool is required", label)
			} else {
				use("pool", fe.Pool)
			}
		}
	}

	for _, p := range in.Pools {
		name, u := p.Name, pools[p.Name]
		switch {
		case u.http == "" && u.tcp == "":
			bad("%s: no frontend uses it", u.label)
		case u.http != "" && u.tcp != "":
			bad("%s: used by http frontend %q and tcp frontend %q: each needs a pool of its own", u.label, u.http, u.tcp)
		}
		lay.tcp[name] = u.tcp != ""
		if !lay.tcp[name] {
			for _, tr := range lay.tiers[name] {
				for _, s := range tr.servers {
					if s.Addr.IsValid() && s.Addr.Port() == 0 {
						bad("%s: server %q: address %s has no port (only a tcp pool's servers take the client's port)", u.label, s.Name, s.Addr.Addr())
					}
				}
			}
		}
		if !u.own {
			continue
		}
		// One idle timeout rules an established connection (see
		// Pool): the larger of both sides'.
		t := cmp.Or(p.ServerTimeout, in.Timeouts.Server)
		for _, c := range u.clients {
			t = max(t, c)
		}
		if t != in.Timeouts.Client {
			lay.tunnel[p.Name] = t
		}
	}
}

func optionalTimeout(what string, d time.Duration, bad func(string, ...any)) {
	if d != 0 && (d < time.Millisecond || d > maxTimeout) {
		bad("%s %v: want 1ms..%v, or 0 for the default", what, d, maxTimeout)
	}
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
