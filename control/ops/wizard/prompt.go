package wizard

import (
	"bufio"
	"context"
	"errors"
	"io"
)

// lineReader reads answers one line at a time without blocking past the
// context: a terminal read cannot be interrupted, so it runs in its own
// goroutine, which dies with the process when the operator gives up.
type lineReader struct {
	lines chan line
}

type line struct {
	text string
	err  error
}

func newLineReader(r io.Reader) *lineReader {
	l := &lineReader{lines: make(chan line)}
	go func() {
		br := bufio.NewReader(r)
		for {
			s, err := br.ReadString('\n')
			if err != nil && (s == "" || !errors.Is(err, io.EOF)) {
				l.lines <- line{err: err}
				close(l.lines)
				return
			}
			l.lines <- line{text: trimEOL(s)}
		}
	}()
	return l
}

func trimEOL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// errInputEnded is returned when the terminal closes mid-wizard.
var errInputEnded = errors.New("input ended before the last question; nothing written")

func (l *lineReader) read(ctx context.Context) (string, error) {
	select {
	case <-ctx.Done():
		return "", errors.New("interrupted; nothing written")
	case ln, ok := <-l.lines:
		if !ok || ln.err != nil {
			return "", errInputEnded
		}
		return ln.text, nil
	}
}
