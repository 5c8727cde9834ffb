package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Errors ParseLines returns for the input as a whole, wrapped with the
// detail (the bound, where the binary data starts).
var (
	// ErrTooLarge is input of more than MaxBytes.
	ErrTooLarge = errors.New("larger than the bound")
	// ErrTooMany is input naming more than MaxBackends backends.
	ErrTooMany = errors.New("more backends than the bound")
	// ErrBinary is input that is not text.
	ErrBinary = errors.New("binary data, not lines of text")
)

// maxProblems is how many refused lines a Result lists one by one; a
// last entry counts the rest, so that a file of a million bad lines does
// not become a million messages.
const maxProblems = 100

// ParseLines reads the format the file and exec sources share: one
// backend a line,
//
//	host:port [weight [priority]]
//
// with the fields apart by spaces or tabs. The host is an IPv4 address,
// an IPv6 address in brackets or a host name; `#` starts a comment, and
// blank lines, a byte order mark and CRLF line ends are allowed. An IP
// address is written back in its canonical form and a name in lower
// case, so that one backend spelt two ways is one ID.
//
// A line that is wrong (a port 0 or above 65535, a weight above
// MaxWeight or below 0, a priority below 1, a host that is neither an
// address nor a host name, a host:port given before) is a problem naming
// its line number, text and why; the other lines stand.
//
// The input as a whole is an error, and no backends stand, when it is
// larger than MaxBytes (at most MaxBytes+1 bytes are read), names more
// than MaxBackends backends, or is binary: it holds a NUL byte (which
// text never does, and a file cut short by a crash is often padded
// with), or more than a quarter of its bytes are control characters or
// not UTF-8 (random bytes are about 60% so, text with a stray byte well
// under 1%). Below that, each line with such a byte is a problem;
// comments are not checked, as only people read them.
func ParseLines(r io.Reader) (Result, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return Result{}, err
	}
	if len(data) > MaxBytes {
		return Result{}, fmt.Errorf("%w of %d bytes (4 MiB)", ErrTooLarge, MaxBytes)
	}
	if err := checkText(data); err != nil {
		return Result{}, err
	}
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))

	var res Result
	refused := 0
	refuse := func(n int, text, why string) {
		refused++
		if refused <= maxProblems {
			res.Problems = append(res.Problems, fmt.Sprintf("line %d: %s: %s", n, quote(text), why))
		}
	}
	seen := map[string]int{}
	for n := 1; len(data) > 0; n++ {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		text := strings.Trim(string(line), " \t\r")
		if text == "" {
			continue
		}
		if why := nonText(text); why != "" {
			refuse(n, text, why)
			continue
		}
		b, why := parseLine(text)
		if why != "" {
			refuse(n, text, why)
			continue
		}
		if first, ok := seen[b.ID()]; ok {
			refuse(n, text, fmt.Sprintf("duplicate of line %d", first))
			continue
		}
		seen[b.ID()] = n
		if len(res.Backends) == MaxBackends {
			return Result{}, fmt.Errorf("%w of %d: line %d names backend %d", ErrTooMany, MaxBackends, n, MaxBackends+1)
		}
		res.Backends = append(res.Backends, b)
	}
	if refused > maxProblems {
		res.Problems = append(res.Problems, fmt.Sprintf("and %d more lines refused", refused-maxProblems))
	}
	return res, nil
}

// checkText refuses input that is binary, as ParseLines says.
func checkText(data []byte) error {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return fmt.Errorf("%w: a NUL byte at line %d", ErrBinary, bytes.Count(data[:i], []byte("\n"))+1)
	}
	bad := 0
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if (r == utf8.RuneError && size == 1) || control(r) {
			bad += size
		}
		i += size
	}
	if bad*4 > len(data) {
		return fmt.Errorf("%w: %d of its %d bytes are control characters or not UTF-8", ErrBinary, bad, len(data))
	}
	return nil
}

