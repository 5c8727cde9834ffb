package systemd

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
)

// installedBinary is where `ober bootstrap` puts ober, and so where the
// units run it from.
const installedBinary = "/usr/local/sbin/ober"

// TestUnitsVerify has systemd check every unit as it would load it: no
// unknown or misspelt directive, no bad value, every command executable.
// verify insists that ExecStart's binary exists, so the units are checked
// as copies whose ober path points at a stand-in executable.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install it with `apt-get install systemd`")
	}
	dir := t.TempDir()
	stand := filepath.Join(dir, "bin", "ober")
	require.NoError(t, os.MkdirAll(filepath.Dir(stand), 0o755))
	require.NoError(t, os.WriteFile(stand, []byte("#!/bin/sh\nexit 0\n"), 0o755))
	units := Units()
	require.NotEmpty(t, units)
	for _, u := range units {
		t.Run(u.Name, func(t *testing.T) {
			text := strings.ReplaceAll(string(u.Content), installedBinary, stand)
			path := filepath.Join(dir, u.Name)
			require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
			var out bytes.Buffer
			cmd := exec.Command(analyze, "verify", "--man=no", path)
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			require.NoError(t, err, "systemd-analyze verify %s:\n%s", u.Name, out.String())
			// Unknown directives are only warned about, with success.
			require.Empty(t, strings.TrimSpace(out.String()), "systemd-analyze verify %s warns", u.Name)
		})
	}
}

// unitFile is a parsed unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, b []byte) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			require.True(t, ok, "not a directive: %q", line)
			require.NotEmpty(t, section, "directive outside a section: %q", line)
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// one returns the single value of key in section.
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	require.Len(t, vs, 1, "[%s] %s", section, key)
	return vs[0]
}

func (u unitFile) duration(t *testing.T, section, key string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(u.one(t, section, key))
	require.NoError(t, err, "[%s] %s", section, key)
	return d
}

func unit(t *testing.T, name string) unitFile {
	t.Helper()
	for _, u := range Units() {
		if u.Name == name {
			return parseUnit(t, u.Content)
		}
	}
	t.Fatalf("no unit %s among %v", name, Units())
	return nil
}

