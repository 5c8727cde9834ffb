package bench

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseMachineCPU(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	m, err := parseMachineCPU("cpu  1000 50 300 9000 40 10 200 0 0 0")
	require.NoError(t, err)
	// Busy leaves idle and iowait out: (1000+50+300+10+200)/100.
	require.InDelta(t, 15.6, m.busy, 1e-9)
	require.InDelta(t, 2.0, m.softirq, 1e-9)
	d := m.sub(machineCPU{busy: 10, softirq: 1.5})
	require.InDelta(t, 5.6, d.busy, 1e-9)
	require.InDelta(t, 0.5, d.softirq, 1e-9)

	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7", "cpu 1 2 3", "cpu 1 2 x 4 5 6 7"} {
		_, err := parseMachineCPU(bad)
		require.Error(t, err, bad)
	}
	m, err = readMachineCPU()
	require.NoError(t, err)
	require.Positive(t, m.busy)
}

func TestMergeMachineFigures(t *testing.T) {
	a := Throughput{Bytes: 1e9, Seconds: 1, MachineCPUSeconds: 1.5, SoftirqCPUSeconds: 0.5, ClientTxPackets: 100, ClientRxPackets: 700}
	b := Throughput{Bytes: 1e9, Seconds: 1, MachineCPUSeconds: 1.7, SoftirqCPUSeconds: 0.4, ClientTxPackets: 120, ClientRxPackets: 650}
	m := a.merge(b)
	require.InDelta(t, 3.2, m.MachineCPUSeconds, 1e-9)
	require.InDelta(t, 0.9, m.SoftirqCPUSeconds, 1e-9)
	require.Equal(t, int64(220), m.ClientTxPackets)
	require.Equal(t, int64(1350), m.ClientRxPackets)
}
