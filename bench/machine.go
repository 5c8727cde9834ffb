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

	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/procstat"
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
func ReadMachine(ctx context.Context, haproxyBin string) Machine {
	var m Machine
	if ci, err := procstat.Proc.CPUInfo(); err == nil {
		m.CPUModel, m.Flags = ci.Model, cryptoOf(ci.Flags)
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
	m.HAProxy = toolLine(ctx, haproxyBin, "-v")
	m.HAProxyTLS = haproxy.TLSLibrary(toolOutput(ctx, haproxyBin, "-vv"))
	m.OpenSSL = toolLine(ctx, "openssl", "version")
	return m
}

// toolLine is the first non-empty line a tool prints, or "" when the tool
// is missing or fails.
func toolLine(ctx context.Context, name string, args ...string) string {
	return firstLine(toolOutput(ctx, name, args...))
}

// toolOutput is what a tool prints on stdout, or "" when the tool is
// missing or fails.
func toolOutput(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func firstLine(s string) string {
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			return line
		}
	}
	return ""
}

// cryptoOf keeps the flags of cryptoFlags a CPU has, in cryptoFlags'
// order.
func cryptoOf(have []string) []string {
	var out []string
	for _, f := range strings.Fields(cryptoFlags) {
		if slices.Contains(have, f) {
			out = append(out, f)
		}
	}
	return out
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
