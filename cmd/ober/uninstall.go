package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/install"
)

func newUninstallCmd(a *app) *cobra.Command {
	o := install.UninstallOptions{}
	var root string
	cmd := &cobra.Command{
		Use:   "uninstall [--root DIR] [--keep-config] [-y]",
		Short: "Stop ober and remove what 'ober bootstrap' put on this machine",
		Long: `uninstall takes ober off the machine, after asking (or -y):

  - stops the service (systemctl stop, or SIGTERM to the pid in
    /run/ober/ober.pid when that process is 'ober run'), and waits for it
  - removes the dataplane pinned in --bpffs-root (/sys/fs/bpf/ober),
    detaching XDP and sk_lookup
  - deletes the nftables table inet ober of the udp and nat services
    (a table of that name that ober did not make is kept)
  - removes ober's units and the links enabling them (then daemon-reload),
    /etc/sysctl.d/90-ober.conf, the watchdog drop-in, the tmpfiles.d entry,
    the bash completion and the bpffs line bootstrap added to /etc/fstab
    (/sys/fs/bpf stays mounted: other tools use it)
  - removes /var/lib/ober, /run/ober, /var/log/ober and, unless --keep-config,
    /etc/ober; the vendor HAProxy repository if bootstrap added it; and the
    binary /usr/local/sbin/ober last

It prints every path it removes, flagging a file changed since bootstrap
wrote it (it is removed all the same). It keeps the packages, and says how
to remove them, and anything that is not ober's. Run again, it says there
is nothing to remove.

--root DIR removes from the tree at DIR instead: files only, nothing is
stopped, no systemctl.`,
		Example: `  ober uninstall
  ober uninstall -y --keep-config
  ober uninstall --root /srv/images/node1 -y`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			live, err := checkRoot(root)
			if err != nil {
				return fmt.Errorf("uninstall: %w", err)
			}
			o.Root, o.Live, o.Out, o.PinRoot = root, live, a.out, a.root
			o.Confirm = terminalConfirm(cmd.InOrStdin(), a.out)
			if err := install.Uninstall(cmd.Context(), o); err != nil {
				return fmt.Errorf("uninstall: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", "/", "remove from the tree at `DIR` instead of this machine (files only)")
	f.BoolVar(&o.KeepConfig, "keep-config", false, "keep /etc/ober (configuration, certificates)")
	f.BoolVarP(&o.Yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
