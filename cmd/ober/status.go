package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/runtime/txwatch"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
	"github.com/ober-ingress/ober/loader"
)

func newStatusCmd(a *app) *cobra.Command {
	var asJSON bool
	var apiAddr string
	cmd := &cobra.Command{
		Use:   "status [--json] [--api HOST:PORT]",
		Short: "Show the node: daemon, instances, backends, dataplane tables and counters",
		Long: `status asks the running daemon (GET /status on its API, api.listen of
--config unless --api is given) and prints the daemon (version, PID,
uptime, health), the configuration's generation and the outcome of the last
reload, the HAProxy instances and backends, the VIPs and whether this node
holds them, the BGP sessions or VRRP states; then the dataplane: interfaces
(XDP mode and program ID), VIPs, services, whitelists, Maglev table,
sockets and counters.

When no daemon answers, status reads the dataplane pinned under --bpffs-root
directly and says that the daemon is not running.

--json prints one JSON object whose shape is stable, documented field by
field in docs/status-json.md: the dataplane's fields at the top level and
the daemon's under "daemon" (null when it is not running). Fields are
added, never renamed or removed.`,
		Example: `  ober status
  ober status --json | jq '.daemon.haproxy.instances'
  ober status --json | jq -r '.daemon.vips[] | select(.held) | .vip'
  ober status --api 127.0.0.1:9404`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr := apiAddr
			if addr == "" {
				addr = a.apiAddr()
			}
			st, derr := fetchStatus(cmd.Context(), addr)
			if derr != nil {
				d, err := loader.Open(a.tableOptions())
				if err != nil {
					return fmt.Errorf("status: no daemon answers on %s (%v), and %w", addr, derr, err)
				}
				defer d.Close()
				rep, err := api.ReadDataplane(d)
				if err != nil {
					return fmt.Errorf("status: %w", err)
				}
				st = &api.Status{DataplaneStatus: rep}
			}
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			if st.Daemon == nil {
				fmt.Fprintf(a.out, "daemon: not running (no answer on %s: %v)\n\n", addr, derr)
			} else if err := printDaemon(a.out, st.Daemon); err != nil {
				return err
			}
			return printStatus(a.out, st.DataplaneStatus)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of tables")
	cmd.Flags().StringVar(&apiAddr, "api", "", "daemon API address (default: api.listen from --config, else "+config.DefaultAPIListen+")")
	return cmd
}

// apiAddr is api.listen of the configuration file, or the default when
// the file cannot be read: status must work on a node whose
// configuration is broken.
func (a *app) apiAddr() string {
	cfg, err := config.Load(a.configPath)
	if err != nil {
		return config.DefaultAPIListen
	}
	return cfg.API.Listen
}

// fetchStatus asks the daemon on addr (api.listen) for its status.
func fetchStatus(ctx context.Context, addr string) (*api.Status, error) {
	return api.NewClient(addr, api.ClientOptions{}).Status(ctx)
}

// printDaemon writes the daemon's part: health, configuration, the
// instances and the backends.
// printServices writes each service, its backends and the vip_pools.
func printServices(tw io.Writer, d *api.DaemonStatus) {
	fmt.Fprintln(tw, "SERVICE\tMODE\tPORT\tBALANCE\tFALLBACK\tSTATE\tCONNS\tVIPS")
	for _, s := range d.Services {
		port := fmt.Sprint(s.Port)
		if s.LastPort != 0 {
			port = fmt.Sprintf("%d-%d", s.Port, s.LastPort)
		}
		vips := make([]string, len(s.VIPs))
		for i, v := range s.VIPs {
			vips[i] = v.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Name, s.Mode, port, s.Balance, s.Fallback,
			onOff(s.Up, "up", "DOWN"), s.TotalConnections, strings.Join(vips, ","))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "SERVICE/POOL\tBACKEND\tADDRESS\tPRIO\tWEIGHT\tADMIN\tSTATE\tHEALTH\tCONNS\tLAST ERROR")
	for _, s := range d.Services {
		for _, b := range s.Backends {
			health := fmt.Sprintf("%s %.0f%%", onOff(b.Up, "up", "DOWN"), 100*b.Health)
			last := b.LastError
			if last == "" {
				last = "-"
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%d\t%d/%d\t%s\t%s\t%s\t%d/%d\t%s\n", s.Name, b.Pool, b.Name, b.Address, b.Priority,
				b.EffectiveWeight, b.Weight, b.Admin, b.State, health, b.Connections, b.TotalConnections, last)
		}
	}
	if len(d.VIPPools) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "VIP POOL\tSIZE\tUSED\tRESERVED\tFREE")
		for _, p := range d.VIPPools {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.Name, p.Size, p.Used, p.Reserved, p.Free)
		}
	}
}

