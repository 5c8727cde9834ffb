package loader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
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

const (
	xdpLinkPrefix = "xdp_"
	skLookupLink  = "sk_lookup"
)

func linkProgType(pinName string) ebpf.ProgramType {
	switch {
	case strings.HasPrefix(pinName, xdpLinkPrefix):
		return ebpf.XDP
	case pinName == skLookupLink:
		return ebpf.SkLookup
	}
	return ebpf.UnspecifiedProgram
}

// AttachXDP attaches the XDP program to iface in the calling thread's
// network namespace and pins the link, returning the mode it runs in.
// In auto mode a driver without native XDP gets generic mode and a
// warning. Attaching an interface that is already attached is a no-op.
func (d *Dataplane) AttachXDP(iface string, mode XDPMode) (XDPMode, error) {
	d.mu.Lock()
	defer d.mu.Unlock()

	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return "", fmt.Errorf("attach xdp: interface %q: %w", iface, err)
	}
	pin := filepath.Join(d.linkDir(), xdpLinkPrefix+iface)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		l.Close()
		if ierr == nil && info.XDP() != nil && int(info.XDP().Ifindex) == ifi.Index {
			cur, err := xdpModeOf(iface)
			if err != nil {
				return "", fmt.Errorf("attach xdp %s: %w", iface, err)
			}
			if mode != XDPAuto && mode != cur {
				return "", fmt.Errorf("attach xdp %s: already attached in %s mode; detach first to change to %s", iface, cur, mode)
			}
			return cur, nil
		}
		// The interface went away (and maybe came back): the link is dead.
		if err := os.Remove(pin); err != nil {
			return "", fmt.Errorf("attach xdp %s: remove stale link: %w", iface, err)
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

// DetachXDP removes the XDP program from iface.
func (d *Dataplane) DetachXDP(iface string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return detachPinned(filepath.Join(d.linkDir(), xdpLinkPrefix+iface))
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
	d.mu.Lock()
	defer d.mu.Unlock()

	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}
	defer ns.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil {
		return fmt.Errorf("attach sk_lookup: %w", err)
	}

	pin := filepath.Join(d.linkDir(), skLookupLink)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		l.Close()
		if ierr == nil && info.NetNs() != nil && uint64(info.NetNs().NetnsInode) == st.Ino {
			return nil
		}
		return fmt.Errorf("attach sk_lookup: %s already holds a link for another network namespace", d.root)
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

// DetachSkLookup removes the sk_lookup program from its namespace.
func (d *Dataplane) DetachSkLookup() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return detachPinned(filepath.Join(d.linkDir(), skLookupLink))
}

// Attachment is one pinned XDP link.
type Attachment struct {
	Iface   string  `json:"iface"`
	Ifindex int     `json:"ifindex"`
	Mode    XDPMode `json:"mode"`
}

// Attachments lists the XDP links pinned under the root, with the mode
// each interface reports in the calling thread's namespace.
func (d *Dataplane) Attachments() ([]Attachment, bool, error) {
	entries, err := os.ReadDir(d.linkDir())
	if err != nil {
		return nil, false, fmt.Errorf("list attachments: %w", err)
	}
	var out []Attachment
	sk := false
	for _, e := range entries {
		if e.Name() == skLookupLink {
			sk = true
			continue
		}
		iface, ok := strings.CutPrefix(e.Name(), xdpLinkPrefix)
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
