package netsite

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/lab/ledger"
)

// Record is what a site's ledger holds, read without opening the ledger
// for writing (ledger.Open would start one where there is none).
type Record struct {
	Prefix     string        `json:"prefix"`
	Namespaces []string      `json:"namespaces"`
	Procs      []ledger.Proc `json:"procs"`
	Mounts     []string      `json:"mounts"`
	Dirs       []string      `json:"dirs"`
}

// ReadRecord reads the ledger of the site whose files live in dir. A
// missing ledger is os.ErrNotExist.
func ReadRecord(dir string) (*Record, error) {
	path := filepath.Join(filepath.Clean(dir), LedgerFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	return &r, nil
}

// Running reports whether the recorded process still runs: its PID names
// a live process that started when the recorded one did (so a PID the
// kernel has since given to another process does not count).
func Running(p ledger.Proc) bool {
	st, err := procstat.StartTime(p.PID)
	return err == nil && st == p.Start && procstat.Alive(p.PID)
}

// comm is a process's command name, for reports.
func comm(pid int) string {
	st, err := procstat.Read(pid)
	if err != nil {
		return "?"
	}
	return st.Comm
}

// isNotExist is true for a process or file that is gone.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
