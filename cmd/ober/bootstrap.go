package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/install"
)

func newBootstrapCmd(a *app) *cobra.Command {
	o := install.Options{}
	var (
		root string
		yes  bool
	)
	cmd := &cobra.Command{
		Use:   "bootstrap [--root DIR] [-y] [--haproxy-repo distro|vendor] [--haproxy-version X.Y]",
		Short: "Prepare this machine for ober: packages, binary, units, kernel tuning, bpffs",
		Long: `bootstrap prepares a machine to run ober, and may be run again at any time:
each step changes what differs and prints one line, created, changed,
unchanged, installed or skipped, and a run that finds everything in place
ends with "nothing changed".

  os         Ubuntu 24.04, Debian 12 or 13, RHEL 10 (or a rebuild: Rocky, Alma)
  kernel     the running kernel: version, BTF, XDP and sk_lookup programs, bpf_link
  packages   haproxy, keepalived, iproute2 (iproute), ethtool: only the missing
             ones, with apt-get or dnf, after asking (or -y). --haproxy-repo
             vendor takes HAProxy --haproxy-version from haproxy.debian.net on
             Debian or the vbernat PPA on Ubuntu (apt source and keyring in
             /etc/apt); RHEL 10's own HAProxy is 3.x already
  binary     this binary as /usr/local/sbin/ober
  dirs       /etc/ober (0750), /etc/ober/tls (0700), /var/lib/ober, /var/log/ober,
             and /etc/tmpfiles.d/ober.conf for /run/ober
  units      ober's systemd units in /etc/systemd/system (daemon-reload when one
             changed; bootstrap neither enables nor starts them: 'ober start')
  tuning     /etc/sysctl.d/90-ober.conf, applied with sysctl -p
  watchdog   /etc/systemd/system.conf.d/90-ober-watchdog.conf: systemd's
             hardware watchdog resets a frozen node (--runtime-watchdog 0:
             none); systemd reads it after 'systemctl daemon-reexec'
  bpffs      /sys/fs/bpf mounted, and in /etc/fstab unless a line there has it
  completion /usr/share/bash-completion/completions/ober

It records what it wrote in /var/lib/ober/bootstrap.json, so that
'ober uninstall' removes exactly that.

--root DIR fills the tree at DIR instead of the machine: files only, no
package manager, systemctl, sysctl or mount (those steps say skipped). The
kernel checked is always the running one.`,
		Example: `  ober bootstrap
  ober bootstrap -y --haproxy-repo vendor --haproxy-version 3.2
  ober bootstrap --runtime-watchdog 30s --reboot-watchdog 5m
  ober bootstrap --root /srv/images/node1 -y`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.HAProxyRepo == install.RepoDistro && cmd.Flags().Changed("haproxy-version") {
				return fmt.Errorf("bootstrap: --haproxy-version %s needs --haproxy-repo vendor: with distro the distribution picks the version", o.HAProxyVersion)
			}
			live, err := checkRoot(root)
			if err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bootstrap: find this binary: %w", err)
			}
			var completion bytes.Buffer
			if err := cmd.Root().GenBashCompletionV2(&completion, true); err != nil {
				return fmt.Errorf("bootstrap: bash completion: %w", err)
			}
			o.Root, o.Live, o.Out, o.Yes = root, live, a.out, yes
			o.Binary, o.Completion = exe, completion.Bytes()
			o.Confirm = terminalConfirm(cmd.InOrStdin(), a.out)
			if err := install.Bootstrap(cmd.Context(), o); err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", "/", "install into the tree at `DIR` instead of this machine (files only)")
	f.BoolVarP(&yes, "yes", "y", false, "install missing packages without asking")
	f.StringVar(&o.HAProxyRepo, "haproxy-repo", install.RepoDistro, "where HAProxy comes from: distro or vendor")
	f.StringVar(&o.HAProxyVersion, "haproxy-version", install.DefaultHAProxyVersion, "HAProxy branch `X.Y` with --haproxy-repo vendor")
	f.DurationVar(&o.RuntimeWatchdog, "runtime-watchdog", install.DefaultRuntimeWatchdog, "systemd RuntimeWatchdogSec (0: write no watchdog drop-in)")
	f.DurationVar(&o.RebootWatchdog, "reboot-watchdog", install.DefaultRebootWatchdog, "systemd RebootWatchdogSec")
	// A mirror of the vendor repository's key, and the tests' key server.
	f.StringVar(&o.KeyURL, "haproxy-key-url", "", "URL of the vendor repository's signing key")
	_ = f.MarkHidden("haproxy-key-url")
	completeWords(cmd, "haproxy-repo", install.RepoDistro, install.RepoVendor)
	return cmd
}

// checkRoot checks --root and reports whether it is the running system,
// where bootstrap and uninstall run commands too.
func checkRoot(root string) (bool, error) {
	if root == "" {
		return false, errors.New("--root must not be empty")
	}
	st, err := os.Stat(root)
	if err != nil {
		return false, fmt.Errorf("--root %s: %w", root, unwrapPathError(err))
	}
	if !st.IsDir() {
		return false, fmt.Errorf("--root %s: not a directory", root)
	}
	return filepath.Clean(root) == "/", nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// terminalConfirm asks yes/no questions on in when it is a terminal; nil
// otherwise, and the command then wants -y.
func terminalConfirm(in io.Reader, out io.Writer) func(string) (bool, error) {
	if !isTerminal(in) {
		return nil
	}
	r := bufio.NewReader(in)
	return func(q string) (bool, error) {
		fmt.Fprintf(out, "%s [y/N] ", q)
		line, err := r.ReadString('\n')
		if err != nil && line == "" {
			return false, fmt.Errorf("read the answer: %w", err)
		}
		switch strings.ToLower(strings.TrimSpace(line)) {
		case "y", "yes":
			return true, nil
		}
		return false, nil
	}
}
