package consul

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ober-ingress/ober/control/lib/discovery"
	"github.com/ober-ingress/ober/internal/testsite/consultest"
)

// TestMain clears the CONSUL_HTTP_* variables the client reads, so that
// a developer's own Consul settings (a token, TLS) cannot change what the
// tests send.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "CONSUL_") {
			os.Unsetenv(name)
		}
	}
	os.Exit(m.Run())
}

func newSource(t *testing.T, opts Options) *Source {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fetch(t *testing.T, s *Source) discovery.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func hosts(res discovery.Result) []string {
	var out []string
	for _, b := range res.Backends {
		out = append(out, b.Host)
	}
	return out
}

// waitBlocked waits until the fake has n blocking queries parked, so that
// a change made next is one the query has to wake for.
func waitBlocked(t *testing.T, srv *consultest.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Blocked() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d blocking queries, want %d", srv.Blocked(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startWait runs Wait in the background; its result arrives on the
// channel.
func startWait(t *testing.T, s *Source) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		done <- s.Wait(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	return done
}

func TestFetchInstances(t *testing.T) {
	srv := consultest.New(t)
	srv.SetInstances("web", []consultest.Instance{
		{ID: "web-1", Address: "10.0.0.1", NodeAddress: "192.168.0.1", Port: 8080, Passing: true, Weight: 4},
		// No service address: the node's.
		{ID: "web-2", NodeAddress: "192.168.0.2", Port: 8081, Passing: true, Weight: 2},
		{ID: "web-3", Address: "fd00::3", NodeAddress: "192.168.0.3", Port: 8082, Passing: true}, // Consul's default weight, 1
		{ID: "web-4", Address: "backend.example", NodeAddress: "192.168.0.4", Port: 8083, Passing: true, Weight: 3},
	})
	res := fetch(t, newSource(t, Options{Address: srv.Addr(), Service: "web"}))
	want := []discovery.Backend{
		{Host: "10.0.0.1", Port: 8080, Weight: 256},
		{Host: "192.168.0.2", Port: 8081, Weight: 128},
		{Host: "fd00::3", Port: 8082, Weight: 64},
		{Host: "backend.example", Port: 8083, Weight: 192},
	}
	if !slices.Equal(res.Backends, want) || len(res.Problems) != 0 {
		t.Errorf("backends %+v, problems %q; want %+v and none", res.Backends, res.Problems, want)
	}

	// An unknown service has no instances; that is no error.
	res = fetch(t, newSource(t, Options{Address: srv.Addr(), Service: "nothing"}))
	if len(res.Backends) != 0 || len(res.Problems) != 0 {
		t.Errorf("unknown service: %+v", res)
	}
}

func TestWeights(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
		want    []int
	}{
		{"all default", []int{0, 0, 0}, []int{256, 256, 256}},
		{"relative", []int{1, 2, 4}, []int{64, 128, 256}},
		{"above 256 keep their ratio", []int{1000, 500, 1}, []int{256, 128, 1}},
		{"Consul's largest", []int{65535, 1}, []int{256, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := consultest.New(t)
			var in []consultest.Instance
			for i, w := range tc.weights {
				in = append(in, consultest.Instance{ID: "i" + string(rune('a'+i)), NodeAddress: "10.0.0." + string(rune('1'+i)), Port: 80, Passing: true, Weight: w})
			}
			srv.SetInstances("web", in)
			res := fetch(t, newSource(t, Options{Address: srv.Addr(), Service: "web"}))
			var got []int
			for _, b := range res.Backends {
				got = append(got, b.Weight)
				if b.Priority != 0 {
					t.Errorf("%s: priority %d, want unset", b.ID(), b.Priority)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("weights %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTagAndPassingFilters(t *testing.T) {
	srv := consultest.New(t)
	srv.SetInstances("web", []consultest.Instance{
		{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Tags: []string{"blue"}, Passing: true},
		{ID: "b", NodeAddress: "10.0.0.2", Port: 80, Tags: []string{"blue"}, Passing: false},
		{ID: "c", NodeAddress: "10.0.0.3", Port: 80, Tags: []string{"green"}, Passing: true},
	})
	for _, tc := range []struct {
		opts Options
		want []string
	}{
		{Options{}, []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}},
		{Options{Tag: "blue"}, []string{"10.0.0.1", "10.0.0.2"}},
		{Options{PassingOnly: true}, []string{"10.0.0.1", "10.0.0.3"}},
		{Options{Tag: "blue", PassingOnly: true}, []string{"10.0.0.1"}},
		{Options{Tag: "red"}, nil},
		{Options{Datacenter: consultest.Datacenter}, []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}},
	} {
		tc.opts.Address, tc.opts.Service = srv.Addr(), "web"
		if got := hosts(fetch(t, newSource(t, tc.opts))); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.opts, got, tc.want)
		}
	}

	// Another datacenter is asked for, not the agent's own.
	s := newSource(t, Options{Address: srv.Addr(), Service: "web", Datacenter: "dc2"})
	if _, err := s.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "No path to datacenter") {
		t.Errorf("datacenter dc2: %v, want the agent's error", err)
	}
}

func TestProblems(t *testing.T) {
	srv := consultest.New(t)
	srv.SetInstances("web", []consultest.Instance{
		{ID: "good", NodeAddress: "10.0.0.1", Port: 80, Passing: true},
		{ID: "zero-port", NodeAddress: "10.0.0.2", Port: 0, Passing: true},
		{ID: "big-port", NodeAddress: "10.0.0.3", Port: 70000, Passing: true},
		{ID: "nowhere", Port: 80, Passing: true},
		{ID: "twin", Address: "10.0.0.1", NodeAddress: "10.0.0.9", Port: 80, Passing: true, Weight: 1000},
	})
	res := fetch(t, newSource(t, Options{Address: srv.Addr(), Service: "web"}))
	want := []discovery.Backend{{Host: "10.0.0.1", Port: 80, Weight: 256}}
	if !slices.Equal(res.Backends, want) {
		t.Errorf("backends %+v, want %+v: a refused instance leaves the others standing, and its weight counts for nothing", res.Backends, want)
	}
	for _, frag := range [][]string{
		{`"zero-port"`, "10.0.0.2", "port 0"},
		{`"big-port"`, "port 70000"},
		{`"nowhere"`, "no address"},
		{`"twin"`, "10.0.0.1:80", `"good"`},
	} {
		if !slices.ContainsFunc(res.Problems, func(p string) bool {
			return !slices.ContainsFunc(frag, func(f string) bool { return !strings.Contains(p, f) })
		}) {
			t.Errorf("no problem naming %q in %q", frag, res.Problems)
		}
	}
	if len(res.Problems) != 4 {
		t.Errorf("problems %q, want 4", res.Problems)
	}
}

func TestWaitSeesChangeAtOnce(t *testing.T) {
	srv := consultest.New(t)
	srv.SetInstances("web", []consultest.Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	s := newSource(t, Options{Address: srv.Addr(), Service: "web"})
	fetch(t, s)

	// Without a change, Wait does not return.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := s.Wait(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait without a change: %v, want the context's deadline", err)
	}

	done := startWait(t, s)
	waitBlocked(t, srv, 1)
	srv.SetInstances("web", []consultest.Instance{
		{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true},
		{ID: "b", NodeAddress: "10.0.0.2", Port: 80, Passing: true},
	})
	// The blocking query waits up to BlockingWait, 5 minutes: only the
	// change ends it this early.
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return on the change")
	}
	if got := hosts(fetch(t, s)); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("after the change %v", got)
	}

	// A change between Fetch and Wait is not lost: Wait returns for it.
	srv.SetInstances("web", nil)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Wait(ctx); err != nil {
		t.Errorf("Wait after a change made before it: %v", err)
	}
}

