// Package nftlb forwards ober's kernel L4 services (modes udp and nat)
// with nftables: DNAT to a backend chosen in the kernel, and in fullnat
// also SNAT to the node's address, through github.com/google/nftables.
//
// ober owns one table, inet ober, and nothing else: Apply rebuilds its
// contents from a Ruleset in one nftables transaction, which the kernel
// commits atomically: every rule is flushed and written again, with maps
// named after their contents (a changed map is a new one). Chains, maps
// and objects no longer used are deleted in a second transaction. The
// table and its two base chains stay, because deleting a nat base chain
// unregisters its hook, and a new flow arriving in that moment would get
// conntrack's null binding, no translation for its whole life (seen:
// one query in 10,000 lost across 50 rebuilds that deleted the table). A
// packet meets either the old rules or the new ones. Connections already
// set up keep their translation in conntrack; deleting the entries of a
// backend that leaves is the caller's part (control/lib/ctclean). A
// backend's counter object stays while the backend does, so its counts
// go on across changes.
//
// A service's rules, per address family:
//
//	prerouting (nat, dstnat):  daddr VIP, l4proto, dport  -> jump svc
//	svc:    [ct timeout set]  key -> vmap { slot: jump backend }
//	backend: counter, [mark for fullnat], dnat to address[:port]
//	postrouting (nat, srcnat): fullnat mark -> masquerade
//
// The key is numgen (random, roundrobin, weighted) or a Jenkins hash of
// packet fields with a fixed seed (source, consistent), so that every
// node given the same Ruleset picks the same backend for the same flow.
package nftlb

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is ober's table, in family inet.
const TableName = "ober"

// ownerCounter is a counter object that marks the table as ober's: a
// table of that name without it belongs to someone else and is left
// alone.
const ownerCounter = "ober_owner"

// HashSeed is the seed of every hash: the same on every node, so that a
// flow moved by an ECMP change to another node keeps its backend.
const HashSeed = 0x6f626572

// FullNATMark is the conntrack mark bit that tells postrouting to
// masquerade a fullnat service's connections. Only this bit is set; the
// rest of the mark is kept.
const FullNATMark = 1 << 22

// Balance is how a service picks a backend for a new flow.
type Balance string

// Balance methods.
const (
	// Random picks at random, in proportion to the weights.
	Random Balance = "random"
	// Weighted is Random: the weights decide the proportions.
	Weighted Balance = "weighted"
	// RoundRobin takes the backends in turn, weights aside.
	RoundRobin Balance = "roundrobin"
	// Source hashes the client's address (and port, with HashPorts),
	// in proportion to the weights.
	Source Balance = "source"
	// Consistent hashes the flow (addresses and ports) onto a table
	// built from the backends' names and weights alone (rendezvous
	// hashing): the same answer on every node, and only the flows of a
	// backend that goes move (and only flows to one that comes).
	Consistent Balance = "consistent"
)

// Forward says what the backend sees as the source.
type Forward string

// Forwarding choices.
const (
	// FullNAT translates the source to the node's address too: the
	// backends need no route back through the node.
	FullNAT Forward = "fullnat"
	// DNAT keeps the client's address: the backends must route their
	// answers back through the node.
	DNAT Forward = "dnat"
)

// Backend is one backend in rotation.
type Backend struct {
	// Name is unique in its service; it names the backend's counter.
	Name string
	// Addr is where flows go; port 0 keeps the client's destination
	// port (a service on a port range).
	Addr netip.AddrPort
	// Weight is 1-256.
	Weight int
}

