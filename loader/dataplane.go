// Package loader owns ober's BPF dataplane: it loads the compiled objects,
// pins their maps, programs and links under one bpffs directory, attaches
// the XDP and sk_lookup programs, and offers typed, atomic updates of the
// tables the programs read.
//
// State lives in bpffs, not in this process: Open on an existing pin root
// adopts what is there, so restarting or upgrading ober leaves the packet
// path untouched. The Go reference model of the programs' decisions
// (Model) lives here too, beside the code it must agree with.
package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultRoot is where a node's dataplane is pinned.
const DefaultRoot = "/sys/fs/bpf/ober"

// Options configure Open.
type Options struct {
	// Root is the pin directory; DefaultRoot when empty. It must be on a
	// bpffs; only /sys/fs/bpf is mounted on demand.
	Root string
	// Logger receives warnings (such as a fallback to generic XDP).
	Logger *slog.Logger
	// MustExist makes Open fail instead of creating a dataplane, for
	// commands that only look (status) or undo (detach).
	MustExist bool
	// MapsOnly opens the pinned maps and nothing else (it implies
	// MustExist). No program is loaded, verified or replaced, so a command
	// that reads or updates tables never changes the programs in the packet
	// path, even when it is an older or newer ober binary. Attaching
	// needs a full Open.
	MapsOnly bool
}

// ErrNotPinned is returned by Open with MustExist when root holds no
// dataplane.
var ErrNotPinned = errors.New("no dataplane pinned")

// Dataplane is an open handle on a pinned dataplane. Its methods are safe
// for concurrent use; updates are serialised.
type Dataplane struct {
	root string
	log  *slog.Logger
	spec *ebpf.CollectionSpec
	maps oberMaps

	xdp      *ebpf.Program
	skLookup *ebpf.Program

	// Updates are serialised within this process by mu and across
	// processes (the daemon, an operator's `ober sync`) by an flock on the
	// pin root, held open in lockFile.
	mu       sync.Mutex
	lockFile *os.File
}

func (d *Dataplane) mapDir() string  { return filepath.Join(d.root, "maps") }
func (d *Dataplane) progDir() string { return filepath.Join(d.root, "progs") }
func (d *Dataplane) linkDir() string { return filepath.Join(d.root, "links") }

// Root returns the pin directory.
func (d *Dataplane) Root() string { return d.root }

// Open loads the dataplane, creating and pinning it under opts.Root, or
// adopting the maps, programs and links already pinned there.
func Open(opts Options) (*Dataplane, error) {
	root := opts.Root
	if root == "" {
		root = DefaultRoot
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	d := &Dataplane{root: root, log: log}
	if opts.MustExist || opts.MapsOnly {
		// The earlier layout's table counts: its dataplane is running.
		_, err := os.Stat(filepath.Join(d.mapDir(), "ober_service_set"))
		if err != nil {
			_, err = os.Stat(filepath.Join(d.mapDir(), earlierServicesPin))
		}
		if err != nil {
			return nil, fmt.Errorf("open dataplane: %w at %s (attach an interface first)", ErrNotPinned, root)
		}
	}
	if err := ensureBPFFS(root); err != nil {
		return nil, err
	}
	for _, dir := range []string{d.mapDir(), d.progDir(), d.linkDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open dataplane: %w", err)
		}
	}

	spec, err := loadOber()
	if err != nil {
		return nil, fmt.Errorf("open dataplane: parse objects: %w", err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("open dataplane: %w", err)
	}
	spec.Maps["ober_cpumap"].MaxEntries = uint32(ncpu)
	d.spec = spec
	if d.lockFile, err = os.Open(root); err != nil {
		return nil, fmt.Errorf("open dataplane: %w", err)
	}

	loadOpts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.mapDir()}}
	var objs oberObjects
	if opts.MapsOnly {
		err = spec.LoadAndAssign(&objs.oberMaps, loadOpts)
	} else {
		err = spec.LoadAndAssign(&objs, loadOpts)
	}
	if err != nil {
		d.lockFile.Close()
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("open dataplane: maps pinned in %s come from an incompatible ober version; "+
				"remove them with `ober detach --all`: %w", d.mapDir(), err)
		}
		return nil, fmt.Errorf("open dataplane: load objects: %w", err)
	}
	d.maps = objs.oberMaps
	if opts.MapsOnly {
		return d, nil
	}

	unlock, err := d.lock()
	if err == nil {
		// The table first: the programs that read it take over next.
		var earlier bool
		earlier, err = d.migrateServices()
		if err == nil {
			err = d.rebuildAbsent()
		}
		if err == nil {
			d.xdp, err = d.adoptProgram("xdp", objs.OberXdp)
		} else {
			objs.OberXdp.Close()
		}
		if err == nil {
			d.skLookup, err = d.adoptProgram("sk_lookup", objs.OberSkLookup)
		} else {
			objs.OberSkLookup.Close()
		}
		if err == nil && earlier {
			d.dropEarlierServices()
		}
		unlock()
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("open dataplane: %w", err)
	}
	return d, nil
}

