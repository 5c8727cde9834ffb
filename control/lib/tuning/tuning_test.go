package tuning

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTuningIsFresh(t *testing.T) {
	a := Tuning()
	a[0].Value = "1"
	require.NotEqual(t, "1", Tuning()[0].Value)
	seen := map[string]bool{}
	for _, s := range Tuning() {
		require.Contains(t, []Op{AtLeast, AtMost, Equal}, s.Op, s.Key)
		require.NotEmpty(t, s.Want(), s.Key)
		require.NotEmpty(t, s.Why, s.Key)
		require.Equal(t, s.Key+" = "+s.Value, s.Line())
		require.False(t, seen[s.Key], "%s twice", s.Key)
		seen[s.Key] = true
		// Every value must meet itself, or doctor would warn right after
		// bootstrap wrote it.
		ok, err := s.Compare(s.Value)
		require.NoError(t, err, s.Key)
		require.True(t, ok, s.Key)
	}
}

// The settings a 50 GB/s ingress node cannot do without, with the values
// bootstrap must write.
func TestTuningHoldsTheIngressSettings(t *testing.T) {
	want := map[string]string{
		"net.core.netdev_max_backlog":     "16384",
		"net.core.rmem_max":               "67108864",
		"net.core.wmem_max":               "67108864",
		"net.ipv4.tcp_rmem":               "4096 131072 67108864",
		"net.ipv4.tcp_wmem":               "4096 16384 67108864",
		"net.ipv4.tcp_congestion_control": "bbr",
		"net.core.default_qdisc":          "fq",
		"net.core.somaxconn":              "4096",
		"net.ipv4.tcp_max_syn_backlog":    "8192",
		"net.ipv4.ip_local_port_range":    "10240 65535",
		"net.ipv4.tcp_tw_reuse":           "1",
		"vm.panic_on_oom":                 "1",
		"kernel.panic":                    "10",
		"net.ipv4.tcp_mtu_probing":        "1",
		"net.ipv4.conf.all.arp_ignore":    "1",
		"net.ipv4.conf.all.arp_announce":  "2",
	}
	got := map[string]string{}
	for _, s := range Tuning() {
		got[s.Key] = s.Value
	}
	for k, v := range want {
		require.Equal(t, v, got[k], k)
	}
}

func TestCompare(t *testing.T) {
	byKey := map[string]Sysctl{}
	for _, s := range Tuning() {
		byKey[s.Key] = s
	}
	for _, c := range []struct {
		key, cur string
		ok       bool
	}{
		{"net.core.somaxconn", "65535", true},
		{"net.core.somaxconn", "128", false},
		{"net.ipv4.tcp_rmem", "4096\t131072\t6291456", false},
		{"net.ipv4.ip_local_port_range", "1024 65535", true},
		{"net.ipv4.ip_local_port_range", "32768 60999", false},
		{"net.ipv4.tcp_congestion_control", "cubic", false},
		{"kernel.panic", "0", false},
		{"kernel.panic", "30", true},
	} {
		ok, err := byKey[c.key].Compare(c.cur)
		require.NoError(t, err, c.key)
		require.Equal(t, c.ok, ok, "%s = %s", c.key, c.cur)
	}
	_, err := byKey["net.ipv4.tcp_rmem"].Compare("4096")
	require.ErrorContains(t, err, "no field 3")
	_, err = byKey["net.core.somaxconn"].Compare("many")
	require.ErrorContains(t, err, `"many" is not a number`)
}

func TestConf(t *testing.T) {
	conf := string(Conf())
	require.True(t, strings.HasPrefix(conf, "# Kernel tuning for ober"), conf)
	require.Contains(t, conf, "`ober uninstall` removes it")
	var lines []string
	for _, l := range strings.Split(conf, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	var want []string
	for _, s := range Tuning() {
		want = append(want, s.Line())
	}
	require.Equal(t, want, lines, "every sysctl once, in the table's order, nothing else")
	require.Contains(t, conf, "\n# fq paces BBR's flows\nnet.core.default_qdisc = fq\n")
}
