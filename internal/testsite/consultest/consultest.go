// Package consultest is an in-process stand-in for a Consul agent, for
// tests of ober's Consul discovery and registration where no Consul is
// installed. It answers the few HTTP API endpoints the official client
// uses for them, as Consul's API documentation describes them:
//
//   - GET /v1/health/service/:service with tag, dc, passing, index and
//     wait: a blocking query, answering X-Consul-Index.
//   - PUT /v1/agent/service/register and PUT
//     /v1/agent/service/deregister/:id.
//   - GET /v1/agent/services, to look at the registrations.
//
// A test sets a service's instances (each change moves the index),
// makes the next request fail, or requires an ACL token. The agent's
// registrations stay on the agent: they do not show up in the health
// endpoint, which answers only what the test set.
package consultest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Datacenter is the only datacenter the server knows; a query for
// another fails as Consul fails one it has no path to.
const Datacenter = "dc1"

// Consul's bounds on a blocking query's wait.
const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

// Instance is one instance of a service, on a node of its own.
type Instance struct {
	// ID is the service instance's ID; its node is "node-" + ID.
	ID string
	// Address is the service's address; empty means the node's.
	Address     string
	NodeAddress string
	// Port is an int so that a test can give 0 or more than 65535.
	Port int
	Tags []string
	// Passing tells whether the instance's check passes; when not, it is
	// critical.
	Passing bool
	// Weight is the instance's Weights.Passing; 0 means Consul's
	// default, 1.
	Weight int
}

// Registration is a service registered with the agent.
type Registration struct {
	ID      string
	Name    string
	Address string
	Port    int
	Tags    []string
	// Check is the service's check, nil for none.
	Check *Check
}

// Check is a check given with a registration, its durations as the
// client sent them (such as "10s").
type Check struct {
	Name                           string
	HTTP                           string
	Interval                       string
	Timeout                        string
	DeregisterCriticalServiceAfter string
}

// service is one service's instances and the index of their last change.
type service struct {
	index     uint64
	instances []Instance
}

// Server is the stand-in agent.
type Server struct {
	srv *httptest.Server

	mu sync.Mutex
	// index is the last index handed out: every change takes the next.
	index    uint64
	services map[string]*service
	// changed is closed, and replaced, on every change, waking the
	// blocked queries.
	changed    chan struct{}
	registered map[string]Registration
	failNext   int
	token      string
	queries    int
	blocked    int
	// done is closed at cleanup so that blocked queries end at once
	// instead of holding up the server's Close.
	done chan struct{}
}

// New starts a server on 127.0.0.1, closed at t's cleanup.
func New(t testing.TB) *Server { return NewOn(t, nil) }

// NewOn is New on the listener ln (nil: 127.0.0.1 of this process's
// namespace), such as one opened in a test node's namespace, where the
// agent of that node would listen.
func NewOn(t testing.TB, ln net.Listener) *Server {
	t.Helper()
	s := &Server{
		index:      1,
		services:   map[string]*service{},
		changed:    make(chan struct{}),
		registered: map[string]Registration{},
		done:       make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health/service/{service}", s.healthService)
	mux.HandleFunc("PUT /v1/agent/service/register", s.register)
	mux.HandleFunc("PUT /v1/agent/service/deregister/{id}", s.deregister)
	mux.HandleFunc("GET /v1/agent/services", s.agentServices)
	if ln == nil {
		s.srv = httptest.NewServer(s.gate(mux))
	} else {
		s.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: s.gate(mux)}}
		s.srv.Start()
	}
	t.Cleanup(func() {
		close(s.done)
		s.srv.Close()
	})
	return s
}

// Addr is the server's host:port, what a client takes as its address.
func (s *Server) Addr() string { return s.srv.Listener.Addr().String() }

// SetInstances replaces the service's instances and moves its index to
// the server's next one, which it returns. Blocked queries on the
// service answer.
func (s *Server) SetInstances(name string, instances []Instance) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index++
	s.services[name] = &service{index: s.index, instances: slices.Clone(instances)}
	s.notifyLocked()
	return s.index
}

// SetIndex sets the service's index, and the server's, to index, keeping
// the instances: set lower, it is the index going backwards, as after a
// snapshot restore. Index 0 makes the server answer 0, which Consul
// should never do but some versions did.
func (s *Server) SetIndex(name string, index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.services[name]
	if svc == nil {
		svc = &service{}
		s.services[name] = svc
	}
	svc.index = index
	s.index = index
	s.notifyLocked()
}

// Index is the service's index now.
func (s *Server) Index(name string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx, _ := s.lookupLocked(name)
	return idx
}

