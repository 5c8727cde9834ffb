package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/dataplane"
	"github.com/ober-ingress/ober/loader"
)

func newAttachCmd(a *app) *cobra.Command {
	var iface, mode string
	cmd := &cobra.Command{
		Use:   "attach --iface IF [--mode auto|native|generic]",
		Short: "Attach the XDP program to an interface, and sk_lookup to this network namespace",
		Long: `attach creates the dataplane under --bpffs-root when none is pinned there,
attaches the XDP program to --iface and makes sure the sk_lookup program is
attached to the current network namespace. Links are pinned, so the programs
stay attached after ober exits. Attaching an attached interface again
changes nothing. On error nothing is left changed.

--mode auto tries native (driver) XDP and falls back to generic XDP with a
warning; native and generic insist on that mode.`,
		Example: `  ober attach --iface eth1
  ober attach --iface eth1 --mode native
  ip netns exec edge ober attach --iface veth0 --bpffs-root /run/ober/bpf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := loader.ParseXDPMode(mode)
			if err != nil {
				return fmt.Errorf("--mode: %w", err)
			}
			res, err := dataplane.Attach(a.loaderOptions(false), iface, m)
			if err != nil {
				return err
			}
			printAttach(a, res)
			return nil
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "", "interface `IF` to attach the XDP program to (required)")
	cmd.Flags().StringVar(&mode, "mode", string(loader.XDPAuto), "XDP `MODE`: auto (native, else generic), native or generic")
	must(cmd.MarkFlagRequired("iface"))
	return cmd
}

func printAttach(a *app, res *dataplane.AttachResult) {
	if res.Created {
		fmt.Fprintf(a.out, "created dataplane at %s\n", a.root)
	}
	if res.AlreadyAttached {
		fmt.Fprintf(a.out, "xdp already attached to %s (%s)\n", res.Iface, res.Mode)
		return
	}
	fmt.Fprintf(a.out, "attached xdp to %s (%s)\n", res.Iface, res.Mode)
}

// must panics on errors that only a programming mistake can cause, such
// as marking a flag that does not exist.
func must(err error) {
	if err != nil {
		panic(err)
	}
}
