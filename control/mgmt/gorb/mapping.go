package gorb

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
)

// ServiceOptions is GORB's virtual service, as PUT /service/{vs} takes it
// and GET /service/{vs} returns it under "options". Fallback is the
// qk4l/gorb fork's.
type ServiceOptions struct {
	Host       string `json:"host"`
	Port       uint16 `json:"port"`
	Protocol   string `json:"protocol"`
	Method     string `json:"method"`
	Flags      string `json:"flags"`
	Persistent bool   `json:"persistent"`
	Fallback   string `json:"fallback,omitempty"`
}

// BackendOptions is GORB's backend, as PUT and PATCH
// /service/{vs}/{rs} take it. VsID is accepted, and ignored, because GORB
// returns it: a client may send back what it read.
type BackendOptions struct {
	Host   string        `json:"host"`
	Port   uint16        `json:"port"`
	Weight *int32        `json:"weight,omitempty"`
	Method string        `json:"method"`
	Pulse  *PulseOptions `json:"pulse,omitempty"`
	VsID   string        `json:"vsid,omitempty"`
}

// PulseOptions is GORB's health check of a backend.
type PulseOptions struct {
	Type     string         `json:"type"`
	Interval string         `json:"interval,omitempty"`
	Args     map[string]any `json:"args,omitempty"`
}

// ServiceInfo is GET /service/{vs}: GORB's options, the mean health of
// the backends and their names; BackendsCount and Fallback are the
// qk4l/gorb fork's additions.
type ServiceInfo struct {
	Options       ServiceOptions `json:"options"`
	Health        float64        `json:"health"`
	Backends      []string       `json:"backends"`
	BackendsCount int            `json:"backends_count"`
	Fallback      string         `json:"fallback"`
}

// BackendInfo is GET /service/{vs}/{rs}.
type BackendInfo struct {
	Options BackendOptions `json:"options"`
	Metrics Metrics        `json:"metrics"`
}

// Metrics is GORB's pulse metrics of a backend: Status 0 is up, 1 down
// (GORB writes the number); Health the fraction of the last checks that
// passed; Uptime seconds since the backend came up, 0 when down.
type Metrics struct {
	Status int     `json:"status"`
	Health float64 `json:"health"`
	Uptime int64   `json:"uptime"`
}

// GORB's pulse statuses.
const (
	statusUp   = 0
	statusDown = 1
)

// GORB's defaults where its JSON leaves a field out.
const (
	gorbScheduler = "wrr"
	gorbWeight    = 100
	gorbExpect    = 200
)

// The qk4l/gorb fork's fallback flags.
const (
	fbDefault   = "fb-default"
	fbZeroToOne = "fb-zero-to-one"
)

// gorbName is the IPVS scheduler GET reports for an ober method; each is
// one of config's GORB aliases of that method (a test checks it).
var gorbName = map[string]string{
	config.BalanceWeighted:   "wrr",
	config.BalanceRoundRobin: "rr",
	config.BalanceLeastConn:  "wlc",
	config.BalanceSource:     "sh",
	config.BalanceConsistent: "mh",
	config.BalanceFirst:      "fo",
	config.BalanceRandom:     "twos",
}

// Scheduler flags: the fallback flags are what ober always does; the
// port flags have no equivalent. flag-1 and flag-2 are IPVS's generic
// names of the same two bits; flag-3 no scheduler reads.
var (
	acceptedFlags = []string{"sh-fallback", "mh-fallback", "flag-1", "flag-3"}
	refusedFlags  = []string{"sh-port", "mh-port", "flag-2"}
)

func badRequest(field, format string, args ...any) *mgmt.Error {
	return mgmt.Errorf(http.StatusBadRequest, field, format, args...)
}

func unprocessable(field, format string, args ...any) *mgmt.Error {
	return mgmt.Errorf(http.StatusUnprocessableEntity, field, format, args...)
}

