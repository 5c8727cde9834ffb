package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newVersionCmd(a *app, version string) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print ober's version",
		Example: "  ober version",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(a.out, "ober %s (%s)\n", version, runtime.Version())
			return nil
		},
	}
}
