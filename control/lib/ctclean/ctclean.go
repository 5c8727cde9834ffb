// Package ctclean deletes the conntrack entries of flows that the kernel
// NATed from a service address to a backend, through the conntrack netlink
// interface.
//
// ober forwards kernel L4 services with nftables DNAT (and SNAT in
// fullnat). NAT is decided on a flow's first packet only; later packets
// follow its conntrack entry. When a backend goes down or is removed, its
// entries must go, or UDP flows, which never end on their own while the
// client keeps sending, stay pinned to the dead backend. Deleting the
// entry makes the next packet a new flow that the current rules place.
//
// Everything works in the network namespace of the calling OS thread:
// a caller that wants another namespace locks its thread and enters it
// first. Deleting needs CAP_NET_ADMIN.
package ctclean

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Match selects the conntrack entries of one service flowing to one
// backend.
type Match struct {
	// Proto is unix.IPPROTO_TCP or unix.IPPROTO_UDP.
	Proto uint8
	// VIP is the service's address and port: the destination of the
	// entry's original direction.
	VIP netip.AddrPort
	// Backend is where the kernel sent the flow: the source of the
	// entry's reply direction. It equals VIP for a flow that was not
	// translated.
	Backend netip.AddrPort
}

// Delete deletes every conntrack entry of the calling thread's network
// namespace that matches m, IPv4 or IPv6, and returns how many it deleted.
// It is safe to call again after an error: what was deleted stays deleted.
func Delete(ctx context.Context, m Match) (int, error) {
	n, err := DeleteMany(ctx, m.Proto, m.VIP, []netip.AddrPort{m.Backend})
	return n[normalize(m.Backend)], err
}

// DeleteMany is Delete for several backends of one service, from one read
// of the table. The result has a count for every backend, keyed with the
// address unmapped (an IPv4-mapped IPv6 address becomes IPv4) and without
// an IPv6 zone.
func DeleteMany(ctx context.Context, proto uint8, vip netip.AddrPort, backends []netip.AddrPort) (map[netip.AddrPort]int, error) {
	if proto != unix.IPPROTO_TCP && proto != unix.IPPROTO_UDP {
		return nil, fmt.Errorf("conntrack match: protocol %d: want TCP (%d) or UDP (%d)", proto, unix.IPPROTO_TCP, unix.IPPROTO_UDP)
	}
	vip = normalize(vip)
	if err := checkAddrPort("VIP", vip); err != nil {
		return nil, err
	}
	counts := make(map[netip.AddrPort]int, len(backends))
	for _, b := range backends {
		b = normalize(b)
		if err := checkAddrPort("backend", b); err != nil {
			return nil, err
		}
		if b.Addr().Is4() != vip.Addr().Is4() {
			// nftables NAT keeps the family, so such an entry cannot exist;
			// saying so beats silently deleting nothing.
			return nil, fmt.Errorf("conntrack match: backend %s and VIP %s are of different families", b, vip)
		}
		counts[b] = 0
	}
	if len(counts) == 0 {
		return counts, nil
	}
	if err := ctx.Err(); err != nil {
		return counts, err
	}

	// Dial opens the socket on the calling thread, so in its namespace.
	c, err := conntrack.Dial(nil)
	if err != nil {
		return counts, fmt.Errorf("open conntrack netlink socket: %w", err)
	}
	// The library takes no context; closing the socket is what interrupts
	// a dump or delete that waits on the kernel.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer func() {
		if stop() {
			c.Close()
		}
	}()
	fail := func(what string, err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return fmt.Errorf("%s: %w", what, err)
	}

	family := netfilter.ProtoIPv6
	if vip.Addr().Is4() {
		family = netfilter.ProtoIPv4
	}
	// The kernel can filter a dump by family, mark, zone and status but not
	// by address through this library, so the rest is matched here.
	flows, err := c.DumpFilter(conntrack.NewFilter().Family(family), nil)
	if err != nil {
		return counts, fail("dump conntrack table", err)
	}
	for _, f := range flows {
		o, r := f.TupleOrig, f.TupleReply
		if o.Proto.Protocol != proto || netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort) != vip {
			continue
		}
		backend := netip.AddrPortFrom(r.IP.SourceAddress, r.Proto.SourcePort)
		if _, ok := counts[backend]; !ok {
			continue
		}
		if err := c.Delete(byReplyTuple(f)); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // ended, or already deleted, since the dump
			}
			return counts, fail(fmt.Sprintf("delete conntrack entry %s -> %s", o, backend), err)
		}
		counts[backend]++
	}
	return counts, nil
}

// byReplyTuple is the request that deletes f by its reply tuple alone.
//
// The kernel looks an entry up by the original tuple when given one. A
// client that reuses its port can have its flow ended and opened again,
// towards a healthy backend, between the dump and the delete; the original
// tuple would find that new entry. The reply tuple holds the backend, so it
// finds only an entry that still goes to the backend being cleaned.
//
// The library picks the message's address family from both tuples'
// addresses but sends a tuple only when its protocol is set: keeping the
// original addresses without a protocol gets IPv6 right and sends the
// reply tuple alone. A request with neither tuple would flush the whole
// table; a flow from a dump always has its reply tuple, and the library
// refuses to send a flow without tuples.
func byReplyTuple(f conntrack.Flow) conntrack.Flow {
	return conntrack.Flow{
		Zone:       f.Zone,
		TupleOrig:  conntrack.Tuple{IP: f.TupleOrig.IP},
		TupleReply: f.TupleReply,
	}
}

// normalize gives an address the form the kernel reports it in.
func normalize(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

func checkAddrPort(field string, ap netip.AddrPort) error {
	switch {
	case !ap.IsValid():
		return fmt.Errorf("conntrack match: %s %q: need an address and a port", field, ap)
	case ap.Addr().IsUnspecified():
		return fmt.Errorf("conntrack match: %s %s: address is unspecified", field, ap)
	case ap.Port() == 0:
		return fmt.Errorf("conntrack match: %s %s: port is 0", field, ap)
	}
	return nil
}
