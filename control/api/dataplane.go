package api

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/ober-ingress/ober/loader"
)

// DataplaneStatus is a snapshot of a pinned dataplane, the top level of
// Status; `ober status --json` prints it alone when no daemon answers.
// The JSON shape is an interface for scripts and monitoring:
// fields are only ever added, never renamed or repurposed. Lists are
// never null (an empty list is []); maglev is null when no table was set.
//
//	{
//	  "root": "/sys/fs/bpf/ober",
//	  "attachments": [{"iface": "eth1", "ifindex": 3, "mode": "native", "program_id": 57}],
//	  "sk_lookup_attached": true,
//	  "steering": true,
//	  "vips": [{"addr": "192.0.2.10", "host": false}],
//	  "services": [{"vip": "192.0.2.10", "proto": "tcp", "port": 80,
//	                "listener": 0, "dispatch": true, "enforce_whitelist": true,
//	                "whitelist": "frontend-http", "reject": false}],
//	  "whitelists": [{"name": "frontend-http", "entries": 3, "generation": 5}],
//	  "maglev": {"size": 251, "seed": 24301, "empty_slots": 0,
//	             "slots_per_instance": [{"instance": 0, "slots": 126}]},
//	  "instances": [{"index": 0, "cpu": 0}],
//	  "cpumap": [0, 1],
//	  "sockets": [{"listener": 0, "instance": 0, "cookie": 8193}],
//	  "counters": {
//	    "reasons": [{"reason": "whitelist_drop",
//	                 "packets": {"drop": 3}, "bytes": {"drop": 222}}],
//	    "steered": [{"instance": 0, "packets": 10, "bytes": 900}],
//	    "assigned": [{"instance": 0, "flows": 2, "fallback": 0}],
//	    "unassigned": 0
//	  }
//	}
//
// Field notes:
//   - attachments: the pinned XDP links. ifindex and mode are looked up
//     in the caller's network namespace; ifindex 0 and mode "unknown" mean
//     the interface is not visible there (or is gone). program_id is the
//     kernel's ID of the XDP program on the interface (bpftool prog show
//     id N), 0 when there is none or it cannot be read.
//   - whitelists: only lists that were ever set; a service that enforces
//     a list missing here admits nobody. whitelist in services is the
//     list's name, also when enforce_whitelist is false.
//   - counters.reasons: every reason the XDP program counts, in counter
//     order (see loader.Reasons); packets and bytes map action names
//     (aborted, drop, pass, tx, redirect) to totals, absent meaning 0.
//   - counters.steered and counters.assigned: one row per instance that
//     has a CPU or a non-zero count. unassigned counts connections to
//     dispatched services that found no instance socket.
type DataplaneStatus struct {
	Root             string             `json:"root"`
	Attachments      []AttachmentStatus `json:"attachments"`
	SkLookupAttached bool               `json:"sk_lookup_attached"`
	Steering         bool               `json:"steering"`
	VIPs             []VIPStatus        `json:"vips"`
	Services         []ServiceStatus    `json:"services"`
	Whitelists       []WhitelistStatus  `json:"whitelists"`
	Maglev           *MaglevStatus      `json:"maglev"`
	Instances        []InstanceStatus   `json:"instances"`
	CPUMap           []int              `json:"cpumap"`
	Sockets          []SocketStatus     `json:"sockets"`
	Counters         CountersStatus     `json:"counters"`
}

// AttachmentStatus is one interface running the XDP program.
type AttachmentStatus struct {
	Iface     string `json:"iface"`
	Ifindex   int    `json:"ifindex"`
	Mode      string `json:"mode"`
	ProgramID uint32 `json:"program_id"`
}

// VIPStatus is one policed address.
type VIPStatus struct {
	Addr netip.Addr `json:"addr"`
	Host bool       `json:"host"`
}

// ServiceStatus is one (VIP, protocol, port).
type ServiceStatus struct {
	VIP              netip.Addr `json:"vip"`
	Proto            string     `json:"proto"`
	Port             uint16     `json:"port"`
	Listener         uint32     `json:"listener"`
	Dispatch         bool       `json:"dispatch"`
	EnforceWhitelist bool       `json:"enforce_whitelist"`
	Whitelist        string     `json:"whitelist"`
	Reject           bool       `json:"reject"`
}

