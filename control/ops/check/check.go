// Package check is `ober test`: it checks what a node needs against the
// world outside it, changing nothing. It has HAProxy and keepalived check
// the configurations ober would run them with, opens a session with each
// BGP peer, sends ICMP echo to each VRRP peer from the VRRP interface,
// and does what HAProxy's health check does to each backend; the checks
// of the machine itself (certificates, interfaces, keepalived's version)
// are doctor's, reported in this package's terms.
//
// It is not part of doctor because doctor looks only at this machine,
// through a replaceable Env, and this package talks to routers, peers
// and backends, with a result (round trips, HTTP status, BGP
// capabilities) of its own, which `ober test --json` prints.
package check

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/doctor"
	"github.com/ober-ingress/ober/control/plan"
	"github.com/ober-ingress/ober/control/runtime/bgp"
)

// The verdicts of a check. Only a failure fails `ober test`: a warning
// is something that works today but needs attention (a certificate
// close to expiry, generic XDP).
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
)

// Result is one check: one line of `ober test`, and one object of its
// --json array. Fields are added, never renamed: name, ok and detail are
// the original three, ok is false only for a failure.
type Result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Status string `json:"status"` // OK, Warn or Fail
	Detail string `json:"detail"`
	// Fix says what to do about a warning or a failure, where ober knows.
	Fix string `json:"fix,omitempty"`
	// Address is what a vrrp peer or backend check talked to (IP or
	// IP:port, after name resolution).
	Address string `json:"address,omitempty"`
	// RTTMillis is a vrrp peer's ICMP echo round trip, or a backend's TCP
	// connect time, in milliseconds.
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// HTTPStatus is a backend's answer to the health check.
	HTTPStatus int              `json:"http_status,omitempty"`
	BGP        *bgp.ProbeResult `json:"bgp,omitempty"`
}

func pass(name, detail string) Result {
	return Result{Name: name, OK: true, Status: OK, Detail: detail}
}

func fail(name, detail string) Result {
	return Result{Name: name, Status: Fail, Detail: detail}
}

// Failed counts the failures among rs.
func Failed(rs []Result) int {
	n := 0
	for _, r := range rs {
		if !r.OK {
			n++
		}
	}
	return n
}

// DefaultBGPTimeout bounds a BGP session's establishment: a router
// answers an OPEN in well under a second, unless it waits out its
// connect-retry timer first.
const DefaultBGPTimeout = 15 * time.Second

// Options tune Run.
type Options struct {
	// BGPTimeout bounds each BGP session's establishment; 0 means
	// DefaultBGPTimeout.
	BGPTimeout time.Duration
	// Logger receives the BGP probes' logs; nil means slog.Default().
	Logger *slog.Logger
}

// Run checks the configuration at path and what it names. When the
// configuration does not load, the checks that need only part of it
// (backend, tls, iface) still run on what the file says, so that one
// run names every problem. Every group of checks runs at once; the
// results come in a fixed order: config, haproxy, bgp or vrrp, backend,
// routeback, tls, iface.
func Run(ctx context.Context, path string, o Options) []Result {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BGPTimeout <= 0 {
		o.BGPTimeout = DefaultBGPTimeout
	}
	cfg, err := config.Load(path)
	if err != nil {
		checks := []Result{fail("config", config.OneLine(err))}
		// A certificate that expired or a key that does not match is a
		// configuration error too; the tls check then says which service
		// and which files, and the backends are still worth knowing.
		if raw := rawConfig(path); raw != nil {
			checks = append(checks, runGroups(ctx,
				func(ctx context.Context) []Result { return backendChecks(ctx, raw) },
				func(context.Context) []Result { return tlsChecks(raw) },
				func(ctx context.Context) []Result { return ifaceChecks(ctx, raw) },
			)...)
		}
		return checks
	}
	return runGroups(ctx,
		func(ctx context.Context) []Result { return configChecks(ctx, path, cfg) },
		func(ctx context.Context) []Result { return haChecks(ctx, o, cfg) },
		func(ctx context.Context) []Result { return backendChecks(ctx, cfg) },
		func(ctx context.Context) []Result { return routeBackChecks(ctx, cfg) },
		func(context.Context) []Result { return tlsChecks(cfg) },
		func(ctx context.Context) []Result { return ifaceChecks(ctx, cfg) },
	)
}

// runGroups runs every group of checks at once and returns their results
// in the order of the groups: the slowest check (a BGP session, a dead
// backend) sets the time of the whole run.
func runGroups(ctx context.Context, groups ...func(context.Context) []Result) []Result {
	out := make([][]Result, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { out[i] = g(ctx) })
	}
	wg.Wait()
	var all []Result
	for _, g := range out {
		all = append(all, g...)
	}
	return all
}

// rawConfig reads the file without validating it: what it says, with
// the defaults filled in, or nil when it is no ober configuration at all.
func rawConfig(path string) *config.Config {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var c config.Config
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil
	}
	c.ApplyDefaults()
	return &c
}

// configChecks plans the configuration and has HAProxy check it, as
// `ober run --check` does.
func configChecks(ctx context.Context, path string, cfg *config.Config) []Result {
	res, err := plan.Check(ctx, path, nil)
	if err != nil {
		return []Result{fail("config", config.OneLine(err))}
	}
	return []Result{
		pass("config", fmt.Sprintf("%s: %d VIPs, %d services, %d backends", path,
			len(cfg.VIPs), len(cfg.Services), len(cfg.Backends.Servers))),
		pass("haproxy", fmt.Sprintf("HAProxy %s accepts the configuration of %d instances", res.Plan.HAProxy, len(res.Plan.Slots))),
	}
}

// fromDoctor turns one of doctor's results into a check; doctor's
// "cert <service>" is "tls <service>" here.
func fromDoctor(r doctor.Result) Result {
	name := r.Name
	if s, ok := strings.CutPrefix(name, "cert "); ok {
		name = "tls " + s
	}
	c := Result{Name: name, Detail: r.Detail, Fix: r.Fix}
	switch r.Status {
	case doctor.Pass:
		c.OK, c.Status = true, OK
	case doctor.Warn:
		c.OK, c.Status = true, Warn
	default:
		c.Status = Fail
	}
	return c
}

func tlsChecks(cfg *config.Config) []Result {
	var out []Result
	for _, r := range doctor.CheckCerts(doctor.DefaultEnv(), cfg) {
		c := fromDoctor(r)
		if !c.OK {
			// doctor's detail names the files at fault; the service
			// leads, for the operator who greps for it.
			c.Detail = "service " + strings.TrimPrefix(c.Name, "tls ") + ": " + c.Detail
		}
		out = append(out, c)
	}
	return out
}

func ifaceChecks(ctx context.Context, cfg *config.Config) []Result {
	var out []Result
	for _, r := range doctor.CheckInterfaces(ctx, doctor.DefaultEnv(), cfg) {
		out = append(out, fromDoctor(r))
	}
	return out
}
