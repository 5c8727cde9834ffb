package service

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// lastError finds, in what a failed daemon wrote, the message that says
// why: main prints the error that ended `ober run` as "ober: <error>",
// possibly followed by more problems one per line; failing that, the last
// ERROR record of its JSON log; failing that, its last line.
func lastError(log []byte) string {
	lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		rest, ok := strings.CutPrefix(lines[i], "ober: ")
		if !ok {
			continue
		}
		more := 0
		for _, l := range lines[i+1:] {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "{") {
				more++
			}
		}
		switch more {
		case 0:
			return rest
		case 1:
			return rest + " (and 1 more problem)"
		default:
			return fmt.Sprintf("%s (and %d more problems)", rest, more)
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		var rec struct {
			Level, Msg, Err string
		}
		if json.Unmarshal([]byte(lines[i]), &rec) == nil && rec.Level == "ERROR" {
			if rec.Err != "" {
				return rec.Msg + ": " + rec.Err
			}
			return rec.Msg
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			if e, ok := Render(l); ok {
				return e
			}
			return l
		}
	}
	return ""
}

// readFrom returns what path holds after offset, at most its last 64 KiB.
func readFrom(path string, offset int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	const max = 64 << 10
	if st.Size() < offset {
		offset = 0 // truncated meanwhile
	}
	if st.Size()-offset > max {
		offset = st.Size() - max
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(io.NewSectionReader(f, offset, st.Size()-offset))
	return b.Bytes()
}
