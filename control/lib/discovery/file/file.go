// Package file is discovery from a file of backends, one
// `host:port [weight [priority]]` a line (discovery.ParseLines), and
// tells when the file may have changed: inotify on its directory, or a
// poll of the file's identity where inotify cannot serve.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// DefaultPoll is how often the file is looked at when inotify cannot
// serve.
const DefaultPoll = time.Second

// Mode is how Wait learns of a change.
type Mode string

const (
	// Notify is inotify on the file's directory.
	Notify Mode = "inotify"
	// Poll is a look at the file's inode, size and times every interval.
	Poll Mode = "poll"
)

// Option changes how a Source watches.
type Option func(*Source)

// PollEvery makes the Source poll every d rather than use inotify: for
// a file on NFS or FUSE, whose changes made by other machines inotify
// never hears of.
func PollEvery(d time.Duration) Option {
	return func(s *Source) { s.forcePoll, s.interval = true, d }
}

// Source is a file of backends. It is a discovery.Waiter.
//
// inotify hears of the directory's entry for the file's name: a file
// reached through a symbolic link whose target changes elsewhere (a
// Kubernetes ConfigMap swaps a link to a directory) is seen at the
// runner's next interval, or at once with PollEvery, which follows
// links.
type Source struct {
	path, dir string
	forcePoll bool
	interval  time.Duration

	watcher *fsnotify.Watcher
	// changed holds a token when an event for the file came after the
	// last Fetch.
	changed chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	mode    Mode
	why     error // why Poll, when it is
	fetched stamp // the file as the last Fetch found it
}

var (
	_ discovery.Waiter = (*Source)(nil)
	_ io.Closer        = (*Source)(nil)
)

// New watches the file at path, which need not exist yet. It falls back
// to polling, and says why in Mode, when inotify cannot be set up.
func New(path string, opts ...Option) (*Source, error) {
	if path == "" {
		return nil, errors.New("backends file: no path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("backends file %s: %w", path, err)
	}
	s := &Source{path: abs, dir: filepath.Dir(abs), interval: DefaultPoll,
		changed: make(chan struct{}, 1), done: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.interval <= 0 {
		return nil, fmt.Errorf("backends file %s: poll interval %s is not positive", path, s.interval)
	}
	if s.forcePoll {
		s.mode, s.why = Poll, errors.New("asked to poll")
		close(s.done)
		return s, nil
	}
	// The directory, not the file: an editor or configuration tool that
	// writes a new file and renames it over the old one, or deletes the
	// file and creates it again, leaves a watch on the file itself
	// watching nothing.
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(s.dir); err != nil {
			w.Close()
		}
	}
	if err != nil {
		s.mode, s.why = Poll, fmt.Errorf("watch %s: %w", s.dir, err)
		close(s.done)
		return s, nil
	}
	s.watcher, s.mode = w, Notify
	go s.watch()
	return s, nil
}

// Mode says how Wait learns of a change and, when it polls, why.
func (s *Source) Mode() (Mode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode, s.why
}

// Path is the file's absolute path.
func (s *Source) Path() string { return s.path }

// Fetch reads the file, at most discovery.MaxBytes of it, and parses it.
// A file that is missing or not a regular file is an error naming it.
func (s *Source) Fetch(ctx context.Context) (discovery.Result, error) {
	if err := ctx.Err(); err != nil {
		return discovery.Result{}, err
	}
	// Forget the events so far before reading: one that comes after is a
	// change the read may have missed, one before is in what is read.
	select {
	case <-s.changed:
	default:
	}
	f, err := os.Open(s.path)
	if err != nil {
		s.setFetched(stamp{})
		return discovery.Result{}, fmt.Errorf("backends file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return discovery.Result{}, fmt.Errorf("backends file: %w", err)
	}
	s.setFetched(stampOf(fi))
	// A FIFO would block the read, a device never end.
	if !fi.Mode().IsRegular() {
		return discovery.Result{}, fmt.Errorf("backends file %s: not a regular file (%s)", s.path, fi.Mode().Type())
	}
	res, err := discovery.ParseLines(f)
	if err != nil {
		return discovery.Result{}, fmt.Errorf("backends file %s: %w", s.path, err)
	}
	return res, nil
}

func (s *Source) setFetched(st stamp) {
	s.mu.Lock()
	s.fetched = st
	s.mu.Unlock()
}

// Wait returns when the file may have changed since the last Fetch, or
// with ctx's error.
func (s *Source) Wait(ctx context.Context) error {
	// Polling waits on the ticker and on the watch all the same: the
	// watch's last word may be that it failed, and the ticker's channel
	// is nil while inotify serves.
	var ticker *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		s.mu.Lock()
		mode, last := s.mode, s.fetched
		s.mu.Unlock()
		if mode == Poll {
			if current(s.path) != last {
				return nil
			}
			if ticker == nil {
				ticker = time.NewTicker(s.interval)
				tick = ticker.C
			}
		}
		select {
		case <-s.changed:
			return nil
		case <-tick:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close releases the watcher. Wait must not be called after.
func (s *Source) Close() error {
	if s.watcher == nil {
		return nil
	}
	err := s.watcher.Close()
	<-s.done
	return err
}

// watch passes the events for the file on to Wait until the watcher is
// closed, or turns to polling when it fails.
func (s *Source) watch() {
	defer close(s.done)
	for {
		select {
		case ev, ok := <-s.watcher.Events:
			if !ok {
				return
			}
			switch {
			case filepath.Dir(ev.Name) == s.dir && filepath.Base(ev.Name) == filepath.Base(s.path):
				s.signal()
			case ev.Name == s.dir && ev.Has(fsnotify.Remove|fsnotify.Rename):
				// The directory went, and its watch with it.
				s.fallBack(fmt.Errorf("watch %s: the directory was %s", s.dir, opName(ev.Op)))
				return
			}
		case err, ok := <-s.watcher.Errors:
			if !ok {
				return
			}
			// An overflow lost events, which may have been the file's;
			// another error leaves the watch in doubt. Either way, a poll
			// is sure to see what inotify did not tell.
			s.fallBack(fmt.Errorf("watch %s: %w", s.dir, err))
			return
		}
	}
}

// fallBack turns to polling, and wakes Wait: what changed meanwhile is
// not known.
func (s *Source) fallBack(why error) {
	s.mu.Lock()
	s.mode, s.why = Poll, why
	s.mu.Unlock()
	s.signal()
	_ = s.watcher.Close()
}

func (s *Source) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func opName(op fsnotify.Op) string {
	if op.Has(fsnotify.Rename) {
		return "renamed"
	}
	return "removed"
}

// stamp is what a poll compares: a file written in place changes its
// size or times, one replaced its inode; the change time catches a
// write of the same size within the modification time's granularity.
type stamp struct {
	exists       bool
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

func stampOf(fi os.FileInfo) stamp {
	st := stamp{exists: true, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = sys.Dev, sys.Ino
		st.ctime = sys.Ctim.Nano()
	}
	return st
}

// current is the file's stamp now; a file that cannot be looked at
// counts as missing.
func current(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stampOf(fi)
}
