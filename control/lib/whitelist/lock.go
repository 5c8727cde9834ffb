package whitelist

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile is the name of the lock in the runtime directory.
const LockFile = "whitelists.lock"

// lockPoll is how often Lock tries again while another holds the lock:
// short beside a transaction, long beside a system call.
const lockPoll = 5 * time.Millisecond

// Lock takes the lock that serialises whitelist transactions with the
// daemon's reload: an exclusive flock(2) on runtimeDir/whitelists.lock,
// created (mode 0600) if missing; runtimeDir must exist. It waits while
// another holds the lock and gives up with an error when ctx ends.
// unlock releases it; so does the holder's exit.
//
// A transaction (Apply) holds it from just before its first change to a
// live list until the file is renamed into place or everything is put
// back. Whoever else holds it therefore sees the live lists and ober.yaml
// agree: the daemon reads the tries' generations and ober.yaml under it,
// so that a reload finding a live list changed since it last set it
// knows a transaction finished, and refuses instead of putting the old
// list back. Without the lock a reload could read ober.yaml between a
// sync's swap and its rename, and undo the sync.
//
// The lock is per open file description: two Locks in one process
// exclude each other as two processes do.
func Lock(ctx context.Context, runtimeDir string) (unlock func(), err error) {
	path := filepath.Join(runtimeDir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, unwrapPath(err))
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("lock %s: gave up waiting for its holder: %w", path, context.Cause(ctx))
		case <-t.C:
		}
	}
	return func() {
		// Closing the last descriptor of the open file releases the lock.
		f.Close()
	}, nil
}
