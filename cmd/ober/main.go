// Command ober is the CLI of the ober S3 ingress controller. For now its
// commands act directly on the dataplane pinned in bpffs; the daemon that
// drives HAProxy, BGP and VRRP comes later.
package main

import (
	"context"
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
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "ober: %s\n", err)
		return 1
	}
	return 0
}
