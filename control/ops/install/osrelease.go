// Package install puts ober on a machine and takes it off again: the
// packages it runs with, its binary, directories, systemd units, kernel
// tuning, watchdog drop-in, bpffs and shell completion (Bootstrap), and
// the reverse (Uninstall). Every path is under Options.Root, so both run
// against a directory tree as well as against the machine; commands
// (package managers, systemctl, sysctl, mount) run only when
// Options.Live says the tree is the running system.
package install

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Family is how a distribution installs packages.
type Family string

// The families ober supports.
const (
	Debian Family = "debian" // Debian and Ubuntu: apt-get, dpkg-query
	RHEL   Family = "rhel"   // RHEL and its rebuilds: dnf, rpm
)

// OS is the distribution under the root, from os-release.
type OS struct {
	ID        string // "debian", "ubuntu", "rhel", "rocky", ...
	VersionID string // "12", "24.04", "10.0"
	Name      string // PRETTY_NAME, for messages
	Codename  string // "bookworm", "noble"; empty on RHEL
	Family    Family
}

// String names the OS for the report.
func (o OS) String() string {
	if o.Name != "" {
		return o.Name
	}
	return o.ID + " " + o.VersionID
}

// Supported is the list of distributions bootstrap knows, for errors.
const Supported = "Ubuntu 24.04, Debian 12 and 13, RHEL 10 (and rebuilds with ID_LIKE rhel, such as Rocky and Alma 10)"

// Debian releases by VERSION_ID; os-release carries VERSION_CODENAME,
// but minimal images have been seen without it.
var debianCodenames = map[string]string{"12": "bookworm", "13": "trixie"}

// DetectOS reads <root>/etc/os-release (or /usr/lib/os-release, its
// fallback) and checks that ober supports the distribution.
func DetectOS(root string) (OS, error) {
	var (
		b    []byte
		err  error
		path string
	)
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		path = p
		if b, err = os.ReadFile(filepath.Join(root, p)); !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return OS{}, fmt.Errorf("os: cannot read %s: %w", path, err)
	}
	kv := parseOSRelease(b)
	o := OS{ID: kv["ID"], VersionID: kv["VERSION_ID"], Name: kv["PRETTY_NAME"], Codename: kv["VERSION_CODENAME"]}
	like := strings.Fields(kv["ID_LIKE"])
	major, _, _ := strings.Cut(o.VersionID, ".")
	switch {
	case o.ID == "ubuntu" && o.VersionID == "24.04":
		o.Family = Debian
		if o.Codename == "" {
			o.Codename = kv["UBUNTU_CODENAME"]
		}
		if o.Codename == "" {
			o.Codename = "noble"
		}
	case o.ID == "debian" && debianCodenames[o.VersionID] != "":
		o.Family = Debian
		if o.Codename == "" {
			o.Codename = debianCodenames[o.VersionID]
		}
	case (o.ID == "rhel" || slices.Contains(like, "rhel")) && major == "10":
		o.Family = RHEL
	default:
		return OS{}, fmt.Errorf("os: unsupported: ID %q, VERSION_ID %q in %s; ober supports %s",
			o.ID, o.VersionID, path, Supported)
	}
	return o, nil
}

// parseOSRelease reads os-release's shell-like KEY=value lines; values
// may be quoted with single or double quotes.
func parseOSRelease(b []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			if v[0] == '"' {
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				} else {
					v = v[1 : len(v)-1]
				}
			} else {
				v = v[1 : len(v)-1]
			}
		}
		kv[k] = v
	}
	return kv
}