// Registered is the agent's registrations by ID.
func (s *Server) Registered() map[string]Registration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Registration, len(s.registered))
	for id, r := range s.registered {
		out[id] = r
	}
	return out
}

// FailNext makes the next request, whichever, fail with status.
func (s *Server) FailNext(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = status
}

// RequireToken refuses, 403, every request that does not carry token in
// X-Consul-Token (or as a bearer token), as an agent with ACLs whose
// anonymous token may do nothing. An empty token lifts the requirement.
func (s *Server) RequireToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// HealthQueries counts the health queries received, blocking or not.
func (s *Server) HealthQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Blocked is the number of health queries blocked now, waiting for a
// change: a test waits for its client to be blocked before changing
// anything, to see the change wake it.
func (s *Server) Blocked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// lookupLocked is a service's index and instances. A service never set
// is at index 1, that of an empty catalog: waiting on it blocks until the
// test sets it.
func (s *Server) lookupLocked(name string) (uint64, []Instance) {
	svc := s.services[name]
	if svc == nil {
		return 1, nil
	}
	return svc.index, svc.instances
}

// gate applies FailNext and RequireToken before any endpoint.
func (s *Server) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		fail, token := s.failNext, s.token
		s.failNext = 0
		s.mu.Unlock()
		if fail != 0 {
			http.Error(w, "consultest: failure asked for by the test", fail)
			return
		}
		if token != "" {
			got := r.Header.Get("X-Consul-Token")
			if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && got == "" {
				got = b
			}
			switch got {
			case token:
			case "":
				http.Error(w, "Permission denied", http.StatusForbidden)
				return
			default:
				http.Error(w, "ACL not found", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// JSON shapes of the health endpoint's answer, as documented.
type (
	nodeJSON struct {
		Node            string
		Address         string
		Datacenter      string
		TaggedAddresses map[string]string
		Meta            map[string]string
	}
	weightsJSON struct {
		Passing int
		Warning int
	}
	serviceJSON struct {
		ID                string
		Service           string
		Tags              []string
		Address           string
		Meta              map[string]string
		Port              int
		Weights           weightsJSON
		EnableTagOverride bool
		Datacenter        string `json:",omitempty"`
	}
	checkJSON struct {
		Node        string
		CheckID     string
		Name        string
		Status      string
		Notes       string
		Output      string
		ServiceID   string
		ServiceName string
		ServiceTags []string
	}
	entryJSON struct {
		Node    nodeJSON
		Service serviceJSON
		Checks  []checkJSON
	}
)

// healthService answers GET /v1/health/service/:service.
func (s *Server) healthService(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.queries++
	s.mu.Unlock()
	name := r.PathValue("service")
	q := r.URL.Query()
	if dc := q.Get("dc"); dc != "" && dc != Datacenter {
		http.Error(w, "No path to datacenter", http.StatusInternalServerError)
		return
	}
	passingOnly := false
	if q.Has("passing") {
		passingOnly = true
		if v := q.Get("passing"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				http.Error(w, "Invalid value for ?passing", http.StatusBadRequest)
				return
			}
			passingOnly = b
		}
	}
	var minIndex uint64
	if v := q.Get("index"); v != "" {
		i, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			http.Error(w, "Invalid index", http.StatusBadRequest)
			return
		}
		minIndex = i
	}
	wait := defaultWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			http.Error(w, "Invalid wait time", http.StatusBadRequest)
			return
		}
		wait = min(d, maxWait)
	}

	index, instances, ok := s.block(r, name, minIndex, wait)
	if !ok {
		return
	}
	out := make([]entryJSON, 0, len(instances))
	for _, in := range instances {
		if passingOnly && !in.Passing {
			continue
		}
		if !hasTags(in.Tags, q["tag"]) {
			continue
		}
		out = append(out, entry(name, in))
	}
	w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
	w.Header().Set("X-Consul-KnownLeader", "true")
	w.Header().Set("X-Consul-LastContact", "0")
	writeJSON(w, out)
}

// block waits, when minIndex is not 0, until the service's index is
// above minIndex or wait has passed (Consul adds a random wait/16 at
// most; this server adds none), and returns the service's state then.
// It returns false when the client went away or the server is closing.
func (s *Server) block(r *http.Request, name string, minIndex uint64, wait time.Duration) (uint64, []Instance, bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		index, instances := s.lookupLocked(name)
		if minIndex == 0 || index > minIndex {
			return index, instances, true
		}
		changed := s.changed
		s.blocked++
		s.mu.Unlock()
		timedOut, gone := false, false
		select {
		case <-changed:
		case <-timer.C:
			timedOut = true
		case <-r.Context().Done():
			gone = true
		case <-s.done:
			gone = true
		}
		s.mu.Lock()
		s.blocked--
		if gone {
			return 0, nil, false
		}
		if timedOut {
			index, instances := s.lookupLocked(name)
			return index, instances, true
		}
	}
}

