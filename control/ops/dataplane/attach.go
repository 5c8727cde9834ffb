package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/ober-ingress/ober/loader"
)

// AttachResult reports what Attach did.
type AttachResult struct {
	Iface string
	// Mode is the XDP mode the interface runs in.
	Mode loader.XDPMode
	// Created is true when no dataplane was pinned before.
	Created bool
	// AlreadyAttached is true when iface already ran ober's XDP program.
	AlreadyAttached bool
}

// Attach opens the dataplane pinned at opts.Root, creating it when there
// is none, attaches the XDP program to iface and makes sure sk_lookup is
// attached to the calling thread's network namespace. On error it undoes
// what it did, so a failed attach changes nothing: a dataplane it created
// is destroyed again, an XDP link it made is removed.
func Attach(opts loader.Options, iface string, mode loader.XDPMode) (*AttachResult, error) {
	// Checked before opening, which creates pins: a typo must leave no trace.
	if _, err := net.InterfaceByName(iface); err != nil {
		return nil, fmt.Errorf("attach: no interface %q in this network namespace: %w", iface, err)
	}
	d, created, err := openOrCreate(opts)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", iface, err)
	}
	res, err := attach(d, iface, mode)
	d.Close()
	if err != nil {
		if created {
			if derr := loader.Destroy(d.Root()); derr != nil {
				err = errors.Join(err, fmt.Errorf("roll back new dataplane: %w", derr))
			}
		}
		return nil, fmt.Errorf("attach %s: %w", iface, err)
	}
	res.Created = created
	return res, nil
}

func openOrCreate(opts loader.Options) (*loader.Dataplane, bool, error) {
	opts.MustExist = true
	d, err := loader.Open(opts)
	if err == nil {
		return d, false, nil
	}
	if !errors.Is(err, loader.ErrNotPinned) {
		return nil, false, err
	}
	opts.MustExist = false
	d, err = loader.Open(opts)
	return d, err == nil, err
}

// attach attaches XDP before sk_lookup: sk_lookup alone would hand
// connections to instance sockets unpoliced, while XDP alone fails closed
// (nothing listens on the VIPs themselves).
func attach(d *loader.Dataplane, iface string, mode loader.XDPMode) (*AttachResult, error) {
	before, _, err := d.Attachments()
	if err != nil {
		return nil, err
	}
	was := slices.ContainsFunc(before, func(a loader.Attachment) bool { return a.Iface == iface })
	got, err := d.AttachXDP(iface, mode)
	if err != nil {
		return nil, err
	}
	if err := d.AttachSkLookup(); err != nil {
		if !was {
			if derr := d.DetachXDP(iface); derr != nil {
				err = errors.Join(err, fmt.Errorf("roll back xdp: %w", derr))
			}
		}
		return nil, err
	}
	return &AttachResult{Iface: iface, Mode: got, AlreadyAttached: was}, nil
}

// DetachResult reports what Detach did.
type DetachResult struct {
	Iface string
	// SkLookupDetached is true when the last XDP interface went and
	// sk_lookup went with it.
	SkLookupDetached bool
}

// Detach removes the XDP program from iface. When no interface is left
// running it, sk_lookup is detached too: it would only dispatch traffic
// that no longer gets policed. The maps stay pinned.
func Detach(opts loader.Options, iface string) (*DetachResult, error) {
	opts.MapsOnly = true // detaching needs no program: do not load (or upgrade) one
	d, err := loader.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("detach %s: %w", iface, err)
	}
	defer d.Close()
	atts, _, err := d.Attachments()
	if err != nil {
		return nil, fmt.Errorf("detach %s: %w", iface, err)
	}
	if !slices.ContainsFunc(atts, func(a loader.Attachment) bool { return a.Iface == iface }) {
		return nil, fmt.Errorf("detach %s: ober's XDP program is not attached there (attached: %s)", iface, ifaceNames(atts))
	}
	if err := d.DetachXDP(iface); err != nil {
		return nil, fmt.Errorf("detach %s: %w", iface, err)
	}
	res := &DetachResult{Iface: iface}
	atts, sk, err := d.Attachments()
	if err != nil {
		return nil, fmt.Errorf("detach %s: %w", iface, err)
	}
	if len(atts) == 0 && sk {
		if err := d.DetachSkLookup(); err != nil {
			return nil, fmt.Errorf("detach %s: last interface gone: %w", iface, err)
		}
		res.SkLookupDetached = true
	}
	return res, nil
}

func ifaceNames(atts []loader.Attachment) string {
	if len(atts) == 0 {
		return "none"
	}
	names := make([]string, len(atts))
	for i, a := range atts {
		names[i] = a.Iface
	}
	return strings.Join(names, ", ")
}

// DetachAll detaches everything pinned under root and removes the pins,
// maps included. It reports false when nothing was pinned there.
func DetachAll(root string, log *slog.Logger) (bool, error) {
	if root == "" {
		root = loader.DefaultRoot
	}
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err := loader.Destroy(root); err != nil {
		return false, err
	}
	if log != nil {
		log.Info("dataplane destroyed", "root", root)
	}
	return true, nil
}
