package service

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Filter selects log lines by the daemon component that wrote them.
type Filter string

// The filters of `ober logs --service`.
const (
	FilterAll  Filter = "all"
	FilterHTTP Filter = "http" // the HAProxy instances
	FilterBGP  Filter = "bgp"  // the BGP speaker and the drain handoff
	FilterHA   Filter = "ha"   // VRRP (keepalived)
)

// parts maps each filter to the "part" attributes of its loggers.
var parts = map[Filter][]string{
	FilterHTTP: {"haproxy"},
	FilterBGP:  {"bgp", "handoff"},
	FilterHA:   {"vrrp"},
}

// ParseFilter checks a --service value.
func ParseFilter(s string) (Filter, error) {
	switch f := Filter(s); f {
	case FilterAll, FilterHTTP, FilterBGP, FilterHA:
		return f, nil
	}
	return "", fmt.Errorf("--service %q: want http, bgp, ha or all", s)
}

// Keep reports whether line belongs to the filter and returns it
// rendered. Lines that are not the daemon's JSON records pass through
// unchanged with FilterAll and are dropped by the others: they carry no
// component.
func (f Filter) Keep(line string) (string, bool) {
	rec, ok := parseRecord(line)
	if !ok {
		return line, f == FilterAll || f == ""
	}
	if f != FilterAll && f != "" {
		found := false
		for _, p := range parts[f] {
			found = found || rec.part == p
		}
		if !found {
			return "", false
		}
	}
	return rec.String(), true
}

// Render formats one of the daemon's JSON log records for reading:
//
//	2026-11-21T10:00:00.123Z INFO  [bgp] session established peer=10.0.0.1
//
// It returns line unchanged and false when line is not such a record.
func Render(line string) (string, bool) {
	rec, ok := parseRecord(line)
	if !ok {
		return line, false
	}
	return rec.String(), true
}

// record is one slog JSON line with its attributes in written order.
type record struct {
	time, level, msg, part string
	attrs                  []attr
}

type attr struct{ key, value string }

// parseRecord decodes a JSON object with a "msg"; slog's groups become
// dotted keys.
func parseRecord(line string) (record, bool) {
	s := strings.TrimSpace(line)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return record{}, false
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var rec record
	hasMsg := false
	if err := walkObject(dec, "", func(key string, v any) {
		str, isStr := v.(string)
		switch {
		case key == "time" && isStr:
			rec.time = str
		case key == "level" && isStr:
			rec.level = str
		case key == "msg" && isStr:
			rec.msg, hasMsg = str, true
		case key == "part" && isStr:
			rec.part = str
		default:
			rec.attrs = append(rec.attrs, attr{key, formatValue(v)})
		}
	}); err != nil || !hasMsg {
		return record{}, false
	}
	return rec, true
}

// walkObject reads one JSON object from dec and calls fn for every leaf,
// nested objects flattened as prefix.key.
func walkObject(dec *json.Decoder, prefix string, fn func(string, any)) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("not an object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if prefix != "" {
			key = prefix + "." + key
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
			sub := json.NewDecoder(bytes.NewReader(t))
			sub.UseNumber()
			if err := walkObject(sub, key, fn); err != nil {
				return err
			}
			continue
		}
		var v any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return err
		}
		if _, isList := v.([]any); isList {
			v = json.RawMessage(raw)
		}
		fn(key, v)
	}
	_, err = dec.Token() // the closing brace
	return err
}

// formatValue writes a value as key=value wants it: strings bare unless
// they need quotes, numbers and booleans as written, lists as JSON.
func formatValue(v any) string {
	switch x := v.(type) {
	case string:
		if needsQuote(x) {
			return strconv.Quote(x)
		}
		return x
	case nil:
		return "null"
	case json.RawMessage:
		var b bytes.Buffer
		if json.Compact(&b, x) == nil {
			return b.String()
		}
		return string(x)
	default:
		return fmt.Sprint(x)
	}
}

// needsQuote: empty, or a character that would make key=value ambiguous
// or unreadable.
func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for _, r := range s {
		if r == ' ' || r == '"' || r == '=' || r == '\\' || !strconv.IsPrint(r) {
			return true
		}
	}
	return false
}

// String is the record on one line.
func (r record) String() string {
	var b strings.Builder
	if r.time != "" {
		if t, err := time.Parse(time.RFC3339Nano, r.time); err == nil {
			b.WriteString(t.Format("2006-01-02T15:04:05.000Z07:00"))
		} else {
			b.WriteString(r.time)
		}
		b.WriteByte(' ')
	}
	if r.level != "" {
		fmt.Fprintf(&b, "%-5s ", r.level)
	}
	if r.part != "" {
		fmt.Fprintf(&b, "[%s] ", r.part)
	}
	b.WriteString(r.msg)
	for _, a := range r.attrs {
		fmt.Fprintf(&b, " %s=%s", a.key, a.value)
	}
	return b.String()
}
