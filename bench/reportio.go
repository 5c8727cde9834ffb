package bench

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
)

// WriteJSON writes the report to path, indented, replacing any file
// there atomically: a reader (or a crash) never sees half a report.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report %s: %w", path, err)
	}
	b = append(b, '\n')
	// A report is for sharing: readable by all.
	if err := atomicfile.Write(path, b, 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// ReadReport reads a report written by WriteJSON. Unknown fields are
// ignored so that older binaries can still read newer reports.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	return &r, nil
}

// Plausibility bounds of Check. They are loose on purpose: they catch a
// broken harness (a zero, a unit slip, a swapped field, a load generator
// that counted failures as transfers), not a slow or a fast machine.
const (
	// No core without AES instructions falls below 50 MB/s of AES-GCM,
	// and no core with them comes near 100 GB/s: outside that, openssl's
	// output was misread (units, column).
	minCryptoGBpsPerCore = 0.05
	maxCryptoGBpsPerCore = 100
	// TLS encrypts every byte, so a transfer cannot beat the machine's
	// crypto ceiling by far. The client and the server run on the same
	// machine and each does crypto on every byte, so the real bound is
	// about x1; x4 leaves room for decryption being cheaper than
	// encryption and for an optimistic or pessimistic openssl figure.
	maxOverCrypto = 4
	// Beyond any memory bandwidth a single host's TLS could be moved by.
	maxGBps = 200
	// More failures than this and the figure is not of the path under
	// test any more but of its error handling.
	maxErrorFraction = 0.01
	// of_crypto is derived from gbps and crypto.gbps_machine; more than
	// rounding apart means one of them was changed without the other.
	ratioTolerance = 0.01
	// Ten seconds for a 4 KiB request is a timeout, not a latency.
	maxP99Ms = 10000
	// A million new TLS connections per second is beyond a whole rack
	// of handshake hardware, let alone one test machine.
	maxConnsPerSecond = 1e6
	// minResumed is the share of a resumed point's connections that
	// must have resumed.
	minResumed = 0.99
	// 100 µs per packet is a program that looped or a clock in the wrong
	// unit; XDP programs run in tens to hundreds of ns.
	maxXDPNs = 100000
	// ober's program does everything the empty one does and more; well
	// below the empty figure means the two were swapped or mis-timed.
	minXDPOfEmpty = 0.5
	// The XDP paths a report must cover: the SYN steering, the ACK
	// forwarding, the whitelist drop and the pass of foreign traffic.
	// A string so that nothing can change it.
	requiredXDPCases = "syn ack wl-drop non-vip"
)

// checker collects Check's problems so that one run reports them all.
type checker struct{ errs []error }

func (c *checker) addf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func (c *checker) positive(where, field string, v float64) {
	if !(v > 0) {
		c.addf("%s: %s %s is not positive", where, field, num(v))
	}
}

func (c *checker) below(where, field string, v, limit float64) {
	if !(v < limit) {
		c.addf("%s: %s %s is not below %s", where, field, num(v), num(limit))
	}
}

// errorRate bounds failures by the attempts (successes plus failures).
func (c *checker) errorRate(where string, errs, ok int, what string) {
	if errs < 0 {
		c.addf("%s: errors %d is negative", where, errs)
		return
	}
	if float64(errs) > maxErrorFraction*float64(ok+errs) {
		c.addf("%s: errors %d is more than %s%% of %d %s", where, errs, num(maxErrorFraction*100), ok+errs, what)
	}
}

