package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/ops/upgrade"
)

// exitUpdateAvailable is `ober upgrade --check`'s exit code when
// something is newer, so that scripts can tell it from an error (1).
const exitUpdateAvailable = 10

// upgradeOptions are the flags of `ober upgrade`.
type upgradeOptions struct {
	check, yes, force, noRestart bool
	releaseURL, binary, api      string
	packages                     string
}

func newUpgradeCmd(a *app, version string) *cobra.Command {
	var o upgradeOptions
	cmd := &cobra.Command{
		Use:   "upgrade [--check] [-y] [--force] [--binary PATH] [--no-restart]",
		Short: "Upgrade ober to the latest release, and the haproxy and keepalived packages",
		Long: `upgrade installs the latest release of ober over the installed binary and
restarts the daemon's control process, which keeps the dataplane attached
and the HAProxy instances serving. With -y, or when answered yes, it also
upgrades the distribution packages haproxy and keepalived that have a newer
candidate (apt-get install -y --only-upgrade on Debian and Ubuntu, dnf -y
upgrade on RHEL). HAProxy instances already running keep the old haproxy
binary until they are next reloaded or restarted.

--check only looks: it prints the running version, the latest release,
and the installed and candidate versions of haproxy and keepalived, and
exits 0 when nothing is newer, 10 when an update is available and 1 on an
error. Package candidates are what the package manager's metadata knows:
run apt-get update first on Debian and Ubuntu (dnf refreshes expired
metadata itself).

The steps, in order:
  1. fetch the release description from --release-url;
  2. download the binary for this machine's architecture into the
     installed binary's directory and check its SHA-256 against the
     release's SHA256SUMS (a mismatch stops here);
  3. run the download with 'version': it must execute and name the
     release's tag;
  4. upgrade the packages (with -y or a yes);
  5. keep the installed binary as <binary>.previous and rename the new one
     over it in one atomic step;
  6. when the daemon answers on its API (api.listen of --config, or
     --api), run '<binary> restart', unless --no-restart.
On any failure before step 5 the installed binary stays as it was and the
download is removed; packages upgraded in step 4 stay upgraded.

To roll back: mv <binary>.previous <binary> && <binary> restart

A release older than the running version, or the same one, is not
installed without --force; nor is a release over a development build
(see 'ober version'), which cannot be ordered against releases. Without
-y, upgrade asks before changing anything, and refuses when stdin is not
a terminal.

Releases: ober is released as GitHub releases of ober-ingress/ober; the
default --release-url is the GitHub REST API's latest release,
` + upgrade.DefaultReleaseURL + `.
A mirror serves the same JSON document. Its fields read:
  tag_name                          vX.Y.Z
  assets[].name                     ober-linux-amd64, ober-linux-arm64 (the
                                    binaries) and SHA256SUMS
  assets[].browser_download_url     where each asset is downloaded from
                                    (relative URLs resolve against the
                                    document's)
SHA256SUMS is sha256sum's output over the binaries ("<hex>  <name>").`,
		Example: `  ober upgrade --check          # exit 10: an update is available
  ober upgrade                  # asks, then upgrades ober (and the packages)
  ober upgrade -y --no-restart  # unattended; restart later with 'ober restart'
  ober upgrade --release-url https://mirror.example/ober/latest.json --binary /usr/local/sbin/ober
  mv /usr/local/sbin/ober.previous /usr/local/sbin/ober && ober restart   # roll back`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			code, err := runUpgrade(cmd.Context(), a, version, o, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("upgrade: %w", err)
			}
			if code != 0 {
				return exitStatus(code)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.check, "check", false, "only report what is newer; exit 10 when something is, 0 when not")
	f.BoolVarP(&o.yes, "yes", "y", false, "answer yes: replace ober and upgrade the haproxy and keepalived packages without asking")
	f.BoolVar(&o.force, "force", false, "install the release even when it is not newer, or over a development build")
	f.BoolVar(&o.noRestart, "no-restart", false, "do not restart the daemon after replacing the binary")
	f.StringVar(&o.releaseURL, "release-url", upgrade.DefaultReleaseURL, "`URL` of the release description (GitHub's releases/latest JSON, or a mirror's)")
	f.StringVar(&o.binary, "binary", "", "installed ober `PATH` to replace (default: this executable)")
	f.StringVar(&o.api, "api", "", "the daemon's API `HOST:PORT` (default: api.listen from --config)")
	f.StringVar(&o.packages, "packages", "auto", "package manager for haproxy and keepalived: auto, apt, dnf or none")
	return cmd
}

// upgradePlan is what upgrade found.
type upgradePlan struct {
	running string
	release *upgrade.Release
	// state of the running ober against the release: "newer" (the
	// release is), "current", "older" (the release is) or "dev".
	state    string
	packages []upgrade.Package
	manager  upgrade.Manager
}

// newerPackages names the packages that have a newer candidate.
func (p *upgradePlan) newerPackages() []string {
	var names []string
	for _, pk := range p.packages {
		if pk.Newer {
			names = append(names, pk.Name)
		}
	}
	return names
}

// runUpgrade does the work of `ober upgrade` and returns the exit code
// on success.
func runUpgrade(ctx context.Context, a *app, version string, o upgradeOptions, stdin io.Reader) (int, error) {
	mgr, err := upgrade.NewManager(o.packages, "/etc/os-release")
	if err != nil {
		return 0, fmt.Errorf("--packages: %w", err)
	}
	if !o.check && !o.yes && !isTerminal(stdin) {
		return 0, errors.New("stdin is not a terminal, so there is no one to ask: pass -y to upgrade without asking, or --check to only look")
	}
	binary := o.binary
	if !o.check && binary == "" {
		if binary, err = os.Executable(); err != nil {
			return 0, fmt.Errorf("cannot tell where this ober is installed (%w): give --binary PATH", err)
		}
	}
	if !o.check {
		// Before the download: a wrong --binary is the operator's quick fix.
		if _, err := os.Stat(binary); err != nil {
			return 0, fmt.Errorf("--binary: %w", err)
		}
	}

	client := &http.Client{}
	userAgent := "ober/" + version
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	rel, err := upgrade.FetchRelease(fctx, client, o.releaseURL, userAgent)
	cancel()
	if err != nil {
		return 0, err
	}
	plan := &upgradePlan{running: version, release: rel, manager: mgr, state: "dev"}
	if !upgrade.IsDevelopment(version) {
		cur, _ := upgrade.ParseVersion(version) // not a development build: it parses
		plan.state = map[int]string{1: "newer", 0: "current", -1: "older"}[rel.Version.Compare(cur)]
	}
	if mgr != nil {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		plan.packages, err = mgr.Query(qctx, upgrade.PackageNames())
		cancel()
		if err != nil {
			return 0, fmt.Errorf("packages: %w", err)
		}
	}
	printPlan(a.out, plan)

	if o.check {
		var updates []string
		if plan.state == "newer" {
			updates = append(updates, "ober "+rel.Tag)
		}
		for _, p := range plan.packages {
			if p.Newer {
				updates = append(updates, p.Name+" "+p.Candidate)
			}
		}
		if len(updates) == 0 {
			fmt.Fprintln(a.out, "\nnothing to upgrade")
			return 0, nil
		}
		fmt.Fprintf(a.out, "\nupdates available: %s ('ober upgrade' installs them)\n", strings.Join(updates, ", "))
		return exitUpdateAvailable, nil
	}

	replace := false
	switch {
	case plan.state == "newer" || o.force:
		replace = true
	case plan.state == "older":
		return 0, fmt.Errorf("the latest release %s is older than this ober %s: --force installs it", rel.Tag, version)
	case plan.state == "dev":
		return 0, fmt.Errorf("this ober %s is a development build, which cannot be ordered against release %s: --force installs it", version, rel.Tag)
	}
	pkgs := plan.newerPackages()
	if !replace && len(pkgs) == 0 {
		fmt.Fprintf(a.out, "\nnothing to upgrade: ober %s is the latest release (--force reinstalls it)\n", version)
		return 0, nil
	}

	fmt.Fprintln(a.out)
	if replace {
		fmt.Fprintf(a.out, "will replace %s (ober %s) with ober %s\n", binary, version, rel.Tag)
	} else {
		fmt.Fprintf(a.out, "ober %s is the latest release (--force reinstalls it)\n", version)
	}
	if len(pkgs) > 0 {
		fmt.Fprintf(a.out, "will run: %s\n", strings.Join(plan.manager.UpgradeArgs(pkgs), " "))
	}
	if !o.yes {
		ok, err := confirm(a.out, stdin, "proceed? [y/N] ")
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, errors.New("cancelled, nothing changed")
		}
	}

	var staged *upgrade.Staged
	if replace {
		asset := upgrade.AssetName(runtime.GOOS, runtime.GOARCH)
		staged, err = upgrade.Stage(ctx, upgrade.InstallOptions{
			Client: client, UserAgent: userAgent, Release: rel, Asset: asset, Binary: binary,
		})
		if err != nil {
			return 0, err
		}
		defer staged.Discard()
		fmt.Fprintf(a.out, "downloaded %s %s: sha256 %s matches %s; it runs: %s\n",
			asset, rel.Tag, staged.SHA256, upgrade.SumsAsset, staged.VersionLine)
	}
	if len(pkgs) > 0 {
		fmt.Fprintf(a.out, "running %s\n", strings.Join(plan.manager.UpgradeArgs(pkgs), " "))
		if err := plan.manager.Upgrade(ctx, pkgs, a.out, a.errOut); err != nil {
			if replace {
				return 0, fmt.Errorf("%w; ober was left at %s", err, version)
			}
			return 0, err
		}
		fmt.Fprintf(a.out, "upgraded %s; running HAProxy instances keep the old binary until they are next reloaded or restarted\n",
			strings.Join(pkgs, ", "))
	}
	if !replace {
		return 0, nil
	}
	inst, err := staged.Commit()
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(a.out, "installed ober %s at %s; the previous binary is %s\n", rel.Tag, inst.Binary, inst.Previous)
	fmt.Fprintf(a.out, "to roll back: mv %s %s && %s restart\n", inst.Previous, inst.Binary, inst.Binary)
	if o.noRestart {
		fmt.Fprintf(a.out, "not restarted (--no-restart): the daemon runs the old version until '%s restart'\n", inst.Binary)
		return 0, nil
	}
	return 0, restartDaemon(ctx, a, o, inst.Binary, rel.Tag)
}