// balance is the ober method of GORB's scheduler, and the note config's
// alias table has on it.
func balance(method string) (string, string, error) {
	m := strings.ToLower(strings.TrimSpace(method))
	if m == "" {
		m = gorbScheduler
	}
	if slices.Contains(config.Balances(), m) {
		return m, "", nil
	}
	for _, a := range config.BalanceAliases() {
		if a.Alias != m || a.From != config.AliasFromGORB {
			continue
		}
		if a.Flag {
			return "", "", badRequest("method", "method %q: a scheduler flag, not a scheduler; give it in flags", method)
		}
		note := fmt.Sprintf("%s is ober's %s", m, a.Method)
		if a.Note != "" {
			note += " (" + a.Note + ")"
		}
		return a.Method, note, nil
	}
	var names []string
	for _, a := range config.BalanceAliases() {
		if a.From == config.AliasFromGORB && !a.Flag {
			names = append(names, a.Alias)
		}
	}
	return "", "", badRequest("method", "method %q: unknown scheduler; GORB's are %s", method, strings.Join(names, ", "))
}

// checkFlags refuses the scheduler flags ober cannot honour.
func checkFlags(flags, method string) error {
	for f := range strings.SplitSeq(flags, "|") {
		f = strings.ToLower(strings.TrimSpace(f))
		switch {
		case f == "" || slices.Contains(acceptedFlags, f):
		case slices.Contains(refusedFlags, f):
			return unprocessable("flags", "flags %s: ober hashes the client's address, never its port; leave the flag out (method %s without it is the nearest)", f, method)
		default:
			return badRequest("flags", "flags %q: specified flag is unknown (GORB's are sh-fallback, sh-port, flag-1, flag-2, flag-3)", f)
		}
	}
	return nil
}

// udpFlags is checkFlags for a UDP service, where the kernel can hash
// the client's port: sh-port asks for hash_source_port, and consistent
// always hashes the whole flow.
func udpFlags(flags, method string) (hashPort bool, err error) {
	for f := range strings.SplitSeq(flags, "|") {
		switch f = strings.ToLower(strings.TrimSpace(f)); {
		case f == "sh-port" || f == "flag-2":
			if method != config.BalanceSource {
				return false, unprocessable("flags", "flags %s: hashes the port for method sh only (this service's method is ober's %s)", f, method)
			}
			hashPort = true
		case f == "mh-port":
			if method != config.BalanceConsistent {
				return false, unprocessable("flags", "flags %s: for method mh only (this service's method is ober's %s)", f, method)
			}
		case f == "" || slices.Contains(acceptedFlags, f):
		default:
			return false, badRequest("flags", "flags %q: specified flag is unknown (GORB's are sh-fallback, sh-port, flag-1, flag-2, flag-3)", f)
		}
	}
	return hashPort, nil
}

// isHash reports whether an ober method keeps a client on one server.
func isHash(m string) bool { return m == config.BalanceSource || m == config.BalanceConsistent }

// serviceBody maps GORB's service onto ober's: the JSON body of a
// Create, with the notes on what the mapping chose.
func serviceBody(vs string, o ServiceOptions) (map[string]any, []string, error) {
	if o.Port == 0 {
		return nil, nil, badRequest("port", "port: endpoint information is missing (a port is required)")
	}
	var udp bool
	switch strings.ToLower(o.Protocol) {
	case "", "tcp":
	case "udp":
		udp = true
	default:
		return nil, nil, badRequest("protocol", "protocol %q: specified protocol is unknown (tcp or udp)", o.Protocol)
	}
	m, note, err := balance(o.Method)
	if err != nil {
		return nil, nil, err
	}
	hashPort := false
	if udp {
		hashPort, err = udpFlags(o.Flags, m)
	} else {
		err = checkFlags(o.Flags, o.Method)
	}
	if err != nil {
		return nil, nil, err
	}
	if o.Persistent && !isHash(m) {
		return nil, nil, unprocessable("persistent", "persistent: ober has no IPVS persistence; it keeps a client on one server by hashing its address: use method sh (or mh) instead of %s", cmp.Or(strings.ToLower(o.Method), gorbScheduler))
	}
	var notes []string
	if note != "" {
		notes = append(notes, note)
	}
	b := map[string]any{"name": vs, "mode": config.ModeTCP, "port": o.Port, "balance": m}
	if udp {
		// IPVS's NAT, GORB's default forwarding, keeps the client's
		// address, so the backends already route back through the
		// director: dnat is that, fullnat would change what they see.
		b["mode"], b["forward"] = config.ModeUDP, config.ForwardDNAT
		notes = append(notes, "protocol udp is ober's mode udp with forward dnat, which the kernel forwards as IPVS NAT did (the backends see the client and answer through the node)")
		if hashPort {
			b["hash_source_port"] = true
		}
	}
	if o.Host != "" {
		a, err := netip.ParseAddr(o.Host)
		if err != nil {
			return nil, nil, unprocessable("host", "host %q: ober's VIPs are IP addresses, not names; give the address", o.Host)
		}
		b["vips"] = []string{a.String()}
	}
	for f := range strings.SplitSeq(o.Fallback, "|") {
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "", fbDefault:
		case fbZeroToOne:
			b["fallback"] = config.FallbackKeepLast
			notes = append(notes, fbZeroToOne+" is ober's fallback "+config.FallbackKeepLast+" (the backends stay in service when every check fails)")
		default:
			return nil, nil, badRequest("fallback", "fallback %q: specified fallback flag is unknown (fb-default or fb-zero-to-one)", f)
		}
	}
	return b, notes, nil
}

