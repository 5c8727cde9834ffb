package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// AddrRange is a range of addresses of one family, both ends included.
type AddrRange struct{ From, To netip.Addr }

// Contains reports whether a lies in r.
func (r AddrRange) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.BitLen() == r.From.BitLen() && r.From.Compare(a) <= 0 && a.Compare(r.To) <= 0
}

// Overlaps reports whether r and o share an address.
func (r AddrRange) Overlaps(o AddrRange) bool {
	return r.From.BitLen() == o.From.BitLen() && r.From.Compare(o.To) <= 0 && o.From.Compare(r.To) <= 0
}

// String writes "from-to".
func (r AddrRange) String() string { return r.From.String() + "-" + r.To.String() }

// ParseAddrRange reads one of vip_pools[].addresses: a CIDR
// ("10.20.0.0/28", host bits clear) or a range ("10.20.1.10-10.20.1.20",
// one family, the first not above the last). The error does not repeat s.
func ParseAddrRange(s string) (AddrRange, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return AddrRange{}, fmt.Errorf("invalid CIDR: %w", err)
		}
		if m := p.Masked(); m != p {
			return AddrRange{}, fmt.Errorf("has host bits set (did you mean %s?)", m)
		}
		return AddrRange{From: p.Addr(), To: lastAddr(p)}, nil
	}
	a, z, ok := strings.Cut(s, "-")
	if !ok {
		return AddrRange{}, errors.New("not a CIDR (such as 10.20.0.0/28) or a range (such as 10.20.1.10-10.20.1.20)")
	}
	from, err1 := netip.ParseAddr(strings.TrimSpace(a))
	to, err2 := netip.ParseAddr(strings.TrimSpace(z))
	switch {
	case err1 != nil:
		return AddrRange{}, fmt.Errorf("%q is not an IP address", strings.TrimSpace(a))
	case err2 != nil:
		return AddrRange{}, fmt.Errorf("%q is not an IP address", strings.TrimSpace(z))
	case from.Zone() != "" || to.Zone() != "":
		return AddrRange{}, errors.New("a VIP cannot have a zone")
	case from.Is4In6() || to.Is4In6():
		return AddrRange{}, errors.New("an IPv4-mapped address; write IPv4 addresses as such")
	case from.BitLen() != to.BitLen():
		return AddrRange{}, errors.New("both ends must be of one family")
	case from.Compare(to) > 0:
		return AddrRange{}, errors.New("the first address is above the last")
	}
	return AddrRange{From: from, To: to}, nil
}

// lastAddr is the last address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Ranges returns the pool's addresses, one range per entry of Addresses,
// leaving out the entries that do not parse (Validate reports them).
func (p VIPPool) Ranges() []AddrRange {
	var out []AddrRange
	for _, s := range p.Addresses {
		if r, err := ParseAddrRange(s); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// Contains reports whether a is one of the pool's addresses.
func (p VIPPool) Contains(a netip.Addr) bool {
	for _, r := range p.Ranges() {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// buggy reports whether avoid_buggy_ips skips a: an IPv4 address ending
// in .0 or .255, which some old stacks take for a broadcast.
func buggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

// hasUsable reports whether r holds an address avoid_buggy_ips keeps. Any
// three consecutive addresses hold one, so three steps decide.
func hasUsable(r AddrRange) bool {
	a := r.From
	for range 3 {
		if !buggy(a) {
			return true
		}
		if a == r.To {
			return false
		}
		a = a.Next()
	}
	return true
}

// vipPoolOf returns the index of the pool that contains a, or -1.
func (c *Config) vipPoolOf(a netip.Addr) int {
	for i := range c.VIPPools {
		if c.VIPPools[i].Contains(a) {
			return i
		}
	}
	return -1
}

// vipPoolIndex returns the index of the pool named name, or -1.
func (c *Config) vipPoolIndex(name string) int {
	for i := range c.VIPPools {
		if c.VIPPools[i].Name == name {
			return i
		}
	}
	return -1
}

func (c *Config) validateVIPPools(p *problems) {
	names := make(map[string]int)
	type seenRange struct {
		r    AddrRange
		path string
		text string
	}
	var seen []seenRange
	for i := range c.VIPPools {
		pool := &c.VIPPools[i]
		base := fmt.Sprintf("vip_pools[%d]", i)
		switch j, dup := names[pool.Name]; {
		case pool.Name == "":
			p.add(base+".name", "", "required")
		case !ValidName(pool.Name):
			p.add(base+".name", quote(pool.Name), nameRule)
		case dup:
			p.add(base+".name", quote(pool.Name), "already used by vip_pools[%d]", j)
		default:
			names[pool.Name] = i
		}
		if len(pool.Addresses) == 0 {
			p.add(base+".addresses", "", "at least one CIDR or range is required")
		}
		for j, text := range pool.Addresses {
			path := fmt.Sprintf("%s.addresses[%d]", base, j)
			r, err := ParseAddrRange(text)
			if err != nil {
				p.add(path, quote(text), "%v", err)
				continue
			}
			if msg := vipProblem(r.From); msg != "" {
				p.add(path, quote(text), "%s", msg)
				continue
			}
			if msg := vipProblem(r.To); msg != "" {
				p.add(path, quote(text), "%s", msg)
				continue
			}
			if pool.AvoidBuggyIPs && !hasUsable(r) {
				p.add(path, quote(text), "holds only addresses ending in .0 or .255, which avoid_buggy_ips skips")
			}
			clash := false
			for _, o := range seen {
				if o.r.Overlaps(r) {
					p.add(path, quote(text), "overlaps %s (%q)", o.path, o.text)
					clash = true
					break
				}
			}
			if !clash {
				seen = append(seen, seenRange{r, path, text})
			}
		}
	}
}
