package plan

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
)

func TestDecideSteering(t *testing.T) {
	two := []string{"eth0", "eth1"}
	for _, tt := range []struct {
		name      string
		mode      config.Steering
		instances int
		queues    map[string]int
		want      bool
		reason    string
	}{
		{"on whatever the queues", config.SteeringOn, 4, map[string]int{"eth0": 8, "eth1": 8}, true, "instances.steering: on"},
		{"off whatever the queues", config.SteeringOff, 4, map[string]int{"eth0": 1, "eth1": 1}, false, "instances.steering: off"},
		{"auto, a queue per instance on every link", config.SteeringAuto, 4, map[string]int{"eth0": 4, "eth1": 16}, false,
			"auto: every interface has at least one receive queue per instance (4), the NIC's RSS spreads the receive work"},
		{"auto, one link short of queues", config.SteeringAuto, 4, map[string]int{"eth0": 4, "eth1": 2}, true,
			"auto: fewer receive queues than the 4 instances (eth1: 2 receive queue(s)), the hop spreads the receive work"},
		{"auto, a link's queues unknown", config.SteeringAuto, 2, map[string]int{"eth0": 2}, true,
			"auto: fewer receive queues than the 2 instances (eth1: receive queues unknown), the hop spreads the receive work"},
		{"auto, one instance", config.SteeringAuto, 1, map[string]int{"eth0": 1, "eth1": 1}, false,
			"auto: one instance, nothing to spread"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			on, reason := DecideSteering(tt.mode, tt.instances, two, tt.queues)
			require.Equal(t, tt.want, on)
			require.Equal(t, tt.reason, reason)
		})
	}
}

func TestRXQueues(t *testing.T) {
	sys := t.TempDir()
	for _, q := range []string{"eth0/queues/rx-0", "eth0/queues/rx-1", "eth0/queues/tx-0", "eth1/queues/rx-0"} {
		require.NoError(t, os.MkdirAll(filepath.Join(sys, "class", "net", q), 0o755))
	}
	require.Equal(t, map[string]int{"eth0": 2, "eth1": 1}, rxQueues(sys, []string{"eth0", "eth1", "missing"}))
}