// restartDaemon runs the new binary's `restart` when a daemon answers:
// the control process is replaced, the dataplane and HAProxy stay.
func restartDaemon(ctx context.Context, a *app, o upgradeOptions, binary, tag string) error {
	addr := o.api
	if addr == "" {
		addr = a.apiAddr()
	}
	if _, err := fetchStatus(ctx, addr); err != nil {
		fmt.Fprintf(a.out, "no daemon answers on %s (%v): nothing to restart\n", addr, err)
		return nil
	}
	args := []string{"--config", a.configPath, "--bpffs-root", a.root, "restart"}
	fmt.Fprintf(a.out, "restarting the daemon: %s %s\n", binary, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdout, cmd.Stderr = a.out, a.errOut
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ober %s is installed, but '%s restart' failed (%w): the daemon may still run the old version; retry 'ober restart', or roll back with mv %s%s %s",
			tag, binary, err, binary, upgrade.PreviousSuffix, binary)
	}
	return nil
}

// printPlan writes one line per component: what is installed, what is
// available, and whether that is an update.
func printPlan(w io.Writer, p *upgradePlan) {
	fmt.Fprintf(w, "latest release: %s (%s)\n\n", p.release.Tag, p.release.URL)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tINSTALLED\tAVAILABLE\tSTATUS")
	status := map[string]string{
		"newer":   "update available",
		"current": "current",
		"older":   "newer than the latest release",
		"dev":     "development build: cannot compare (--force installs the release)",
	}[p.state]
	fmt.Fprintf(tw, "ober\t%s\t%s\t%s\n", p.running, p.release.Tag, status)
	for _, pk := range p.packages {
		inst, cand, st := pk.Installed, pk.Candidate, "current"
		switch {
		case inst == "":
			inst, st = "-", "not installed"
		case pk.Newer:
			st = "update available"
		case cand == "":
			st = "no candidate in the package sources"
		}
		if cand == "" {
			cand = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", pk.Name, inst, cand, st)
	}
	tw.Flush()
	if p.manager == nil {
		fmt.Fprintln(w, "haproxy, keepalived: not checked (no apt or dnf here, or --packages none)")
	}
}

// confirm asks question and reads one line: yes or y proceeds.
func confirm(w io.Writer, r io.Reader, question string) (bool, error) {
	fmt.Fprint(w, question)
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && line == "" {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}
