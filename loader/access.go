package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// AccessID selects one of the per-service access lists. 0 is no list;
// the others run up to MaxAccessLists-1.
type AccessID uint32

func (id AccessID) String() string { return fmt.Sprintf("access-%d", uint32(id)) }

// AccessRule is one rule of an access list as an operator writes it: the
// first rule whose prefix holds the source decides.
type AccessRule struct {
	Prefix netip.Prefix `json:"prefix"`
	Allow  bool         `json:"allow"`
}

// AccessEntry is one prefix of a compiled access list: the verdict for
// the sources it is the longest matching prefix of.
type AccessEntry struct {
	Prefix netip.Prefix `json:"prefix"`
	Allow  bool         `json:"allow"`
}

// Default prefixes of a compiled list, one per family.
var (
	allIPv4 = netip.MustParsePrefix("0.0.0.0/0")
	allIPv6 = netip.MustParsePrefix("::/0")
)

// CompileAccess turns first-match rules into the table the XDP program
// looks sources up in by longest prefix, which gives every address the
// verdict of the first rule that holds it, and defaultAllow where none
// does.
//
// Prefixes either nest or are disjoint, so the longest entry holding an
// address is the first rule holding it once every rule inside an earlier
// one is dropped: that rule can never decide (a repeat is the same case).
// The default becomes 0.0.0.0/0 and ::/0, each unless a rule has that
// very prefix. Host bits are cleared. The entries come sorted, as
// AccessList returns them.
func CompileAccess(rules []AccessRule, defaultAllow bool) ([]AccessEntry, error) {
	kept := make(map[netip.Prefix]bool, len(rules)+2)
	out := make([]AccessEntry, 0, len(rules)+2)
	for i, r := range rules {
		if err := checkAccessPrefix(r.Prefix); err != nil {
			return nil, fmt.Errorf("compile access list: rule %d: %w", i, err)
		}
		p := r.Prefix.Masked()
		if shadowed(kept, p) {
			continue
		}
		kept[p] = r.Allow
		out = append(out, AccessEntry{Prefix: p, Allow: r.Allow})
	}
	for _, p := range []netip.Prefix{allIPv4, allIPv6} {
		if _, ok := kept[p]; !ok {
			out = append(out, AccessEntry{Prefix: p, Allow: defaultAllow})
		}
	}
	if len(out) > MaxAccessEntries {
		return nil, fmt.Errorf("compile access list: %d entries (of %d rules and the defaults) exceed the limit %d",
			len(out), len(rules), MaxAccessEntries)
	}
	slices.SortFunc(out, compareAccessEntry)
	return out, nil
}

// shadowed reports whether p lies within (or is) a prefix in kept.
func shadowed(kept map[netip.Prefix]bool, p netip.Prefix) bool {
	for bits := p.Bits(); bits >= 0; bits-- {
		if _, ok := kept[netip.PrefixFrom(p.Addr(), bits).Masked()]; ok {
			return true
		}
	}
	return false
}

func checkAccessPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid() || p.Addr().Zone() != "":
		return fmt.Errorf("%s is not a valid prefix", p)
	case p.Addr().Is4In6():
		// The XDP program drops IPv6 packets from IPv4-mapped sources, and
		// IPv4 sources are looked up as IPv4: such an entry would match
		// nothing.
		if p.Bits() >= 96 {
			return fmt.Errorf("%s is IPv4-mapped; write it as %s", p, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96))
		}
		return fmt.Errorf("%s is IPv4-mapped; give the IPv4 prefix", p)
	}
	return nil
}

func compareAccessEntry(a, b AccessEntry) int { return comparePrefix(a.Prefix, b.Prefix) }

// ValidateAccessList checks an access list the way SetAccessList does,
// with errors naming the list and the entry. Repeats of a prefix with the
// same verdict are allowed (and stored once); with different verdicts
// they are refused.
func ValidateAccessList(id AccessID, entries []AccessEntry) error {
	_, err := normalizeAccess(id, entries)
	return err
}

