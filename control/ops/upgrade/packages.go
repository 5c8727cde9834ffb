package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// PackageNames are the distribution packages ober runs, in the order
// they are reported.
func PackageNames() []string { return []string{"haproxy", "keepalived"} }

// Package is one distribution package's state.
type Package struct {
	Name string `json:"name"`
	// Installed is the installed version, empty when not installed.
	Installed string `json:"installed"`
	// Candidate is the version the package manager would install,
	// empty when it knows none.
	Candidate string `json:"candidate"`
	// Newer is set when Candidate is newer than Installed: an upgrade
	// would change something.
	Newer bool `json:"newer"`
}

// Manager is the distribution's package manager.
type Manager interface {
	// Name is "apt" or "dnf".
	Name() string
	// Query reports the installed and candidate versions of names, in
	// that order. It reads the package manager's metadata as it is (no
	// refresh for apt; dnf refreshes expired metadata itself).
	Query(ctx context.Context, names []string) ([]Package, error)
	// UpgradeArgs is the command line that upgrades names.
	UpgradeArgs(names []string) []string
	// Upgrade runs UpgradeArgs, its output going to stdout and stderr.
	Upgrade(ctx context.Context, names []string, stdout, stderr io.Writer) error
}

// NewManager returns the manager called name: "apt", "dnf", or "auto",
// which reads osRelease (/etc/os-release) and, failing that, looks for
// dpkg-query and rpm in PATH. Auto returns nil, nil on a system with
// neither: the packages are then not ober's to manage.
func NewManager(name, osRelease string) (Manager, error) {
	switch name {
	case "apt":
		return apt{}, nil
	case "dnf":
		return dnf{}, nil
	case "none":
		return nil, nil
	case "auto":
	default:
		return nil, fmt.Errorf("package manager %q: want auto, apt, dnf or none", name)
	}
	if b, err := os.ReadFile(osRelease); err == nil {
		ids := osReleaseIDs(b)
		for _, id := range ids {
			switch id {
			case "debian", "ubuntu":
				return apt{}, nil
			case "rhel", "fedora", "centos", "rocky", "almalinux":
				return dnf{}, nil
			}
		}
	}
	// Debian ships an rpm package and RHEL no dpkg: dpkg first.
	if _, err := exec.LookPath("dpkg-query"); err == nil {
		return apt{}, nil
	}
	if _, err := exec.LookPath("rpm"); err == nil {
		return dnf{}, nil
	}
	return nil, nil
}

// osReleaseIDs returns ID then the words of ID_LIKE.
func osReleaseIDs(b []byte) []string {
	var id, like []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		v = strings.ToLower(strings.Trim(v, `"'`))
		switch k {
		case "ID":
			id = []string{v}
		case "ID_LIKE":
			like = strings.Fields(v)
		}
	}
	return append(id, like...)
}

// pkgEnv is the environment of package commands: English output (apt
// translates "Candidate:") and no questions from debconf.
func pkgEnv() []string {
	return append(os.Environ(), "LC_ALL=C", "LANG=C", "DEBIAN_FRONTEND=noninteractive")
}

// output runs name args and returns stdout and the exit code; only a
// command that cannot be run is an error here.
func output(ctx context.Context, name string, args ...string) ([]byte, string, int, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = pkgEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return stdout.Bytes(), firstLine(stderr.String()), exit.ExitCode(), nil
	}
	if err != nil {
		return nil, "", 0, fmt.Errorf("%s: %w", name, err)
	}
	return stdout.Bytes(), firstLine(stderr.String()), 0, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func runUpgrade(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = pkgEnv()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// apt is Debian and Ubuntu: dpkg-query for what is installed, apt-cache
// policy for the candidate.
type apt struct{}

func (apt) Name() string { return "apt" }

func (apt) Query(ctx context.Context, names []string) ([]Package, error) {
	// dpkg-query and rpm expand the \t and \n of their formats
	// themselves. dpkg-query exits 1 when a name is unknown to dpkg (never
	// installed) and still reports the others.
	out, errLine, code, err := output(ctx, "dpkg-query", append([]string{"-W", `-f=${Package}\t${db:Status-Abbrev}\t${Version}\n`}, names...)...)
	if err != nil {
		return nil, err
	}
	if code > 1 {
		return nil, fmt.Errorf("dpkg-query -W %s: exit status %d: %s", strings.Join(names, " "), code, errLine)
	}
	installed := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		// "ii " is installed; "rc " (removed, configuration kept) and
		// the rest are not.
		if len(f) == 3 && strings.HasPrefix(f[1], "ii") {
			installed[f[0]] = strings.TrimSpace(f[2])
		}
	}
	out, errLine, code, err = output(ctx, "apt-cache", append([]string{"policy"}, names...)...)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("apt-cache policy %s: exit status %d: %s", strings.Join(names, " "), code, errLine)
	}
	candidates := parsePolicy(out)
	var ps []Package
	for _, n := range names {
		p := Package{Name: n, Installed: installed[n], Candidate: candidates[n]}
		p.Newer = p.Installed != "" && p.Candidate != "" && CompareDebian(p.Candidate, p.Installed) > 0
		ps = append(ps, p)
	}
	return ps, nil
}

