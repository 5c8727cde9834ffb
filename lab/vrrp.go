package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ownerOf names the node that owns VRRP VIP i.
func ownerOf(i int) string { return nodeHost(i % nodeCount).role }

// ownersLine is "10.99.1.101 node1, ..." for progress lines.
func ownersLine() string {
	parts := make([]string, len(VRRPVIPs))
	for i, v := range VRRPVIPs {
		parts[i] = v.String() + " " + ownerOf(i)
	}
	return strings.Join(parts, ", ")
}

// holderView reads which VRRP VIPs are on each node's interface, over a
// netlink handle per node namespace: one address dump per node, cheap
// enough to sample every few milliseconds. The interface is what clients
// reach, whatever keepalived or /status say.
type holderView struct {
	names []string // node names, in node order
	iface string
	nss   []netns.NsHandle
	hs    []*netlink.Handle
}

func openHolderView(st *State) (*holderView, error) {
	v := &holderView{iface: nodeHost(0).iface}
	for _, n := range st.Nodes {
		ns, err := netns.GetFromName(n.NS)
		if err != nil {
			v.Close()
			return nil, fmt.Errorf("open namespace %s: %w", n.NS, err)
		}
		h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		if err != nil {
			ns.Close()
			v.Close()
			return nil, fmt.Errorf("netlink in %s: %w", n.NS, err)
		}
		v.names, v.nss, v.hs = append(v.names, n.Name), append(v.nss, ns), append(v.hs, h)
	}
	return v, nil
}

func (v *holderView) Close() {
	for i := range v.hs {
		v.hs[i].Close()
		v.nss[i].Close()
	}
}

// heldBy returns the VRRP VIPs on node i's interface.
func (v *holderView) heldBy(i int) ([]netip.Addr, error) {
	link, err := v.hs[i].LinkByName(v.iface)
	if err != nil {
		return nil, fmt.Errorf("%s: link %s: %w", v.names[i], v.iface, err)
	}
	var addrs []netlink.Addr
	// A dump that raced a change is retried, not trusted.
	for range 5 {
		addrs, err = v.hs[i].AddrList(link, netlink.FAMILY_V4)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: addresses of %s: %w", v.names[i], v.iface, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && slices.Contains(VRRPVIPs, ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// holders maps every VRRP VIP to the names of the nodes holding it, in
// node order. The nodes are read one after the other, a few tens of
// microseconds apart.
func (v *holderView) holders() (map[netip.Addr][]string, error) {
	out := map[netip.Addr][]string{}
	for i := range v.hs {
		held, err := v.heldBy(i)
		if err != nil {
			return nil, err
		}
		for _, a := range held {
			out[a] = append(out[a], v.names[i])
		}
	}
	return out, nil
}

// onOwners says whether every VIP is held by its owner alone.
func onOwners(h map[netip.Addr][]string) bool {
	for i, vip := range VRRPVIPs {
		if hs := h[vip]; len(hs) != 1 || hs[0] != ownerOf(i) {
			return false
		}
	}
	return true
}

// holdersString is "10.99.1.101: node1; 10.99.1.102: none; ..."
func holdersString(h map[netip.Addr][]string) string {
	parts := make([]string, len(VRRPVIPs))
	for i, vip := range VRRPVIPs {
		who := "none"
		if len(h[vip]) > 0 {
			who = strings.Join(h[vip], "+")
		}
		parts[i] = vip.String() + ": " + who
	}
	return strings.Join(parts, "; ")
}

// waitOwners waits until every VIP is on its owner alone: keepalived
// starts every instance in BACKUP and the owner claims its VIP after the
// first adverts.
func waitOwners(ctx context.Context, st *State, timeout time.Duration) error {
	v, err := openHolderView(st)
	if err != nil {
		return err
	}
	defer v.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "not read yet"
	for {
		h, err := v.holders()
		if err == nil && onOwners(h) {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = holdersString(h)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the VIPs were not each on their owner (%s) after %v: %s; the end of %s:\n%s",
				ownersLine(), timeout, last, st.Nodes[0].Log, tail(st.Nodes[0].Log, 20))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