// num formats a figure in full, without exponent, for messages.
func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// Check reports whether the report is plausible: every field a harness
// bug could leave zero, negative, swapped or off by a unit is checked
// against the bounds above, and every figure the report is for is
// present. All problems are returned, joined, each naming the field and
// its value.
func (r *Report) Check() error {
	var c checker

	if r.Machine.Cores < 1 {
		c.addf("machine: cores %d is below 1", r.Machine.Cores)
	}
	if strings.TrimSpace(r.Machine.CPUModel) == "" {
		c.addf("machine: cpu_model is empty")
	}

	cr := r.Crypto
	if !(cr.GBpsPerCore > minCryptoGBpsPerCore && cr.GBpsPerCore < maxCryptoGBpsPerCore) {
		c.addf("crypto: gbps_per_core %s is not between %s and %s",
			num(cr.GBpsPerCore), num(minCryptoGBpsPerCore), num(maxCryptoGBpsPerCore))
	}
	// The throughput bounds below lean on gbps_machine, so it must be
	// what it claims to be.
	if want := cr.GBpsPerCore * float64(r.Machine.Cores); !near(cr.GBpsMachine, want) {
		c.addf("crypto: gbps_machine %s is not gbps_per_core x machine.cores = %s", num(cr.GBpsMachine), num(want))
	}

	for i, t := range r.Throughput {
		where := fmt.Sprintf("throughput[%d] (%s %s %d B x %d conns)", i, t.Op, t.Target, t.ObjectBytes, t.Conns)
		if t.Op != "GET" && t.Op != "PUT" {
			c.addf("%s: op %q is not GET or PUT", where, t.Op)
		}
		if t.Target != TargetOber && t.Target != TargetHAProxy {
			c.addf("%s: target %q is not %s or %s", where, t.Target, TargetOber, TargetHAProxy)
		}
		c.positive(where, "instances", float64(t.Instances))
		c.positive(where, "object_bytes", float64(t.ObjectBytes))
		c.positive(where, "conns", float64(t.Conns))
		// A point is a time window: large objects on many connections
		// may all still be in flight at its end, so objects may be 0;
		// the bytes they delivered count.
		if t.Objects < 0 {
			c.addf("%s: objects %d is negative", where, t.Objects)
		}
		c.positive(where, "bytes", float64(t.Bytes))
		c.positive(where, "seconds", t.Seconds)
		c.positive(where, "gbps", t.GBps)
		if t.Seconds > 0 && !near(t.GBps, float64(t.Bytes)/t.Seconds/1e9) {
			c.addf("%s: gbps %s is not bytes / seconds / 1e9 = %s", where, num(t.GBps), num(float64(t.Bytes)/t.Seconds/1e9))
		}
		// Errors against the transfers started: each connection has one
		// under way when the window closes.
		c.errorRate(where, t.Errors, t.Objects+t.Conns, "transfers")
		c.below(where, "gbps", t.GBps, maxGBps)
		if gm := cr.GBpsMachine; gm > 0 {
			if t.GBps >= maxOverCrypto*gm {
				c.addf("%s: gbps %s is not below %s x crypto.gbps_machine %s", where, num(t.GBps), num(maxOverCrypto), num(gm))
			}
			if want := t.GBps / gm; !near(t.OfCrypto, want) {
				c.addf("%s: of_crypto %s is not gbps / crypto.gbps_machine = %s", where, num(t.OfCrypto), num(want))
			}
		}
	}

	checkHandshakes := func(list string, hs []Handshakes) {
		for i, h := range hs {
			where := fmt.Sprintf("%s[%d] (%s x %d conns)", list, i, h.Target, h.Conns)
			if h.Target != TargetOber && h.Target != TargetHAProxy {
				c.addf("%s: target %q is not %s or %s", where, h.Target, TargetOber, TargetHAProxy)
			}
			c.positive(where, "instances", float64(h.Instances))
			c.positive(where, "conns", float64(h.Conns))
			c.positive(where, "handshakes", float64(h.Handshakes))
			c.positive(where, "seconds", h.Seconds)
			c.positive(where, "conns_per_second", h.ConnsPerSecond)
			c.below(where, "conns_per_second", h.ConnsPerSecond, maxConnsPerSecond)
			c.errorRate(where, h.Errors, h.Handshakes, "handshakes")
			if h.HAProxyCPUSeconds < 0 || h.PerCPUSecond < 0 {
				c.addf("%s: haproxy_cpu_seconds %s or per_cpu_second %s is negative", where, num(h.HAProxyCPUSeconds), num(h.PerCPUSecond))
			}
			switch {
			case list == "handshakes" && h.Resumed != 0:
				c.addf("%s: resumed %d: a full handshake's client keeps no session", where, h.Resumed)
			case list == "resumed" && float64(h.Resumed) < minResumed*float64(h.Handshakes):
				// A client whose tickets are refused makes full
				// handshakes: the point would measure the wrong thing.
				c.addf("%s: resumed %d of %d handshakes, below %s", where, h.Resumed, h.Handshakes, num(minResumed))
			}
		}
	}
	checkHandshakes("handshakes", r.Handshakes)
	checkHandshakes("resumed", r.Resumed)
	if !r.Settings.SessionTickets && len(r.Resumed) > 0 {
		c.addf("resumed: %d points in a run without settings.session_tickets", len(r.Resumed))
	}

	for i, s := range r.Small {
		where := fmt.Sprintf("small[%d] (%s %d B x %d conns)", i, s.Target, s.Bytes, s.Conns)
		if s.Target != TargetOber && s.Target != TargetHAProxy {
			c.addf("%s: target %q is not %s or %s", where, s.Target, TargetOber, TargetHAProxy)
		}
		c.positive(where, "instances", float64(s.Instances))
		c.positive(where, "conns", float64(s.Conns))
		c.positive(where, "bytes", float64(s.Bytes))
		c.positive(where, "requests", float64(s.Requests))
		c.positive(where, "seconds", s.Seconds)
		c.positive(where, "requests_per_second", s.RequestsPerSecond)
		c.errorRate(where, s.Errors, s.Requests, "requests")
		if s.P50Ms < 0 {
			c.addf("%s: p50_ms %s is negative", where, num(s.P50Ms))
		}
		if s.P50Ms > s.P99Ms {
			c.addf("%s: p50_ms %s is above p99_ms %s", where, num(s.P50Ms), num(s.P99Ms))
		}
		c.positive(where, "p99_ms", s.P99Ms)
		c.below(where, "p99_ms", s.P99Ms, maxP99Ms)
	}

	for i, x := range r.XDP {
		where := fmt.Sprintf("xdp[%d] (%s)", i, x.Case)
		c.positive(where, "ns_per_packet", x.NsPerPacket)
		c.below(where, "ns_per_packet", x.NsPerPacket, maxXDPNs)
		c.positive(where, "empty_ns", x.EmptyNs)
		if x.NsPerPacket < minXDPOfEmpty*x.EmptyNs {
			c.addf("%s: ns_per_packet %s is below %s x empty_ns %s", where, num(x.NsPerPacket), num(minXDPOfEmpty), num(x.EmptyNs))
		}
	}

	// Coverage: a report without one side of a comparison is not a
	// comparison, whatever its figures.
	for _, target := range []string{TargetOber, TargetHAProxy} {
		for _, op := range []string{"GET", "PUT"} {
			if !slices.ContainsFunc(r.Throughput, func(t Throughput) bool { return t.Target == target && t.Op == op }) {
				c.addf("throughput: no %s point for target %s", op, target)
			}
		}
		if !slices.ContainsFunc(r.Handshakes, func(h Handshakes) bool { return h.Target == target }) {
			c.addf("handshakes: no point for target %s", target)
		}
		if r.Settings.SessionTickets && !slices.ContainsFunc(r.Resumed, func(h Handshakes) bool { return h.Target == target }) {
			c.addf("resumed: no point for target %s", target)
		}
		if !slices.ContainsFunc(r.Small, func(s Small) bool { return s.Target == target }) {
			c.addf("small: no point for target %s", target)
		}
	}
	for _, name := range strings.Fields(requiredXDPCases) {
		if !slices.ContainsFunc(r.XDP, func(x XDPPoint) bool { return strings.Contains(x.Case, name) }) {
			c.addf("xdp: no case whose name contains %q", name)
		}
	}
	return errors.Join(c.errs...)
}