// Service is one kernel-forwarded service.
type Service struct {
	// Name is unique in the Ruleset: letters, digits, "-", "_", ".".
	Name string
	// Proto is unix.IPPROTO_UDP or unix.IPPROTO_TCP.
	Proto uint8
	VIPs  []netip.Addr
	// Port, up to LastPort when that is set (a range).
	Port, LastPort uint16
	Balance        Balance
	// HashPorts makes Source hash the client's port as well.
	HashPorts bool
	Forward   Forward
	// UDPTimeout is how long a UDP flow is kept after its last datagram
	// (a query and its answer, or datagrams one way), UDPStreamTimeout
	// one that has gone both ways for more than a couple of seconds
	// (conntrack's timeouts; GoBetween's UDP session options). 0 keeps
	// the kernel's: 30 s and 120 s.
	UDPTimeout, UDPStreamTimeout time.Duration
	// Backends in rotation, in a stable order (Consistent depends on
	// it); those of each VIP's family serve that VIP.
	Backends []Backend
}

// Ruleset is every kernel-forwarded service of the node.
type Ruleset struct {
	Services []Service
}

// Counter is what a backend's rule has forwarded: new flows, as the nat
// chains see only a flow's first packet.
type Counter struct {
	Packets, Bytes uint64
}

// Key names a backend's counter.
type Key struct{ Service, Backend string }

// ErrNotOurs is returned when a table inet ober exists that ober did not
// make.
var ErrNotOurs = errors.New("nftables table inet " + TableName + " exists and was not made by ober (it has no " + ownerCounter + " counter): rename or delete it, ober never touches a table it does not own")

func validName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Validate checks r; the error names the service, the field and the
// value.
func (r Ruleset) Validate() error {
	names := map[string]bool{}
	type bind struct {
		vip   netip.Addr
		proto uint8
		port  uint16
	}
	bound := map[bind]string{}
	for i, s := range r.Services {
		f := fmt.Sprintf("services[%d]", i)
		if !validName(s.Name) {
			return fmt.Errorf("%s.name: %q: letters, digits, '-', '_', '.', at most 40", f, s.Name)
		}
		f = "services[" + s.Name + "]"
		if names[s.Name] {
			return fmt.Errorf("%s: the name is used twice", f)
		}
		names[s.Name] = true
		if s.Proto != unix.IPPROTO_UDP && s.Proto != unix.IPPROTO_TCP {
			return fmt.Errorf("%s.protocol: %d: want tcp or udp", f, s.Proto)
		}
		if len(s.VIPs) == 0 {
			return fmt.Errorf("%s.vips: none", f)
		}
		if s.Port == 0 || s.LastPort != 0 && s.LastPort < s.Port {
			return fmt.Errorf("%s.port: %d-%d: not a port or a range", f, s.Port, s.LastPort)
		}
		switch s.Balance {
		case Random, Weighted, RoundRobin, Source, Consistent:
		default:
			return fmt.Errorf("%s.balance: %q: want random, weighted, roundrobin, source or consistent", f, s.Balance)
		}
		switch s.Forward {
		case FullNAT, DNAT:
		default:
			return fmt.Errorf("%s.forward: %q: want fullnat or dnat", f, s.Forward)
		}
		if s.Proto != unix.IPPROTO_UDP && (s.UDPTimeout != 0 || s.UDPStreamTimeout != 0) {
			return fmt.Errorf("%s.timeouts: udp timeouts on a tcp service", f)
		}
		for _, d := range []time.Duration{s.UDPTimeout, s.UDPStreamTimeout} {
			if d < 0 || d > 0 && d < time.Second || d > 24*time.Hour {
				return fmt.Errorf("%s.timeouts: %s: want 1s-24h", f, d)
			}
		}
		bnames := map[string]bool{}
		for j, b := range s.Backends {
			bf := fmt.Sprintf("%s.backends[%d]", f, j)
			if !validName(b.Name) || bnames[b.Name] {
				return fmt.Errorf("%s.name: %q: empty, not usable or used twice", bf, b.Name)
			}
			bnames[b.Name] = true
			if !b.Addr.Addr().IsValid() || b.Addr.Addr().Is4In6() {
				return fmt.Errorf("%s.address: %s: not an address", bf, b.Addr)
			}
			if b.Weight < 1 || b.Weight > 256 {
				return fmt.Errorf("%s.weight: %d: want 1-256 (leave a backend out of rotation instead of 0)", bf, b.Weight)
			}
		}
		for _, v := range s.VIPs {
			if !v.IsValid() || v.Is4In6() {
				return fmt.Errorf("%s.vips: %s: not an address", f, v)
			}
			last := max(s.Port, s.LastPort)
			for p := uint32(s.Port); p <= uint32(last); p++ {
				k := bind{v, s.Proto, uint16(p)}
				if o, ok := bound[k]; ok {
					return fmt.Errorf("%s.port: %d on %s: already used by services[%s]", f, p, v, o)
				}
				bound[k] = s.Name
			}
		}
	}
	return nil
}