// hasTags tells whether tags holds every one of want, as Consul filters:
// case-insensitively.
func hasTags(tags, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(tags, func(t string) bool { return strings.EqualFold(t, w) }) {
			return false
		}
	}
	return true
}

// entry is the health endpoint's entry of one instance: its node, its
// service and the checks of both.
func entry(name string, in Instance) entryJSON {
	node := "node-" + in.ID
	weight := in.Weight
	if weight == 0 {
		weight = 1
	}
	status := "passing"
	if !in.Passing {
		status = "critical"
	}
	tags := in.Tags
	if tags == nil {
		tags = []string{}
	}
	return entryJSON{
		Node: nodeJSON{
			Node:            node,
			Address:         in.NodeAddress,
			Datacenter:      Datacenter,
			TaggedAddresses: map[string]string{"lan": in.NodeAddress},
			Meta:            map[string]string{},
		},
		Service: serviceJSON{
			ID:      in.ID,
			Service: name,
			Tags:    tags,
			Address: in.Address,
			Meta:    map[string]string{},
			Port:    in.Port,
			Weights: weightsJSON{Passing: weight, Warning: 1},
		},
		Checks: []checkJSON{
			{Node: node, CheckID: "serfHealth", Name: "Serf Health Status", Status: "passing"},
			{Node: node, CheckID: "service:" + in.ID, Name: "Service '" + name + "' check", Status: status,
				ServiceID: in.ID, ServiceName: name, ServiceTags: tags},
		},
	}
}

// registerBody is what PUT /v1/agent/service/register takes, of what
// this server keeps.
type registerBody struct {
	ID      string
	Name    string
	Address string
	Port    int
	Tags    []string
	Check   *Check
	Checks  []Check
}

// register answers PUT /v1/agent/service/register: the service with ID
// (default its Name) replaces any of the same ID.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var b registerBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&b); err != nil {
		http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
		return
	}
	if b.Name == "" {
		http.Error(w, "Missing service name", http.StatusBadRequest)
		return
	}
	if b.ID == "" {
		b.ID = b.Name
	}
	if len(b.Checks) > 0 {
		// This server keeps one check per service, all ober registers.
		http.Error(w, "consultest: Checks is not supported, use Check", http.StatusBadRequest)
		return
	}
	if c := b.Check; c != nil {
		if msg := checkProblem(c); msg != "" {
			http.Error(w, "Invalid check: "+msg, http.StatusBadRequest)
			return
		}
	}
	s.mu.Lock()
	s.registered[b.ID] = Registration{ID: b.ID, Name: b.Name, Address: b.Address, Port: b.Port, Tags: b.Tags, Check: b.Check}
	s.mu.Unlock()
}

// checkProblem is what is wrong with an HTTP check, or "".
func checkProblem(c *Check) string {
	if c.HTTP == "" {
		return "only HTTP checks are supported by consultest"
	}
	for _, d := range []struct{ name, v string }{
		{"Interval", c.Interval}, {"Timeout", c.Timeout}, {"DeregisterCriticalServiceAfter", c.DeregisterCriticalServiceAfter},
	} {
		if d.v == "" {
			continue
		}
		if v, err := time.ParseDuration(d.v); err != nil || v <= 0 {
			return fmt.Sprintf("%s %q is not a positive duration", d.name, d.v)
		}
	}
	if c.Interval == "" {
		return "Interval must be > 0 for an HTTP check"
	}
	return ""
}

// deregister answers PUT /v1/agent/service/deregister/:id.
func (s *Server) deregister(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	_, ok := s.registered[id]
	delete(s.registered, id)
	s.mu.Unlock()
	if !ok {
		http.Error(w, fmt.Sprintf("Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id), http.StatusNotFound)
	}
}

// agentServices answers GET /v1/agent/services: the registrations by ID.
func (s *Server) agentServices(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := make(map[string]serviceJSON, len(s.registered))
	for id, reg := range s.registered {
		tags := reg.Tags
		if tags == nil {
			tags = []string{}
		}
		out[id] = serviceJSON{
			ID: reg.ID, Service: reg.Name, Tags: tags, Address: reg.Address, Meta: map[string]string{},
			Port: reg.Port, Weights: weightsJSON{Passing: 1, Warning: 1}, Datacenter: Datacenter,
		}
	}
	s.mu.Unlock()
	writeJSON(w, out)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	// An error here is a client gone away: there is no one to tell.
	_ = json.NewEncoder(w).Encode(v)
}