// TestOberService holds ober.service to what the daemon relies on.
func TestOberService(t *testing.T) {
	u := unit(t, "ober.service")
	s := "Service"
	require.Equal(t, "notify", u.one(t, s, "Type"), "ober reports readiness with sd_notify")
	require.Equal(t, "main", u.one(t, s, "NotifyAccess"), "only ober, not HAProxy or keepalived, speaks for the service")
	require.Equal(t, installedBinary+" run", u.one(t, s, "ExecStart"))
	require.Equal(t, installedBinary+" run --check", u.one(t, s, "ExecStartPre"), "a bad configuration never replaces a running node")
	require.Equal(t, "/bin/kill -HUP $MAINPID", u.one(t, s, "ExecReload"), "ober reloads on SIGHUP")

	// The restart handover contract: exit 75 means "start me again".
	require.Equal(t, strconv.Itoa(api.ExitRestart), u.one(t, s, "RestartForceExitStatus"))
	require.Equal(t, "on-failure", u.one(t, s, "Restart"))
	require.Equal(t, "process", u.one(t, s, "KillMode"), "the HAProxy instances must outlive a handover")
	require.Equal(t, "yes", u.one(t, s, "RuntimeDirectoryPreserve"), "the instances' pid files and the handover mark live in /run/ober")
	require.Contains(t, strings.Fields(u.one(t, s, "RuntimeDirectory")), "ober")

	wd := u.duration(t, s, "WatchdogSec")
	require.GreaterOrEqual(t, wd, 20*time.Second, "the main loop is busy for a whole reload (instances may take 10s to start)")
	require.Greater(t, u.duration(t, s, "TimeoutStopSec"), config.DefaultDrain+10*time.Second,
		"a stop withdraws, waits for the routers and drains for timeouts.drain")
	nofile, err := strconv.Atoi(u.one(t, s, "LimitNOFILE"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, nofile, 1<<20)

	caps := strings.Fields(u.one(t, s, "CapabilityBoundingSet"))
	for _, c := range []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_NET_RAW",
		"CAP_NET_BIND_SERVICE", "CAP_SYS_RESOURCE", "CAP_SYS_NICE", "CAP_KILL",
		// HAProxy drops to haproxy.user in haproxy.chroot by itself.
		"CAP_SETUID", "CAP_SETGID", "CAP_SYS_CHROOT"} {
		require.Contains(t, caps, c)
	}
	for _, c := range []string{"CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE", "CAP_SETPCAP"} {
		require.NotContains(t, caps, c, "nothing ober runs needs it")
	}
	require.Empty(t, u[s]["AmbientCapabilities"], "ober is root: ambient capabilities would only leak into HAProxy and keepalived")
	require.Equal(t, "0077", u.one(t, s, "UMask"))
	denied := strings.Fields(strings.TrimPrefix(u.one(t, s, "SystemCallFilter"), "~"))
	for _, g := range []string{"@mount", "@privileged", "@resources"} {
		require.NotContains(t, denied, g, "HAProxy's chroot and setuid, bpf(), setrlimit and sched_setaffinity are in it")
	}
	require.Equal(t, "strict", u.one(t, s, "ProtectSystem"))
	rw := strings.Fields(u.one(t, s, "ReadWritePaths"))
	for _, p := range []string{config.DefaultRuntimeDir, config.DefaultStateDir, "/var/log/ober", "/sys/fs/bpf"} {
		require.Contains(t, rw, p)
	}
	fams := strings.Fields(u.one(t, s, "RestrictAddressFamilies"))
	for _, f := range []string{"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"} {
		require.Contains(t, fams, f, "netlink for XDP and addresses, packet sockets for keepalived's ARP")
	}
	for _, k := range []string{"NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelModules",
		"ProtectControlGroups", "RestrictRealtime", "LockPersonality", "PrivateDevices", "ProtectClock", "PrivateMounts"} {
		require.Equal(t, "yes", u.one(t, s, k), k)
	}
	require.Equal(t, "native", u.one(t, s, "SystemCallArchitectures"))
	require.Equal(t, "multi-user.target", u.one(t, "Install", "WantedBy"))
}

// exposureRE finds the figure README.md records, in "Under systemd".
var exposureRE = regexp.MustCompile("`systemd-analyze security --offline=true systemd/ober.service`[^`]*? rates the unit's exposure level ([0-9]+\\.[0-9]) OK")

// TestOberServiceExposure holds the unit to the exposure level README.md
// records: a setting dropped or a capability added that raises it fails
// here, and a lower figure belongs in README.
func TestOberServiceExposure(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install it with `apt-get install systemd`")
	}
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	m := exposureRE.FindSubmatch(readme)
	require.NotNil(t, m, "README.md, \"Under systemd\", must record the exposure level as %s", exposureRE)
	recorded, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)

	dir := t.TempDir()
	var content []byte
	for _, u := range Units() {
		if u.Name == "ober.service" {
			content = u.Content
		}
	}
	require.NotNil(t, content)
	path := filepath.Join(dir, "ober.service")
	require.NoError(t, os.WriteFile(path, content, 0o644))
	out, err := exec.Command(analyze, "security", "--offline=true", "--no-pager", path).CombinedOutput()
	require.NoError(t, err, "systemd-analyze security --offline=true (systemd 250 or newer):\n%s", out)
	level := regexp.MustCompile(`Overall exposure level for ober\.service: ([0-9]+\.[0-9]) (\S+)`).FindSubmatch(out)
	require.NotNil(t, level, "no \"Overall exposure level\" line in:\n%s", out)
	got, err := strconv.ParseFloat(string(level[1]), 64)
	require.NoError(t, err)
	require.LessOrEqual(t, got, recorded, "exposure %s %s, README.md records %.1f:\n%s", level[1], level[2], recorded, out)
	require.Equal(t, "OK", string(level[2]))
}
