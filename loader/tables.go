package loader

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Proto is an IP protocol a service can be served on.
type Proto uint8

// The protocols services can use.
const (
	ProtoTCP Proto = 6
	ProtoUDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// MarshalText writes "tcp" or "udp".
func (p Proto) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads "tcp" or "udp".
func (p *Proto) UnmarshalText(b []byte) error {
	switch string(b) {
	case "tcp":
		*p = ProtoTCP
	case "udp":
		*p = ProtoUDP
	default:
		return fmt.Errorf("invalid protocol %q (want tcp or udp)", b)
	}
	return nil
}

// VIP is an address the XDP program polices.
type VIP struct {
	Addr netip.Addr `json:"addr"`
	// Host marks one of the node's own addresses: only its listed services
	// are policed (the routers' BGP session, say) and all else passes.
	// On a plain VIP, a port without a service is dropped.
	Host bool `json:"host,omitempty"`
}

// Service is one (VIP, protocol, port) the node serves.
type Service struct {
	VIP   netip.Addr `json:"vip"`
	Proto Proto      `json:"proto"`
	Port  uint16     `json:"port"`
	// Listener selects the row of instance sockets that accept the
	// service's connections; services may share one.
	Listener uint32 `json:"listener"`
	// Dispatch hands flows to instance sockets by Maglev (and, with
	// steering on, to the instance's CPU). Without it the kernel's own
	// socket lookup decides.
	Dispatch bool `json:"dispatch"`
	// Enforce admits only sources in Whitelist.
	Enforce   bool        `json:"enforce_whitelist"`
	Whitelist WhitelistID `json:"whitelist"`
	// Access, when not 0, admits only the sources its access list allows
	// (SetAccessList); a list that is not set admits nobody. With
	// Enforce, a source must pass both.
	Access AccessID `json:"access,omitempty"`
	// Reject answers refused TCP with a RST instead of silence.
	Reject bool `json:"reject"`
}

func (s Service) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(s.VIP, s.Port), s.Proto)
}

func (s Service) key() svcKey { return makeSvcKey(s.VIP, uint8(s.Proto), s.Port) }

func (s Service) val() svcVal {
	v := svcVal{Listener: s.Listener, Whitelist: uint8(s.Whitelist), Access: uint32(s.Access)}
	if s.Enforce {
		v.Flags |= svcWhitelist
	}
	if s.Reject {
		v.Flags |= svcReject
	}
	if s.Dispatch {
		v.Flags |= svcDispatch
	}
	return v
}

// ValidateServices checks a VIP and service set the way SetServices does,
// with errors naming the entry and the value.
func ValidateServices(vips []VIP, svcs []Service) error {
	seen := make(map[netip.Addr]int, len(vips))
	for i, v := range vips {
		switch {
		case !v.Addr.IsValid():
			return fmt.Errorf("vips[%d]: address is missing", i)
		case v.Addr.Zone() != "":
			return fmt.Errorf("vips[%d]: address %s must not have a zone", i, v.Addr)
		case v.Addr.Is4In6():
			return fmt.Errorf("vips[%d]: address %s is IPv4-mapped; write it as %s", i, v.Addr, v.Addr.Unmap())
		case v.Addr.IsUnspecified() || v.Addr.IsMulticast():
			return fmt.Errorf("vips[%d]: address %s cannot be a VIP", i, v.Addr)
		}
		if j, dup := seen[v.Addr]; dup {
			return fmt.Errorf("vips[%d]: address %s repeats vips[%d]", i, v.Addr, j)
		}
		seen[v.Addr] = i
	}
	keys := make(map[svcKey]int, len(svcs))
	if len(vips)+len(svcs) > MaxServiceEntries {
		return fmt.Errorf("services: %d VIPs and services exceed the table size %d", len(vips)+len(svcs), MaxServiceEntries)
	}
	for i, s := range svcs {
		switch {
		case !s.VIP.IsValid():
			return fmt.Errorf("services[%d]: vip is missing", i)
		case s.Proto != ProtoTCP && s.Proto != ProtoUDP:
			return fmt.Errorf("services[%d] %s: protocol %d is neither tcp nor udp", i, s.VIP, s.Proto)
		case s.Port == 0:
			return fmt.Errorf("services[%d] %s: port 0 is not a port", i, s.VIP)
		case s.Listener >= MaxListeners:
			return fmt.Errorf("services[%d] %s: listener %d out of range (max %d)", i, s, s.Listener, MaxListeners-1)
		case s.Whitelist >= MaxWhitelists:
			return fmt.Errorf("services[%d] %s: whitelist %d out of range (max %d)", i, s, s.Whitelist, MaxWhitelists-1)
		case s.Access >= MaxAccessLists:
			return fmt.Errorf("services[%d] %s: access list %d out of range (max %d)", i, s, s.Access, MaxAccessLists-1)
		case s.Reject && !s.Enforce && s.Access == 0:
			return fmt.Errorf("services[%d] %s: reject needs an enforced whitelist or an access list", i, s)
		}
		if _, ok := seen[s.VIP]; !ok {
			return fmt.Errorf("services[%d] %s: vip %s is not in the VIP list", i, s, s.VIP)
		}
		if j, dup := keys[s.key()]; dup {
			return fmt.Errorf("services[%d] %s: repeats services[%d]", i, s, j)
		}
		keys[s.key()] = i
	}
	return nil
}

