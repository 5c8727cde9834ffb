package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// MinMajor and MinMinor are the oldest HAProxy release the renderer
// targets (Debian 12's 2.6). Every directive Render writes without
// consulting Features is valid there.
const (
	MinMajor = 2
	MinMinor = 6
)

// Version is an HAProxy release as reported by `haproxy -v`.
type Version struct {
	Major, Minor, Patch int
	// Raw is the version line of `haproxy -v`, such as
	// "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/".
	Raw string
}

// versionRE matches the version line of every release since 1.x:
// "HA-Proxy version 2.0.33 ..." up to 2.0, "HAProxy version 2.6.12-1+deb12u4 ..."
// later, and development builds ("3.2-dev5", "3.2.0-dev").
var versionRE = regexp.MustCompile(`^HA-?Proxy version (\d+)\.(\d+)(?:\.(\d+))?\S*`)

// ParseVersion reads the output of `haproxy -v` (or -vv). It looks for the
// version line anywhere in out, so that warnings printed before it do not
// matter.
func ParseVersion(out string) (Version, error) {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		m := versionRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var v Version
		var err error
		if v.Major, err = strconv.Atoi(m[1]); err != nil {
			return Version{}, fmt.Errorf("haproxy version %q: %w", line, err)
		}
		if v.Minor, err = strconv.Atoi(m[2]); err != nil {
			return Version{}, fmt.Errorf("haproxy version %q: %w", line, err)
		}
		if m[3] != "" {
			if v.Patch, err = strconv.Atoi(m[3]); err != nil {
				return Version{}, fmt.Errorf("haproxy version %q: %w", line, err)
			}
		}
		v.Raw = line
		return v, nil
	}
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if len(first) > 120 {
		first = first[:120] + "..."
	}
	return Version{}, fmt.Errorf("no HAProxy version line (\"HAProxy version X.Y.Z ...\") in %q", first)
}

// DetectVersion runs `binary -v` and parses its output.
func DetectVersion(ctx context.Context, binary string) (Version, error) {
	if binary == "" {
		return Version{}, errors.New("haproxy binary not set")
	}
	cmd := exec.CommandContext(ctx, binary, "-v")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if msg != "" {
			return Version{}, fmt.Errorf("%s -v: %w: %s", binary, err, msg)
		}
		return Version{}, fmt.Errorf("%s -v: %w", binary, err)
	}
	v, err := ParseVersion(out.String())
	if err != nil {
		return Version{}, fmt.Errorf("%s -v: %w", binary, err)
	}
	return v, nil
}

// AtLeast reports whether v is release major.minor or later.
func (v Version) AtLeast(major, minor int) bool {
	if v.Major != major {
		return v.Major > major
	}
	return v.Minor >= minor
}

// IsZero reports whether v was never set.
func (v Version) IsZero() bool { return v.Major == 0 && v.Minor == 0 && v.Patch == 0 }

// String is "major.minor.patch".
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// Supported returns an error when the renderer cannot target v.
func (v Version) Supported() error {
	if v.IsZero() {
		return errors.New("HAProxy version not set (detect it with DetectVersion)")
	}
	if !v.AtLeast(MinMajor, MinMinor) {
		return fmt.Errorf("HAProxy %s is too old: ober needs %d.%d or later", v, MinMajor, MinMinor)
	}
	return nil
}

// Features lists what the renderer uses beyond HAProxy 2.6, each decided
// by version. Each "since" below is the oldest release in which the
// directive was verified to exist; a release between 2.6 and that one gets
// the 2.6 fallback, which is always valid.
type Features struct {
	// H2FrontendWindow writes the client-side HTTP/2 receive window as
	// "tune.h2.fe.initial-window-size" (since 2.8). Before, the
	// same window is "tune.h2.initial-window-size", which also covers
	// HTTP/2 to servers; ober speaks HTTP/1.1 to servers, so both render
	// the same behaviour.
	H2FrontendWindow bool
	// ClientHandshakeTimeout writes "timeout client-hs" (verified in 3.0;
	// absent from 2.6) so that a TLS handshake is bounded by the
	// http-request timeout. Without it HAProxy bounds a stalled handshake
	// with "timeout client" only.
	ClientHandshakeTimeout bool
	// H2GlitchesThreshold writes "tune.h2.fe.glitches-threshold"
	// (verified in 3.0; absent from 2.6): a client HTTP/2 connection
	// that commits that many protocol glitches (rapid stream resets,
	// CONTINUATION floods and the like) is closed, so one abusive client
	// cannot spend an instance's only thread. 2.6 has no such bound.
	H2GlitchesThreshold bool
	// H2MaxTotalStreams writes "tune.h2.fe.max-total-streams" (verified
	// in 3.0; absent from 2.6): after that many requests a client HTTP/2
	// connection is sent a graceful GOAWAY and the client opens a new
	// one, which Maglev and ECMP may place on another instance or node.
	// 2.6 keeps such a connection on its instance for its whole life.
	H2MaxTotalStreams bool
}

// Feature describes one entry of Features for display.
type Feature struct {
	Name      string // stable identifier, e.g. "h2-frontend-window"
	Directive string // the HAProxy directive it enables
	Since     string // oldest release it is used with
	Enabled   bool
}

// FeaturesFor decides Features for v.
func FeaturesFor(v Version) Features {
	return Features{
		H2FrontendWindow:       v.AtLeast(2, 8),
		ClientHandshakeTimeout: v.AtLeast(3, 0),
		H2GlitchesThreshold:    v.AtLeast(3, 0),
		H2MaxTotalStreams:      v.AtLeast(3, 0),
	}
}

// List describes every feature, enabled or not, in a fixed order.
func (f Features) List() []Feature {
	return []Feature{
		{Name: "h2-frontend-window", Directive: "tune.h2.fe.initial-window-size", Since: "2.8", Enabled: f.H2FrontendWindow},
		{Name: "client-handshake-timeout", Directive: "timeout client-hs", Since: "3.0", Enabled: f.ClientHandshakeTimeout},
		{Name: "h2-glitches-threshold", Directive: "tune.h2.fe.glitches-threshold", Since: "3.0", Enabled: f.H2GlitchesThreshold},
		{Name: "h2-max-total-streams", Directive: "tune.h2.fe.max-total-streams", Since: "3.0", Enabled: f.H2MaxTotalStreams},
	}
}

// String is "name=on name=off ...", in List order.
func (f Features) String() string {
	var b strings.Builder
	for i, x := range f.List() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x.Name)
		if x.Enabled {
			b.WriteString("=on")
		} else {
			b.WriteString("=off")
		}
	}
	return b.String()
}
