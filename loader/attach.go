package loader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// XDPMode is how an XDP program runs on an interface.
type XDPMode string

// The XDP modes. Native runs in the driver before an skb exists; generic
// runs after, on any interface, at a fraction of the speed.
const (
	XDPAuto    XDPMode = "auto"
	XDPNative  XDPMode = "native"
	XDPGeneric XDPMode = "generic"
)

// ParseXDPMode checks a --mode value.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case XDPAuto, XDPNative, XDPGeneric:
		return m, nil
	}
	return "", fmt.Errorf("invalid XDP mode %q (want auto, native or generic)", s)
}

// IFLA_XDP_ATTACHED values (enum in linux/if_link.h).
const (
	xdpAttachedDrv = 1
	xdpAttachedSKB = 2
)

// Link pins carry the network namespace's inode, so that one pin root can
// serve interfaces of the same name in different namespaces without one
// mistaking the other's link for its own.
const (
	xdpLinkPrefix = "xdp_"
	skLookupLink  = "sk_lookup_"
)

func xdpPinName(netns uint64, iface string) string {
	return fmt.Sprintf("%s%d_%s", xdpLinkPrefix, netns, iface)
}

func skLookupPinName(netns uint64) string { return fmt.Sprintf("%s%d", skLookupLink, netns) }

func linkProgType(pinName string) ebpf.ProgramType {
	switch {
	case strings.HasPrefix(pinName, xdpLinkPrefix):
		return ebpf.XDP
	case strings.HasPrefix(pinName, skLookupLink):
		return ebpf.SkLookup
	}
	return ebpf.UnspecifiedProgram
}

// pinNetns reads the network namespace a link pin name carries.
func pinNetns(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, xdpLinkPrefix)
	if !ok {
		rest, ok = strings.CutPrefix(name, skLookupLink)
	}
	if !ok {
		return 0, false
	}
	num, _, _ := strings.Cut(rest, "_")
	ns, err := strconv.ParseUint(num, 10, 64)
	return ns, err == nil
}

// claimNetns makes sure the pin root serves no other network namespace:
// its sockets and tables belong to one, and sk_lookup in another would
// hand that namespace's connections to them. Links of a namespace that is
// gone, or to an interface that is gone, are cleared on the way. Called
// with the lock held.
func (d *Dataplane) claimNetns(netns uint64) error {
	entries, err := os.ReadDir(d.linkDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		owner, ok := pinNetns(e.Name())
		if !ok || owner == netns {
			continue
		}
		pin := filepath.Join(d.linkDir(), e.Name())
		if linkAlive(pin) {
			return fmt.Errorf("pin root %s serves another network namespace (inode %d, link %s); "+
				"give this namespace its own --bpffs-root", d.root, owner, e.Name())
		}
		if err := os.Remove(pin); err != nil {
			return fmt.Errorf("remove stale link %s: %w", e.Name(), err)
		}
	}
	return nil
}

// linkAlive reports whether a pinned link still has its hook: an XDP link
// loses its interface, a netns link its namespace, when those go away.
func linkAlive(pin string) bool {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false
	}
	switch {
	case info.XDP() != nil:
		return info.XDP().Ifindex != 0
	case info.NetNs() != nil:
		return info.NetNs().NetnsInode != 0
	}
	return true
}

// currentNetns identifies the calling thread's network namespace.
func currentNetns() (uint64, *os.File, error) {
	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return 0, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil {
		ns.Close()
		return 0, nil, err
	}
	return st.Ino, ns, nil
}

// AttachXDP attaches the XDP program to iface in the calling thread's
// network namespace and pins the link, returning the mode it runs in.
// In auto mode a driver without native XDP gets generic mode and a
// warning. Attaching an interface that is already attached is a no-op.
func (d *Dataplane) AttachXDP(iface string, mode XDPMode) (XDPMode, error) {
	if err := d.needPrograms("attach xdp"); err != nil {
		return "", err
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return "", fmt.Errorf("attach xdp: interface %q: %w", iface, err)
	}
	netns, nsf, err := currentNetns()
	if err != nil {
		return "", fmt.Errorf("attach xdp %s: %w", iface, err)
	}
	nsf.Close()
	unlock, err := d.lock()
	if err != nil {
		return "", fmt.Errorf("attach xdp %s: %w", iface, err)
	}
	defer unlock()
	if err := d.claimNetns(netns); err != nil {
		return "", fmt.Errorf("attach xdp %s: %w", iface, err)
	}

	pin := filepath.Join(d.linkDir(), xdpPinName(netns, iface))
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		l.Close()
		var ifindex int
		if ierr == nil && info.XDP() != nil {
			ifindex = int(info.XDP().Ifindex)
		}
		switch ifindex {
		case ifi.Index:
			cur, err := xdpModeOf(iface)
			if err != nil {
				return "", fmt.Errorf("attach xdp %s: %w", iface, err)
			}
			if mode != XDPAuto && mode != cur {
				return "", fmt.Errorf("attach xdp %s: already attached in %s mode; detach first to change to %s", iface, cur, mode)
			}
			return cur, nil
		case 0:
			// The interface was deleted: the link is dead, only its pin is left.
			if err := os.Remove(pin); err != nil {
				return "", fmt.Errorf("attach xdp %s: remove stale link: %w", iface, err)
			}
		default:
			return "", fmt.Errorf("attach xdp %s: the link pinned for %s is attached to ifindex %d, not %d "+
				"(renamed?); detach it with `ober detach --iface %s` first", iface, iface, ifindex, ifi.Index, iface)
		}
	}

	try := func(m XDPMode) (link.Link, error) {
		flags := link.XDPDriverMode
		if m == XDPGeneric {
			flags = link.XDPGenericMode
		}
		return link.AttachXDP(link.XDPOptions{Program: d.xdp, Interface: ifi.Index, Flags: flags})
	}
	got := mode
	var l link.Link
	switch mode {
	case XDPNative, XDPGeneric:
		l, err = try(mode)
	case XDPAuto:
		got = XDPNative
		l, err = try(XDPNative)
		if err != nil {
			d.log.Warn("native XDP failed, falling back to generic mode (much slower)", "iface", iface, "err", err)
			got = XDPGeneric
			l, err = try(XDPGeneric)
		}
	default:
		return "", fmt.Errorf("attach xdp %s: invalid mode %q", iface, mode)
	}
	if err != nil {
		return "", fmt.Errorf("attach xdp %s (%s): %w", iface, got, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return "", fmt.Errorf("attach xdp %s: pin link: %w", iface, err)
	}
	return got, nil
}

