// Package procstat reads the few fields of /proc/PID/stat that ober's
// site builders and bench need: a process's state, its CPU time and its
// start time (which, with the PID, names one process).
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is part of /proc/PID/stat.
type Stat struct {
	// State is field 3: 'R', 'S', 'D', 'Z' (zombie), ...
	State byte
	// UTime and STime are fields 14 and 15, CPU time in clock ticks.
	UTime, STime uint64
	// Start is field 22, the start time in clock ticks after boot.
	Start uint64
}

// TicksPerSecond is USER_HZ, 100 on every Linux architecture ober runs on.
const TicksPerSecond = 100

// Read reads pid's stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last closing parenthesis.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	return parse(pid, string(b))
}

func parse(pid int, s string) (Stat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	// f[0] is field 3.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var st Stat
	st.State = f[0][0]
	for _, v := range []struct {
		dst *uint64
		idx int
	}{{&st.UTime, 11}, {&st.STime, 12}, {&st.Start, 19}} {
		n, err := strconv.ParseUint(f[v.idx], 10, 64)
		if err != nil {
			return Stat{}, fmt.Errorf("/proc/%d/stat field %d: %w", pid, v.idx+3, err)
		}
		*v.dst = n
	}
	return st, nil
}

// StartTime is pid's start time (field 22).
func StartTime(pid int) (uint64, error) {
	st, err := Read(pid)
	return st.Start, err
}

// Alive reports whether pid is a process that has not ended: a zombie
// has, only its parent's wait is missing.
func Alive(pid int) bool {
	st, err := Read(pid)
	return err == nil && st.State != 'Z'
}

// CPUSeconds is pid's user and system time in seconds.
func (s Stat) CPUSeconds() float64 {
	return float64(s.UTime+s.STime) / TicksPerSecond
}

// Status reads /proc/PID/status as field -> value (Uid, CapEff, ...).
func Status(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, nil
}
