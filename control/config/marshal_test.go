package config

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// fill sets every yaml field reachable from v to a value that is not the
// zero one, so that a field the marshaller drops or garbles shows.
func fill(v reflect.Value) {
	switch p := v.Addr().Interface().(type) {
	case *Addr:
		p.Addr = netip.MustParseAddr("fd00::7")
		return
	case *Duration:
		p.Duration = 1500 * time.Millisecond
		return
	case *Steering:
		*p = SteeringOff
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i))
		}
	case reflect.String:
		// A value YAML would misread unquoted.
		v.SetString("a: #b")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	default:
		panic("fill: no value for " + v.Type().String())
	}
}

// decodeStrict is what parse does before the defaults: the structural
// check and the strict decode.
func decodeStrict(t *testing.T, data []byte) *Config {
	t.Helper()
	root, err := parseDocument(data)
	require.NoError(t, err)
	var sc structChecker
	sc.walk(root, reflect.TypeFor[Config](), "")
	require.NoError(t, sc.err(), "%s", data)
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&c), "%s", data)
	return &c
}

func TestMarshalEveryField(t *testing.T) {
	var c Config
	fill(reflect.ValueOf(&c).Elem())
	data, err := Marshal(&c)
	require.NoError(t, err)
	require.Equal(t, &c, decodeStrict(t, data), "%s", data)

	// yaml.Marshal of a Config writes the same.
	viaLib, err := yaml.Marshal(c)
	require.NoError(t, err)
	again := decodeStrict(t, viaLib)
	require.Equal(t, &c, again)
}

// TestMarshalRoundTrip: a configuration after Load, marshalled and loaded
// again, is the same configuration; so are the examples README points to.
func TestMarshalRoundTrip(t *testing.T) {
	bgpExample := func(t *testing.T) *Config {
		text := string(mustRead(t, filepath.Join("testdata", "bgp.yaml")))
		text = strings.ReplaceAll(text, "/etc/ober/handoff.key", writeKey(t, goodKey, 0o600))
		c, err := load(writeFile(t, filepath.Join(t.TempDir(), "bgp.yaml"), text), nodeA())
		require.NoError(t, err)
		return c
	}
	for name, build := range map[string]func(*testing.T) *Config{
		"example.yaml": exampleConfig,
		"bgp.yaml":     bgpExample,
		"base":         func(*testing.T) *Config { return baseConfig() },
		"bgp":          func(*testing.T) *Config { return bgpConfig() },
		"vrrp":         func(*testing.T) *Config { return vrrpConfig() },
		"every key":    everyKeyConfig,
		"services":     func(*testing.T) *Config { c := servicesConfig(); c.ApplyDefaults(); return c },
	} {
		t.Run(name, func(t *testing.T) {
			c := build(t)
			require.NoError(t, c.Validate())
			data, err := Marshal(c)
			require.NoError(t, err)
			back, err := parse(data, nodeA())
			require.NoError(t, err, "%s", data)
			c.env, back.env = nil, nil
			// Aliases come back as ober's names, which need no note.
			require.Empty(t, back.BalanceNotes())
			c.balanceNotes = nil
			require.Equal(t, c, back, "%s", data)
		})
	}
}

// TestMarshalLeavesUnsetOut: unset fields are left out, so that Load fills
// their defaults as it does for a file that does not mention them; a
// pointer to a zero value is set, and written.
func TestMarshalLeavesUnsetOut(t *testing.T) {
	data, err := Marshal(&Config{})
	require.NoError(t, err)
	require.Equal(t, "{}\n", string(data))

	zero := 0
	c := &Config{
		Node: Node{Interfaces: []string{"eth0", "eth1"}},
		VIPs: []Addr{addr("10.0.0.1"), addr("fd00::1")},
		Services: []Service{
			{Port: 443, Mode: ModeTLS, TLS: &TLS{SelfSigned: true}},
			{Name: "http", Port: 80, Mode: ModeHTTP, Whitelist: "frontend-http"},
		},
		Backends:  Backends{Servers: []BackendServer{{Address: "10.1.0.1:7480", Weight: &zero}}},
		Instances: Instances{Count: 2, CPUs: []int{0, 1}, Steering: SteeringOff},
		Timeouts:  Timeouts{Drain: dur(3 * time.Second)},
		HA:        HA{Mode: HAModeBGP, BGP: &BGP{ASN: 65010, Peers: []BGPPeer{{Address: addr("10.9.0.1"), ASN: 65000}}}},
	}
	data, err = Marshal(c)
	require.NoError(t, err)
	require.Equal(t, `node:
  interfaces: [eth0, eth1]
vips: [10.0.0.1, 'fd00::1']
services:
  - port: 443
    mode: tls
    tls:
      self_signed: true
  - name: http
    port: 80
    mode: http
    whitelist: frontend-http
backends:
  servers:
    - address: 10.1.0.1:7480
      weight: 0
instances:
  count: 2
  cpus: [0, 1]
  steering: "off"
timeouts:
  drain: 3s
ha:
  mode: bgp
  bgp:
    asn: 65010
    peers:
      - address: 10.9.0.1
        asn: 65000
`, string(data))

	// Loaded, it is what the same file written by hand loads to.
	path := writeFile(t, filepath.Join(t.TempDir(), "ober.yaml"), string(data))
	got, err := load(path, nodeA())
	require.NoError(t, err)
	require.Equal(t, "node-a", got.Node.Name)
	require.Equal(t, "tls-443", got.Services[0].Name)
	require.Equal(t, 0, *got.Backends.Servers[0].Weight)
	require.Equal(t, SteeringOff, got.Instances.Steering)
	require.Equal(t, DefaultBGPHoldTime, got.HA.BGP.Peers[0].HoldTime.Duration)
}

func TestMarshalRefusesAMissingAddress(t *testing.T) {
	_, err := Marshal(&Config{VIPs: []Addr{addr("10.0.0.1"), {}}})
	require.EqualError(t, err, "vips[1]: no IP address to write")
}

func TestSteeringValues(t *testing.T) {
	for text, want := range map[string]Steering{
		"auto": SteeringAuto, "on": SteeringOn, "off": SteeringOff,
		"true": SteeringOn, "false": SteeringOff, "Auto": SteeringAuto,
	} {
		c, err := parse([]byte(minimalYAML+"instances:\n  steering: "+text+"\n"), nodeA())
		require.NoError(t, err, text)
		require.Equal(t, want, c.Instances.Steering, text)
	}
	_, err := parse([]byte(minimalYAML+"instances:\n  steering: sometimes\n"), nodeA())
	require.EqualError(t, err, `instances.steering: "sometimes" is not a steering mode (auto, on or off) (line 12)`)
}
