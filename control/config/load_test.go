package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/sysuser"
)

// minimalYAML is the smallest valid file; line numbers below refer to it.
const minimalYAML = `node:
  interfaces: [eth0]
vips: [10.0.0.1, fd00::1]
services:
  - name: http
    mode: http
    port: 80
backends:
  servers:
    - address: rgw1.example.com:7480
`

func TestParseMinimal(t *testing.T) {
	c, err := parse([]byte(minimalYAML), nodeA())
	require.NoError(t, err)
	require.Equal(t, []string{"eth0"}, c.Node.Interfaces)
	require.Equal(t, "http", c.Services[0].Name)
	require.Equal(t, uint16(80), c.Services[0].Port)
}

// TestParseErrors covers what goes wrong before validation: YAML syntax,
// unknown keys, wrong types, and keys given twice.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"syntax", "node:\n  interfaces: [eth0]\nvips: 10.0.0.1: x\n",
			`line 3: mapping values are not allowed in this context`},
		{"tab indentation", "node:\n\tinterfaces: [eth0]\n",
			`line 2: found character that cannot start any token`},
		{"unknown top-level key", strings.Replace(minimalYAML, "services:", "servces:", 1),
			`servces: unknown key (line 4); did you mean "services"?`},
		{"unknown nested key", strings.Replace(minimalYAML, "port: 80", "prot: 80", 1),
			`services[0].prot: unknown key (line 7); did you mean "protocol"?`},
		{"unknown key with dashes", strings.Replace(minimalYAML, "  interfaces: [eth0]", "  interfaces: [eth0]\n  xdp-mode: native", 1),
			`node.xdp-mode: unknown key (line 3); did you mean "xdp_mode"?`},
		{"unknown key far from any", minimalYAML + "api:\n  address: 127.0.0.1:1\n",
			`api.address: unknown key (line 12); known keys here: listen, socket, manage, gorb_compat`},
		{"several unknown keys", minimalYAML + "haproxy:\n  bin: /usr/sbin/haproxy\n  nbthread: 4\n",
			"haproxy.bin: unknown key (line 12); did you mean \"binary\"?\n" +
				"haproxy.nbthread: unknown key (line 13); known keys here: binary, served_by_header, user, group, chroot, tune"},
		{"port not a number", strings.Replace(minimalYAML, "port: 80", "port: https", 1),
			`services[0].port: "https": must be a number from 1 to 65535 (line 7)`},
		{"port out of range", strings.Replace(minimalYAML, "port: 80", "port: 70000", 1),
			`services[0].port: 70000: must be a number from 1 to 65535 (line 7)`},
		{"port quoted", strings.Replace(minimalYAML, "port: 80", `port: "80"`, 1),
			`services[0].port: "80": must be a number, not a quoted string (line 7)`},
		{"bool", strings.Replace(minimalYAML, "port: 80", "port: 80\n    reject: maybe", 1),
			`services[0].reject: "maybe": must be true or false (line 8)`},
		{"int", minimalYAML + "instances:\n  count: four\n",
			`instances.count: "four": must be a whole number (line 12)`},
		{"weight", strings.Replace(minimalYAML, "- address: rgw1.example.com:7480", "- address: rgw1.example.com:7480\n      weight: 1.5", 1),
			`backends.servers[0].weight: 1.5: must be a whole number (line 11)`},
		{"bad vip", strings.Replace(minimalYAML, "vips: [10.0.0.1, fd00::1]", "vips: [10.0.0.1, 10.0.0.x]", 1),
			`vips[1]: "10.0.0.x" is not an IP address (line 3)`},
		{"duration without unit", minimalYAML + "timeouts:\n  connect: 5\n",
			`timeouts.connect: "5" is not a duration (such as 500ms, 5s, 2m) (line 12)`},
		{"list given as one value", strings.Replace(minimalYAML, "interfaces: [eth0]", "interfaces: eth0", 1),
			`node.interfaces: "eth0": must be a list, not a single value (line 2)`},
		{"mapping given as list", strings.Replace(minimalYAML, "node:\n  interfaces: [eth0]", "node:\n  - eth0", 1),
			`node: must be a mapping of keys, not a list (line 2)`},
		{"struct given as bool", strings.Replace(minimalYAML, "mode: http", "mode: tls\n    tls: true", 1),
			`services[0].tls: true: must be a mapping of keys, not a single value (line 7)`},
		{"scalar given as list", strings.Replace(minimalYAML, "mode: http", "mode: [http]", 1),
			`services[0].mode: must be a single value, not a list (line 6)`},
		{"key given twice", strings.Replace(minimalYAML, "port: 80", "port: 80\n    port: 8080", 1),
			`services[0].port: key given twice (first on line 7) (line 8)`},
		{"not a mapping", "- node\n- vips\n",
			`the file must be a mapping of keys (node, vips, services, ...), not a list (line 1)`},
		{"two documents", minimalYAML + "---\nnode: {}\n",
			`line 11: a second YAML document starts here; the file must hold exactly one`},
		{"empty file", "",
			"node.interfaces: at least one interface is required\n" +
				"vips: at least one VIP is required (or vip_pools to take addresses from)\n" +
				"services: at least one service is required\n" +
				"backends.servers: at least one server is required (or a discovery that finds them)"},
		{"validation after decoding", strings.Replace(minimalYAML, "port: 80", "port: 80\n    whitelist: routers", 1),
			`services[0].whitelist: "routers": must be frontend-http or backend-http`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse([]byte(tt.yaml), nodeA())
			require.EqualError(t, err, tt.want)
			require.Nil(t, c)
		})
	}
}

