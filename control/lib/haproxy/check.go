package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// CheckError is a configuration HAProxy refused.
type CheckError struct {
	Path string
	// Alerts are HAProxy's [ALERT] lines without their "[ALERT] (pid) :"
	// prefix, such as "config : parsing [x.cfg:5] : unknown keyword ...".
	Alerts []string
	// Output is everything HAProxy printed.
	Output string
	Err    error // the exit status
}

func (e *CheckError) Error() string {
	msg := strings.Join(e.Alerts, "; ")
	if msg == "" {
		msg = lastLines(e.Output, 5)
	}
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("haproxy refused %s: %s", e.Path, msg)
}

func (e *CheckError) Unwrap() error { return e.Err }

// fdRE finds the inherited descriptors a configuration binds.
var fdRE = regexp.MustCompile(`\bfd@(\d+)\b`)

// alertRE strips the "[ALERT]    (1234) : " prefix of an alert line.
var alertRE = regexp.MustCompile(`^\[ALERT\]\s*(?:\(\d+\)\s*)?:\s*`)

// Check runs `binary -c -f path`. HAProxy inspects every "bind fd@N"
// socket while it parses (it refuses a closed descriptor or one that is
// not a stream socket), so Check hands it a throwaway listening socket on
// the loopback for each descriptor in fds and each fd@N the file names.
// A refused configuration is a *CheckError holding HAProxy's alerts.
func Check(ctx context.Context, binary, path string, fds []int) error {
	if binary == "" {
		return errors.New("haproxy binary not set")
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("check haproxy config: %w", err)
	}
	want := slices.Clone(fds)
	for _, m := range fdRE.FindAllStringSubmatch(string(text), -1) {
		n, err := strconv.Atoi(m[1])
		if err != nil {
			return fmt.Errorf("check haproxy config %s: fd@%s: %w", path, m[1], err)
		}
		want = append(want, n)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if len(want) > 0 && want[0] < 3 {
		return fmt.Errorf("check haproxy config %s: fd %d: inherited sockets start at fd 3", path, want[0])
	}

	var extra []*os.File
	defer func() {
		for _, f := range extra {
			if f != nil {
				f.Close()
			}
		}
	}()
	if len(want) > 0 {
		extra = make([]*os.File, want[len(want)-1]-2)
		for _, fd := range want {
			f, err := placeholderSocket()
			if err != nil {
				return fmt.Errorf("check haproxy config %s: socket for fd %d: %w", path, fd, err)
			}
			extra[fd-3] = f
		}
	}

	cmd := exec.CommandContext(ctx, binary, "-c", "-f", path)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.ExtraFiles = extra // nil entries are closed in the child
	err = cmd.Run()
	if err == nil {
		return nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || ctx.Err() != nil {
		return fmt.Errorf("check haproxy config %s with %s: %w", path, binary, err)
	}
	ce := &CheckError{Path: path, Output: out.String(), Err: err}
	for _, line := range strings.Split(ce.Output, "\n") {
		if loc := alertRE.FindStringIndex(line); loc != nil {
			if a := strings.TrimSpace(line[loc[1]:]); a != "" {
				ce.Alerts = append(ce.Alerts, a)
			}
		}
	}
	return ce
}

// placeholderSocket is a listening TCP socket on the loopback, as a file
// to pass to a child.
func placeholderSocket() (*os.File, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		var err6 error
		if l, err6 = net.Listen("tcp6", "[::1]:0"); err6 != nil {
			return nil, errors.Join(err, err6)
		}
	}
	defer l.Close()
	return l.(*net.TCPListener).File()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "; "))
}
