package yamledit

import (
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Str, Int and Bool make single values to put in the tree.
func Str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// Int makes an integer value.
func Int(n uint64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatUint(n, 10)}
}

// Bool makes a boolean value.
func Bool(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

// Deref follows an alias to the value it names, so that an edit lands
// on what the file holds.
func Deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// Find is the index in m.Content of the key node of key, -1 when the
// mapping m has no such key.
func Find(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

// Get is the value of key in mapping m, aliases followed; nil when m has
// no such key.
func Get(m *yaml.Node, key string) *yaml.Node {
	if i := Find(m, key); i >= 0 {
		return Deref(m.Content[i+1])
	}
	return nil
}

// Set gives key the value v in mapping m: in place when m has the key
// (its line and comments stay), else appended, with comment (when not
// empty) on the lines above it.
func Set(m *yaml.Node, key string, v *yaml.Node, comment string) {
	if i := Find(m, key); i >= 0 {
		m.Content[i+1] = v
		return
	}
	k := Str(key)
	k.HeadComment = comment
	m.Content = append(m.Content, k, v)
}

// Remove deletes key, its value and the comments above it from m.
func Remove(m *yaml.Node, key string) {
	if i := Find(m, key); i >= 0 {
		m.Content = slices.Delete(m.Content, i, i+2)
	}
}

// Mapping is the mapping under key in m, made (in place of a null or a
// single value there, or appended with comment above it) when there is
// none.
func Mapping(m *yaml.Node, key, comment string) *yaml.Node {
	if v := Get(m, key); v != nil && v.Kind == yaml.MappingNode {
		return v
	}
	v := &yaml.Node{Kind: yaml.MappingNode}
	Set(m, key, v, comment)
	return v
}

// List makes a list of items in the given style (0 for block,
// yaml.FlowStyle). An item that old (the list it replaces, or nil) holds
// is old's node, each at most once, so that it keeps its line and the
// comments above it.
func List(old *yaml.Node, items []string, style yaml.Style) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: style, Content: []*yaml.Node{}}
	var used []*yaml.Node
	for _, it := range items {
		var reuse *yaml.Node
		if old != nil && old.Kind == yaml.SequenceNode {
			for _, o := range old.Content {
				if o.Kind == yaml.ScalarNode && o.Value == it && !slices.Contains(used, o) {
					reuse = o
					break
				}
			}
		}
		if reuse == nil {
			reuse = Str(it)
		} else {
			used = append(used, reuse)
		}
		n.Content = append(n.Content, reuse)
	}
	return n
}
