// Package service starts, stops and restarts the ober daemon (`ober run`)
// the way this machine runs it: through systemd when the ober unit is
// installed, otherwise directly, as a detached process with a PID file and
// a log file. It also reads the daemon's logs back for operators, from
// journald or from that log file.
package service

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
)

// Defaults of the direct mode and of the waits.
const (
	// DefaultLogFile receives the daemon's stdout and stderr in direct
	// mode.
	DefaultLogFile = "/var/log/ober/ober.log"
	// PIDFileName is the PID file's name in node.runtime_dir.
	PIDFileName = "ober.pid"
	// DefaultStartTimeout bounds the wait for a started daemon's /health.
	DefaultStartTimeout = 60 * time.Second
	// StopMargin is added to timeouts.drain to bound a stop: withdrawing
	// routes, releasing VIPs and closing sessions come on top of the drain.
	StopMargin = 30 * time.Second
	// DefaultSystemdDir is where systemd keeps its runtime state; its
	// system/ and journal/ subdirectories say systemd and journald run.
	DefaultSystemdDir = "/run/systemd"
	// Unit is the name of ober's systemd unit.
	Unit = "ober"
)

// Mode is how the daemon is run on this machine.
type Mode string

// The modes.
const (
	ModeDirect  Mode = "direct"
	ModeSystemd Mode = "systemd"
)

// Manager starts, stops and restarts the daemon.
type Manager interface {
	Mode() Mode
	// Start starts the daemon and waits until it serves; a running one is
	// left alone and reported with Already.
	Start(ctx context.Context) (*Report, error)
	// Stop stops the daemon gracefully and waits until it is gone; when
	// none runs, Already is set.
	Stop(ctx context.Context) (*Report, error)
	// Restart replaces the daemon by a new process while its HAProxy
	// instances keep serving; when none runs, it starts one (Already set).
	Restart(ctx context.Context) (*Report, error)
	// Reload has the running daemon apply its configuration file again
	// and waits until it did (Report.Generation) or refused
	// (ErrReloadRefused, the running configuration stays).
	Reload(ctx context.Context) (*Report, error)
}

// Report is what an action did.
type Report struct {
	Mode Mode
	// PID is the daemon running after Start or Restart, or the one Stop
	// stopped (0 when none ran).
	PID int
	// OldPID is the daemon Restart replaced.
	OldPID int
	// Already: Start found the daemon running, Stop found none, Restart
	// found none and started one.
	Already bool
	// Took is how long the action waited.
	Took time.Duration
	// Instances is how many HAProxy instances the daemon ran before a
	// restart (-1: unknown, its /status did not answer), and Kept how many
	// of them were still serving when it had exited.
	Instances, Kept int
	// Notes are things the operator should know, such as a stale PID file
	// that was removed.
	Notes []string
	// Where is where the daemon logs (direct mode) or the unit's name.
	Where string
	// Generation is the configuration generation in force after Reload.
	Generation uint64
}

// Options shape both managers.
type Options struct {
	// ConfigPath is the daemon's configuration file.
	ConfigPath string
	// Executable is the ober binary the direct mode runs; the running
	// one when empty.
	Executable string
	// LogFile is the direct mode's log; DefaultLogFile when empty.
	LogFile string
	// StartTimeout bounds the wait for the daemon to serve;
	// DefaultStartTimeout when 0.
	StartTimeout time.Duration
	// StopTimeout bounds the wait for the daemon to exit; timeouts.drain
	// plus StopMargin when 0.
	StopTimeout time.Duration
	// Check, when set, vets the configuration before Restart stops the
	// running daemon, so that a broken file never takes a serving node
	// down (`ober run --check` in-process).
	Check func(ctx context.Context, configPath string) error
	// SystemdDir replaces DefaultSystemdDir (tests).
	SystemdDir string
	// Direct forces the direct mode.
	Direct bool
}

