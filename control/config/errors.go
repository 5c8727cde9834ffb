package config

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// FieldError is one problem with one value of the configuration.
//
// Path names the value with YAML keys and list indexes, such as
// "services[1].port". Value is the offending value as written (strings
// quoted); it is empty when the problem is a missing value or concerns a
// whole section. Msg says what is wrong.
type FieldError struct {
	Path, Value, Msg string
}

// Error formats the error as `<Path>: <Value>: <Msg>`, leaving out empty
// parts, e.g. `services[1].port: 443: already used by services[0] ("https")
// on VIP 192.0.2.10`.
func (e *FieldError) Error() string {
	var b strings.Builder
	for _, s := range []string{e.Path, e.Value} {
		if s != "" {
			b.WriteString(s)
			b.WriteString(": ")
		}
	}
	b.WriteString(e.Msg)
	return b.String()
}

// problems collects FieldErrors in the order they are found.
type problems struct {
	errs []error
}

func (p *problems) add(path, value, format string, args ...any) {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	p.errs = append(p.errs, &FieldError{Path: path, Value: value, Msg: msg})
}

// err joins everything collected, or returns nil.
func (p *problems) err() error {
	return errors.Join(p.errs...)
}

// loadError prefixes every line of a Parse error with "config <path>: ", so
// each problem of a multi-line report names the file, the way compilers
// report errors.
type loadError struct {
	path string
	err  error
}

func (e *loadError) Error() string {
	prefix := "config " + e.path + ": "
	lines := strings.Split(e.err.Error(), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

func (e *loadError) Unwrap() error { return e.err }

// fileProblem turns an error from opening or reading a file into a short
// phrase; the caller already names the file.
func fileProblem(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func quote(s string) string { return strconv.Quote(s) }

// fmtDuration writes d the way people write durations: "5m", not "5m0s".
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ErrorLines splits an error into its problems: a configuration with
// several reports one per line (errors.Join), blank lines left out.
func ErrorLines(err error) []string {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// OneLine joins an error's problems into one line, for a report or a
// log line that holds one.
func OneLine(err error) string {
	return strings.Join(ErrorLines(err), "; ")
}
