package loader

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// vipSlotBits and vipSlots mirror OBER_VIP_SLOT_BITS and OBER_VIP_SLOTS.
const (
	vipSlotBits = 16
	vipSlots    = 1 << vipSlotBits
)

// vipAbsent mirrors struct ober_vip_absent: bit i set says that no VIP or
// host address of the live table hashes to slot i, so the XDP program
// passes a packet for such a destination without looking the table up.
type vipAbsent struct {
	Words [vipSlots / 64]uint64
}

// vipSlot mirrors ober_vip_slot: the address's 16 bytes (IPv4 mapped) as
// four host-order words, xored, Fibonacci-hashed to vipSlotBits bits.
func vipSlot(a [16]byte) uint32 {
	x := binary.NativeEndian.Uint32(a[0:]) ^ binary.NativeEndian.Uint32(a[4:]) ^
		binary.NativeEndian.Uint32(a[8:]) ^ binary.NativeEndian.Uint32(a[12:])
	return (x * 0x9e3779b1) >> (32 - vipSlotBits)
}

// absentFor is the filter of a table whose VIP rows are keys with proto 0.
func absentFor(keys []svcKey) *vipAbsent {
	f := &vipAbsent{}
	for i := range f.Words {
		f.Words[i] = ^uint64(0)
	}
	for _, k := range keys {
		if k.Proto == 0 {
			s := vipSlot(k.Addr)
			f.Words[s/64] &^= 1 << (s % 64)
		}
	}
	return f
}

// and keeps the bits set in both: what neither table has a VIP at.
func (f *vipAbsent) and(g *vipAbsent) *vipAbsent {
	out := &vipAbsent{}
	for i := range f.Words {
		out.Words[i] = f.Words[i] & g.Words[i]
	}
	return out
}

// mayBeVIP reports whether the filter lets a packet for a through to the
// table.
func (f *vipAbsent) mayBeVIP(a netip.Addr) bool {
	s := vipSlot(addr16(a))
	return f.Words[s/64]&(1<<(s%64)) == 0
}

func (d *Dataplane) readAbsent() (*vipAbsent, error) {
	f := &vipAbsent{}
	if err := d.maps.OberVipAbsent.Lookup(uint32(0), f); err != nil {
		return nil, fmt.Errorf("read the VIP filter: %w", err)
	}
	return f, nil
}

func (d *Dataplane) writeAbsent(f *vipAbsent) error {
	// An array element is copied in place, so a packet may meet a mix of
	// the old and the new words: every caller writes a filter whose set
	// bits, and the old one's, hold for the table live meanwhile.
	if err := d.maps.OberVipAbsent.Update(uint32(0), f, 0); err != nil {
		return fmt.Errorf("write the VIP filter: %w", err)
	}
	return nil
}

// rebuildAbsent writes the filter of the live table, whatever the pinned
// one says: an ober that knew no filter may have swapped the table since
// it was written. Called with the lock held, before the programs that
// read the filter are linked (until then the filter is not read, and a
// program of this version that is linked already read one that held for
// the live table, as this one does).
func (d *Dataplane) rebuildAbsent() error {
	inner, err := d.liveInner(d.maps.OberServiceSet, 0)
	if err != nil {
		return fmt.Errorf("VIP filter: services table: %w", err)
	}
	var keys []svcKey
	if inner != nil {
		defer inner.Close()
		var (
			k svcKey
			v svcVal
		)
		it := inner.Iterate()
		for it.Next(&k, &v) {
			if k.Proto == 0 {
				keys = append(keys, k)
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("VIP filter: read the services table: %w", err)
		}
	}
	return d.writeAbsent(absentFor(keys))
}
