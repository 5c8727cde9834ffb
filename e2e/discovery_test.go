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

	"github.com/ober-ingress/ober/control/api"
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

	// A malformed line is refused by name, the rest kept; the pool's
	// discovery is in status and metrics.
	require.NoError(t, os.WriteFile(list, []byte(addrs[1].String()+"\n10.98.2.99:0\n"), 0o644))
	disc := func() api.DiscoveryStatus {
		for _, ds := range s.Status().Daemon.Discovery {
			if ds.Pool == "services[disc]" {
				return ds
			}
		}
		return api.DiscoveryStatus{}
	}
	require.Eventually(t, func() bool { return len(disc().Problems) == 1 }, 10*time.Second, 100*time.Millisecond)
	ds := disc()
	require.Equal(t, config.DiscoveryFile, ds.Kind)
	require.Equal(t, []string{addrs[1].String()}, ds.Backends)
	require.Contains(t, ds.Problems[0], "line 2")
	require.Contains(t, ds.Problems[0], "port 0")
	require.Contains(t, s.Metrics(), `ober_discovery_up{kind="file",pool="services[disc]"} 1`)

	// The file gone: keeplast serves on with the last backends and says
	// why.
	require.NoError(t, os.Remove(list))
	require.Eventually(t, func() bool { return disc().LastError != "" }, 10*time.Second, 100*time.Millisecond)
	require.Contains(t, disc().LastError, "no such file or directory")
	require.Equal(t, "b1", mgmtRead(t, s, 7900), "keeplast")
	require.Contains(t, s.Metrics(), `ober_discovery_up{kind="file",pool="services[disc]"} 0`)
}
