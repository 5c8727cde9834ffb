package whitelist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/lib/haproxy"
)

// haproxyList is one whitelist's change in HAProxy's copy: the running
// instances check it too (`src -f FILE`), beside XDP.
type haproxyList struct {
	// name is the list's, such as "frontend-http".
	name string
	// prefixes replace prev, which the instances hold now.
	prefixes, prev []netip.Prefix
}

// haproxySwap is a whitelist change applied to the running instances and
// written aside for their files.
type haproxySwap struct {
	log  *slog.Logger
	done []aclDone
	// temps are the new files, by the file they replace; prev is what
	// each file held, and committed the files renamed over.
	temps     map[string]string
	prev      map[string][]netip.Prefix
	committed []string
}

type aclDone struct {
	rt   haproxy.Runtime
	file string
	prev []netip.Prefix
}

// swapHAProxy replaces each list in every running instance of
// an ober with runtimeDir, each in one step per instance, and writes the
// new lists beside every build's file of them, for commit to rename into
// place (so that an instance started later loads them). If an instance
// refuses, the ones already changed are put back and the error says so:
// nothing changed. An instance whose socket no longer answers (it exited)
// is passed over.
func swapHAProxy(ctx context.Context, runtimeDir string, lists []haproxyList, log *slog.Logger) (*haproxySwap, error) {
	s := &haproxySwap{log: log, temps: map[string]string{}, prev: map[string][]netip.Prefix{}}
	fail := func(err error) (*haproxySwap, error) {
		if uerr := s.undo(ctx); uerr != nil {
			return nil, fmt.Errorf("%w; and putting the instances' lists back failed: %v", err, uerr)
		}
		return nil, err
	}
	for _, l := range lists {
		files, err := haproxy.ACLFiles(runtimeDir, l.name)
		if err != nil {
			return fail(fmt.Errorf("haproxy %s: %w", l.name, err))
		}
		for _, f := range files {
			tmp, err := haproxy.WriteACLTemp(f, l.prefixes)
			if err != nil {
				return fail(fmt.Errorf("haproxy %s: %w", l.name, err))
			}
			s.temps[f], s.prev[f] = tmp, l.prev
		}
	}
	socks, err := haproxy.RuntimeSockets(runtimeDir)
	if err != nil {
		return fail(fmt.Errorf("haproxy: %w", err))
	}
	for _, sock := range socks {
		rt := haproxy.Runtime{Path: sock}
		loaded, err := rt.LoadedACLFiles(ctx)
		if err != nil {
			if gone(err) {
				continue
			}
			return fail(fmt.Errorf("haproxy instance %s: %w", sock, err))
		}
		for _, l := range lists {
			for _, f := range loaded {
				if !isACLFileOf(runtimeDir, l.name, f) {
					continue
				}
				if err := rt.ReplaceACL(ctx, f, l.prefixes); err != nil {
					return fail(fmt.Errorf("haproxy instance %s: %w", sock, err))
				}
				s.done = append(s.done, aclDone{rt: rt, file: f, prev: l.prev})
				log.Info("haproxy whitelist replaced", "list", l.name, "instance", sock, "entries", len(l.prefixes))
			}
		}
	}
	return s, nil
}

// isACLFileOf reports whether f is one of list's files: any build's,
// also one a later reload has pruned.
func isACLFileOf(runtimeDir, list, f string) bool {
	return filepath.Dir(f) == haproxy.ACLDir(runtimeDir) &&
		strings.HasPrefix(filepath.Base(f), list+".") && strings.HasSuffix(f, ".acl")
}

// gone reports whether a runtime socket's error means its instance has
// exited (a file left behind, or none).
func gone(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist)
}

// commit renames the new files into place.
func (s *haproxySwap) commit() error {
	var errs []error
	for f, tmp := range s.temps {
		if err := atomicfile.Commit(tmp, f); err != nil {
			errs = append(errs, fmt.Errorf("haproxy whitelist file %s: %w", f, err))
			continue
		}
		delete(s.temps, f)
		s.committed = append(s.committed, f)
	}
	return errors.Join(errs...)
}

// undo puts the instances' lists back, drops the new files not yet
// committed and writes the old lists back into the committed ones.
func (s *haproxySwap) undo(ctx context.Context) error {
	var errs []error
	for i := len(s.done) - 1; i >= 0; i-- {
		d := s.done[i]
		if err := d.rt.ReplaceACL(ctx, d.file, d.prev); err != nil && !gone(err) {
			errs = append(errs, err)
			continue
		}
		s.log.Info("haproxy whitelist put back", "file", d.file, "instance", d.rt.Path)
	}
	s.done = nil
	for f, tmp := range s.temps {
		os.Remove(tmp)
		delete(s.temps, f)
	}
	for _, f := range s.committed {
		if err := haproxy.WriteACL(f, s.prev[f]); err != nil {
			errs = append(errs, fmt.Errorf("haproxy whitelist file %s: %w", f, err))
		}
	}
	s.committed = nil
	return errors.Join(errs...)
}
