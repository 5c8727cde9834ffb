package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// BenchmarkServices1000x10 runs the real `ober run` with 1,000 tcp
// services of 10 backends each (10,000 health-checked servers) and two
// instances, and reports what the issue asks of that configuration on a
// node: the resident memory of ober and of one HAProxy instance, and the
// time a reload takes (plan, render, HAProxy's check, every instance
// replaced and serving). The backends are ten HTTP listeners shared by
// every service, checked every 10 s.
//
//	go test ./e2e/ -run '^$' -bench Services1000x10 -benchtime 1x -count 3
func BenchmarkServices1000x10(b *testing.B) {
	const services, backends = 1000, 10
	s := nodetest.New(b, oberBin, 2)
	var addrs []netip.Addr
	for i := range backends {
		a := s.BackendIP(i)
		addrs = append(addrs, a)
		nodetest.Serve(b, s.Backend(), netip.AddrPortFrom(a, 9000), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	}
	c := s.Config(nodetest.Params{Instances: 2})
	// Room for the listeners and connections under the shell's
	// descriptor limit; ober lowers maxconn to fit in any case.
	c.Instances.MaxConn = 5000
	balances := config.Balances()
	for i := range services {
		svc := config.Service{
			Name: fmt.Sprintf("svc%04d", i), Mode: config.ModeTCP, Port: uint16(10000 + i),
			Balance: balances[i%len(balances)],
			Health:  &config.ServiceHealth{Kind: config.CheckTCP, Interval: config.Duration{Duration: 10 * time.Second}},
		}
		for j, a := range addrs {
			svc.Backends = append(svc.Backends, config.BackendServer{Name: fmt.Sprintf("b%d", j), Address: netip.AddrPortFrom(a, 9000).String()})
		}
		c.Services = append(c.Services, svc)
	}
	s.WriteConfig(c)
	start := time.Now()
	s.Start()
	started := time.Since(start)

	st := s.Status()
	require.Len(b, st.Daemon.Services, services+2)
	// Every check has had its first result.
	deadline := time.Now().Add(30 * time.Second)
	for ; ; time.Sleep(500 * time.Millisecond) {
		st = s.Status()
		checked := 0
		for _, svc := range st.Daemon.Services {
			for _, be := range svc.Backends {
				if be.ChecksPassed > 0 {
					checked++
				}
			}
		}
		if checked >= services*backends {
			break
		}
		require.True(b, time.Now().Before(deadline), "%d of %d backends checked after 30 s", checked, services*backends)
	}
	oberPID := st.Daemon.PID
	// Steady state: checks running, nobody asking for the status.
	time.Sleep(5 * time.Second)
	steady := vmRSSKiB(b, oberPID)
	steadyInst := vmRSSKiB(b, st.Daemon.HAProxy.Instances[0].PID)

	gen := st.Daemon.HAProxy.Generation
	var reloads []time.Duration
	b.ResetTimer()
	for range b.N {
		sent := time.Now()
		s.Signal(syscall.SIGHUP)
		for ; ; time.Sleep(100 * time.Millisecond) {
			st = s.Status()
			if st.Daemon.HAProxy.Generation > gen && healthyInstances(st) == 2 {
				break
			}
			require.Empty(b, st.Daemon.Config.LastReloadError)
			require.Less(b, time.Since(sent), time.Minute, "reload not done after a minute")
		}
		gen = st.Daemon.HAProxy.Generation
		reloads = append(reloads, time.Since(sent))
	}
	b.StopTimer()
	var sum time.Duration
	for _, d := range reloads {
		sum += d
	}
	b.ReportMetric(float64(sum.Milliseconds())/float64(len(reloads)), "reload-ms")
	b.ReportMetric(started.Seconds(), "start-s")
	b.ReportMetric(float64(steady)/1024, "ober-rss-MiB")
	b.ReportMetric(float64(steadyInst)/1024, "instance-rss-MiB")
	b.ReportMetric(float64(vmRSSKiB(b, oberPID))/1024, "ober-rss-after-reload-MiB")
}

func healthyInstances(st *api.Status) int {
	n := 0
	for _, in := range st.Daemon.HAProxy.Instances {
		if in.State == supervisor.StateHealthy {
			n++
		}
	}
	return n
}

// vmRSSKiB is a process's resident memory.
func vmRSSKiB(b *testing.B, pid int) int {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			require.NoError(b, err)
			return n
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}
