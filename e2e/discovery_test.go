package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/discovery"
	"github.com/ober-ingress/ober/internal/testsite/bindtest"
	"github.com/ober-ingress/ober/internal/testsite/consultest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// A tcp service whose backends a file names: the first plan has the
// file's backend, a backend added to the file takes connections, and one
// removed takes no new ones.
func TestDiscoveryFile(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	var addrs []netip.AddrPort
	for i, name := range []string{"b0", "b1"} {
		a := netip.AddrPortFrom(s.BackendIP(i), 9400)
		addrs = append(addrs, a)
		tcpSvcListen(t, s.Backend(), a.String(), func(c net.Conn) { io.WriteString(c, name+"\n") })
	}
	list := filepath.Join(t.TempDir(), "backends.txt")
	write := func(lines ...netip.AddrPort) {
		text := "# the backends of disc\n"
		for _, a := range lines {
			text += a.String() + "\n"
		}
		tmp := list + ".tmp"
		require.NoError(t, os.WriteFile(tmp, []byte(text), 0o644))
		require.NoError(t, os.Rename(tmp, list))
	}
	write(addrs[0])
	c := s.Config(nodetest.Params{Instances: 1})
	c.Services = append(c.Services, config.Service{Name: "disc", Mode: config.ModeTCP, Port: 7900, Balance: config.BalanceRoundRobin,
		Discovery: &config.Discovery{Kind: config.DiscoveryFile, Path: list, Interval: config.Duration{Duration: 30 * time.Second}}})
	s.WriteConfig(c)
	s.Start()
	require.Equal(t, "b0", mgmtRead(t, s, 7900), "the first plan has the file's backend")

	write(addrs[0], addrs[1])
	require.Eventually(t, func() bool {
		seen := map[string]bool{}
		for range 6 {
			seen[mgmtRead(t, s, 7900)] = true
		}
		return seen["b0"] && seen["b1"]
	}, 10*time.Second, 200*time.Millisecond, "a backend added to the file takes connections (inotify, not the 30 s interval)")

	write(addrs[1])
	require.Eventually(t, func() bool {
		for range 6 {
			if mgmtRead(t, s, 7900) != "b1" {
				return false
			}
		}
		return true
	}, 10*time.Second, 200*time.Millisecond, "a backend removed from the file takes no new connections")
	st := s.Status()
	var states []string
	for _, sv := range st.Daemon.Services {
		if sv.Name == "disc" {
			for _, b := range sv.Backends {
				states = append(states, fmt.Sprintf("%s %s", b.Name, b.Admin))
			}
		}
	}
	require.Contains(t, states, "10.98.2.10_9400 drain", "the removed backend drains: %v", states)

	// A malformed line is refused by name, the rest kept; the pool's
	// discovery is in status and metrics.
	require.NoError(t, os.WriteFile(list, []byte(addrs[1].String()+"\n10.98.2.99:0\n"), 0o644))
	disc := func() api.DiscoveryStatus {
		for _, ds := range s.Status().Daemon.Discovery {
			if ds.Pool == "services[disc]" {
				return ds
			}
		}
		return api.DiscoveryStatus{}
	}
	require.Eventually(t, func() bool { return len(disc().Problems) == 1 }, 10*time.Second, 100*time.Millisecond)
	ds := disc()
	require.Equal(t, config.DiscoveryFile, ds.Kind)
	require.Equal(t, []string{addrs[1].String()}, ds.Backends)
	require.Contains(t, ds.Problems[0], "line 2")
	require.Contains(t, ds.Problems[0], "port 0")
	require.Contains(t, s.Metrics(), `ober_discovery_up{kind="file",pool="services[disc]"} 1`)

	// The file gone: keeplast serves on with the last backends and says
	// why.
	require.NoError(t, os.Remove(list))
	require.Eventually(t, func() bool { return disc().LastError != "" }, 10*time.Second, 100*time.Millisecond)
	require.Contains(t, disc().LastError, "no such file or directory")
	require.Equal(t, "b1", mgmtRead(t, s, 7900), "keeplast")
	require.Contains(t, s.Metrics(), `ober_discovery_up{kind="file",pool="services[disc]"} 0`)

	// A reload refused for a source that cannot be set up leaves the
	// running discovery as it was: the file still rules its service.
	gen := s.Status().Daemon.Config.Generation
	c.Services = append(c.Services, config.Service{Name: "bad", Mode: config.ModeTCP, Port: 7901,
		Discovery: &config.Discovery{Kind: config.DiscoveryHTTP, URL: "https://10.98.2.99/list", CAFile: "/nonexistent/ca.pem"}})
	s.WriteConfig(c)
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.LastReloadError != "" }, 10*time.Second, 100*time.Millisecond)
	require.Contains(t, s.Status().Daemon.Config.LastReloadError, "services[bad].discovery")
	require.Equal(t, gen, s.Status().Daemon.Config.Generation)
	write(addrs[0])
	require.Eventually(t, func() bool { return mgmtRead(t, s, 7900) == "b0" }, 10*time.Second, 200*time.Millisecond,
		"the running discovery goes on after the refused reload")

	// A file of a million lines is refused whole, with the bound named;
	// the last good backends serve on.
	var big strings.Builder
	for i := range 1_000_000 {
		fmt.Fprintf(&big, "10.%d.%d.%d:80\n", i>>16, (i>>8)&255, i&255)
	}
	require.NoError(t, os.WriteFile(list+".tmp", []byte(big.String()), 0o644))
	require.NoError(t, os.Rename(list+".tmp", list))
	require.Eventually(t, func() bool { return strings.Contains(disc().LastError, "larger than the bound") }, 10*time.Second, 100*time.Millisecond,
		"status says %q", disc().LastError)
	require.Contains(t, disc().LastError, "4 MiB")
	require.Equal(t, []string{addrs[0].String()}, disc().Backends)
	require.Equal(t, "b0", mgmtRead(t, s, 7900), "keeplast")
}