func printDaemon(w io.Writer, d *api.DaemonStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	health := "ok"
	if !d.Health.OK {
		health = "FAILING: " + d.Health.Reason
	}
	fmt.Fprintf(tw, "node\t%s (ober %s, pid %d, up %s since %s)\n", d.Node, d.Version, d.PID,
		time.Duration(d.UptimeSeconds)*time.Second, d.StartedAt.Format(time.RFC3339))
	fmt.Fprintf(tw, "health\t%s\n", health)
	for _, l := range d.Links {
		if l.Transmit == txwatch.Stalled {
			fmt.Fprintf(tw, "link %s\tCANNOT TRANSMIT since %s (%d times in all): %s\n", l.Iface, l.Since.Format(time.RFC3339), l.Stalls, l.Reason)
		}
	}
	fmt.Fprintf(tw, "config\t%s, generation %d, loaded %s\n", d.Config.Path, d.Config.Generation, d.Config.LoadedAt.Format(time.RFC3339))
	switch d.Config.LastReload {
	case api.ReloadRefused:
		fmt.Fprintf(tw, "reload\tREFUSED, the running configuration is unchanged (%d refused in all): %s\n",
			d.Config.ReloadFailures, d.Config.LastReloadError)
	case api.ReloadOK:
		fmt.Fprintf(tw, "reload\tlast reload ok (%d refused in all)\n", d.Config.ReloadFailures)
	default:
		fmt.Fprintf(tw, "reload\tnone since start\n")
	}
	fmt.Fprintf(tw, "haproxy\t%s %s, %d reloads, %d restarts, %d draining\n", d.HAProxy.Binary, d.HAProxy.Version,
		d.HAProxy.Reloads, d.HAProxy.Restarts, d.HAProxy.Draining)
	if len(d.HAProxy.Features) > 0 {
		var fs []string
		for _, f := range d.HAProxy.Features {
			state := "off"
			if f.Enabled {
				state = "on"
			}
			fs = append(fs, f.Name+"="+state)
		}
		fmt.Fprintf(tw, "features\t%s\n", strings.Join(fs, " "))
	}
	fmt.Fprintf(tw, "tls tickets\t%s\n", ticketLine(d.HAProxy.SessionTickets))
	if s := d.Steering; s != nil {
		fmt.Fprintf(tw, "cpu steering\t%s (%s)\n", onOff(s.On, "on", "off"), s.Reason)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "INSTANCE\tCPU\tPID\tSTATE\tCONNS\tRESTARTS\tLAST EXIT")
	for _, in := range d.HAProxy.Instances {
		pid := "-"
		if in.PID != 0 {
			pid = fmt.Sprint(in.PID)
		}
		last := in.LastExit
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t%d\t%s\n", in.Index, in.CPU, pid, in.State, in.Connections, in.Restarts, last)
	}
	if n := d.HAProxy.OldGenerations; n > 0 {
		fmt.Fprintf(tw, "\nold generations\t%d still finishing transfers (timeouts.max_transfer)\n", n)
		for _, r := range d.HAProxy.Retired {
			gen := fmt.Sprintf("generation %d, instance %d", r.Generation, r.Index)
			if r.Generation == 0 {
				gen = "left by an earlier ober"
			}
			fmt.Fprintf(tw, "\tpid %d, %s: replaced %s ago, stopped by %s\n", r.PID, gen,
				time.Since(r.RetiredAt).Truncate(time.Second), r.StopBy.Format(time.RFC3339))
		}
	}
	fmt.Fprintln(tw)
	if len(d.Backends) > 0 {
		fmt.Fprintln(tw, "BACKEND\tADDRESS\tSTATE\tUP ON")
		for _, b := range d.Backends {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d instances\n", b.Name, b.Address, onOff(b.Up, "up", "DOWN"), b.UpOn, b.CheckedBy)
		}
		fmt.Fprintln(tw)
	}
	printServices(tw, d)
	fmt.Fprintln(tw)
	if len(d.VIPs) > 0 {
		fmt.Fprintln(tw, "VIP\tHELD HERE\tSTATE")
		for _, v := range d.VIPs {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", v.VIP, onOff(v.Held, "yes", "no"), v.State)
		}
		fmt.Fprintln(tw)
	}
	if g := d.BGP; g != nil {
		ann := fmt.Sprintf("announcing %s", strings.Join(g.Announced, ", "))
		if !g.Announcing {
			ann = "WITHDRAWN: " + g.NotAnnouncing
		}
		fmt.Fprintf(tw, "bgp	AS%d, router id %s, %s\n", g.ASN, g.RouterID, ann)
		for _, h := range g.Handoff {
			fmt.Fprintf(tw, "\thandoff: %s %s until %s\n", h.Node, h.State, h.Until.Format(time.RFC3339))
		}
		if g.LastWithdraw != nil {
			fmt.Fprintf(tw, "\tlast withdraw %s: %s (%d in all)\n", g.LastWithdraw.Format(time.RFC3339Nano), g.LastWithdrawReason, g.Withdraws)
		}
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "PEER\tASN\tSTATE\tBFD\tADVERTISED\tFLAPS\tLAST DOWN")
		for _, p := range g.Peers {
			state := p.State
			if p.Since != nil {
				state += " since " + p.Since.Format(time.RFC3339)
			}
			bfd := p.BFD
			if bfd == "" {
				bfd = "-"
			}
			last := "-"
			if p.LastDown != nil {
				last = p.LastDown.Format(time.RFC3339) + " " + p.LastError
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", p.Address, p.ASN, state, bfd, p.Advertised, p.Flaps, last)
		}
		fmt.Fprintln(tw)
	}
	if v := d.VRRP; v != nil {
		health := "healthy"
		if v.Fault != "" {
			health = "FAULT: " + v.Fault
		}
		fmt.Fprintf(tw, "vrrp	keepalived pid %d, %d restarts, %s\n", v.PID, v.Restarts, health)
		if h := v.Handoff; h != nil {
			fmt.Fprintf(tw, "handoff\t%s\n", vrrpHandoffLine(h))
		}
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "VIP	VRID	PRIORITY	OWNER	STATE	HELD HERE	TRANSITIONS	SINCE")
		for _, in := range v.Instances {
			state := string(in.State)
			if state == "" {
				state = "unknown"
			}
			since := "-"
			if !in.Since.IsZero() {
				since = in.Since.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", in.VIP, in.VRID, priorityText(in.Priority, in.Offset), in.Owner, state,
				onOff(in.Held, "yes", "no"), in.Transitions, since)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// priorityText is a VIP's priority with what its priority file adds, as
// keepalived counts it (within 1-254).
func priorityText(prio, offset int) string {
	switch {
	case offset == vrrp.HoldOffset:
		return fmt.Sprintf("%d (held at 1: not ready)", prio)
	case offset == vrrp.MoveOffset:
		return fmt.Sprintf("%d (254: moved here)", prio)
	case offset != 0:
		return fmt.Sprintf("%d%+d", prio, offset)
	}
	return strconv.Itoa(prio)
}

// vrrpHandoffLine is "ready; draining 10.0.0.1; moved here 10.0.0.2;
// nodes in transition: ...".
func vrrpHandoffLine(h *api.VRRPHandoffStatus) string {
	parts := []string{"ready: planned moves keep their connections"}
	if !h.Ready {
		parts[0] = "NOT READY (every VIP held at priority 1): " + h.NotReady
	}
	if len(h.Moved) > 0 {
		parts = append(parts, "moved here by an operator: "+addrList(h.Moved))
	}
	if len(h.Draining) > 0 {
		parts = append(parts, "lost, connections still handed back here: "+addrList(h.Draining))
	}
	for _, tr := range h.Transitions {
		parts = append(parts, fmt.Sprintf("%s %s until %s", tr.Node, tr.State, tr.Until.Format(time.RFC3339)))
	}
	return strings.Join(parts, "; ")
}

func addrList(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// printStatus writes the human view: a header, then one table per part.
func printStatus(w io.Writer, st *api.DataplaneStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	parts := []func(io.Writer, *api.DataplaneStatus){
		statusHeader, statusInterfaces, statusServices, statusWhitelists,
		statusInstances, statusSockets, statusCounters,
	}
	for i, part := range parts {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		part(tw, st)
	}
	return tw.Flush()
}

func onOff(b bool, on, off string) string {
	if b {
		return on
	}
	return off
}

func statusHeader(w io.Writer, st *api.DataplaneStatus) {
	fmt.Fprintf(w, "dataplane\t%s\n", st.Root)
	fmt.Fprintf(w, "xdp\t%s\n", xdpPrograms(st.Attachments))
	fmt.Fprintf(w, "sk_lookup\t%s\n", onOff(st.SkLookupAttached, "attached", "not attached"))
	fmt.Fprintf(w, "steering\t%s\n", onOff(st.Steering, "on", "off"))
	if st.Maglev == nil {
		fmt.Fprintf(w, "maglev\tno table\n")
	} else {
		fmt.Fprintf(w, "maglev\t%d slots, seed %#x, %d empty\n", st.Maglev.Size, st.Maglev.Seed, st.Maglev.EmptySlots)
	}
	fmt.Fprintf(w, "cpumap\t%s\n", joinInts(st.CPUMap))
	fmt.Fprintf(w, "unassigned\t%d connections found no instance socket\n", st.Counters.Unassigned)
	for _, name := range st.UnsetWhitelists() {
		fmt.Fprintf(w, "warning\twhitelist %s is enforced by a service but was never set: it admits nobody\n", name)
	}
}

// xdpPrograms names the XDP programs running on the attached interfaces
// by the kernel's program ID (bpftool prog show id N): one ID for every
// interface, unless an interface runs another ober's program.
func xdpPrograms(atts []api.AttachmentStatus) string {
	if len(atts) == 0 {
		return "no interface attached"
	}
	var ids []uint32
	on := map[uint32][]string{}
	for _, a := range atts {
		if _, ok := on[a.ProgramID]; !ok {
			ids = append(ids, a.ProgramID)
		}
		on[a.ProgramID] = append(on[a.ProgramID], a.Iface)
	}
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		if id == 0 {
			parts = append(parts, "no program visible on "+strings.Join(on[id], ", "))
			continue
		}
		parts = append(parts, fmt.Sprintf("program id %d on %s", id, strings.Join(on[id], ", ")))
	}
	return strings.Join(parts, "; ")
}

func statusInterfaces(w io.Writer, st *api.DataplaneStatus) {
	if len(st.Attachments) == 0 {
		fmt.Fprintln(w, "no interface attached")
		return
	}
	fmt.Fprintln(w, "INTERFACE\tIFINDEX\tXDP MODE")
	for _, a := range st.Attachments {
		fmt.Fprintf(w, "%s\t%d\t%s\n", a.Iface, a.Ifindex, a.Mode)
	}
}

func statusServices(w io.Writer, st *api.DataplaneStatus) {
	if len(st.VIPs) == 0 {
		fmt.Fprintln(w, "no VIPs")
	} else {
		fmt.Fprintln(w, "VIP\tKIND")
		for _, v := range st.VIPs {
			fmt.Fprintf(w, "%s\t%s\n", v.Addr, onOff(v.Host, "host", "vip"))
		}
	}
	fmt.Fprintln(w)
	if len(st.Services) == 0 {
		fmt.Fprintln(w, "no services")
		return
	}
	fmt.Fprintln(w, "SERVICE\tLISTENER\tDISPATCH\tWHITELIST\tREFUSED")
	for _, s := range st.Services {
		wl, refused := "-", "-"
		if s.EnforceWhitelist {
			wl, refused = s.Whitelist, onOff(s.Reject, "rst", "drop")
		}
		fmt.Fprintf(w, "%s:%d/%s\t%d\t%s\t%s\t%s\n", s.VIP, s.Port, s.Proto, s.Listener,
			onOff(s.Dispatch, "maglev", "kernel"), wl, refused)
	}
}

func statusWhitelists(w io.Writer, st *api.DataplaneStatus) {
	if len(st.Whitelists) == 0 {
		fmt.Fprintln(w, "no whitelist set")
		return
	}
	fmt.Fprintln(w, "WHITELIST\tENTRIES\tGENERATION")
	for _, l := range st.Whitelists {
		fmt.Fprintf(w, "%s\t%d\t%d\n", l.Name, l.Entries, l.Generation)
	}
}

// statusInstances joins what the dataplane knows per instance: its CPU,
// its share of the Maglev table and what was steered and assigned to it.
func statusInstances(w io.Writer, st *api.DataplaneStatus) {
	type row struct {
		cpu                     string
		slots                   int
		pkts, bytes, flows, fbk uint64
	}
	rows := map[uint32]*row{}
	get := func(i uint32) *row {
		if rows[i] == nil {
			rows[i] = &row{cpu: "-"}
		}
		return rows[i]
	}
	for _, in := range st.Instances {
		get(in.Index).cpu = fmt.Sprint(in.CPU)
	}
	if st.Maglev != nil {
		for _, s := range st.Maglev.SlotsPerInstance {
			get(s.Instance).slots = s.Slots
		}
	}
	for _, s := range st.Counters.Steered {
		r := get(s.Instance)
		r.pkts, r.bytes = s.Packets, s.Bytes
	}
	for _, s := range st.Counters.Assigned {
		r := get(s.Instance)
		r.flows, r.fbk = s.Flows, s.Fallback
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "no instances")
		return
	}
	idx := make([]uint32, 0, len(rows))
	for i := range rows {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	fmt.Fprintln(w, "INSTANCE\tCPU\tMAGLEV SLOTS\tSTEERED PKTS\tSTEERED BYTES\tFLOWS\tFALLBACK")
	for _, i := range idx {
		r := rows[i]
		fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%d\t%d\t%d\n", i, r.cpu, r.slots, r.pkts, r.bytes, r.flows, r.fbk)
	}
}

func joinInts(xs []int) string {
	if len(xs) == 0 {
		return "(empty)"
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

func statusSockets(w io.Writer, st *api.DataplaneStatus) {
	if len(st.Sockets) == 0 {
		fmt.Fprintln(w, "no sockets registered")
		return
	}
	fmt.Fprintln(w, "LISTENER\tINSTANCE\tSOCKET COOKIE")
	for _, s := range st.Sockets {
		fmt.Fprintf(w, "%d\t%d\t%d\n", s.Listener, s.Instance, s.Cookie)
	}
}

// statusCounters lists the non-zero verdict counters, in counter order.
func statusCounters(w io.Writer, st *api.DataplaneStatus) {
	var lines []string
	for _, r := range st.Counters.Reasons {
		actions := make([]string, 0, len(r.Packets))
		for a := range r.Packets {
			actions = append(actions, a)
		}
		slices.Sort(actions)
		for _, a := range actions {
			lines = append(lines, fmt.Sprintf("%s\t%s\t%d\t%d\n", r.Reason, a, r.Packets[a], r.Bytes[a]))
		}
	}
	if len(lines) == 0 {
		fmt.Fprintln(w, "no packets counted")
		return
	}
	fmt.Fprintln(w, "REASON\tACTION\tPACKETS\tBYTES")
	for _, l := range lines {
		fmt.Fprint(w, l)
	}
}

// ticketLine says which key encrypts the sessions' tickets, by epoch.
func ticketLine(ts *api.TicketStatus) string {
	if ts == nil {
		return "off (sessions resume only on the instance that cached them)"
	}
	scope := "this node's own seed"
	if ts.Shared {
		scope = "shared key_file"
	}
	s := fmt.Sprintf("epoch %d of %s, %s, next key %s", ts.Epoch, time.Duration(ts.RotateSeconds)*time.Second, scope,
		ts.NextRotation.Local().Format(time.RFC3339))
	if ts.PushFailures > 0 {
		s += fmt.Sprintf(", %d failed pushes", ts.PushFailures)
	}
	return s
}
