package discovery

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseLines(t *testing.T) {
	in := "\uFEFF# backends of rgw\r\n" +
		"10.0.0.1:80\r\n" +
		"\n" +
		"  10.0.0.2:8080\t5   # a comment\n" +
		"[2001:DB8::0:1]:443 0 2\n" +
		"Backend-1.Example.COM:80\t\t256 1\n" +
		"[::ffff:10.0.0.9]:80\n" +
		"rgw_3.internal.:7480"
	got, err := ParseLines(strings.NewReader(in))
	require.NoError(t, err)
	require.Empty(t, got.Problems)
	require.Equal(t, []Backend{
		{Host: "10.0.0.1", Port: 80, Weight: -1},
		{Host: "10.0.0.2", Port: 8080, Weight: 5},
		{Host: "2001:db8::1", Port: 443, Weight: 0, Priority: 2},
		{Host: "backend-1.example.com", Port: 80, Weight: 256, Priority: 1},
		{Host: "10.0.0.9", Port: 80, Weight: -1},
		{Host: "rgw_3.internal.", Port: 7480, Weight: -1},
	}, got.Backends)
}

func TestParseLinesEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# nothing yet\n   \n\t\n"} {
		got, err := ParseLines(strings.NewReader(in))
		require.NoError(t, err, "%q", in)
		require.Empty(t, got.Backends, "%q", in)
		require.Empty(t, got.Problems, "%q", in)
	}
}

// Each bad line is a problem naming its number, its text and why, and
// leaves the good lines standing.
func TestParseLinesBadLines(t *testing.T) {
	for _, tc := range []struct{ line, problem string }{
		{"10.0.0.1:0", `"10.0.0.1:0": port 0`},
		{"10.0.0.1:65536", `"10.0.0.1:65536": port 65536 out of range 1-65535`},
		{"10.0.0.1:99999999999999999999", `port 99999999999999999999 out of range 1-65535`},
		{"10.0.0.1:http", `"10.0.0.1:http": port "http" is not a number`},
		{"10.0.0.1:-1", `port "-1" is not a number`},
		{"10.0.0.1:", `"10.0.0.1:": no port after the colon`},
		{"10.0.0.1:80 70000", `"10.0.0.1:80 70000": weight 70000 above the highest, 256`},
		{"10.0.0.1:80 257", `weight 257 above the highest, 256`},
		{"10.0.0.1:80 99999999999999999999", `weight 99999999999999999999 above the highest, 256`},
		{"10.0.0.1:80 -1", `"10.0.0.1:80 -1": negative weight -1`},
		{"10.0.0.1:80 -99999999999999999999", `negative weight -99999999999999999999`},
		{"10.0.0.1:80 heavy", `weight "heavy" is not a number`},
		{"10.0.0.1:80 1 0", `"10.0.0.1:80 1 0": priority 0; priorities start at 1 (the best)`},
		{"10.0.0.1:80 1 -3", `priority -3; priorities start at 1 (the best)`},
		{"10.0.0.1:80 1 70000", `priority 70000 above the highest, 65535`},
		{"10.0.0.1:80 1 first", `priority "first" is not a number`},
		{"10.0.0.1:80 1 1 extra", `"10.0.0.1:80 1 1 extra": 4 fields, want host:port [weight [priority]]`},
		{"10.0.0.1", `"10.0.0.1": not host:port: missing port`},
		{"10.0.0.1 80", `"10.0.0.1 80": not host:port: missing port`},
		{"2001:db8::1:80", `not host:port: an IPv6 address goes in brackets, as in [2001:db8::1]:80`},
		{"[2001:db8::1:80", `not host:port: missing ']'`},
		{"300.0.0.1:80", `"300.0.0.1:80": host "300.0.0.1" is neither an IP address nor a host name`},
		{"010.0.0.1:80", `host "010.0.0.1" is neither an IP address nor a host name`},
		{"10.0.1:80", `host "10.0.1" is neither an IP address nor a host name`},
		{"-web.example:80", `host "-web.example" is neither an IP address nor a host name`},
		{"web..example:80", `host "web..example" is neither an IP address nor a host name`},
		{"wéb.example:80", `host "wéb.example" is neither an IP address nor a host name`},
		{"web/1:80", `host "web/1" is neither an IP address nor a host name`},
		{strings.Repeat("a", 64) + ".example:80", `is neither an IP address nor a host name`},
		{":80", `host "" is neither an IP address nor a host name`},
		{"10.0.0.1:80\x1b[0m", `"10.0.0.1:80\x1b[0m": control character U+001B`},
		{"10.0.0.1:80\vx", `control character U+000B`},
		{"\xff10.0.0.1:80", `"\xff10.0.0.1:80": not UTF-8 text`},
		{"10.0.0.5:80", `"10.0.0.5:80": duplicate of line 2`},
		{"10.0.0.5:80 3 3", `"10.0.0.5:80 3 3": duplicate of line 2`},
		{"[2001:DB8:0::5]:80", `"[2001:DB8:0::5]:80": duplicate of line 3`},
		{"WEB.example:80", `"WEB.example:80": duplicate of line 4`},
	} {
		in := "10.0.0.9:80\n10.0.0.5:80\n[2001:db8::5]:80\nweb.example:80\n" + tc.line + "\n10.0.0.6:80 # after\n"
		got, err := ParseLines(strings.NewReader(in))
		require.NoError(t, err, tc.line)
		require.Len(t, got.Problems, 1, tc.line)
		require.Contains(t, got.Problems[0], "line 5: ", tc.line)
		require.Contains(t, got.Problems[0], tc.problem, tc.line)
		require.Len(t, got.Backends, 5, "the other lines stand: %q", tc.line)
		require.Equal(t, "10.0.0.6", got.Backends[4].Host, tc.line)
	}
}