// discBackend serves a line naming itself, then answers each line it
// reads with "<name> again": a connection that stays open can be asked
// whether it still works.
func discBackend(t *testing.T, s *nodetest.Site, addr netip.AddrPort, name string) {
	tcpSvcListen(t, s.Backend(), addr.String(), func(c net.Conn) {
		io.WriteString(c, name+"\n")
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			io.WriteString(c, name+" again\n")
		}
	})
}

// A tcp service whose backends are a real BIND's SRV records, changed
// with nsupdate: an added record takes connections within the interval;
// a removed one takes no new connections while one already open on it
// goes on; priorities decide; with the DNS server gone, keeplast serves
// on with the last backends and status says why, setempty empties the
// pool.
func TestDiscoverySRV(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	const zone = "rgw.test."
	var records []bindtest.Record
	for i := range 3 {
		a := netip.AddrPortFrom(s.BackendIP(i), 9400)
		discBackend(t, s, a, fmt.Sprintf("rgw%d", i))
		records = append(records, bindtest.A(fmt.Sprintf("rgw%d", i), a.Addr()))
	}
	records = append(records, bindtest.SRV("_kv._tcp", 10, 10, 9400, "rgw0"), bindtest.SRV("_kv._tcp", 10, 10, 9400, "rgw1"))
	dnsAddr := s.BackendIP(5)
	srv := bindtest.Start(t, s.Backend(), dnsAddr, zone, records)

	c := s.Config(nodetest.Params{Instances: 1, Drain: 30 * time.Second})
	sec := config.Duration{Duration: time.Second}
	for _, svc := range []struct {
		name string
		port uint16
		fail string
	}{{"kv", 7910, config.FailKeepLast}, {"kvempty", 7911, config.FailSetEmpty}} {
		c.Services = append(c.Services, config.Service{Name: svc.name, Mode: config.ModeTCP, Port: svc.port, Balance: config.BalanceRoundRobin,
			Discovery: &config.Discovery{Kind: config.DiscoverySRV, Name: "_kv._tcp." + zone, Server: srv.Addr().String(),
				Interval: sec, Timeout: sec, FailPolicy: svc.fail}})
	}
	s.WriteConfig(c)
	s.Start()
	names := func(port uint16, n int) map[string]int {
		got := map[string]int{}
		for range n {
			got[mgmtRead(t, s, port)]++
		}
		return got
	}
	require.Eventually(t, func() bool { g := names(7910, 6); return g["rgw0"] > 0 && g["rgw1"] > 0 && len(g) == 2 },
		10*time.Second, 200*time.Millisecond, "both SRV targets serve")

	// Added: it takes connections within the 1 s interval (and a reload).
	srv.Update(t, []bindtest.Record{bindtest.SRV("_kv._tcp", 10, 10, 9400, "rgw2")}, nil)
	require.Eventually(t, func() bool { return names(7910, 6)["rgw2"] > 0 }, 10*time.Second, 200*time.Millisecond, "the added record serves")

	// A connection open on rgw0, which is then removed: no new connection
	// goes to rgw0, the open one goes on.
	var held net.Conn
	var heldReader *bufio.Reader
	for try := 0; held == nil; try++ {
		require.Less(t, try, 30, "no connection landed on rgw0")
		conn, err := mgmtDial(t, s, 7910)
		require.NoError(t, err)
		r := bufio.NewReader(conn)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		if line == "rgw0\n" {
			held, heldReader = conn, r
		} else {
			conn.Close()
		}
	}
	defer held.Close()
	srv.Update(t, nil, []bindtest.Record{bindtest.SRV("_kv._tcp", 10, 10, 9400, "rgw0")})
	require.Eventually(t, func() bool { g := names(7910, 9); return g["rgw0"] == 0 && g["rgw1"] > 0 && g["rgw2"] > 0 },
		10*time.Second, 200*time.Millisecond, "the removed record takes no new connection")
	_, err := io.WriteString(held, "still there?\n")
	require.NoError(t, err)
	require.NoError(t, held.SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := heldReader.ReadString('\n')
	require.NoError(t, err, "the connection open on the removed backend goes on")
	require.Equal(t, "rgw0 again\n", line)

	// Priorities: rgw2 alone at the best priority takes everything.
	srv.Update(t, []bindtest.Record{bindtest.SRV("_kv._tcp", 5, 10, 9400, "rgw2")}, []bindtest.Record{bindtest.SRV("_kv._tcp", 10, 10, 9400, "rgw2")})
	require.Eventually(t, func() bool { g := names(7910, 6); return g["rgw2"] == 6 }, 10*time.Second, 200*time.Millisecond, "traffic follows the priorities")

	// The DNS server gone.
	srv.Stop(t)
	status := func(pool string) api.DiscoveryStatus {
		for _, ds := range s.Status().Daemon.Discovery {
			if ds.Pool == pool {
				return ds
			}
		}
		return api.DiscoveryStatus{}
	}
	require.Eventually(t, func() bool {
		return status("services[kv]").LastError != "" && status("services[kvempty]").LastError != ""
	},
		10*time.Second, 100*time.Millisecond)
	require.Equal(t, "rgw2", mgmtRead(t, s, 7910), "keeplast serves on")
	require.Len(t, status("services[kv]").Backends, 2)
	require.Empty(t, status("services[kvempty]").Backends, "setempty empties the pool")
	require.Eventually(t, func() bool { return mgmtReadOrClosed(t, s, 7911) == "" }, 10*time.Second, 200*time.Millisecond,
		"the emptied service closes connections")
}

// A flapping source: 100 SRV changes in about 10 s (a record added and
// removed in turn) cost about one reload a second, and a client asking
// all along sees no failed request.
func TestDiscoveryStorm(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	const zone = "storm.test."
	var records []bindtest.Record
	for i := range 3 {
		a := netip.AddrPortFrom(s.BackendIP(i), 9400)
		discBackend(t, s, a, fmt.Sprintf("rgw%d", i))
		records = append(records, bindtest.A(fmt.Sprintf("rgw%d", i), a.Addr()))
	}
	records = append(records, bindtest.SRV("_kv._tcp", 10, 10, 9400, "rgw0"), bindtest.SRV("_kv._tcp", 10, 10, 9400, "rgw1"))
	srv := bindtest.Start(t, s.Backend(), s.BackendIP(5), zone, records)
	c := s.Config(nodetest.Params{Instances: 1, Drain: time.Second})
	sec := config.Duration{Duration: time.Second}
	c.Services = append(c.Services, config.Service{Name: "kv", Mode: config.ModeTCP, Port: 7920, Balance: config.BalanceRoundRobin,
		Discovery: &config.Discovery{Kind: config.DiscoverySRV, Name: "_kv._tcp." + zone, Server: srv.Addr().String(), Interval: sec, Timeout: sec}})
	s.WriteConfig(c)
	s.Start()
	require.Eventually(t, func() bool { return mgmtRead(t, s, 7920) != "" }, 10*time.Second, 100*time.Millisecond)
	before := s.Status().Daemon.Config.Generation

	// The client: a new connection after another, each must be answered.
	stop := make(chan struct{})
	var asked, failed int
	var firstErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			text, err := mgmtReadErr(t, s, 7920)
			asked++
			if err != nil && text == "" {
				failed++
				if firstErr == nil {
					firstErr = err
				}
			}
		}
	}()
	extra := bindtest.SRV("_kv._tcp", 10, 10, 9400, "rgw2")
	start := time.Now()
	for i := range 100 {
		if i%2 == 0 {
			srv.Update(t, []bindtest.Record{extra}, nil)
		} else {
			srv.Update(t, nil, []bindtest.Record{extra})
		}
		if wait := time.Duration(i+1)*100*time.Millisecond - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
	}
	took := time.Since(start)
	time.Sleep(2 * time.Second) // the last change applied, the client still asking
	close(stop)
	<-done
	st := s.Status()
	reloads := st.Daemon.Config.Generation - before
	var ds api.DiscoveryStatus
	for _, d := range st.Daemon.Discovery {
		if d.Pool == "services[kv]" {
			ds = d
		}
	}
	t.Logf("100 changes in %v: %d fetches saw %d changes, %d reloads; %d requests, %d failed", took.Round(time.Millisecond), ds.Fetches, ds.Changes, reloads, asked, failed)
	require.Zero(t, failed, "of %d requests during the storm, %d failed: %v", asked, failed, firstErr)
	require.Greater(t, asked, 50)
	limit := uint64(took/time.Second) + 3
	require.LessOrEqual(t, reloads, limit, "at most about one reload a second over %v", took)
	require.Positive(t, reloads)
}

