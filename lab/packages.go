package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/lab/cephlab"
)

// vrrpTools are the programs --ha vrrp runs besides tools; a BGP lab
// does without them.
var vrrpTools = map[string]string{"keepalived": "keepalived"}

// tools maps every program the lab runs in any mode to its Debian
// package.
func tools() map[string]string {
	m := map[string]string{
		"ip": "iproute2", "ethtool": "ethtool", "haproxy": "haproxy",
		"bird": "bird2", "birdc": "bird2",
	}
	for bin, pkg := range cephlab.Required {
		m[bin] = pkg
	}
	return m
}

// toolsFor adds the programs of the ha mode to tools.
func toolsFor(ha string) map[string]string {
	m := tools()
	if ha == haVRRP {
		for bin, pkg := range vrrpTools {
			m[bin] = pkg
		}
	}
	return m
}

// Packages lists the Debian packages the lab needs in BGP mode; VRRP
// mode needs VRRPPackages too.
func Packages() []string {
	var pkgs []string
	for _, p := range tools() {
		if !slices.Contains(pkgs, p) {
			pkgs = append(pkgs, p)
		}
	}
	slices.Sort(pkgs)
	return pkgs
}

// VRRPPackages lists the Debian packages --ha vrrp needs besides
// Packages.
func VRRPPackages() []string {
	var pkgs []string
	for _, p := range vrrpTools {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	return pkgs
}

// MissingPackages lists the packages of the programs not on PATH that a
// lab of the ha mode ("bgp" or "vrrp"; "" is bgp) runs.
func MissingPackages(ha string) []string {
	var missing []string
	for bin, pkg := range toolsFor(ha) {
		if _, err := exec.LookPath(bin); err != nil && !slices.Contains(missing, pkg) {
			missing = append(missing, pkg)
		}
	}
	slices.Sort(missing)
	return missing
}

// ensurePackages checks that every program is there and, when install
// is set, installs the packages of those that are not with apt-get.
func ensurePackages(ctx context.Context, ha string, install bool, out io.Writer) error {
	missing := MissingPackages(ha)
	if len(missing) == 0 {
		return nil
	}
	cmdline := "apt-get install -y --no-install-recommends " + strings.Join(missing, " ")
	if !install {
		return fmt.Errorf("the lab needs Debian packages %s: run `%s` (or `ober lab up` without --no-install)",
			strings.Join(missing, ", "), cmdline)
	}
	fmt.Fprintf(out, "installing missing Debian packages: %s\n", strings.Join(missing, " "))
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"apt-get", "update", "-q"},
		append([]string{"apt-get", "install", "-y", "-q", "--no-install-recommends"}, missing...),
	} {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
		}
	}
	if still := MissingPackages(ha); len(still) > 0 {
		return fmt.Errorf("still missing after apt-get install: programs of %s (is /usr/sbin on PATH?)", strings.Join(still, ", "))
	}
	return nil
}

// ensureHAProxyUser gives the machine the system user name the nodes'
// HAProxy instances drop to (sysuser.HAProxyUser), as `ober bootstrap`
// does on a node; with install unset its absence is an error naming the
// command.
func ensureHAProxyUser(ctx context.Context, name string, install bool, out io.Writer) error {
	if sysuser.Exists(name) {
		return nil
	}
	if !install {
		return fmt.Errorf("the nodes' HAProxy instances run as the system user %s, which this machine lacks: run `%s` (or `ober lab up` without --no-install)",
			name, sysuser.Hint(name))
	}
	created, err := sysuser.Ensure(ctx, name)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(out, "created the system user and group %s: the HAProxy instances run as it\n", name)
	}
	return nil
}
