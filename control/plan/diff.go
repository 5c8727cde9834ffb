package plan

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/supervisor"
	"github.com/ober-ingress/ober/loader"
)

// Changes is what applying a plan over the running one changes. The
// daemon applies these and nothing else, but for the HAProxy instances:
// a reload renews them whatever changed, which is how an upgraded HAProxy
// binary or a fixed chroot comes into service.
type Changes struct {
	// Attach are the interfaces to attach the XDP program to (all of them
	// when node.xdp_mode changed), Detach those to detach it from.
	Attach, Detach []string
	// Tables says the VIP and service table differs.
	Tables bool
	// Whitelists are the lists whose prefixes differ.
	Whitelists []loader.WhitelistID
	// Access are the access lists to set (new or changed).
	Access   []loader.AccessID
	Steering bool
	// HAProxy says the instances' configuration differs; Servers that
	// only backends' weights and admin states do, which the runtime API
	// applies without renewing the instances.
	HAProxy, Servers bool
	// Peers says the BGP speaker's peers differ, Routes the routes it
	// announces while the node is healthy.
	Peers, Routes bool
	// VRRP says keepalived's configuration differs.
	VRRP bool
	// Kernel says the services the kernel forwards differ (their
	// backends, weights, admin states, balance, timeouts): nftables
	// takes them in one transaction, without renewing an instance.
	Kernel bool
}

// Diff says what applying next over running changes; a nil running plan
// (nothing applied yet) changes everything next has.
func Diff(running, next *NodePlan) Changes {
	var c Changes
	if running == nil {
		c.Attach = slices.Clone(next.Interfaces)
		c.Tables, c.Whitelists, c.Steering = DiffTables(nil, &next.Tables)
		c.Access, _ = DiffAccess(nil, &next.Tables)
		c.HAProxy = true
		c.Peers, c.Routes, c.VRRP = next.BGP != nil, next.BGP != nil, next.VRRP != nil
		c.Kernel = len(next.Kernel) > 0
		return c
	}
	for _, iface := range next.Interfaces {
		if running.XDPMode != next.XDPMode || !slices.Contains(running.Interfaces, iface) {
			c.Attach = append(c.Attach, iface)
		}
	}
	for _, iface := range running.Interfaces {
		if !slices.Contains(next.Interfaces, iface) {
			c.Detach = append(c.Detach, iface)
		}
	}
	c.Tables, c.Whitelists, c.Steering = DiffTables(&running.Tables, &next.Tables)
	c.Access, _ = DiffAccess(&running.Tables, &next.Tables)
	if !sameInstances(running, next, false) {
		if sameInstances(running, next, true) {
			c.Servers = true
		} else {
			c.HAProxy = true
		}
	}
	if running.BGP != nil && next.BGP != nil {
		c.Peers = !reflect.DeepEqual(running.BGP.Speaker.Peers, next.BGP.Speaker.Peers)
		c.Routes = !reflect.DeepEqual(running.BGP.Routes, next.BGP.Routes)
	}
	if running.VRRP != nil && next.VRRP != nil {
		c.VRRP = !reflect.DeepEqual(*running.VRRP, *next.VRRP)
	}
	c.Kernel = !reflect.DeepEqual(kernelView(running), kernelView(next))
	return c
}

// kernelState is a kernel service with its backends as they are (the
// service names them by index into NodePlan.Servers).
type kernelState struct {
	Service  KernelService
	Backends []Server
}

func kernelView(p *NodePlan) []kernelState {
	out := make([]kernelState, 0, len(p.Kernel))
	for _, k := range p.Kernel {
		st := kernelState{Service: k}
		st.Service.Servers = nil
		for _, i := range k.Servers {
			st.Backends = append(st.Backends, p.Servers[i])
		}
		out = append(out, st)
	}
	return out
}

