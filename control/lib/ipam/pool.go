// Package ipam hands addresses of named pools (vip_pools) to services
// that have no VIPs of their own, the way MetalLB and SLB do.
//
// Assign is pure and deterministic: from the pools, the addresses that
// are not to be handed out (the configured VIPs), the previous
// allocations and the services that want an address, it computes the new
// allocations. A service keeps the address it had while that address is
// still in its pool; a new service gets the first free address of its
// pool, in the order the pool lists its ranges, addresses ascending, so
// that every node given the same history computes the same answer; a
// service that is gone gives its address back. No address is ever held
// by two services: losing the allocations would break that after a
// restart (a new service could take an address an old one still holds
// in the routers' view), so Load refuses a damaged file instead of
// starting empty, and Save replaces the file in one step.
//
// Addresses follow MetalLB's meaning. A pool's CIDR hands out every
// address it covers, its network and broadcast addresses included: they
// are ordinary addresses for a /32 VIP announced by BGP or VRRP. Only
// avoid_buggy_ips leaves out the IPv4 addresses ending in .0 and .255,
// which some old clients and routers mishandle; it does nothing to IPv6.
package ipam

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strings"
)

// Range is the addresses From to To, both included, of one family.
type Range struct{ From, To netip.Addr }

// Pool is a named set of ranges addresses are handed out from.
type Pool struct {
	Name string
	// Ranges are handed out in order, each from its lowest address.
	Ranges []Range
	// AvoidBuggyIPs leaves out the IPv4 addresses ending in .0 and .255.
	AvoidBuggyIPs bool
}

// ParsePool builds the pool name from its addresses: CIDRs
// ("10.20.0.0/28", "2001:db8::/120", "10.20.0.7/32" for one address) and
// ranges ("10.20.1.10-10.20.1.20"). The error names every bad entry with its value,
// as `vip_pools[public].addresses[1]: "10.0.0.9-10.0.0.1": ...`, and
// also refuses overlapping entries and a pool with no address to hand
// out.
func ParsePool(name string, addresses []string, avoidBuggy bool) (Pool, error) {
	p := Pool{Name: name, AvoidBuggyIPs: avoidBuggy}
	if name == "" {
		return Pool{}, errors.New("vip_pools: a pool needs a name")
	}
	if len(addresses) == 0 {
		return Pool{}, fmt.Errorf("%s.addresses: no address given", poolPath(name))
	}
	var errs []error
	index := make([]int, 0, len(addresses)) // entry of each range in p.Ranges
	for i, s := range addresses {
		r, err := ParseRange(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.addresses[%d]: %q: %w", poolPath(name), i, s, err))
			continue
		}
		for k, o := range p.Ranges {
			if r.overlaps(o) {
				j := index[k]
				errs = append(errs, fmt.Errorf("%s.addresses[%d]: %q: overlaps addresses[%d] (%q)",
					poolPath(name), i, s, j, addresses[j]))
				break
			}
		}
		p.Ranges = append(p.Ranges, r)
		index = append(index, i)
	}
	if len(errs) == 0 && p.Size() == 0 {
		errs = append(errs, fmt.Errorf("%s: avoid_buggy_ips leaves no address to hand out", poolPath(name)))
	}
	if len(errs) > 0 {
		return Pool{}, errors.Join(errs...)
	}
	return p, nil
}

// ParseRange reads one entry of a pool: a CIDR or a range "A-B" of one
// family with A <= B. A CIDR must be written with
// its network address (10.0.0.0/24, not 10.0.0.5/24), so that it never
// covers addresses the operator did not mean. The error says why,
// without the value, for the caller to name the field.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.Contains(s, "/"):
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, errors.New("not a CIDR (such as 10.20.0.0/28)")
		}
		if err := plainAddr(pfx.Addr()); err != nil {
			return Range{}, err
		}
		if m := pfx.Masked(); m != pfx {
			return Range{}, fmt.Errorf("has host bits set: did you mean %s?", m)
		}
		return prefixRange(pfx), nil
	case strings.Contains(s, "-"):
		a, z, _ := strings.Cut(s, "-")
		from, err1 := netip.ParseAddr(strings.TrimSpace(a))
		to, err2 := netip.ParseAddr(strings.TrimSpace(z))
		if err1 != nil || err2 != nil {
			return Range{}, errors.New("not a range (such as 10.20.1.10-10.20.1.20)")
		}
		for _, a := range []netip.Addr{from, to} {
			if err := plainAddr(a); err != nil {
				return Range{}, err
			}
		}
		if from.Is4() != to.Is4() {
			return Range{}, errors.New("mixes IPv4 and IPv6")
		}
		if to.Less(from) {
			return Range{}, errors.New("ends before it starts")
		}
		return Range{From: from, To: to}, nil
	default:
		return Range{}, errors.New("not a CIDR (such as 10.20.0.0/28) or a range (such as 10.20.1.10-10.20.1.20)")
	}
}

