package vrrp

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is what keepalived is told.
type Config struct {
	Interface      string
	Self           netip.Addr
	Peers          []netip.Addr // the other nodes (unicast peers)
	Instances      []Instance
	AdvertInterval time.Duration // default 100ms; VRRPv3 counts in centiseconds
	PreemptDelay   time.Duration // the owner takes its VIP back this long after it is ready
	Multicast      bool          // false: unicast to Peers (default)
	GARPRepeat     int           // gratuitous ARPs / unsolicited NAs sent on becoming master; 0: 5
	GARPRefresh    time.Duration // 0: none; else repeat periodically while master (whole seconds)
	TrackFile      string        // keepalived track_file; "0" healthy, nonzero fault (weight 0)
	NotifyFIFO     string        // keepalived vrrp_notify_fifo
}

// Defaults and limits of Config.
const (
	DefaultAdvertInterval = 100 * time.Millisecond
	DefaultGARPRepeat     = 5
	// VRRPv3 carries the interval in 12 bits of centiseconds.
	minAdvertInterval = 10 * time.Millisecond
	maxAdvertInterval = 4095 * 10 * time.Millisecond
	maxPreemptDelay   = 1000 * time.Second
	maxGARPRepeat     = 100
)

// trackName is the track_file's name inside keepalived.conf.
const trackName = "ober_health"

// withDefaults fills in the zero values; Render and the supervisor see the
// same effective config.
func (c Config) withDefaults() Config {
	if c.AdvertInterval == 0 {
		c.AdvertInterval = DefaultAdvertInterval
	}
	if c.GARPRepeat == 0 {
		c.GARPRepeat = DefaultGARPRepeat
	}
	return c
}

func (c Config) validate() error {
	if c.Interface == "" {
		return fmt.Errorf("interface: empty")
	}
	if !plainWord(c.Interface) {
		return fmt.Errorf("interface: %q: not an interface name", c.Interface)
	}
	if !c.Self.IsValid() {
		return fmt.Errorf("self: not a valid address")
	}
	self := c.Self.Unmap()
	for i, p := range c.Peers {
		switch {
		case !p.IsValid():
			return fmt.Errorf("peers[%d]: not a valid address", i)
		case p.Unmap() == self:
			return fmt.Errorf("peers[%d]: %s: is self", i, p)
		case p.Unmap().Is4() != self.Is4():
			return fmt.Errorf("peers[%d]: %s: %s, but self %s is %s", i, p, family(p.Unmap()), self, family(self))
		}
	}
	if !c.Multicast && len(c.Peers) == 0 && len(c.Instances) > 0 {
		// keepalived >= 2.2.4 puts a unicast instance without peers into
		// FAULT; older ones silently multicast. Neither is what anyone wants.
		return fmt.Errorf("peers: none: unicast VRRP needs at least one other node (or multicast)")
	}
	if c.AdvertInterval < minAdvertInterval || c.AdvertInterval > maxAdvertInterval || c.AdvertInterval%minAdvertInterval != 0 {
		return fmt.Errorf("advert_interval: %s: must be 10ms-40.95s in 10ms steps (VRRPv3 counts centiseconds)", c.AdvertInterval)
	}
	if c.PreemptDelay < 0 || c.PreemptDelay > maxPreemptDelay {
		return fmt.Errorf("preempt_delay: %s: must be 0s-1000s", c.PreemptDelay)
	}
	if c.GARPRepeat < 1 || c.GARPRepeat > maxGARPRepeat {
		return fmt.Errorf("garp.repeat: %d: must be 1-%d", c.GARPRepeat, maxGARPRepeat)
	}
	if c.GARPRefresh != 0 && c.GARPRefresh < time.Second {
		return fmt.Errorf("garp.refresh: %s: must be 0s or at least 1s (keepalived counts whole seconds)", c.GARPRefresh)
	}
	for _, p := range []struct{ field, path string }{{"track_file", c.TrackFile}, {"notify_fifo", c.NotifyFIFO}} {
		if !filepath.IsAbs(p.path) || !plainWord(p.path) {
			return fmt.Errorf("%s: %q: must be an absolute path without blanks, quotes or braces", p.field, p.path)
		}
	}
	names := map[string]bool{}
	vrids := map[int]string{}
	vips := map[netip.Addr]string{}
	for i, in := range c.Instances {
		switch {
		case !plainWord(in.Name) || in.Name == "":
			return fmt.Errorf("instances[%d]: name %q: not a keepalived instance name", i, in.Name)
		case names[in.Name]:
			return fmt.Errorf("instances[%d]: name %q: used twice", i, in.Name)
		case in.VRID < 1 || in.VRID > 255:
			return fmt.Errorf("instances[%d] (%s): vrid %d: must be 1-255", i, in.Name, in.VRID)
		case vrids[in.VRID] != "":
			return fmt.Errorf("instances[%d] (%s): vrid %d: already used by %s", i, in.Name, in.VRID, vrids[in.VRID])
		case in.Priority < 1 || in.Priority > 254:
			return fmt.Errorf("instances[%d] (%s): priority %d: must be 1-254", i, in.Name, in.Priority)
		case !in.VIP.IsValid():
			return fmt.Errorf("instances[%d] (%s): vip: not a valid address", i, in.Name)
		case in.VIP.Unmap().Is4() != self.Is4():
			return fmt.Errorf("instances[%d] (%s): vip %s: %s, but self %s is %s", i, in.Name, in.VIP, family(in.VIP.Unmap()), self, family(self))
		case vips[in.VIP.Unmap()] != "":
			return fmt.Errorf("instances[%d] (%s): vip %s: already used by %s", i, in.Name, in.VIP, vips[in.VIP.Unmap()])
		}
		names[in.Name] = true
		vrids[in.VRID] = in.Name
		vips[in.VIP.Unmap()] = in.Name
	}
	return nil
}