// family is one address family's part of a service.
type family struct {
	v6       bool
	vips     []netip.Addr
	backends []Backend
}

func (s *Service) families() []family {
	var out []family
	for _, v6 := range []bool{false, true} {
		f := family{v6: v6}
		for _, v := range s.VIPs {
			if v.Is6() == v6 {
				f.vips = append(f.vips, v)
			}
		}
		for _, b := range s.Backends {
			if b.Addr.Addr().Is6() == v6 {
				f.backends = append(f.backends, b)
			}
		}
		if len(f.vips) > 0 {
			out = append(out, f)
		}
	}
	return out
}

// slots is the backend index of each value of the key: the weights as
// multiplicity (divided by their greatest common divisor), one each for
// RoundRobin, the rendezvous table for Consistent.
func slots(s *Service, bs []Backend) ([]int, error) {
	if len(bs) == 0 {
		return nil, nil
	}
	switch s.Balance {
	case RoundRobin:
		out := make([]int, len(bs))
		for i := range out {
			out[i] = i
		}
		return out, nil
	case Consistent:
		return rendezvous(bs, tableSize(len(bs))), nil
	}
	g := 0
	for _, b := range bs {
		g = gcd(g, b.Weight)
	}
	var out []int
	for i, b := range bs {
		for range b.Weight / g {
			out = append(out, i)
		}
	}
	return out, nil
}

// rendezvous gives each of m slots to the backend with the highest
// weighted score for it (rendezvous hashing): the table depends only on
// the backends' names and weights, so every node builds the same one;
// removing a backend gives away its slots only, and adding one takes
// slots only for itself.
func rendezvous(bs []Backend, m uint32) []int {
	out := make([]int, m)
	for k := range out {
		best, bestScore := 0, -1.0
		for i, b := range bs {
			// u in (0, 1): the top 53 bits of the mixed hash.
			u := (float64(mix(nameHash(b.Name)^uint64(k)*0x9e3779b97f4a7c15)>>11) + 0.5) / (1 << 53)
			score := float64(b.Weight) / -math.Log(u)
			if score > bestScore {
				best, bestScore = i, score
			}
		}
		out[k] = best
	}
	return out
}

func nameHash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// mix is splitmix64's finaliser: FNV alone spreads close inputs poorly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// tableSize is the consistent table's size for n backends: at least
// 1,021 slots and about 300 per backend, so that each backend's share
// is within a few per cent of its weight's, and at most 65,521, a vmap a
// transaction carries whole.
func tableSize(n int) uint32 {
	for _, p := range []uint32{1021, 2039, 4093, 8191, 16381, 32749, 65521} {
		if p >= uint32(300*n) {
			return p
		}
	}
	return 65521
}

// Applier writes the Ruleset into the calling thread's network namespace
// (or the one of NetNSFd).
type Applier struct {
	// NetNSFd, when not 0, is the namespace to program.
	NetNSFd int
	// Log, if set, hears of leftovers a change could not delete.
	Log *slog.Logger
}

