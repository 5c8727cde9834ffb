package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/mgmt"
)

// ServiceStats is one service's status as /status has it (mgmt.Reader).
func (d *Daemon) ServiceStats(ctx context.Context, name string) (json.RawMessage, error) {
	for _, s := range d.serviceStates(d.plan()) {
		if s.Name == name {
			b, err := json.Marshal(s)
			if err != nil {
				return nil, fmt.Errorf("service %q stats: %w", name, err)
			}
			return b, nil
		}
	}
	return nil, mgmt.Errorf(http.StatusNotFound, "services["+name+"]", "%q: no such service", name)
}

// Pools is every vip_pools entry's usage (mgmt.Reader).
func (d *Daemon) Pools(ctx context.Context) (json.RawMessage, error) {
	ds := d.daemonStatus(ctx)
	pools := ds.VIPPools
	if pools == nil {
		pools = []api.VIPPoolStatus{}
	}
	b, err := json.Marshal(pools)
	if err != nil {
		return nil, fmt.Errorf("pools: %w", err)
	}
	return b, nil
}
