package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/lab/netsite"
)

// Options shape one run of the harness. The zero value of a field takes
// the full run's default, or the quick run's with Quick.
type Options struct {
	// Bin is the ober binary the node runs; default this executable.
	Bin string
	// HAProxy is the HAProxy binary both targets run: ober's instances
	// (haproxy.binary) and the baseline; a path or a name looked up in
	// PATH, default haproxy. The 3.0 wrapper of `make deps` compares
	// the two on 3.0.
	HAProxy string
	// Dir holds the run's site (namespaces' files, the bpffs mount, the
	// node's configuration and logs); default /run/ober-bench. Prefix
	// starts the namespaces' names; default "oberbench-".
	Dir, Prefix string
	// Quick is the short run: one instance count, one object size, three
	// connection counts, short windows.
	Quick bool
	// Instances lists the ober instance counts to measure (and the
	// baseline's thread counts); default 1 and 2 (quick: 2).
	Instances []int
	// ObjectBytes lists the large-object sizes; default 64 MiB, 256 MiB
	// and 1 GiB (quick: 64 MiB).
	ObjectBytes []int
	// Conns lists the connection counts of the sweep; default 1, 4, 16,
	// 64 (quick: 1, 8, 32).
	Conns []int
	// Window is how long each throughput point runs; default 4s (quick
	// 1.5s). RateWindow is the same for handshakes and small requests;
	// default 5s (quick 2s).
	Window, RateWindow time.Duration
	// XDPPackets per case and program; default DefaultXDPPackets (quick
	// 5000).
	XDPPackets int
	// Steering is ober's instances.steering; default auto (ober's
	// default).
	Steering config.Steering
	// AA is a calibration run: the baseline HAProxy is measured in both
	// columns, in the same order and windows as a normal run; ober runs
	// idle. Its ratios show how far two measurements of the very
	// same target differ on this machine: the noise a real ratio must
	// clear.
	AA bool
	// BaselineXDP attaches an XDP program that passes every packet to the
	// node's end of the baseline's link: both targets then receive
	// through a veth's XDP path, and the difference is ober's own.
	BaselineXDP bool
	// Tune is haproxy.tune for both targets: ober's instances and the
	// baseline.
	Tune haproxy.Tune
	// VariantTune, with AA, runs a second plain HAProxy in the first
	// column that sets these fields over Tune: one lever measured against
	// the same HAProxy without it, side by side in one run.
	VariantTune haproxy.Tune
	// TLS12 caps the client at TLS 1.2, as many S3 SDKs and older
	// clients are: a resumed TLS 1.2 session skips the key exchange,
	// where TLS 1.3's (psk_dhe_ke, the only mode common clients offer)
	// still runs one.
	TLS12 bool
	// Version is ober's version, recorded in the report.
	Version string
	// Progress receives a line per step; nil for none.
	Progress io.Writer
}

// Connections of the rate figures.
const (
	handshakeConns = 16
	smallConns     = 16
	smallBytes     = 4 << 10
)

