package sysuser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFind(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
	uid, gid, ok, err := FindUser(root, "ober-haproxy")
	require.NoError(t, err, "no /etc/passwd: nobody")
	require.False(t, ok)
	require.Zero(t, uid+gid)

	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/passwd"),
		[]byte("root:x:0:0:root:/root:/bin/bash\nober-haproxy-x:x:5:5::/:/bin/sh\nober-haproxy:x:998:995:ober HAProxy instances:/nonexistent:/usr/sbin/nologin\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nober-haproxy:x:995:\nbad:x:x:\n"), 0o644))
	uid, gid, ok, err = FindUser(root, "ober-haproxy")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []int{998, 995}, []int{uid, gid})
	_, _, ok, err = FindUser(root, "ober")
	require.NoError(t, err)
	require.False(t, ok, "a prefix is no match")
	g, ok, err := FindGroup(root, "ober-haproxy")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 995, g)
	_, _, err = FindGroup(root, "bad")
	require.ErrorContains(t, err, "/etc/group: gid of bad")
}

// Ensure creates a missing system user and its group, once, however
// many callers race for it; afterwards it finds them and creates
// nothing. It runs on a throwaway name, removed at the end.
func TestEnsure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test creates a system user: run it as root (`sudo make test`)")
	}
	name := fmt.Sprintf("ober-t%d", os.Getpid())
	require.False(t, Exists(name))
	t.Cleanup(func() {
		if _, err := user.Lookup(name); err == nil {
			out, err := exec.Command("userdel", name).CombinedOutput()
			require.NoError(t, err, "%s", out)
		}
		if _, err := user.LookupGroup(name); err == nil {
			out, err := exec.Command("groupdel", name).CombinedOutput()
			require.NoError(t, err, "%s", out)
		}
	})

	var wg sync.WaitGroup
	created := make([]bool, 4)
	errs := make([]error, 4)
	for i := range created {
		wg.Go(func() { created[i], errs[i] = Ensure(context.Background(), name) })
	}
	wg.Wait()
	n := 0
	for i := range created {
		require.NoError(t, errs[i])
		if created[i] {
			n++
		}
	}
	require.Equal(t, 1, n, "exactly one caller created it")
	u, err := user.Lookup(name)
	require.NoError(t, err)
	require.NotEqual(t, "0", u.Uid)
	g, err := user.LookupGroup(name)
	require.NoError(t, err)
	require.Equal(t, g.Gid, u.Gid, "its primary group is its own")
	require.Equal(t, "/nonexistent", u.HomeDir)
	_, err = os.Stat("/nonexistent")
	require.ErrorIs(t, err, os.ErrNotExist, "no home was made")
	uid, _, ok, err := FindUser("/", name)
	require.NoError(t, err)
	require.True(t, ok)
	require.Less(t, uid, 1000, "a system uid")

	again, err := Ensure(context.Background(), name)
	require.NoError(t, err)
	require.False(t, again)
}