// adoptProgram keeps the pinned program when it is the same code as the
// one just loaded, so a restart changes nothing; otherwise the new one is
// pinned and every pinned link is moved to it in one step (an upgrade).
func (d *Dataplane) adoptProgram(name string, fresh *ebpf.Program) (*ebpf.Program, error) {
	pin := filepath.Join(d.progDir(), name)
	old, err := ebpf.LoadPinnedProgram(pin, nil)
	if err == nil {
		same, err := sameProgram(old, fresh)
		if err != nil {
			old.Close()
			fresh.Close()
			return nil, fmt.Errorf("program %s: %w", name, err)
		}
		if same {
			fresh.Close()
			return old, nil
		}
		old.Close()
		if err := os.Remove(pin); err != nil {
			fresh.Close()
			return nil, fmt.Errorf("program %s: replace pin: %w", name, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		fresh.Close()
		return nil, fmt.Errorf("program %s: load pin: %w", name, err)
	}
	if err := fresh.Pin(pin); err != nil {
		fresh.Close()
		return nil, fmt.Errorf("program %s: pin: %w", name, err)
	}
	if err := d.relink(fresh); err != nil {
		return nil, fmt.Errorf("program %s: %w", name, err)
	}
	return fresh, nil
}

func sameProgram(a, b *ebpf.Program) (bool, error) {
	ai, err := a.Info()
	if err != nil {
		return false, err
	}
	bi, err := b.Info()
	if err != nil {
		return false, err
	}
	return ai.Type == bi.Type && ai.Tag == bi.Tag, nil
}

// relink points every pinned link of prog's type at prog.
func (d *Dataplane) relink(prog *ebpf.Program) error {
	entries, err := os.ReadDir(d.linkDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if linkProgType(e.Name()) != prog.Type() {
			continue
		}
		l, err := link.LoadPinnedLink(filepath.Join(d.linkDir(), e.Name()), nil)
		if err != nil {
			return fmt.Errorf("link %s: %w", e.Name(), err)
		}
		err = l.Update(prog)
		l.Close()
		if err != nil {
			return fmt.Errorf("upgrade link %s: %w", e.Name(), err)
		}
		d.log.Info("dataplane program upgraded", "link", e.Name())
	}
	return nil
}

// Close releases this process's handles. Pinned state, and with it the
// attached programs, stays in place.
func (d *Dataplane) Close() error {
	var errs []error
	for _, p := range []*ebpf.Program{d.xdp, d.skLookup} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	errs = append(errs, d.maps.Close())
	if d.lockFile != nil {
		errs = append(errs, d.lockFile.Close())
	}
	return errors.Join(errs...)
}

// lock serialises an update with every other writer of this dataplane,
// in this process and in others. Call the returned function to release.
func (d *Dataplane) lock() (func(), error) {
	d.mu.Lock()
	if err := unix.Flock(int(d.lockFile.Fd()), unix.LOCK_EX); err != nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("lock %s: %w", d.root, err)
	}
	return func() {
		unix.Flock(int(d.lockFile.Fd()), unix.LOCK_UN)
		d.mu.Unlock()
	}, nil
}

// needPrograms fails for a dataplane opened MapsOnly.
func (d *Dataplane) needPrograms(what string) error {
	if d.xdp == nil || d.skLookup == nil {
		return fmt.Errorf("%s: dataplane was opened for its tables only", what)
	}
	return nil
}

// XDPProgram returns the XDP program, for BPF_PROG_TEST_RUN.
func (d *Dataplane) XDPProgram() *ebpf.Program { return d.xdp }

// SkLookupProgram returns the sk_lookup program, for BPF_PROG_TEST_RUN.
func (d *Dataplane) SkLookupProgram() *ebpf.Program { return d.skLookup }

// Destroy detaches every link pinned under root and removes the pins, so
// the kernel frees the dataplane. It works without loading anything, so
// it also clears pins an incompatible ober version left behind.
func Destroy(root string) error {
	if root == "" {
		root = DefaultRoot
	}
	lf, err := os.Open(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroy dataplane %s: %w", root, err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("destroy dataplane %s: lock: %w", root, err)
	}
	var errs []error
	// Links first, detached explicitly so the hooks are free on return.
	links, err := os.ReadDir(filepath.Join(root, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range links {
		if err := detachPinned(filepath.Join(root, "links", e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range []string{"links", "progs", "maps"} {
		entries, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if err := os.Remove(filepath.Join(root, dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(filepath.Join(root, dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(root); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy dataplane %s: %w", root, err)
	}
	return nil
}

// ensureBPFFS checks that root will live on a bpffs, mounting one at
// /sys/fs/bpf when that is where root goes and nothing is mounted yet
// (systemd normally does this; minimal hosts and containers do not).
func ensureBPFFS(root string) error {
	dir := root
	for {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if isBPFFS(dir) {
		return nil
	}
	const sysBPF = "/sys/fs/bpf"
	if rel, err := filepath.Rel(sysBPF, root); err == nil && filepath.IsLocal(rel) || root == sysBPF {
		// `ip netns exec` and similar tools run us in a private mount
		// namespace with a fresh /sys: a bpffs mounted there, and all pins
		// in it, would vanish when this process exits.
		if self, init := mountNS("self"), mountNS("1"); self != init {
			return fmt.Errorf("no bpffs at %s in this mount namespace (ip netns exec gives commands a fresh /sys), "+
				"and pins made in a private one vanish with the process: mount one outside and pass its path "+
				"(e.g. --bpffs-root), or run without ip netns exec", sysBPF)
		}
		if err := os.MkdirAll(sysBPF, 0o700); err != nil {
			return fmt.Errorf("mount bpffs: %w", err)
		}
		if err := unix.Mount("bpf", sysBPF, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", sysBPF, err)
		}
		return nil
	}
	return fmt.Errorf("pin root %s is not on a bpffs: mount one with `mount -t bpf bpf %s`", root, dir)
}

func mountNS(pid string) string {
	l, _ := os.Readlink("/proc/" + pid + "/ns/mnt")
	return l
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC
}