// The http and exec kinds on a real node: a change is picked up within
// the interval, a malformed entry is refused by its index or line with
// the rest kept, and a source that answers too late is a failed fetch
// that keeplast rides out.
func TestDiscoveryHTTPAndExec(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	var addrs []netip.AddrPort
	for i := range 2 {
		a := netip.AddrPortFrom(s.BackendIP(i), 9400)
		addrs = append(addrs, a)
		discBackend(t, s, a, fmt.Sprintf("b%d", i))
	}
	// The HTTP source, in the backends' namespace.
	var mu sync.Mutex
	answer, delay, code, ctype := "", time.Duration(0), http.StatusOK, "application/json"
	setHTTP := func(body string, d time.Duration) {
		mu.Lock()
		answer, delay, code, ctype = body, d, http.StatusOK, "application/json"
		mu.Unlock()
	}
	src := netip.AddrPortFrom(s.BackendIP(6), 8080)
	nodetest.Serve(t, s.Backend(), src, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		body, d, c, ct := answer, delay, code, ctype
		mu.Unlock()
		time.Sleep(d)
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(c)
		io.WriteString(w, body)
	}))
	entry := func(a netip.AddrPort) string {
		return fmt.Sprintf(`{"host": %q, "port": %d}`, a.Addr().String(), a.Port())
	}
	setHTTP("["+entry(addrs[0])+"]", 0)

	// The exec source: a script the HAProxy user can run, printing a file.
	dir, err := os.MkdirTemp("", "ober-disc-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	data := filepath.Join(dir, "lines")
	script := filepath.Join(dir, "list.sh")
	require.NoError(t, os.WriteFile(data, []byte(addrs[0].String()+"\n"), 0o644))
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n[ -e "+dir+"/slow ] && sleep 5\nexec cat "+data+"\n"), 0o755))

	c := s.Config(nodetest.Params{Instances: 1})
	sec := config.Duration{Duration: time.Second}
	c.Services = append(c.Services,
		config.Service{Name: "web", Mode: config.ModeTCP, Port: 7930, Balance: config.BalanceRoundRobin,
			Discovery: &config.Discovery{Kind: config.DiscoveryHTTP, URL: "http://" + src.String() + "/backends", Interval: sec, Timeout: sec}},
		config.Service{Name: "cmd", Mode: config.ModeTCP, Port: 7931, Balance: config.BalanceRoundRobin,
			Discovery: &config.Discovery{Kind: config.DiscoveryExec, Command: []string{script}, Interval: sec, Timeout: sec}})
	s.WriteConfig(c)
	s.Start()
	require.Equal(t, "b0", mgmtRead(t, s, 7930))
	require.Equal(t, "b0", mgmtRead(t, s, 7931))
	status := func(pool string) api.DiscoveryStatus {
		for _, ds := range s.Status().Daemon.Discovery {
			if ds.Pool == pool {
				return ds
			}
		}
		return api.DiscoveryStatus{}
	}

	// A change, with a malformed entry beside it.
	setHTTP(`[`+entry(addrs[1])+`, {"host": "10.98.2.99", "port": 0}]`, 0)
	require.NoError(t, os.WriteFile(data, []byte(addrs[1].String()+"\n10.98.2.99:80 70000\n"), 0o644))
	for _, svc := range []struct {
		pool    string
		port    uint16
		problem string
	}{{"services[web]", 7930, "entry 1"}, {"services[cmd]", 7931, "line 2"}} {
		require.Eventually(t, func() bool { return mgmtRead(t, s, svc.port) == "b1" && len(status(svc.pool).Problems) == 1 },
			10*time.Second, 200*time.Millisecond, "%s: the change is picked up", svc.pool)
		require.Contains(t, status(svc.pool).Problems[0], svc.problem)
		require.Equal(t, []string{addrs[1].String()}, status(svc.pool).Backends, "the rest kept")
	}

	// Too slow: a failed fetch; keeplast serves on.
	setHTTP("["+entry(addrs[0])+"]", 3*time.Second)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "slow"), nil, 0o644))
	require.Eventually(t, func() bool { return status("services[web]").LastError != "" && status("services[cmd]").LastError != "" },
		15*time.Second, 200*time.Millisecond)
	require.Contains(t, status("services[cmd]").LastError, "no answer within 1s")
	require.Contains(t, status("services[web]").LastError, "no answer within 1s")
	require.Equal(t, "b1", mgmtRead(t, s, 7930), "keeplast")
	require.Equal(t, "b1", mgmtRead(t, s, 7931), "keeplast")

	// Answers that are no list: each a failed fetch saying what it got,
	// the last good backends serving on.
	require.NoError(t, os.Remove(filepath.Join(dir, "slow")))
	failsWith := func(pool string, port uint16, want string) {
		t.Helper()
		require.Eventually(t, func() bool { return strings.Contains(status(pool).LastError, want) }, 10*time.Second, 100*time.Millisecond,
			"%s: want a failed fetch with %q, status says %q", pool, want, status(pool).LastError)
		require.Equal(t, "b1", mgmtRead(t, s, port), "%s: keeplast after %q", pool, want)
	}
	mu.Lock()
	answer, delay, code, ctype = "<html><body>backend list down</body></html>", 0, http.StatusInternalServerError, "text/html"
	mu.Unlock()
	failsWith("services[web]", 7930, "status 500 Internal Server Error, want 200")
	mu.Lock()
	code = http.StatusOK
	mu.Unlock()
	failsWith("services[web]", 7930, "it looks like HTML")
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*131 + 7)
	}
	require.NoError(t, os.WriteFile(data, garbage, 0o644))
	failsWith("services[cmd]", 7931, "binary data, not lines of text")
}

