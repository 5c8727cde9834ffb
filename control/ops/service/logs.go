package service

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// LogOptions shape FileLogs and JournalLogs.
type LogOptions struct {
	// Lines is how many of the last lines to show, counted after
	// filtering; negative: all of them.
	Lines  int
	Follow bool
	Filter Filter
	// Poll is how often a followed file is looked at; 200ms when 0.
	Poll time.Duration
	// Notice receives remarks on a followed file (truncated, replaced);
	// nil drops them.
	Notice io.Writer
}

// ParseLines checks a -n value: a count of lines, or "all".
func ParseLines(s string) (int, error) {
	if s == "all" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("-n %q: want a number of lines, 0 or more, or all", s)
	}
	return n, nil
}

// emitter writes kept lines rendered to out.
type emitter struct {
	out    io.Writer
	filter Filter
	err    error
}

func (e *emitter) line(l string) {
	if s, ok := e.filter.Keep(l); ok && e.err == nil {
		_, e.err = io.WriteString(e.out, s+"\n")
	}
}

// FileLogs shows the log file at path: its last lines and, with Follow,
// the lines appended to it until ctx ends. A followed file may be
// truncated (logrotate's copytruncate) or replaced by a new one (a
// rotation by renaming); both are followed.
func FileLogs(ctx context.Context, path string, out io.Writer, o LogOptions) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no log file at %s (ober start writes it; under systemd the log is in the journal)", path)
	}
	if err != nil {
		return fmt.Errorf("log file %s: %w", path, err)
	}
	defer func() { f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("log file %s: %w", path, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("log file %s: is a directory", path)
	}
	e := &emitter{out: out, filter: o.Filter}
	var off int64
	if o.Lines < 0 {
		off, err = readLines(f, 0, !o.Follow, e.line)
	} else {
		var lines []string
		lines, off, err = tailLines(f, fi.Size(), o.Lines, !o.Follow, o.Filter.Keep)
		for _, l := range lines {
			if e.err == nil {
				_, e.err = io.WriteString(out, l+"\n")
			}
		}
	}
	if err != nil {
		return fmt.Errorf("log file %s: %w", path, err)
	}
	if e.err != nil || !o.Follow {
		return e.err
	}
	return follow(ctx, path, f, off, e, o)
}

// readLines calls fn for each line of f from off, and returns the offset
// after the last newline; withPartial also passes a last line that has
// no newline yet.
func readLines(f io.ReaderAt, off int64, withPartial bool, fn func(string)) (int64, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, off, 1<<62), 64<<10)
	for {
		l, err := r.ReadString('\n')
		if err == io.EOF {
			if withPartial && l != "" {
				fn(l)
			}
			return off, nil
		}
		if err != nil {
			return off, err
		}
		off += int64(len(l))
		fn(strings.TrimSuffix(l, "\n"))
	}
}

// tailLines returns the last n lines of r (size bytes) that keep accepts,
// rendered by keep, reading backwards so that a large log costs only its
// end. It also returns the offset after the last newline, where following
// goes on; withPartial also counts a last line that has no newline yet.
func tailLines(r io.ReaderAt, size int64, n int, withPartial bool, keep func(string) (string, bool)) ([]string, int64, error) {
	const block = 64 << 10
	var rev []string
	take := func(b []byte) {
		if s, ok := keep(string(b)); ok {
			rev = append(rev, s)
		}
	}
	complete := int64(-1) // not found yet
	pos := size
	var tail []byte // the end of a line whose start is before pos
	for len(rev) < n {
		if pos == 0 {
			if complete < 0 {
				complete = 0 // no newline at all: everything is a partial line
				if withPartial && len(tail) > 0 {
					take(tail)
				}
			} else {
				take(tail) // the file's first line
			}
			break
		}
		start := max(0, pos-block)
		buf := make([]byte, pos-start, pos-start+int64(len(tail)))
		if _, err := r.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, err
		}
		data := append(buf, tail...)
		pos = start
		for len(rev) < n {
			i := bytes.LastIndexByte(data, '\n')
			if i < 0 {
				break
			}
			if complete < 0 {
				complete = start + int64(i) + 1
				if withPartial && i+1 < len(data) {
					take(data[i+1:])
				}
			} else {
				take(data[i+1:])
			}
			data = data[:i]
		}
		tail = data
	}
	if complete < 0 {
		complete = size
	}
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return rev, complete, nil
}

