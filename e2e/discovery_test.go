package e2e

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// A tcp service whose backends a file names: the first plan has the
// file's backend, a backend added to the file takes connections, and one
// removed takes no new ones.
func TestDiscoveryFile(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	var addrs []netip.AddrPort
	for i, name := range []string{"b0", "b1"} {
		a := netip.AddrPortFrom(s.BackendIP(i), 9400)
		addrs = append(addrs, a)
		tcpSvcListen(t, s.Backend(), a.String(), func(c net.Conn) { io.WriteString(c, name+"\n") })
	}
	list := filepath.Join(t.TempDir(), "backends.txt")
	write := func(lines ...netip.AddrPort) {
		text := "# the backends of disc\n"
		for _, a := range lines {
			text += a.String() + "\n"
		}
		tmp := list + ".tmp"
		require.NoError(t, os.WriteFile(tmp, []byte(text), 0o644))
		require.NoError(t, os.Rename(tmp, list))
	}
	write(addrs[0])
	c := s.Config(nodetest.Params{Instances: 1})
	c.Services = append(c.Services, config.Service{Name: "disc", Mode: config.ModeTCP, Port: 7900, Balance: config.BalanceRoundRobin,
		Discovery: &config.Discovery{Kind: config.DiscoveryFile, Path: list, Interval: config.Duration{Duration: 30 * time.Second}}})
	s.WriteConfig(c)
	s.Start()
	require.Equal(t, "b0", mgmtRead(t, s, 7900), "the first plan has the file's backend")

	write(addrs[0], addrs[1])
	require.Eventually(t, func() bool {
		seen := map[string]bool{}
		for range 6 {
			seen[mgmtRead(t, s, 7900)] = true
		}
		return seen["b0"] && seen["b1"]
	}, 10*time.Second, 200*time.Millisecond, "a backend added to the file takes connections (inotify, not the 30 s interval)")

	write(addrs[1])
	require.Eventually(t, func() bool {
		for range 6 {
			if mgmtRead(t, s, 7900) != "b1" {
				return false
			}
		}
		return true
	}, 10*time.Second, 200*time.Millisecond, "a backend removed from the file takes no new connections")
	st := s.Status()
	var states []string
	for _, sv := range st.Daemon.Services {
		if sv.Name == "disc" {
			for _, b := range sv.Backends {
				states = append(states, fmt.Sprintf("%s %s", b.Name, b.Admin))
			}
		}
	}
	require.Contains(t, states, "10.98.2.10_9400 drain", "the removed backend drains: %v", states)
}
