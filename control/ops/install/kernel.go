package install

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/control/lib/kernelver"
)

// Kernel is what CheckKernel found.
type Kernel struct {
	Release string
	// Old is set when the kernel works but is older than the oldest
	// ober is tested on.
	Old bool
}

// CheckKernel checks the running kernel (never one under a root: a tree
// has no kernel) for what the dataplane needs: its version, BTF for CO-RE,
// the XDP and sk_lookup program types, and bpf_link. The error is one
// line with the fix.
func CheckKernel() (Kernel, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return Kernel{}, fmt.Errorf("kernel: uname: %w", err)
	}
	k := Kernel{Release: unix.ByteSliceToString(uts.Release[:])}
	old, err := checkRelease(k.Release)
	if err != nil {
		return k, err
	}
	k.Old = old
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return k, fmt.Errorf("kernel %s: no BTF at /sys/kernel/btf/vmlinux, and the BPF programs cannot load without it: "+
			"boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (the distributions' own kernels are)", k.Release)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; the
	// probes below would fail on the limit rather than the feature.
	if err := rlimit.RemoveMemlock(); err != nil {
		return k, fmt.Errorf("kernel %s: raise RLIMIT_MEMLOCK for BPF: %w", k.Release, err)
	}
	for _, p := range []struct {
		name string
		typ  ebpf.ProgramType
	}{{"XDP", ebpf.XDP}, {"sk_lookup", ebpf.SkLookup}} {
		if err := features.HaveProgramType(p.typ); err != nil {
			return k, probeError(k.Release, p.name+" programs", err)
		}
	}
	if err := haveBPFLink(); err != nil {
		return k, probeError(k.Release, "bpf_link", err)
	}
	return k, nil
}

// checkRelease compares a kernel release with kernelver's bounds; old
// reports a kernel that works but is untested.
func checkRelease(rel string) (old bool, err error) {
	v, err := kernelver.Parse(rel)
	if err != nil {
		return false, fmt.Errorf("%w: ober needs Linux %s or newer", err, kernelver.Tested())
	}
	switch kernelver.Judge(v) {
	case kernelver.TooOld:
		return false, fmt.Errorf("kernel %s is older than %s and lacks BPF features ober needs (sk_lookup, bpf_sk_assign, XDP links): "+
			"upgrade to the distribution's current kernel (%s or newer)", rel, kernelver.Min(), kernelver.Tested())
	case kernelver.Untested:
		return true, nil
	}
	return false, nil
}

func probeError(rel, what string, err error) error {
	switch {
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("kernel %s does not support %s: upgrade to the distribution's current kernel (%s or newer)",
			rel, what, kernelver.Tested())
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("kernel %s: probing %s was refused (%v): run bootstrap as root", rel, what, err)
	}
	return fmt.Errorf("kernel %s: probing %s: %w", rel, what, err)
}

// haveBPFLink asks the kernel for BPF_LINK_CREATE with descriptors that
// cannot be valid: a kernel that knows the command fails on the program
// descriptor (EBADF) before anything is attached, an older one rejects the
// command itself (EINVAL). Nothing is created either way.
func haveBPFLink() error {
	var attr struct {
		progFD, targetFD, attachType, flags uint32
		_                                   [48]byte // the rest of the command's union, zero
	}
	attr.progFD, attr.targetFD = ^uint32(0), ^uint32(0)
	attr.attachType = uint32(ebpf.AttachXDP)
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_LINK_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	switch errno {
	case unix.EBADF:
		return nil
	case unix.EINVAL:
		return ebpf.ErrNotSupported
	case 0:
		return errors.New("BPF_LINK_CREATE accepted invalid descriptors")
	}
	return errno
}