// WhitelistStatus is one whitelist that was set.
type WhitelistStatus struct {
	Name       string `json:"name"`
	Entries    int    `json:"entries"`
	Generation uint64 `json:"generation"`
}

// MaglevStatus summarises the Maglev table.
type MaglevStatus struct {
	Size             int           `json:"size"`
	Seed             uint32        `json:"seed"`
	EmptySlots       int           `json:"empty_slots"`
	SlotsPerInstance []SlotsStatus `json:"slots_per_instance"`
}

// SlotsStatus is how many Maglev slots point at one instance.
type SlotsStatus struct {
	Instance uint32 `json:"instance"`
	Slots    int    `json:"slots"`
}

// InstanceStatus places one instance on a CPU.
type InstanceStatus struct {
	Index uint32 `json:"index"`
	CPU   int    `json:"cpu"`
}

// SocketStatus is one registered instance socket.
type SocketStatus struct {
	Listener uint32 `json:"listener"`
	Instance uint32 `json:"instance"`
	Cookie   uint64 `json:"cookie"`
}

// CountersStatus holds the dataplane's counters, summed over CPUs.
type CountersStatus struct {
	Reasons    []ReasonStatus     `json:"reasons"`
	Steered    []SteeredStatus    `json:"steered"`
	Assigned   []AssignmentStatus `json:"assigned"`
	Unassigned uint64             `json:"unassigned"`
}

// ReasonStatus holds one reason's packets and bytes per action name.
type ReasonStatus struct {
	Reason  string            `json:"reason"`
	Packets map[string]uint64 `json:"packets"`
	Bytes   map[string]uint64 `json:"bytes"`
}

// SteeredStatus counts what the XDP program sent to one instance's CPU.
type SteeredStatus struct {
	Instance uint32 `json:"instance"`
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
}

// AssignmentStatus counts the connections sk_lookup gave one instance.
type AssignmentStatus struct {
	Instance uint32 `json:"instance"`
	Flows    uint64 `json:"flows"`
	Fallback uint64 `json:"fallback"`
}

// UnsetWhitelists names the whitelists a service enforces that were
// never set: such a service admits nobody, which deserves a warning.
func (s *DataplaneStatus) UnsetWhitelists() []string {
	set := make(map[string]bool, len(s.Whitelists))
	for _, w := range s.Whitelists {
		set[w.Name] = true
	}
	var out []string
	for _, v := range s.Services {
		if v.EnforceWhitelist && !set[v.Whitelist] && !slices.Contains(out, v.Whitelist) {
			out = append(out, v.Whitelist)
		}
	}
	return out
}

// ReadDataplane reads the whole dataplane pinned for d. Interface details
// come from the calling thread's network namespace.
func ReadDataplane(d *loader.Dataplane) (*DataplaneStatus, error) {
	s := &DataplaneStatus{Root: d.Root()}
	steps := []func(*loader.Dataplane) error{
		s.readAttachments, s.readServices, s.readWhitelists, s.readMaglev,
		s.readInstances, s.readSockets, s.readCounters,
	}
	for _, step := range steps {
		if err := step(d); err != nil {
			return nil, fmt.Errorf("read dataplane %s: %w", d.Root(), err)
		}
	}
	return s, nil
}

func (s *DataplaneStatus) readAttachments(d *loader.Dataplane) error {
	atts, sk, err := d.Attachments()
	if err != nil {
		return err
	}
	s.Attachments = make([]AttachmentStatus, 0, len(atts))
	for _, a := range atts {
		mode := string(a.Mode)
		if mode == "" {
			mode = "unknown"
		}
		s.Attachments = append(s.Attachments, AttachmentStatus{Iface: a.Iface, Ifindex: a.Ifindex, Mode: mode, ProgramID: xdpProgramID(a.Iface)})
	}
	s.SkLookupAttached = sk
	s.Steering, err = d.Steering()
	return err
}

// xdpProgramID is the ID of the XDP program the kernel runs on iface, 0
// when none is visible from this network namespace.
func xdpProgramID(iface string) uint32 {
	l, err := netlink.LinkByName(iface)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		return 0
	}
	return l.Attrs().Xdp.ProgId
}

