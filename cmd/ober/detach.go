package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/dataplane"
)

func newDetachCmd(a *app) *cobra.Command {
	var (
		iface string
		all   bool
	)
	cmd := &cobra.Command{
		Use:   "detach --iface IF | --all",
		Short: "Detach the XDP program from an interface, or remove the whole dataplane",
		Long: `detach --iface removes the XDP program from one interface; when no interface
is left, sk_lookup is detached from its namespace too. The maps stay pinned,
so a later attach finds VIPs, services and whitelists as they were.

detach --all detaches everything and removes every pin under --bpffs-root,
maps included; it also clears pins left by an incompatible ober version.`,
		Example: `  ober detach --iface eth1
  ober detach --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case iface == "" && !all:
				return errors.New("detach: give --iface IF or --all")
			case iface != "" && all:
				return errors.New("detach: --iface and --all exclude each other")
			case all:
				return detachAll(a)
			}
			res, err := dataplane.Detach(a.loaderOptions(true), iface)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "detached xdp from %s\n", res.Iface)
			if res.SkLookupDetached {
				fmt.Fprintln(a.out, "detached sk_lookup (no interface left)")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "", "interface `IF` to detach the XDP program from")
	cmd.Flags().BoolVar(&all, "all", false, "detach everything and remove all pins, maps included")
	return cmd
}

func detachAll(a *app) error {
	found, err := dataplane.DetachAll(a.root, a.log)
	if err != nil {
		return fmt.Errorf("detach --all: %w", err)
	}
	if !found {
		fmt.Fprintf(a.out, "nothing pinned at %s\n", a.root)
		return nil
	}
	fmt.Fprintf(a.out, "removed dataplane at %s (links, programs and maps)\n", a.root)
	return nil
}