func (o Options) withDefaults() (Options, error) {
	def := func(v *[]int, full, quick []int) {
		if len(*v) == 0 {
			*v = full
			if o.Quick {
				*v = quick
			}
		}
	}
	def(&o.Instances, []int{1, 2}, []int{2})
	def(&o.ObjectBytes, []int{64 << 20, 256 << 20, 1 << 30}, []int{64 << 20})
	def(&o.Conns, []int{1, 4, 16, 64}, []int{1, 8, 32})
	dur := func(v *time.Duration, full, quick time.Duration) {
		if *v == 0 {
			*v = full
			if o.Quick {
				*v = quick
			}
		}
	}
	dur(&o.Window, 4*time.Second, 1500*time.Millisecond)
	dur(&o.RateWindow, 5*time.Second, 2*time.Second)
	if o.XDPPackets == 0 {
		o.XDPPackets = DefaultXDPPackets
		if o.Quick {
			o.XDPPackets = 5000
		}
	}
	if o.Dir == "" {
		o.Dir = "/run/ober-bench"
	}
	if o.Prefix == "" {
		o.Prefix = "oberbench-"
	}
	if o.HAProxy == "" {
		o.HAProxy = "haproxy"
	}
	// Both targets run ober's defaults for what --tune leaves unset: the
	// baseline differs from ober's instances only in what ober adds
	// around HAProxy, not in HAProxy's own settings.
	o.Tune = config.HAProxyTune{}.WithDefaults().Renderer().Over(o.Tune)
	if o.VariantTune != (haproxy.Tune{}) && !o.AA {
		return o, fmt.Errorf("bench: a variant tune (%s) is measured against the baseline in an A/A run only", o.VariantTune)
	}
	if o.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("bench: the ober binary: %w", err)
		}
		o.Bin = exe
	}
	for _, l := range []struct {
		name string
		v    []int
		min  int
		max  int
	}{{"--instances", o.Instances, 1, 64}, {"--sizes", o.ObjectBytes, 1, 4 << 30}, {"--conns", o.Conns, 1, 1024}} {
		for _, v := range l.v {
			if v < l.min || v > l.max {
				return o, fmt.Errorf("bench %s: %d out of range [%d, %d]", l.name, v, l.min, l.max)
			}
		}
	}
	for _, w := range []struct {
		name string
		v    time.Duration
	}{{"--window", o.Window}, {"--rate-window", o.RateWindow}} {
		if w.v < 100*time.Millisecond || w.v > 10*time.Minute {
			return o, fmt.Errorf("bench %s: %v must be at least 100ms and at most 10m", w.name, w.v)
		}
	}
	return o, nil
}

// points is the number of throughput points of a run.
func (o Options) points() int {
	return len(o.Instances) * len(o.ObjectBytes) * len(o.Conns) * 2 /* ops */ * 2 /* targets */
}

// Bound is the longest a run with these options may take: the measuring
// windows, plus generous allowances for setting up, starting the node
// once per instance count, the XDP cases and openssl. Run stops by
// itself when it is over.
func (o Options) Bound() time.Duration {
	o, err := o.withDefaults()
	if err != nil {
		return 0
	}
	// Each figure is measured in two halves (abba), each with its own
	// allowance for connecting and settling.
	windows := time.Duration(o.points())*(o.Window+4*time.Second) +
		time.Duration(len(o.Instances)*6)*(o.RateWindow+4*time.Second) /* 2 targets x full, resumed, small */
	xdp := time.Duration(o.XDPPackets) * 12 * 2 * 5 * time.Microsecond
	setup := 30*time.Second + time.Duration(len(o.Instances))*60*time.Second
	return windows + xdp + setup + 10*time.Second /* openssl */
}

