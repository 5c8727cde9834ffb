package mgmt

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
)

// crashEnv, set to a directory and a first index ("dir:17"), makes
// TestCrashChild the writer TestCrashSafety kills.
const crashEnv = "OBER_MGMT_CRASH_CHILD"

func crashBackend(i int) (name string, body json.RawMessage) {
	return fmt.Sprintf("k%d", i), json.RawMessage(fmt.Sprintf(`{"address": "10.9.%d.%d:5432", "weight": %d}`, i/250, i%250+1, i%256+1))
}

// TestCrashChild writes backends k<first>, k<first+1>, ... to the
// store in its directory until it is killed, printing "ack <i>" once
// each write is acknowledged.
func TestCrashChild(t *testing.T) {
	v := os.Getenv(crashEnv)
	if v == "" {
		t.Skip("the child of TestCrashSafety")
	}
	dir, first, _ := strings.Cut(v, ":")
	i, err := strconv.Atoi(first)
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{Path: filepath.Join(dir, "ober.yaml"), RuntimeDir: filepath.Join(dir, "run"), StateDir: filepath.Join(dir, "state"), Applier: &fakeApplier{}}
	for ; ; i++ {
		name, body := crashBackend(i)
		if _, err := s.Do(context.Background(), Change{Verb: Put, Kind: KindBackend, Service: "db", Backend: name, Body: body}); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			os.Exit(3)
		}
		// Unbuffered: the line is out before the next write starts.
		if _, err := fmt.Fprintf(os.Stdout, "ack %d\n", i); err != nil {
			os.Exit(4)
		}
	}
}

// TestCrashSafety kills a writer with SIGKILL at random points, 200
// acknowledged writes in all: after each kill the file loads and holds
// every write acknowledged so far.
func TestCrashSafety(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("in the child")
	}
	if testing.Short() {
		t.Skip("about 15 s of writes and kills")
	}
	s, _ := newStore(t, site)
	mustMkdir(t, s)
	dir := filepath.Dir(s.Path)
	acked := map[int]bool{}
	next, kills := 0, 0
	for len(acked) < 200 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d", crashEnv, dir, next))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		sc := bufio.NewScanner(out)
		// Killed after a few acknowledged writes, at a random moment of
		// the next one.
		want, got := 1+rand.IntN(6), 0
		for got < want && sc.Scan() {
			n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ack "))
			require.NoError(t, err, sc.Text())
			acked[n] = true
			next = max(next, n+1)
			got++
		}
		time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		for sc.Scan() {
			n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ack "))
			require.NoError(t, err, sc.Text())
			acked[n] = true
			next = max(next, n+1)
		}
		err = cmd.Wait()
		require.Error(t, err, "the child exited by itself: %s", stderr.String())
		require.NotContains(t, stderr.String(), "write:")
		kills++

		cfg, err := config.Load(s.Path)
		require.NoError(t, err, "after kill %d", kills)
		have := map[string]bool{}
		for _, b := range cfg.Services[2].Backends {
			have[b.Name] = true
		}
		for i := range acked {
			name, _ := crashBackend(i)
			require.True(t, have[name], "acknowledged write %d lost after kill %d", i, kills)
		}
	}
	t.Logf("%d acknowledged writes, %d kills", len(acked), kills)
	// The generations still read, and count the service's changes.
	raw, err := s.Service(context.Background(), "db")
	require.NoError(t, err)
	require.GreaterOrEqual(t, decoded(t, raw)["generation"], float64(len(acked)))
}
