package main

import (
	"os"

	"golang.org/x/term"
)

// isTerminal reports whether a command's stdin or stdout is a terminal:
// commands ask questions only there, and fail with the flags to give
// anywhere else (scripts, CI, pipes).
func isTerminal(s any) bool {
	f, ok := s.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