// Run measures and returns the report. It builds its own namespaces under
// o.Dir (removing a previous run's leftovers first) and removes them
// before it returns, also on error.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	o, err = o.withDefaults()
	if err != nil {
		return nil, err
	}
	bound := o.Bound()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	start := time.Now()
	say := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		}
	}
	say("ober bench: %d throughput points of %v, rates for %v, XDP %d packets per case; stops within %v",
		o.points(), o.Window, o.RateWindow, o.XDPPackets, bound.Round(time.Second))
	if _, err := netsite.Teardown(o.Dir, o.Prefix, 10*time.Second); err != nil {
		return nil, fmt.Errorf("bench: remove a previous run's site: %w", err)
	}

	rep = &Report{Version: o.Version, Started: start.UTC(), Quick: o.Quick, Settings: Settings{
		Instances: o.Instances, ObjectBytes: o.ObjectBytes, Conns: o.Conns, PointSeconds: o.Window.Seconds(), RateSeconds: o.RateWindow.Seconds(), SteeringMode: string(o.Steering), AA: o.AA, BaselineXDP: o.BaselineXDP,
		Tune: o.Tune.String(), VariantTune: o.VariantTune.String(), TLSMax: tlsMax(o.TLS12),
		SessionTickets: true,
		SmallBytes:     smallBytes, XDPPackets: o.XDPPackets,
	}}
	// The binary must be an HAProxy ober renders for before anything is
	// built: both targets run it.
	hv, err := haproxy.DetectVersion(ctx, o.HAProxy)
	if err != nil {
		return nil, fmt.Errorf("bench --haproxy %s: %w", o.HAProxy, err)
	}
	if err := hv.Supported(); err != nil {
		return nil, fmt.Errorf("bench --haproxy %s: %w", o.HAProxy, err)
	}
	rep.Machine = ReadMachine(ctx, o.HAProxy)
	say("machine: %s, %d CPUs, kernel %s", rep.Machine.CPUModel, rep.Machine.Cores, rep.Machine.Kernel)
	say("haproxy (ober's instances and the baseline): %s; %s; %s (%s)", o.HAProxy, hv.Raw,
		orDash(rep.Machine.HAProxyTLS), haproxy.FeaturesFor(hv))
	secs := 3
	if o.Quick {
		secs = 1
	}
	if rep.Crypto, err = CryptoCeiling(ctx, secs, rep.Machine.Cores); err != nil {
		return nil, err
	}
	say("crypto ceiling: %s %.2f GB/s per core, %.2f GB/s for %d cores", rep.Crypto.Cipher,
		rep.Crypto.GBpsPerCore, rep.Crypto.GBpsMachine, rep.Machine.Cores)

	t, err := buildTopology(ctx, o.Dir, o.Prefix, o.Bin, slicesMax(o.Instances), o.BaselineXDP)
	if t != nil {
		t.steering, t.aa = o.Steering, o.AA
		t.tune, t.variantTune = o.Tune, o.VariantTune
		t.tls12 = o.TLS12
		t.haproxy = o.HAProxy
	}
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, t.close()) }()

	say("XDP: %d runs per case and program", o.XDPPackets)
	xdpRoot := filepath.Join(t.root, "xdp")
	if err := os.MkdirAll(xdpRoot, 0o700); err != nil {
		return nil, err
	}
	xs, err := XDPCost(ctx, XDPOptions{Root: xdpRoot, Packets: o.XDPPackets})
	if err != nil {
		return nil, fmt.Errorf("bench xdp: %w", err)
	}
	for _, x := range xs {
		if x.Case == "floor" {
			continue
		}
		rep.XDP = append(rep.XDP, XDPPoint{Case: x.Case, Action: x.Action.String(), NsPerPacket: x.NsPerPacket,
			EmptyNs: x.FloorNs, OverEmptyNs: x.OverFloor()})
		say("  %-28s %7.1f ns/pkt, empty program %5.1f", x.Case, x.NsPerPacket, x.FloorNs)
	}

	point := 0
	for _, n := range o.Instances {
		// In an A/A run ober still runs, idle: the baseline serves the
		// certificate bundle it writes.
		if err := t.startOber(ctx, n); err != nil {
			return nil, err
		}
		on, err := t.steeringOn(ctx)
		if err != nil {
			return nil, err
		}
		rep.Settings.SteeringOn = append(rep.Settings.SteeringOn, on)
		rep.Settings.Steering = rep.Settings.Steering || on
		if o.AA && o.VariantTune != (haproxy.Tune{}) {
			say("A/B of a lever: HAProxy with %d thread(s) and %s in the first column, without it in the second; ober runs idle", n, o.VariantTune)
		} else if o.AA {
			say("A/A calibration: one HAProxy with %d thread(s) in both columns; ober runs idle", n)
		} else {
			say("node: ober with %d instance(s), steering %s (%s); baseline: one HAProxy with %d thread(s)", n, o.Steering, onOff(on), n)
		}
		if err := t.startBaseline(ctx, n); err != nil {
			return nil, err
		}
		for _, size := range o.ObjectBytes {
			for _, op := range []string{http.MethodGet, http.MethodPut} {
				for _, conns := range o.Conns {
					var line []string
					ps, err := abba(ctx, o.Window, func(ctx context.Context, target string, window time.Duration) (Throughput, error) {
						return t.throughput(ctx, target, op, int64(size), conns, window)
					}, Throughput.merge)
					if err != nil {
						return nil, err
					}
					for _, p := range ps {
						point++
						p.Instances = n
						if rep.Crypto.GBpsMachine > 0 {
							p.OfCrypto = p.GBps / rep.Crypto.GBpsMachine
						}
						rep.Throughput = append(rep.Throughput, p)
						line = append(line, fmt.Sprintf("%s %.3f GB/s", p.Target, p.GBps))
					}
					say("[%d/%d] %d inst  %-3s %5s x %2d conns: %s", point, o.points(), n, op, sizeName(size), conns, strings.Join(line, ", "))
				}
			}
		}
		hs, err := abba(ctx, o.RateWindow, func(ctx context.Context, target string, window time.Duration) (Handshakes, error) {
			return t.handshakes(ctx, target, handshakeConns, window)
		}, Handshakes.merge)
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			h.Instances = n
			rep.Handshakes = append(rep.Handshakes, h)
			say("%d inst  new TLS connections, %s: %.0f/s", n, h.Target, h.ConnsPerSecond)
		}
		rs, err := abba(ctx, o.RateWindow, func(ctx context.Context, target string, window time.Duration) (Handshakes, error) {
			return t.resumed(ctx, target, handshakeConns, window)
		}, Handshakes.merge)
		if err != nil {
			return nil, err
		}
		for _, h := range rs {
			h.Instances = n
			rep.Resumed = append(rep.Resumed, h)
			say("%d inst  resumed TLS connections, %s: %.0f/s (%d of %d resumed)", n, h.Target, h.ConnsPerSecond, h.Resumed, h.Handshakes)
		}
		ss, err := abba(ctx, o.RateWindow, func(ctx context.Context, target string, window time.Duration) (Small, error) {
			return t.small(ctx, target, smallBytes, smallConns, window)
		}, Small.merge)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			s.Instances = n
			rep.Small = append(rep.Small, s)
			say("%d inst  4 KiB GETs, %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms", n, s.Target, s.RequestsPerSecond, s.P50Ms, s.P99Ms)
		}
		if err := errors.Join(t.stopBaseline(), t.stopOber()); err != nil {
			return nil, err
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	say("done in %.0fs", rep.Seconds)
	return rep, nil
}

