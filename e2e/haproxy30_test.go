package e2e

import (
	"context"
	"crypto/tls"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/haproxytest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// TestServeHAProxy30 runs a node whose haproxy.binary is the HAProxy 3.0
// wrapper of `make deps`: status says 3.0 with its features on, TLS
// requests land on both instances, a reload replaces them and they
// serve again, and `ober status` shows the version and the features.
func TestServeHAProxy30(t *testing.T) {
	bin := haproxytest.V30(t)
	s := nodetest.New(t, oberBin, 2)
	cfg := s.Config(nodetest.Params{ServedByHeader: true})
	cfg.HAProxy.Binary = bin
	s.WriteConfig(cfg)
	s.Start()

	st := s.Status()
	h := st.Daemon.HAProxy
	require.Equal(t, bin, h.Binary)
	require.True(t, strings.HasPrefix(h.Version, "3.0."), "version %q", h.Version)
	require.NotEmpty(t, h.Features)
	for _, f := range h.Features {
		require.True(t, f.Enabled, "feature %s (%s, since %s) is on with 3.0", f.Name, f.Directive, f.Since)
	}

	// Every instance serves TLS; the instance a flow lands on is the one
	// Maglev predicts, so a handful of source ports reach both.
	served := func() map[int]bool {
		seen := map[int]bool{}
		require.Eventually(t, func() bool {
			for port := uint16(40000); port < 40064 && len(seen) < 2; port++ {
				i, err := fetchServedBy(context.Background(), s, port)
				if err == nil {
					seen[i] = true
				}
			}
			return len(seen) == 2
		}, 10*time.Second, 100*time.Millisecond, "TLS requests reach both 3.0 instances\n%s", s.Log())
		return seen
	}
	served()

	before := h.Instances
	reloaded := nodetest.Params{ServedByHeader: true, HealthInterval: 300 * time.Millisecond}
	cfg = s.Config(reloaded)
	cfg.HAProxy.Binary = bin
	s.WriteConfig(cfg)
	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return s.Status().Daemon.Config.Generation == 2 }, 15*time.Second, 20*time.Millisecond,
		"reload applied\n%s", s.Log())
	after := s.Status().Daemon.HAProxy
	require.Equal(t, uint64(1), after.Reloads)
	for i, in := range after.Instances {
		require.NotEqual(t, before[i].PID, in.PID, "instance %d replaced", i)
	}
	served()
	c, err := s.ClientDialer().DialContext(context.Background(), "tcp4", nodetest.VIP.String()+":443")
	require.NoError(t, err)
	tc := tls.Client(c, s.TLSConfig())
	require.NoError(t, tc.Handshake())
	require.Equal(t, uint16(tls.VersionTLS13), tc.ConnectionState().Version)
	tc.Close()

	res := ober(t, s.Node, 0, "--config", s.ConfigPath, "--bpffs-root", s.Root, "status")
	require.Regexp(t, `(?m)^haproxy +`+regexp.QuoteMeta(bin)+` 3\.0\.\d+, 1 reloads`, res.stdout)
	require.Regexp(t, `(?m)^features +h2-frontend-window=on client-handshake-timeout=on h2-glitches-threshold=on h2-max-total-streams=on$`, res.stdout)
}
