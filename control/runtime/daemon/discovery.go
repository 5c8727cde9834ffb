package daemon

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/discovery"
	discrun "github.com/ober-ingress/ober/control/runtime/discovery"
)

// discoveryState is the daemon's part of discovery: the runner, and each
// pool's source with the block it was made from, so that a reload that
// leaves a block alone keeps its source (and its watcher, its blocking
// query) running.
type discoveryState struct {
	mu      sync.Mutex
	runner  *discrun.Runner
	runCtx  context.Context
	sources map[string]discSource
}

type discSource struct {
	block config.Discovery
	src   discovery.Source
}

// discover sets the runner's pools to cfg's and returns cfg with what
// they found. At start it waits for each new pool's first fetch (up to
// its timeout), so that the first plan has the backends.
func (d *Daemon) discover(ctx context.Context, cfg *config.Config, first bool) (*config.Config, error) {
	pools := cfg.DiscoveryPools()
	st := &d.disc
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.runner == nil {
		if len(pools) == 0 {
			return cfg, nil
		}
		// The runner outlives this call: it runs on the daemon's context.
		st.runCtx = ctx
		st.runner = discrun.New(discrun.Options{
			Logger: d.log.With("part", "discovery"),
			Apply: func(ctx context.Context, _ map[string]config.Found) error {
				_, _, err := d.Apply(ctx)
				return err
			},
		})
		st.sources = map[string]discSource{}
		go st.runner.Run(ctx)
	}
	var cred *syscall.Credential
	next := map[string]discSource{}
	var rps []discrun.Pool
	var fresh []string
	for _, p := range pools {
		block := *p.Discovery
		block.Overrides = nil // an operator's override is no new source
		s, ok := st.sources[p.Key]
		if !ok || !reflect.DeepEqual(s.block, block) {
			if block.Kind == config.DiscoveryExec && cred == nil {
				c, err := credential(cfg.HAProxy.User, cfg.HAProxy.Group)
				if err != nil {
					return nil, fmt.Errorf("%s.discovery.command: %w", p.Key, err)
				}
				cred = c
			}
			src, err := discrun.SourceFor(p.Key, p.Discovery, cred)
			if err != nil {
				return nil, err
			}
			s = discSource{block: block, src: src}
			fresh = append(fresh, p.Key)
		}
		next[p.Key] = s
		rps = append(rps, discrun.Pool{Key: p.Key, Kind: block.Kind, Source: s.src, Interval: block.Interval.Duration,
			Timeout: block.Timeout.Duration, SetEmpty: block.FailPolicy == config.FailSetEmpty, DrainFor: cfg.Timeouts.Drain.Duration})
	}
	st.sources = next
	st.runner.Set(st.runCtx, rps)
	if first && len(fresh) > 0 {
		wait := time.Duration(0)
		for _, p := range rps {
			wait = max(wait, p.Timeout)
		}
		wctx, cancel := context.WithTimeout(ctx, wait+time.Second)
		st.runner.Fetched(wctx, fresh)
		cancel()
	}
	return cfg.WithDiscovered(st.runner.Found()), nil
}

// discoveryStatus is the pools' discovery as status shows it, by pool.
func (d *Daemon) discoveryStatus() []api.DiscoveryStatus {
	d.disc.mu.Lock()
	r := d.disc.runner
	d.disc.mu.Unlock()
	if r == nil {
		return nil
	}
	states := r.States()
	out := make([]api.DiscoveryStatus, 0, len(states))
	for _, k := range slices.Sorted(maps.Keys(states)) {
		st := states[k]
		ds := api.DiscoveryStatus{Pool: k, Kind: st.Kind, Backends: []string{}, Problems: st.Problems, LastSuccess: st.LastSuccess,
			LastError: st.LastError, ErrorAt: st.ErrorAt, Fetches: st.Fetches, Failures: st.Failures, Changes: st.Changes, Applied: st.Applied}
		for _, b := range st.Backends {
			ds.Backends = append(ds.Backends, b.ID())
		}
		for _, b := range st.Draining {
			ds.Draining = append(ds.Draining, b.ID())
		}
		out = append(out, ds)
	}
	return out
}