// plainAddr refuses the forms that name an IPv4 address as IPv6, or an
// address of one link: as a VIP they would be announced as something
// else than the operator wrote.
func plainAddr(a netip.Addr) error {
	switch {
	case a.Is4In6():
		return fmt.Errorf("write the IPv4 address %s as such", a.Unmap())
	case a.Zone() != "":
		return errors.New("an address with a zone cannot be a VIP")
	}
	return nil
}

func prefixRange(p netip.Prefix) Range {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	to, _ := netip.AddrFromSlice(b)
	return Range{From: p.Addr(), To: to}
}

// Contains reports whether a lies in r.
func (r Range) Contains(a netip.Addr) bool {
	return r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

func (r Range) overlaps(o Range) bool {
	return r.From.Is4() == o.From.Is4() && r.From.Compare(o.To) <= 0 && o.From.Compare(r.To) <= 0
}

// String writes r as a CIDR when it is one, else as "A-B", or one
// address.
func (r Range) String() string {
	if r.From == r.To {
		return r.From.String()
	}
	for bits := r.From.BitLen() - 1; bits >= 0; bits-- {
		p := netip.PrefixFrom(r.From, bits)
		if p.Masked().Addr() != r.From {
			break
		}
		if prefixRange(p).To == r.To {
			return p.String()
		}
	}
	return r.From.String() + "-" + r.To.String()
}

// size counts the addresses of r that can be handed out, saturating at
// math.MaxUint64.
func (r Range) size(avoidBuggy bool) uint64 {
	if r.From.Is4() {
		a, z := uint64(v4(r.From)), uint64(v4(r.To))
		n := z - a + 1
		if avoidBuggy {
			n -= multiples(a, z) + multiples(a+1, z+1) // x.0, then x.255 (x+1 is a .0)
		}
		return n
	}
	fh, fl := v6(r.From)
	th, tl := v6(r.To)
	lo, borrow := bits.Sub64(tl, fl, 0)
	hi, _ := bits.Sub64(th, fh, borrow)
	if hi != 0 || lo == math.MaxUint64 {
		return math.MaxUint64
	}
	return lo + 1
}

// multiples counts the multiples of 256 in [a, z].
func multiples(a, z uint64) uint64 {
	lo, hi := (a+255)/256, z/256
	if hi < lo {
		return 0
	}
	return hi - lo + 1
}

func v4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func v6(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return hi, lo
}

// buggy reports an IPv4 address ending in .0 or .255.
func buggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

// Contains reports whether p hands out a: it lies in one of its ranges
// and avoid_buggy_ips does not leave it out.
func (p Pool) Contains(a netip.Addr) bool {
	if p.AvoidBuggyIPs && buggy(a) {
		return false
	}
	for _, r := range p.Ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Size is the number of addresses p hands out. It saturates at
// math.MaxUint64 (18446744073709551615): an IPv6 /64 or larger counts as
// that many, which no number of services ever uses up.
func (p Pool) Size() uint64 {
	var n uint64
	for _, r := range p.Ranges {
		s, carry := bits.Add64(n, r.size(p.AvoidBuggyIPs), 0)
		if carry != 0 {
			return math.MaxUint64
		}
		n = s
	}
	return n
}

// check refuses a pool built by hand with ranges ParseRange would not
// give: Assign relies on every range running upwards within one family.
func (p Pool) check() error {
	for i, r := range p.Ranges {
		if !r.From.IsValid() || !r.To.IsValid() || r.From.BitLen() != r.To.BitLen() || r.To.Less(r.From) ||
			plainAddr(r.From) != nil || plainAddr(r.To) != nil {
			return fmt.Errorf("%s: range %d (%s-%s) is not a range of one family running upwards",
				poolPath(p.Name), i, r.From, r.To)
		}
	}
	return nil
}

// CheckPools refuses two pools of one name and pools that share an
// address, as MetalLB does: an address in two pools would be counted
// twice in the pools' usage.
func CheckPools(pools []Pool) error {
	var errs []error
	for i, p := range pools {
		for _, o := range pools[:i] {
			if p.Name == o.Name {
				errs = append(errs, fmt.Errorf("%s: a second pool of that name", poolPath(p.Name)))
				break
			}
		}
	overlap:
		for _, r := range p.Ranges {
			for _, o := range pools[:i] {
				for _, or := range o.Ranges {
					if r.overlaps(or) {
						errs = append(errs, fmt.Errorf("%s: %s overlaps %s (%s)", poolPath(p.Name), r, poolPath(o.Name), or))
						break overlap
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

func poolPath(name string) string { return "vip_pools[" + name + "]" }
