package netsite

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ober-ingress/ober/internal/ledger"
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
	st, err := procStart(p.PID)
	return err == nil && st == p.Start && Alive(p.PID)
}

// procStart reads a process's start time, field 22 of /proc/PID/stat,
// counting fields after the command name's last ')' (the name may hold
// spaces and parentheses).
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// comm is a process's command name, for reports.
func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// isNotExist is true for a process or file that is gone.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
