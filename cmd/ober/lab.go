package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/lab"
)

func newLabCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build a whole ober site in network namespaces on this machine, show it work, remove it",
		Long: `lab builds, in network namespaces on this machine, a complete ober site: a
BIRD router spreading the VIPs over three ober nodes by ECMP, the nodes
(XDP, per-CPU HAProxy, BGP) behind a switch, two S3 backend hosts running
Ceph RGW, and a client host. The VIPs are 10.99.0.100 and fd99::100
(HTTPS), reachable from the client namespace. With --ha vrrp the nodes
run keepalived (VRRP) instead of BGP: three VIPs 10.99.1.101-103 on the
nodes' segment, one owned by each node, published by DNS round robin.

'lab up' builds it, prints where to point an S3 client and runs a short
demo; 'lab status' reports on it; 'lab down' removes every namespace,
process and mount it made, also after a crash of 'lab up'. Nothing
touches the root namespace's interfaces, routes or sysctls. Needs root.`,
		Example: `  ober lab up
  ober lab status
  ober lab down
  ober lab up --ha vrrp`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newLabUpCmd(a), newLabStatusCmd(a), newLabDownCmd(a), newLabSoakCmd(a))
	return cmd
}

func needRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab %s needs root (network namespaces, BPF): run it with sudo", what)
	}
	return nil
}

