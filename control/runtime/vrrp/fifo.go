package vrrp

import (
	"fmt"
	"strconv"
	"strings"
)

// Event is one line keepalived writes to its vrrp_notify_fifo, e.g.
// `INSTANCE "ober_51" MASTER 200`.
type Event struct {
	Kind     string // "INSTANCE" or "GROUP"
	Name     string
	State    string // MASTER, BACKUP, FAULT, STOP, DELETED, MASTER_RX_LOWER_PRI
	Priority int    // -1 when the line has none (sync groups)
}

// ParseFIFOLine parses one notify FIFO line (without its newline).
func ParseFIFOLine(line string) (Event, error) {
	ev := Event{Priority: -1}
	kind, rest, ok := strings.Cut(line, " ")
	if !ok || (kind != "INSTANCE" && kind != "GROUP") {
		return Event{}, fmt.Errorf("notify fifo line %q: want INSTANCE or GROUP first", line)
	}
	ev.Kind = kind
	if !strings.HasPrefix(rest, `"`) {
		return Event{}, fmt.Errorf("notify fifo line %q: want a quoted name after %s", line, kind)
	}
	name, rest, ok := strings.Cut(rest[1:], `"`)
	if !ok || name == "" {
		return Event{}, fmt.Errorf("notify fifo line %q: unterminated or empty name", line)
	}
	ev.Name = name
	fields := strings.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 || !strings.HasPrefix(rest, " ") {
		return Event{}, fmt.Errorf("notify fifo line %q: want a state and an optional priority after the name", line)
	}
	switch fields[0] {
	case "MASTER", "BACKUP", "FAULT", "STOP", "DELETED", "MASTER_RX_LOWER_PRI":
		ev.State = fields[0]
	default:
		return Event{}, fmt.Errorf("notify fifo line %q: unknown state %q", line, fields[0])
	}
	if len(fields) == 2 {
		p, err := strconv.Atoi(fields[1])
		if err != nil || p < 0 || p > 255 {
			return Event{}, fmt.Errorf("notify fifo line %q: priority %q: want 0-255", line, fields[1])
		}
		ev.Priority = p
	}
	return ev, nil
}
