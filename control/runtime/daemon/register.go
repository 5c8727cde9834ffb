package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/discovery/consul"
	"github.com/ober-ingress/ober/control/runtime/register"
)

// registerEvery is how often the registrations are brought in line with
// what the node serves: a withdraw or a VIP moving away is seen within
// it.
const registerEvery = 2 * time.Second

// startRegistration registers the services the node serves in the local
// Consul agent (consul.register) and keeps them in line until ctx ends.
func (d *Daemon) startRegistration(ctx context.Context, cfg *config.Config) error {
	if !cfg.Consul.Register {
		return nil
	}
	agent, err := consul.NewAgent(consul.AgentOptions{Address: cfg.Consul.Address, TokenFile: cfg.Consul.TokenFile})
	if err != nil {
		return fmt.Errorf("consul: %w", err)
	}
	d.registrar = register.New(agent, d.log.With("part", "consul"))
	go func() {
		t := time.NewTicker(registerEvery)
		defer t.Stop()
		for {
			if ctx.Err() != nil || d.isStopping() {
				return
			}
			if err := d.registrar.Sync(ctx, d.registrations(ctx)); err != nil {
				d.log.Warn("consul: registrations not in line; retried", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// registrations are the services the node serves now: those with a VIP
// the node holds, each on its first held VIP.
func (d *Daemon) registrations(ctx context.Context) []consul.Registration {
	st, err := d.status(ctx)
	if err != nil || st.Daemon == nil {
		return nil
	}
	cfg := d.plan().Config
	held := map[string]bool{}
	for _, v := range st.Daemon.VIPs {
		if v.Held {
			held[v.VIP.Unmap().String()] = true
		}
	}
	var out []consul.Registration
	for _, s := range st.Daemon.Services {
		for _, v := range s.VIPs {
			if !held[v.Unmap().String()] {
				continue
			}
			proto := config.ProtocolTCP
			if s.Mode == config.ModeUDP || s.Mode == config.ModeNAT && protocolOf(cfg, s.Name) == config.ProtocolUDP {
				proto = config.ProtocolUDP
			}
			out = append(out, consul.Registration{
				Name: consul.ServiceName(s.Name, s.Port, proto), Address: v.Unmap().String(), Port: s.Port,
				Tags:  cfg.Consul.Tags,
				Check: consul.Check{URL: "http://" + cfg.API.Listen + "/health", Interval: cfg.Consul.CheckInterval.Duration},
			})
			break
		}
	}
	return out
}

func protocolOf(cfg *config.Config, service string) string {
	for i := range cfg.Services {
		if cfg.Services[i].Name == service {
			return cfg.ServiceProtocol(i)
		}
	}
	return config.ProtocolTCP
}

// deregisterAll takes every registration back, at stop: clients that
// find the service through Consul stop coming before the node goes.
func (d *Daemon) deregisterAll() {
	if d.registrar == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.registrar.Close(ctx); err != nil {
		d.log.Warn("consul: deregistration at stop", "err", err)
	}
}
