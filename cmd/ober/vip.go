package main

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"
)

func newVIPCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vip",
		Short: "Move a VIP between the nodes of a VRRP site",
		Long: `vip works on where a VIP is held, in ha.mode vrrp with ha.vrrp.handoff: move
hands it to another node without losing its connections, for maintenance,
and back to its owner.`,
		Example: `  ober vip move 10.99.1.101 --to 10.99.1.13
  ober vip move 10.99.1.101 --to owner`,
	}
	cmd.AddCommand(newVIPMoveCmd(a))
	return cmd
}

func newVIPMoveCmd(a *app) *cobra.Command {
	var f apiFlags
	var to string
	cmd := &cobra.Command{
		Use:   "move VIP --to NODE|owner",
		Short: "Move a VIP to a node on purpose (maintenance), or back to its owner, keeping its connections",
		Long: `move hands a VIP to another node of ha.vrrp.nodes, for maintenance of the
node that holds it, without losing a connection. It needs ha.mode vrrp and
ha.vrrp.handoff, and asks the local daemon's management API, which tells
every node over their authenticated handoff channel:

  - the target tells the others to record their connections, then raises
    its priority for the VIP to 254 and takes it within ha.vrrp.preempt_delay;
  - the node the VIP leaves keeps serving the connections it holds: the new
    holder forwards their segments to it until they end (at most
    timeouts.max_transfer).

The VIP stays on the target until it is moved again, the target fails, or
its ober restarts. --to owner ends the move: the VIP goes back to its
owner (ha.vrrp.nodes[i % nodes] for vips[i]), in the same way.

The command returns once every node applied the move, and says whether this
node saw its part happen. A node that refuses (the target not ready, say)
or does not answer is named, and the exit code is 1.`,
		Example: `  ober vip move 10.99.1.101 --to 10.99.1.13
  ober vip move 10.99.1.101 --to owner`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := netip.ParseAddr(args[0]); err != nil {
				return fmt.Errorf("VIP %q: not an IP address", args[0])
			}
			if to == "" {
				return fmt.Errorf("--to: required: a node's address of ha.vrrp.nodes, or owner")
			}
			if to != "owner" {
				if _, err := netip.ParseAddr(to); err != nil {
					return fmt.Errorf("--to %q: not a node's address, nor owner", to)
				}
			}
			c, err := a.mgmtClient(&f)
			if err != nil {
				return err
			}
			res, err := c.MoveVIP(cmd.Context(), args[0], to)
			if err != nil {
				return apiErr(err)
			}
			if f.json {
				b, err := json.Marshal(res)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), b)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), res.Message)
			return err
		},
	}
	f.add(cmd, false, true, true)
	cmd.Flags().StringVar(&to, "to", "", "the target node's address (one of ha.vrrp.nodes), or owner")
	return cmd
}
