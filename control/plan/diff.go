package plan

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

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
	Steering   bool
	// HAProxy says the instances' configuration differs.
	HAProxy bool
	// Peers says the BGP speaker's peers differ, Routes the routes it
	// announces while the node is healthy.
	Peers, Routes bool
	// VRRP says keepalived's configuration differs.
	VRRP bool
}

// Diff says what applying next over running changes; a nil running plan
// (nothing applied yet) changes everything next has.
func Diff(running, next *NodePlan) Changes {
	var c Changes
	if running == nil {
		c.Attach = slices.Clone(next.Interfaces)
		c.Tables, c.Whitelists, c.Steering = DiffTables(nil, &next.Tables)
		c.HAProxy = true
		c.Peers, c.Routes, c.VRRP = next.BGP != nil, next.BGP != nil, next.VRRP != nil
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
	c.HAProxy = !sameInstances(running, next)
	if running.BGP != nil && next.BGP != nil {
		c.Peers = !reflect.DeepEqual(running.BGP.Speaker.Peers, next.BGP.Speaker.Peers)
		c.Routes = !reflect.DeepEqual(running.BGP.Routes, next.BGP.Routes)
	}
	if running.VRRP != nil && next.VRRP != nil {
		c.VRRP = !reflect.DeepEqual(*running.VRRP, *next.VRRP)
	}
	return c
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

// sameInstances reports whether both plans run the same instances with
// the same configuration, rendered alike for the comparison.
func sameInstances(a, b *NodePlan) bool {
	if !slices.Equal(a.Slots, b.Slots) || !slices.Equal(a.Listeners, b.Listeners) {
		return false
	}
	for _, sl := range a.Slots {
		x, err1 := a.Render(sl, a.ExampleFDs(), "/plan.sock")
		y, err2 := b.Render(sl, b.ExampleFDs(), "/plan.sock")
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

// None reports whether nothing but the instances' renewal changes.
func (c Changes) None() bool {
	return len(c.Attach)+len(c.Detach)+len(c.Whitelists) == 0 &&
		!c.Tables && !c.Steering && !c.HAProxy && !c.Peers && !c.Routes && !c.VRRP
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
	add(c.Steering, "steering")
	add(c.HAProxy, "haproxy configuration")
	add(c.Peers, "bgp peers")
	add(c.Routes, "bgp routes")
	add(c.VRRP, "keepalived configuration")
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}
