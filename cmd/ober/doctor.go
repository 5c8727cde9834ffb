package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/doctor"
)

func newDoctorCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor [--config FILE] [--json]",
		Short: "Check that this machine can run ober well, and say how to fix what it cannot",
		Long: `doctor checks the machine against ober's requirements and prints one line per
check, PASS, WARN or FAIL, with the fix under every WARN and FAIL:

  kernel version and BTF, the BPF filesystem, each of node.interfaces (driver,
  native XDP, virtio-net queues against vCPUs), AES-NI and the VM's CPU type,
  sysctls against ober's tuning (IPv4 forwarding with BGP handoff), HAProxy's
  version and TLS library, keepalived or the BGP settings, the ports ober
  binds, the services' certificates (expired, within 30 days of expiry, key
  mismatch, names) and whether the backends accept TCP connections.

The configuration is --config; when it does not load, that is a failure and
the checks that need it are skipped. doctor changes nothing. Run it in the
network namespace that holds node.interfaces: sysctls, interfaces and ports
are per namespace.

The exit code is 1 when any check fails; warnings alone exit 0. --json prints
the results as a JSON array of {name, status, detail, fix}.`,
		Example: `  ober doctor
  ober doctor --config /etc/ober/ober.yaml
  ober doctor --json | jq '.[] | select(.status != "pass")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(a.configPath)
			results := []doctor.Result{doctor.ConfigResult(a.configPath, cfg, err)}
			results = append(results, doctor.Run(cmd.Context(), doctor.DefaultEnv(), cfg)...)
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return fmt.Errorf("doctor: write JSON: %w", err)
				}
			} else {
				printDoctor(a.out, results)
			}
			if n := countStatus(results, doctor.Fail); n > 0 {
				return fmt.Errorf("doctor: %d %s failed", n, doctorPlural(n, "check"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	return cmd
}

// printDoctor writes one line per check, the fix indented under it, and
// a summary.
func printDoctor(w io.Writer, rs []doctor.Result) {
	// Names are short; a long one (an interface's) pushes its own line
	// rather than every line's column.
	width := 0
	for _, r := range rs {
		width = max(width, min(len(r.Name), 16))
	}
	for _, r := range rs {
		// A configuration error can span lines (one per problem); keep
		// them under the check they belong to.
		detail := strings.ReplaceAll(r.Detail, "\n", "\n"+strings.Repeat(" ", 6+width+1))
		fmt.Fprintf(w, "%-4s  %-*s %s\n", strings.ToUpper(string(r.Status)), width, r.Name, detail)
		if r.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", r.Fix)
		}
	}
	fmt.Fprintf(w, "\n%d passed, %d %s, %d failed\n", countStatus(rs, doctor.Pass),
		countStatus(rs, doctor.Warn), doctorPlural(countStatus(rs, doctor.Warn), "warning"), countStatus(rs, doctor.Fail))
}

func countStatus(rs []doctor.Result, s doctor.Status) int {
	n := 0
	for _, r := range rs {
		if r.Status == s {
			n++
		}
	}
	return n
}

func doctorPlural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
