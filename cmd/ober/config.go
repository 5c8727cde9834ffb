package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/wizard"
	nodeplan "github.com/ober-ingress/ober/control/plan"
)

// configQuestions are the wizard's string flags, named after the keys of
// ober.yaml and the flags of `ober sync`; the wizard reads them by name.
var configQuestions = []struct{ flag, help string }{
	{"ha", "ha.mode: none, bgp or vrrp"},
	{"node-name", "node.name (default: the host name)"},
	{"interfaces", "node.interfaces: NICs that get the XDP program, comma-separated"},
	{"vips", "vips: the addresses clients connect to, comma-separated"},
	{"asn", "ha.bgp.asn: this node's AS number"},
	{"router-id", "ha.bgp.router_id (default: the first IPv4 address of the interfaces)"},
	{"vrrp-nodes", "ha.vrrp.nodes: every node's address, in the same order on every node"},
	{"vrrp-self", "ha.vrrp.self: this node's address among --vrrp-nodes"},
	{"vrrp-interface", "ha.vrrp.interface (default: the first of --interfaces)"},
	{"backends", "backends.servers: a Slurm hostlist of host:port, such as rgw[01-08].internal:7480"},
	{"backend-port", "port of the --backends given without one (default 7480)"},
	{"health-path", "backends.health.path (default /)"},
	{"cert", "services[].tls.cert: PEM certificate chain, leaf first"},
	{"key", "services[].tls.key: PEM private key (default: the key in --cert)"},
	{"frontend-http", "whitelists.frontend_http: clients of plain HTTP (hostlists, names, IPs, CIDRs)"},
	{"backend-http", "whitelists.backend_http (hostlists, names, IPs, CIDRs)"},
	{"routers", "whitelists.routers: who may reach BGP and BFD (default: the --bgp-peer addresses)"},
	{"runtime-dir", "node.runtime_dir (asked by no question)"},
	{"state-dir", "node.state_dir (asked by no question)"},
}

type configFlags struct {
	dryRun, nonInteractive bool
	values                 map[string]*string
	peers                  []string
	bfd, selfSigned        bool
	http, noHTTP           bool
}

