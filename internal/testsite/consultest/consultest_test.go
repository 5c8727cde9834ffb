package consultest

import (
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
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

// The official client, the one ober uses, checks that the server speaks
// the API as the client expects it.
func client(t *testing.T, s *Server, token string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: s.Addr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ids(entries []*api.ServiceEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Service.ID)
	}
	return out
}

// waitBlocked waits until n health queries are blocked on the server.
func waitBlocked(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Blocked() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d queries blocked, want %d", s.Blocked(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHealthServiceEntries(t *testing.T) {
	s := New(t)
	idx := s.SetInstances("web", []Instance{
		{ID: "web-1", Address: "10.0.0.1", NodeAddress: "192.168.0.1", Port: 80, Tags: []string{"Blue"}, Passing: true, Weight: 5},
		{ID: "web-2", NodeAddress: "192.168.0.2", Port: 81, Tags: []string{"green"}, Passing: false},
	})
	entries, meta, err := client(t, s, "").Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if meta.LastIndex != idx {
		t.Errorf("X-Consul-Index %d, want %d", meta.LastIndex, idx)
	}
	if !meta.KnownLeader {
		t.Error("no known leader")
	}
	if got := ids(entries); !slices.Equal(got, []string{"web-1", "web-2"}) {
		t.Fatalf("instances %v", got)
	}
	e := entries[0]
	if e.Service.Address != "10.0.0.1" || e.Service.Port != 80 || e.Node.Address != "192.168.0.1" ||
		e.Service.Weights.Passing != 5 || e.Service.Service != "web" || !slices.Equal(e.Service.Tags, []string{"Blue"}) {
		t.Errorf("web-1: service %+v, node %+v", e.Service, e.Node)
	}
	if got := e.Checks.AggregatedStatus(); got != api.HealthPassing {
		t.Errorf("web-1 status %q, want passing", got)
	}
	e = entries[1]
	if e.Service.Address != "" || e.Node.Address != "192.168.0.2" || e.Service.Weights.Passing != 1 {
		t.Errorf("web-2: service %+v, node %+v (want no service address and the default weight 1)", e.Service, e.Node)
	}
	if got := e.Checks.AggregatedStatus(); got != api.HealthCritical {
		t.Errorf("web-2 status %q, want critical", got)
	}

	entries, _, err = client(t, s, "").Health().Service("unknown", "", false, nil)
	if err != nil || len(entries) != 0 {
		t.Errorf("unknown service: %v, %v; want no instances and no error", ids(entries), err)
	}
}

