// Package procstat is the one reader of /proc: a process's state, CPU
// time, start time, name and command line, its network namespace, the
// mounts, the CPU's model and flags, and sysctls. The daemon, the
// operator commands, the lab and the bench ask it rather than parse
// /proc files themselves.
//
// Proc is the running system's /proc; Under(root) is the one of a tree a
// test builds, or of the system bootstrap installs into.
package procstat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FS is a proc filesystem, named by where it is mounted.
type FS string

// Proc is the running system's proc filesystem.
const Proc FS = "/proc"

// Under is the proc filesystem of the tree at root: root's /proc, which
// is Proc for root "" or "/".
func Under(root string) FS { return FS(filepath.Join(root, "/proc")) }

func (p FS) path(parts ...string) string {
	return filepath.Join(append([]string{string(p)}, parts...)...)
}

// Stat is part of /proc/PID/stat.
type Stat struct {
	// Comm is field 2, the command name without its parentheses (what
	// /proc/PID/comm holds).
	Comm string
	// State is field 3: 'R', 'S', 'D', 'Z' (zombie), 'X' (dead), ...
	State byte
	// UTime and STime are fields 14 and 15, CPU time in clock ticks.
	UTime, STime uint64
	// Start is field 22, the start time in clock ticks after boot.
	Start uint64
}

// ticksPerSecond is USER_HZ, 100 on every Linux architecture ober runs on.
const ticksPerSecond = 100

// Stat reads pid's stat.
func (p FS) Stat(pid int) (Stat, error) {
	b, err := os.ReadFile(p.path(strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, err
	}
	return parseStat(pid, string(b))
}

// parseStat reads the fields of Stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its last closing
// parenthesis.
func parseStat(pid int, s string) (Stat, error) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	// f[0] is field 3.
	f := strings.Fields(s[end+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	st := Stat{Comm: s[open+1 : end], State: f[0][0]}
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

// Ended reports a process that has exited: a zombie waits only for its
// parent's wait.
func (s Stat) Ended() bool { return s.State == 'Z' || s.State == 'X' }

// CPUSeconds is the process's user and system time in seconds.
func (s Stat) CPUSeconds() float64 {
	return float64(s.UTime+s.STime) / ticksPerSecond
}

// SysSeconds is the system part of CPUSeconds: the kernel's work on
// the process's behalf.
func (s Stat) SysSeconds() float64 { return float64(s.STime) / ticksPerSecond }

// Read reads pid's stat in the running system.
func Read(pid int) (Stat, error) { return Proc.Stat(pid) }

// StartTime is pid's start time (field 22), which with the PID names one
// process: the kernel reuses PIDs, not the pair.
func StartTime(pid int) (uint64, error) {
	st, err := Read(pid)
	return st.Start, err
}

// Alive reports whether pid is a process that has not ended.
func Alive(pid int) bool {
	st, err := Read(pid)
	return err == nil && !st.Ended()
}

// Cmdline is pid's argument list; nil for a process that has none (a
// kernel thread, a zombie).
func (p FS) Cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(p.path(strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil, err
	}
	return parseCmdline(b), nil
}

func parseCmdline(b []byte) []string {
	s := strings.TrimRight(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// Status reads /proc/PID/status as field -> value (Uid, CapEff, ...).
func (p FS) Status(pid int) (map[string]string, error) {
	b, err := os.ReadFile(p.path(strconv.Itoa(pid), "status"))
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

// Status reads pid's status in the running system.
func Status(pid int) (map[string]string, error) { return Proc.Status(pid) }

// PIDs lists the processes, in no particular order.
func (p FS) PIDs() ([]int, error) {
	entries, err := os.ReadDir(string(p))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// NetNS is the inode of pid's network namespace, which names it: two
// processes share a namespace when the inodes are equal, and
// /run/netns/NAME has the inode of the namespace named NAME.
func (p FS) NetNS(pid int) (uint64, error) {
	link, err := os.Readlink(p.path(strconv.Itoa(pid), "ns", "net"))
	if err != nil {
		return 0, err
	}
	return parseNSLink(link)
}

// parseNSLink reads the target of a /proc/PID/ns link: "net:[4026532246]".
func parseNSLink(link string) (uint64, error) {
	_, rest, ok := strings.Cut(link, ":[")
	ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
	if !ok || !strings.HasSuffix(rest, "]") || err != nil {
		return 0, fmt.Errorf("namespace link %q: not TYPE:[INODE]", link)
	}
	return ino, nil
}

// Mount is one line of /proc/mounts.
type Mount struct {
	Source, Target, Type, Options string
}

// Mounts lists the mounts of the reader's mount namespace, in mount
// order.
func (p FS) Mounts() ([]Mount, error) {
	b, err := os.ReadFile(p.path("mounts"))
	if err != nil {
		return nil, err
	}
	return parseMounts(string(b)), nil
}

func parseMounts(text string) []Mount {
	var ms []Mount
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		ms = append(ms, Mount{Source: unescapeMount(f[0]), Target: unescapeMount(f[1]), Type: f[2], Options: f[3]})
	}
	return ms
}

// unescapeMount undoes the kernel's octal escapes of blanks and
// backslashes in a path of /proc/mounts ("\040" for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CPUInfo is what /proc/cpuinfo says of the first CPU (a machine's, and a
// VM's, CPUs are alike).
type CPUInfo struct {
	// Model is the model name; arm64 does not report one.
	Model string
	// Flags are the CPU's features: x86's "flags", arm64's "Features".
	Flags []string
	// X86 is set when the flags came from x86's "flags" line.
	X86 bool
}

// CPUInfo reads the first CPU's model and flags.
func (p FS) CPUInfo() (CPUInfo, error) {
	b, err := os.ReadFile(p.path("cpuinfo"))
	if err != nil {
		return CPUInfo{}, err
	}
	return parseCPUInfo(string(b)), nil
}

func parseCPUInfo(text string) CPUInfo {
	var ci CPUInfo
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" && (ci.Model != "" || ci.Flags != nil) {
			break // the end of the first CPU
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		// The first CPU's lines win, also where no blank line ends it.
		switch strings.TrimSpace(k) {
		case "model name":
			if ci.Model == "" {
				ci.Model = strings.TrimSpace(v)
			}
		case "flags":
			if ci.Flags == nil {
				ci.Flags, ci.X86 = strings.Fields(v), true
			}
		case "Features":
			if ci.Flags == nil {
				ci.Flags = strings.Fields(v)
			}
		}
	}
	return ci
}

// Sysctl reads a sysctl's value, blanks at its ends trimmed. The key is
// written as sysctl(8) takes it: "net.core.somaxconn", or with slashes,
// "net/ipv4/conf/eth0.100/forwarding", when a part holds a dot (an
// interface name). A sysctl the kernel lacks, or keeps in another
// network namespace, is an error wrapping fs.ErrNotExist.
func (p FS) Sysctl(key string) (string, error) {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	b, err := os.ReadFile(p.path("sys", key))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
