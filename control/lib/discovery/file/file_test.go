package file

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// seen is how long a change may take to reach Wait and Fetch: a poll's
// second and a loaded machine's delay.
const seen = 2 * time.Second

func write(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

func hosts(res discovery.Result) string {
	var h []string
	for _, b := range res.Backends {
		h = append(h, b.ID())
	}
	return strings.Join(h, ",")
}

func newSource(t *testing.T, path string, opts ...Option) *Source {
	t.Helper()
	s, err := New(path, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// waitFor waits and fetches, as the runner does, until the file gives
// want (a Fetch error's text when it starts with "error: "). A wake-up
// with nothing changed costs a fetch, which is allowed; a change not
// seen within the bound fails.
func waitFor(t *testing.T, s *Source, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), seen)
	defer cancel()
	var last string
	for {
		if err := s.Wait(ctx); err != nil {
			t.Fatalf("Wait did not see the change to %q within %s (last fetch: %q): %v", want, seen, last, err)
		}
		res, err := s.Fetch(ctx)
		if last = hosts(res); err != nil {
			last = "error: " + err.Error()
		}
		if last == want || (strings.HasPrefix(want, "error: ") && strings.HasPrefix(last, want)) {
			return
		}
	}
}

// quiet asserts that Wait does not return when nothing changed.
func quiet(t *testing.T, s *Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.Wait(ctx), context.DeadlineExceeded, "Wait returned with nothing changed")
}

func TestFetch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "backends")
	write(t, path, "10.0.0.1:80 5\n10.0.0.2:0\n")
	s := newSource(t, path)
	res, err := s.Fetch(context.Background())
	require.NoError(t, err)
	require.Equal(t, []discovery.Backend{{Host: "10.0.0.1", Port: 80, Weight: 5}}, res.Backends)
	require.Equal(t, []string{`line 2: "10.0.0.2:0": port 0`}, res.Problems)

	missing := newSource(t, filepath.Join(dir, "missing"))
	_, err = missing.Fetch(context.Background())
	require.EqualError(t, err, "backends file: open "+filepath.Join(dir, "missing")+": no such file or directory")

	_, err = newSource(t, dir).Fetch(context.Background())
	require.EqualError(t, err, "backends file "+dir+": not a regular file (d---------)")

	big := filepath.Join(dir, "big")
	write(t, big, strings.Repeat("10.0.0.1:80 # a comment to fill the file\n", discovery.MaxBytes/40))
	_, err = newSource(t, big).Fetch(context.Background())
	require.ErrorIs(t, err, discovery.ErrTooLarge)
	require.EqualError(t, err, "backends file "+big+": larger than the bound of 4194304 bytes (4 MiB)")

	bin := filepath.Join(dir, "bin")
	write(t, bin, "10.0.0.1:80\n\x00\x00\x00")
	_, err = newSource(t, bin).Fetch(context.Background())
	require.EqualError(t, err, "backends file "+bin+": binary data, not lines of text: a NUL byte at line 2")

	rel, err := New("backends")
	require.NoError(t, err)
	defer rel.Close()
	wd, err := os.Getwd()
	require.NoError(t, err)
	require.Equal(t, filepath.Join(wd, "backends"), rel.Path())

	_, err = New("")
	require.EqualError(t, err, "backends file: no path")
	_, err = New(path, PollEvery(0))
	require.EqualError(t, err, "backends file "+path+": poll interval 0s is not positive")
}