func (a *Applier) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if a.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(a.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// owned reports whether table inet ober exists, and refuses one that
// is not ober's.
func owned(c *nftables.Conn) (exists bool, err error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range ts {
		if t.Name != TableName {
			continue
		}
		objs, err := c.GetNamedObjects(t)
		if err != nil {
			return true, fmt.Errorf("nftables: objects of inet %s: %w", TableName, err)
		}
		for _, o := range objs {
			if co, ok := o.(*nftables.CounterObj); ok && co.Name == ownerCounter {
				return true, nil
			}
			if no, ok := o.(*nftables.NamedObj); ok && no.Name == ownerCounter && no.Type == nftables.ObjTypeCounter {
				return true, nil
			}
		}
		return true, ErrNotOurs
	}
	return false, nil
}

// Apply makes table inet ober say r, in one transaction. On an error
// nothing changed.
func (a *Applier) Apply(r Ruleset) error {
	if err := r.Validate(); err != nil {
		return err
	}
	c, err := a.conn()
	if err != nil {
		return err
	}
	exists, err := owned(c)
	if err != nil {
		return err
	}
	t := table()
	var old *state
	if exists {
		if old, err = listState(c, t); err != nil {
			return err
		}
	}
	c.AddTable(t)
	b := &batch{c: c, t: t, old: old, chains: map[string]bool{}, sets: map[string]bool{}, objs: map[string]bool{}}
	if exists {
		// No rule refers to anything after this, so whatever the new
		// rules do not use can be deleted in the same transaction.
		c.FlushTable(t)
	}
	if err := b.build(r); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply %d services to inet %s: %w", len(r.Services), TableName, err)
	}
	// What the old rules used goes in a second transaction. A packet
	// that was going through the old rules when the first committed may
	// still look up an old map, and a map deleted in the same commit
	// already has no elements for it: its flow would go untranslated
	// for good (seen: one new flow in about 30,000 across rebuilds).
	if b.deleteStale() {
		if err := c.Flush(); err != nil && a.Log != nil {
			// The new rules are in force; the next Apply tries again.
			a.Log.Warn("nftables: leftovers of the previous rules stay until the next change", "table", "inet "+TableName, "err", err)
		}
	}
	return nil
}

// Owned reports whether table inet ober exists; ErrNotOurs when it does
// but ober did not make it.
func (a *Applier) Owned() (bool, error) {
	c, err := a.conn()
	if err != nil {
		return false, err
	}
	return owned(c)
}

// Remove deletes table inet ober, if it is ober's.
func (a *Applier) Remove() error {
	c, err := a.conn()
	if err != nil {
		return err
	}
	exists, err := owned(c)
	if err != nil || !exists {
		return err
	}
	c.DelTable(table())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete inet %s: %w", TableName, err)
	}
	return nil
}

// Counters reads every backend's counter.
func (a *Applier) Counters() (map[Key]Counter, error) {
	c, err := a.conn()
	if err != nil {
		return nil, err
	}
	exists, err := owned(c)
	if err != nil || !exists {
		return nil, err
	}
	objs, err := c.GetNamedObjects(table())
	if err != nil {
		return nil, fmt.Errorf("nftables: counters of inet %s: %w", TableName, err)
	}
	out := map[Key]Counter{}
	add := func(name string, pk, by uint64) {
		k, ok := parseCounterName(name)
		if !ok {
			return
		}
		v := out[k]
		v.Packets += pk
		v.Bytes += by
		out[k] = v
	}
	for _, o := range objs {
		switch co := o.(type) {
		case *nftables.CounterObj:
			add(co.Name, co.Packets, co.Bytes)
		case *nftables.NamedObj:
			if ce, ok := co.Obj.(*expr.Counter); ok {
				add(co.Name, ce.Packets, ce.Bytes)
			}
		}
	}
	return out, nil
}

// counterName is a backend's counter: "c/<service>/<backend>". Names
// in nftables may be up to 255 bytes; ours are at most 2+40+1+40.
func counterName(service, backend string) string { return "c/" + service + "/" + backend }

