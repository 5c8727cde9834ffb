package mgmt

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
)

func TestMergePatch(t *testing.T) {
	for _, c := range []struct{ target, patch, want string }{
		{`{"a": 1, "b": 2}`, `{"a": 3}`, `{"a": 3, "b": 2}`},
		{`{"a": 1, "b": 2}`, `{"b": null}`, `{"a": 1}`},
		{`{"a": {"x": 1, "y": 2}}`, `{"a": {"y": null, "z": 3}}`, `{"a": {"x": 1, "z": 3}}`},
		{`{"a": [1, 2]}`, `{"a": [3]}`, `{"a": [3]}`},
		{`{"a": "s"}`, `{"a": {"b": null, "c": 1}}`, `{"a": {"c": 1}}`},
		{`{"a": {"b": 1}}`, `{"a": 5}`, `{"a": 5}`},
		{`{}`, `{"missing": null}`, `{}`},
		{`{"a": 1}`, `{}`, `{"a": 1}`},
	} {
		target, err := bodyNode([]byte(c.target))
		require.NoError(t, err)
		patch, err := bodyNode([]byte(c.patch))
		require.NoError(t, err)
		got, err := nodeValue(mergePatch(target, patch))
		require.NoError(t, err)
		var want any
		require.NoError(t, yaml.Unmarshal([]byte(c.want), &want))
		require.Equal(t, want, got, "%s + %s", c.target, c.patch)
	}
}

func TestBodyNode(t *testing.T) {
	for body, want := range map[string]string{
		``:                   "the body is empty",
		`{"a": 1} {"b": 2}`:  "more than one JSON value",
		`{"a": 1, "a": 2}`:   `key "a" given twice`,
		`"text"`:             "must be a JSON object, not a single value",
		`{"a": [1, }`:        "malformed JSON",
		`{"a": 1, "b": tru}`: "malformed JSON",
	} {
		_, err := bodyNode([]byte(body))
		require.Error(t, err, body)
		require.Equal(t, 400, StatusOf(err), body)
		require.Contains(t, err.Error(), want, body)
	}
	n, err := bodyNode([]byte(`{"z": 1, "a": 1.5, "m": "true", "n": null}`))
	require.NoError(t, err)
	// The body's order, and the types JSON gave.
	require.Equal(t, "z", n.Content[0].Value)
	require.Equal(t, "!!float", n.Content[3].Tag)
	require.Equal(t, "!!str", n.Content[5].Tag)
	require.True(t, isNullNode(n.Content[7]))
}

func TestAPIPath(t *testing.T) {
	cfg, err := config.Parse([]byte(site))
	require.NoError(t, err)
	for in, want := range map[string]string{
		"services[2].backends[1].weight":                "services[db].backends[s1].weight",
		"services[3].pools[1].backends[0].address":      "services[sni].pools[us].backends[s0].address",
		"backends.servers[1].weight: 300: must be 0-1":  "backends.servers[s1].weight: 300: must be 0-1",
		"services[1].port: already used by services[0]": "services[http-80].port: already used by services[https]",
		"services[9].port":                              "services[9].port",
		"services[2].backends":                          "services[db].backends",
	} {
		require.Equal(t, want, apiPath(cfg, in), in)
	}
}

func TestEditNewFile(t *testing.T) {
	// A file without services gets the list.
	out, ed, err := Edit([]byte(head), Change{Verb: Create, Kind: KindService,
		Body: json.RawMessage(`{"port": 9000, "mode": "tcp", "backends": [{"address": "10.6.0.1:9000"}]}`)})
	require.NoError(t, err)
	require.Equal(t, "tcp-9000", ed.Service)
	cfg, err := config.Parse(out)
	require.NoError(t, err)
	require.Equal(t, "tcp-9000", cfg.Services[0].Name)
	require.Equal(t, head, string(out[:len(head)]))
}
