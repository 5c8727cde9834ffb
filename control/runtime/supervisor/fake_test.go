package supervisor_test

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets this test binary play HAProxy: the tests give the
// supervisor the binary itself as Options.Binary, and the supervisor runs
// it as `haproxy -f CFG -db`, a command line no `go test` run produces.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-f" {
		os.Exit(fakeHAProxy(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeConfig is what the tests' Render writes and the fake HAProxy reads,
// one directive per line:
//
//	stats-socket PATH    the runtime socket to answer on
//	label TEXT           names the plan in greetings and events
//	slot N               the instance index, for greetings
//	listener ID FD       an inherited listening socket
//	control DIR          where the fake records its events, in DIR/<pid>
//	servers FILE         CSV rows "show stat" answers after its header
//	mode exit|silent     fail at start, or never answer on the runtime socket
//	linger DURATION      how long a soft stop (SIGUSR1) takes
//	hold FILE            a soft stop also waits until FILE exists
type fakeConfig struct {
	stats     string
	label     string
	slot      int
	listeners map[uint32]int
	control   string
	servers   string
	mode      string
	linger    time.Duration
	hold      string
}

// statHeader is the "show stat" header the fake answers with: the columns
// the supervisor reads, in an order unlike HAProxy's so that the parser's
// lookup by name is exercised.
const statHeader = "# pxname,svname,scur,status,check_status,type,weight"

func readFakeConfig(path string) (fakeConfig, error) {
	cfg := fakeConfig{listeners: map[uint32]int{}}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	for n, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		bad := func(err error) (fakeConfig, error) {
			return cfg, fmt.Errorf("%s:%d: %q: %w", path, n+1, line, err)
		}
		switch {
		case f[0] == "stats-socket" && len(f) == 2:
			cfg.stats = f[1]
		case f[0] == "label" && len(f) == 2:
			cfg.label = f[1]
		case f[0] == "slot" && len(f) == 2:
			if cfg.slot, err = strconv.Atoi(f[1]); err != nil {
				return bad(err)
			}
		case f[0] == "listener" && len(f) == 3:
			id, err1 := strconv.ParseUint(f[1], 10, 32)
			fd, err2 := strconv.Atoi(f[2])
			if err := errors.Join(err1, err2); err != nil {
				return bad(err)
			}
			cfg.listeners[uint32(id)] = fd
		case f[0] == "control" && len(f) == 2:
			cfg.control = f[1]
		case f[0] == "servers" && len(f) == 2:
			cfg.servers = f[1]
		case f[0] == "mode" && len(f) == 2:
			cfg.mode = f[1]
		case f[0] == "hold" && len(f) == 2:
			cfg.hold = f[1]
		case f[0] == "linger" && len(f) == 2:
			if cfg.linger, err = time.ParseDuration(f[1]); err != nil {
				return bad(err)
			}
		default:
			return bad(errors.New("unknown directive"))
		}
	}
	if cfg.stats == "" || cfg.control == "" {
		return cfg, fmt.Errorf("%s: stats-socket and control are required", path)
	}
	return cfg, nil
}

// fakeHAProxy is the fake's main. It does what the supervisor relies on:
// serves the inherited listeners (each connection gets one greeting line
// naming the process, plan, slot and listener), answers "show info" and
// "show stat" on the runtime socket, and on SIGUSR1 stops listening and
// exits once its linger is over.
func fakeHAProxy(args []string) int {
	alert := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "[ALERT] fake haproxy: "+format+"\n", a...)
		return 1
	}
	fs := flag.NewFlagSet("haproxy", flag.ContinueOnError)
	cfgPath := fs.String("f", "", "configuration file")
	db := fs.Bool("db", false, "stay in the foreground")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !*db || fs.NArg() > 0 {
		return alert("want -f CFG -db, got %q", args)
	}
	cfg, err := readFakeConfig(*cfgPath)
	if err != nil {
		return alert("%v", err)
	}
	pid := os.Getpid()
	record := func(event string) {
		f, err := os.OpenFile(fmt.Sprintf("%s/%d", cfg.control, pid), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return
		}
		defer f.Close()
		fmt.Fprintln(f, event)
	}
	record("start " + cfg.label)
	// Signals first: a soft stop that arrives while starting is not lost.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM)
	if cfg.mode == "exit" {
		return alert("told to fail")
	}

	var listeners []net.Listener
	for id, fd := range cfg.listeners {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("listener-%d", id))
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return alert("listener %d on fd %d: %v", id, fd, err)
		}
		if _, ok := l.(*net.TCPListener); !ok {
			return alert("listener %d on fd %d is a %T, not TCP", id, fd, l)
		}
		listeners = append(listeners, l)
		greeting := fmt.Sprintf("pid=%d label=%s slot=%d listener=%d\n", pid, cfg.label, cfg.slot, id)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(greeting))
				c.Close()
			}
		}()
	}
	if cfg.mode != "silent" {
		rt, err := net.Listen("unix", cfg.stats)
		if err != nil {
			return alert("stats socket: %v", err)
		}
		go serveRuntime(rt, cfg, pid)
	}

	ppid := os.Getppid()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGTERM {
				record("TERM")
				return 0
			}
			record("USR1")
			for _, l := range listeners {
				l.Close()
			}
			time.Sleep(cfg.linger)
			for cfg.hold != "" {
				if _, err := os.Stat(cfg.hold); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			return 0
		case <-tick.C:
			// Orphaned: the test binary died; do not outlive it.
			if os.Getppid() != ppid {
				return 3
			}
		}
	}
}

// serveRuntime answers one command per connection, as HAProxy does on a
// non-interactive runtime socket.
func serveRuntime(l net.Listener, cfg fakeConfig, pid int) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			var out string
			switch strings.TrimSpace(line) {
			case "show info":
				out = fmt.Sprintf("Name: HAProxy\nVersion: 0.0-fake\nPid: %d\n\n", pid)
			case "show stat":
				rows := "fe,FRONTEND,0,OPEN,,0,\n"
				if cfg.servers != "" {
					if b, err := os.ReadFile(cfg.servers); err == nil {
						rows = string(b)
					}
				}
				out = statHeader + "\n" + rows + "\n"
			default:
				out = "Unknown command, but try 'help'.\n"
			}
			_, _ = c.Write([]byte(out))
		}()
	}
}
