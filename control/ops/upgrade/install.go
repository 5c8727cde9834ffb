package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/control/lib/atomicfile"
)

// PreviousSuffix names the copy of the replaced binary kept for rollback.
const PreviousSuffix = ".previous"

// maxBinaryBytes bounds a download: ober is a few tens of megabytes, and
// a runaway answer must not fill the disk the binary lives on.
const maxBinaryBytes = 512 << 20

// InstallOptions say what to install where.
type InstallOptions struct {
	Client    *http.Client
	UserAgent string
	Release   *Release
	// Asset is the binary's asset name (AssetName).
	Asset string
	// Binary is the installed ober to replace. A symbolic link is
	// followed: the file it points to is replaced, the link stays.
	Binary string
	// VersionTimeout bounds `<new> version`; default 30s.
	VersionTimeout time.Duration
}

// Staged is a downloaded, verified release binary waiting next to the
// installed one. Commit puts it in place; Discard removes it.
type Staged struct {
	// Binary is the file Commit replaces (symbolic links resolved).
	Binary string
	// Path is the staged file, in Binary's directory.
	Path string
	// VersionLine is what the staged binary's `version` printed first.
	VersionLine string
	SHA256      string
}

// Installed is the outcome of a Commit.
type Installed struct {
	// Binary is the replaced file (symbolic links resolved).
	Binary string
	// Previous holds the binary that was there before.
	Previous string
}

// Stage downloads the release's binary next to o.Binary, checks it
// against SHA256SUMS and runs it with `version` to see that it executes
// on this machine and is the release it claims to be. o.Binary is never
// touched; on an error nothing is left behind.
func Stage(ctx context.Context, o InstallOptions) (*Staged, error) {
	bin, err := filepath.EvalSymlinks(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("installed binary %s: %w", o.Binary, err)
	}
	st, err := os.Stat(bin)
	if err != nil {
		return nil, fmt.Errorf("installed binary %s: %w", bin, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("installed binary %s is not a regular file", bin)
	}
	assetURL, err := o.Release.Asset(o.Asset)
	if err != nil {
		return nil, err
	}
	want, err := o.Release.FetchSums(ctx, o.Client, o.UserAgent, o.Asset)
	if err != nil {
		return nil, err
	}

	// The download lives in the binary's directory so that the final
	// rename stays on one filesystem and is atomic.
	tmp, err := atomicfile.CreateTemp(bin, st.Mode().Perm()|0o111)
	if err != nil {
		return nil, fmt.Errorf("download next to %s: %w", bin, errors.Unwrap(err))
	}
	tmpName := tmp.Name()
	kept := false
	defer func() {
		if !kept {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	got, err := download(ctx, o.Client, o.UserAgent, assetURL, tmp)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(got, want) {
		return nil, fmt.Errorf("checksum mismatch for %s from %s: sha256 %x, %s says %x; %s left unchanged",
			o.Asset, assetURL, got, SumsAsset, want, bin)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("write %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", tmpName, err)
	}
	timeout := o.VersionTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	line, err := checkVersion(ctx, tmpName, o.Release.Tag, timeout)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w; %s left unchanged", o.Asset, o.Release.Tag, err, bin)
	}
	kept = true
	return &Staged{Binary: bin, Path: tmpName, VersionLine: line, SHA256: hex.EncodeToString(got)}, nil
}

// Discard removes the staged file; after a Commit there is none.
func (s *Staged) Discard() {
	os.Remove(s.Path)
}

// Commit keeps the installed binary as <binary>.previous and renames the
// staged one over it. A failure leaves the installed binary in place.
func (s *Staged) Commit() (*Installed, error) {
	prev := s.Binary + PreviousSuffix
	if err := keepPrevious(s.Binary, prev); err != nil {
		return nil, err
	}
	// Until the directory is synced (Commit does) a crash brings back the
	// old binary, which is still a working one.
	if err := atomicfile.Commit(s.Path, s.Binary); err != nil {
		return nil, fmt.Errorf("%w (it is unchanged)", err)
	}
	return &Installed{Binary: s.Binary, Previous: prev}, nil
}

// download copies u into w and returns the SHA-256 of what it wrote.
func download(ctx context.Context, c *http.Client, userAgent, u string, w io.Writer) ([]byte, error) {
	body, err := get(ctx, c, u, userAgent, "application/octet-stream")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(body, maxBinaryBytes+1))
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", u, err)
	}
	if n > maxBinaryBytes {
		return nil, fmt.Errorf("download %s: larger than %d MiB, not an ober binary", u, maxBinaryBytes>>20)
	}
	return h.Sum(nil), nil
}

// checkVersion runs `bin version` and requires its first line to be
// "ober <tag> ...": the binary runs here (right architecture, not
// truncated) and is the release it was downloaded as.
func checkVersion(ctx context.Context, bin, tag string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out []byte
	var err error
	// A file just written can be reported busy (ETXTBSY) while a
	// concurrently forked child still holds a copy of the write
	// descriptor; that passes within moments.
	for range 20 {
		out, err = exec.CommandContext(ctx, bin, "version").CombinedOutput()
		if !errors.Is(err, syscall.ETXTBSY) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		if first != "" {
			return "", fmt.Errorf("`version` failed: %w: %s", err, first)
		}
		return "", fmt.Errorf("`version` failed: %w", err)
	}
	if !strings.HasPrefix(first+" ", "ober "+tag+" ") {
		return "", fmt.Errorf("`version` says %q, want \"ober %s ...\"", first, tag)
	}
	return first, nil
}

// keepPrevious makes prev a copy of bin: a hard link when the
// filesystem allows (the very inode, instantly), else a copy written
// aside and renamed into place.
func keepPrevious(bin, prev string) error {
	if err := os.Remove(prev); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the older %s: %w", prev, err)
	}
	if err := os.Link(bin, prev); err == nil {
		return nil
	}
	src, err := os.Open(bin)
	if err != nil {
		return fmt.Errorf("keep %s as %s: %w", bin, prev, err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("keep %s as %s: %w", bin, prev, err)
	}
	tmp, err := atomicfile.CreateTemp(prev, st.Mode().Perm())
	if err != nil {
		return fmt.Errorf("keep %s as %s: %w", bin, prev, errors.Unwrap(err))
	}
	w := bufio.NewWriter(tmp)
	_, err = io.Copy(w, src)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = atomicfile.Commit(tmp.Name(), prev)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("keep %s as %s: %w", bin, prev, err)
	}
	return nil
}