// SetServices replaces the VIP and service tables in one step: a new
// table is filled off to the side and swapped in, so every packet sees
// either the old set or the new one.
func (d *Dataplane) SetServices(vips []VIP, svcs []Service) error {
	if err := ValidateServices(vips, svcs); err != nil {
		return fmt.Errorf("set services: %w", err)
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("set services: %w", err)
	}
	defer unlock()

	keys := make([]svcKey, 0, len(vips)+len(svcs))
	vals := make([]svcVal, 0, len(vips)+len(svcs))
	for _, v := range vips {
		val := svcVal{}
		if v.Host {
			val.Flags = vipHost
		}
		keys = append(keys, makeSvcKey(v.Addr, 0, 0))
		vals = append(vals, val)
	}
	for _, s := range svcs {
		keys = append(keys, s.key())
		vals = append(vals, s.val())
	}
	if err := d.swapServices(keys, vals); err != nil {
		return fmt.Errorf("set services: %w", err)
	}
	return nil
}

// swapServices fills a new VIP and service table with keys and vals and
// swaps it in. Called with the lock held.
func (d *Dataplane) swapServices(keys []svcKey, vals []svcVal) error {
	inner, err := d.newInner("ober_service_set", "ober_svc_table", 0)
	if err != nil {
		return err
	}
	defer inner.Close()
	if len(keys) > 0 {
		// One batch: a table of port ranges has tens of thousands of rows.
		// (Batches take no BPF_NOEXIST; the keys were checked unique.)
		n, err := inner.BatchUpdate(keys, vals, nil)
		if err != nil {
			return fmt.Errorf("fill table (%d of %d rows written): %w", n, len(keys), err)
		}
	}
	// The VIP filter says "surely not a VIP" only where neither table has
	// one while the swap is under way, and where the new one has none
	// after it.
	cur, err := d.readAbsent()
	if err != nil {
		return err
	}
	next := absentFor(keys)
	if err := d.writeAbsent(cur.and(next)); err != nil {
		return err
	}
	if err := d.maps.OberServiceSet.Update(uint32(0), inner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("swap table: %w", err)
	}
	return d.writeAbsent(next)
}

// Services reads back the live VIP and service tables, sorted.
func (d *Dataplane) Services() ([]VIP, []Service, error) {
	inner, err := d.liveInner(d.maps.OberServiceSet, 0)
	if err != nil || inner == nil {
		return nil, nil, wrapErr("read services", err)
	}
	defer inner.Close()
	var (
		k    svcKey
		v    svcVal
		vips []VIP
		svcs []Service
	)
	it := inner.Iterate()
	for it.Next(&k, &v) {
		if k.Proto == 0 {
			vips = append(vips, VIP{Addr: k.addr(), Host: v.Flags&vipHost != 0})
			continue
		}
		svcs = append(svcs, Service{
			VIP: k.addr(), Proto: Proto(k.Proto), Port: k.port(), Listener: v.Listener,
			Dispatch: v.Flags&svcDispatch != 0, Enforce: v.Flags&svcWhitelist != 0,
			Whitelist: WhitelistID(v.Whitelist), Access: AccessID(v.Access), Reject: v.Flags&svcReject != 0,
		})
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("read services: %w", err)
	}
	slices.SortFunc(vips, func(a, b VIP) int { return a.Addr.Compare(b.Addr) })
	slices.SortFunc(svcs, func(a, b Service) int {
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return int(a.Proto) - int(b.Proto)
	})
	return vips, svcs, nil
}

