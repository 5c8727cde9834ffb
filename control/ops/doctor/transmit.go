package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/txwatch"
)

// transmitWindow is how long doctor watches the interfaces' transmit
// counters.
const transmitWindow = 2 * time.Second

// readTx reads an interface's state and transmit counters from sysfs,
// and adds its root qdisc's drops and backlog (`tc -s -j qdisc`): behind
// a qdisc, a stopped queue fills it and drops there, not in the driver.
func readTx(ctx context.Context, env Env, iface string) (txwatch.Counters, error) {
	dir := filepath.Join("sys/class/net", iface)
	oper, err := env.readTrim(filepath.Join(dir, "operstate"))
	if err != nil {
		return txwatch.Counters{}, err
	}
	flags, err := env.readTrim(filepath.Join(dir, "flags"))
	if err != nil {
		return txwatch.Counters{}, err
	}
	f, err := strconv.ParseUint(strings.TrimPrefix(flags, "0x"), 16, 32)
	if err != nil {
		return txwatch.Counters{}, fmt.Errorf("%s/flags: %q: %w", dir, flags, err)
	}
	s := txwatch.Counters{Up: f&1 != 0 && (oper == "up" || oper == "unknown")}
	for _, c := range []struct {
		name string
		to   *uint64
	}{{"tx_packets", &s.Packets}, {"tx_dropped", &s.Dropped}, {"tx_errors", &s.Errors}} {
		v, err := env.readTrim(filepath.Join(dir, "statistics", c.name))
		if err != nil {
			return txwatch.Counters{}, err
		}
		if *c.to, err = strconv.ParseUint(v, 10, 64); err != nil {
			return txwatch.Counters{}, fmt.Errorf("%s/statistics/%s: %q: %w", dir, c.name, v, err)
		}
	}
	if out, err := env.exec(ctx, "tc", "-s", "-j", "qdisc", "show", "dev", iface); err == nil {
		var qs []struct {
			Root  bool   `json:"root"`
			Drops uint64 `json:"drops"`
			Qlen  uint64 `json:"qlen"`
		}
		if json.Unmarshal(out, &qs) == nil {
			for _, q := range qs {
				if q.Root {
					s.Dropped += q.Drops
					s.Queued = q.Qlen
				}
			}
		}
	}
	return s, nil
}

// checkTransmit watches node.interfaces for transmitWindow and judges
// them as the daemon does (txwatch): a link that is up and sends nothing
// while its driver or qdisc drops, fails or holds what it is given has a
// stopped transmit queue. The node then loses its BGP sessions and
// health checks, and the counters are the only place that says why. An
// interface whose counters cannot be read is left to the interface
// check.
func checkTransmit(ctx context.Context, env Env, cfg *config.Config) []Result {
	w := txwatch.New(transmitWindow)
	start := time.Unix(0, 0)
	before := map[string]txwatch.Counters{}
	for _, iface := range cfg.Node.Interfaces {
		if c, err := readTx(ctx, env, iface); err == nil {
			before[iface] = c
			w.Observe(iface, start, c)
		}
	}
	if len(before) == 0 {
		return nil
	}
	env.sleep(transmitWindow)
	var rs []Result
	for _, iface := range cfg.Node.Interfaces {
		b, ok := before[iface]
		if !ok {
			continue
		}
		a, err := readTx(ctx, env, iface)
		if err != nil {
			continue
		}
		st, _ := w.Observe(iface, start.Add(transmitWindow), a)
		r := Result{Name: "transmit " + iface, Status: Pass}
		switch {
		case a.Packets < b.Packets || a.Dropped < b.Dropped || a.Errors < b.Errors:
			r.Detail = "the counters went back while watched: the interface was made anew"
		case st.Transmit == txwatch.Down:
			r.Status = Warn
			r.Detail = fmt.Sprintf("%s is down: nothing can be sent", iface)
			r.Fix = fmt.Sprintf("ip link set %s up, and check its cable or peer", iface)
		case st.Transmit == txwatch.Stalled:
			r.Status = Fail
			r.Detail = iface + " is " + st.Reason
			r.Fix = fmt.Sprintf("a veth: give its peer an XDP program (one that passes everything will do), so that ober's XDP_TX frames wake it (docs/veth-xdp-tx-wedge.md); "+
				"a NIC: see `ethtool -S %s` for xdp_tx errors and `ethtool -l %s` for the queues; `ip link set %s down; ip link set %s up` restarts it", iface, iface, iface, iface)
		case a.Packets == b.Packets:
			r.Detail = fmt.Sprintf("quiet: nothing sent or dropped in %s", transmitWindow)
		default:
			r.Detail = fmt.Sprintf("sent %d packets in %s, %d dropped", a.Packets-b.Packets, transmitWindow, (a.Dropped-b.Dropped)+(a.Errors-b.Errors))
		}
		rs = append(rs, r)
	}
	return rs
}