// backendBody maps GORB's backend onto ober's backend of the service's
// default pool.
func backendBody(rs string, o BackendOptions) (map[string]any, error) {
	if o.Host == "" || o.Port == 0 {
		return nil, badRequest("host", "host and port: endpoint information is missing")
	}
	switch strings.ToLower(o.Method) {
	case "", "nat":
	case "dr":
		return nil, unprocessable("method", "method dr: ober proxies connections (mode tcp) and has no direct routing; use method nat (the backend then sees ober's address; proxy_protocol carries the client's)")
	case "tunnel", "ipip":
		return nil, unprocessable("method", "method %s: ober proxies connections (mode tcp) and has no IP-in-IP tunnels; use method nat", strings.ToLower(o.Method))
	default:
		return nil, badRequest("method", "method %q: specified forwarding method is unknown (nat, dr or tunnel)", o.Method)
	}
	w := int32(gorbWeight)
	if o.Weight != nil && *o.Weight > 0 { // GORB takes 0 and less for its default
		w = *o.Weight
	}
	return map[string]any{"name": rs, "address": net.JoinHostPort(o.Host, strconv.Itoa(int(o.Port))), "weight": w}, nil
}

// health maps a pulse onto ober's check of a service: GORB's pulse is
// per backend, ober's check per service.
func health(p *PulseOptions) (*config.ServiceHealth, error) {
	h := &config.ServiceHealth{}
	switch t := strings.ToLower(p.Type); t {
	case "", "tcp": // GORB's default
		h.Kind = config.CheckTCP
	case "none":
		h.Kind = config.CheckNone
	case "http":
		h.Kind = config.CheckHTTP
		if err := httpArgs(h, p.Args); err != nil {
			return nil, err
		}
	default:
		return nil, badRequest("pulse.type", "pulse.type %q: specified pulse type is unknown (tcp, http or none)", p.Type)
	}
	if p.Interval != "" {
		d, err := parseInterval(p.Interval)
		if err != nil {
			return nil, badRequest("pulse.interval", "pulse.interval %q: %v", p.Interval, err)
		}
		h.Interval = config.Duration{Duration: d}
	}
	return h, nil
}

