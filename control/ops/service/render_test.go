package service

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRenderJSONRecord(t *testing.T) {
	line := `{"time":"2026-11-21T10:00:00.123456789Z","level":"INFO","msg":"session established","part":"bgp","peer":"10.0.0.1","asn":65000,"up":true,"bfd":{"state":"up","ms":300},"caps":["mp","rr"],"note":"two words","empty":""}`
	got, ok := Render(line)
	require.True(t, ok)
	require.Equal(t, `2026-11-21T10:00:00.123Z INFO  [bgp] session established peer=10.0.0.1 asn=65000 up=true bfd.state=up bfd.ms=300 caps=["mp","rr"] note="two words" empty=""`, got)

	got, ok = Render(`{"time":"2026-11-21T11:00:00+01:00","level":"ERROR","msg":"reload refused","err":"config x: vips[0]: bad"}`)
	require.True(t, ok)
	require.Equal(t, `2026-11-21T11:00:00.000+01:00 ERROR reload refused err="config x: vips[0]: bad"`, got)

	for _, plain := range []string{"ober: config /etc/ober/ober.yaml: vips[0]: bad", `{"not":"a record"}`, "{broken json", ""} {
		got, ok := Render(plain)
		require.False(t, ok, plain)
		require.Equal(t, plain, got, "a line that is not a record passes unchanged")
	}
}

func TestFilterKeepsComponents(t *testing.T) {
	lines := map[string]string{
		"haproxy": `{"level":"INFO","msg":"a","part":"haproxy"}`,
		"bgp":     `{"level":"INFO","msg":"b","part":"bgp"}`,
		"handoff": `{"level":"INFO","msg":"c","part":"handoff"}`,
		"vrrp":    `{"level":"INFO","msg":"d","part":"vrrp"}`,
		"daemon":  `{"level":"INFO","msg":"e"}`,
		"plain":   `[WARNING] haproxy said something`,
	}
	want := map[Filter][]string{
		FilterAll:  {"haproxy", "bgp", "handoff", "vrrp", "daemon", "plain"},
		FilterHTTP: {"haproxy"},
		FilterBGP:  {"bgp", "handoff"},
		FilterHA:   {"vrrp"},
	}
	for f, names := range want {
		var kept []string
		for _, name := range []string{"haproxy", "bgp", "handoff", "vrrp", "daemon", "plain"} {
			if _, ok := f.Keep(lines[name]); ok {
				kept = append(kept, name)
			}
		}
		require.Equal(t, names, kept, "--service %s", f)
	}
	s, ok := FilterAll.Keep(lines["plain"])
	require.True(t, ok)
	require.Equal(t, lines["plain"], s)
}

func TestParseFlags(t *testing.T) {
	_, err := ParseFilter("dns")
	require.EqualError(t, err, `--service "dns": want http, bgp, ha or all`)
	f, err := ParseFilter("bgp")
	require.NoError(t, err)
	require.Equal(t, FilterBGP, f)
	for _, bad := range []string{"-1", "ten", "1.5", ""} {
		_, err := ParseLines(bad)
		require.EqualError(t, err, `-n "`+bad+`": want a number of lines, 0 or more, or all`)
	}
	n, err := ParseLines("all")
	require.NoError(t, err)
	require.Equal(t, -1, n)
	n, err = ParseLines("0")
	require.NoError(t, err)
	require.Equal(t, 0, n)
}

func TestLastError(t *testing.T) {
	log := `{"time":"2026-11-21T10:00:00Z","level":"INFO","msg":"haproxy found"}
ober: config /etc/ober/ober.yaml: vips[0]: "10.0.0.300" is not an IP address
config /etc/ober/ober.yaml: services[0].port: 0: must be 1-65535
config /etc/ober/ober.yaml: backends: required
`
	require.Equal(t, `config /etc/ober/ober.yaml: vips[0]: "10.0.0.300" is not an IP address (and 2 more problems)`, lastError([]byte(log)))
	require.Equal(t, "api.listen: in use", lastError([]byte("{\"level\":\"INFO\",\"msg\":\"x\"}\nober: api.listen: in use\n")))
	require.Equal(t, "start instances: boom", lastError([]byte(`{"level":"ERROR","msg":"start instances","err":"boom"}`+"\n"+`{"level":"INFO","msg":"bye"}`+"\n")))
	require.Equal(t, "panic: something", lastError([]byte("panic: something\n\n")))
	require.Equal(t, "", lastError(nil))
}

func TestOneLine(t *testing.T) {
	require.Equal(t, "a", oneLine(errors.New("a\n")))
	require.Equal(t, "a (and 1 more problem)", oneLine(errors.New("a\nb")))
	require.Equal(t, "a (and 2 more problems)", oneLine(errors.Join(errors.New("a"), errors.New(""), errors.New("b\nc\n"))))
	require.Equal(t, "", oneLine(errors.New(" \n")))
}
