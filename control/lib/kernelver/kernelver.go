// Package kernelver says whether a Linux release is one ober runs on:
// bootstrap refuses a kernel that is too old, and doctor reports it. The
// bounds live here so that the two cannot disagree.
package kernelver

import (
	"fmt"
	"regexp"
	"strconv"
)

// Version is a kernel's major and minor number.
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less orders versions.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	return v.Minor < w.Minor
}

// Min is the oldest kernel with every BPF feature the dataplane uses
// (sk_lookup, cpumap, bpf_sk_assign, BTF, XDP links).
func Min() Version { return Version{5, 15} }

// Tested is the oldest kernel ober is tested on (Debian 12's); those
// between Min and Tested work but are untested.
func Tested() Version { return Version{6, 1} }

var releaseRE = regexp.MustCompile(`^(\d+)\.(\d+)`)

// Parse reads the version at the start of a release as uname -r prints
// it ("6.1.0-18-amd64").
func Parse(release string) (Version, error) {
	m := releaseRE.FindStringSubmatch(release)
	if m == nil {
		return Version{}, fmt.Errorf("kernel release %q not understood", release)
	}
	major, err := strconv.Atoi(m[1])
	if err != nil {
		return Version{}, fmt.Errorf("kernel release %q not understood", release)
	}
	minor, err := strconv.Atoi(m[2])
	if err != nil {
		return Version{}, fmt.Errorf("kernel release %q not understood", release)
	}
	return Version{major, minor}, nil
}

// Support is what ober makes of a kernel version.
type Support int

const (
	// TooOld lacks BPF features ober needs.
	TooOld Support = iota
	// Untested has them but is older than every kernel ober is tested on.
	Untested
	// Supported is tested.
	Supported
)

// Judge places v against the bounds.
func Judge(v Version) Support {
	switch {
	case v.Less(Min()):
		return TooOld
	case v.Less(Tested()):
		return Untested
	}
	return Supported
}
