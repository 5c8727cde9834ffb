package config

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/yamledit"
)

// WhitelistKey returns the key under whitelists that holds the list named
// name ("frontend-http" -> "frontend_http").
func WhitelistKey(name string) (string, error) {
	for _, l := range (&Config{}).whitelistLists() {
		if l.name == name {
			return strings.TrimPrefix(l.key, "whitelists."), nil
		}
	}
	return "", fmt.Errorf("unknown whitelist %q (want %s, %s or %s)", name,
		WhitelistFrontendHTTP, WhitelistRouters, WhitelistBackendHTTP)
}

// WhitelistEntries returns the entries of the whitelist named name as the
// file writes them, or nil for an unknown name.
func (c *Config) WhitelistEntries(name string) []string {
	for _, l := range c.whitelistLists() {
		if l.name == name {
			return l.entries
		}
	}
	return nil
}

// SettleWhitelist turns the resolved prefixes of whitelist name into what
// the daemon puts in the dataplane for this configuration, or the error
// the daemon would refuse it with. It is the part of Resolve that looks
// at more than the list itself: in ha.mode bgp an empty routers list means
// the peers, and a routers list must hold every peer.
func (c *Config) SettleWhitelist(name string, ps []netip.Prefix) ([]netip.Prefix, error) {
	res := &Resolved{Whitelists: map[string][]netip.Prefix{name: addrlist.Normalize(ps)}}
	if name == WhitelistRouters {
		if err := c.routersWhitelist(res); err != nil {
			return nil, err
		}
	}
	return res.Whitelists[name], nil
}

// EditWhitelists returns data, the text of a configuration file, with
// each whitelist named in lists set to exactly the given entries. Only
// the lines of those lists change: every other key, comment, blank line
// and quoting stays byte for byte, because operators keep notes in this
// file. An entry that stays keeps its line and the comments above it; a
// list or the whitelists mapping that is missing is added.
//
// The result is checked by decoding it again: the edited lists must read
// back as given and everything else as before, or EditWhitelists fails
// rather than return a file that says something else. It does not
// validate the configuration; Parse does.
func EditWhitelists(data []byte, lists map[string][]string) ([]byte, error) {
	names := make([]string, 0, len(lists))
	for name := range lists {
		names = append(names, name)
	}
	// The order of the edits does not change the result, but a fixed
	// order makes an error the same on every run.
	slices.Sort(names)
	doc, perr := yamledit.Parse(data)
	if perr == nil {
		doc.Compact()
	}
	for _, name := range names {
		key, err := WhitelistKey(name)
		if err != nil {
			return nil, err
		}
		if err := editList(doc, perr, key, lists[name]); err != nil {
			return nil, fmt.Errorf("whitelists.%s: %w", key, err)
		}
	}
	out := data
	if len(names) > 0 {
		var err error
		if out, err = doc.Bytes(); err != nil {
			return nil, err
		}
	}
	if err := checkEdit(data, out, lists); err != nil {
		return nil, err
	}
	return out, nil
}

