package service

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// naiveTail is the obvious, slow answer tailLines must give.
func naiveTail(content string, n int, withPartial bool, f Filter) []string {
	parts := strings.Split(content, "\n")
	last := parts[len(parts)-1]
	parts = parts[:len(parts)-1]
	if withPartial && last != "" {
		parts = append(parts, last)
	}
	var kept []string
	for _, l := range parts {
		if s, ok := f.Keep(l); ok {
			kept = append(kept, s)
		}
	}
	if len(kept) > n {
		kept = kept[len(kept)-n:]
	}
	if len(kept) == 0 {
		return nil
	}
	return kept
}

func TestTailLinesMatchesReadingEverything(t *testing.T) {
	// Lines of varied length, some longer than a read block, so that
	// lines straddle the blocks tailLines reads backwards.
	var b strings.Builder
	for i := range 3000 {
		switch {
		case i%500 == 7:
			fmt.Fprintf(&b, `{"level":"INFO","msg":"long %d","part":"bgp","pad":"%s"}`+"\n", i, strings.Repeat("x", 70<<10))
		case i%3 == 0:
			fmt.Fprintf(&b, `{"level":"INFO","msg":"line %d","part":"bgp"}`+"\n", i)
		case i%3 == 1:
			fmt.Fprintf(&b, "plain %d\n", i)
		default:
			b.WriteString("\n")
		}
	}
	full := b.String()
	for _, content := range []string{full, full + "partial line", "", "only partial", "\n", "a\nb"} {
		r := strings.NewReader(content)
		for _, n := range []int{0, 1, 2, 5, 100, 1001, 5000} {
			for _, withPartial := range []bool{false, true} {
				for _, f := range []Filter{FilterAll, FilterBGP} {
					got, complete, err := tailLines(r, int64(len(content)), n, withPartial, f.Keep)
					require.NoError(t, err)
					want := naiveTail(content, n, withPartial, f)
					require.Equal(t, len(want), len(got), "n=%d partial=%v filter=%s size=%d", n, withPartial, f, len(content))
					require.Equal(t, want, got, "n=%d partial=%v filter=%s size=%d", n, withPartial, f, len(content))
					if n > 0 {
						require.Equal(t, int64(strings.LastIndexByte(content, '\n')+1), complete, "follow resumes after the last newline")
					}
				}
			}
		}
	}
}

// syncBuffer is written by FileLogs while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	require.NoError(t, err)
	_, err = f.WriteString(text)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func TestFollowSurvivesRotationAndTruncation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ober.log")
	appendFile(t, path, "old 1\nold 2\npart")
	ctx, cancel := context.WithCancel(context.Background())
	var out, notes syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- FileLogs(ctx, path, &out, LogOptions{Lines: 1, Follow: true, Filter: FilterAll, Poll: 10 * time.Millisecond, Notice: &notes})
	}()
	waitFor := func(want string) {
		t.Helper()
		require.Eventually(t, func() bool { return strings.HasSuffix(out.String(), want) }, 5*time.Second, 5*time.Millisecond,
			"want output ending in %q, have %q", want, out.String())
	}
	waitFor("old 2\n")
	appendFile(t, path, "ial done\nnew 1\n")
	waitFor("old 2\npartial done\nnew 1\n")

	// logrotate's default: rename, then the writer opens a new file.
	require.NoError(t, os.Rename(path, path+".1"))
	appendFile(t, path+".1", "late in old\n")
	appendFile(t, path, "rotated 1\n")
	waitFor("late in old\nrotated 1\n")

	// copytruncate: the same file starts again from nothing.
	require.NoError(t, os.Truncate(path, 0))
	time.Sleep(50 * time.Millisecond) // a few polls see the shorter file
	appendFile(t, path, "after truncate\n")
	waitFor("rotated 1\nafter truncate\n")
	require.Contains(t, notes.String(), "was replaced")
	require.Contains(t, notes.String(), "was truncated")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "Ctrl-C ends following cleanly")
	case <-time.After(5 * time.Second):
		t.Fatal("following did not end with its context")
	}
	require.Equal(t, "old 2\npartial done\nnew 1\nlate in old\nrotated 1\nafter truncate\n", out.String())
}
