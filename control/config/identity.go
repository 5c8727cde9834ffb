package config

import (
	"errors"
	"fmt"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/ober-ingress/ober/control/lib/sysuser"
)

// accountRE is a user or group name that useradd accepts on every
// supported distribution and HAProxy takes as one word.
var accountRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}$`)

const accountRule = `not a user or group name (a letter or "_", then letters, digits, ".", "_" or "-"; at most 32)`

// validateHAProxyIdentity checks who the instances run as and where:
// an unprivileged user and group that exist on this machine, and a
// chroot path HAProxy can take. Whether the chroot directory is empty and
// safe is checked when instances start (it may not exist yet).
func (c *Config) validateHAProxyIdentity(p *problems) {
	h := &c.HAProxy
	u := h.User
	if u == "" {
		u = DefaultHAProxyUser
	}
	g := h.Group
	if g == "" {
		g = DefaultHAProxyGroup
	}
	c.checkUser(p, u)
	c.checkGroup(p, g)

	if ch := h.Chroot; ch != "" {
		switch {
		case !filepath.IsAbs(ch):
			p.add("haproxy.chroot", quote(ch), "must be an absolute path")
		case strings.ContainsFunc(ch, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune(`"'\#`, r) }):
			p.add("haproxy.chroot", quote(ch), `must not contain blanks, quotes, "\" or "#" (HAProxy reads it as one word)`)
		case filepath.Clean(ch) == "/":
			p.add("haproxy.chroot", quote(ch), "must not be /: the instances' root must be an empty directory")
		}
	}
}

func (c *Config) checkUser(p *problems, name string) {
	const key = "haproxy.user"
	switch {
	case !accountRE.MatchString(name):
		p.add(key, quote(name), accountRule)
		return
	case name == "root":
		p.add(key, quote(name), "HAProxy must not run as root: use an unprivileged system user such as %s", DefaultHAProxyUser)
		return
	}
	acc, err := c.lookupUser(name)
	if err != nil {
		if errors.As(err, new(user.UnknownUserError)) {
			p.add(key, quote(name), "no such user on this machine: %s", createHint(name, sysuser.Hint(name)))
			return
		}
		p.add(key, quote(name), "cannot look the user up: %v", err)
		return
	}
	if acc.Uid == "0" {
		p.add(key, quote(name), "has uid 0: HAProxy must not run as root")
	}
}

func (c *Config) checkGroup(p *problems, name string) {
	const key = "haproxy.group"
	switch {
	case !accountRE.MatchString(name):
		p.add(key, quote(name), accountRule)
		return
	case name == "root":
		p.add(key, quote(name), "HAProxy must not run with the root group: use an unprivileged system group such as %s", DefaultHAProxyGroup)
		return
	}
	grp, err := c.lookupGroup(name)
	if err != nil {
		if errors.As(err, new(user.UnknownGroupError)) {
			p.add(key, quote(name), "no such group on this machine: %s", createHint(name, strings.Join(sysuser.GroupAdd(name), " ")))
			return
		}
		p.add(key, quote(name), "cannot look the group up: %v", err)
		return
	}
	if grp.Gid == "0" {
		p.add(key, quote(name), "has gid 0: HAProxy must not run with the root group")
	}
}

// createHint says how to create a missing account: bootstrap for ober's
// own, else the command.
func createHint(name, cmd string) string {
	if name == DefaultHAProxyUser {
		return fmt.Sprintf("`ober bootstrap` creates it (or run `%s`)", cmd)
	}
	return fmt.Sprintf("create it with `%s`", cmd)
}
