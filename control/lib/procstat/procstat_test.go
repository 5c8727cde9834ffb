package procstat

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	// A command name with spaces and a parenthesis, as a process may
	// name itself.
	line := "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 1 0 123456 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := parseStat(4242, line)
	require.NoError(t, err)
	require.Equal(t, Stat{Comm: "my (odd) name", State: 'S', UTime: 250, STime: 75, Start: 123456}, st)
	require.InDelta(t, 3.25, st.CPUSeconds(), 1e-9)
	require.InDelta(t, 0.75, st.SysSeconds(), 1e-9)
	require.False(t, st.Ended())

	for _, state := range []string{"Z", "X"} {
		st, err := parseStat(9, "9 (keepalived) "+state+" 1 9 9 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0 0\n")
		require.NoError(t, err)
		require.True(t, st.Ended(), "state %s has ended", state)
		require.Equal(t, "keepalived", st.Comm)
	}

	_, err = parseStat(7, "7 (x) S 1 2")
	require.EqualError(t, err, "short /proc/7/stat")
	_, err = parseStat(7, "garbage")
	require.EqualError(t, err, "unreadable /proc/7/stat")
}

func TestSelf(t *testing.T) {
	st, err := Read(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, st.Start)
	require.NotEmpty(t, st.Comm)
	require.True(t, Alive(os.Getpid()))
	require.False(t, Alive(1<<30), "no such PID")

	args, err := Proc.Cmdline(os.Getpid())
	require.NoError(t, err)
	require.Equal(t, os.Args, args)
	pids, err := Proc.PIDs()
	require.NoError(t, err)
	require.Contains(t, pids, os.Getpid())
	ns, err := Proc.NetNS(os.Getpid())
	require.NoError(t, err)
	var self syscall.Stat_t
	require.NoError(t, syscall.Stat("/proc/self/ns/net", &self))
	require.Equal(t, self.Ino, ns, "the inode of the namespace itself")
}

// fakeProc builds a proc tree under a temporary root, the way bootstrap's
// and doctor's tests hand them one.
func fakeProc(t *testing.T, files map[string]string) (root string) {
	t.Helper()
	root = t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, "proc", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return root
}

func TestUnder(t *testing.T) {
	require.Equal(t, Proc, Under(""))
	require.Equal(t, Proc, Under("/"))
	require.Equal(t, FS("/tmp/tree/proc"), Under("/tmp/tree"))

	root := fakeProc(t, map[string]string{
		"42/cmdline":                            "/usr/local/sbin/ober\x00run\x00--config\x00/etc/ober/ober.yaml\x00",
		"43/cmdline":                            "",
		"42/stat":                               "42 (ober) S 1 42 42 0 -1 4194560 0 0 0 0 10 5 0 0 20 0 9 0 500 0 0 0\n",
		"sys/net/core/somaxconn":                "4096\n",
		"sys/net/ipv4/ip_local_port_range":      "1024\t65535\n",
		"sys/net/ipv4/conf/eth0.100/forwarding": "1\n",
	})
	p := Under(root)
	args, err := p.Cmdline(42)
	require.NoError(t, err)
	require.Equal(t, []string{"/usr/local/sbin/ober", "run", "--config", "/etc/ober/ober.yaml"}, args)
	args, err = p.Cmdline(43)
	require.NoError(t, err)
	require.Nil(t, args, "a kernel thread or a zombie has no arguments")
	_, err = p.Cmdline(44)
	require.ErrorIs(t, err, fs.ErrNotExist)
	st, err := p.Stat(42)
	require.NoError(t, err)
	require.Equal(t, Stat{Comm: "ober", State: 'S', UTime: 10, STime: 5, Start: 500}, st)

	v, err := p.Sysctl("net.core.somaxconn")
	require.NoError(t, err)
	require.Equal(t, "4096", v, "trimmed")
	v, err = p.Sysctl("net.ipv4.ip_local_port_range")
	require.NoError(t, err)
	require.Equal(t, "1024\t65535", v)
	v, err = p.Sysctl("net/ipv4/conf/eth0.100/forwarding")
	require.NoError(t, err)
	require.Equal(t, "1", v, "slashes keep the dot of a VLAN interface")
	_, err = p.Sysctl("net.core.default_qdisc")
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestParseMounts(t *testing.T) {
	ms := parseMounts("proc /proc proc rw,nosuid 0 0\n" +
		"bpf /sys/fs/bpf bpf rw,mode=700 0 0\n" +
		"/dev/sdb1 /mnt/with\\040space ext4 rw 0 0\n" +
		"short line\n")
	require.Equal(t, []Mount{
		{Source: "proc", Target: "/proc", Type: "proc", Options: "rw,nosuid"},
		{Source: "bpf", Target: "/sys/fs/bpf", Type: "bpf", Options: "rw,mode=700"},
		{Source: "/dev/sdb1", Target: "/mnt/with space", Type: "ext4", Options: "rw"},
	}, ms)
	require.Equal(t, `a\b`, unescapeMount(`a\134b`))
	require.Equal(t, `tail\04`, unescapeMount(`tail\04`), "a cut escape stays as it is")
}

func TestParseCPUInfo(t *testing.T) {
	x86 := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu aes avx2\n\n" +
		"processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
	require.Equal(t, CPUInfo{Model: "AMD EPYC 7763", Flags: []string{"fpu", "aes", "avx2"}, X86: true}, parseCPUInfo(x86))

	arm := "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd aes pmull sha1 sha2\n\nprocessor\t: 1\nFeatures\t: fp\n"
	require.Equal(t, CPUInfo{Flags: []string{"fp", "asimd", "aes", "pmull", "sha1", "sha2"}}, parseCPUInfo(arm))

	require.Equal(t, CPUInfo{}, parseCPUInfo(""))
}

func TestParseNSLink(t *testing.T) {
	ino, err := parseNSLink("net:[4026532246]")
	require.NoError(t, err)
	require.Equal(t, uint64(4026532246), ino)
	for _, bad := range []string{"net:4026532246", "net:[x]", "garbage", "net:[1"} {
		_, err := parseNSLink(bad)
		require.Error(t, err, bad)
	}
}