// control is a control character other than the tab and line ends
// that text holds.
func control(r rune) bool {
	switch r {
	case '\t', '\n', '\r':
		return false
	}
	return r < 0x20 || (r >= 0x7f && r < 0xa0)
}

// nonText says why a line is not text, or "".
func nonText(s string) string {
	if !utf8.ValidString(s) {
		return "not UTF-8 text"
	}
	for _, r := range s {
		if control(r) {
			return fmt.Sprintf("control character %U", r)
		}
	}
	return ""
}

// parseLine reads one line's fields, or says why not.
func parseLine(s string) (Backend, string) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' })
	if len(f) > 3 {
		return Backend{}, fmt.Sprintf("%d fields, want host:port [weight [priority]]", len(f))
	}
	b := Backend{Weight: -1}
	host, port, err := net.SplitHostPort(f[0])
	if err != nil {
		var ae *net.AddrError
		switch {
		case errors.As(err, &ae) && ae.Err == "too many colons in address":
			return Backend{}, "not host:port: an IPv6 address goes in brackets, as in [2001:db8::1]:80"
		case errors.As(err, &ae):
			return Backend{}, "not host:port: " + strings.TrimSuffix(ae.Err, " in address")
		}
		return Backend{}, "not host:port: " + err.Error()
	}
	if b.Host = canonicalHost(host); b.Host == "" {
		return Backend{}, fmt.Sprintf("host %s is neither an IP address nor a host name", quote(host))
	}
	p, err := strconv.Atoi(port)
	switch {
	case port == "":
		return Backend{}, "no port after the colon"
	case strings.Trim(port, "0123456789") != "":
		return Backend{}, fmt.Sprintf("port %s is not a number", quote(port))
	case p == 0 && err == nil:
		return Backend{}, "port 0"
	case err != nil || p > 65535:
		return Backend{}, fmt.Sprintf("port %s out of range 1-65535", port)
	}
	b.Port = uint16(p)
	if len(f) > 1 {
		w, err := strconv.Atoi(f[1])
		switch {
		case errors.Is(err, strconv.ErrSyntax):
			return Backend{}, fmt.Sprintf("weight %s is not a number", quote(f[1]))
		case w < 0:
			return Backend{}, fmt.Sprintf("negative weight %s", f[1])
		case w > MaxWeight:
			// Refused, not clamped: a source meaning 70000 as "the most"
			// and one meaning it as a typo cannot be told apart.
			return Backend{}, fmt.Sprintf("weight %s above the highest, %d", f[1], MaxWeight)
		}
		b.Weight = w
	}
	if len(f) > 2 {
		pr, err := strconv.Atoi(f[2])
		switch {
		case errors.Is(err, strconv.ErrSyntax):
			return Backend{}, fmt.Sprintf("priority %s is not a number", quote(f[2]))
		case pr < 1:
			return Backend{}, fmt.Sprintf("priority %s; priorities start at 1 (the best)", f[2])
		case pr > 65535:
			// SRV's range, so that a priority from a file compares with
			// one from DNS.
			return Backend{}, fmt.Sprintf("priority %s above the highest, 65535", f[2])
		}
		b.Priority = pr
	}
	return b, ""
}

// canonicalHost is host written one way (an address in its canonical
// form, a name in lower case), or "" when it is neither.
func canonicalHost(host string) string {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	if !hostName(host) {
		return ""
	}
	return strings.ToLower(host)
}

// hostName is whether s is a host name: dot-separated labels of 1-63
// letters, digits, hyphens (not first or last) or underscores (which
// real names hold), at most 253 long, an absolute name's trailing dot
// allowed. A last label of digits alone is refused: that is an IPv4
// address mistyped (300.0.0.1, 10.0.1, 010.0.0.1), not a name.
func hostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// quote is s for a message: quoted, its non-printing bytes escaped, and
// cut at 80 bytes.
func quote(s string) string {
	if len(s) > 80 {
		return strconv.Quote(s[:80]) + "..."
	}
	return strconv.Quote(s)
}
