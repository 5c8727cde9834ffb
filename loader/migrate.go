package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// earlierServicesPin is the VIP and service table of the layout before
// access lists: 8-byte values, 16384 preallocated rows. Its inner maps do
// not fit the new table's slot, so the table has a new name
// (ober_service_set) and an upgrade copies the earlier one over.
const earlierServicesPin = "ober_services"

// migrateServices copies the earlier layout's live VIP and service table
// into ober_service_set when that holds no table yet, so the programs an
// upgrade is about to link find the node's services in place: no packet
// meets an empty table between the upgrade and the daemon's first plan.
// It reports whether an earlier table is pinned (to be dropped once the
// new programs run). Called with the lock held.
func (d *Dataplane) migrateServices() (bool, error) {
	pin := filepath.Join(d.mapDir(), earlierServicesPin)
	old, err := ebpf.LoadPinnedMap(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("earlier services table %s: %w", pin, err)
	}
	defer old.Close()
	live, err := d.liveInner(d.maps.OberServiceSet, 0)
	if err != nil {
		return false, fmt.Errorf("services table: %w", err)
	}
	if live != nil {
		// Already copied, or written since by this version: it wins.
		live.Close()
		return true, nil
	}
	if old.Type() != ebpf.ArrayOfMaps {
		d.log.Warn("earlier services table is not of the earlier layout; not copied", "pin", pin, "type", old.Type())
		return true, nil
	}
	inner, err := d.liveInner(old, 0)
	if err != nil {
		return false, fmt.Errorf("earlier services table %s: %w", pin, err)
	}
	if inner == nil {
		return true, nil // never filled
	}
	defer inner.Close()
	if inner.KeySize() != uint32(svcKeySize) || inner.ValueSize() != uint32(earlierSvcValSize) {
		d.log.Warn("earlier services table is not of the earlier layout; not copied", "pin", pin,
			"key_size", inner.KeySize(), "value_size", inner.ValueSize())
		return true, nil
	}
	var (
		k    svcKey
		v    earlierSvcVal
		keys []svcKey
		vals []svcVal
	)
	it := inner.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
		vals = append(vals, svcVal{Listener: v.Listener, Flags: v.Flags, Whitelist: v.Whitelist})
	}
	if err := it.Err(); err != nil {
		return false, fmt.Errorf("earlier services table %s: read: %w", pin, err)
	}
	if err := d.swapServices(keys, vals); err != nil {
		return false, fmt.Errorf("copy the earlier services table: %w", err)
	}
	d.log.Info("dataplane services table copied to the new layout", "rows", len(keys))
	return true, nil
}

// dropEarlierServices removes the earlier layout's pin once the programs
// that read the new table run. The kernel frees the table when the last
// program holding it is gone.
func (d *Dataplane) dropEarlierServices() {
	pin := filepath.Join(d.mapDir(), earlierServicesPin)
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("could not remove the earlier services table's pin", "pin", pin, "err", err)
	}
}
