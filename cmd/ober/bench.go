package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/bench"
	"github.com/ober-ingress/ober/control/lib/haproxy"
)

func newBenchCmd(a *app, version string) *cobra.Command {
	var (
		o                  bench.Options
		out                string
		instances, sizes   string
		conns              string
		window, rateWindow time.Duration
		steering           string
		tune, aaTune       string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure ober against plain HAProxy in network namespaces (GB/s, TLS conn/s, req/s, XDP ns/packet)",
		Long: `bench builds a client, a node and a backend in network namespaces and
measures, side by side in one run:

  - large-object GET and PUT throughput over HTTPS in GB/s, through ober
    (XDP, sk_lookup, N single-threaded HAProxy instances pinned to CPUs)
    and through the same HAProxy build as one process with N threads and
    no XDP, over a sweep of object sizes and connection counts;
  - new TLS connections per second, full and resumed (the client keeps
    its session ticket), and 4 KiB requests per second with p50/p99
    latency, for both;
  - the XDP program's ns per packet (SYN, established ACK, whitelist drop,
    non-VIP pass) beside an empty XDP program;
  - the machine's crypto ceiling, 'openssl speed' AES-GCM on one core, to
    state each GB/s figure as a fraction of it.

It writes bench.json (machine-readable, with the CPU model and core count)
and bench.svg (throughput against connections, ober and baseline) into
--out, prints a summary, and removes its namespaces when done. Every run
stops by itself: the bound is printed first. Needs root.`,
		Example: `  ober bench --quick            # about a minute
  ober bench --out results/     # the full run, about 10 minutes on 2 CPUs
  ober bench --instances 1,2,4 --sizes 64MiB --conns 1,8,64
  ober bench --steering=on      # ober with the XDP redirect to the instance's CPU forced on
  ober bench --steering=off     # and forced off
  ober bench --quick --haproxy /var/cache/ober/haproxy-3.0/haproxy   # both targets on HAProxy 3.0
  ober bench --aa               # the baseline against itself: how far ratios move by chance
  ober bench --aa-tune bufsize=65536 --instances 1   # one HAProxy lever against the same HAProxy without it`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("bench needs root (network namespaces, BPF): run it with sudo")
			}
			var err error
			if o.Instances, err = parseInts("--instances", instances, strconv.Atoi); err != nil {
				return err
			}
			if o.ObjectBytes, err = parseInts("--sizes", sizes, parseSize); err != nil {
				return err
			}
			if o.Conns, err = parseInts("--conns", conns, strconv.Atoi); err != nil {
				return err
			}
			o.Window, o.RateWindow = window, rateWindow
			if err := o.Steering.UnmarshalText([]byte(steering)); err != nil {
				return fmt.Errorf("bench --steering: %w", err)
			}
			if o.Tune, err = haproxy.ParseTune(tune); err != nil {
				return fmt.Errorf("bench --tune: %w", err)
			}
			if o.VariantTune, err = haproxy.ParseTune(aaTune); err != nil {
				return fmt.Errorf("bench --aa-tune: %w", err)
			}
			if aaTune != "" && o.VariantTune == (haproxy.Tune{}) {
				return fmt.Errorf("bench --aa-tune %q: sets nothing", aaTune)
			}
			o.AA = o.AA || o.VariantTune != (haproxy.Tune{})
			o.Version = version
			o.Progress = a.out
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("bench --out %s: %w", out, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.Run(ctx, o)
			if err != nil {
				return err
			}
			jsonPath, svgPath := filepath.Join(out, "bench.json"), filepath.Join(out, "bench.svg")
			if err := rep.WriteJSON(jsonPath); err != nil {
				return err
			}
			f, err := os.Create(svgPath)
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			if err := bench.WriteSVG(f, rep); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			fmt.Fprintln(a.out)
			if err := rep.WriteText(a.out); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "\nwrote %s and %s\n", jsonPath, svgPath)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.Quick, "quick", false, "the short run (one instance count, 64 MiB, 3 connection counts; it stops within 4 minutes and takes about one)")
	f.StringVar(&out, "out", ".", "directory for bench.json and bench.svg")
	f.StringVar(&instances, "instances", "", "ober instance counts (and baseline thread counts), comma-separated (default 1,2; quick 2)")
	f.StringVar(&sizes, "sizes", "", "large-object sizes, comma-separated, with KiB/MiB/GiB (default 64MiB,256MiB,1GiB; quick 64MiB)")
	f.StringVar(&conns, "conns", "", "connection counts of the sweep, comma-separated (default 1,4,16,64; quick 1,8,32)")
	f.DurationVar(&window, "window", 0, "time per throughput point (default 4s; quick 1.5s)")
	f.DurationVar(&rateWindow, "rate-window", 0, "time per handshake and small-request figure (default 5s; quick 2s)")
	f.BoolVar(&o.BaselineXDP, "baseline-xdp", false, "give the baseline's link an XDP program that passes every packet, so that both links receive through the veth's XDP path (see BENCHMARKS.md)")
	f.BoolVar(&o.AA, "aa", false, "calibration: measure the baseline HAProxy in both columns (ober runs idle); its ratios are the machine's noise")
	f.BoolVar(&o.TLS12, "tls12", false, "the client offers TLS 1.2 at most (default 1.3), for both targets: what a resumed TLS 1.2 session saves")
	f.StringVar(&tune, "tune", "", "haproxy.tune for both targets, key=value,... (bufsize, ssl_maxrecord, client_sndbuf, client_rcvbuf, server_sndbuf, server_rcvbuf)")
	f.StringVar(&aaTune, "aa-tune", "", "an A/A run whose first column is a second baseline HAProxy with these haproxy.tune keys set over --tune: one lever against the same HAProxy without it")
	f.StringVar(&steering, "steering", "auto", "ober's instances.steering: auto (ober's default), on (XDP redirects each packet to its instance's CPU) or off (sk_lookup alone dispatches)")
	f.StringVar(&o.Dir, "dir", "", "directory of the run's namespaces' files (default /run/ober-bench)")
	f.StringVar(&o.Prefix, "prefix", "", "prefix of the run's namespace names (default oberbench-)")
	f.StringVar(&o.Bin, "ober", "", "the ober binary the node runs (default this one)")
	f.StringVar(&o.HAProxy, "haproxy", "", "the HAProxy binary of ober's instances and of the baseline, e.g. /var/cache/ober/haproxy-3.0/haproxy from make deps (default haproxy)")
	return cmd
}

// parseInts parses a comma-separated flag value; empty is nil (default).
func parseInts(flag, v string, parse func(string) (int, error)) ([]int, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := parse(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bench %s: %q is not a positive number", flag, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseSize reads 64MiB, 1GiB, 512KiB or a plain byte count.
func parseSize(s string) (int, error) {
	units := []struct {
		suffix string
		mult   int
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.Atoi(num)
			if err != nil {
				return 0, err
			}
			return n * u.mult, nil
		}
	}
	return strconv.Atoi(s)
}
