package doctor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ober-ingress/ober/control/config"
)

// portResult checks that a port ober binds itself (the API, BGP,
// handoff) is free. When the daemon runs, the port is taken by it.
// Otherwise a taken port stops the daemon from starting: a failure when
// mustBeFree.
func portResult(env Env, name, network, addr string, running, mustBeFree bool, fix string) Result {
	r := Result{Name: name}
	c, err := env.Listen(network, addr)
	if err == nil {
		c.Close()
		r.Status, r.Detail = Pass, fmt.Sprintf("%s %s free", strings.ToUpper(network[:3]), addr)
		return r
	}
	if !inUse(err) {
		r.Status, r.Detail, r.Fix = Warn, fmt.Sprintf("cannot bind %s %s: %v", network, addr, err), fix
		return r
	}
	if running {
		r.Status, r.Detail = Pass, fmt.Sprintf("%s %s in use by ober (the daemon answers on api.listen)", strings.ToUpper(network[:3]), addr)
		return r
	}
	r.Status = Warn
	if mustBeFree {
		r.Status = Fail
	}
	_, port, _ := net.SplitHostPort(addr)
	flag := "-ltnp"
	if strings.HasPrefix(network, "udp") {
		flag = "-lunp"
	}
	r.Detail = fmt.Sprintf("%s %s is taken by another program, and ober cannot bind it", strings.ToUpper(network[:3]), addr)
	r.Fix = fmt.Sprintf("find it with `ss %s 'sport = :%s'` and stop it, or %s", flag, port, fix)
	return r
}

// checkPorts checks the API port and the services' ports. ober's own
// service sockets are bound to loopback on ephemeral ports (sk_lookup
// hands them the VIPs' connections), so a program listening on a VIP's
// port is never ober: while ober runs it sees none of the VIP's
// connections, and while ober is down it takes them. That is worth a
// warning, not a failure, since ober starts anyway.
func checkPorts(env Env, cfg *config.Config, running bool) []Result {
	rs := []Result{portResult(env, "api port", "tcp", cfg.API.Listen, running, true, "set api.listen")}
	r := Result{Name: "service ports", Status: Pass}
	var free, taken, fixes []string
	type key struct {
		vip  netip.Addr
		port uint16
	}
	seen := map[key]bool{}
	for _, s := range cfg.Services {
		vips := s.VIPs
		if len(vips) == 0 {
			vips = cfg.VIPs
		}
		for _, v := range vips {
			k := key{v.Addr, s.Port}
			if seen[k] {
				continue
			}
			seen[k] = true
			addr := net.JoinHostPort(v.String(), strconv.Itoa(int(s.Port)))
			err := bindOnce(env, "tcp", addr)
			if err != nil && notLocal(err) {
				// The VIP is not on this node yet (the daemon adds it,
				// or a VRRP backup does not hold it): a wildcard
				// listener on the port is what would take its traffic.
				network, wild := "tcp4", "0.0.0.0"
				if v.Is6() {
					network, wild = "tcp6", "::"
				}
				addr = net.JoinHostPort(wild, strconv.Itoa(int(s.Port)))
				err = bindOnce(env, network, addr)
			}
			switch {
			case err == nil:
				free = append(free, fmt.Sprintf("%s:%d", v, s.Port))
			case inUse(err):
				r.Status = Warn
				taken = append(taken, fmt.Sprintf("%s (%s)", addr, s.Name))
				fixes = append(fixes, fmt.Sprintf("`ss -ltnp 'sport = :%d'` names the program; stop it or move it off port %d", s.Port, s.Port))
			default:
				r.Status = Warn
				taken = append(taken, fmt.Sprintf("%s (%s): %v", addr, s.Name, err))
			}
		}
	}
	switch {
	case len(taken) == 0:
		r.Detail = "free on every VIP: " + strings.Join(free, ", ")
	default:
		r.Detail = "another program listens on " + strings.Join(taken, ", ") +
			": ober's sk_lookup takes the VIPs' connections from it while ober runs, and it gets them while ober is down"
		r.Fix = joinFix(dedup(fixes))
	}
	return append(rs, r)
}

func bindOnce(env Env, network, addr string) error {
	c, err := env.Listen(network, addr)
	if err == nil {
		c.Close()
	}
	return err
}

func dedup(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// dialTimeout bounds each backend connection attempt: a backend that
// needs longer than this to accept is as good as down for S3 clients.
const dialTimeout = 2 * time.Second

// doctorServer is one backend server to reach: its label and address.
type doctorServer struct{ Name, Address string }

// doctorServers are the top-level backends and every service's own,
// each address once. A server without a port (a service's port range)
// is reached on its health check's port, or skipped without one.
func doctorServers(cfg *config.Config) []doctorServer {
	var out []doctorServer
	seen := map[string]bool{}
	add := func(name, addr string) {
		if !seen[addr] {
			seen[addr] = true
			out = append(out, doctorServer{name, addr})
		}
	}
	for _, s := range cfg.Backends.Servers {
		add(s.Name, s.Address)
	}
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		for _, spec := range cfg.ServicePools(i) {
			if spec.Shared {
				continue
			}
			for _, s := range spec.Servers {
				addr := s.Address
				if _, _, err := net.SplitHostPort(addr); err != nil {
					if svc.Health == nil || svc.Health.Port == 0 {
						continue
					}
					addr = net.JoinHostPort(addr, strconv.Itoa(int(svc.Health.Port)))
				}
				add(spec.Ref.String()+"/"+s.Name, addr)
			}
		}
	}
	return out
}

// checkBackends connects to every backend server over TCP, all at once.
func checkBackends(ctx context.Context, env Env, cfg *config.Config) Result {
	r := Result{Name: "backends"}
	servers := doctorServers(cfg)
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, dialTimeout)
			defer cancel()
			c, err := env.Dial(ctx, "tcp", s.Address)
			if err != nil {
				errs[i] = err
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	var down []string
	for i, err := range errs {
		if err != nil {
			down = append(down, fmt.Sprintf("%s %s: %v", servers[i].Name, servers[i].Address, err))
		}
	}
	sort.Strings(down)
	up := len(servers) - len(down)
	switch {
	case len(down) == 0:
		r.Status, r.Detail = Pass, fmt.Sprintf("%d of %d reachable over TCP", up, len(servers))
	case up == 0:
		r.Status = Fail
		r.Detail = fmt.Sprintf("none of %d reachable: %s", len(servers), strings.Join(down, "; "))
		r.Fix = "check that the S3 gateways run and that this node can route to them (firewall, backends.servers addresses)"
	default:
		r.Status = Warn
		r.Detail = fmt.Sprintf("%d of %d reachable; down: %s", up, len(servers), strings.Join(down, "; "))
		r.Fix = "check the servers that are down; ober sends them nothing until their health checks pass"
	}
	return r
}
