package config

import (
	"path/filepath"
	"time"
)

// TLSSettings are the node-wide settings of the services that terminate
// TLS.
type TLSSettings struct {
	SessionTickets SessionTickets `yaml:"session_tickets"`
}

// SessionTickets lets a client resume its TLS session on any instance of
// the node, and on any node given the same KeyFile: every instance
// encrypts its tickets with keys derived from one seed, a new key every
// Rotate.
type SessionTickets struct {
	// Enabled turns tickets on; default true. Off, each instance keeps
	// its own session cache, which a reconnecting client finds again
	// only when the flow hash sends it to the same instance.
	Enabled *bool `yaml:"enabled"`
	// KeyFile holds the seed the keys are derived from, the same file
	// on every node of a site (ReadSharedKey's rules: at least 32
	// bytes, readable by its owner only). Empty, the daemon makes a
	// seed of its own in node.runtime_dir, which only this node's
	// instances share and which lasts until a reboot.
	KeyFile string `yaml:"key_file"`
	// Rotate is how long one key encrypts tickets; default 12h. A
	// ticket resumes for one to two periods after it was issued (and
	// never longer than HAProxy's session lifetime, 5 minutes), and
	// nodes whose clocks differ by up to one period accept each other's.
	Rotate Duration `yaml:"rotate"`
}

// Session ticket defaults and bounds.
const (
	DefaultTicketRotate = 12 * time.Hour
	MinTicketRotate     = time.Minute
	MaxTicketRotate     = 7 * 24 * time.Hour
	// TicketSeedName is the seed the daemon makes in node.runtime_dir
	// when tls.session_tickets.key_file is empty.
	TicketSeedName = "ticket-seed"
)

// On reports whether session tickets are on (the default).
func (t SessionTickets) On() bool { return t.Enabled == nil || *t.Enabled }

// SeedFile is the seed's file: KeyFile, else the daemon's own in
// runtimeDir.
func (t SessionTickets) SeedFile(runtimeDir string) string {
	if t.KeyFile != "" {
		return t.KeyFile
	}
	return filepath.Join(runtimeDir, TicketSeedName)
}

func (t *SessionTickets) applyDefaults() {
	if t.Enabled == nil {
		on := true
		t.Enabled = &on
	}
	setDuration(&t.Rotate, DefaultTicketRotate)
}

func (c *Config) validateSessionTickets(p *problems) {
	const prefix = "tls.session_tickets"
	t := c.TLS.SessionTickets
	// Zero is "unset": the default.
	if r := t.Rotate.Duration; r != 0 && (r < MinTicketRotate || r > MaxTicketRotate) {
		p.add(prefix+".rotate", fmtDuration(r), "must be %s to %s", fmtDuration(MinTicketRotate), fmtDuration(MaxTicketRotate))
	}
	if k := t.KeyFile; k != "" {
		if _, err := ReadSharedKey(k); err != nil {
			p.add(prefix+".key_file", quote(k), "%v", err)
		}
	}
}
