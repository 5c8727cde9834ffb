package plan

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/haproxy"
)

// CheckResult is what `ober run --check` reports.
type CheckResult struct {
	Plan *NodePlan
	// Rendered is instance 0's configuration.
	Rendered string
}

// Check loads the configuration at path, plans it and has HAProxy check
// the result, without starting or changing anything: certificate
// bundles, a self-signed certificate and the check's scratch files go to
// a private directory that is gone when it returns. Names are resolved
// with r (nil: the system's).
func Check(ctx context.Context, path string, r addrlist.Resolver) (*CheckResult, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	v, err := haproxy.DetectVersion(ctx, cfg.HAProxy.Binary)
	if err != nil {
		return nil, fmt.Errorf("haproxy.binary: %w", err)
	}
	tmp, err := os.MkdirTemp("", "ober-check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cfg.Node.RuntimeDir = filepath.Join(tmp, "run")
	cfg.Node.StateDir = filepath.Join(tmp, "state")
	if err := os.MkdirAll(cfg.Node.RuntimeDir, 0o700); err != nil {
		return nil, err
	}
	p, err := Make(ctx, cfg, r, v, nil)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := p.WriteFiles(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := p.CheckHAProxy(ctx); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	text, err := p.Render(p.Slots[0], p.ExampleFDs(), filepath.Join(cfg.Node.RuntimeDir, "haproxy-0.sock"))
	if err != nil {
		return nil, err
	}
	return &CheckResult{Plan: p, Rendered: string(text)}, nil
}