// WhitelistInfo describes the live contents of one whitelist.
type WhitelistInfo struct {
	// Generation counts the swaps since the dataplane was created.
	Generation uint64 `json:"generation"`
	Entries    int    `json:"entries"`
}

// SetWhitelist replaces whitelist id with prefixes atomically: a new LPM
// trie is filled and then swapped into the whitelist's slot.
func (d *Dataplane) SetWhitelist(id WhitelistID, prefixes []netip.Prefix) (WhitelistInfo, error) {
	return d.UpdateWhitelist(id, func([]netip.Prefix, WhitelistInfo) ([]netip.Prefix, error) { return prefixes, nil })
}

// UpdateWhitelist replaces whitelist id with what next returns, given the
// live prefixes and their generation. Other writers, in this process or another, wait until
// the swap is done, so next sees the list it replaces. When next returns
// the live list unchanged (or an error), nothing is swapped and the
// generation stays.
func (d *Dataplane) UpdateWhitelist(id WhitelistID, next func(live []netip.Prefix, info WhitelistInfo) ([]netip.Prefix, error)) (WhitelistInfo, error) {
	if id >= MaxWhitelists {
		return WhitelistInfo{}, fmt.Errorf("set whitelist: id %d out of range (max %d)", id, MaxWhitelists-1)
	}
	unlock, err := d.lock()
	if err != nil {
		return WhitelistInfo{}, fmt.Errorf("set whitelist %s: %w", id, err)
	}
	defer unlock()

	live, info, err := d.Whitelist(id)
	if err != nil {
		return WhitelistInfo{}, err
	}
	prefixes, err := next(live, info)
	if err != nil {
		return info, err
	}
	if info.Generation > 0 && slices.Equal(live, normalizeForCompare(prefixes)) {
		return info, nil
	}
	if err := checkPrefixes(id, prefixes); err != nil {
		return info, err
	}

	inner, err := d.newInner("ober_whitelists", "ober_wl_"+id.String(), 0)
	if err != nil {
		return info, fmt.Errorf("set whitelist %s: %w", id, err)
	}
	defer inner.Close()
	n := 0
	for _, p := range prefixes {
		if err := inner.Update(makeLPMKey(p), uint32(1), ebpf.UpdateNoExist); err != nil {
			if errors.Is(err, ebpf.ErrKeyExist) {
				continue // 10.0.0.1/32 given twice, say
			}
			return info, fmt.Errorf("set whitelist %s: %s: %w", id, p, err)
		}
		n++
	}
	key := uint32(id)
	if err := d.maps.OberWhitelists.Update(key, inner, ebpf.UpdateAny); err != nil {
		return info, fmt.Errorf("set whitelist %s: swap: %w", id, err)
	}
	meta := oberOberWlMeta{Generation: info.Generation + 1, Entries: uint32(n)}
	if err := d.maps.OberWlMeta.Update(key, meta, ebpf.UpdateAny); err != nil {
		return info, fmt.Errorf("set whitelist %s: write generation: %w", id, err)
	}
	return WhitelistInfo{Generation: meta.Generation, Entries: n}, nil
}

func checkPrefixes(id WhitelistID, prefixes []netip.Prefix) error {
	if len(prefixes) > MaxWhitelistEntries {
		return fmt.Errorf("set whitelist %s: %d entries exceed the limit %d", id, len(prefixes), MaxWhitelistEntries)
	}
	for i, p := range prefixes {
		switch {
		case !p.IsValid() || p.Addr().Zone() != "":
			return fmt.Errorf("set whitelist %s: entry %d (%s) is not a valid prefix", id, i, p)
		case p.Addr().Is4In6():
			// The XDP program drops IPv6 packets from IPv4-mapped sources.
			return fmt.Errorf("set whitelist %s: entry %d (%s) is IPv4-mapped; give the IPv4 prefix", id, i, p)
		}
	}
	return nil
}

