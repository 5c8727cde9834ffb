package whitelist

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/loader"
)

// ErrChanged matches a failure caused by another writer (another sync, a
// daemon reload) changing a live list after Plan read it.
var ErrChanged = errors.New("the live list changed meanwhile")

// trieSwap is one whitelist's new contents for swapTries.
type trieSwap struct {
	id loader.WhitelistID
	// prefixes is the new list.
	prefixes []netip.Prefix
	// expect is the live list the change was planned and shown against;
	// when the live list is no longer that, nothing is swapped, so that
	// what was shown is what gets applied.
	expect []netip.Prefix
}

// Swapped is what a transaction did to one list's trie.
type Swapped struct {
	ID            loader.WhitelistID
	Before, After loader.WhitelistInfo
	// Applied is true when the list was swapped; a list equal to the
	// live one is not.
	Applied bool
	prev    []netip.Prefix
}

// swapTries swaps each list in turn, each in one atomic step. If a swap
// fails, the lists already swapped are put back before it returns, so
// either every list changes or none. On success it returns undo, which
// puts every swapped list back: for a caller whose next step (such as
// saving the configuration) fails.
func swapTries(d *loader.Dataplane, swaps []trieSwap, log *slog.Logger) ([]Swapped, func() error, error) {
	done := make([]Swapped, 0, len(swaps))
	undo := func() error {
		var errs []error
		for i := len(done) - 1; i >= 0; i-- {
			s := done[i]
			if !s.Applied {
				continue
			}
			info, err := d.SetWhitelist(s.ID, s.prev)
			if err != nil {
				errs = append(errs, fmt.Errorf("put back %s: %w", s.ID, err))
				continue
			}
			log.Info("whitelist put back", "list", s.ID.String(), "entries", info.Entries, "generation", info.Generation)
		}
		return errors.Join(errs...)
	}
	for _, sw := range swaps {
		s := Swapped{ID: sw.id}
		info, err := d.UpdateWhitelist(sw.id, func(live []netip.Prefix, info loader.WhitelistInfo) ([]netip.Prefix, error) {
			s.Before, s.prev = info, live
			if !slices.Equal(addrlist.Normalize(live), addrlist.Normalize(sw.expect)) {
				return nil, fmt.Errorf("%s: %w (another sync or a daemon reload); run sync again", sw.id, ErrChanged)
			}
			return sw.prefixes, nil
		})
		if err != nil {
			if uerr := undo(); uerr != nil {
				return nil, nil, fmt.Errorf("%w; and putting back the lists already swapped failed: %v", err, uerr)
			}
			return nil, nil, err
		}
		s.After = info
		s.Applied = info.Generation != s.Before.Generation
		if s.Applied {
			log.Info("whitelist swapped", "list", sw.id.String(), "entries", info.Entries, "generation", info.Generation)
		}
		done = append(done, s)
	}
	return done, undo, nil
}
