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
)

// transmitWindow is how long doctor watches the interfaces' transmit
// counters.
const transmitWindow = 2 * time.Second

type txSnap struct {
	up                       bool
	packets, dropped, errors uint64
	// queued is the root qdisc's backlog in packets.
	queued uint64
}

// readTx reads an interface's state and transmit counters from sysfs,
// and adds its root qdisc's drops and backlog (`tc -s -j qdisc`): behind
// a qdisc, a stopped queue fills it and drops there, not in the driver.
func readTx(ctx context.Context, env Env, iface string) (txSnap, error) {
	dir := filepath.Join("sys/class/net", iface)
	oper, err := env.readTrim(filepath.Join(dir, "operstate"))
	if err != nil {
		return txSnap{}, err
	}
	flags, err := env.readTrim(filepath.Join(dir, "flags"))
	if err != nil {
		return txSnap{}, err
	}
	f, err := strconv.ParseUint(strings.TrimPrefix(flags, "0x"), 16, 32)
	if err != nil {
		return txSnap{}, fmt.Errorf("%s/flags: %q: %w", dir, flags, err)
	}
	s := txSnap{up: f&1 != 0 && (oper == "up" || oper == "unknown")}
	for _, c := range []struct {
		name string
		to   *uint64
	}{{"tx_packets", &s.packets}, {"tx_dropped", &s.dropped}, {"tx_errors", &s.errors}} {
		v, err := env.readTrim(filepath.Join(dir, "statistics", c.name))
		if err != nil {
			return txSnap{}, err
		}
		if *c.to, err = strconv.ParseUint(v, 10, 64); err != nil {
			return txSnap{}, fmt.Errorf("%s/statistics/%s: %q: %w", dir, c.name, v, err)
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
					s.dropped += q.Drops
					s.queued = q.Qlen
				}
			}
		}
	}
	return s, nil
}

// checkTransmit watches node.interfaces for transmitWindow: a link that
// is up and sends nothing while its driver drops or fails what it is
// given has a stopped transmit queue. The node then loses its BGP
// sessions and health checks, and the counters are the only place that
// says why. An interface whose counters cannot be read is left to the
// interface check.
func checkTransmit(ctx context.Context, env Env, cfg *config.Config) []Result {
	before := map[string]txSnap{}
	for _, iface := range cfg.Node.Interfaces {
		if s, err := readTx(ctx, env, iface); err == nil {
			before[iface] = s
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
		r := Result{Name: "transmit " + iface, Status: Pass}
		sent, lost := a.packets-b.packets, (a.dropped-b.dropped)+(a.errors-b.errors)
		switch {
		case a.packets < b.packets || a.dropped < b.dropped || a.errors < b.errors:
			r.Detail = "the counters went back while watched: the interface was made anew"
		case !a.up:
			r.Status = Warn
			r.Detail = fmt.Sprintf("%s is down: nothing can be sent", iface)
			r.Fix = fmt.Sprintf("ip link set %s up, and check its cable or peer", iface)
		case sent == 0 && (lost > 0 || b.queued > 0 && a.queued > 0):
			r.Status = Fail
			r.Detail = fmt.Sprintf("%s is up but sent no packet in %s while dropping %d and failing %d",
				iface, transmitWindow, a.dropped-b.dropped, a.errors-b.errors)
			if a.queued > 0 {
				r.Detail += fmt.Sprintf(", %d packets waiting in its qdisc", a.queued)
			}
			r.Detail += ": its transmit queue is stopped"
			r.Fix = fmt.Sprintf("a veth: give its peer an XDP program (one that passes everything will do), so that ober's XDP_TX frames wake it (docs/veth-xdp-tx-wedge.md); "+
				"a NIC: see `ethtool -S %s` for xdp_tx errors and `ethtool -l %s` for the queues; `ip link set %s down; ip link set %s up` restarts it", iface, iface, iface, iface)
		case sent == 0:
			r.Detail = fmt.Sprintf("quiet: nothing sent or dropped in %s", transmitWindow)
		default:
			r.Detail = fmt.Sprintf("sent %d packets in %s, %d dropped", sent, transmitWindow, lost)
		}
		rs = append(rs, r)
	}
	return rs
}