func parseCounterName(n string) (Key, bool) {
	if len(n) < 2 || n[:2] != "c/" {
		return Key{}, false
	}
	rest := n[2:]
	i := slices.Index([]byte(rest), '/')
	if i < 0 {
		return Key{}, false
	}
	return Key{Service: rest[:i], Backend: rest[i+1:]}, true
}

// The kernel's UDP conntrack timeouts, seconds: what a service that sets
// only one of its two keeps for the other.
const (
	udpTimeoutDefault       = 30
	udpStreamTimeoutDefault = 120
)

// state is what table inet ober holds before a change.
type state struct {
	chains []*nftables.Chain
	sets   []*nftables.Set
	objs   []nftables.Obj
}

func listState(c *nftables.Conn, t *nftables.Table) (*state, error) {
	st := &state{}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: chains of inet %s: %w", TableName, err)
	}
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			st.chains = append(st.chains, ch)
		}
	}
	if st.sets, err = c.GetSets(t); err != nil {
		return nil, fmt.Errorf("nftables: maps of inet %s: %w", TableName, err)
	}
	if st.objs, err = c.GetNamedObjects(t); err != nil {
		return nil, fmt.Errorf("nftables: objects of inet %s: %w", TableName, err)
	}
	return st, nil
}

// batch is one transaction being built: what it makes, to delete what
// the table held and no longer needs.
type batch struct {
	c                  *nftables.Conn
	t                  *nftables.Table
	old                *state
	chains, sets, objs map[string]bool
}

func (b *batch) chain(ch *nftables.Chain) *nftables.Chain {
	b.chains[ch.Name] = true
	return b.c.AddChain(ch)
}

func (b *batch) obj(name string, o nftables.Obj) {
	b.objs[name] = true
	b.c.AddObj(o)
}

func (b *batch) hadSet(name string) bool {
	if b.old == nil {
		return false
	}
	for _, s := range b.old.sets {
		if s.Name == name {
			return true
		}
	}
	return false
}

// vmap makes map m, unless the table has it already. A map's name
// carries a hash of its contents, so a map is never changed in place: a
// new one comes with the rules that use it, and the old one goes. (Maps
// emptied and refilled within the transaction lost one new flow in about
// 50,000 across rebuilds.)
func (b *batch) vmap(m *nftables.Set, elems []nftables.SetElement) error {
	b.sets[m.Name] = true
	if b.hadSet(m.Name) {
		return nil
	}
	return b.c.AddSet(m, elems)
}

func objName(o nftables.Obj) string {
	switch v := o.(type) {
	case *nftables.CounterObj:
		return v.Name
	case *nftables.NamedObj:
		return v.Name
	}
	return ""
}

// deleteStale deletes what the table held and the new rules do not
// use; it reports whether there was any.
func (b *batch) deleteStale() bool {
	if b.old == nil {
		return false
	}
	stale := false
	for _, s := range b.old.sets {
		if !b.sets[s.Name] {
			b.c.DelSet(s)
			stale = true
		}
	}
	for _, ch := range b.old.chains {
		if !b.chains[ch.Name] {
			b.c.DelChain(ch)
			stale = true
		}
	}
	for _, o := range b.old.objs {
		if n := objName(o); n != "" && !b.objs[n] {
			b.c.DeleteObject(o)
			stale = true
		}
	}
	return stale
}

// Registers: NFT_REG_1 (16 bytes) for compare and hash results,
// NFT_REG_2 for a port, and the 32-bit registers from NFT_REG32_00 for
// a hash's concatenated fields.
const (
	reg1     = unix.NFT_REG_1
	reg2     = unix.NFT_REG_2
	reg32_00 = unix.NFT_REG32_00
)

func (b *batch) build(r Ruleset) error {
	c, t := b.c, b.t
	b.obj(ownerCounter, &nftables.CounterObj{Table: t, Name: ownerCounter})
	pre := b.chain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	post := b.chain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	// A fullnat service's connections leave with the node's address.
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(FullNATMark), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Masq{},
	}})
	for si := range r.Services {
		s := &r.Services[si]
		for _, f := range s.families() {
			if err := b.family(pre, s, f); err != nil {
				return fmt.Errorf("services[%s]: %w", s.Name, err)
			}
		}
	}
	return nil
}

