package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/service"
)

func newLogsCmd(a *app) *cobra.Command {
	var (
		follow, direct             bool
		lines, svc, logFile, sdDir string
	)
	cmd := &cobra.Command{
		Use:   "logs [-f] [-n N] [--service http|bgp|ha|all]",
		Short: "Show the daemon's log, readably, optionally for one component",
		Long: `logs shows the last lines of the daemon's log and, with -f, follows it until
Ctrl-C.

Where journald runs (and journalctl is installed) the log is the ober unit's
journal; otherwise, with --direct or with --log-file, it is the file
'ober start' appends to (` + service.DefaultLogFile + `). A followed file may be
truncated or rotated: logs goes on with the file's new content.

The daemon logs JSON records; they are shown one per line as
  2026-11-21T10:00:00.123Z INFO  [bgp] message key=value ...
and other lines as they are. --service keeps one component's records: http
(the HAProxy instances), bgp (the BGP speaker and the drain handoff), ha
(VRRP) or all; other lines are dropped then. -n counts the lines shown,
after --service; -n all shows everything.`,
		Example: `  ober logs
  ober logs -f --service bgp
  ober logs -n 200 --service http
  ober logs --log-file /var/log/ober/ober.log -n all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := service.ParseLines(lines)
			if err != nil {
				return fmt.Errorf("logs: %w", err)
			}
			filter, err := service.ParseFilter(svc)
			if err != nil {
				return fmt.Errorf("logs: %w", err)
			}
			opts := service.LogOptions{Lines: n, Follow: follow, Filter: filter, Notice: a.errOut}
			if !direct && !cmd.Flags().Changed("log-file") {
				if journalctl, ok := service.DetectJournal(sdDir); ok {
					if err := service.JournalLogs(cmd.Context(), journalctl, a.out, opts); err != nil {
						return fmt.Errorf("logs: %w", err)
					}
					return nil
				}
			}
			if err := service.FileLogs(cmd.Context(), logFile, a.out, opts); err != nil {
				return fmt.Errorf("logs: %w", err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&follow, "follow", "f", false, "follow the log until Ctrl-C")
	fl.StringVarP(&lines, "lines", "n", "50", "how many of the last lines to show, or all")
	fl.StringVar(&svc, "service", "all", "component: http, bgp, ha or all")
	fl.BoolVar(&direct, "direct", false, "read --log-file even where journald runs")
	fl.StringVar(&logFile, "log-file", service.DefaultLogFile, "the log file of the direct mode")
	fl.StringVar(&sdDir, "systemd-dir", service.DefaultSystemdDir, "systemd's runtime directory")
	_ = fl.MarkHidden("systemd-dir")
	return cmd
}