// tlsMax is the highest TLS version the client offers.
func tlsMax(tls12 bool) string {
	if tls12 {
		return "1.2"
	}
	return "1.3"
}

func slicesMax(v []int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return max(m, runtime.NumCPU())
}

func sizeName(b int) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%dB", b)
}

// abbaOrder is the order of the half-windows of one figure: ober, the
// baseline, the baseline again, ober again. Measured one after the other,
// whichever target went first would carry any drift of a shared machine
// during the point (another tenant's load, caches and TCP buffers warming
// up); in this order a linear drift weighs on both alike.
var abbaOrder = []string{TargetOber, TargetHAProxy, TargetHAProxy, TargetOber}

// abba measures a figure of both targets, each as two half-windows in
// abbaOrder, and merges each target's halves. It returns ober's figure
// first, then the baseline's.
func abba[T any](ctx context.Context, window time.Duration, measure func(ctx context.Context, target string, window time.Duration) (T, error), merge func(a, b T) T) ([]T, error) {
	half := window / 2
	got := map[string][]T{}
	for _, target := range abbaOrder {
		v, err := measure(ctx, target, half)
		if err != nil {
			return nil, err
		}
		got[target] = append(got[target], v)
	}
	out := make([]T, 0, 2)
	for _, target := range []string{TargetOber, TargetHAProxy} {
		h := got[target]
		out = append(out, merge(h[0], h[1]))
	}
	return out, nil
}
