package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The instances run as ober-haproxy in <runtime_dir>/empty unless told
// otherwise, and the chroot follows runtime_dir.
func TestHAProxyIdentityDefaults(t *testing.T) {
	c, err := parse([]byte(minimalYAML), nodeA())
	require.NoError(t, err)
	require.Equal(t, "ober-haproxy", c.HAProxy.User)
	require.Equal(t, "ober-haproxy", c.HAProxy.Group)
	require.Equal(t, "/run/ober/empty", c.HAProxy.Chroot)

	c, err = parse([]byte(strings.Replace(minimalYAML, "interfaces: [eth0]", "interfaces: [eth0]\n  runtime_dir: /srv/ober/run", 1)), nodeA())
	require.NoError(t, err)
	require.Equal(t, "/srv/ober/run/empty", c.HAProxy.Chroot)

	c, err = parse([]byte(minimalYAML+"haproxy:\n  user: www\n  group: www\n  chroot: /var/empty\n"), nodeA())
	require.NoError(t, err)
	require.Equal(t, HAProxy{Binary: "haproxy", User: "www", Group: "www", Chroot: "/var/empty", Tune: HAProxyTune{BufSize: DefaultBufSize}}, c.HAProxy)

	// A relative runtime_dir is one error, not a second one for the
	// chroot derived from it.
	_, err = parse([]byte(strings.Replace(minimalYAML, "interfaces: [eth0]", "interfaces: [eth0]\n  runtime_dir: run", 1)), nodeA())
	require.EqualError(t, err, `node.runtime_dir: "run": must be an absolute path`)
}

// Root is refused by name and by id, a missing account names the
// command that creates it, and the chroot must be a path HAProxy can use
// that is not the whole file system.
func TestHAProxyIdentityErrors(t *testing.T) {
	for _, tt := range []struct {
		name, yaml, want string
	}{
		{"root user", "  user: root\n",
			`haproxy.user: "root": HAProxy must not run as root: use an unprivileged system user such as ober-haproxy`},
		{"uid 0", "  user: toor\n",
			`haproxy.user: "toor": has uid 0: HAProxy must not run as root`},
		{"missing user", "  user: s3proxy\n",
			"haproxy.user: \"s3proxy\": no such user on this machine: create it with " +
				"`useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin s3proxy`"},
		{"bad user", "  user: \"-rf\"\n",
			`haproxy.user: "-rf": not a user or group name (a letter or "_", then letters, digits, ".", "_" or "-"; at most 32)`},
		{"root group", "  group: root\n",
			`haproxy.group: "root": HAProxy must not run with the root group: use an unprivileged system group such as ober-haproxy`},
		{"gid 0", "  group: wheel0\n",
			`haproxy.group: "wheel0": has gid 0: HAProxy must not run with the root group`},
		{"missing group", "  group: s3proxy\n",
			"haproxy.group: \"s3proxy\": no such group on this machine: create it with `groupadd --system s3proxy`"},
		{"bad group", "  group: \"a b\"\n",
			`haproxy.group: "a b": not a user or group name (a letter or "_", then letters, digits, ".", "_" or "-"; at most 32)`},
		{"relative chroot", "  chroot: empty\n",
			`haproxy.chroot: "empty": must be an absolute path`},
		{"chroot /", "  chroot: /.\n",
			`haproxy.chroot: "/.": must not be /: the instances' root must be an empty directory`},
		{"chroot with a blank", "  chroot: /var/my empty\n",
			`haproxy.chroot: "/var/my empty": must not contain blanks, quotes, "\" or "#" (HAProxy reads it as one word)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse([]byte(minimalYAML+"haproxy:\n"+tt.yaml), nodeA())
			require.EqualError(t, err, tt.want)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
		})
	}
}

// On a machine without ober-haproxy (not bootstrapped) the default is an
// error that names bootstrap, before and after the defaults are filled
// in; both the user and the group are reported.
func TestHAProxyUserMissing(t *testing.T) {
	env := nodeA()
	bare := accounts{users: map[string]string{"root": "0"}, groups: map[string]string{"root": "0"}}
	env.lookupUser, env.lookupGroup = bare.lookupUser, bare.lookupGroup
	want := "haproxy.user: \"ober-haproxy\": no such user on this machine: `ober bootstrap` creates it " +
		"(or run `useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ober-haproxy`)\n" +
		"haproxy.group: \"ober-haproxy\": no such group on this machine: `ober bootstrap` creates it (or run `groupadd --system ober-haproxy`)"
	_, err := parse([]byte(minimalYAML), env)
	require.EqualError(t, err, want)

	c := baseConfigOn(env)
	require.EqualError(t, c.Validate(), want)
	c.HAProxy = HAProxy{}
	require.EqualError(t, c.Validate(), want, "unset means the default, before ApplyDefaults too")
}
