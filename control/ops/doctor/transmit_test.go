package doctor

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCheckTransmit(t *testing.T) {
	type counters struct {
		oper          string
		flags         string
		packets, drop uint64
	}
	up := func(p, d uint64) counters { return counters{"up", "0x1003", p, d} }
	for _, tc := range []struct {
		name          string
		before, after counters
		status        Status
		want          []string
	}{
		{"sending", up(100, 0), up(180, 2), Pass, []string{"sent 80 packets in 2s, 2 dropped"}},
		{"quiet", up(100, 0), up(100, 0), Pass, []string{"quiet"}},
		{"stopped", up(100, 5), up(100, 41), Fail, []string{
			"eth1 is up but sent no packet in 2s while dropping 36 and failing 0: its transmit queue is stopped",
			"give its peer an XDP program", "docs/veth-xdp-tx-wedge.md", "ethtool -S eth1",
		}},
		{"a driver without carrier state", counters{"unknown", "0x1003", 100, 0}, counters{"unknown", "0x1003", 100, 9}, Fail, []string{"transmit queue is stopped"}},
		{"down", up(100, 0), counters{"down", "0x1002", 100, 3}, Warn, []string{"eth1 is down", "ip link set eth1 up"}},
		{"made anew", up(100, 50), up(3, 0), Pass, []string{"made anew"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t).nic("eth1", "virtio_net", 1)
			write := func(c counters) {
				f.file("sys/class/net/eth1/operstate", c.oper+"\n").
					file("sys/class/net/eth1/flags", c.flags+"\n").
					file("sys/class/net/eth1/statistics/tx_packets", fmt.Sprintln(c.packets)).
					file("sys/class/net/eth1/statistics/tx_dropped", fmt.Sprintln(c.drop)).
					file("sys/class/net/eth1/statistics/tx_errors", "0\n")
			}
			write(tc.before)
			env := f.env()
			var slept time.Duration
			env.Sleep = func(d time.Duration) { slept += d; write(tc.after) }
			r := one(t, checkTransmit(env, baseConfig()), "transmit eth1")
			requireStatus(t, r, tc.status, tc.want...)
			require.Equal(t, transmitWindow, slept)
		})
	}
	// No counters to read (no sysfs): no result; the interface check
	// speaks for a missing interface.
	require.Empty(t, checkTransmit(newFake(t).env(), baseConfig()))
}
