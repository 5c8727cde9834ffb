package bench

import (
	"bytes"
	"context"
	"math"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
	"github.com/ober-ingress/ober/loader"
)

// BenchmarkXDP runs every case's frame through its program, one
// BPF_PROG_TEST_RUN with repeat=1 per iteration, on BenchCPU. ns/pkt is
// the mean of the kernel's durations; ns/op is Go's wall time per
// iteration, syscall included; ns/pkt-rep is the kernel's per-run time
// for one run of 100000 repeats. The floor is its own sub-benchmark:
//
//	go test -run '^$' -bench XDP -benchtime 200000x ./bench/
func BenchmarkXDP(b *testing.B) {
	s, err := openSite(netnstest.BPFFS(b))
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, s.close()) })
	require.NoError(b, s.onBenchThread(s.verify))

	for _, c := range s.cases {
		b.Run(c.Name, func(b *testing.B) {
			// The sub-benchmark's goroutine is its own: the thread can go with it.
			require.NoError(b, s.enter())
			require.NoError(b, s.useHandoff(c))
			prog := s.prog(c)
			var (
				kernel time.Duration
				n      int
			)
			for b.Loop() {
				d, err := runOnce(prog, c, c.WantAction)
				if err != nil {
					b.Fatal(err)
				}
				kernel += d
				n++
			}
			b.ReportMetric(float64(kernel)/float64(n), "ns/pkt")
			if !c.Rewrites {
				d, err := runRepeat(prog, c, c.WantAction, DefaultXDPRepeat)
				require.NoError(b, err)
				b.ReportMetric(float64(d), "ns/pkt-rep")
			}
		})
	}
}

func TestXDPCost(t *testing.T) {
	root := netnstest.BPFFS(t)
	var progress []XDPProgress
	rs, err := XDPCost(context.Background(), XDPOptions{
		Root: root, Packets: 2000, Repeat: 10000,
		Progress: func(p XDPProgress) { progress = append(progress, p) },
	})
	require.NoError(t, err)

	want := map[string]loader.Action{
		"syn-v4-redirect":           loader.ActionRedirect,
		"syn-v6-redirect":           loader.ActionRedirect,
		"ack1400-v4-redirect":       loader.ActionRedirect,
		"ack1400-v4-handoff-local":  loader.ActionRedirect,
		"ack1400-v4-handoff-orphan": loader.ActionDrop,
		"wl-drop-v4":                loader.ActionDrop,
		"wl-drop-v6":                loader.ActionDrop,
		"non-vip-v4-pass":           loader.ActionPass,
		"floor":                     loader.ActionPass,
	}
	require.Len(t, rs, len(want))
	var floor XDPResult
	for _, r := range rs {
		a, ok := want[r.Case]
		require.True(t, ok, "unexpected case %s", r.Case)
		require.Equal(t, a, r.Action, r.Case)
		require.Equal(t, 2000, r.Packets, r.Case)
		require.Equal(t, 10000, r.Repeat, r.Case)
		for name, v := range map[string]float64{
			"NsPerPacket": r.NsPerPacket, "NsPerPacketP50": r.NsPerPacketP50,
			"NsPerPacketRepeat": r.NsPerPacketRepeat, "FloorNs": r.FloorNs,
			"FloorNsP50": r.FloorNsP50, "FloorNsRepeat": r.FloorNsRepeat,
		} {
			require.True(t, v > 0 && !math.IsInf(v, 0), "%s: %s = %v", r.Case, name, v)
		}
		if r.Case == "floor" {
			floor = r
		}
	}
	require.Equal(t, "floor", floor.Case)
	require.Equal(t, "floor", rs[len(rs)-1].Case, "the floor comes last")

	// The one ordering that holds by construction: ober's program does
	// everything the floor does and more. The medians and the repeat
	// figures are compared, not the means: one preemption of the VM in a
	// timed run can move a 2000-run mean by hundreds of nanoseconds.
	for _, r := range rs {
		if r.Case == "floor" {
			continue
		}
		require.Less(t, r.FloorNsP50, r.NsPerPacketP50, "%s: floor median, same frame, interleaved", r.Case)
		require.Less(t, floor.NsPerPacketP50, r.NsPerPacketP50, "%s: floor case median", r.Case)
		require.Less(t, r.FloorNsRepeat, r.NsPerPacketRepeat, "%s: repeat figure", r.Case)
	}

	// The VIP path's bound: about 3x its median over the floor as measured
	// here (BENCHMARKS.md: 210-330 ns on a loaded 2-vCPU VM). The room is
	// for a noisy machine: this catches a path gone badly wrong, while
	// BenchmarkXDP, run beside the previous program, shows a lookup more.
	const vipPathBoundNs = 700
	for _, r := range rs {
		switch r.Case {
		case "syn-v4-redirect", "syn-v6-redirect", "ack1400-v4-redirect":
			require.Less(t, r.NsPerPacketP50-r.FloorNsP50, float64(vipPathBoundNs),
				"%s: median over the floor", r.Case)
		}
	}

	// Progress: each case starts at 0 and ends at its total.
	var starts, ends int
	for _, p := range progress {
		require.Equal(t, 2000, p.Total)
		require.LessOrEqual(t, p.Done, p.Total)
		switch p.Done {
		case 0:
			starts++
		case p.Total:
			ends++
		}
	}
	require.Equal(t, len(rs), starts)
	require.Equal(t, len(rs), ends)

	var out bytes.Buffer
	require.NoError(t, FormatXDP(&out, rs))
	for _, r := range rs {
		require.Contains(t, out.String(), r.Case)
	}
	t.Logf("\n%s", out.String())
}

// The benchmark's pins must go away with it, leaving the bpffs as it was.
func TestXDPCostCleansUp(t *testing.T) {
	root := netnstest.BPFFS(t)
	before := names(t, root)
	_, err := XDPCost(context.Background(), XDPOptions{Root: root, Packets: 10, Repeat: 10})
	require.NoError(t, err)
	require.Equal(t, before, names(t, root))
}

func TestXDPCostCancelled(t *testing.T) {
	root := netnstest.BPFFS(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := names(t, root)
	_, err := XDPCost(ctx, XDPOptions{Root: root, Packets: 10, Repeat: 10})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, before, names(t, root))
}

// names lists a directory; a fresh bpffs already holds the kernel's
// maps.debug and progs.debug.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
