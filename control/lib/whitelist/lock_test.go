package whitelist

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A second Lock waits for the first to be released, and gives up when
// its context ends.
func TestLockExcludes(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	unlock, err := Lock(ctx, dir)
	require.NoError(t, err)
	st, err := os.Stat(filepath.Join(dir, LockFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Lock(short, dir)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, filepath.Join(dir, LockFile))
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "gave up before its context ended")

	cancelled, cancelNow := context.WithCancel(ctx)
	got := make(chan error, 1)
	go func() {
		_, err := Lock(cancelled, dir)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("took a held lock: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancelNow()
	select {
	case err := <-got:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Lock did not return when its context was cancelled")
	}

	// Released, the lock goes to the one waiting.
	waiting := make(chan func(), 1)
	go func() {
		u, err := Lock(ctx, dir)
		if err != nil {
			t.Error(err)
			u = func() {}
		}
		waiting <- u
	}()
	select {
	case <-waiting:
		t.Fatal("took a held lock")
	case <-time.After(50 * time.Millisecond):
	}
	unlock()
	select {
	case u := <-waiting:
		u()
	case <-time.After(5 * time.Second):
		t.Fatal("the lock was not released")
	}
}

func TestLockNeedsTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	_, err := Lock(context.Background(), dir)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.EqualError(t, err, "lock "+filepath.Join(dir, LockFile)+": no such file or directory")
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "Lock made the directory")
}