// plainWord reports whether s can stand unquoted in keepalived.conf: its
// parser splits on blanks and treats quotes, braces, '#' and '!' specially.
func plainWord(s string) bool {
	return !strings.ContainsAny(s, " \t\r\n\"'{}#!\\")
}

// Render returns keepalived.conf for c. The same Config always gives the
// same bytes, so a reload can be skipped when nothing changed.
func Render(c Config) ([]byte, error) {
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("vrrp config: %w", err)
	}
	self := c.Self.Unmap()
	var b bytes.Buffer
	w := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("    ", indent))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	w(0, "# Written by ober; rewritten on every start and reload.")
	w(0, "# VRRPv3 has no authentication: keep the VRRP segment to the nodes.")
	if !c.Multicast {
		w(0, "# Adverts go unicast to the other nodes; others' are dropped (vrrp_check_unicast_src).")
	}
	w(0, "global_defs {")
	w(1, "router_id ober_%s", strings.NewReplacer(".", "_", ":", "_").Replace(self.String()))
	w(1, "vrrp_version 3")
	// No scripts run (health comes through the track file, states through
	// the FIFO); naming root and enabling script security keeps 2.2.7 from
	// warning about the missing keepalived_script user at every start.
	w(1, "script_user root")
	w(1, "enable_script_security")
	w(1, "vrrp_notify_fifo %s", c.NotifyFIFO)
	// Without it a reload leaves the FIFO silent and ober's states stale.
	w(1, "fifo_write_vrrp_states_on_reload")
	w(1, "vrrp_garp_master_repeat %d", c.GARPRepeat)
	if c.GARPRefresh > 0 {
		w(1, "vrrp_garp_master_refresh %d", int64((c.GARPRefresh+time.Second-1)/time.Second))
	}
	// After a split brain heals the loser answers the winner once more, so
	// the winner repeats its GARPs and the switch ends up on the winner.
	w(1, "vrrp_higher_prio_send_advert true")
	w(1, "vrrp_garp_lower_prio_repeat %d", c.GARPRepeat)
	if !c.Multicast {
		w(1, "vrrp_check_unicast_src")
	}
	// HAProxy may keep every CPU busy: keepalived must still send its
	// adverts in time or the backups take over from a healthy master.
	w(1, "vrrp_priority -20")
	w(1, "max_auto_priority")
	w(1, "min_auto_priority_delay %d", int64(c.AdvertInterval/time.Microsecond/2))
	w(1, "vrrp_no_swap")
	w(0, "}")
	w(0, "")
	// weight 0: any nonzero value in the file is FAULT, whatever the
	// priority; a FAULT master sends priority 0 so a backup takes over after
	// its skew time instead of three advert intervals.
	w(0, "track_file %s {", trackName)
	w(1, "file %q", c.TrackFile)
	w(1, "weight 0")
	w(0, "}")
	// Each VIP's priority file moves this node's priority for it: -253
	// holds a node not yet ready to take the VIP at priority 1, +253 makes
	// the target of a move the highest at 254 (keepalived limits the sum
	// to 1-254).
	for _, in := range c.Instances {
		w(0, "track_file %s {", priorityTrack(in.VRID))
		w(1, "file %q", PriorityFile(c.TrackFile, in.VRID))
		w(1, "weight 1")
		w(0, "}")
	}
	for _, in := range c.Instances {
		vip := in.VIP.Unmap()
		w(0, "")
		w(0, "# VIP %s: owner %s, takeover order %s", vip, in.Owner, joinAddrs(in.Order))
		w(0, "vrrp_instance %s {", in.Name)
		// Never MASTER: preempt_delay only works from BACKUP, and a
		// restarted node must not grab a VIP before hearing the others.
		w(1, "state BACKUP")
		w(1, "interface %s", c.Interface)
		w(1, "virtual_router_id %d", in.VRID)
		w(1, "priority %d", in.Priority)
		w(1, "advert_int %s", decimalSeconds(c.AdvertInterval))
		if c.PreemptDelay > 0 {
			w(1, "preempt_delay %s", decimalSeconds(c.PreemptDelay))
		}
		if c.Multicast {
			// An IPv6 VRRPv3 advert must come from the link-local address,
			// which keepalived picks itself.
			if self.Is4() {
				w(1, "mcast_src_ip %s", self)
			}
		} else {
			w(1, "unicast_src_ip %s", self)
			w(1, "unicast_peer {")
			for _, p := range c.Peers {
				w(2, "%s", p.Unmap())
			}
			w(1, "}")
		}
		w(1, "track_file {")
		w(2, "%s weight 0", trackName)
		w(2, "%s weight 1", priorityTrack(in.VRID))
		w(1, "}")
		w(1, "virtual_ipaddress {")
		w(2, "%s/%d dev %s", vip, vip.BitLen(), c.Interface)
		w(1, "}")
		w(0, "}")
	}
	return b.Bytes(), nil
}

func priorityTrack(vrid int) string { return fmt.Sprintf("ober_prio_%d", vrid) }

// PriorityFile is the priority file of VRID beside the health track file.
func PriorityFile(trackFile string, vrid int) string {
	return filepath.Join(filepath.Dir(trackFile), fmt.Sprintf("priority_%d", vrid))
}

// decimalSeconds writes d as keepalived's decimal seconds, to the
// millisecond ("0.1", "1.5", "5").
func decimalSeconds(d time.Duration) string {
	ms := d.Round(time.Millisecond).Milliseconds()
	s := strconv.FormatInt(ms/1000, 10)
	if frac := ms % 1000; frac != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%03d", frac), "0")
	}
	return s
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, " ")
}
