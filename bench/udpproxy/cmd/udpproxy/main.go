// Command udpproxy runs bench/udpproxy as a process of its own, the way
// GoBetween runs: the kernel UDP path's benchmarks (e2e/udp_bench_test.go)
// start it inside the node's namespace, so that its CPU time is its own
// and every socket it opens is in that namespace.
//
//	udpproxy -listen 10.0.0.1:5353 -backend 10.0.1.1:53 -backend 10.0.1.2:53 -max-replies 1
//
// It prints "listening on ADDR" once it serves, and stops on SIGTERM or
// SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/bench/udpproxy"
)

// backendList is a repeatable -backend flag.
type backendList []netip.AddrPort

func (l *backendList) String() string {
	s := make([]string, len(*l))
	for i, b := range *l {
		s[i] = b.String()
	}
	return strings.Join(s, ",")
}

func (l *backendList) Set(v string) error {
	b, err := netip.ParseAddrPort(v)
	if err != nil {
		return fmt.Errorf("backend %q: %w", v, err)
	}
	*l = append(*l, b)
	return nil
}

func main() {
	var cfg udpproxy.Config
	var backends backendList
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "address and port to listen on")
	flag.Var(&backends, "backend", "a backend's address and port (repeat for more)")
	flag.DurationVar(&cfg.Idle, "idle", 0, "close a session idle this long (0: the package default)")
	flag.IntVar(&cfg.MaxSessions, "max-sessions", 0, "bound on open sessions (0: the package default)")
	flag.IntVar(&cfg.MaxReplies, "max-replies", 0, "close a session after this many replies (0: unlimited, 1 suits DNS)")
	flag.Parse()
	cfg.Backends = backends
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "udpproxy:", err)
		os.Exit(1)
	}
}

func run(cfg udpproxy.Config) error {
	p, err := udpproxy.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Printf("listening on %s\n", p.Addr())
	start := time.Now()
	err = p.Serve(ctx)
	st := p.Stats()
	fmt.Fprintf(os.Stderr, "udpproxy: %v: %d datagrams in, %d out, %d sessions, %d dropped, %d lost\n",
		time.Since(start).Round(time.Millisecond), st.DatagramsIn, st.DatagramsOut, st.SessionsOpened, st.Dropped, st.Lost)
	return err
}
