package plan

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/ipam"
	"github.com/ober-ingress/ober/control/runtime/vrrp"
)

// Rendered is one file `ober run` writes for a configuration.
type Rendered struct {
	// Path is where the daemon writes it.
	Path string
	// Current is the file on disk it takes over from: the running
	// generation's configuration of the same instance, or Path itself;
	// empty when there is none.
	Current string
	Data    []byte
}

// Preview is what `ober run` would write into node.runtime_dir for a
// configuration.
type Preview struct {
	// HAProxy holds each instance's configuration, instance i at i.
	HAProxy []Rendered
	// Keepalived is keepalived.conf in ha.mode vrrp, else nil.
	Keepalived *Rendered
	// Bundles are the certificate bundles the daemon would write beside
	// the configurations. They hold private keys, so they are named only.
	Bundles []string
	// NewSelfSigned says the daemon would generate a self-signed
	// certificate in node.state_dir first (none yet, or it no longer
	// covers the node); its bundle's name then changes with the random
	// key, so the name in HAProxy's configuration is only an example.
	NewSelfSigned bool
}

// cfgName matches the configuration files the supervisor writes:
// haproxy-<instance>.g<generation>.cfg (supervisor.startProc).
var cfgName = regexp.MustCompile(`^haproxy-(\d+)\.g(\d+)\.cfg$`)

// RenderPreview renders the files the daemon would write for cfg, as the
// next generation after what node.runtime_dir holds now. It writes
// nothing the node uses: a self-signed certificate the daemon would make
// is made in a scratch directory that is gone when it returns. Names are
// resolved with r (nil: the system's).
//
// The instances' maxconn is fitted to this process's descriptor limit,
// as the daemon fits it to its own.
func RenderPreview(ctx context.Context, cfg *config.Config, r addrlist.Resolver) (*Preview, error) {
	v, err := haproxy.DetectVersion(ctx, cfg.HAProxy.Binary)
	if err != nil {
		return nil, fmt.Errorf("haproxy.binary: %w", err)
	}
	res, err := cfg.Resolve(ctx, r)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "ober-preview-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// The self-signed certificate in state_dir is reused when it still
	// covers the node, exactly as the daemon would; a copy keeps the
	// original out of reach of a renewal.
	scratch := *cfg
	scratch.Node.StateDir = filepath.Join(tmp, "state")
	ssDir := filepath.Join(cfg.Node.StateDir, "tls")
	copied := true
	for _, name := range []string{"selfsigned.crt", "selfsigned.key"} {
		data, err := os.ReadFile(filepath.Join(ssDir, name))
		if err != nil {
			copied = false
			break
		}
		if err := os.MkdirAll(filepath.Join(scratch.Node.StateDir, "tls"), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(scratch.Node.StateDir, "tls", name), data, 0o600); err != nil {
			return nil, err
		}
	}
	f, err := ReadFacts(&scratch, v)
	if err != nil {
		return nil, err
	}
	if len(cfg.VIPPools) > 0 {
		// The addresses the services hold, from the real state
		// directory: the preview shows what applying would keep.
		if f.Allocations, err = ipam.Load(IPAMPath(cfg)); err != nil {
			return nil, fmt.Errorf("vip_pools: %w", err)
		}
	}
	p, err := Build(cfg, res, f, nil)
	if err != nil {
		return nil, err
	}
	pv := &Preview{}
	for _, fe := range p.Frontends {
		if fe.PEM != "" {
			pv.Bundles = append(pv.Bundles, fe.PEM)
		}
		if fe.Service.TLS != nil && fe.Service.TLS.Cert == "" && fe.Service.TLS.SelfSigned {
			pv.NewSelfSigned = !copied || !sameFile(filepath.Join(ssDir, "selfsigned.crt"), filepath.Join(scratch.Node.StateDir, "tls", "selfsigned.crt"))
		}
	}

	run := cfg.Node.RuntimeDir
	current, gen := runningConfigs(run)
	fds := p.ExampleFDs()
	for _, sl := range p.Slots {
		base := filepath.Join(run, fmt.Sprintf("haproxy-%d.g%d", sl.Index, gen+1))
		text, err := p.Render(sl, fds, base+".sock")
		if err != nil {
			return nil, fmt.Errorf("render haproxy config: %w", err)
		}
		pv.HAProxy = append(pv.HAProxy, Rendered{Path: base + ".cfg", Current: current[sl.Index], Data: text})
	}

	if p.VRRP != nil {
		kc := *p.VRRP
		dir := filepath.Join(run, "keepalived")
		// The paths keepalived.Start gives them.
		kc.TrackFile = filepath.Join(dir, "health")
		kc.NotifyFIFO = filepath.Join(dir, "notify.fifo")
		text, err := vrrp.Render(kc)
		if err != nil {
			return nil, fmt.Errorf("ha.vrrp: %w", err)
		}
		path := filepath.Join(dir, "keepalived.conf")
		k := &Rendered{Path: path, Data: text}
		if _, err := os.Stat(path); err == nil {
			k.Current = path
		}
		pv.Keepalived = k
	}
	return pv, nil
}

// runningConfigs finds the newest configuration of each instance in dir
// and the highest generation among them (0 when there is none).
func runningConfigs(dir string) (map[int]string, uint64) {
	out := map[int]string{}
	gens := map[int]uint64{}
	var top uint64
	entries, err := os.ReadDir(dir)
	if err != nil {
		return out, 0
	}
	for _, e := range entries {
		m := cfgName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		idx, err1 := strconv.Atoi(m[1])
		gen, err2 := strconv.ParseUint(m[2], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if g, ok := gens[idx]; !ok || gen > g {
			gens[idx] = gen
			out[idx] = filepath.Join(dir, e.Name())
		}
		top = max(top, gen)
	}
	return out, top
}

func sameFile(a, b string) bool {
	x, err := os.ReadFile(a)
	if err != nil {
		return false
	}
	y, err := os.ReadFile(b)
	return err == nil && bytes.Equal(x, y)
}