// normalizeAccess validates entries and returns them masked, sorted and
// without repeats.
func normalizeAccess(id AccessID, entries []AccessEntry) ([]AccessEntry, error) {
	if err := checkAccessID(id); err != nil {
		return nil, fmt.Errorf("set access list: %w", err)
	}
	if len(entries) > MaxAccessEntries {
		return nil, fmt.Errorf("set access list %s: %d entries exceed the limit %d", id, len(entries), MaxAccessEntries)
	}
	seen := make(map[netip.Prefix]int, len(entries))
	out := make([]AccessEntry, 0, len(entries))
	for i, e := range entries {
		if err := checkAccessPrefix(e.Prefix); err != nil {
			return nil, fmt.Errorf("set access list %s: entry %d: %w", id, i, err)
		}
		p := e.Prefix.Masked()
		if j, dup := seen[p]; dup {
			if entries[j].Allow != e.Allow {
				return nil, fmt.Errorf("set access list %s: entry %d (%s) repeats entry %d with the other verdict", id, i, p, j)
			}
			continue
		}
		seen[p] = i
		out = append(out, AccessEntry{Prefix: p, Allow: e.Allow})
	}
	slices.SortFunc(out, compareAccessEntry)
	return out, nil
}

func checkAccessID(id AccessID) error {
	if id == 0 || id >= MaxAccessLists {
		return fmt.Errorf("access list id %d out of range (1..%d)", uint32(id), MaxAccessLists-1)
	}
	return nil
}

// SetAccessList replaces access list id with entries atomically: a new
// LPM trie is filled off to the side and swapped into the list's slot,
// so every packet sees the old list or the new one. Entries are usually
// CompileAccess's; a source no entry covers is denied.
func (d *Dataplane) SetAccessList(id AccessID, entries []AccessEntry) error {
	norm, err := normalizeAccess(id, entries)
	if err != nil {
		return err
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("set access list %s: %w", id, err)
	}
	defer unlock()

	inner, err := d.newInner("ober_access", fmt.Sprintf("ober_acl_%d", uint32(id)), 0)
	if err != nil {
		return fmt.Errorf("set access list %s: %w", id, err)
	}
	defer inner.Close()
	for _, e := range norm {
		v := uint32(0)
		if e.Allow {
			v = accessAllow
		}
		if err := inner.Update(makeLPMKey(e.Prefix), v, ebpf.UpdateNoExist); err != nil {
			return fmt.Errorf("set access list %s: %s: %w", id, e.Prefix, err)
		}
	}
	if err := d.maps.OberAccess.Update(uint32(id), inner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set access list %s: swap: %w", id, err)
	}
	return nil
}

// ClearAccessList empties access list id's slot: a service still naming
// it then admits nobody. Clearing a list that is not set does nothing.
func (d *Dataplane) ClearAccessList(id AccessID) error {
	if err := checkAccessID(id); err != nil {
		return fmt.Errorf("clear access list: %w", err)
	}
	unlock, err := d.lock()
	if err != nil {
		return fmt.Errorf("clear access list %s: %w", id, err)
	}
	defer unlock()
	if err := d.maps.OberAccess.Delete(uint32(id)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear access list %s: %w", id, err)
	}
	return nil
}

// AccessList reads back the live entries of access list id, sorted; set
// is false when the list was never set (or was cleared).
func (d *Dataplane) AccessList(id AccessID) (entries []AccessEntry, set bool, err error) {
	if err := checkAccessID(id); err != nil {
		return nil, false, fmt.Errorf("read access list: %w", err)
	}
	inner, err := d.liveInner(d.maps.OberAccess, uint32(id))
	if err != nil || inner == nil {
		return nil, false, wrapErr("read access list "+id.String(), err)
	}
	defer inner.Close()
	var (
		k lpmKey
		v uint32
	)
	entries = []AccessEntry{}
	it := inner.Iterate()
	for it.Next(&k, &v) {
		entries = append(entries, AccessEntry{Prefix: k.prefix(), Allow: v == accessAllow})
	}
	if err := it.Err(); err != nil {
		return nil, false, fmt.Errorf("read access list %s: %w", id, err)
	}
	slices.SortFunc(entries, compareAccessEntry)
	return entries, true, nil
}

// AccessListIDs lists the access lists that are set, in order.
func (d *Dataplane) AccessListIDs() ([]AccessID, error) {
	var out []AccessID
	for id := AccessID(1); id < MaxAccessLists; id++ {
		inner, err := d.liveInner(d.maps.OberAccess, uint32(id))
		if err != nil {
			return nil, fmt.Errorf("read access lists: %s: %w", id, err)
		}
		if inner != nil {
			inner.Close()
			out = append(out, id)
		}
	}
	return out, nil
}
