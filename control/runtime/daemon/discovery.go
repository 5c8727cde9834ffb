package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	"github.com/ober-ingress/ober/control/runtime/tables"
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
	// loaded is the running generation's configuration as loaded.
	loaded *config.Config
}

// setLoaded keeps the configuration of the running generation as it was
// loaded, before discovery's backends: a reload for discovery alone
// starts from it.
func (st *discoveryState) setLoaded(cfg *config.Config) {
	st.mu.Lock()
	st.loaded = cfg
	st.mu.Unlock()
}

// runningConfig is the running generation's configuration as loaded,
// and the whitelists' live generations, read under the whitelist lock as
// readConfig reads them.
func (d *Daemon) runningConfig(ctx context.Context, runtimeDir string) (*config.Config, tables.Base, error) {
	d.disc.mu.Lock()
	cfg := d.disc.loaded
	d.disc.mu.Unlock()
	if cfg == nil {
		return nil, nil, errors.New("discovery: no running configuration yet")
	}
	return d.withBase(ctx, runtimeDir, func() (*config.Config, error) { return cfg, nil })
}

type discSource struct {
	block config.Discovery
	src   discovery.Source
}

// discover returns cfg with what its pools' sources found, and commit,
// which makes those pools the running ones; a caller that does not
// commit (a refused reload) calls it with false, which closes the
// sources made for it and leaves the running ones as they were. At start
// (first) the pools run at once, and discover waits for each one's first
// fetch (up to its timeout), so that the first plan has the backends; a
// pool new on a reload gets its backends with its first fetch, in a
// reload of its own.
func (d *Daemon) discover(ctx context.Context, cfg *config.Config, first bool) (*config.Config, func(ok bool), error) {
	pools := cfg.DiscoveryPools()
	st := &d.disc
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.runner == nil {
		if len(pools) == 0 {
			return cfg, func(bool) {}, nil
		}
		// The runner outlives this call: it runs on the daemon's context.
		st.runCtx = ctx
		st.runner = discrun.New(discrun.Options{
			Logger: d.log.With("part", "discovery"),
			Apply: func(ctx context.Context, _ map[string]config.Found) error {
				return d.applyDiscovered(ctx)
			},
		})
		st.sources = map[string]discSource{}
		go st.runner.Run(ctx)
	}
	var cred *syscall.Credential
	next := map[string]discSource{}
	var made []discovery.Source
	var rps []discrun.Pool
	var fresh []string
	discard := func() {
		for _, src := range made {
			if c, ok := src.(io.Closer); ok {
				_ = c.Close()
			}
		}
	}
	for _, p := range pools {
		block := *p.Discovery
		block.Overrides = nil // an operator's override is no new source
		s, ok := st.sources[p.Key]
		if !ok || !reflect.DeepEqual(s.block, block) {
			if block.Kind == config.DiscoveryExec && cred == nil {
				c, err := credential(cfg.HAProxy.User, cfg.HAProxy.Group)
				if err != nil {
					discard()
					return nil, nil, fmt.Errorf("%s.discovery.command: %w", p.Key, err)
				}
				cred = c
			}
			src, err := discrun.SourceFor(p.Key, p.Discovery, cred)
			if err != nil {
				discard()
				return nil, nil, err
			}
			made = append(made, src)
			s = discSource{block: block, src: src}
			fresh = append(fresh, p.Key)
		}
		next[p.Key] = s
		rps = append(rps, discrun.Pool{Key: p.Key, Kind: block.Kind, Source: s.src, Interval: block.Interval.Duration,
			Timeout: block.Timeout.Duration, SetEmpty: block.FailPolicy == config.FailSetEmpty, DrainFor: cfg.Timeouts.Drain.Duration})
	}
	commit := func(ok bool) {
		if !ok {
			discard()
			return
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		st.sources = next
		st.runner.Set(st.runCtx, rps)
	}
	if !first {
		return cfg.WithDiscovered(st.runner.Found()), commit, nil
	}
	st.sources = next
	st.runner.Set(st.runCtx, rps)
	if len(fresh) > 0 {
		wait := time.Duration(0)
		for _, p := range rps {
			wait = max(wait, p.Timeout)
		}
		wctx, cancel := context.WithTimeout(ctx, wait+time.Second)
		st.runner.Fetched(wctx, fresh)
		cancel()
	}
	return cfg.WithDiscovered(st.runner.Found()), func(bool) {}, nil
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
