package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Where HAProxy comes from.
const (
	RepoDistro = "distro" // the distribution's own archive
	RepoVendor = "vendor" // haproxy.debian.net on Debian, the vbernat PPA on Ubuntu
)

// DefaultHAProxyVersion is the HAProxy branch --haproxy-repo vendor
// installs unless told otherwise: the current LTS branch.
const DefaultHAProxyVersion = "3.2"

var branchRE = regexp.MustCompile(`^[1-9][0-9]*\.[0-9]+$`)

// The vendor repositories. haproxy.debian.net publishes one suite per
// Debian release and HAProxy branch ("bookworm-backports-3.2") and signs
// it with one binary keyring; Launchpad publishes one PPA per branch,
// signed with the PPA's key, served armoured by the Ubuntu keyserver.
const (
	DebianKeyURL      = "https://haproxy.debian.net/haproxy-archive-keyring.gpg"
	debianRepoURL     = "http://haproxy.debian.net"
	ppaFingerprint    = "CFFB779AADC995E4F350A060505D97A41C61B9CD"
	UbuntuKeyURL      = "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x" + ppaFingerprint
	ppaRepoURL        = "https://ppa.launchpadcontent.net/vbernat/haproxy-%s/ubuntu"
	repoSourcePath    = "/etc/apt/sources.list.d/ober-haproxy.list"
	debianKeyringPath = "/etc/apt/keyrings/ober-haproxy.gpg"
	// apt reads a signed-by keyring as armoured when its name ends in .asc.
	ubuntuKeyringPath = "/etc/apt/keyrings/ober-haproxy.asc"
)

// packagesFor lists what ober runs with: HAProxy, keepalived for VRRP,
// ip and ethtool (the daemon and doctor call them).
func packagesFor(f Family) []string {
	if f == RHEL {
		return []string{"haproxy", "keepalived", "iproute", "ethtool"}
	}
	return []string{"haproxy", "keepalived", "iproute2", "ethtool"}
}

// vendorRepo is the source line, keyring path and key URL for o and
// branch.
func vendorRepo(o OS, branch, keyURL string) (Repo, string, error) {
	switch {
	case o.Family == RHEL:
		return Repo{}, "", fmt.Errorf("--haproxy-repo vendor: no vendor repository is supported on %s; its AppStream ships HAProxy 3.x: use --haproxy-repo distro", o)
	case o.ID == "ubuntu":
		if keyURL == "" {
			keyURL = UbuntuKeyURL
		}
		return Repo{Source: repoSourcePath, Keyring: ubuntuKeyringPath,
			Line: fmt.Sprintf("deb [signed-by=%s] %s %s main", ubuntuKeyringPath, fmt.Sprintf(ppaRepoURL, branch), o.Codename)}, keyURL, nil
	default:
		if keyURL == "" {
			keyURL = DebianKeyURL
		}
		return Repo{Source: repoSourcePath, Keyring: debianKeyringPath,
			Line: fmt.Sprintf("deb [signed-by=%s] %s %s-backports-%s main", debianKeyringPath, debianRepoURL, o.Codename, branch)}, keyURL, nil
	}
}

// foreignHAProxySource finds an apt source, not ober's, that already
// lists a vendor HAProxy repository: a second one with another keyring
// makes apt refuse both ("Conflicting values set for option Signed-By").
func foreignHAProxySource(root string) string {
	files, _ := filepath.Glob(host(root, "/etc/apt/sources.list.d/*"))
	files = append([]string{host(root, "/etc/apt/sources.list")}, files...)
	for _, f := range files {
		if filepath.Base(f) == filepath.Base(repoSourcePath) {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "#") {
				continue
			}
			if strings.Contains(l, "haproxy.debian.net") || strings.Contains(l, "vbernat/haproxy") {
				rel, _ := filepath.Rel(root, f)
				return "/" + rel
			}
		}
	}
	return ""
}