func famSuffix(v6 bool) string {
	if v6 {
		return "6"
	}
	return "4"
}

func (b *batch) family(pre *nftables.Chain, s *Service, f family) error {
	c, t := b.c, b.t
	nfproto := byte(unix.NFPROTO_IPV4)
	if f.v6 {
		nfproto = unix.NFPROTO_IPV6
	}
	svcName := "s/" + s.Name + "/" + famSuffix(f.v6)
	svc := b.chain(&nftables.Chain{Name: svcName, Table: t})

	// The entry: one rule per VIP.
	for _, v := range f.vips {
		daddrOff, alen := uint32(16), uint32(4)
		if f.v6 {
			daddrOff, alen = 24, 16
		}
		ex := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto}},
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: alen},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: v.AsSlice()},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{s.Proto}},
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		}
		if s.LastPort > s.Port {
			ex = append(ex, &expr.Range{Op: expr.CmpOpEq, Register: reg1,
				FromData: binaryutil.BigEndian.PutUint16(s.Port), ToData: binaryutil.BigEndian.PutUint16(s.LastPort)})
		} else {
			ex = append(ex, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(s.Port)})
		}
		ex = append(ex, &expr.Verdict{Kind: expr.VerdictJump, Chain: svcName})
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: ex})
	}

	var ex []expr.Any
	if s.Proto == unix.IPPROTO_UDP && (s.UDPTimeout != 0 || s.UDPStreamTimeout != 0) {
		// Both set, always: the library fills a missing one from a map
		// it shares between calls, and writes ours into it.
		pol := expr.CtStatePolicyTimeout{
			expr.CtStateUDPUNREPLIED: udpTimeoutDefault,
			expr.CtStateUDPREPLIED:   udpStreamTimeoutDefault,
		}
		if s.UDPTimeout != 0 {
			pol[expr.CtStateUDPUNREPLIED] = uint32(s.UDPTimeout / time.Second)
		}
		if s.UDPStreamTimeout != 0 {
			pol[expr.CtStateUDPREPLIED] = uint32(s.UDPStreamTimeout / time.Second)
		}
		// The values are in the name: the kernel keeps an existing
		// object's policy when it is added again, so a change must be a
		// new object.
		name := fmt.Sprintf("t/%s/%s/%d-%d", s.Name, famSuffix(f.v6), pol[expr.CtStateUDPUNREPLIED], pol[expr.CtStateUDPREPLIED])
		l3 := uint16(unix.NFPROTO_IPV4)
		if f.v6 {
			l3 = unix.NFPROTO_IPV6
		}
		b.obj(name, &nftables.NamedObj{Table: t, Name: name, Type: nftables.ObjTypeCtTimeout,
			Obj: &expr.CtTimeout{L3Proto: l3, L4Proto: unix.IPPROTO_UDP, Policy: pol}})
		ex = append(ex, &expr.Objref{Type: int(nftables.ObjTypeCtTimeout), Name: name})
	}

	sl, err := slots(s, f.backends)
	if err != nil {
		return err
	}
	if len(sl) == 0 {
		// No backend of this family: the flow is dropped, as a closed
		// port would; a UDP client gets no answer either way.
		ex = append(ex, &expr.Verdict{Kind: expr.VerdictDrop})
		c.AddRule(&nftables.Rule{Table: t, Chain: svc, Exprs: ex})
		return nil
	}

	// One chain per backend: its counter, the fullnat mark, the DNAT.
	for i, be := range f.backends {
		cname := counterName(s.Name, be.Name)
		b.obj(cname, &nftables.CounterObj{Table: t, Name: cname})
		bchain := b.chain(&nftables.Chain{Name: "b/" + s.Name + "/" + famSuffix(f.v6) + "/" + fmt.Sprint(i), Table: t})
		bex := []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: cname}}
		if s.Forward == FullNAT {
			bex = append(bex,
				&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(^uint32(FullNATMark)), Xor: binaryutil.NativeEndian.PutUint32(FullNATMark)},
				&expr.Ct{Key: expr.CtKeyMARK, Register: reg1, SourceRegister: true})
		}
		bex = append(bex, &expr.Immediate{Register: reg1, Data: be.Addr.Addr().AsSlice()})
		nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nfproto), RegAddrMin: reg1}
		if be.Addr.Port() != 0 {
			bex = append(bex, &expr.Immediate{Register: reg2, Data: binaryutil.BigEndian.PutUint16(be.Addr.Port())})
			nat.RegProtoMin = reg2
		}
		bex = append(bex, nat)
		c.AddRule(&nftables.Rule{Table: t, Chain: bchain, Exprs: bex})
	}

	// The choice: a key in [0, len(sl)), then the vmap.
	switch s.Balance {
	case RoundRobin:
		ex = append(ex, &expr.Numgen{Register: reg1, Modulus: uint32(len(sl)), Type: unix.NFT_NG_INCREMENTAL})
	case Random, Weighted:
		ex = append(ex, &expr.Numgen{Register: reg1, Modulus: uint32(len(sl)), Type: unix.NFT_NG_RANDOM})
	case Source, Consistent:
		load, n := hashFields(f.v6, s.Balance == Consistent || s.HashPorts, s.Balance == Consistent)
		ex = append(ex, load...)
		ex = append(ex, &expr.Hash{SourceRegister: reg32_00, DestRegister: reg1, Length: n,
			Modulus: uint32(len(sl)), Seed: HashSeed, Type: expr.HashTypeJenkins})
	}
	elems := make([]nftables.SetElement, len(sl))
	h := fnv.New64a()
	for k, bi := range sl {
		target := "b/" + s.Name + "/" + famSuffix(f.v6) + "/" + fmt.Sprint(bi)
		elems[k] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(k)),
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: target}}
		h.Write([]byte(target + "\n"))
	}
	m := &nftables.Set{Table: t, Name: fmt.Sprintf("m/%s/%s/%016x", s.Name, famSuffix(f.v6), h.Sum64()), IsMap: true,
		KeyType: nftables.TypeInteger, DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
	if err := b.vmap(m, elems); err != nil {
		return fmt.Errorf("map %s: %w", m.Name, err)
	}
	ex = append(ex, &expr.Lookup{SourceRegister: reg1, SetName: m.Name, SetID: m.ID, DestRegister: 0, IsDestRegSet: true})
	c.AddRule(&nftables.Rule{Table: t, Chain: svc, Exprs: ex})
	return nil
}

// hashFields loads the fields a hash covers into consecutive 32-bit
// registers from NFT_REG32_00: the source address, then the source port
// (ports), then the destination address and port (dest). A field
// shorter than 4 bytes is padded with zeros by the kernel. It returns
// the loads and the length to hash.
func hashFields(v6, ports, dest bool) ([]expr.Any, uint32) {
	saddr, daddr, alen := uint32(12), uint32(16), uint32(4)
	if v6 {
		saddr, daddr, alen = 8, 24, 16
	}
	reg := uint32(reg32_00)
	var out []expr.Any
	n := uint32(0)
	load := func(base expr.PayloadBase, off, l uint32) {
		out = append(out, &expr.Payload{DestRegister: reg, Base: base, Offset: off, Len: l})
		words := (l + 3) / 4
		reg += words
		n += 4 * words
	}
	load(expr.PayloadBaseNetworkHeader, saddr, alen)
	if ports {
		load(expr.PayloadBaseTransportHeader, 0, 2)
	}
	if dest {
		load(expr.PayloadBaseNetworkHeader, daddr, alen)
		load(expr.PayloadBaseTransportHeader, 2, 2)
	}
	return out, n
}