// Anchors, aliases and merge keys are YAML features operators use to
// share settings; the strict walk must follow them.
func TestParseAnchorsAndMerge(t *testing.T) {
	src := `node:
  interfaces: [eth0]
vips: &vips [10.0.0.1, 10.0.0.2]
services:
  - &plain {mode: http, port: 80, vips: [10.0.0.1]}
  - <<: *plain
    port: 8080
backends:
  servers:
    - &rgw {address: "rgw1.example.com:7480", weight: 10}
    - <<: *rgw
      address: rgw2.example.com:7480
`
	c, err := parse([]byte(src), nodeA())
	require.NoError(t, err)
	require.Equal(t, uint16(8080), c.Services[1].Port)
	require.Equal(t, "http-8080", c.Services[1].Name)
	require.Equal(t, 10, *c.Backends.Servers[1].Weight)

	bad := strings.Replace(src, "&plain {mode: http,", "&plain {mode: http, prot: 1,", 1)
	_, err = parse([]byte(bad), nodeA())
	require.EqualError(t, err, ""+
		`services[0].prot: unknown key (line 5); did you mean "protocol"?`+"\n"+
		`services[1].prot: unknown key (line 5); did you mean "protocol"?`)
}

func TestParseNullMeansDefault(t *testing.T) {
	c, err := parse([]byte(minimalYAML+"timeouts:\n  connect: ~\nha:\n"), nodeA())
	require.NoError(t, err)
	require.Equal(t, DefaultConnect, c.Timeouts.Connect.Duration)
	require.Equal(t, HAModeNone, c.HA.Mode)
}