// follow shows what is appended to f from off until ctx ends, moving to
// the file now at path when the one open was rotated away, and back to
// the start when it was truncated.
func follow(ctx context.Context, path string, f *os.File, off int64, e *emitter, o LogOptions) error {
	opened := f
	defer func() {
		if f != opened {
			f.Close()
		}
	}()
	poll := o.Poll
	if poll == 0 {
		poll = 200 * time.Millisecond
	}
	notice := func(format string, args ...any) {
		if o.Notice != nil {
			fmt.Fprintf(o.Notice, format+"\n", args...)
		}
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	var pending []byte // a line still being written
	buf := make([]byte, 64<<10)
	// drain shows what f holds after off.
	drain := func() error {
		for {
			n, err := f.ReadAt(buf, off)
			off += int64(n)
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				e.line(string(pending[:i]))
				pending = pending[i+1:]
			}
			switch {
			case e.err != nil:
				return e.err
			case err == io.EOF || n == 0:
				return nil
			case err != nil:
				return fmt.Errorf("log file %s: %w", path, err)
			}
		}
	}
	for {
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("log file %s: %w", path, err)
		}
		if fi.Size() < off {
			notice("ober logs: %s was truncated; following it from its start", path)
			off, pending = 0, nil
		}
		if err := drain(); err != nil {
			return err
		}
		// A new file at path is what the writer uses after a rotation;
		// the old one is read to its end once more first, for what was
		// written to it meanwhile.
		if pfi, err := os.Stat(path); err == nil && !os.SameFile(fi, pfi) {
			if nf, err := os.Open(path); err == nil {
				if err := drain(); err != nil {
					nf.Close()
					return err
				}
				notice("ober logs: %s was replaced (rotated); following the new file", path)
				if f != opened {
					f.Close()
				}
				f = nf
				off, pending = 0, nil
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// JournalLogs shows the ober unit's journal through journalctl. Without
// a filter journalctl counts and follows itself; with one, the history is
// filtered here, keeping the last Lines, and following resumes after the
// history's cursor so that no record is shown twice or lost.
func JournalLogs(ctx context.Context, journalctl string, out io.Writer, o LogOptions) error {
	e := &emitter{out: out, filter: o.Filter}
	show := func(l string) error { e.line(l); return e.err }
	base := []string{"-u", Unit, "-o", "cat", "--no-pager"}
	if o.Filter == FilterAll || o.Filter == "" {
		count := "all"
		if o.Lines >= 0 {
			count = strconv.Itoa(o.Lines)
		}
		args := slices.Concat(base, []string{"-n", count})
		if o.Follow {
			args = append(args, "-f")
		}
		return journal(ctx, journalctl, args, show)
	}
	args := slices.Clone(base)
	if o.Follow {
		args = append(args, "--show-cursor")
	}
	var cursor string
	var kept []string
	err := journal(ctx, journalctl, args, func(l string) error {
		if c, ok := strings.CutPrefix(l, "-- cursor: "); ok {
			cursor = c
			return nil
		}
		if s, ok := o.Filter.Keep(l); ok {
			kept = append(kept, s)
			if o.Lines >= 0 && len(kept) > o.Lines {
				kept = kept[len(kept)-o.Lines:]
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, l := range kept {
		if _, err := io.WriteString(out, l+"\n"); err != nil {
			return err
		}
	}
	if !o.Follow || ctx.Err() != nil {
		return nil
	}
	args = slices.Concat(base, []string{"-f"})
	if cursor != "" {
		args = append(args, "--after-cursor", cursor, "-n", "all")
	} else {
		args = append(args, "-n", "0")
	}
	return journal(ctx, journalctl, args, show)
}

// journal runs journalctl and passes each line of its output to fn, until
// journalctl ends, fn fails or ctx ends.
func journal(ctx context.Context, journalctl string, args []string, fn func(string) error) error {
	cmd := exec.CommandContext(ctx, journalctl, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run journalctl: %w", err)
	}
	r := bufio.NewReaderSize(stdout, 64<<10)
	var ferr error
	for ferr == nil {
		l, rerr := r.ReadString('\n')
		if l != "" {
			ferr = fn(strings.TrimSuffix(l, "\n"))
		}
		if rerr != nil {
			break
		}
	}
	if ferr != nil {
		_ = cmd.Process.Kill()
	}
	err = cmd.Wait()
	switch {
	case ferr != nil:
		return ferr
	case ctx.Err() != nil:
		return nil // Ctrl-C: the end the operator asked for
	case err != nil:
		first, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		if first == "" {
			first = err.Error()
		}
		return fmt.Errorf("journalctl %s: %s", strings.Join(args, " "), first)
	}
	return nil
}
