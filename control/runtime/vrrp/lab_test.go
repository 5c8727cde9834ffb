package vrrp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// testLog forwards log lines to t.Log until the test is over; goroutines
// may still log after Stop (the tail of keepalived's output).
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

type node struct {
	name string
	k    *Keepalived
	dir  string

	mu     sync.Mutex
	events []string
	state  State
}

func (n *node) onState(in Instance, from, to State) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.events = append(n.events, fmt.Sprintf("%s %s->%s", in.Name, stateText(from), stateText(to)))
	n.state = to
}

func (n *node) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

func (n *node) Events() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.events...)
}

func (n *node) held() bool { return n.k.Status().Instances[0].Held }

// waitFor polls cond every millisecond and returns how long it took.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// TestTwoNodes runs real keepalived on two namespaces joined by a veth:
// owner election, fault by track file, preempt back, kill -9, release.
func TestTwoNodes(t *testing.T) {
	requireKeepalived(t)
	nsA := netnstest.New(t, "vrrp-a")
	nsB := netnstest.New(t, "vrrp-b")
	nsA.IP(t, "link", "add", "vr0", "type", "veth", "peer", "name", "vr0", "netns", nsB.Name)
	nsA.IP(t, "addr", "add", "10.199.0.1/24", "dev", "vr0")
	nsB.IP(t, "addr", "add", "10.199.0.2/24", "dev", "vr0")
	nsA.IP(t, "link", "set", "vr0", "up")
	nsB.IP(t, "link", "set", "vr0", "up")

	lw := &testLog{t: t}
	t.Cleanup(func() { lw.mu.Lock(); lw.done = true; lw.mu.Unlock() })
	logger := slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelInfo}))

	nodes := addrs("10.199.0.1", "10.199.0.2")
	vip := netip.MustParseAddr("10.199.0.100")
	const preempt = 1500 * time.Millisecond
	start := func(ns *netnstest.NS, name string, self netip.Addr, other netip.Addr) *node {
		ins, err := Plan(nodes, self, []netip.Addr{vip}, 51)
		if err != nil {
			t.Fatal(err)
		}
		n := &node{name: name, dir: filepath.Join(t.TempDir(), name)}
		err = ns.Do(func() error {
			var err error
			n.k, err = Start(context.Background(), Options{
				Dir:     n.dir,
				Healthy: true,
				Logger:  logger.With("node", name),
				OnState: n.onState,
				Config: Config{
					Interface:    "vr0",
					Self:         self,
					Peers:        []netip.Addr{other},
					Instances:    ins,
					PreemptDelay: preempt,
					GARPRepeat:   2,
				},
			})
			return err
		})
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := n.k.Stop(ctx); err != nil {
				t.Errorf("stop %s: %v", name, err)
			}
		})
		return n
	}
	b := start(nsB, "B", nodes[1], nodes[0])
	a := start(nsA, "A", nodes[0], nodes[1])

	waitFor(t, "A MASTER holding the VIP, B BACKUP", 10*time.Second, func() bool {
		return a.State() == Master && b.State() == Backup && a.held() && !b.held()
	})
	if s := a.k.Status(); s.Instances[0].Owner != nodes[0] || s.Instances[0].Priority != 200 || !s.Healthy || s.PID == 0 {
		t.Errorf("A status: %+v", s)
	}

	// From here on no 10ms sample may see the VIP on both nodes.
	var (
		smu     sync.Mutex
		both    []string
		samples int
	)
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampler:
				return
			case <-tick.C:
			}
			ha, hb := a.held(), b.held()
			smu.Lock()
			samples++
			if ha && hb {
				both = append(both, time.Now().Format("15:04:05.000"))
			}
			smu.Unlock()
		}
	}()

	// Fault: the track file goes to 1, A sends priority 0, B takes over.
	if err := a.k.SetHealthy(false); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, "B takes over after A's fault", time.Second, func() bool { return b.held() && !a.held() })
	t.Logf("failover on track-file fault: VIP on B after %s", d)
	waitFor(t, "A reports FAULT", time.Second, func() bool { return a.State() == Fault })

	// Recovery: A takes its VIP back after the preempt delay.
	if err := a.k.SetHealthy(true); err != nil {
		t.Fatal(err)
	}
	d = waitFor(t, "A takes the VIP back", preempt+5*time.Second, func() bool { return a.held() && !b.held() && a.State() == Master })
	t.Logf("preempt back to the owner: VIP on A after %s (preempt_delay %s)", d, preempt)
	if d < preempt {
		t.Errorf("A took the VIP back after %s, before preempt_delay %s", d, preempt)
	}

	// kill -9 of A's keepalived (parent and VRRP child): nobody sends a
	// release; ober must drop the address itself and restart keepalived.
	parent := a.k.Status().PID
	child := readPid(filepath.Join(a.dir, "keepalived_vrrp.pid"))
	if parent == 0 || child == 0 {
		t.Fatalf("A keepalived pids: parent %d child %d", parent, child)
	}
	syscall.Kill(child, syscall.SIGKILL)
	syscall.Kill(parent, syscall.SIGKILL)
	d = waitFor(t, "A drops the VIP after kill -9", time.Second, func() bool { return !a.held() })
	t.Logf("kill -9: VIP off A after %s", d)
	d2 := waitFor(t, "B takes over after A's keepalived died", 2*time.Second, func() bool { return b.held() })
	t.Logf("kill -9: VIP on B after %s", d+d2)
	waitFor(t, "A restarts keepalived and takes the VIP back", preempt+10*time.Second, func() bool {
		return a.k.Status().Restarts >= 1 && a.held() && !b.held() && a.State() == Master
	})

	// Graceful stop's first step.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := a.k.Release(ctx); err != nil {
		t.Fatal(err)
	}
	d = waitFor(t, "B holds the VIP after A's release", time.Second, func() bool { return b.held() && !a.held() })
	t.Logf("release: A not MASTER after %s, VIP on B after %s", time.Since(t0)-d, time.Since(t0))

	close(stopSampler)
	<-samplerDone
	smu.Lock()
	defer smu.Unlock()
	t.Logf("%d samples; A events %v; B events %v", samples, a.Events(), b.Events())
	if len(both) > 0 {
		t.Errorf("VIP on both nodes at %d of %d samples: %v", len(both), samples, both)
	}
	st := a.k.Status()
	if st.Restarts != 1 || st.Instances[0].Transitions < 5 || st.Healthy {
		t.Errorf("A status at the end: %+v", st)
	}
}