// Consul, against the in-process agent in the node's namespace (no
// Consul package exists on these machines): a service's backends come
// from the agent's health endpoint with a blocking query, so a change
// serves at once although the interval is a minute; with consul.register
// each service the node serves is registered as <service>-<port>-<proto>
// with a check on ober's /health, deregistered while the node does not
// hold its VIP, and at stop.
func TestDiscoveryConsul(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	var addrs []netip.AddrPort
	for i := range 2 {
		a := netip.AddrPortFrom(s.BackendIP(i), 9400)
		addrs = append(addrs, a)
		discBackend(t, s, a, fmt.Sprintf("c%d", i))
	}
	var ln net.Listener
	require.NoError(t, s.Node.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:8500")
		return err
	}))
	agent := consultest.NewOn(t, ln)
	inst := func(i int) consultest.Instance {
		return consultest.Instance{ID: fmt.Sprintf("c%d", i), Address: addrs[i].Addr().String(), Port: int(addrs[i].Port()), Passing: true}
	}
	agent.SetInstances("kv", []consultest.Instance{inst(0)})

	c := s.Config(nodetest.Params{Instances: 1})
	c.Consul = config.Consul{Register: true, Tags: []string{"ober"}}
	c.Services = append(c.Services, config.Service{Name: "kv", Mode: config.ModeTCP, Port: 7940, Balance: config.BalanceRoundRobin,
		Discovery: &config.Discovery{Kind: config.DiscoveryConsul, Name: "kv", PassingOnly: true, Interval: config.Duration{Duration: time.Minute}}})
	s.WriteConfig(c)
	s.Start()
	require.Equal(t, "c0", mgmtRead(t, s, 7940))

	agent.SetInstances("kv", []consultest.Instance{inst(1)})
	require.Eventually(t, func() bool { return mgmtRead(t, s, 7940) == "c1" }, 10*time.Second, 100*time.Millisecond,
		"a change comes with the blocking query, not the minute's interval")

	require.Eventually(t, func() bool {
		_, ok := agent.Registered()["kv-7940-tcp"]
		return ok
	}, 10*time.Second, 100*time.Millisecond, "the service is registered")
	reg := agent.Registered()
	require.Contains(t, reg, "https-443-tcp", "every service the node serves")
	require.Equal(t, "10.98.0.100", reg["kv-7940-tcp"].Address)
	require.Equal(t, []string{"ober"}, reg["kv-7940-tcp"].Tags)

	// The VIP leaves the node (an operator, or another holder taking
	// it): the node serves nothing, so Consul must not send clients to
	// it; back on the node, the services are registered again.
	vip := &netlink.Addr{IPNet: &net.IPNet{IP: nodetest.VIP.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	lo := func() netlink.Link {
		var l netlink.Link
		require.NoError(t, s.Node.Do(func() (err error) { l, err = netlink.LinkByName("lo"); return err }))
		return l
	}()
	require.NoError(t, s.Node.Do(func() error { return netlink.AddrDel(lo, vip) }))
	require.Eventually(t, func() bool { return len(agent.Registered()) == 0 }, 5*time.Second, 100*time.Millisecond,
		"deregistered once the node no longer holds the VIP: %v", agent.Registered())
	require.NoError(t, s.Node.Do(func() error { return netlink.AddrAdd(lo, vip) }))
	require.Eventually(t, func() bool {
		_, ok := agent.Registered()["kv-7940-tcp"]
		return ok
	}, 5*time.Second, 100*time.Millisecond, "registered again with the VIP back")

	s.Signal(syscall.SIGTERM)
	_, err := s.Wait(time.Minute)
	require.NoError(t, err)
	require.Empty(t, agent.Registered(), "deregistered at stop")
}

// A found backend drained through the management API by its name takes
// no new connection, and the drain is kept in ober.yaml's overrides, so
// it holds when the backend leaves the source and comes back.
func TestDiscoveryDrainThroughAPI(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	var addrs []netip.AddrPort
	for i := range 2 {
		a := netip.AddrPortFrom(s.BackendIP(i), 9400)
		addrs = append(addrs, a)
		discBackend(t, s, a, fmt.Sprintf("b%d", i))
	}
	list := filepath.Join(t.TempDir(), "backends.txt")
	write := func(as ...netip.AddrPort) {
		var text string
		for _, a := range as {
			text += a.String() + "\n"
		}
		require.NoError(t, os.WriteFile(list+".tmp", []byte(text), 0o644))
		require.NoError(t, os.Rename(list+".tmp", list))
	}
	write(addrs...)
	c := s.Config(nodetest.Params{Instances: 1})
	c.Services = append(c.Services, config.Service{Name: "disc", Mode: config.ModeTCP, Port: 7950, Balance: config.BalanceRoundRobin,
		Discovery: &config.Discovery{Kind: config.DiscoveryFile, Path: list}})
	s.WriteConfig(c)
	s.Start()
	names := func() map[string]int {
		got := map[string]int{}
		for range 6 {
			got[mgmtRead(t, s, 7950)]++
		}
		return got
	}
	require.Eventually(t, func() bool { g := names(); return g["b0"] > 0 && g["b1"] > 0 }, 10*time.Second, 200*time.Millisecond)

	api := newMgmtClient(t, filepath.Join(c.Node.RuntimeDir, config.DefaultAPISocketName))
	b0 := config.DiscoveredName(discovery.Backend{Host: addrs[0].Addr().String(), Port: addrs[0].Port()})
	code, out := api.do("POST", "/api/v1/services/disc/backends/"+b0+"/drain", "")
	require.Equal(t, http.StatusOK, code, "%v", out)
	require.Equal(t, map[string]int{"b1": 6}, names(), "a drained found backend takes no new connection")
	text, err := os.ReadFile(s.ConfigPath)
	require.NoError(t, err)
	require.Contains(t, string(text), "address: "+addrs[0].String())
	require.Contains(t, string(text), "state: drain")

	// Gone from the source and back: still drained.
	write(addrs[1])
	time.Sleep(2 * time.Second)
	write(addrs...)
	require.Never(t, func() bool { return names()["b0"] > 0 }, 3*time.Second, 300*time.Millisecond, "the drain holds when it comes back")
	code, out = api.do("POST", "/api/v1/services/disc/backends/"+b0+"/enable", "")
	require.Equal(t, http.StatusOK, code, "%v", out)
	require.Eventually(t, func() bool { return names()["b0"] > 0 }, 10*time.Second, 200*time.Millisecond)
}
