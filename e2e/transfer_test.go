package e2e

import (
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// TestServeReloadKeepsLongTransfers: a reload (a certificate rotation, a
// backend change) cuts no S3 transfer. A 600 MiB download read at
// 10 MiB/s, about a minute, survives a reload started 5 s in, byte for
// byte, although the drain time is 3 s: the replaced instance finishes it
// within timeouts.max_transfer (1 h), and status counts its generation
// meanwhile.
func TestServeReloadKeepsLongTransfers(t *testing.T) {
	const size, rate = 600 << 20, 10 << 20 // bytes, bytes per second
	s := nodetest.New(t, oberBin, 2)
	s.WriteConfig(s.Config(nodetest.Params{ServedByHeader: true}))
	s.Start()

	type result struct {
		n   int
		err error
	}
	got := make(chan result, 1)
	start := time.Now()
	client := s.HTTPClient()
	go func() {
		resp, err := client.Get(fmt.Sprintf("https://%s%s?n=%d", nodetest.VIP, nodetest.BytesPath, size))
		if err != nil {
			got <- result{0, err}
			return
		}
		defer resp.Body.Close()
		buf := make([]byte, 1<<20)
		n := 0
		for {
			k, err := io.ReadFull(resp.Body, buf)
			for i := range k {
				if buf[i] != nodetest.PatternByte(n+i) {
					got <- result{n + i, fmt.Errorf("byte %d differs", n+i)}
					return
				}
			}
			n += k
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				if n != size {
					err = fmt.Errorf("%d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
				} else {
					err = nil
				}
				got <- result{n, err}
				return
			}
			if err != nil {
				got <- result{n, err}
				return
			}
			// Read at the pace of a slow client.
			if ahead := time.Duration(n)*time.Second/rate - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}()

	time.Sleep(5 * time.Second)
	reloaded := nodetest.Params{ServedByHeader: true, HealthInterval: 300 * time.Millisecond}
	s.WriteConfig(s.Config(reloaded))
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.Generation == 2 }, 15*time.Second, 20*time.Millisecond,
		"reload applied\n%s", s.Log())
	reloadedAt := time.Now()
	// Past the drain time, the old generation still carries the transfer.
	time.Sleep(5 * time.Second)
	st := s.Status().Daemon.HAProxy
	require.Equal(t, 1, st.OldGenerations, "the replaced generation still finishes the transfer")
	require.NotEmpty(t, st.Retired)
	for _, r := range st.Retired {
		require.Equal(t, uint64(1), r.Generation)
		require.WithinDuration(t, r.RetiredAt.Add(time.Hour), r.StopBy, time.Second, "stopped by max_transfer at the latest")
	}
	require.Contains(t, s.Metrics(), "ober_reloads_total 1")

	var r result
	select {
	case r = <-got:
	case <-time.After(3 * time.Minute):
		t.Fatal("the download did not end within 3 minutes")
	}
	require.NoError(t, r.err, "after %v, %v after the reload", time.Since(start), time.Since(reloadedAt))
	t.Logf("%d MiB in %v, through a reload %v in; the replaced generation served it to the end", r.n>>20, time.Since(start).Round(time.Second), reloadedAt.Sub(start).Round(time.Second))
	// The client lets its kept-alive connection go: the replaced
	// instances have nothing left and exit.
	client.CloseIdleConnections()
	require.Eventually(t, func() bool { return s.Status().Daemon.HAProxy.OldGenerations == 0 }, 10*time.Second, 50*time.Millisecond,
		"the replaced instances exit once their transfers are done")
}
