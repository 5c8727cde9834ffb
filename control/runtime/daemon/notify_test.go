package daemon

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/runtime/sdnotify"
)

// The watchdog pings only while the main loop answers: a loop that stops
// turning (here: nobody reads ask) lets systemd's watchdog fire.
func TestWatchdogNeedsTheMainLoop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	defer c.Close()
	n, err := sdnotify.New(path)
	require.NoError(t, err)
	d := &Daemon{opts: Options{Notifier: n}, log: slog.New(slog.DiscardHandler)}
	pings := make(chan time.Time, 100)
	go func() {
		buf := make([]byte, 512)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			if string(buf[:k]) == "WATCHDOG=1\n" {
				pings <- time.Now()
			}
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ask := make(chan chan struct{})
	go d.pingWatchdog(ctx, 100*time.Millisecond, ask)

	// Wedged: nobody answers for 500ms, five periods.
	select {
	case at := <-pings:
		t.Fatalf("a ping at %v although the main loop never answered", at)
	case <-time.After(500 * time.Millisecond):
	}

	// The loop turns again: pings every 50ms.
	loopCtx, stopLoop := context.WithCancel(ctx)
	go func() {
		for {
			select {
			case r := <-ask:
				close(r)
			case <-loopCtx.Done():
				return
			}
		}
	}()
	start := time.Now()
	got := 0
	for got < 5 {
		select {
		case <-pings:
			got++
		case <-time.After(time.Second):
			t.Fatalf("%d pings in %v after the loop answered again", got, time.Since(start))
		}
	}
	require.Less(t, time.Since(start), 500*time.Millisecond, "five pings at half the 100ms timeout")

	// Wedged again: the pings stop within a period.
	stopLoop()
	time.Sleep(60 * time.Millisecond)
	for len(pings) > 0 {
		<-pings
	}
	select {
	case at := <-pings:
		t.Fatalf("a ping at %v after the main loop stopped answering", at)
	case <-time.After(300 * time.Millisecond):
	}
}