func TestWaitIndexBackwards(t *testing.T) {
	srv := consultest.New(t)
	srv.SetInstances("web", []consultest.Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	srv.SetIndex("web", 10)
	s := newSource(t, Options{Address: srv.Addr(), Service: "web"})
	s.waitTime = 200 * time.Millisecond
	fetch(t, s)

	// A snapshot restore takes the index back to 3. The query on 10
	// answers 3 when its wait ends; Wait must return for it rather than
	// block on 10 again.
	srv.SetIndex("web", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Wait(ctx); err != nil {
		t.Fatalf("Wait after the index went backwards: %v", err)
	}
	if got := s.lastIndex(); got != 0 {
		t.Errorf("index after going backwards %d, want reset to 0", got)
	}
	fetch(t, s)

	// The next change, index 4, is below the old 10: a client still
	// waiting on 10 would miss it.
	s.waitTime = BlockingWait
	done := startWait(t, s)
	waitBlocked(t, srv, 1)
	if idx := srv.SetInstances("web", nil); idx != 4 {
		t.Fatalf("the fake's index %d, want 4", idx)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait missed the change at index 4")
	}
}

func TestWaitIndexZero(t *testing.T) {
	srv := consultest.New(t)
	srv.SetInstances("web", []consultest.Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	srv.SetIndex("web", 0)
	s := newSource(t, Options{Address: srv.Addr(), Service: "web"})
	fetch(t, s)
	// Waiting on index 0 would not block; Wait waits on 1 instead, so one
	// blocking query holds until the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if err := s.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v, want the context's deadline", err)
	}
	if n := srv.HealthQueries(); n != 2 {
		t.Errorf("%d health queries, want 2: the Fetch and one blocking query", n)
	}
}

func TestWaitDoesNotSpinOnAnAgentThatDoesNotBlock(t *testing.T) {
	var queries atomic.Int64
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries.Add(1)
		w.Header().Set("X-Consul-Index", "7")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("[]"))
	}))
	defer agent.Close()
	s := newSource(t, Options{Address: agent.Listener.Addr().String(), Service: "web"})
	fetch(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if err := s.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v, want the context's deadline", err)
	}
	// One query a second at most (minRequery), with margin.
	if n := queries.Load(); n > 10 {
		t.Errorf("%d queries in 2.5s: Wait asks in a loop", n)
	}
}

func TestAgentDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := newSource(t, Options{Address: addr, Service: "web"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Fetch(ctx); err == nil || !strings.Contains(err.Error(), "consul at "+addr) {
		t.Errorf("Fetch: %v, want an error naming %s", err, addr)
	}
	if err := s.Wait(ctx); err == nil || !strings.Contains(err.Error(), "consul at "+addr) {
		t.Errorf("Wait: %v, want an error naming %s", err, addr)
	}
}

func TestAgentError(t *testing.T) {
	srv := consultest.New(t)
	srv.SetInstances("web", []consultest.Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	s := newSource(t, Options{Address: srv.Addr(), Service: "web"})
	srv.FailNext(http.StatusInternalServerError)
	if _, err := s.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("Fetch: %v, want the agent's 500", err)
	}
	if got := hosts(fetch(t, s)); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("the Fetch after: %v", got)
	}
}

func writeToken(t *testing.T, token string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestToken(t *testing.T) {
	srv := consultest.New(t)
	srv.SetInstances("web", []consultest.Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	srv.RequireToken("6a1c7c0e-token")

	s := newSource(t, Options{Address: srv.Addr(), Service: "web"})
	if _, err := s.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Fetch without a token: %v, want 403", err)
	}
	s = newSource(t, Options{Address: srv.Addr(), Service: "web", TokenFile: writeToken(t, "6a1c7c0e-token\n", 0o600)})
	if got := hosts(fetch(t, s)); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("with the token: %v", got)
	}
	a, err := NewAgent(AgentOptions{Address: srv.Addr(), TokenFile: writeToken(t, "6a1c7c0e-token", 0o400)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Register(context.Background(), Registration{Name: "web-80-tcp", Port: 80}); err != nil {
		t.Errorf("Register with the token: %v", err)
	}

	for _, tc := range []struct {
		name, path, want string
	}{
		{"readable by others", writeToken(t, "x", 0o644), "mode 0644"},
		{"readable by group", writeToken(t, "x", 0o640), "mode 0640"},
		{"empty", writeToken(t, " \n", 0o600), "empty"},
		{"missing", filepath.Join(t.TempDir(), "none"), "no such file"},
		{"a directory", t.TempDir(), "not a regular file"},
		{"someone else's", func() string {
			p := writeToken(t, "x", 0o600)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatalf("chown (tests run as root): %v", err)
			}
			return p
		}(), "owned by uid 65534"},
	} {
		_, err := New(Options{Address: srv.Addr(), Service: "web", TokenFile: tc.path})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: %v, want an error naming the file and %q", tc.name, err, tc.want)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "empty"},
		{Options{Service: "a/b"}, "slash"},
		{Options{Service: "a b"}, "space"},
		{Options{Service: "web", Address: "ftp://127.0.0.1:8500"}, "ftp"},
	} {
		if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error about %q", tc.opts, err, tc.want)
		}
	}
}