// normalizeForCompare puts prefixes in the form and order Whitelist
// returns them: masked, sorted, without repeats.
func normalizeForCompare(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

// WhitelistInfo reads a whitelist's generation and size without reading
// its entries.
func (d *Dataplane) WhitelistInfo(id WhitelistID) (WhitelistInfo, error) {
	if id >= MaxWhitelists {
		return WhitelistInfo{}, fmt.Errorf("read whitelist: id %d out of range", id)
	}
	var meta oberOberWlMeta
	if err := d.maps.OberWlMeta.Lookup(uint32(id), &meta); err != nil {
		return WhitelistInfo{}, fmt.Errorf("read whitelist %s: %w", id, err)
	}
	return WhitelistInfo{Generation: meta.Generation, Entries: int(meta.Entries)}, nil
}

// Whitelist reads back the live prefixes of whitelist id, sorted. A list
// that was never set is empty: its services admit nobody.
func (d *Dataplane) Whitelist(id WhitelistID) ([]netip.Prefix, WhitelistInfo, error) {
	if id >= MaxWhitelists {
		return nil, WhitelistInfo{}, fmt.Errorf("read whitelist: id %d out of range", id)
	}
	var meta oberOberWlMeta
	if err := d.maps.OberWlMeta.Lookup(uint32(id), &meta); err != nil {
		return nil, WhitelistInfo{}, fmt.Errorf("read whitelist %s: %w", id, err)
	}
	info := WhitelistInfo{Generation: meta.Generation}
	inner, err := d.liveInner(d.maps.OberWhitelists, uint32(id))
	if err != nil || inner == nil {
		return nil, info, wrapErr("read whitelist "+id.String(), err)
	}
	defer inner.Close()
	var (
		k   lpmKey
		v   uint32
		out []netip.Prefix
	)
	it := inner.Iterate()
	for it.Next(&k, &v) {
		out = append(out, k.prefix())
	}
	if err := it.Err(); err != nil {
		return nil, info, fmt.Errorf("read whitelist %s: %w", id, err)
	}
	slices.SortFunc(out, comparePrefix)
	info.Entries = len(out)
	return out, info, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// SetMaglev swaps in a new Maglev table: len(slots) is its size M, each
// slot an instance index or NoInstance. Size, seed and slots change
// together in one step.
func (d *Dataplane) SetMaglev(seed uint32, slots []uint32) error {
	if len(slots) == 0 || len(slots) > MaglevMaxSize {
		return fmt.Errorf("set maglev: size %d out of range (1..%d)", len(slots), MaglevMaxSize)
	}
	for i, s := range slots {
		if s >= MaxInstances && s != NoInstance {
			return fmt.Errorf("set maglev: slot %d: instance %d out of range (max %d)", i, s, MaxInstances-1)
		}
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("set maglev: %w", err)
	}
	defer unlock()

	inner, err := d.newInner("ober_maglev", "ober_maglev", uint32(len(slots)+maglevHeader))
	if err != nil {
		return fmt.Errorf("set maglev: %w", err)
	}
	defer inner.Close()
	keys := make([]uint32, len(slots)+maglevHeader)
	for i := range keys {
		keys[i] = uint32(i)
	}
	vals := make([]uint32, 0, len(keys))
	vals = append(vals, uint32(len(slots)), seed)
	vals = append(vals, slots...)
	if _, err := inner.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("set maglev: fill: %w", err)
	}
	if err := d.maps.OberMaglev.Update(uint32(0), inner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set maglev: swap: %w", err)
	}
	return nil
}

// Maglev reads back the live table; slots is nil when none was set.
func (d *Dataplane) Maglev() (seed uint32, slots []uint32, err error) {
	inner, err := d.liveInner(d.maps.OberMaglev, 0)
	if err != nil || inner == nil {
		return 0, nil, wrapErr("read maglev", err)
	}
	defer inner.Close()
	n := inner.MaxEntries()
	vals := make([]uint32, n)
	keys := make([]uint32, n)
	var cursor ebpf.MapBatchCursor
	got := 0
	for got < int(n) {
		c, err := inner.BatchLookup(&cursor, keys[got:], vals[got:], nil)
		got += c
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return 0, nil, fmt.Errorf("read maglev: %w", err)
		}
	}
	if got < maglevHeader || vals[0] == 0 || int(vals[0])+maglevHeader > got {
		return 0, nil, fmt.Errorf("read maglev: table header is inconsistent (size %d, %d slots)", vals[0], got)
	}
	return vals[1], vals[maglevHeader : maglevHeader+int(vals[0])], nil
}

// Instance places one HAProxy instance on a CPU.
type Instance struct {
	Index uint32 `json:"index"`
	CPU   int    `json:"cpu"`
}

// cpumapQueue is the per-CPU queue length of the cpumap: enough for a
// burst at line rate without making a slow CPU hoard packets.
const cpumapQueue = 2048

