package consul

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
)

// DefaultCheckInterval is how often the agent asks ober's /health when
// Check.Interval is not set.
const DefaultCheckInterval = 10 * time.Second

// AgentOptions set up an Agent.
type AgentOptions struct {
	// Address is the local agent, as Options.Address; default
	// DefaultAddress.
	Address string
	// TokenFile holds the ACL token, as Options.TokenFile.
	TokenFile string
	// Timeout bounds one request; default DefaultTimeout.
	Timeout time.Duration
}

// Agent registers ober's services in the local Consul agent, which
// keeps them in the catalog and runs their checks.
type Agent struct {
	client  *api.Client
	addr    string
	timeout time.Duration
}

// Registration is one of ober's services as Consul is to know it.
type Registration struct {
	// Name is the Consul service: ServiceName(service, port, proto).
	Name string
	// ID is unique on the agent; default Name.
	ID string
	// Address is where the service answers (its VIP); empty means the
	// agent's node address.
	Address string
	Port    uint16
	Tags    []string
	// Check is the agent's health check of the service; a zero Check
	// registers none.
	Check Check
}

// Check is an HTTP check the agent runs: passing on a 2xx answer,
// warning on 429, critical otherwise.
type Check struct {
	// URL is ober's own /health, http:// or https://.
	URL string
	// Interval between two checks; default DefaultCheckInterval.
	Interval time.Duration
	// Timeout of one check; 0 leaves Consul's default (10s).
	Timeout time.Duration
	// DeregisterCriticalAfter has the agent remove the service when the
	// check has been critical that long, so that a node that died
	// without deregistering does not stay in the catalog; 0 never.
	// Consul reaps at most every 30s and honours no less than a minute.
	DeregisterCriticalAfter time.Duration
}

// ServiceName is the Consul service of one of ober's services:
// <service>-<port>-<proto>, such as web-443-tcp.
func ServiceName(service string, port uint16, proto string) string {
	return service + "-" + strconv.Itoa(int(port)) + "-" + proto
}

// NewAgent checks opts and reads the token file. It does not reach the
// agent.
func NewAgent(opts AgentOptions) (*Agent, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	client, addr, err := newClient(opts.Address, opts.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("consul agent: %w", err)
	}
	return &Agent{client: client, addr: addr, timeout: timeout}, nil
}

// Register adds r to the agent, or replaces the registration of the same
// ID with its checks, so that registering again is harmless.
func (a *Agent) Register(ctx context.Context, r Registration) error {
	reg, err := r.agentRegistration()
	if err != nil {
		return fmt.Errorf("consul register %q: %w", r.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := a.client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return fmt.Errorf("consul at %s: register %q: %w", a.addr, reg.ID, err)
	}
	return nil
}

// Deregister removes the service of that ID and its checks from the
// agent. A service the agent does not know is gone already: no error, so
// that a stop after the agent reaped the service is clean.
func (a *Agent) Deregister(ctx context.Context, id string) error {
	if err := checkName(id); err != nil {
		return fmt.Errorf("consul deregister %q: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	err := a.client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("consul at %s: deregister %q: %w", a.addr, id, err)
	}
	return nil
}

// agentRegistration checks r and turns it into the client's type.
func (r Registration) agentRegistration() (*api.AgentServiceRegistration, error) {
	if err := checkName(r.Name); err != nil {
		return nil, fmt.Errorf("name: %w", err)
	}
	id := r.ID
	if id == "" {
		id = r.Name
	}
	if err := checkName(id); err != nil {
		return nil, fmt.Errorf("id %q: %w", id, err)
	}
	if r.Port == 0 {
		return nil, errors.New("port 0")
	}
	reg := &api.AgentServiceRegistration{
		ID:      id,
		Name:    r.Name,
		Address: r.Address,
		Port:    int(r.Port),
		Tags:    r.Tags,
	}
	if r.Check == (Check{}) {
		return reg, nil
	}
	c := r.Check
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("check url %q: not an http:// or https:// URL", c.URL)
	}
	if c.Interval < 0 || c.Timeout < 0 || c.DeregisterCriticalAfter < 0 {
		return nil, errors.New("check: a negative duration")
	}
	interval := c.Interval
	if interval == 0 {
		interval = DefaultCheckInterval
	}
	reg.Check = &api.AgentServiceCheck{
		Name:     "ober health",
		HTTP:     c.URL,
		Interval: interval.String(),
	}
	if c.Timeout > 0 {
		reg.Check.Timeout = c.Timeout.String()
	}
	if c.DeregisterCriticalAfter > 0 {
		reg.Check.DeregisterCriticalServiceAfter = c.DeregisterCriticalAfter.String()
	}
	return reg, nil
}