// httpArgs reads GORB's http pulse arguments; GORB ignores the ones it
// does not know, and so does this.
func httpArgs(h *config.ServiceHealth, args map[string]any) error {
	if s, ok, err := argString(args, "scheme"); err != nil {
		return err
	} else if ok {
		switch strings.ToLower(s) {
		case "http":
		case "https":
			h.Kind = config.CheckHTTPS // unverified, as GORB's
		default:
			return badRequest("pulse.args.scheme", "pulse.args.scheme %q: http or https", s)
		}
	}
	if _, ok := args["host"]; ok {
		return unprocessable("pulse.args.host", "pulse.args.host: ober checks each backend at its own address (pulse.args.port changes the port); leave host out")
	}
	var err error
	if h.Method, _, err = argString(args, "method"); err != nil {
		return err
	}
	if h.Path, _, err = argString(args, "path"); err != nil {
		return err
	}
	if v, ok, err := argInt(args, "port"); err != nil {
		return err
	} else if ok {
		if v < 1 || v > math.MaxUint16 {
			return badRequest("pulse.args.port", "pulse.args.port %d: must be 1-65535", v)
		}
		h.Port = uint16(v)
	}
	if v, ok, err := argInt(args, "timeout"); err != nil {
		return err
	} else if ok {
		if v < 1 {
			return badRequest("pulse.args.timeout", "pulse.args.timeout %d: seconds, at least 1", v)
		}
		h.Timeout = config.Duration{Duration: time.Duration(v) * time.Second}
	}
	expect := gorbExpect
	if v, ok, err := argInt(args, "expect"); err != nil {
		return err
	} else if ok {
		expect = v
	}
	// GORB wants exactly this status; ober's default is a range.
	h.Status = strconv.Itoa(expect)
	return nil
}

func argString(args map[string]any, k string) (string, bool, error) {
	v, ok := args[k]
	if !ok {
		return "", false, nil
	}
	s, isString := v.(string)
	if !isString {
		return "", false, badRequest("pulse.args."+k, "pulse.args.%s: must be a string", k)
	}
	return s, true, nil
}

// argInt reads a number, or a string of digits as GORB also takes.
func argInt(args map[string]any, k string) (int, bool, error) {
	v, ok := args[k]
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<31 {
			return int(x), true, nil
		}
	case string:
		if n, err := strconv.Atoi(x); err == nil {
			return n, true, nil
		}
	}
	return 0, false, badRequest("pulse.args."+k, "pulse.args.%s: %v: must be a whole number", k, v)
}

// gorbUnits are the units of GORB's intervals ("5s", "1min", "2hours").
var gorbUnits = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hours": time.Hour,
}

// parseInterval reads GORB's interval (a whole number and a unit), or a
// Go duration.
func parseInterval(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '+' && r != '-' })
	var d time.Duration
	if i > 0 {
		n, err := strconv.Atoi(s[:i])
		u, ok := gorbUnits[strings.ToLower(s[i:])]
		if err == nil && ok {
			d = time.Duration(n) * u
		} else if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("not an interval (such as 5s, 1m, 2min)")
		}
	} else {
		return 0, fmt.Errorf("not an interval (such as 5s, 1m, 2min)")
	}
	if d <= 0 {
		return 0, fmt.Errorf("pulse interval must be positive")
	}
	return d, nil
}