// New returns the manager for this machine: systemd when it runs and
// knows the ober unit, the direct mode otherwise or when opts.Direct.
func New(ctx context.Context, opts Options) (Manager, error) {
	if opts.ConfigPath == "" {
		opts.ConfigPath = config.DefaultPath
	}
	st := readSettings(opts.ConfigPath)
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = st.drain + StopMargin
	}
	if !opts.Direct {
		systemctl, ok, err := DetectSystemd(ctx, opts.SystemdDir)
		if err != nil {
			return nil, err
		}
		if ok {
			return newSystemd(systemctl, opts, st), nil
		}
	}
	return newDirect(opts, st)
}

// DetectSystemd reports whether systemd manages ober here: systemd runs
// (dir/system exists, dir being DefaultSystemdDir when empty), systemctl
// is on PATH and the ober unit is installed. It returns systemctl's path.
func DetectSystemd(ctx context.Context, dir string) (string, bool, error) {
	if dir == "" {
		dir = DefaultSystemdDir
	}
	if _, err := os.Stat(filepath.Join(dir, "system")); err != nil {
		return "", false, nil
	}
	systemctl, err := exec.LookPath("systemctl")
	if err != nil {
		return "", false, nil
	}
	props, err := show(ctx, systemctl, "LoadState")
	if err != nil {
		return "", false, err
	}
	// "not-found" is the usual answer without the unit; "masked" and
	// "error" are systemd's to report, so they stay with systemd.
	return systemctl, props["LoadState"] != "not-found" && props["LoadState"] != "", nil
}

// DetectJournal returns journalctl's path when journald runs here
// (dir/journal exists, dir being DefaultSystemdDir when empty) and
// journalctl is on PATH.
func DetectJournal(dir string) (string, bool) {
	if dir == "" {
		dir = DefaultSystemdDir
	}
	if _, err := os.Stat(filepath.Join(dir, "journal")); err != nil {
		return "", false
	}
	p, err := exec.LookPath("journalctl")
	return p, err == nil
}

// settings are the parts of the configuration the service commands need.
type settings struct {
	runtimeDir, apiListen string
	drain                 time.Duration
	// loadErr is why the file does not load; the values above then come
	// from a lenient read, so that a node whose configuration was broken
	// after it started can still be stopped.
	loadErr error
}

// readSettings loads the configuration; when it does not load, it reads
// the few keys it needs leniently and falls back to the defaults.
func readSettings(path string) settings {
	st := settings{runtimeDir: config.DefaultRuntimeDir, apiListen: config.DefaultAPIListen, drain: config.DefaultDrain}
	cfg, err := config.Load(path)
	if err == nil {
		st.runtimeDir, st.apiListen, st.drain = cfg.Node.RuntimeDir, cfg.API.Listen, cfg.Timeouts.Drain.Duration
		return st
	}
	st.loadErr = err
	var loose struct {
		Node struct {
			RuntimeDir string `yaml:"runtime_dir"`
		} `yaml:"node"`
		API struct {
			Listen string `yaml:"listen"`
		} `yaml:"api"`
		Timeouts struct {
			Drain string `yaml:"drain"`
		} `yaml:"timeouts"`
	}
	b, rerr := os.ReadFile(path)
	if rerr != nil || yaml.Unmarshal(b, &loose) != nil {
		return st
	}
	if loose.Node.RuntimeDir != "" {
		st.runtimeDir = loose.Node.RuntimeDir
	}
	if loose.API.Listen != "" {
		st.apiListen = loose.API.Listen
	}
	if d, err := time.ParseDuration(loose.Timeouts.Drain); err == nil && d > 0 {
		st.drain = d
	}
	return st
}

// oneLine keeps an error to one line: a configuration with several
// problems reports them one per line (config.ErrorLines), and an
// operator's terminal gets the first and a count of the rest.
func oneLine(err error) string {
	lines := config.ErrorLines(err)
	switch len(lines) {
	case 0:
		return ""
	case 1:
		return lines[0]
	case 2:
		return lines[0] + " (and 1 more problem)"
	default:
		return fmt.Sprintf("%s (and %d more problems)", lines[0], len(lines)-1)
	}
}
