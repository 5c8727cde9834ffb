package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// userHZ is the unit of /proc/stat's times (USER_HZ, 100 on Linux).
const userHZ = 100

// machineCPU is the whole machine's CPU time so far, from /proc/stat's
// "cpu" line: busy (everything but idle and iowait) and, of it, softirq,
// where the kernel's packet receive work runs.
type machineCPU struct {
	busy, softirq float64 // seconds
}

func (a machineCPU) sub(b machineCPU) machineCPU {
	return machineCPU{busy: a.busy - b.busy, softirq: a.softirq - b.softirq}
}

func readMachineCPU() (machineCPU, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if !s.Scan() {
		return machineCPU{}, errors.New("/proc/stat: empty")
	}
	return parseMachineCPU(s.Text())
}

// parseMachineCPU reads "cpu  user nice system idle iowait irq softirq
// steal ...".
func parseMachineCPU(line string) (machineCPU, error) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("/proc/stat: %q is not the cpu line", line)
	}
	var v [7]float64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("/proc/stat: field %d of %q: %w", i+1, line, err)
		}
		v[i] = float64(n) / userHZ
	}
	user, nice, system, irq, softirq := v[0], v[1], v[2], v[5], v[6]
	return machineCPU{busy: user + nice + system + irq + softirq, softirq: softirq}, nil
}

// clientPackets are the packets the client sent to and received from a
// target, counted on the client's end of its link (the node's end counts
// XDP's redirects apart).
func (t *topology) clientPackets(target string) (tx, rx uint64, err error) {
	name := "veth-c"
	if target == TargetHAProxy || t.aa {
		name = "veth-c2"
	}
	err = t.client.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		st := l.Attrs().Statistics
		if st == nil {
			return fmt.Errorf("%s: no statistics", name)
		}
		tx, rx = st.TxPackets, st.RxPackets
		return nil
	})
	return tx, rx, err
}
