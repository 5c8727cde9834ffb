package upgrade

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Version is a release version, vMAJOR.MINOR.PATCH with an optional
// pre-release (-rc.1) and build metadata (+meta), as semver 2.0 has it.
type Version struct {
	Major, Minor, Patch int
	// Pre is the pre-release without its dash ("rc.1"); empty for a
	// release.
	Pre string
	// Raw is the text as parsed.
	Raw string
}

var semverRE = regexp.MustCompile(`^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$`)

// ParseVersion reads "v1.2.3", "1.2.3", "v1.2.3-rc.1" or "v1.2.3+meta".
func ParseVersion(s string) (Version, error) {
	m := semverRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Version{}, fmt.Errorf("version %q is not vMAJOR.MINOR.PATCH", s)
	}
	v := Version{Pre: m[4], Raw: s}
	var err error
	for i, p := range []*int{&v.Major, &v.Minor, &v.Patch} {
		// The expression admits digits only; only an overflow fails.
		if *p, err = strconv.Atoi(m[i+1]); err != nil {
			return Version{}, fmt.Errorf("version %q: %w", s, err)
		}
	}
	return v, nil
}

// String is the version with a leading v, without build metadata.
func (v Version) String() string {
	s := fmt.Sprintf("v%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.Pre != "" {
		s += "-" + v.Pre
	}
	return s
}

// Compare returns -1, 0 or +1 as v is older than, the same as or newer
// than w, by semver precedence: a pre-release comes before its release,
// and build metadata does not count.
func (v Version) Compare(w Version) int {
	for _, d := range [][2]int{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Patch, w.Patch}} {
		if c := cmpInt(d[0], d[1]); c != 0 {
			return c
		}
	}
	switch {
	case v.Pre == w.Pre:
		return 0
	case v.Pre == "":
		return 1
	case w.Pre == "":
		return -1
	}
	a, b := strings.Split(v.Pre, "."), strings.Split(w.Pre, ".")
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := comparePreField(a[i], b[i]); c != 0 {
			return c
		}
	}
	return cmpInt(len(a), len(b))
}

// comparePreField orders one dot-separated pre-release field: numbers
// numerically and before words, words by ASCII.
func comparePreField(a, b string) int {
	na, ea := strconv.ParseUint(a, 10, 64)
	nb, eb := strconv.ParseUint(b, 10, 64)
	switch {
	case ea == nil && eb == nil:
		return cmpInt(int(min(na, 1<<62)), int(min(nb, 1<<62)))
	case ea == nil:
		return -1
	case eb == nil:
		return 1
	}
	return strings.Compare(a, b)
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// describeRE matches what `git describe --tags --dirty` adds after a tag
// ("-14-g1a2b3c4", "-dirty") and a bare commit ("1a2b3c4", from
// --always on a history without tags).
var describeRE = regexp.MustCompile(`(-\d+-g[0-9a-f]{4,}(-dirty)?|-dirty)$|^[0-9a-f]{7,40}$`)

// IsDevelopment reports whether version names a build that is not a
// release: "dev" (an unstamped go build), Go's "(devel)", or a
// git-describe string of a commit past a tag or a dirty tree. Such a
// build cannot be ordered against releases: v1.2.3-4-gabc is newer than
// v1.2.3, where semver would read it as a pre-release of it.
func IsDevelopment(version string) bool {
	switch version {
	case "", "dev", "(devel)":
		return true
	}
	if describeRE.MatchString(version) {
		return true
	}
	_, err := ParseVersion(version)
	return err != nil
}
