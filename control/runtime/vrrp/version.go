package vrrp

import (
	"fmt"
	"regexp"
	"strconv"
)

// KeepalivedVersion is a keepalived release as `keepalived --version`
// names it.
type KeepalivedVersion struct {
	Major, Minor int
	// Text is the version as printed, without the "v": "2.2.7", or "2.2"
	// for a build that leaves the patch level out.
	Text string
}

// The oldest keepalived ober drives: VRRPv3 with unicast peers and track
// files.
const minKeepalivedMajor, minKeepalivedMinor = 2, 2

var keepalivedRE = regexp.MustCompile(`Keepalived v((\d+)\.(\d+)(?:\.\d+)?)`)

// ParseKeepalivedVersion finds the version in the output of `keepalived
// --version` (which keepalived prints to stderr); ok is false when there
// is none.
func ParseKeepalivedVersion(out string) (v KeepalivedVersion, ok bool) {
	m := keepalivedRE.FindStringSubmatch(out)
	if m == nil {
		return KeepalivedVersion{}, false
	}
	major, err1 := strconv.Atoi(m[2])
	minor, err2 := strconv.Atoi(m[3])
	if err1 != nil || err2 != nil {
		return KeepalivedVersion{}, false
	}
	return KeepalivedVersion{Major: major, Minor: minor, Text: m[1]}, true
}

// Supported reports whether ober can drive this keepalived; the error
// says why not.
func (v KeepalivedVersion) Supported() error {
	if v.Major < minKeepalivedMajor || v.Major == minKeepalivedMajor && v.Minor < minKeepalivedMinor {
		return fmt.Errorf("keepalived %d.%d is too old: ober needs %d.%d or newer (VRRPv3 with unicast peers, track files)",
			v.Major, v.Minor, minKeepalivedMajor, minKeepalivedMinor)
	}
	return nil
}