// Parse and Load read this machine; a Config from parse keeps the
// environment it was given, also in copies, and env is no YAML key.
func TestEnvironment(t *testing.T) {
	if h, err := os.Hostname(); err == nil && ValidName(h) {
		// The defaults name this machine's ober-haproxy, as on a node.
		_, err := sysuser.Ensure(context.Background(), sysuser.HAProxyUser)
		require.NoError(t, err)
		c, err := Parse([]byte(minimalYAML))
		require.NoError(t, err)
		require.Nil(t, c.env)
		require.Equal(t, h, c.Node.Name)
		aff := affinityCPUs()
		require.Equal(t, aff[:min(len(aff), MaxInstances)], c.CPUs())
	}

	env := onCPUs(7)
	c, err := parse([]byte(minimalYAML), env)
	require.NoError(t, err)
	require.Same(t, env, c.env)
	cp := *c
	cp.Instances = Instances{}
	require.Equal(t, []int{7}, cp.CPUs())
	require.NoError(t, cp.Validate())

	_, err = parse([]byte(minimalYAML+"env: {}\n"), nodeA())
	require.ErrorContains(t, err, "env: unknown key (line 11)")
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(dir, "missing.yaml")
		_, err := Load(path)
		require.EqualError(t, err, "config "+path+": no such file")
	})
	t.Run("directory", func(t *testing.T) {
		_, err := Load(dir)
		require.EqualError(t, err, "config "+dir+": is a directory")
	})
	t.Run("every line names the file", func(t *testing.T) {
		path := writeFile(t, filepath.Join(dir, "bad.yaml"), strings.Replace(minimalYAML, "port: 80", "port: 0", 1)+"ha: {mode: carp}\n")
		_, err := load(path, nodeA())
		require.EqualError(t, err, ""+
			"config "+path+": services[0].port: required (1-65535)\n"+
			"config "+path+`: ha.mode: "carp": must be none, bgp or vrrp`)
		var fe *FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "services[0].port", fe.Path)
	})
	t.Run("syntax", func(t *testing.T) {
		path := writeFile(t, filepath.Join(dir, "syntax.yaml"), "node: [\n")
		_, err := Load(path)
		require.EqualError(t, err, "config "+path+": line 1: did not find expected node content")
	})
	t.Run("ok", func(t *testing.T) {
		path := writeFile(t, filepath.Join(dir, "ober.yaml"), minimalYAML)
		c, err := load(path, nodeA())
		require.NoError(t, err)
		require.Equal(t, "node-a", c.Node.Name)
	})
}

// exampleConfig loads testdata/example.yaml with its certificate paths
// pointed at generated files.
func exampleConfig(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	cert, key := writeCert(t, dir, certOpts{cn: "s3.example.com"})
	src := string(mustRead(t, filepath.Join("testdata", "example.yaml")))
	require.Contains(t, src, "/etc/ober/tls/s3.pem")
	require.Contains(t, src, "/etc/ober/tls/s3.key")
	src = strings.ReplaceAll(src, "/etc/ober/tls/s3.pem", cert)
	src = strings.ReplaceAll(src, "/etc/ober/tls/s3.key", key)
	path := writeFile(t, filepath.Join(dir, "ober.yaml"), src)
	c, err := load(path, nodeA())
	require.NoError(t, err)
	return c
}

func TestExample(t *testing.T) {
	c := exampleConfig(t)
	require.Equal(t, "ingress-a", c.Node.Name)
	require.Equal(t, []Addr{addr("10.20.0.10"), addr("fd00:20::10")}, c.VIPs)
	require.Len(t, c.Services, 2)
	require.Equal(t, "https", c.Services[0].Name)
	require.Equal(t, ModeTLS, c.Services[0].Mode)
	require.Equal(t, WhitelistFrontendHTTP, c.Services[1].Whitelist)
	require.True(t, c.Services[1].Reject)
	require.Len(t, c.Backends.Servers, 3)
	require.Equal(t, 50, *c.Backends.Servers[2].Weight)
	require.Equal(t, 100, *c.Backends.Servers[0].Weight)
	require.Equal(t, 2*time.Second, c.Backends.Health.Interval.Duration)
	require.Equal(t, 5*time.Minute, c.Timeouts.Client.Duration)
	require.Equal(t, []int{0, 1}, c.CPUs())
	require.Equal(t, "/usr/sbin/haproxy", c.HAProxy.Binary)
	require.Equal(t, HAProxy{Binary: "/usr/sbin/haproxy", User: "ober-haproxy", Group: "ober-haproxy", Chroot: "/run/ober/empty", Tune: HAProxyTune{BufSize: DefaultBufSize}}, c.HAProxy)

	// The file shipped in testdata must not rot: without the certificate
	// it fails for that reason only.
	_, err := load(filepath.Join("testdata", "example.yaml"), nodeA())
	require.EqualError(t, err, `config testdata/example.yaml: services[0].tls.cert: "/etc/ober/tls/s3.pem": no such file`)
}