func newLabUpCmd(a *app) *cobra.Command {
	var o lab.Options
	var noDemo, noInstall bool
	var capacity string
	cmd := &cobra.Command{
		Use:   "up [--dir D] [--prefix P] [--ha bgp|vrrp] [--no-demo] [--no-install]",
		Short: "Build the lab and run the demo",
		Long: `up installs the Debian packages the lab needs when they are missing
(` + strings.Join(lab.Packages(), ", ") + `, and ` + strings.Join(lab.VRRPPackages(), ", ") + `
with --ha vrrp; --no-install makes that an error), builds the lab, waits until
the router has a three-way ECMP route to each VIP, and prints the S3 endpoint,
the credentials, the CA file and commands to try from the client namespace.

The demo then uploads and downloads objects of 1 KiB, 1 MiB and 32 MiB
through the VIP and checks each by SHA-256, shows which node and HAProxy
instance served each connection and the router's multipath route, kills
every HAProxy instance of node2 under requests and times the route leaving
and coming back. It takes under a minute; --no-demo skips it.

--ha vrrp builds the site with the nodes in ha.mode vrrp (keepalived, no
BGP, no BIRD): VIPs 10.99.1.101, .102 and .103 on the nodes' segment, VIP i
owned by node i and backed up by the others (preempt delay 2s). up waits
until each VIP is on its owner and prints the three endpoints and the DNS
round robin records to publish. Its demo makes the transfers through each
VIP in turn (served by its owner), shows which node holds which VIP and the
VRRP states, then kills every HAProxy instance of node2 under requests to
its VIP, sampling the nodes' addresses every 5 ms: the time until node3
holds it, the requests' outcome, whether two nodes ever held a VIP, and
node2 taking it back after the preempt delay.

The S3 backend's Ceph OSD keeps its objects in a sparse file of
--s3-capacity bytes (default 16GiB) under --s3-dir (default
/var/lib/ober-lab, which must be on a disk, not tmpfs): it takes disk space
as objects are written, and goes with 'ober lab down'. The S3 user may
store about 80% of the capacity (12.6 GiB of the default); past that,
uploads are refused with 403 QuotaExceeded rather than left hanging on a
full cluster.

A lab already in --dir is an error: 'ober lab down' first. When building
fails, up removes what it built and prints the end of the failing daemon's
log.`,
		Example: `  ober lab up
  ober lab up --ha vrrp
  ober lab up --no-demo
  ober lab up --s3-capacity 64GiB --s3-dir /srv/ober-lab
  ober lab up --dir /run/my-lab --prefix mylab-`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := needRoot("up"); err != nil {
				return err
			}
			o.Demo, o.Install, o.Out = !noDemo, !noInstall, a.out
			n, err := parseSize(capacity)
			if err != nil || n <= 0 {
				return fmt.Errorf("--s3-capacity %q: want a size such as 16GiB or 4096MiB", capacity)
			}
			o.S3Capacity = int64(n)
			_, err = lab.Up(cmd.Context(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", lab.DefaultDir, "the lab's directory (state, logs, configurations); removed whole by down")
	f.StringVar(&o.Prefix, "prefix", lab.DefaultPrefix, "start of every namespace name")
	f.StringVar(&o.HA, "ha", "bgp", "how the nodes share the VIPs: bgp (ECMP from the router) or vrrp (keepalived, one VIP per node)")
	f.BoolVar(&noDemo, "no-demo", false, "build the lab only")
	f.BoolVar(&noInstall, "no-install", false, "fail instead of installing missing Debian packages")
	f.StringVar(&o.S3Dir, "s3-dir", lab.DefaultS3Dir, "where the S3 backend's sparse storage file lives (a disk, not tmpfs)")
	f.StringVar(&capacity, "s3-capacity", "16GiB", "the S3 backend's size; the S3 user may store about 80% of it")
	return cmd
}

func newLabStatusCmd(a *app) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "status [--dir D]",
		Short: "Report on the lab: namespaces, processes, nodes, the router's sessions and routes or the VIPs' holders",
		Long: `status reports, for the lab in --dir: its namespaces, whether each process
it started still runs, per node /health, the HAProxy instances and whether
the node announces the VIPs, the router's BGP sessions (birdc show
protocols) and its ECMP next hops, and the S3 endpoint. In a VRRP lab
(up --ha vrrp) it reports per node keepalived and the VRRP states instead
of BGP, and which node holds each VIP (read from the nodes' interfaces):
all is well only when each VIP is held by exactly one node, its owner when
every node is healthy. It works on a half-built or half-dead lab and lists
what is missing. The exit code is 1 when anything is wrong or there is no
lab.`,
		Example: `  ober lab status
  ober lab status --dir /run/my-lab`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := needRoot("status"); err != nil {
				return err
			}
			r, err := lab.Status(cmd.Context(), dir)
			if errors.Is(err, lab.ErrNoLab) {
				fmt.Fprintf(a.out, "no lab in %s\n", dir)
				return err
			}
			if err != nil {
				return err
			}
			r.Print(a.out)
			if len(r.Problems) > 0 {
				return fmt.Errorf("lab status: %d problems", len(r.Problems))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", lab.DefaultDir, "the lab's directory")
	return cmd
}

func newLabDownCmd(a *app) *cobra.Command {
	var dir, prefix string
	cmd := &cobra.Command{
		Use:   "down [--dir D] [--prefix P]",
		Short: "Remove the lab: its processes, namespaces, mounts and directory",
		Long: `down removes everything the lab in --dir made, from its record alone:
it stops the processes it started (SIGTERM, then SIGKILL), and any other
process left in its namespaces (HAProxy instances outliving a killed
ober), unmounts its bpffs, deletes its namespaces (and their links) and
removes --dir. It works after 'lab up' was killed at any point, and
running it again is harmless.

--prefix removes the namespaces of a lab whose directory is gone.`,
		Example: `  ober lab down
  ober lab down --dir /run/my-lab
  ober lab down --dir /run/my-lab --prefix mylab-`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := needRoot("down"); err != nil {
				return err
			}
			rep, err := lab.Down(dir, prefix)
			if errors.Is(err, lab.ErrNoLab) {
				fmt.Fprintf(a.out, "no lab in %s: nothing to remove\n", dir)
				return nil
			}
			for _, part := range []struct {
				what  string
				items []string
			}{
				{"stopped", rep.Killed}, {"already ended", rep.Gone}, {"unmounted", rep.Unmounted},
				{"deleted namespaces", rep.Namespaces}, {"removed", rep.Removed},
			} {
				if len(part.items) > 0 {
					fmt.Fprintf(a.out, "%s: %s\n", part.what, strings.Join(part.items, ", "))
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "the lab in %s is gone\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", lab.DefaultDir, "the lab's directory")
	cmd.Flags().StringVar(&prefix, "prefix", "", "the lab's namespace prefix, when --dir holds no record")
	return cmd
}

func newLabSoakCmd(a *app) *cobra.Command {
	o := lab.SoakOptions{}
	var minSize, maxSize string
	cmd := &cobra.Command{
		Use:   "soak [--duration D]",
		Short: "Run mixed S3 traffic through a BGP lab while disrupting its nodes, then check every object",
		Long: `soak runs, from the client namespace with aws-cli, multipart uploads of
--min-size to --max-size (8 parallel transfers each), reads of random byte
ranges, listings and deletes, every object and range checked by SHA-256,
for --duration. Meanwhile it kills node1's HAProxy instances, reloads
node2, stops and starts node3 gracefully and takes node1's link down for
2 s, one after another. At the end every node must be healthy and
announce, the router must route over all of them, and every object the
gateway acknowledged and that was not deleted must read back byte-exact.
It prints throughput and errors per phase; the exit code is 1 when a
check fails.`,
		Example: `  ober lab soak
  ober lab soak --duration 30m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := needRoot("soak"); err != nil {
				return err
			}
			for _, f := range []struct {
				name, value string
				to          *int64
			}{{"--min-size", minSize, &o.MinSize}, {"--max-size", maxSize, &o.MaxSize}} {
				n, err := parseSize(f.value)
				if err != nil || n <= 0 {
					return fmt.Errorf("%s %q: want a size such as 50MiB", f.name, f.value)
				}
				*f.to = int64(n)
			}
			if o.Duration < 10*time.Second {
				return fmt.Errorf("--duration %s: at least 10s, for the four disruptions", o.Duration)
			}
			o.Out = a.out
			r, err := lab.Soak(cmd.Context(), o)
			if err != nil {
				return err
			}
			r.Print(a.out)
			if len(r.Problems) > 0 {
				return fmt.Errorf("lab soak: %d problems", len(r.Problems))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", lab.DefaultDir, "the lab's directory")
	f.DurationVar(&o.Duration, "duration", time.Minute, "how long the traffic runs")
	f.StringVar(&minSize, "min-size", "50MiB", "the smallest upload")
	f.StringVar(&maxSize, "max-size", "500MiB", "the largest upload")
	return cmd
}