func newConfigCmd(a *app) *cobra.Command {
	f := &configFlags{values: map[string]*string{}}
	cmd := &cobra.Command{
		Use:   "config [--dry-run] [-y] [--ha none|bgp|vrrp] [--vips LIST] [...]",
		Short: "Write ober.yaml: a wizard on a terminal, flags elsewhere",
		Long: `config writes the node's configuration file (--config).

On a terminal it asks, one question at a time: the HA mode, the node name,
the interfaces, the VIPs, the BGP routers or the VRRP nodes, the S3 backends
and their health check, the TLS certificate, and plain HTTP with its
whitelists. The value in brackets (from the current file, a flag or a
default) is kept with Enter; a bad answer is asked again with the reason.
At the end it shows the change as a diff and asks before writing.

Without a terminal, or with --non-interactive (-y), nothing is asked: each
answer is its flag, else the current file's value, else the default; a
missing answer fails naming its flag.

Keys no question is about, and the file's comments, are kept. The new file
is checked exactly as 'ober run' loads it (certificates included) and
replaces the old one atomically, mode 0640; the old one stays as
<file>.bak. Nothing is written when the result is invalid.

--dry-run writes nothing: it prints a unified diff for every file that
would change: ober.yaml, each HAProxy instance's configuration as the
daemon renders it into node.runtime_dir, and keepalived.conf in
ha.mode vrrp.`,
		Example: `  ober config
  ober config --dry-run
  ober config -y --ha bgp --interfaces ens1f0 --vips 10.20.0.10 \
      --asn 65001 --bgp-peer 10.0.0.1:65000 --bgp-peer 10.0.0.2:65000 --bfd \
      --backends 'rgw[01-08].internal:7480' --cert /etc/ober/tls/s3.pem \
      --key /etc/ober/tls/s3.key --no-http
  ober config -y --ha vrrp --vrrp-nodes 10.0.0.11,10.0.0.12 --vrrp-self 10.0.0.11 \
      --interfaces eth1 --vips 10.0.0.100,10.0.0.101 --backends 's3[1-2]:7480' \
      --self-signed --http --frontend-http 'compute[001-128],10.40.0.0/22'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := runConfig(cmd, a, f); err != nil {
				return fmt.Errorf("config: %w", err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the diffs of every file that would change and write nothing")
	fl.BoolVarP(&f.nonInteractive, "non-interactive", "y", false, "ask nothing, even on a terminal")
	for _, q := range configQuestions {
		f.values[q.flag] = fl.String(q.flag, "", q.help)
	}
	fl.StringArrayVar(&f.peers, "bgp-peer", nil, "ha.bgp.peers: a router as ADDR:ASN; repeat for each router")
	fl.BoolVar(&f.bfd, "bfd", false, "ha.bgp.peers[].bfd.enabled on every router (--bfd=false turns it off)")
	fl.BoolVar(&f.selfSigned, "self-signed", false, "services[].tls.self_signed: ober generates a certificate (labs and tests)")
	fl.BoolVar(&f.http, "http", false, "serve plain-HTTP S3 on port 80 to the frontend-http whitelist")
	fl.BoolVar(&f.noHTTP, "no-http", false, "serve no plain HTTP (removes the mode http services)")
	completeWords(cmd, "ha", config.HAModeNone, config.HAModeBGP, config.HAModeVRRP)
	for _, name := range []string{"cert", "key"} {
		_ = cmd.MarkFlagFilename(name)
	}
	for _, name := range []string{"runtime-dir", "state-dir"} {
		_ = cmd.MarkFlagDirname(name)
	}
	return cmd
}

// wizardFlags turns the flags given into the wizard's answers by name.
func wizardFlags(cmd *cobra.Command, a *app, f *configFlags) (map[string]string, error) {
	fl := cmd.Flags()
	out := map[string]string{}
	for name, v := range f.values {
		if fl.Changed(name) {
			out[name] = *v
		}
	}
	if fl.Changed("bgp-peer") {
		out["bgp-peer"] = strings.Join(f.peers, ",")
	}
	if fl.Changed("bfd") {
		out["bfd"] = onOff(f.bfd, "yes", "no")
	}
	switch {
	case fl.Changed("http") && fl.Changed("no-http"):
		return nil, fmt.Errorf("--http and --no-http: give one or the other")
	case fl.Changed("http"):
		out["http"] = onOff(f.http, "yes", "no")
	case fl.Changed("no-http"):
		out["http"] = onOff(f.noHTTP, "no", "yes")
	}
	if fl.Changed("self-signed") && f.selfSigned {
		if fl.Changed("cert") {
			return nil, fmt.Errorf("--cert %s and --self-signed: give one or the other", *f.values["cert"])
		}
		out["cert"] = "self-signed"
	}
	// --bpffs-root is where this node pins its dataplane: node.bpffs_root.
	if fl.Changed("bpffs-root") {
		out["bpffs-root"] = a.root
	}
	return out, nil
}

func runConfig(cmd *cobra.Command, a *app, f *configFlags) error {
	ctx := cmd.Context()
	flags, err := wizardFlags(cmd, a, f)
	if err != nil {
		return err
	}
	opts := wizard.Options{Path: a.configPath, Flags: flags, Out: a.out, Warn: a.errOut}
	if !f.nonInteractive && isTerminal(os.Stdin) && isTerminal(a.out) {
		opts.In = os.Stdin
	}
	plan, err := wizard.Prepare(ctx, opts)
	if err != nil {
		return err
	}
	if f.dryRun {
		return dryRunConfig(ctx, a.out, plan)
	}
	if !plan.Changed() {
		fmt.Fprintf(a.out, "no change: %s already holds these answers\n", plan.Path)
		return nil
	}
	if opts.In != nil {
		fmt.Fprintf(a.out, "\n%s", wizard.Diff(existing(plan), plan.Path, plan.Old, plan.New))
		ok, err := plan.Confirm(ctx, fmt.Sprintf("Write %s?", plan.Path))
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintf(a.out, "nothing written\n")
			return nil
		}
	}
	backup, err := plan.Write()
	if err != nil {
		return err
	}
	fmt.Fprintf(a.out, "wrote %s", plan.Path)
	if backup != "" {
		fmt.Fprintf(a.out, " (the previous one is %s)", backup)
	}
	withConfig := ""
	if plan.Path != config.DefaultPath {
		withConfig = " --config " + plan.Path
	}
	fmt.Fprintf(a.out, "\nnext:\n  ober test%s    checks it: HAProxy's view of it and, in ha.mode bgp, each router\n  ober start%s   starts the node\n", withConfig, withConfig)
	return nil
}

// existing is the plan's file for a diff: empty (/dev/null) when new.
func existing(p *wizard.Plan) string {
	if p.Old == nil {
		return ""
	}
	return p.Path
}

// dryRunConfig prints what writing the plan and then running the daemon
// on it would change on disk.
func dryRunConfig(ctx context.Context, w io.Writer, plan *wizard.Plan) error {
	show := func(from, to string, old, new []byte) {
		if d := wizard.Diff(from, to, old, new); d != "" {
			fmt.Fprint(w, d)
		} else {
			fmt.Fprintf(w, "no change: %s\n", to)
		}
	}
	show(existing(plan), plan.Path, plan.Old, plan.New)
	pv, err := nodeplan.RenderPreview(ctx, plan.Config, nil)
	if err != nil {
		return fmt.Errorf("--dry-run: render the daemon's files: %w", err)
	}
	for _, r := range pv.HAProxy {
		var old []byte
		if r.Current != "" {
			if old, err = os.ReadFile(r.Current); err != nil {
				return fmt.Errorf("--dry-run: %w", err)
			}
		}
		show(r.Current, r.Path, old, r.Data)
	}
	if k := pv.Keepalived; k != nil {
		var old []byte
		if k.Current != "" {
			if old, err = os.ReadFile(k.Current); err != nil {
				return fmt.Errorf("--dry-run: %w", err)
			}
		}
		show(k.Current, k.Path, old, k.Data)
	}
	for _, b := range pv.Bundles {
		fmt.Fprintf(w, "the daemon also writes %s (certificate and key for HAProxy; not shown)\n", b)
	}
	if pv.NewSelfSigned {
		fmt.Fprintf(w, "the daemon also generates a self-signed certificate in %s/tls (the bundle's name above changes with its key)\n", plan.Config.Node.StateDir)
	}
	fmt.Fprintln(w, "dry run: nothing written")
	return nil
}
