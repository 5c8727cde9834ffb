package upgrade

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// HAProxyInfo is the HAProxy a node runs.
type HAProxyInfo struct {
	// Binary is the path the version came from.
	Binary  string `json:"binary"`
	Version string `json:"version"`
	// TLSLibrary is the library HAProxy runs on ("OpenSSL 3.0.17 1 Jul
	// 2025", "AWS-LC 1.49.0"); empty when `haproxy -vv` names none.
	TLSLibrary string `json:"tls_library,omitempty"`
}

// KeepalivedInfo is the keepalived a node runs (VRRP mode).
type KeepalivedInfo struct {
	Binary  string `json:"binary"`
	Version string `json:"version"`
}

// detectTimeout bounds each probe: a version query answers at once, and
// `ober version` must not hang on a broken binary.
const detectTimeout = 5 * time.Second

// DetectHAProxy runs `bin -vv`. A binary that is not there returns an
// error wrapping exec.ErrNotFound.
func DetectHAProxy(ctx context.Context, bin string) (*HAProxyInfo, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, detectTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-vv").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s -vv: %w", path, err)
	}
	v, err := haproxy.ParseVersion(string(out))
	if err != nil {
		return nil, fmt.Errorf("%s -vv: %w", path, err)
	}
	// The version proper is the second word of the version line, with
	// the distribution's suffix ("2.6.12-1+deb12u2"): it names the
	// package an operator would look for.
	ver := v.String()
	if f := strings.Fields(v.Raw); len(f) >= 3 {
		ver = f[2]
	}
	return &HAProxyInfo{Binary: path, Version: ver, TLSLibrary: haproxy.TLSLibrary(string(out))}, nil
}

// DetectKeepalived runs `bin --version`, which prints to stderr.
func DetectKeepalived(ctx context.Context, bin string) (*KeepalivedInfo, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, detectTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	v, ok := vrrp.ParseKeepalivedVersion(string(out))
	if !ok {
		if err != nil {
			return nil, fmt.Errorf("%s --version: %w", path, err)
		}
		return nil, fmt.Errorf("%s --version names no keepalived version", path)
	}
	return &KeepalivedInfo{Binary: path, Version: v.Text}, nil
}