// SetInstances records which CPU each instance runs on and keeps the
// cpumap holding exactly the CPUs in use. Instances not listed lose their
// CPU, so the XDP program stops steering to them.
func (d *Dataplane) SetInstances(insts []Instance) error {
	ncpu := int(d.maps.OberCpumap.MaxEntries())
	want := make(map[uint32]int, len(insts))
	cpus := make(map[int]bool)
	for i, in := range insts {
		switch {
		case in.Index >= MaxInstances:
			return fmt.Errorf("set instances: [%d]: index %d out of range (max %d)", i, in.Index, MaxInstances-1)
		case in.CPU < 0 || in.CPU >= ncpu:
			return fmt.Errorf("set instances: [%d]: cpu %d out of range (this machine has %d)", i, in.CPU, ncpu)
		}
		if _, dup := want[in.Index]; dup {
			return fmt.Errorf("set instances: [%d]: instance %d listed twice", i, in.Index)
		}
		want[in.Index] = in.CPU
		cpus[in.CPU] = true
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("set instances: %w", err)
	}
	defer unlock()

	// CPUs first, so no instance ever points at a CPU without a queue.
	for cpu := range cpus {
		val := oberBpfCpumapVal{Qsize: cpumapQueue}
		if err := d.maps.OberCpumap.Update(uint32(cpu), val, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("set instances: cpumap cpu %d: %w", cpu, err)
		}
	}
	for idx := uint32(0); idx < MaxInstances; idx++ {
		v := oberOberInstance{}
		if cpu, ok := want[idx]; ok {
			v = oberOberInstance{Cpu: uint32(cpu), Flags: instHasCPU}
		}
		if err := d.maps.OberInstances.Update(idx, v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("set instances: instance %d: %w", idx, err)
		}
	}
	for cpu := 0; cpu < ncpu; cpu++ {
		if cpus[cpu] {
			continue
		}
		err := d.maps.OberCpumap.Delete(uint32(cpu))
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set instances: clear cpumap cpu %d: %w", cpu, err)
		}
	}
	return nil
}

// Instances reads back the instance→CPU placement.
func (d *Dataplane) Instances() ([]Instance, error) {
	var out []Instance
	for idx := uint32(0); idx < MaxInstances; idx++ {
		var v oberOberInstance
		if err := d.maps.OberInstances.Lookup(idx, &v); err != nil {
			return nil, fmt.Errorf("read instances: %w", err)
		}
		if v.Flags&instHasCPU != 0 {
			out = append(out, Instance{Index: idx, CPU: int(v.Cpu)})
		}
	}
	return out, nil
}

// CPUMap lists the CPUs with a cpumap queue.
func (d *Dataplane) CPUMap() ([]int, error) {
	var out []int
	for cpu := uint32(0); cpu < d.maps.OberCpumap.MaxEntries(); cpu++ {
		var v oberBpfCpumapVal
		err := d.maps.OberCpumap.Lookup(cpu, &v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read cpumap: %w", err)
		}
		out = append(out, int(cpu))
	}
	return out, nil
}

// socketSlot is the map that holds listener's sockets and the key of
// instance inst's, as the sk_lookup program finds them.
func (d *Dataplane) socketSlot(listener, inst uint32) (*ebpf.Map, uint32, error) {
	if listener >= MaxListeners {
		return nil, 0, fmt.Errorf("listener %d out of range (max %d)", listener, MaxListeners-1)
	}
	if inst >= MaxInstances {
		return nil, 0, fmt.Errorf("instance %d out of range (max %d)", inst, MaxInstances-1)
	}
	key := listener*MaxInstances + inst
	if listener < lowListeners {
		return d.maps.OberSockets, key, nil
	}
	return d.maps.OberSocketsHi, key, nil
}

// SetSocket registers instance inst's socket for listener. The socket must
// be a listening TCP socket (or an unconnected UDP one) without MPTCP;
// the kernel refuses anything else.
func (d *Dataplane) SetSocket(listener, inst uint32, conn syscall.Conn) error {
	m, key, err := d.socketSlot(listener, inst)
	if err != nil {
		return fmt.Errorf("set socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("set socket %d/%d: %w", listener, inst, err)
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("set socket %d/%d: %w", listener, inst, err)
	}
	defer unlock()
	var uerr error
	err = raw.Control(func(fd uintptr) {
		uerr = m.Update(key, uint64(fd), ebpf.UpdateAny)
	})
	if err = errors.Join(err, uerr); err != nil {
		return fmt.Errorf("set socket %d/%d: %w", listener, inst, err)
	}
	return nil
}

// ClearSocket removes instance inst's socket for listener; new flows
// fall back to the next instance with a socket.
func (d *Dataplane) ClearSocket(listener, inst uint32) error {
	m, key, err := d.socketSlot(listener, inst)
	if err != nil {
		return fmt.Errorf("clear socket: %w", err)
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("clear socket %d/%d: %w", listener, inst, err)
	}
	defer unlock()
	// A sockmap answers EINVAL, not ENOENT, for an empty slot; the key was
	// range-checked above, so EINVAL can only mean "already clear". (The
	// sockhash of the higher listeners answers ENOENT.)
	err = m.Delete(key)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("clear socket %d/%d: %w", listener, inst, err)
	}
	return nil
}

