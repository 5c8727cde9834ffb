package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/bgp"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/daemon"
)

// testCheck is one line of `ober test`.
type testCheck struct {
	Name   string           `json:"name"`
	OK     bool             `json:"ok"`
	Detail string           `json:"detail"`
	BGP    *bgp.ProbeResult `json:"bgp,omitempty"`
}

func newTestCmd(a *app) *cobra.Command {
	var timeout time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test [--config FILE] [--timeout D] [--json]",
		Short: "Check the configuration and the routers without starting anything",
		Long: `test checks what the node needs, changing nothing:

  config   the configuration file is valid and its names resolve;
  haproxy  HAProxy accepts the rendered configuration of every instance;
  bgp      (ha.mode bgp) each peer: a session is opened with the node's
           identity, its state and the router's capabilities are reported,
           and it is closed again. Nothing is announced.

When the ober daemon is running, its established sessions are reported
instead: a router refuses a second session from the same address.

The exit code is 0 when every check passes, 1 otherwise.`,
		Example: `  ober test
  ober test --config /etc/ober/ober.yaml --timeout 30s
  ober test --json | jq '.[] | select(.ok == false)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := runTests(cmd.Context(), a, timeout)
			failed := 0
			for _, c := range checks {
				if !c.OK {
					failed++
				}
			}
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(checks); err != nil {
					return err
				}
			} else {
				for _, c := range checks {
					fmt.Fprintf(a.out, "%-4s %-22s %s\n", onOff(c.OK, "ok", "FAIL"), c.Name, c.Detail)
				}
			}
			if failed > 0 {
				return fmt.Errorf("test: %d of %d checks failed", failed, len(checks))
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "how long each BGP session may take to establish")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checks as JSON")
	return cmd
}

func runTests(ctx context.Context, a *app, timeout time.Duration) []testCheck {
	cfg, err := config.Load(a.configPath)
	if err != nil {
		return []testCheck{{Name: "config", Detail: oneLine(err)}}
	}
	checks := []testCheck{}
	res, err := daemon.Check(ctx, a.configPath, nil)
	if err != nil {
		checks = append(checks, testCheck{Name: "config", Detail: oneLine(err)})
	} else {
		checks = append(checks,
			testCheck{Name: "config", OK: true, Detail: fmt.Sprintf("%s: %d VIPs, %d services, %d backends", a.configPath,
				len(cfg.VIPs), len(cfg.Services), len(cfg.Backends.Servers))},
			testCheck{Name: "haproxy", OK: true, Detail: fmt.Sprintf("HAProxy %s accepts the configuration of %d instances", res.HAProxy, res.Instances)})
	}
	if cfg.HA.Mode != config.HAModeBGP || cfg.HA.BGP == nil {
		return checks
	}
	if st, err := fetchStatus(ctx, cfg.API.Listen); err == nil && st.Daemon.BGP != nil {
		for _, p := range st.Daemon.BGP.Peers {
			c := testCheck{Name: "bgp " + p.Address, OK: p.Up()}
			c.Detail = fmt.Sprintf("AS%d %s in the running daemon (pid %d)", p.ASN, p.State, st.Daemon.PID)
			if !p.Up() && p.LastError != "" {
				c.Detail += ": " + p.LastError
			}
			checks = append(checks, c)
		}
		return checks
	}
	sc, err := daemon.SpeakerConfig(cfg)
	if err != nil {
		return append(checks, testCheck{Name: "bgp", Detail: oneLine(err)})
	}
	out := make([]testCheck, len(sc.Peers))
	var wg sync.WaitGroup
	for i, peer := range sc.Peers {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			// Each probe is its own speaker: with one listener at most, a
			// passive peer is probed alone.
			r := bgp.Probe(pctx, sc, peer, a.log)
			c := testCheck{Name: "bgp " + r.Peer, OK: r.OK, BGP: &r}
			if r.OK {
				c.Detail = fmt.Sprintf("AS%d established in %s, router id %s; offers %s", r.ASN,
					r.Took.Round(time.Millisecond), r.RouterID, strings.Join(r.Capabilities, ", "))
			} else {
				c.Detail = fmt.Sprintf("AS%d %s: %s (check the address, ha.bgp.asn, the peer's asn and password, and the router's neighbor entry for this node)", r.ASN, r.State, r.Error)
			}
			out[i] = c
		})
	}
	wg.Wait()
	return append(checks, out...)
}

// oneLine joins a multi-problem error for a one-line report.
func oneLine(err error) string {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}
