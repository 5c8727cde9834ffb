package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/require"
)

// terminal drives the binary through a pseudo-terminal, as an operator
// at a console would.
type terminal struct {
	t   *testing.T
	cmd *exec.Cmd
	f   *os.File

	mu   sync.Mutex
	out  bytes.Buffer
	seen int // how far expect has read
	done chan struct{}
}

func startTerminal(t *testing.T, args ...string) *terminal {
	t.Helper()
	cmd := exec.Command(oberBin, args...)
	f, err := pty.Start(cmd)
	require.NoError(t, err, "start ober on a pseudo-terminal")
	tm := &terminal{t: t, cmd: cmd, f: f, done: make(chan struct{})}
	go func() {
		defer close(tm.done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			tm.mu.Lock()
			tm.out.Write(buf[:n])
			tm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		f.Close()
	})
	return tm
}

// expect waits until the terminal shows s after what was read before.
func (tm *terminal) expect(s string) {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		tm.mu.Lock()
		text := tm.out.String()
		tm.mu.Unlock()
		if i := strings.Index(text[tm.seen:], s); i >= 0 {
			tm.seen += i + len(s)
			return
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("the terminal never showed %q; it shows:\n%s", s, text[tm.seen:])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answer waits for the prompt, then types the answer and Enter.
func (tm *terminal) answer(prompt, text string) {
	tm.t.Helper()
	tm.expect(prompt)
	_, err := tm.f.Write([]byte(text + "\r"))
	require.NoError(tm.t, err)
}

// wait returns the exit code.
func (tm *terminal) wait() int {
	tm.t.Helper()
	err := tm.cmd.Wait()
	<-tm.done
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	require.NoError(tm.t, err)
	return 0
}

func (tm *terminal) String() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

// press waits for the prompt, then sends keys as they are (e.g. "\x03",
// Ctrl-C).
func (tm *terminal) press(prompt, keys string) {
	tm.t.Helper()
	tm.expect(prompt)
	_, err := tm.f.Write([]byte(keys))
	require.NoError(tm.t, err)
}

// output is everything the terminal showed, with its CRLF line ends made
// plain.
func (tm *terminal) output() string {
	return strings.ReplaceAll(tm.String(), "\r\n", "\n")
}