// SocketRef is one registered socket.
type SocketRef struct {
	Listener uint32 `json:"listener"`
	Instance uint32 `json:"instance"`
	Cookie   uint64 `json:"cookie"`
}

// Sockets lists the registered sockets, by listener and instance.
func (d *Dataplane) Sockets() ([]SocketRef, error) {
	var out []SocketRef
	var cookie uint64
	// A sockmap's key walk gives every slot, empty or not: look each up.
	for key := uint32(0); key < lowListeners*MaxInstances; key++ {
		err := d.maps.OberSockets.Lookup(key, &cookie)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read sockets: %w", err)
		}
		out = append(out, SocketRef{Listener: key / MaxInstances, Instance: key % MaxInstances, Cookie: cookie})
	}
	// The sockhash has keys only for its sockets. A socket closed during
	// the walk leaves the map and restarts the walk from the first key:
	// the seen set drops what the restart repeats.
	var (
		key  uint32
		seen = map[uint32]bool{}
		high []SocketRef
	)
	it := d.maps.OberSocketsHi.Iterate()
	for it.Next(&key, &cookie) {
		if seen[key] {
			continue
		}
		seen[key] = true
		high = append(high, SocketRef{Listener: key / MaxInstances, Instance: key % MaxInstances, Cookie: cookie})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read sockets: %w", err)
	}
	slices.SortFunc(high, func(a, b SocketRef) int {
		return cmp.Or(cmp.Compare(a.Listener, b.Listener), cmp.Compare(a.Instance, b.Instance))
	})
	return append(out, high...), nil
}

// SetSteering switches CPU steering by the XDP program on or off. Off, the
// program still polices but lets the NIC's RSS place flows.
func (d *Dataplane) SetSteering(on bool) error {
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("set steering: %w", err)
	}
	defer unlock()
	if err := d.setConfigFlag(cfgSteer, on); err != nil {
		return fmt.Errorf("set steering: %w", err)
	}
	return nil
}

// setConfigFlag sets or clears one flag of ober_config, keeping the
// others. Called with the lock held.
func (d *Dataplane) setConfigFlag(flag uint32, on bool) error {
	var cfg oberOberConfig
	if err := d.maps.OberConfig.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if on {
		cfg.Flags |= flag
	} else {
		cfg.Flags &^= flag
	}
	if err := d.maps.OberConfig.Update(uint32(0), cfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// Steering reports whether CPU steering is on.
func (d *Dataplane) Steering() (bool, error) {
	flags, err := d.configFlags()
	if err != nil {
		return false, fmt.Errorf("read steering: %w", err)
	}
	return flags&cfgSteer != 0, nil
}

func (d *Dataplane) configFlags() (uint32, error) {
	var cfg oberOberConfig
	if err := d.maps.OberConfig.Lookup(uint32(0), &cfg); err != nil {
		return 0, err
	}
	return cfg.Flags, nil
}

// newInner creates an empty inner map for outer's slots. maxEntries 0
// keeps the template's size.
func (d *Dataplane) newInner(outer, name string, maxEntries uint32) (*ebpf.Map, error) {
	ms := d.spec.Maps[outer].InnerMap.Copy()
	if len(name) > 15 {
		name = name[:15] // BPF_OBJ_NAME_LEN
	}
	ms.Name = sanitizeName(name)
	if maxEntries != 0 {
		ms.MaxEntries = maxEntries
	}
	m, err := ebpf.NewMap(ms)
	if err != nil {
		return nil, fmt.Errorf("create %s table: %w", outer, err)
	}
	return m, nil
}

func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// liveInner opens the inner map in outer's slot; nil when the slot is empty.
func (d *Dataplane) liveInner(outer *ebpf.Map, slot uint32) (*ebpf.Map, error) {
	var inner *ebpf.Map
	err := outer.Lookup(slot, &inner)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return inner, nil
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