// formatInterval writes d in GORB's form where it can.
func formatInterval(d time.Duration) string {
	switch {
	case d > 0 && d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d > 0 && d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d > 0 && d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

// effective is a service's JSON form read as config reads the file,
// defaults filled in, and its generation.
func effective(raw json.RawMessage) (config.Service, uint64, error) {
	var s config.Service
	// JSON is YAML; the keys are ober.yaml's.
	if err := yaml.Unmarshal(raw, &s); err != nil {
		return config.Service{}, 0, fmt.Errorf("reading the service: %w", err)
	}
	var g struct {
		Generation uint64 `json:"generation"`
	}
	_ = json.Unmarshal(raw, &g)
	return withDefaults(s), g.Generation, nil
}

// withDefaults fills s as config would in a file of its own.
func withDefaults(s config.Service) config.Service {
	c := config.Config{Services: []config.Service{s}}
	c.ApplyDefaults()
	return c.Services[0]
}

// effectiveHealth is h as config completes it on a mode tcp service.
func effectiveHealth(h *config.ServiceHealth) config.ServiceHealth {
	hc := *h
	s := withDefaults(config.Service{Name: "x", Mode: config.ModeTCP, Port: 1, Health: &hc,
		Backends: []config.BackendServer{{Address: "127.0.0.1:1"}}})
	return *s.Health
}

// sameHealth reports whether two checks do the same, defaults counted.
func sameHealth(a, b config.ServiceHealth) bool {
	x, y := effectiveHealth(&a), effectiveHealth(&b)
	return x.Kind == y.Kind && x.Interval == y.Interval && x.Timeout == y.Timeout &&
		x.Port == y.Port && x.Method == y.Method && x.Path == y.Path && x.Status == y.Status &&
		x.Host == y.Host && x.Fall == y.Fall && x.Rise == y.Rise && x.Send == y.Send &&
		x.Expect == y.Expect && x.ExpectRegexp == y.ExpectRegexp && slices.Equal(x.Command, y.Command)
}

// describeHealth says what a check does, for messages.
func describeHealth(h config.ServiceHealth) string {
	e := effectiveHealth(&h)
	s := e.Kind + " every " + formatInterval(e.Interval.Duration)
	if e.Kind == config.CheckHTTP || e.Kind == config.CheckHTTPS {
		s += fmt.Sprintf(" (%s %s, status %s)", e.Method, e.Path, e.Status)
	}
	return s
}

// healthJSON is h as the body of a change.
func healthJSON(h *config.ServiceHealth) map[string]any {
	m := map[string]any{"kind": h.Kind}
	if h.Interval.Duration != 0 {
		m["interval"] = formatInterval(h.Interval.Duration)
	}
	if h.Timeout.Duration != 0 {
		m["timeout"] = formatInterval(h.Timeout.Duration)
	}
	if h.Port != 0 {
		m["port"] = h.Port
	}
	for k, v := range map[string]string{"method": h.Method, "path": h.Path, "status": h.Status} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// pulseOf is ober's check of a service as GORB's pulse.
func pulseOf(h config.ServiceHealth) *PulseOptions {
	p := &PulseOptions{Type: h.Kind, Interval: formatInterval(h.Interval.Duration)}
	switch h.Kind {
	case config.CheckHTTP, config.CheckHTTPS:
		p.Type = "http"
		scheme := "http"
		if h.Kind == config.CheckHTTPS {
			scheme = "https"
		}
		p.Args = map[string]any{"scheme": scheme, "method": h.Method, "path": h.Path}
		if n, err := strconv.Atoi(h.Status); err == nil {
			p.Args["expect"] = n
		}
	}
	if h.Port != 0 {
		if p.Args == nil {
			p.Args = map[string]any{}
		}
		p.Args["port"] = h.Port
	}
	if t := h.Timeout.Duration; t >= time.Second && t%time.Second == 0 {
		if p.Args == nil {
			p.Args = map[string]any{}
		}
		p.Args["timeout"] = int(t / time.Second)
	}
	return p
}

// optionsOf is an ober service as GORB's options.
func optionsOf(s config.Service) ServiceOptions {
	o := ServiceOptions{Protocol: config.ProtocolTCP, Port: s.Port, Method: s.Balance, Persistent: isHash(s.Balance), Fallback: fbDefault}
	if s.Mode == config.ModeUDP || s.Protocol == config.ProtocolUDP {
		o.Protocol = config.ProtocolUDP
		if s.HashSourcePort {
			o.Flags = "sh-port"
		}
	}
	if s.Port == 0 {
		o.Port = s.Ports.From
	}
	if n, ok := gorbName[s.Balance]; ok {
		o.Method = n
	}
	if len(s.VIPs) > 0 {
		o.Host = s.VIPs[0].String()
	}
	if s.Fallback == config.FallbackKeepLast {
		o.Fallback = fbZeroToOne
	}
	return o
}

// backendOptionsOf is an ober backend as GORB's, with the service's check
// as its pulse.
func backendOptionsOf(b config.BackendServer, h config.ServiceHealth) BackendOptions {
	o := BackendOptions{Host: b.Address, Method: "nat", Pulse: pulseOf(h)}
	if host, port, err := net.SplitHostPort(b.Address); err == nil {
		o.Host = host
		if n, err := strconv.ParseUint(port, 10, 16); err == nil {
			o.Port = uint16(n)
		}
	}
	if b.Weight != nil {
		w := int32(*b.Weight)
		o.Weight = &w
	}
	return o
}