// The ways a file changes, each seen by Wait with inotify and when
// polling.
func TestWait(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		mode Mode
	}{
		{"inotify", nil, Notify},
		{"poll", []Option{PollEvery(DefaultPoll)}, Poll},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "backends")
			write(t, path, "10.0.0.1:80\n")
			s := newSource(t, path, tc.opts...)
			mode, why := s.Mode()
			require.Equal(t, tc.mode, mode, "why: %v", why)
			res, err := s.Fetch(context.Background())
			require.NoError(t, err)
			require.Equal(t, "10.0.0.1:80", hosts(res))
			quiet(t, s)

			// Changed in place.
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			require.NoError(t, err)
			_, err = f.WriteString("10.0.0.2:80\n")
			require.NoError(t, err)
			require.NoError(t, f.Close())
			waitFor(t, s, "10.0.0.1:80,10.0.0.2:80")

			// Replaced by rename, as editors and configuration tools do.
			tmp := filepath.Join(dir, ".backends.tmp")
			write(t, tmp, "10.0.0.3:80\n")
			require.NoError(t, os.Rename(tmp, path))
			waitFor(t, s, "10.0.0.3:80")

			// Deleted, then created again.
			require.NoError(t, os.Remove(path))
			waitFor(t, s, "error: backends file: open "+path+": no such file or directory")
			write(t, path, "10.0.0.4:80\n10.0.0.5:80\n")
			waitFor(t, s, "10.0.0.4:80,10.0.0.5:80")

			// Another file in the directory is no change. The events of
			// the file's own last change pass first, so that they cannot
			// be taken for the other file's.
			time.Sleep(100 * time.Millisecond)
			_, err = s.Fetch(context.Background())
			require.NoError(t, err)
			write(t, filepath.Join(dir, "other"), "x")
			quiet(t, s)
			require.Equal(t, tc.mode, func() Mode { m, _ := s.Mode(); return m }())
		})
	}
}

// A file whose directory does not exist yet cannot be watched: the
// source polls, says why, and sees the file when it comes.
func TestWaitNoDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "backends")
	s := newSource(t, path)
	mode, why := s.Mode()
	require.Equal(t, Poll, mode)
	require.ErrorIs(t, why, os.ErrNotExist)
	require.ErrorContains(t, why, "watch "+dir+": ")
	_, err := s.Fetch(context.Background())
	require.ErrorContains(t, err, path)

	require.NoError(t, os.Mkdir(dir, 0o755))
	write(t, path, "[2001:db8::1]:443\n")
	waitFor(t, s, "[2001:db8::1]:443")
}

// When the watched directory goes, its watch goes with it: the source
// turns to polling, and sees the directory and file when they are back.
func TestWaitDirectoryRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	require.NoError(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "backends")
	write(t, path, "10.0.0.1:80\n")
	s := newSource(t, path)
	_, err := s.Fetch(context.Background())
	require.NoError(t, err)

	require.NoError(t, os.RemoveAll(dir))
	waitFor(t, s, "error: backends file: open "+path)
	require.Eventually(t, func() bool { m, _ := s.Mode(); return m == Poll }, seen, 10*time.Millisecond)
	_, why := s.Mode()
	require.EqualError(t, why, "watch "+dir+": the directory was removed")

	require.NoError(t, os.Mkdir(dir, 0o755))
	write(t, path, "10.0.0.2:80\n")
	waitFor(t, s, "10.0.0.2:80")
}

// An overflow of inotify's queue may have lost the file's events: Wait
// returns at once, and the source polls from then on.
func TestWaitOverflow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "backends")
	write(t, path, "10.0.0.1:80\n")
	s := newSource(t, path)
	_, err := s.Fetch(context.Background())
	require.NoError(t, err)
	quiet(t, s)

	s.watcher.Errors <- fsnotify.ErrEventOverflow
	ctx, cancel := context.WithTimeout(context.Background(), seen)
	defer cancel()
	require.NoError(t, s.Wait(ctx))
	mode, why := s.Mode()
	require.Equal(t, Poll, mode)
	require.ErrorIs(t, why, fsnotify.ErrEventOverflow)
	require.Equal(t, fmt.Sprintf("watch %s: %v", dir, fsnotify.ErrEventOverflow), why.Error())

	_, err = s.Fetch(context.Background())
	require.NoError(t, err)
	quiet(t, s)
	write(t, path, "10.0.0.1:80\n10.0.0.2:80\n")
	waitFor(t, s, "10.0.0.1:80,10.0.0.2:80")
}

func TestWaitEndsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backends")
	write(t, path, "10.0.0.1:80\n")
	for _, opts := range [][]Option{nil, {PollEvery(DefaultPoll)}} {
		s := newSource(t, path, opts...)
		_, err := s.Fetch(context.Background())
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.ErrorIs(t, s.Wait(ctx), context.Canceled)
		_, err = s.Fetch(ctx)
		require.ErrorIs(t, err, context.Canceled)
	}
}
