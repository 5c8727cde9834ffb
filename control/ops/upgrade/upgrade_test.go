package upgrade

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Releases are ordered as semver says, or ober upgrade would offer a
// downgrade as an update (v1.10.0 after v1.9.0, rc before release).
func TestVersionCompare(t *testing.T) {
	ordered := []string{
		"v0.0.0-alpha", "v0.0.0-test", "v0.9.9", "v1.0.0-alpha", "v1.0.0-alpha.1", "v1.0.0-alpha.beta",
		"v1.0.0-beta", "v1.0.0-beta.2", "v1.0.0-beta.11", "v1.0.0-rc.1", "v1.0.0", "v1.0.1", "v1.9.0", "v1.10.0", "v2.0.0",
	}
	for i, a := range ordered {
		va, err := ParseVersion(a)
		require.NoError(t, err, a)
		for j, b := range ordered {
			vb, err := ParseVersion(b)
			require.NoError(t, err, b)
			require.Equal(t, cmpInt(i, j), va.Compare(vb), "%s against %s", a, b)
		}
	}
	v, err := ParseVersion("1.2.3+build.7")
	require.NoError(t, err)
	w, _ := ParseVersion("v1.2.3")
	require.Equal(t, 0, v.Compare(w), "build metadata does not order")
	require.Equal(t, "v1.2.3", v.String())
	for _, bad := range []string{"", "v1.2", "1.2.3.4", "v01.2.3", "latest", "v1.2.3-"} {
		_, err := ParseVersion(bad)
		require.Error(t, err, bad)
	}
}

// A git-describe build sits between two releases; reading it as a
// pre-release would call the release it was built past an update.
func TestIsDevelopment(t *testing.T) {
	for v, dev := range map[string]bool{
		"dev": true, "(devel)": true, "": true,
		"v1.2.3-4-g1a2b3c4": true, "v1.2.3-4-g1a2b3c4-dirty": true, "v1.2.3-dirty": true, "1a2b3c4": true,
		"v1.2.3": false, "v1.2.3-rc.1": false, "v0.0.0-test": false, "1.2.3": false,
	} {
		require.Equal(t, dev, IsDevelopment(v), v)
	}
}

// dpkg's order decides whether apt has an upgrade: Debian security
// updates (+deb12u2), epochs, tildes and binNMUs all occur in practice.
func TestCompareDebian(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"2.6.12-1+deb12u1", "2.6.12-1+deb12u2", -1},
		{"2.6.12-1+deb12u10", "2.6.12-1+deb12u9", 1},
		{"1:2.2.7-1+b2", "1:2.2.7-1+b2", 0},
		{"1:2.2.7-1", "2.3.0-1", 1},
		{"3.0~rc1-1", "3.0-1", -1},
		{"3.0-1", "3.0-1~bpo12+1", 1},
		{"1.0", "1.0+b1", -1},
		{"1.0a", "1.0", 1},
		{"1.0a", "1.0+", -1},
		{"2.10", "2.9", 1},
		{"007", "7", 0},
	} {
		require.Equal(t, c.want, CompareDebian(c.a, c.b), "%s against %s", c.a, c.b)
		require.Equal(t, -c.want, CompareDebian(c.b, c.a), "%s against %s", c.b, c.a)
	}
}

func TestParseSums(t *testing.T) {
	a, b := strings.Repeat("ab", 32), strings.Repeat("0f", 32)
	sums, err := ParseSums(strings.NewReader(a + "  ober-linux-amd64\n" + b + " *./dist/ober-linux-arm64\n\n"))
	require.NoError(t, err)
	require.Len(t, sums, 2)
	require.Equal(t, byte(0xab), sums["ober-linux-amd64"][0])
	require.Equal(t, byte(0x0f), sums["ober-linux-arm64"][31])
	for _, bad := range []string{"", "abc  ober-linux-amd64\n", a + "\n", "<html>not found</html>\n"} {
		_, err := ParseSums(strings.NewReader(bad))
		require.Error(t, err, bad)
	}
}

func TestParsePolicyAndCheckUpdate(t *testing.T) {
	policy := `haproxy:
  Installed: 2.6.12-1+deb12u1
  Candidate: 2.6.12-1+deb12u2
  Version table:
     2.6.12-1+deb12u2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
keepalived:
  Installed: (none)
  Candidate: (none)
  Version table:
`
	require.Equal(t, map[string]string{"haproxy": "2.6.12-1+deb12u2"}, parsePolicy([]byte(policy)))
	// dnf check-update, and dnf5's list --upgrades with its heading.
	out := "Available upgrades\nhaproxy.x86_64   3.0.7-1.el10   appstream\nhaproxy-debug.x86_64 3.0.7-1.el10 appstream-debug\n" +
		"Obsoleting Packages\nkeepalived-old.x86_64 1.0-1 baseos\n"
	require.Equal(t, map[string]string{"haproxy": "3.0.7-1.el10"}, parseCheckUpdate([]byte(out), PackageNames()))
}

func TestNewManager(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"ID=ubuntu\nID_LIKE=debian\n":                "apt",
		"ID=debian\n":                                "apt",
		`ID="rhel"` + "\nID_LIKE=\"fedora\"\n":       "dnf",
		"ID=rocky\nID_LIKE=\"rhel centos fedora\"\n": "dnf",
		"ID=almalinux\n":                             "dnf",
		"ID=myos\nID_LIKE=\"rhel fedora\"\nNAME=x\n": "dnf",
	} {
		p := dir + "/os-release"
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		m, err := NewManager("auto", p)
		require.NoError(t, err)
		require.NotNil(t, m, content)
		require.Equal(t, want, m.Name(), content)
	}
	_, err := NewManager("yum", "")
	require.ErrorContains(t, err, `package manager "yum": want auto, apt, dnf or none`)
	m, err := NewManager("none", "")
	require.NoError(t, err)
	require.Nil(t, m)
}