func TestParseLinesLongLineQuotedShort(t *testing.T) {
	got, err := ParseLines(strings.NewReader(strings.Repeat("x", 100000) + ":80\n"))
	require.NoError(t, err)
	require.Len(t, got.Problems, 1)
	require.Less(t, len(got.Problems[0]), 300)
	require.Contains(t, got.Problems[0], `line 1: "xxxx`)
}

// A file of many bad lines lists the first problems and counts the
// rest, rather than one message for each.
func TestParseLinesManyProblems(t *testing.T) {
	in := strings.Repeat("10.0.0.1:0\n", 50000) + "10.0.0.1:80\n"
	got, err := ParseLines(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, got.Problems, maxProblems+1)
	require.Equal(t, `line 100: "10.0.0.1:0": port 0`, got.Problems[99])
	require.Equal(t, "and 49900 more lines refused", got.Problems[100])
	require.Equal(t, []Backend{{Host: "10.0.0.1", Port: 80, Weight: -1}}, got.Backends)
}

// countingReader gives endless backend lines and counts what is read.
type countingReader struct{ n int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	const line = "10.0.0.1:80\n"
	for i := range p {
		p[i] = line[(c.n+int64(i))%int64(len(line))]
	}
	c.n += int64(len(p))
	return len(p), nil
}

func TestParseLinesTooLarge(t *testing.T) {
	// A million lines: the case.
	var b strings.Builder
	for i := range 1000000 {
		fmt.Fprintf(&b, "10.%d.%d.%d:80\n", i>>16, i>>8&255, i&255)
	}
	_, err := ParseLines(strings.NewReader(b.String()))
	require.ErrorIs(t, err, ErrTooLarge)
	require.EqualError(t, err, "larger than the bound of 4194304 bytes (4 MiB)")

	// An endless input is read no further than the bound.
	endless := &countingReader{}
	_, err = ParseLines(endless)
	require.ErrorIs(t, err, ErrTooLarge)
	require.LessOrEqual(t, endless.n, int64(MaxBytes+1+32*1024), "read past the bound")

	// The bound itself is allowed.
	exact := strings.Repeat("#", MaxBytes-1) + "\n"
	_, err = ParseLines(strings.NewReader(exact))
	require.NoError(t, err)
}

func TestParseLinesTooMany(t *testing.T) {
	var b strings.Builder
	for i := range MaxBackends + 1 {
		fmt.Fprintf(&b, "10.0.%d.%d:80\n", i>>8, i&255)
	}
	_, err := ParseLines(strings.NewReader(b.String()))
	require.ErrorIs(t, err, ErrTooMany)
	require.EqualError(t, err, "more backends than the bound of 4096: line 4097 names backend 4097")

	// Exactly the bound, with duplicates and bad lines that do not count.
	in := b.String()[:strings.LastIndex(strings.TrimSuffix(b.String(), "\n"), "\n")+1] + "10.0.0.0:80\n10.0.0.0:0\n"
	got, err := ParseLines(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, got.Backends, MaxBackends)
	require.Len(t, got.Problems, 2)
}

func TestParseLinesBinary(t *testing.T) {
	// What `cat /bin/true` might print: an ELF header.
	elf := "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00\x01\x00\x00\x00"
	_, err := ParseLines(strings.NewReader(elf))
	require.ErrorIs(t, err, ErrBinary)
	require.EqualError(t, err, "binary data, not lines of text: a NUL byte at line 1")

	// A file whose end a crash filled with NULs: refused whole, so that
	// the last good backends stay rather than a shrunken list.
	_, err = ParseLines(strings.NewReader("10.0.0.1:80\n10.0.0.2:80\n\x00\x00\x00\x00"))
	require.EqualError(t, err, "binary data, not lines of text: a NUL byte at line 3")

	// Garbage without NUL bytes: judged by its share of non-text bytes.
	garbage := strings.Repeat("\xff\xfe\x01\x9c\x8d\x02ab", 100)
	_, err = ParseLines(strings.NewReader(garbage))
	require.EqualError(t, err, "binary data, not lines of text: 600 of its 800 bytes are control characters or not UTF-8")
}

// Text with a stray byte is not binary: the line with it is a problem,
// the rest stand, and a comment is not checked.
func TestParseLinesStrayByte(t *testing.T) {
	in := "# Caf\xe9 servers (Latin-1)\n10.0.0.1:80\n10.0.0.2:80\x07\n10.0.0.3:80\n"
	got, err := ParseLines(strings.NewReader(in))
	require.NoError(t, err)
	require.Equal(t, []string{`line 3: "10.0.0.2:80\a": control character U+0007`}, got.Problems)
	require.Len(t, got.Backends, 2)
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestParseLinesReadError(t *testing.T) {
	_, err := ParseLines(failingReader{})
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}