// parsePolicy reads the candidates from `apt-cache policy` output:
//
//	haproxy:
//	  Installed: 2.6.12-1+deb12u1
//	  Candidate: 2.6.12-1+deb12u2
//	  Version table: ...
func parsePolicy(out []byte) map[string]string {
	res := map[string]string{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line != "" && line[0] != ' ' && strings.HasSuffix(line, ":") {
			cur = strings.TrimSuffix(line, ":")
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok && cur != "" {
			if v = strings.TrimSpace(v); v != "(none)" {
				res[cur] = v
			}
		}
	}
	return res
}

func (apt) UpgradeArgs(names []string) []string {
	return append([]string{"apt-get", "install", "-y", "--only-upgrade"}, names...)
}

func (a apt) Upgrade(ctx context.Context, names []string, stdout, stderr io.Writer) error {
	return runUpgrade(ctx, a.UpgradeArgs(names), stdout, stderr)
}

// dnf is RHEL and its relatives: rpm -q for what is installed, dnf
// check-update for newer versions.
type dnf struct{}

func (dnf) Name() string { return "dnf" }

func (dnf) Query(ctx context.Context, names []string) ([]Package, error) {
	// rpm -q exits with the number of names not installed, and says
	// "package X is not installed" on stdout for each.
	out, errLine, code, err := output(ctx, "rpm", append([]string{"-q", "--qf", `%{NAME}\t%{VERSION}-%{RELEASE}\n`}, names...)...)
	if err != nil {
		return nil, err
	}
	if code > len(names) {
		return nil, fmt.Errorf("rpm -q %s: exit status %d: %s", strings.Join(names, " "), code, errLine)
	}
	installed := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if n, v, ok := strings.Cut(line, "\t"); ok {
			installed[n] = strings.TrimSpace(v)
		}
	}
	// check-update exits 100 when it lists updates, 0 when there are
	// none, anything else on an error.
	out, errLine, code, err = output(ctx, "dnf", append([]string{"-q", "check-update"}, names...)...)
	if err != nil {
		return nil, err
	}
	if code != 0 && code != 100 {
		return nil, fmt.Errorf("dnf -q check-update %s: exit status %d: %s", strings.Join(names, " "), code, errLine)
	}
	updates := parseCheckUpdate(out, names)
	var ps []Package
	for _, n := range names {
		p := Package{Name: n, Installed: installed[n], Candidate: installed[n]}
		if u, ok := updates[n]; ok && p.Installed != "" {
			p.Candidate, p.Newer = u, true
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// parseCheckUpdate reads "name.arch  version  repository" lines, the
// format of both `dnf check-update` and `dnf list --upgrades`; headings
// and the "Obsoleting Packages" section do not match a wanted name.
func parseCheckUpdate(out []byte, names []string) map[string]string {
	res := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		i := strings.LastIndex(f[0], ".")
		if i <= 0 {
			continue
		}
		if n := f[0][:i]; slices.Contains(names, n) {
			if _, seen := res[n]; !seen {
				res[n] = f[1]
			}
		}
	}
	return res
}

func (dnf) UpgradeArgs(names []string) []string {
	return append([]string{"dnf", "-y", "upgrade"}, names...)
}

func (d dnf) Upgrade(ctx context.Context, names []string, stdout, stderr io.Writer) error {
	return runUpgrade(ctx, d.UpgradeArgs(names), stdout, stderr)
}

// CompareDebian orders two Debian package versions
// ([epoch:]upstream[-revision]) as dpkg does, returning -1, 0 or +1.
func CompareDebian(a, b string) int {
	ea, ua, ra := splitDebian(a)
	eb, ub, rb := splitDebian(b)
	if c := compareDigits(ea, eb); c != 0 {
		return c
	}
	if c := compareDebianPart(ua, ub); c != 0 {
		return c
	}
	return compareDebianPart(ra, rb)
}

func splitDebian(v string) (epoch, upstream, revision string) {
	epoch = "0"
	if e, rest, ok := strings.Cut(v, ":"); ok {
		epoch, v = e, rest
	}
	if i := strings.LastIndex(v, "-"); i >= 0 {
		return epoch, v[:i], v[i+1:]
	}
	return epoch, v, ""
}

// compareDebianPart alternates between non-digit runs, compared
// character by character with '~' before everything (even the end) and
// letters before other characters, and digit runs compared as numbers.
func compareDebianPart(a, b string) int {
	for a != "" || b != "" {
		var na, nb string
		na, a = splitRun(a, false)
		nb, b = splitRun(b, false)
		if c := compareNonDigits(na, nb); c != 0 {
			return c
		}
		na, a = splitRun(a, true)
		nb, b = splitRun(b, true)
		if c := compareDigits(na, nb); c != 0 {
			return c
		}
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func splitRun(s string, digits bool) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return s[:i], s[i:]
}

func debianOrder(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	c := s[i]
	switch {
	case c == '~':
		return -1
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return int(c)
	}
	return int(c) + 256
}

func compareNonDigits(a, b string) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		if c := cmpInt(debianOrder(a, i), debianOrder(b, i)); c != 0 {
			return c
		}
	}
	return 0
}

func compareDigits(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if c := cmpInt(len(a), len(b)); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}
