package haproxy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Tune is HAProxy's global buffer and TLS record sizes, for operators who
// measure their own traffic (BENCHMARKS.md, "Per-core efficiency", has
// what each did on the reference machine). A zero field keeps HAProxy's
// default, or the kernel's autotuning for the socket buffers.
type Tune struct {
	// BufSize is tune.bufsize: each of a stream's two buffers, so the
	// most HAProxy reads or writes in one call. Every active stream
	// holds two, so it multiplies the memory of busy connections.
	BufSize int
	// SSLMaxRecord is tune.ssl.maxrecord: the largest TLS record
	// HAProxy writes. Small records let a client decrypt sooner; large
	// ones cost fewer calls per byte.
	SSLMaxRecord int
	// ClientSndBuf and ClientRcvBuf are tune.sndbuf.client and
	// tune.rcvbuf.client, ServerSndBuf and ServerRcvBuf the same towards
	// the backends: fixed socket buffers, which turn the kernel's
	// autotuning off for those sockets.
	ClientSndBuf, ClientRcvBuf, ServerSndBuf, ServerRcvBuf int
}

// The ranges a Tune field may take. A buffer holds at least a whole
// HTTP/2 frame (HAProxy refuses less than 16 KiB with h2 in the ALPN);
// the upper bounds keep a typo from costing the node its memory (a
// stream holds two buffers of BufSize). A TLS record carries at most
// 16 KiB of plaintext.
const (
	MinBufSize      = 16 << 10
	MaxBufSize      = 1 << 20
	MinSSLMaxRecord = 512
	MaxSSLMaxRecord = 16 << 10
	MinSockBuf      = 4 << 10
	MaxSockBuf      = 64 << 20
)

// TuneField is one field of a Tune with its name in ober's configuration
// (haproxy.tune.<Key>) and in HAProxy's.
type TuneField struct {
	Key, Directive string
	Value          *int
	Min, Max       int
}

// Fields lists t's fields in the order they are rendered.
func (t *Tune) Fields() []TuneField {
	return []TuneField{
		{"bufsize", "tune.bufsize", &t.BufSize, MinBufSize, MaxBufSize},
		{"ssl_maxrecord", "tune.ssl.maxrecord", &t.SSLMaxRecord, MinSSLMaxRecord, MaxSSLMaxRecord},
		{"client_sndbuf", "tune.sndbuf.client", &t.ClientSndBuf, MinSockBuf, MaxSockBuf},
		{"client_rcvbuf", "tune.rcvbuf.client", &t.ClientRcvBuf, MinSockBuf, MaxSockBuf},
		{"server_sndbuf", "tune.sndbuf.server", &t.ServerSndBuf, MinSockBuf, MaxSockBuf},
		{"server_rcvbuf", "tune.rcvbuf.server", &t.ServerRcvBuf, MinSockBuf, MaxSockBuf},
	}
}

// Problem is why v is not a value of f, or "" when it is one (0 keeps
// the default).
func (f TuneField) Problem(v int) string {
	if v != 0 && (v < f.Min || v > f.Max) {
		return fmt.Sprintf("must be 0 (%s's default) or between %d and %d bytes", f.Directive, f.Min, f.Max)
	}
	return ""
}

// String lists the fields that are set, as key=value, for logs and
// reports; "" when none is.
func (t Tune) String() string {
	s := ""
	for _, f := range t.Fields() {
		if *f.Value != 0 {
			if s != "" {
				s += ","
			}
			s += fmt.Sprintf("%s=%d", f.Key, *f.Value)
		}
	}
	return s
}

// ParseTune reads key=value pairs separated by commas, with the keys of
// haproxy.tune (bufsize=65536,ssl_maxrecord=4096); an empty s is the zero
// Tune. Every error names the pair.
func ParseTune(s string) (Tune, error) {
	var t Tune
	if strings.TrimSpace(s) == "" {
		return t, nil
	}
	fields := t.Fields()
	seen := map[string]bool{}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return Tune{}, fmt.Errorf("%q: want key=value", pair)
		}
		i := slices.IndexFunc(fields, func(f TuneField) bool { return f.Key == k })
		if i < 0 {
			keys := make([]string, len(fields))
			for j, f := range fields {
				keys[j] = f.Key
			}
			return Tune{}, fmt.Errorf("%q: unknown key %q (known: %s)", pair, k, strings.Join(keys, ", "))
		}
		if seen[k] {
			return Tune{}, fmt.Errorf("%q: %s given twice", pair, k)
		}
		seen[k] = true
		n, err := strconv.Atoi(v)
		if err != nil {
			return Tune{}, fmt.Errorf("%q: %q is not a whole number of bytes", pair, v)
		}
		if msg := fields[i].Problem(n); msg != "" {
			return Tune{}, fmt.Errorf("%q: %s", pair, msg)
		}
		*fields[i].Value = n
	}
	return t, nil
}

// Over is t with the fields that o sets taken from o.
func (t Tune) Over(o Tune) Tune {
	fs, ofs := t.Fields(), o.Fields()
	for i := range fs {
		if *ofs[i].Value != 0 {
			*fs[i].Value = *ofs[i].Value
		}
	}
	return t
}
