package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/config"
)

// ensureVIPs puts every VIP on node.vip_interface as a host address, so
// the kernel delivers their connections locally (sk_lookup then picks the
// instance socket). In mode none and bgp ober owns these addresses; the
// VRRP mode leaves them to keepalived.
func (d *Daemon) ensureVIPs(cfg *config.Config) error {
	if cfg.HA.Mode == config.HAModeVRRP {
		return nil
	}
	link, err := netlink.LinkByName(cfg.Node.VIPInterface)
	if err != nil {
		return fmt.Errorf("node.vip_interface: %q: %w", cfg.Node.VIPInterface, err)
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("node.vip_interface: %q: list addresses: %w", cfg.Node.VIPInterface, err)
	}
	for _, v := range cfg.VIPs {
		p := netip.PrefixFrom(v.Addr, v.Addr.BitLen())
		if slices.ContainsFunc(have, func(a netlink.Addr) bool { return prefixOf(a) == p }) {
			continue
		}
		if err := addHostAddr(link, p); err != nil {
			return fmt.Errorf("vips: add %s to %s: %w", p, cfg.Node.VIPInterface, err)
		}
		d.addedVIPs = append(d.addedVIPs, p)
		d.log.Info("vip added", "vip", p, "iface", cfg.Node.VIPInterface)
	}
	return nil
}

// dropOldVIPs removes addresses ober added that cfg no longer lists.
func (d *Daemon) dropOldVIPs(cfg *config.Config) {
	var keep []netip.Prefix
	for _, p := range d.addedVIPs {
		if slices.ContainsFunc(cfg.VIPs, func(v config.Addr) bool { return v.Addr == p.Addr() }) {
			keep = append(keep, p)
		}
	}
	d.removeVIPs(cfg.Node.VIPInterface, keep)
}

// removeVIPs removes every address ober added except keep.
func (d *Daemon) removeVIPs(iface string, keep []netip.Prefix) {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return
	}
	var left []netip.Prefix
	for _, p := range d.addedVIPs {
		if slices.Contains(keep, p) {
			left = append(left, p)
			continue
		}
		if err := delHostAddr(link, p); err != nil {
			d.log.Warn("remove vip", "vip", p, "err", err)
			continue
		}
		d.log.Info("vip removed", "vip", p, "iface", iface)
	}
	d.addedVIPs = left
}

// addHostAddr puts p on link (IPv6 without duplicate address detection:
// a VIP is expected on several nodes); one already there is no error.
func addHostAddr(link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Bits())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// delHostAddr takes p off link; one already gone is no error.
func delHostAddr(link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Bits())}}
	if err := netlink.AddrDel(link, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return err
	}
	return nil
}

func prefixOf(a netlink.Addr) netip.Prefix {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones)
}
