package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ober-ingress/ober/lab/ledger"
	"github.com/ober-ingress/ober/lab/netsite"
)

// Down removes the lab in dir: every process it started (and any other
// in its namespaces), its mounts, namespaces and directory. It works from
// the files in dir alone, so also after `ober lab up` was killed at any
// point, and running it again finishes what an earlier run could not.
//
// prefix names the lab's namespaces when dir holds no record of them
// (the directory is gone but namespaces are left); otherwise it must be
// empty or the recorded one. Without a lab and without prefix it returns
// ErrNoLab.
func Down(dir, prefix string) (ledger.Report, error) {
	dir = filepath.Clean(dir)
	st, err := Load(dir)
	switch {
	case err == nil:
		if prefix != "" && prefix != st.Prefix {
			return ledger.Report{}, fmt.Errorf("the lab in %s has prefix %q, not %q", dir, st.Prefix, prefix)
		}
		prefix = st.Prefix
	case errors.Is(err, ErrNoLab) && prefix != "":
	case errors.Is(err, ErrNoLab):
		return ledger.Report{}, err
	default:
		// An unreadable state file: the ledger still names the prefix.
		rec, rerr := netsite.ReadRecord(dir)
		if rerr != nil {
			return ledger.Report{}, errors.Join(err, rerr)
		}
		prefix = rec.Prefix
	}
	rep, err := netsite.Teardown(dir, prefix, teardownGrace)
	if err != nil {
		return rep, fmt.Errorf("lab down: %w", err)
	}
	// The state file is in dir, which the ledger removes; without a
	// ledger (only a prefix given) it may be left.
	if err := os.Remove(statePath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return rep, err
	}
	return rep, nil
}
