package plan

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ober-ingress/ober/control/config"
)

// DecideSteering turns instances.steering into the dataplane's flag, with
// the reason in words for `ober status`. rxQueues are the receive queues
// of each interface of ifaces (absent: unknown).
//
// The cpumap hop moves a packet's receive work (building its skb, TCP)
// from the CPU the NIC's RSS chose to the CPU of the flow's instance. What
// it buys is the other half of that: a NIC with fewer receive queues than
// instances leaves the receive work of every flow on the few CPUs its
// queues interrupt, and the hop spreads it over the instances' CPUs, as
// RPS would. With at least one queue per instance, RSS spreads the work
// already and the hop only moves it next to the instance: on a 2-vCPU VM
// that cost 10-20 % of GET throughput against no hop (BENCHMARKS.md), so
// auto leaves it off there.
func DecideSteering(mode config.Steering, instances int, ifaces []string, rxQueues map[string]int) (bool, string) {
	switch mode {
	case config.SteeringOn:
		return true, "instances.steering: on"
	case config.SteeringOff:
		return false, "instances.steering: off"
	}
	if instances <= 1 {
		return false, "auto: one instance, nothing to spread"
	}
	var few []string
	for _, name := range ifaces {
		q, ok := rxQueues[name]
		switch {
		case !ok:
			few = append(few, name+": receive queues unknown")
		case q < instances:
			few = append(few, fmt.Sprintf("%s: %d receive queue(s)", name, q))
		}
	}
	if len(few) > 0 {
		return true, fmt.Sprintf("auto: fewer receive queues than the %d instances (%s), the hop spreads the receive work", instances, strings.Join(few, ", "))
	}
	return false, fmt.Sprintf("auto: every interface has at least one receive queue per instance (%d), the NIC's RSS spreads the receive work", instances)
}

// rxQueues counts the receive queues of each interface that has a
// /sys/class/net entry in this network namespace's sysfs.
func rxQueues(sysfs string, ifaces []string) map[string]int {
	out := map[string]int{}
	for _, name := range ifaces {
		m, err := filepath.Glob(filepath.Join(sysfs, "class", "net", name, "queues", "rx-*"))
		if err != nil || len(m) == 0 {
			continue
		}
		out[name] = len(m)
	}
	return out
}