func (s *DataplaneStatus) readServices(d *loader.Dataplane) error {
	vips, svcs, err := d.Services()
	if err != nil {
		return err
	}
	s.VIPs = make([]VIPStatus, 0, len(vips))
	for _, v := range vips {
		s.VIPs = append(s.VIPs, VIPStatus{Addr: v.Addr, Host: v.Host})
	}
	s.Services = make([]ServiceStatus, 0, len(svcs))
	for _, v := range svcs {
		s.Services = append(s.Services, ServiceStatus{
			VIP: v.VIP, Proto: v.Proto.String(), Port: v.Port, Listener: v.Listener,
			Dispatch: v.Dispatch, EnforceWhitelist: v.Enforce, Whitelist: v.Whitelist.String(),
			Reject: v.Reject,
		})
	}
	return nil
}

func (s *DataplaneStatus) readWhitelists(d *loader.Dataplane) error {
	s.Whitelists = []WhitelistStatus{}
	for id := loader.WhitelistID(0); id < loader.MaxWhitelists; id++ {
		info, err := d.WhitelistInfo(id)
		if err != nil {
			return err
		}
		if info.Generation == 0 {
			continue // never set
		}
		s.Whitelists = append(s.Whitelists, WhitelistStatus{
			Name: id.String(), Entries: info.Entries, Generation: info.Generation,
		})
	}
	return nil
}

func (s *DataplaneStatus) readMaglev(d *loader.Dataplane) error {
	seed, slots, err := d.Maglev()
	if err != nil || slots == nil {
		return err
	}
	m := &MaglevStatus{Size: len(slots), Seed: seed, SlotsPerInstance: []SlotsStatus{}}
	var per [loader.MaxInstances]int
	for _, v := range slots {
		if v >= loader.MaxInstances {
			m.EmptySlots++
			continue
		}
		per[v]++
	}
	for i, n := range per {
		if n > 0 {
			m.SlotsPerInstance = append(m.SlotsPerInstance, SlotsStatus{Instance: uint32(i), Slots: n})
		}
	}
	s.Maglev = m
	return nil
}

func (s *DataplaneStatus) readInstances(d *loader.Dataplane) error {
	insts, err := d.Instances()
	if err != nil {
		return err
	}
	s.Instances = make([]InstanceStatus, 0, len(insts))
	for _, in := range insts {
		s.Instances = append(s.Instances, InstanceStatus{Index: in.Index, CPU: in.CPU})
	}
	cpus, err := d.CPUMap()
	if err != nil {
		return err
	}
	s.CPUMap = append([]int{}, cpus...)
	return nil
}

func (s *DataplaneStatus) readSockets(d *loader.Dataplane) error {
	socks, err := d.Sockets()
	if err != nil {
		return err
	}
	s.Sockets = make([]SocketStatus, 0, len(socks))
	for _, k := range socks {
		s.Sockets = append(s.Sockets, SocketStatus{Listener: k.Listener, Instance: k.Instance, Cookie: k.Cookie})
	}
	return nil
}

func (s *DataplaneStatus) readCounters(d *loader.Dataplane) error {
	c, err := d.Counters()
	if err != nil {
		return err
	}
	out := CountersStatus{Unassigned: c.Unassigned}
	for _, r := range loader.Reasons() {
		rs := ReasonStatus{Reason: r.String(), Packets: map[string]uint64{}, Bytes: map[string]uint64{}}
		for _, v := range c.Verdicts {
			if v.Reason == r {
				rs.Packets[v.Action.String()] += v.Packets
				rs.Bytes[v.Action.String()] += v.Bytes
			}
		}
		out.Reasons = append(out.Reasons, rs)
	}
	hasCPU := make(map[uint32]bool, len(s.Instances))
	for _, in := range s.Instances {
		hasCPU[in.Index] = true
	}
	out.Steered = []SteeredStatus{}
	out.Assigned = []AssignmentStatus{}
	for i := range uint32(loader.MaxInstances) {
		st, as := c.Steered[i], c.Assigned[i]
		if hasCPU[i] || st.Packets != 0 {
			out.Steered = append(out.Steered, SteeredStatus{Instance: i, Packets: st.Packets, Bytes: st.Bytes})
		}
		if hasCPU[i] || as.Flows != 0 {
			out.Assigned = append(out.Assigned, AssignmentStatus{Instance: i, Flows: as.Flows, Fallback: as.Fallback})
		}
	}
	s.Counters = out
	return nil
}