// near reports whether got is within ratioTolerance of want, relatively.
func near(got, want float64) bool {
	return math.Abs(got-want) <= ratioTolerance*math.Abs(want)
}

// sizeLabel names a byte count the way the bench's sizes are chosen: in
// whole binary units.
func sizeLabel(n int) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.Itoa(n>>30) + " GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

// pair holds the two sides of one comparison row. Each side is a slice
// so that a repeated point shows as a row of its own, not silently lost.
type pair[T any] struct{ ober, haproxy []T }

// pairUp groups items of the two targets by key; keys come back sorted
// by order. Items of any other target are left out (Check names them).
func pairUp[K comparable, T any](items []T, target func(T) string, key func(T) K, order func(a, b K) int) ([]K, map[K]*pair[T]) {
	m := make(map[K]*pair[T])
	var keys []K
	for _, it := range items {
		k := key(it)
		p := m[k]
		if p == nil {
			p = &pair[T]{}
			m[k] = p
			keys = append(keys, k)
		}
		switch target(it) {
		case TargetOber:
			p.ober = append(p.ober, it)
		case TargetHAProxy:
			p.haproxy = append(p.haproxy, it)
		}
	}
	slices.SortStableFunc(keys, order)
	return keys, m
}

// rows walks the rows of a pair: as many as its longer side, with nil
// where a side has no more items.
func (p *pair[T]) rows(fn func(o, h *T)) {
	for i := range max(len(p.ober), len(p.haproxy)) {
		var o, h *T
		if i < len(p.ober) {
			o = &p.ober[i]
		}
		if i < len(p.haproxy) {
			h = &p.haproxy[i]
		}
		fn(o, h)
	}
}

// cell formats a figure of a side that may be missing.
func cell[T any](t *T, format string, v func(*T) float64) string {
	if t == nil {
		return "-"
	}
	return fmt.Sprintf(format, v(t))
}

