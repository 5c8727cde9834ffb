// Package systemd holds ober's unit files. They are embedded so that
// 'ober bootstrap' installs the units this binary was built and tested
// with, and 'ober uninstall' knows exactly which files are its own.
package systemd

import (
	"embed"
	"io/fs"
	"sort"
)

//go:embed *.service
var units embed.FS

// Unit is one file that belongs in /etc/systemd/system.
type Unit struct {
	Name    string
	Content []byte
}

// Units lists the unit files, sorted by name.
func Units() []Unit {
	names, _ := fs.Glob(units, "*")
	sort.Strings(names)
	out := make([]Unit, 0, len(names))
	for _, n := range names {
		b, _ := units.ReadFile(n)
		out = append(out, Unit{Name: n, Content: b})
	}
	return out
}