// DetachXDP removes the XDP program from iface in the calling thread's
// network namespace.
func (d *Dataplane) DetachXDP(iface string) error {
	netns, nsf, err := currentNetns()
	if err != nil {
		return fmt.Errorf("detach xdp %s: %w", iface, err)
	}
	nsf.Close()
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("detach xdp %s: %w", iface, err)
	}
	defer unlock()
	return detachPinned(filepath.Join(d.linkDir(), xdpPinName(netns, iface)))
}
func detachPinned(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("detach %s: not attached", filepath.Base(pin))
	}
	if err != nil {
		// A link whose hook is gone cannot be loaded; the pin is all that is left.
		if rerr := os.Remove(pin); rerr != nil {
			return fmt.Errorf("detach %s: %w", filepath.Base(pin), errors.Join(err, rerr))
		}
		return nil
	}
	defer l.Close()
	// Detach explicitly: dropping the last reference detaches too, but
	// only later, from a kernel work queue.
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("detach %s: %w", filepath.Base(pin), err)
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("detach %s: unpin: %w", filepath.Base(pin), err)
	}
	return nil
}

// AttachSkLookup attaches the sk_lookup program to the calling thread's
// network namespace. It is a no-op when already attached there.
func (d *Dataplane) AttachSkLookup() error {
	if err := d.needPrograms("attach sk_lookup"); err != nil {
		return err
	}
	netns, ns, err := currentNetns()
	if err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}
	defer ns.Close()
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}
	defer unlock()
	if err := d.claimNetns(netns); err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}

	pin := filepath.Join(d.linkDir(), skLookupPinName(netns))
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		l.Close()
		if ierr == nil && info.NetNs() != nil && uint64(info.NetNs().NetnsInode) == netns {
			return nil
		}
		// The namespace died and its inode number came back: a dead link.
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("attach sk_lookup: remove stale link: %w", err)
		}
	}
	l, err := link.AttachNetNs(int(ns.Fd()), d.skLookup)
	if err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("attach sk_lookup: pin link: %w", err)
	}
	return nil
}

// DetachSkLookup removes the sk_lookup program from the calling thread's
// network namespace.
func (d *Dataplane) DetachSkLookup() error {
	netns, nsf, err := currentNetns()
	if err != nil {
		return fmt.Errorf("detach sk_lookup: %w", err)
	}
	nsf.Close()
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("detach sk_lookup: %w", err)
	}
	defer unlock()
	return detachPinned(filepath.Join(d.linkDir(), skLookupPinName(netns)))
}

// Attachment is one pinned XDP link.
type Attachment struct {
	Iface   string  `json:"iface"`
	Ifindex int     `json:"ifindex"`
	Mode    XDPMode `json:"mode"`
}

// Attachments lists the XDP links pinned for the calling thread's network
// namespace, with the mode each interface reports, and whether sk_lookup
// is attached there.
func (d *Dataplane) Attachments() ([]Attachment, bool, error) {
	netns, nsf, err := currentNetns()
	if err != nil {
		return nil, false, fmt.Errorf("list attachments: %w", err)
	}
	nsf.Close()
	entries, err := os.ReadDir(d.linkDir())
	if err != nil {
		return nil, false, fmt.Errorf("list attachments: %w", err)
	}
	var out []Attachment
	sk := false
	prefix := xdpPinName(netns, "")
	for _, e := range entries {
		if e.Name() == skLookupPinName(netns) {
			sk = true
			continue
		}
		iface, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		a := Attachment{Iface: iface}
		if ifi, err := net.InterfaceByName(iface); err == nil {
			a.Ifindex = ifi.Index
		}
		if m, err := xdpModeOf(iface); err == nil {
			a.Mode = m
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Iface < out[j].Iface })
	return out, sk, nil
}

// xdpModeOf asks the kernel which mode iface's XDP program runs in.
func xdpModeOf(iface string) (XDPMode, error) {
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return "", fmt.Errorf("interface %q: %w", iface, err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return "", fmt.Errorf("interface %q has no XDP program", iface)
	}
	switch x.AttachMode {
	case xdpAttachedDrv:
		return XDPNative, nil
	case xdpAttachedSKB:
		return XDPGeneric, nil
	}
	return "", fmt.Errorf("interface %q: unknown XDP attach mode %d", iface, x.AttachMode)
}
