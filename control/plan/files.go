package plan

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/lib/haproxy"
)

// WriteFiles puts the plan's files in place, readable by root only:
// HAProxy reads them before it drops its privileges. A file already there
// is left as it is: its name is its content's, unless `ober sync` has
// since changed a whitelist in place, in which case the running lists
// are the newer ones and the next instances must load them too.
func (p *NodePlan) WriteFiles() error {
	for _, f := range p.Files {
		if _, err := os.Stat(f.Path); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o700); err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
		if err := atomicfile.Write(f.Path, f.Data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// PruneACLs removes the whitelist files of plans before p once p's
// instances serve: the earlier instances are retired and never restarted,
// and each holds its lists in memory.
func (p *NodePlan) PruneACLs() {
	for list, keep := range p.ACLs {
		files, _ := haproxy.ACLFiles(p.Config.Node.RuntimeDir, list)
		for _, f := range files {
			if f != keep {
				os.Remove(f)
			}
		}
	}
}

// RemoveACLs removes p's whitelist files after p was refused, but for the
// ones the running plan loads too.
func (p *NodePlan) RemoveACLs(running *NodePlan) {
	for list, f := range p.ACLs {
		if running == nil || running.ACLs[list] != f {
			os.Remove(f)
		}
	}
}

// CheckHAProxy renders the first slot's configuration into a scratch
// directory under node.runtime_dir and has HAProxy check it, so that an
// HAProxy-level mistake fails before anything starts. The plan's files
// must be in place (WriteFiles).
func (p *NodePlan) CheckHAProxy(ctx context.Context) error {
	dir, err := os.MkdirTemp(p.Config.Node.RuntimeDir, "check-")
	if err != nil {
		return fmt.Errorf("haproxy check: %w", err)
	}
	defer os.RemoveAll(dir)
	fds := p.ExampleFDs()
	var list []int
	for _, l := range p.Listeners {
		list = append(list, fds[l.ID])
	}
	in := p.Instance(p.Slots[0], fds, filepath.Join(dir, "check.sock"))
	if in.TicketKeys != "" {
		// The keys file is runtime/tickets' to write, and may not be
		// there yet: HAProxy checks the syntax with keys of its own.
		in.TicketKeys = filepath.Join(dir, "ticket-keys")
		if err := writeCheckKeys(in.TicketKeys); err != nil {
			return fmt.Errorf("haproxy check: %w", err)
		}
	}
	text, err := haproxy.Render(in)
	if err != nil {
		return fmt.Errorf("render haproxy config: %w", err)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		return fmt.Errorf("haproxy check: %w", err)
	}
	if err := haproxy.Check(ctx, p.Config.HAProxy.Binary, path, list); err != nil {
		return fmt.Errorf("haproxy refuses the rendered config: %w", err)
	}
	return nil
}

// writeCheckKeys writes a keys file of random keys for the check.
func writeCheckKeys(path string) error {
	var b []byte
	for range 3 {
		k := make([]byte, 80)
		if _, err := rand.Read(k); err != nil {
			return err
		}
		b = append(b, base64.StdEncoding.EncodeToString(k)...)
		b = append(b, '\n')
	}
	return os.WriteFile(path, b, 0o600)
}
