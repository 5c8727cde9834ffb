package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cryptoFlags are the CPU flags that decide how fast TLS can go: AES-NI
// and carry-less multiply for AES-GCM, the vector widths that OpenSSL's
// and Go's GCM code paths pick from, and SHA extensions for the
// handshake's hashing. A report without them explains a low ceiling.
// A constant string rather than a slice so that nothing can change it.
const cryptoFlags = "aes avx avx2 avx512f vaes vpclmulqdq sha_ni pclmulqdq"

// toolTimeout bounds each version query: a wedged binary must not hang
// the whole bench before it has started.
const toolTimeout = 5 * time.Second

// ReadMachine describes the machine the bench runs on. It never fails:
// whatever cannot be read (a missing tool, a missing /proc file) is left
// empty, since a report with a blank field is still worth having.
func ReadMachine(ctx context.Context) Machine {
	var m Machine
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel, m.Flags = parseCPUInfo(string(b))
	}
	// The sysfs list counts online CPUs; runtime.NumCPU counts the ones
	// this process may run on, which is only a fallback since the bench
	// may be started under a narrower affinity than the machine has.
	m.Cores = runtime.NumCPU()
	if b, err := os.ReadFile("/sys/devices/system/cpu/online"); err == nil {
		if n, err := parseCPUList(string(b)); err == nil && n > 0 {
			m.Cores = n
		}
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.HAProxy = toolLine(ctx, "haproxy", "-v")
	m.OpenSSL = toolLine(ctx, "openssl", "version")
	return m
}

// toolLine is the first non-empty line a tool prints, or "" when the tool
// is missing or fails.
func toolLine(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return firstLine(string(out))
}

func firstLine(s string) string {
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			return line
		}
	}
	return ""
}

// parseCPUInfo reads the CPU model and the flags of interest from the
// text of /proc/cpuinfo. Only the first processor's entries are used: the
// kernel reports the same model and flags for every logical CPU of a
// machine the bench makes sense on. Flags come back in cryptoFlags order,
// so reports compare line by line.
func parseCPUInfo(text string) (model string, flags []string) {
	var have map[string]bool
	for line := range strings.Lines(text) {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "model name":
			if model == "" {
				model = value
			}
		case "flags", "Features": // x86, arm64
			if have == nil {
				have = make(map[string]bool)
				for _, f := range strings.Fields(value) {
					have[f] = true
				}
			}
		}
	}
	for _, f := range strings.Fields(cryptoFlags) {
		if have[f] {
			flags = append(flags, f)
		}
	}
	return model, flags
}

// parseCPUList counts the CPUs of a kernel CPU list such as "0-3,8,10-11"
// (the format of /sys/devices/system/cpu/online).
func parseCPUList(text string) (int, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return 0, fmt.Errorf("cpu list: empty")
	}
	var cpus []int
	for part := range strings.SplitSeq(text, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("cpu list %q: %w", text, err)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("cpu list %q: %w", text, err)
			}
		}
		if first < 0 || last < first {
			return 0, fmt.Errorf("cpu list %q: bad range %q", text, part)
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return len(slices.Compact(cpus)), nil
}
