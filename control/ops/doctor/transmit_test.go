package doctor

import (
	"context"
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
			r := one(t, checkTransmit(context.Background(), env, baseConfig()), "transmit eth1")
			requireStatus(t, r, tc.status, tc.want...)
			require.Equal(t, transmitWindow, slept)
		})
	}
	// No counters to read (no sysfs): no result; the interface check
	// speaks for a missing interface.
	require.Empty(t, checkTransmit(context.Background(), newFake(t).env(), baseConfig()))
}

// Behind a qdisc a stopped queue drops, or holds its backlog, in the
// qdisc: tc's counters count too.
func TestCheckTransmitQdisc(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after string
		status        Status
		want          string
	}{
		{"drops in the qdisc", `[{"kind":"pfifo_fast","root":true,"drops":10,"qlen":0}]`, `[{"kind":"pfifo_fast","root":true,"drops":60,"qlen":0}]`, Fail, "dropping 50"},
		{"a backlog that stays", `[{"kind":"mq","root":true,"drops":0,"qlen":900}]`, `[{"kind":"mq","root":true,"drops":0,"qlen":1000}]`, Fail, "1000 packets waiting in its qdisc"},
		{"children do not count twice", `[{"kind":"mq","root":true,"drops":0,"qlen":0},{"kind":"pfifo_fast","parent":"1:1","drops":0,"qlen":0}]`,
			`[{"kind":"mq","root":true,"drops":0,"qlen":0},{"kind":"pfifo_fast","parent":"1:1","drops":7,"qlen":0}]`, Pass, "quiet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t).nic("eth1", "virtio_net", 1).
				file("sys/class/net/eth1/operstate", "up\n").
				file("sys/class/net/eth1/flags", "0x1003\n").
				file("sys/class/net/eth1/statistics/tx_packets", "100\n").
				file("sys/class/net/eth1/statistics/tx_dropped", "0\n").
				file("sys/class/net/eth1/statistics/tx_errors", "0\n")
			key := "tc -s -j qdisc show dev eth1"
			f.exec[key] = tc.before
			env := f.env()
			env.Sleep = func(time.Duration) { f.exec[key] = tc.after }
			r := one(t, checkTransmit(context.Background(), env, baseConfig()), "transmit eth1")
			requireStatus(t, r, tc.status, tc.want)
		})
	}
}
