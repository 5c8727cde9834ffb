package backends

import (
	"fmt"

	"github.com/ober-ingress/ober/control/config"
)

// Row is one backend of one pool of one service, as the configuration
// file gives it, defaults filled in.
type Row struct {
	Service string
	// Pool is config.DefaultPool or the name of one of the service's
	// pools[].
	Pool string
	// Shared marks the top-level backends.servers, which every tls and
	// http service without backends of its own uses: the same backend is
	// listed under each of them.
	Shared   bool
	Name     string
	Address  string
	Weight   int
	Priority int
	State    string
	// Path is the backend's place in the file, such as
	// "services[2].backends[1]".
	Path string
}

// List loads the configuration file at path (config.Load) and returns
// the backends of the service named service, or of every service when
// service is empty, in the file's order: services, then each service's
// pools, then servers.
func List(path, service string) ([]Row, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return rows(cfg, service)
}

func rows(cfg *config.Config, service string) ([]Row, error) {
	first, last := 0, len(cfg.Services)
	if service != "" {
		i, err := findService(cfg, service)
		if err != nil {
			return nil, err
		}
		first, last = i, i+1
	}
	out := []Row{}
	for i := first; i < last; i++ {
		for _, spec := range cfg.ServicePools(i) {
			for j, s := range spec.Servers {
				w := config.DefaultWeight
				if s.Weight != nil {
					w = *s.Weight
				}
				out = append(out, Row{
					Service: spec.Ref.Service, Pool: spec.Ref.Pool, Shared: spec.Shared,
					Name: s.Name, Address: s.Address, Weight: w, Priority: s.Priority, State: s.State,
					Path: fmt.Sprintf("%s[%d]", spec.Path, j),
				})
			}
		}
	}
	return out, nil
}
