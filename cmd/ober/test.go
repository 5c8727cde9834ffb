package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/check"
)

func newTestCmd(a *app) *cobra.Command {
	var timeout time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test [--config FILE] [--timeout D] [--json]",
		Short: "Check the configuration, routers or VRRP peers, backends and certificates without starting anything",
		Long: `test checks what the node needs, changing nothing:

  config     the configuration file is valid and its names resolve;
  haproxy    HAProxy accepts the rendered configuration of every instance;
  bgp        (ha.mode bgp) each peer: a session is opened with the node's
             identity, its state and the router's capabilities are reported,
             and it is closed again. Nothing is announced. When the ober
             daemon runs, its established sessions are reported instead: a
             router refuses a second session from the same address;
  vrrp       (ha.mode vrrp) keepalived's version, ha.vrrp.interface exists
             and holds this node's address, every other node answers an ICMP
             echo sent from that interface (with its round trip), and
             keepalived -t accepts the rendered keepalived.conf;
  backend    each backend server (after name resolution) accepts a TCP
             connection and answers backends.health.path; 2xx and 3xx are
             ok, and so is 4xx, which HAProxy's check also counts as up
             (S3 answers anonymous requests with 403);
  routeback  (forward: dnat) each backend of a udp or nat service answers
             a client through this node: an ICMP echo sent from a client's
             address (one the service's access list allows, else
             198.51.100.1 or 2001:db8::1) gets its reply back here. A
             backend that answers no ICMP echo is a warning;
  tls        each TLS service's certificate: the chain parses, the key
             matches, it is valid now (warn within 30 days of expiry) and
             names a DNS name or a VIP; self-signed services say so;
  iface      each of node.interfaces exists here, its driver, and whether
             it has native XDP.

When the configuration does not load, the checks that need only part of
it (backend, tls, iface) still run on what the file says, so that one run
names every problem.

Each check prints one line: its name, ok, warn or FAIL, and what was found.
--json prints the same as an array of objects (name, ok, status, detail,
and where they apply fix, address, rtt_ms, http_status, bgp). Run test in
the network namespace that holds node.interfaces.

The exit code is 0 when no check fails (warnings included), 1 otherwise.`,
		Example: `  ober test
  ober test --config /etc/ober/ober.yaml --timeout 30s
  ober test --json | jq '.[] | select(.ok == false)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := check.Run(cmd.Context(), a.configPath, check.Options{BGPTimeout: timeout, Logger: a.log})
			failures := check.Failed(checks)
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(checks); err != nil {
					return fmt.Errorf("test: write JSON: %w", err)
				}
			} else {
				for _, c := range checks {
					line := c.Detail
					if c.Fix != "" {
						line += "; fix: " + c.Fix
					}
					fmt.Fprintf(a.out, "%-4s %-22s %s\n", testLabel(c), c.Name, line)
				}
			}
			if failures > 0 {
				return fmt.Errorf("test: %d of %d checks failed", failures, len(checks))
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", check.DefaultBGPTimeout, "how long each BGP session may take to establish")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checks as JSON")
	return cmd
}

func testLabel(c check.Result) string {
	switch {
	case !c.OK:
		return "FAIL"
	case c.Status == check.Warn:
		return "warn"
	}
	return "ok"
}
