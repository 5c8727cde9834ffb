package wizard

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/ober-ingress/ober/control/lib/sysuser"
)

// TestMain gives the machine the user every configuration the wizard
// writes names by default (haproxy.user): on a node `ober bootstrap`
// creates it, and loading a configuration checks that it exists.
func TestMain(m *testing.M) {
	if _, err := sysuser.Ensure(context.Background(), sysuser.HAProxyUser); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
