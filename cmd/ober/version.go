package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/upgrade"
)

// versionInfo is what `ober version --json` prints. Fields are added,
// never renamed.
type versionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	// Development is set for a build that is not a release (see
	// upgrade.IsDevelopment).
	Development bool `json:"development"`
	// HAProxy and Keepalived are null when the binary is not found or
	// does not say its version; the *_error field says which.
	HAProxy         *upgrade.HAProxyInfo    `json:"haproxy"`
	HAProxyError    string                  `json:"haproxy_error,omitempty"`
	Keepalived      *upgrade.KeepalivedInfo `json:"keepalived"`
	KeepalivedError string                  `json:"keepalived_error,omitempty"`
}

func newVersionCmd(a *app, version string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print ober's version, and the HAProxy and keepalived it runs",
		Long: `version prints ober's version and the Go release it was built with on its
first line ("ober v1.4.2 (go1.26.0)"), then the platform, the HAProxy it
runs (version and the TLS library it runs on, from 'haproxy -vv') and the
keepalived (VRRP mode). The binaries are haproxy.binary and
ha.vrrp.keepalived of --config when it loads, else haproxy and keepalived
in PATH; one that is missing is reported as not found, not as an error.

A version that is not vX.Y.Z (an unstamped "dev" build, or git describe's
v1.4.2-3-gabc1234 of a commit past a tag) is a development build, which
'ober upgrade' does not order against releases.

--json prints {version, go, os, arch, development, haproxy: {binary,
version, tls_library}, keepalived: {binary, version}}, haproxy and
keepalived null when not found (haproxy_error and keepalived_error say
why).`,
		Example: `  ober version
  ober version --json | jq -r .haproxy.tls_library`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := collectVersion(cmd.Context(), a, version)
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(info); err != nil {
					return fmt.Errorf("version: write JSON: %w", err)
				}
				return nil
			}
			printVersion(a.out, info)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the versions as JSON")
	return cmd
}

// collectVersion gathers the versions; a component that cannot be
// queried is reported, never an error: version must work on a node
// that is half set up.
func collectVersion(ctx context.Context, a *app, version string) versionInfo {
	info := versionInfo{
		Version: version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		Development: upgrade.IsDevelopment(version),
	}
	haproxyBin, keepalivedBin := config.DefaultHAProxyBinary, "keepalived"
	if cfg, err := config.Load(a.configPath); err == nil {
		haproxyBin = cfg.HAProxy.Binary
		if cfg.HA.VRRP != nil && cfg.HA.VRRP.Keepalived != "" {
			keepalivedBin = cfg.HA.VRRP.Keepalived
		}
	}
	var err error
	if info.HAProxy, err = upgrade.DetectHAProxy(ctx, haproxyBin); err != nil {
		info.HAProxyError = detectProblem(haproxyBin, err)
	}
	if info.Keepalived, err = upgrade.DetectKeepalived(ctx, keepalivedBin); err != nil {
		info.KeepalivedError = detectProblem(keepalivedBin, err)
	}
	return info
}

func detectProblem(bin string, err error) string {
	if errors.Is(err, exec.ErrNotFound) {
		return bin + " not found"
	}
	return err.Error()
}

func printVersion(w io.Writer, v versionInfo) {
	// The first line is what scripts and bug reports quote.
	fmt.Fprintf(w, "ober %s (%s)\n", v.Version, v.Go)
	dev := ""
	if v.Development {
		dev = " (development build)"
	}
	fmt.Fprintf(w, "platform:   %s/%s%s\n", v.OS, v.Arch, dev)
	switch {
	case v.HAProxy == nil:
		fmt.Fprintf(w, "haproxy:    %s\n", v.HAProxyError)
	case v.HAProxy.TLSLibrary == "":
		fmt.Fprintf(w, "haproxy:    %s, TLS library not reported (%s)\n", v.HAProxy.Version, v.HAProxy.Binary)
	default:
		fmt.Fprintf(w, "haproxy:    %s, %s (%s)\n", v.HAProxy.Version, v.HAProxy.TLSLibrary, v.HAProxy.Binary)
	}
	if v.Keepalived == nil {
		fmt.Fprintf(w, "keepalived: %s\n", v.KeepalivedError)
	} else {
		fmt.Fprintf(w, "keepalived: %s (%s)\n", v.Keepalived.Version, v.Keepalived.Binary)
	}
}