// cellMeasured is cell of a figure that older reports lack (0): "-".
func cellMeasured(t *Handshakes, v func(*Handshakes) float64) string {
	if t == nil || !(v(t) > 0) {
		return "-"
	}
	return fmt.Sprintf("%.0f", v(t))
}

// ratio is ober over haproxy, or "-" when it means nothing.
func ratio(o, h float64, ok bool) string {
	if !ok || !(h > 0) {
		return "-"
	}
	return fmt.Sprintf("%.2f", o/h)
}

// opOrder puts GET before PUT, as the bench runs them.
func opOrder(op string) int {
	switch op {
	case "GET":
		return 0
	case "PUT":
		return 1
	}
	return 2
}

// WriteText writes a human-readable summary of the report: ober and
// HAProxy side by side, with ober/haproxy ratios, so the comparison is
// read off one row.
func (r *Report) WriteText(w io.Writer) error {
	sw := &stickyWriter{w: w}
	tw := tabwriter.NewWriter(sw, 0, 0, 2, ' ', tabwriter.AlignRight)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }

	head := "ober bench"
	if r.Version != "" {
		head += " " + r.Version
	}
	if !r.Started.IsZero() {
		head += ", started " + r.Started.UTC().Format(time.RFC3339)
	}
	if r.Seconds > 0 {
		head += fmt.Sprintf(", %.0f s", r.Seconds)
	}
	if r.Quick {
		head += ", quick"
	}
	if r.Settings.TLSMax == "1.2" {
		head += ", the client at TLS 1.2"
	}
	if r.Settings.Tune != "" {
		head += ", both targets with haproxy.tune " + r.Settings.Tune
	}
	switch {
	case r.Settings.AA && r.Settings.VariantTune != "":
		head += ", A/B of a lever: the ober column is the baseline HAProxy with " + r.Settings.VariantTune
	case r.Settings.AA:
		head += ", A/A calibration: the ober column is the baseline HAProxy measured again"
	case r.Settings.BaselineXDP:
		head += fmt.Sprintf(", ober's steering %s, the baseline's link with an XDP program that passes", r.Settings.SteeringMode)
	case r.Settings.SteeringMode != "":
		var ons []string
		for i, on := range r.Settings.SteeringOn {
			if i < len(r.Settings.Instances) {
				ons = append(ons, fmt.Sprintf("%s with %d", onOff(on), r.Settings.Instances[i]))
			}
		}
		head += fmt.Sprintf(", ober's steering %s (%s)", r.Settings.SteeringMode, strings.Join(ons, ", "))
	case !r.Settings.Steering:
		head += ", ober's steering off"
	}
	p("%s\n", head)
	m := r.Machine
	p("machine: %s, %d CPUs, kernel %s; %s on %s; %s; flags: %s\n",
		orDash(m.CPUModel), m.Cores, orDash(m.Kernel), orDash(m.HAProxy), orDash(m.HAProxyTLS), orDash(m.OpenSSL), orDash(strings.Join(m.Flags, " ")))
	cr := r.Crypto
	p("crypto ceiling: %s, %d B blocks: %.2f GB/s per core, %.2f GB/s for the machine (%s)\n",
		orDash(cr.Cipher), cr.BlockBytes, cr.GBpsPerCore, cr.GBpsMachine, orDash(cr.Command))

	type tkey struct {
		op          string
		objectBytes int
		instances   int
		conns       int
	}
	tkeys, tpairs := pairUp(r.Throughput,
		func(t Throughput) string { return t.Target },
		func(t Throughput) tkey { return tkey{t.Op, t.ObjectBytes, t.Instances, t.Conns} },
		func(a, b tkey) int {
			return cmp.Or(cmp.Compare(opOrder(a.op), opOrder(b.op)), cmp.Compare(a.op, b.op),
				cmp.Compare(a.objectBytes, b.objectBytes), cmp.Compare(a.instances, b.instances), cmp.Compare(a.conns, b.conns))
		})
	p("\nthroughput over HTTPS, GB/s (10^9 B/s); instances: ober instances, or HAProxy threads;\n" +
		"GB/cpu-s: bytes moved per CPU second of the target's HAProxy processes\n")
	p("op\tsize\tinstances\tconns\tober\thaproxy\tober/haproxy\tober of crypto\tober GB/cpu-s\thaproxy GB/cpu-s\terrors ober\terrors haproxy\t\n")
	for _, k := range tkeys {
		tpairs[k].rows(func(o, h *Throughput) {
			gbps := func(t *Throughput) float64 { return t.GBps }
			perCPU := func(t *Throughput) float64 { return t.GBPerCPUSecond }
			p("%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", k.op, sizeLabel(k.objectBytes), k.instances, k.conns,
				cell(o, "%.2f", gbps), cell(h, "%.2f", gbps),
				ratio(get(o, gbps), get(h, gbps), o != nil && h != nil),
				cell(o, "%.0f%%", func(t *Throughput) float64 { return 100 * t.OfCrypto }),
				cell(o, "%.2f", perCPU), cell(h, "%.2f", perCPU),
				cell(o, "%.0f", func(t *Throughput) float64 { return float64(t.Errors) }),
				cell(h, "%.0f", func(t *Throughput) float64 { return float64(t.Errors) }))
		})
	}

	type hkey struct{ instances, conns int }
	for _, table := range []struct {
		title string
		hs    []Handshakes
	}{
		{"new TLS connections per second, one request each (full handshakes)", r.Handshakes},
		{"resumed TLS connections per second, one request each (the client keeps its session ticket)", r.Resumed},
	} {
		if len(table.hs) == 0 {
			continue
		}
		hkeys, hpairs := pairUp(table.hs,
			func(h Handshakes) string { return h.Target },
			func(h Handshakes) hkey { return hkey{h.Instances, h.Conns} },
			func(a, b hkey) int {
				return cmp.Or(cmp.Compare(a.instances, b.instances), cmp.Compare(a.conns, b.conns))
			})
		p("\n%s\n", table.title)
		p("instances\tconns\tober\thaproxy\tober/haproxy\tober per cpu-s\thaproxy per cpu-s\terrors ober\terrors haproxy\t\n")
		for _, k := range hkeys {
			hpairs[k].rows(func(o, h *Handshakes) {
				cps := func(t *Handshakes) float64 { return t.ConnsPerSecond }
				per := func(t *Handshakes) float64 { return t.PerCPUSecond }
				p("%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", k.instances, k.conns,
					cell(o, "%.0f", cps), cell(h, "%.0f", cps),
					ratio(get(o, cps), get(h, cps), o != nil && h != nil),
					cellMeasured(o, per), cellMeasured(h, per),
					cell(o, "%.0f", func(t *Handshakes) float64 { return float64(t.Errors) }),
					cell(h, "%.0f", func(t *Handshakes) float64 { return float64(t.Errors) }))
			})
		}
	}

	type skey struct{ bytes, instances, conns int }
	skeys, spairs := pairUp(r.Small,
		func(s Small) string { return s.Target },
		func(s Small) skey { return skey{s.Bytes, s.Instances, s.Conns} },
		func(a, b skey) int {
			return cmp.Or(cmp.Compare(a.bytes, b.bytes), cmp.Compare(a.instances, b.instances), cmp.Compare(a.conns, b.conns))
		})
	p("\nsmall GETs on keep-alive connections, requests per second and latency in ms\n")
	p("size\tinstances\tconns\tober\thaproxy\tober/haproxy\tober p50\tober p99\thaproxy p50\thaproxy p99\terrors ober\terrors haproxy\t\n")
	for _, k := range skeys {
		spairs[k].rows(func(o, h *Small) {
			rps := func(t *Small) float64 { return t.RequestsPerSecond }
			p50 := func(t *Small) float64 { return t.P50Ms }
			p99 := func(t *Small) float64 { return t.P99Ms }
			p("%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", sizeLabel(k.bytes), k.instances, k.conns,
				cell(o, "%.0f", rps), cell(h, "%.0f", rps),
				ratio(get(o, rps), get(h, rps), o != nil && h != nil),
				cell(o, "%.2f", p50), cell(o, "%.2f", p99), cell(h, "%.2f", p50), cell(h, "%.2f", p99),
				cell(o, "%.0f", func(t *Small) float64 { return float64(t.Errors) }),
				cell(h, "%.0f", func(t *Small) float64 { return float64(t.Errors) }))
		})
	}

	p("\nXDP cost per packet, ns; empty: a program that only returns XDP_PASS, same frame, same method\n")
	p("case\taction\tober\tempty\tover empty\t\n")
	for _, x := range r.XDP {
		p("%s\t%s\t%.1f\t%.1f\t%.1f\t\n", x.Case, orDash(x.Action), x.NsPerPacket, x.EmptyNs, x.OverEmptyNs)
	}
	if err := cmp.Or(tw.Flush(), sw.err); err != nil {
		return fmt.Errorf("report text: %w", err)
	}
	return nil
}

// stickyWriter keeps the first write error: the tabwriter flushes some
// blocks from within writes whose errors WriteText does not look at.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(b)
	if err != nil {
		s.err = err
	}
	return n, err
}

func get[T any](t *T, v func(*T) float64) float64 {
	if t == nil {
		return 0
	}
	return v(t)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
