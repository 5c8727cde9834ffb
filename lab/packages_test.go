package lab

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakePath makes a PATH holding every program the lab runs but birdc,
// and an apt-get that records its arguments and, on install, provides
// birdc (or fails, with fail set).
func fakePath(t *testing.T, fail bool) (dir, log string) {
	dir = t.TempDir()
	for bin := range tools() {
		if bin != "birdc" {
			require.NoError(t, os.Symlink("/bin/true", filepath.Join(dir, bin)))
		}
	}
	log = filepath.Join(dir, "apt.log")
	script := "#!/bin/sh\necho \"$@\" >> " + log + "\n"
	if fail {
		script += "echo 'E: Unable to locate package bird2' >&2\nexit 100\n"
	} else {
		script += "[ \"$1\" = install ] && /bin/ln -s /bin/true " + filepath.Join(dir, "birdc") + "\nexit 0\n"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "apt-get"), []byte(script), 0o755))
	t.Setenv("PATH", dir)
	return dir, log
}

// A missing program is an error naming its package and the command
// without --install; with it, apt-get installs exactly that package.
func TestEnsurePackages(t *testing.T) {
	_, log := fakePath(t, false)
	require.Equal(t, []string{"bird2"}, MissingPackages(haBGP))

	var out bytes.Buffer
	err := ensurePackages(context.Background(), haBGP, false, &out)
	require.EqualError(t, err, "the lab needs Debian packages bird2: run `apt-get install -y --no-install-recommends bird2` (or `ober lab up` without --no-install)")
	_, statErr := os.Stat(log)
	require.True(t, os.IsNotExist(statErr), "apt-get ran without --install")

	require.NoError(t, ensurePackages(context.Background(), haBGP, true, &out))
	require.Contains(t, out.String(), "installing missing Debian packages: bird2")
	calls, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, "update -q\ninstall -y -q --no-install-recommends bird2\n", string(calls))
	require.Empty(t, MissingPackages(haBGP))

	// Nothing missing: apt-get is not run again.
	require.NoError(t, ensurePackages(context.Background(), haBGP, true, &out))
	calls, _ = os.ReadFile(log)
	require.Equal(t, 2, strings.Count(string(calls), "\n"))
}

func TestEnsurePackagesAptFails(t *testing.T) {
	fakePath(t, true)
	var out bytes.Buffer
	err := ensurePackages(context.Background(), haBGP, true, &out)
	require.ErrorContains(t, err, "apt-get update -q: exit status 100")
	require.Contains(t, out.String(), "Unable to locate package bird2")
}

// The nodes' HAProxy user: there, nothing happens; missing without
// --install, the error names the command that creates it.
func TestEnsureHAProxyUser(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, ensureHAProxyUser(context.Background(), "root", false, &out))
	require.Empty(t, out.String())
	err := ensureHAProxyUser(context.Background(), "ober-lab-nosuch", false, &out)
	require.EqualError(t, err, "the nodes' HAProxy instances run as the system user ober-lab-nosuch, which this machine lacks: "+
		"run `useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ober-lab-nosuch` (or `ober lab up` without --no-install)")
	require.Empty(t, out.String())
}
