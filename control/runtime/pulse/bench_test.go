package pulse_test

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ober-ingress/ober/control/runtime/pulse"
)

// BenchmarkTCPChecks1000 checks 1,000 tcp targets (one local listener
// that accepts and closes) every 500ms; an op is one check. Besides
// ns/op (wall time per check at that rate), it reports the process's CPU
// time per check (the checker's and the listener's, kernel included)
// and, from the benchmark's allocations, those per check. mem-B/target
// (heap and stacks) and goroutines/target are the standing cost of a
// target.
func BenchmarkTCPChecks1000(b *testing.B) {
	const targets, interval = 1000, 500 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var accepts atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	p := pulse.New(pulse.Options{})
	defer p.Close()
	var list []pulse.Target
	for i := range targets {
		list = append(list, pulse.Target{Key: fmt.Sprint("svc/pool/b", i), Addr: addr,
			Check: pulse.Check{Kind: pulse.KindTCP, Interval: interval}})
	}
	if err := p.Set(list); err != nil {
		b.Fatal(err)
	}
	for accepts.Load() < 2*targets {
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	mem := float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / targets
	perTarget := float64(runtime.NumGoroutine()-goroutines) / targets

	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	start := accepts.Load()
	for accepts.Load()-start < int64(b.N) {
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(mem, "mem-B/target")
	b.ReportMetric(perTarget, "goroutines/target")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(accepts.Load()-start), "cpu-ns/check")
	for k, st := range p.States() {
		if st.Failed > 0 {
			b.Fatalf("%s failed: %s", k, st.LastError)
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