func TestHealthServiceFilters(t *testing.T) {
	s := New(t)
	s.SetInstances("web", []Instance{
		{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Tags: []string{"Blue", "v2"}, Passing: true},
		{ID: "b", NodeAddress: "10.0.0.2", Port: 80, Tags: []string{"blue"}, Passing: false},
		{ID: "c", NodeAddress: "10.0.0.3", Port: 80, Tags: []string{"green"}, Passing: true},
	})
	h := client(t, s, "").Health()
	for _, tc := range []struct {
		tag     string
		passing bool
		want    []string
	}{
		{"", false, []string{"a", "b", "c"}},
		{"blue", false, []string{"a", "b"}}, // tags match regardless of case
		{"", true, []string{"a", "c"}},
		{"BLUE", true, []string{"a"}},
		{"red", false, nil},
	} {
		entries, _, err := h.Service("web", tc.tag, tc.passing, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(entries); !slices.Equal(got, tc.want) {
			t.Errorf("tag %q passing %v: %v, want %v", tc.tag, tc.passing, got, tc.want)
		}
	}
	entries, _, err := h.ServiceMultipleTags("web", []string{"blue", "v2"}, false, nil)
	if err != nil || !slices.Equal(ids(entries), []string{"a"}) {
		t.Errorf("tags blue and v2: %v, %v; want [a]", ids(entries), err)
	}

	if _, _, err := h.Service("web", "", false, &api.QueryOptions{Datacenter: Datacenter}); err != nil {
		t.Errorf("datacenter %s: %v", Datacenter, err)
	}
	_, _, err = h.Service("web", "", false, &api.QueryOptions{Datacenter: "dc2"})
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusInternalServerError {
		t.Errorf("datacenter dc2: %v, want a 500 error", err)
	}
}

func TestBlockingQueryWakesOnChange(t *testing.T) {
	s := New(t)
	first := s.SetInstances("web", []Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	h := client(t, s, "").Health()

	type answer struct {
		ids   []string
		index uint64
		err   error
	}
	got := make(chan answer, 1)
	go func() {
		// A wait far longer than the test's patience: only the change
		// can end the query in time.
		entries, meta, err := h.Service("web", "", false, &api.QueryOptions{WaitIndex: first, WaitTime: 5 * time.Minute})
		a := answer{ids: ids(entries), err: err}
		if meta != nil {
			a.index = meta.LastIndex
		}
		got <- a
	}()
	waitBlocked(t, s, 1)
	// A change to another service leaves the query blocked.
	s.SetInstances("db", []Instance{{ID: "d", NodeAddress: "10.0.0.9", Port: 5432, Passing: true}})
	second := s.SetInstances("web", []Instance{
		{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true},
		{ID: "b", NodeAddress: "10.0.0.2", Port: 80, Passing: true},
	})
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatal(a.err)
		}
		if a.index != second || !slices.Equal(a.ids, []string{"a", "b"}) {
			t.Errorf("woke with index %d and %v, want %d and [a b]", a.index, a.ids, second)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the blocking query did not return on the change")
	}
}

func TestBlockingQueryWaitElapses(t *testing.T) {
	s := New(t)
	idx := s.SetInstances("web", []Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	h := client(t, s, "").Health()
	const wait = 300 * time.Millisecond
	start := time.Now()
	entries, meta, err := h.Service("web", "", false, &api.QueryOptions{WaitIndex: idx, WaitTime: wait})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < wait {
		t.Errorf("answered after %v, before the wait of %v: it did not block", d, wait)
	}
	if meta.LastIndex != idx || !slices.Equal(ids(entries), []string{"a"}) {
		t.Errorf("index %d and %v, want the unchanged %d and [a]", meta.LastIndex, ids(entries), idx)
	}

	// Index 0 is no blocking query: it answers at once, whatever the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := (&api.QueryOptions{WaitIndex: 0, WaitTime: 5 * time.Minute}).WithContext(ctx)
	if _, _, err := h.Service("web", "", false, q); err != nil {
		t.Errorf("index 0: %v", err)
	}
	if n := s.Blocked(); n != 0 {
		t.Errorf("%d queries still blocked", n)
	}
}

func TestIndexBackwards(t *testing.T) {
	s := New(t)
	s.SetInstances("web", []Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	s.SetIndex("web", 10)
	h := client(t, s, "").Health()
	_, meta, err := h.Service("web", "", false, nil)
	if err != nil || meta.LastIndex != 10 {
		t.Fatalf("index %v, %v; want 10", meta, err)
	}
	// An index lower than the one waited on is no change past it, as in
	// Consul: the query blocks until its wait, then answers the lower
	// index for the client to notice.
	s.SetIndex("web", 3)
	_, meta, err = h.Service("web", "", false, &api.QueryOptions{WaitIndex: 10, WaitTime: 200 * time.Millisecond})
	if err != nil || meta.LastIndex != 3 {
		t.Fatalf("index %v, %v; want 3", meta, err)
	}
	// The next change takes the next index after the lowered one.
	if idx := s.SetInstances("web", nil); idx != 4 {
		t.Errorf("index after the change %d, want 4", idx)
	}
}

func TestFailNext(t *testing.T) {
	s := New(t)
	s.SetInstances("web", []Instance{{ID: "a", NodeAddress: "10.0.0.1", Port: 80, Passing: true}})
	h := client(t, s, "").Health()
	s.FailNext(http.StatusServiceUnavailable)
	_, _, err := h.Service("web", "", false, nil)
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Errorf("failed request: %v, want a 503 error", err)
	}
	if _, _, err := h.Service("web", "", false, nil); err != nil {
		t.Errorf("the request after: %v, want only the next to fail", err)
	}
}

func TestRequireToken(t *testing.T) {
	s := New(t)
	s.RequireToken("s3cr3t")
	for _, tc := range []struct {
		token string
		code  int
	}{{"", http.StatusForbidden}, {"wrong", http.StatusForbidden}, {"s3cr3t", 0}} {
		_, _, err := client(t, s, tc.token).Health().Service("web", "", false, nil)
		var se api.StatusError
		switch {
		case tc.code == 0 && err != nil:
			t.Errorf("token %q: %v", tc.token, err)
		case tc.code != 0 && (!errors.As(err, &se) || se.Code != tc.code):
			t.Errorf("token %q: %v, want status %d", tc.token, err, tc.code)
		}
	}
}

func TestRegisterDeregister(t *testing.T) {
	s := New(t)
	agent := client(t, s, "").Agent()
	reg := &api.AgentServiceRegistration{
		ID: "web-80-tcp", Name: "web-80-tcp", Address: "10.0.0.1", Port: 80, Tags: []string{"ober"},
		Check: &api.AgentServiceCheck{HTTP: "http://127.0.0.1:9000/health", Interval: "10s", DeregisterCriticalServiceAfter: "1m"},
	}
	if err := agent.ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	got := s.Registered()["web-80-tcp"]
	if got.Name != "web-80-tcp" || got.Address != "10.0.0.1" || got.Port != 80 || got.Check == nil ||
		got.Check.HTTP != "http://127.0.0.1:9000/health" || got.Check.Interval != "10s" || got.Check.DeregisterCriticalServiceAfter != "1m" {
		t.Errorf("registered %+v (check %+v)", got, got.Check)
	}
	services, err := agent.Services()
	if err != nil {
		t.Fatal(err)
	}
	if svc := services["web-80-tcp"]; svc == nil || svc.Service != "web-80-tcp" || svc.Port != 80 || svc.Address != "10.0.0.1" {
		t.Errorf("agent services %+v", services)
	}

	if err := agent.ServiceDeregister("web-80-tcp"); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Registered()); n != 0 {
		t.Errorf("%d registrations left", n)
	}
	err = agent.ServiceDeregister("web-80-tcp")
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Errorf("deregister unknown: %v, want 404", err)
	}

	for _, bad := range []*api.AgentServiceRegistration{
		{Port: 80},
		{Name: "x", Check: &api.AgentServiceCheck{HTTP: "http://127.0.0.1/health"}},
		{Name: "x", Check: &api.AgentServiceCheck{HTTP: "http://127.0.0.1/health", Interval: "often"}},
	} {
		err := agent.ServiceRegister(bad)
		if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
			t.Errorf("register %+v: %v, want 400", bad, err)
		}
	}
}
