package backends

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ober-ingress/ober/control/config"
)

// location is where a backend is: services[svc]'s pool spec, server
// index of it.
type location struct {
	service string
	svc     int
	spec    config.PoolSpec
	index   int
}

// findService is the index of the service named name, or an error
// listing the names there are.
func findService(cfg *config.Config, name string) (int, error) {
	var names []string
	for i := range cfg.Services {
		if cfg.Services[i].Name == name {
			return i, nil
		}
		if cfg.Services[i].Name != "" {
			names = append(names, cfg.Services[i].Name)
		}
	}
	have := "the file has none"
	if len(names) > 0 {
		have = "have: " + strings.Join(names, ", ")
	}
	return -1, &config.FieldError{Path: "services", Value: strconv.Quote(name), Msg: "no such service (" + have + ")"}
}

// find locates backend in service's pools, in pool alone when it is not
// empty. A name in two pools needs the pool.
func find(cfg *config.Config, service, pool, backend string) (location, error) {
	si, err := findService(cfg, service)
	if err != nil {
		return location{}, err
	}
	base := fmt.Sprintf("services[%d]", si)
	specs := cfg.ServicePools(si)
	if len(specs) == 0 {
		return location{}, &config.FieldError{Path: base, Value: strconv.Quote(service), Msg: "has no backends"}
	}
	if pool != "" {
		var names []string
		var keep []config.PoolSpec
		for _, s := range specs {
			names = append(names, s.Ref.Pool)
			if s.Ref.Pool == pool {
				keep = append(keep, s)
			}
		}
		if len(keep) == 0 {
			return location{}, &config.FieldError{Path: base + ".pools", Value: strconv.Quote(pool),
				Msg: fmt.Sprintf("no such pool in service %q (have: %s)", service, strings.Join(names, ", "))}
		}
		specs = keep
	}
	var hits []location
	for _, s := range specs {
		for j := range s.Servers {
			if s.Servers[j].Name == backend {
				hits = append(hits, location{service: service, svc: si, spec: s, index: j})
			}
		}
	}
	switch {
	case len(hits) == 1:
		return hits[0], nil
	case len(hits) > 1:
		var pools []string
		for _, h := range hits {
			pools = append(pools, strconv.Quote(h.spec.Ref.Pool))
		}
		return location{}, &config.FieldError{Path: base, Value: strconv.Quote(backend),
			Msg: fmt.Sprintf("a backend of that name is in pools %s of service %q: give the pool (--pool)", strings.Join(pools, " and "), service)}
	case len(specs) == 1:
		return location{}, &config.FieldError{Path: specs[0].Path, Value: strconv.Quote(backend),
			Msg: "no such backend (" + serverNames(specs[0]) + ")"}
	}
	var have []string
	for _, s := range specs {
		have = append(have, s.Ref.Pool+": "+strings.Join(names(s), ", "))
	}
	return location{}, &config.FieldError{Path: base, Value: strconv.Quote(backend),
		Msg: fmt.Sprintf("no such backend in the pools of service %q (have %s)", service, strings.Join(have, "; "))}
}

func names(s config.PoolSpec) []string {
	out := make([]string, len(s.Servers))
	for i := range s.Servers {
		out[i] = s.Servers[i].Name
	}
	return out
}

func serverNames(s config.PoolSpec) string {
	if len(s.Servers) == 0 {
		return "the pool is empty"
	}
	return "have: " + strings.Join(names(s), ", ")
}

// sharedBy lists the services that use the top-level backends.servers.
func sharedBy(cfg *config.Config) []string {
	var out []string
	for i := range cfg.Services {
		if specs := cfg.ServicePools(i); len(specs) > 0 && specs[0].Shared {
			out = append(out, cfg.Services[i].Name)
		}
	}
	return out
}