func TestReadSmallFileRejectsDevices(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	_, err := Load("/dev/zero")
	require.EqualError(t, err, "config /dev/zero: not a regular file")
}

func TestOneLineJoinsEveryProblem(t *testing.T) {
	err := errors.Join(&FieldError{Path: "vips[0]", Value: `"x"`, Msg: "not an IP address"}, nil,
		errors.New("  \nservices[1].port: 0: out of range\n"))
	require.Equal(t, `vips[0]: "x": not an IP address; services[1].port: 0: out of range`, OneLine(err))
	require.Len(t, ErrorLines(err), 2)
}

// TestReadmeExamples loads every YAML example of README.md that has a
// top-level services key, as an operator would paste it (see
// loadExamples).
func TestReadmeExamples(t *testing.T) {
	n, err := loadExamples(t, string(mustRead(t, filepath.Join("..", "..", "README.md"))))
	require.NoError(t, err)
	if n == 0 {
		t.Skip("README.md has no configuration example yet")
	}
}

// TestLoadExamples: the machinery of TestReadmeExamples finds examples,
// fills what they leave out, and fails on a broken one.
func TestLoadExamples(t *testing.T) {
	md := "# Services\n\n```yaml\nservices:\n  - {name: s3, mode: tls, port: 443, tls: {cert: /etc/ober/tls/s3.pem, key: /etc/ober/tls/s3.key}}\n" +
		"  - mode: tcp\n    port: 5432\n    balance: wlc\n    backends: [{address: 10.2.0.1:5432}]\n```\n\n" +
		"```yaml\nbackends:\n  balance: roundrobin\n```\n\n```sh\nservices:\n```\n"
	n, err := loadExamples(t, md)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	_, err = loadExamples(t, strings.Replace(md, "wlc", "wlcc", 1))
	require.ErrorContains(t, err, `YAML example 0: services[1].balance: "wlcc": unknown balance method; did you mean "wlc"?`)
}

// loadExamples loads every ```yaml block of a Markdown text that has a
// top-level services key and returns how many there were, or the first
// that does not load. Keys an example
// leaves out (node, vips, backends) come from a small base, and its
// certificate, key and CA files are generated.
func loadExamples(t *testing.T, md string) (int, error) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir, certOpts{cn: "s3.example.com"})
	subst := []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(`\bcert: *[^\s,}]+`), "cert: " + cert},
		{regexp.MustCompile(`\bkey: *[^\s,}]+`), "key: " + key},
		{regexp.MustCompile(`\bca_file: *[^\s,}]+`), "ca_file: " + cert},
	}
	base := []struct{ key, text string }{
		{"node", "node: {interfaces: [eth0]}\n"},
		{"vips", "vips: [192.0.2.1]\n"},
		{"backends", "backends: {servers: [{address: 192.0.2.100:7480}]}\n"},
	}
	n := 0
	for i, block := range yamlBlocks(md) {
		if !hasTopKey(block, "services") {
			continue
		}
		n++
		doc := block
		for _, s := range subst {
			doc = s.re.ReplaceAllString(doc, s.with)
		}
		for _, b := range base {
			if !hasTopKey(doc, b.key) {
				doc = b.text + doc
			}
		}
		if _, err := parse([]byte(doc), nodeA()); err != nil {
			return n, fmt.Errorf("YAML example %d: %w\n%s", i, err, block)
		}
	}
	return n, nil
}

// yamlBlocks returns the bodies of the ```yaml blocks of a Markdown text.
func yamlBlocks(md string) []string {
	var blocks []string
	var cur *strings.Builder
	for line := range strings.Lines(md) {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && (trimmed == "```yaml" || trimmed == "```yml"):
			cur = &strings.Builder{}
		case cur != nil && trimmed == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line)
		}
	}
	return blocks
}

// hasTopKey reports whether a YAML document has key at its top level.
func hasTopKey(doc, key string) bool {
	for line := range strings.Lines(doc) {
		if strings.HasPrefix(line, key+":") {
			return true
		}
	}
	return false
}