func TestRegisterDeregister(t *testing.T) {
	srv := consultest.New(t)
	a, err := NewAgent(AgentOptions{Address: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := ServiceName("web", 443, "tcp")
	if name != "web-443-tcp" {
		t.Errorf("ServiceName %q", name)
	}
	err = a.Register(ctx, Registration{
		Name: name, Address: "192.0.2.10", Port: 443, Tags: []string{"ober"},
		Check: Check{URL: "http://127.0.0.1:9100/health", Interval: 5 * time.Second, Timeout: 2 * time.Second, DeregisterCriticalAfter: 10 * time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := srv.Registered()[name]
	if !ok {
		t.Fatalf("not registered: %v", srv.Registered())
	}
	c := got.Check
	if got.Name != name || got.Address != "192.0.2.10" || got.Port != 443 || !slices.Equal(got.Tags, []string{"ober"}) ||
		c == nil || c.HTTP != "http://127.0.0.1:9100/health" || c.Interval != "5s" || c.Timeout != "2s" || c.DeregisterCriticalServiceAfter != "10m0s" {
		t.Errorf("registered %+v, check %+v", got, c)
	}

	// Registering again replaces; the default interval applies.
	if err := a.Register(ctx, Registration{Name: name, Port: 443, Check: Check{URL: "http://127.0.0.1:9100/health"}}); err != nil {
		t.Fatal(err)
	}
	if regs := srv.Registered(); len(regs) != 1 || regs[name].Check.Interval != "10s" || regs[name].Address != "" {
		t.Errorf("registered again: %+v", regs)
	}

	if err := a.Deregister(ctx, name); err != nil {
		t.Fatal(err)
	}
	if regs := srv.Registered(); len(regs) != 0 {
		t.Errorf("left after Deregister: %+v", regs)
	}
	// Gone already (the agent reaped it, or a second stop): no error.
	if err := a.Deregister(ctx, name); err != nil {
		t.Errorf("Deregister of an unknown ID: %v", err)
	}

	for _, bad := range []struct {
		r    Registration
		want string
	}{
		{Registration{Port: 80}, "name"},
		{Registration{Name: "web-0-tcp"}, "port 0"},
		{Registration{Name: "x/y", Port: 80}, "slash"},
		{Registration{Name: "web", Port: 80, Check: Check{URL: "/health"}}, "check url"},
		{Registration{Name: "web", Port: 80, Check: Check{Interval: time.Second}}, "check url"},
	} {
		if err := a.Register(ctx, bad.r); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Register %+v: %v, want an error about %q", bad.r, err, bad.want)
		}
	}

	srv.FailNext(http.StatusInternalServerError)
	if err := a.Deregister(ctx, name); err == nil || !strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("Deregister on a failing agent: %v, want an error naming the agent", err)
	}
}
