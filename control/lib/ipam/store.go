package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"slices"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
)

// version is the format of the file Save writes; Load reads only it.
const version = 1

// file is the JSON Save writes:
//
//	{"version": 1, "allocations": {"db": "10.20.0.1"}}
type file struct {
	Version     int                   `json:"version"`
	Allocations map[string]netip.Addr `json:"allocations"`
}

// Load reads the allocations Save wrote to path. A missing file is no
// allocation yet. A file that does not read as allocations is an error
// naming it, never taken as empty: the services would then get new
// addresses, and one could get an address another still holds.
func Load(path string) (Allocations, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Allocations{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ipam state: %w", err)
	}
	allocs, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("ipam state %s: %w; repair it, or remove it to give every pool's service a new address", path, err)
	}
	return allocs, nil
}

func decode(data []byte) (Allocations, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not a state file: %w", err)
	}
	switch {
	case f.Version == 0:
		return nil, errors.New("not a state file: no version")
	case f.Version > version:
		return nil, fmt.Errorf("version %d, written by a newer ober: this one reads version %d", f.Version, version)
	case f.Version != version:
		return nil, fmt.Errorf("unknown version %d", f.Version)
	}
	allocs := Allocations(f.Allocations)
	if allocs == nil {
		allocs = Allocations{}
	}
	return allocs, allocs.check()
}

// check refuses what Assign never gives: a service without a name or an
// address, two services with one address. It names the first problem,
// in the order of the services' names.
func (al Allocations) check() error {
	owner := make(map[netip.Addr]string, len(al))
	for _, name := range slices.Sorted(maps.Keys(al)) {
		a := al[name]
		switch o, dup := owner[a]; {
		case name == "":
			return errors.New("a service without a name")
		case !a.IsValid():
			return fmt.Errorf("service %q: no address", name)
		case dup:
			return fmt.Errorf("services %q and %q: both hold %s", o, name, a)
		}
		owner[a] = name
	}
	return nil
}

// Save replaces path with allocs in one step (mode 0600): a crash leaves
// the old file or the new one. It refuses allocations Load would refuse.
func Save(path string, allocs Allocations) error {
	if err := allocs.check(); err != nil {
		return fmt.Errorf("ipam state %s: not saved: %w", path, err)
	}
	if allocs == nil {
		allocs = Allocations{}
	}
	data, err := json.MarshalIndent(file{Version: version, Allocations: allocs}, "", "  ")
	if err != nil {
		return fmt.Errorf("ipam state %s: %w", path, err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("ipam state: %w", err)
	}
	return nil
}
