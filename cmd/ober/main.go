// Command ober is the CLI of the ober S3 ingress controller: the daemon
// (ober run) and the commands operators drive a node with, from bootstrap
// to uninstall. The commands parse flags and call control/ and loader/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at link time:
//
//	go build -ldflags "-X main.version=v0.1.0" ./cmd/ober
//
// It is the only package-level variable, and nothing writes it at run time.
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd(version, stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	var status exitStatus
	switch {
	case errors.As(err, &status):
		return int(status)
	case err != nil:
		fmt.Fprintf(stderr, "ober: %s\n", err)
		return 1
	}
	return 0
}

// exitStatus ends a command that has printed everything it had to say
// with a status other than 0 and 1, such as 'upgrade --check' telling a
// script that an update is available, without os.Exit skipping the
// deferred clean-ups on the way out.
type exitStatus int

func (s exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(s)) }