// DiffTables says what writing next over running changes in the
// dataplane's maps: the VIP and service table, which whitelists, the
// steering flag. A nil running changes everything.
func DiffTables(running, next *Tables) (services bool, whitelists []loader.WhitelistID, steering bool) {
	if running == nil {
		return true, slices.Sorted(maps.Keys(next.Whitelists)), true
	}
	services = !slices.Equal(running.VIPs, next.VIPs) || !slices.Equal(running.Services, next.Services)
	for _, id := range slices.Sorted(maps.Keys(next.Whitelists)) {
		if ps, ok := running.Whitelists[id]; !ok || !slices.Equal(ps, next.Whitelists[id]) {
			whitelists = append(whitelists, id)
		}
	}
	return services, whitelists, running.Steering != next.Steering
}

// DiffAccess says which access lists writing next over running sets (new
// or changed) and which it clears (no service of next uses them). A nil
// running sets every list of next.
func DiffAccess(running, next *Tables) (set, clear []loader.AccessID) {
	for _, id := range slices.Sorted(maps.Keys(next.Access)) {
		if running == nil {
			set = append(set, id)
			continue
		}
		if es, ok := running.Access[id]; !ok || !slices.Equal(es, next.Access[id]) {
			set = append(set, id)
		}
	}
	if running != nil {
		for _, id := range slices.Sorted(maps.Keys(running.Access)) {
			if _, ok := next.Access[id]; !ok {
				clear = append(clear, id)
			}
		}
	}
	return set, clear
}

// sameInstances reports whether both plans run the same instances with
// the same configuration, rendered alike for the comparison; with
// anyServerState, whatever the servers' weights and admin states.
func sameInstances(a, b *NodePlan, anyServerState bool) bool {
	if !slices.Equal(a.Slots, b.Slots) || !slices.Equal(a.Listeners, b.Listeners) {
		return false
	}
	render := func(p *NodePlan, sl supervisor.Slot) ([]byte, error) {
		in := p.Instance(sl, p.ExampleFDs(), "/plan.sock")
		if anyServerState {
			in = sameServerStates(in)
		}
		return haproxy.Render(in)
	}
	for _, sl := range a.Slots {
		x, err1 := render(a, sl)
		y, err2 := render(b, sl)
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

// sameServerStates gives every server of in one state and, but under
// balance source, whose map-based hash takes no other weight at run time
// than the one it started with, one weight.
func sameServerStates(in haproxy.Instance) haproxy.Instance {
	pools := slices.Clone(in.Pools)
	for i := range pools {
		pools[i].Servers = slices.Clone(pools[i].Servers)
		for j := range pools[i].Servers {
			s := &pools[i].Servers[j]
			s.State = haproxy.StateReady
			if pools[i].Balance != haproxy.BalanceSource {
				s.Weight = 1
			}
		}
	}
	in.Pools = pools
	return in
}

// RuntimeOnly reports whether the only change is to backends' weights and
// admin states, or to the kernel services, which nftables takes as they
// are: neither renews an instance.
func (c Changes) RuntimeOnly() bool {
	rest := c
	rest.Servers, rest.Kernel = false, false
	return (c.Servers || c.Kernel) && rest.None()
}

// None reports whether nothing but the instances' renewal changes.
func (c Changes) None() bool {
	return len(c.Attach)+len(c.Detach)+len(c.Whitelists)+len(c.Access) == 0 &&
		!c.Tables && !c.Steering && !c.HAProxy && !c.Servers && !c.Peers && !c.Routes && !c.VRRP && !c.Kernel
}

// String names what changes, for the reload's log line.
func (c Changes) String() string {
	var parts []string
	add := func(ok bool, s string) {
		if ok {
			parts = append(parts, s)
		}
	}
	add(len(c.Attach) > 0, fmt.Sprintf("attach %s", strings.Join(c.Attach, ",")))
	add(len(c.Detach) > 0, fmt.Sprintf("detach %s", strings.Join(c.Detach, ",")))
	add(c.Tables, "services")
	for _, id := range c.Whitelists {
		parts = append(parts, "whitelist "+id.String())
	}
	for _, id := range c.Access {
		parts = append(parts, "access list "+id.String())
	}
	add(c.Steering, "steering")
	add(c.HAProxy, "haproxy configuration")
	add(c.Servers, "backend weights and states")
	add(c.Peers, "bgp peers")
	add(c.Routes, "bgp routes")
	add(c.VRRP, "keepalived configuration")
	add(c.Kernel, "kernel services")
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}