// editList sets whitelists.key to items in doc (perr is the error of
// reading it), refusing the shapes an edit of a few lines cannot change
// safely.
func editList(doc *yamledit.Document, perr error, key string, items []string) error {
	if perr != nil {
		return yamlError(perr)
	}
	root := doc.Root()
	if root == nil || doc.Empty() {
		return errors.New("the file is not a mapping of keys (node, vips, services, ...)")
	}
	if root.Style&yaml.FlowStyle != 0 {
		return errors.New("the file is written in flow style ({...}); edit it by hand")
	}
	wk, wv, err := pair(root, "whitelists")
	if err != nil {
		return err
	}
	if wk == nil {
		// Appended at the end: the schema puts whitelists late, and the
		// end is the one place sure not to split a comment from its key.
		yamledit.Set(root, "whitelists", &yaml.Node{Kind: yaml.MappingNode}, "")
		wv = yamledit.Get(root, "whitelists")
	}
	if err := editable(wv, "whitelists"); err != nil {
		return err
	}
	switch {
	case isNull(wv) || wv.Kind == yaml.MappingNode && wv.Style&yaml.FlowStyle != 0 && len(wv.Content) == 0:
		wv = &yaml.Node{Kind: yaml.MappingNode}
		yamledit.Set(root, "whitelists", wv, "")
	case wv.Kind != yaml.MappingNode:
		return fmt.Errorf("whitelists must be a mapping of lists, not %s", describe(wv))
	case wv.Style&yaml.FlowStyle != 0:
		return errors.New("whitelists is written in flow style ({...}); write it as a block mapping to let ober edit it")
	}
	k, v, err := pair(wv, key)
	if err != nil {
		return err
	}
	if k == nil {
		yamledit.Set(wv, key, yamledit.List(nil, items, 0), "")
		return nil
	}
	if err := editable(v, "whitelists."+key); err != nil {
		return err
	}
	switch {
	case v.Kind == yaml.SequenceNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0:
		for i, it := range v.Content {
			if it.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: item %d is %s, not a single entry", it.Line, i, describe(it))
			}
		}
		yamledit.Set(wv, key, yamledit.List(v, items, 0), "")
	case v.Kind == yaml.SequenceNode && len(v.Content) > 0:
		if doc.Lines(k) > 1 {
			return errors.New("a flow list ([...]) over several lines; write it on one line or as a block list to let ober edit it")
		}
		yamledit.Set(wv, key, yamledit.List(v, items, yaml.FlowStyle), "")
	case v.Kind == yaml.SequenceNode || isNull(v):
		// An empty list ("[]") or none: written as a block list.
		yamledit.Set(wv, key, yamledit.List(nil, items, 0), "")
	default:
		return fmt.Errorf("must be a list, not %s", describe(v))
	}
	return nil
}

// pair finds key in mapping m. A merge ("<<") could bring the key in
// from elsewhere, where an edit would change other places too.
func pair(m *yaml.Node, key string) (*yaml.Node, *yaml.Node, error) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if isMergeKey(k) {
			return nil, nil, fmt.Errorf("line %d: a YAML merge (<<) next to %q; edit the file by hand", k.Line, key)
		}
	}
	if i := yamledit.Find(m, key); i >= 0 {
		return m.Content[i], m.Content[i+1], nil
	}
	return nil, nil, nil
}

// editable refuses values shared through anchors and aliases: editing one
// place would change, or fail to change, the others.
func editable(v *yaml.Node, path string) error {
	if v.Kind == yaml.AliasNode || v.Anchor != "" {
		return fmt.Errorf("line %d: %s uses a YAML anchor or alias; edit the file by hand", v.Line, path)
	}
	return nil
}

// checkEdit decodes before and after: the edited lists must read as
// given, and the rest of the file as before.
func checkEdit(before, after []byte, lists map[string][]string) error {
	var b, a map[string]any
	if err := yaml.Unmarshal(before, &b); err != nil {
		return yamlError(err)
	}
	if err := yaml.Unmarshal(after, &a); err != nil {
		return fmt.Errorf("editing the whitelists broke the YAML (%v); the file was left as it was", yamlError(err))
	}
	var wa struct {
		Whitelists Whitelists `yaml:"whitelists"`
	}
	wb := wa
	if err := yaml.Unmarshal(after, &wa); err != nil {
		return fmt.Errorf("the edited whitelists do not decode (%v); the file was left as it was", yamlError(err))
	}
	_ = yaml.Unmarshal(before, &wb)
	ca, cb := &Config{Whitelists: wa.Whitelists}, &Config{Whitelists: wb.Whitelists}
	for _, l := range cb.whitelistLists() {
		want, edited := lists[l.name]
		if !edited {
			want = l.entries
		}
		got := ca.WhitelistEntries(l.name)
		if !EqualEntries(want, got) {
			return fmt.Errorf("%s reads back as %q after the edit, not %q; the file was left as it was", l.key, got, want)
		}
	}
	delete(a, "whitelists")
	delete(b, "whitelists")
	if !reflect.DeepEqual(a, b) {
		return errors.New("editing the whitelists changed other keys; the file was left as it was")
	}
	return nil
}

// EqualEntries reports whether two lists of whitelist entries are the
// same, nil and empty alike.
func EqualEntries(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || slices.Equal(a, b))
}
