package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// tmpfsMagic is tmpfs's f_type (linux/magic.h).
const tmpfsMagic = 0x01021994

// s3Store is where the OSD's block file lives: a directory of the lab's
// own inside S3Dir, removed with the lab.
func s3Store(o Options) string {
	return filepath.Join(o.S3Dir, strings.TrimSuffix(o.Prefix, "-")+"-s3")
}

// checkS3Dir refuses, before anything is built, a --s3-dir that
// BlueStore cannot use (tmpfs has no O_DIRECT) or whose file system
// cannot hold --s3-capacity: the sparse file would take its space as
// objects came, and the OSD would die of ENOSPC halfway.
func checkS3Dir(o Options) error {
	at := o.S3Dir
	for {
		_, err := os.Stat(at)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || at == "/" {
			return fmt.Errorf("--s3-dir %s: %w", o.S3Dir, err)
		}
		at = filepath.Dir(at)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(at, &sfs); err != nil {
		return fmt.Errorf("--s3-dir %s: %w", o.S3Dir, err)
	}
	if sfs.Type == tmpfsMagic {
		return fmt.Errorf("--s3-dir %s is on tmpfs, which BlueStore cannot use (no O_DIRECT), and which would hold the objects in memory: give a directory on a disk, such as %s", o.S3Dir, DefaultS3Dir)
	}
	free := int64(sfs.Bavail) * sfs.Bsize
	if free < o.S3Capacity {
		return fmt.Errorf("--s3-capacity %s: the file system of --s3-dir %s has %s free; give a smaller --s3-capacity or another --s3-dir",
			gib(o.S3Capacity), o.S3Dir, gib(free))
	}
	return nil
}

// gib writes a byte count in GiB, or MiB below one GiB.
func gib(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}