// fetchKey downloads a repository key, refusing what is not one (an
// error page, a captive portal): apt would only fail later, on every
// update, with a less clear message.
func fetchKey(ctx context.Context, client *http.Client, url string, armoured bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("repository key %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("repository key: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("repository key %s: HTTP %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("repository key %s: %w", url, err)
	}
	if armoured {
		if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
			return nil, fmt.Errorf("repository key %s: not an armoured OpenPGP public key", url)
		}
		return b, nil
	}
	// A binary keyring starts with a public-key packet: tag 6 in the old
	// (0x98/0x99/0x9a) or new (0xc6) packet format.
	if len(b) == 0 || (b[0] != 0x98 && b[0] != 0x99 && b[0] != 0x9a && b[0] != 0xc6) {
		return nil, fmt.Errorf("repository key %s: not a binary OpenPGP keyring", url)
	}
	return b, nil
}

// pkgState is one package of the plan.
type pkgState struct {
	name    string // as the package manager knows it
	spec    string // what to install: name, or name=3.2.* for a vendor branch
	missing bool
	why     string // "not installed", "2.6.12-1 is not 3.2"
}

// planPackages asks dpkg-query or rpm which of the packages are missing.
// With a vendor branch, an installed HAProxy of another branch counts as
// missing: the install then upgrades it from the vendor repository.
func planPackages(ctx context.Context, o OS, branch string) ([]pkgState, error) {
	var out []pkgState
	for _, p := range packagesFor(o.Family) {
		st := pkgState{name: p, spec: p}
		if p == "haproxy" && branch != "" {
			st.spec = "haproxy=" + branch + ".*"
		}
		installed, version, err := queryPackage(ctx, o.Family, p)
		if err != nil {
			return nil, err
		}
		switch {
		case !installed:
			st.missing, st.why = true, "not installed"
		case p == "haproxy" && branch != "" && !strings.HasPrefix(version, branch+"."):
			st.missing, st.why = true, fmt.Sprintf("%s is not %s", version, branch)
		}
		out = append(out, st)
	}
	return out, nil
}

// queryPackage reports whether p is installed, and its version.
func queryPackage(ctx context.Context, f Family, p string) (bool, string, error) {
	var (
		out []byte
		err error
	)
	if f == RHEL {
		out, err = runCmd(ctx, nil, "rpm", "-q", "--qf", `%{VERSION}-%{RELEASE}\n`, p)
	} else {
		out, err = runCmd(ctx, nil, "dpkg-query", "-W", "-f", `${db:Status-Status} ${Version}\n`, p)
	}
	var exit interface{ ExitCode() int }
	if errors.As(err, &exit) && exit.ExitCode() > 0 {
		// rpm: "package X is not installed"; dpkg-query: "no packages
		// found matching X". Both exit 1.
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("packages: %w", err)
	}
	fields := strings.Fields(string(out))
	if f == RHEL {
		if len(fields) == 0 {
			return false, "", nil
		}
		return true, fields[0], nil
	}
	// dpkg keeps removed packages' configuration ("config-files").
	if len(fields) < 2 || fields[0] != "installed" {
		return false, "", nil
	}
	return true, fields[1], nil
}

// installPackages runs the package manager for specs.
func installPackages(ctx context.Context, o OS, specs []string, update bool) error {
	if o.Family == RHEL {
		_, err := runCmd(ctx, nil, "dnf", append([]string{"install", "-y"}, specs...)...)
		if err != nil {
			return fmt.Errorf("packages: %w", err)
		}
		return nil
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if update {
		if _, err := runCmd(ctx, env, "apt-get", "update"); err != nil {
			return fmt.Errorf("packages: %w", err)
		}
	}
	if _, err := runCmd(ctx, env, "apt-get", append([]string{"install", "-y"}, specs...)...); err != nil {
		return fmt.Errorf("packages: %w", err)
	}
	return nil
}

// keyringExists reports whether root/path is a file already.
func keyringExists(root, path string) (bool, error) {
	_, err := os.Stat(host(root, path))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
