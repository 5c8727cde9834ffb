package config

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Marshal writes c as ober.yaml text that Parse reads back to c. A field
// at its zero value is left out, since zero means "use the default" and
// some zero values (an unset Addr) have no text form; lists of single
// values are written on one line ([a, b]), as an operator writes them.
func Marshal(c *Config) ([]byte, error) {
	n, err := c.MarshalYAML()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("encode the configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode the configuration: %w", err)
	}
	return b.Bytes(), nil
}

// MarshalYAML makes yaml.Marshal write what Marshal writes, so that a
// Config never comes out with every unset field spelled as a zero (and
// unset addresses as "invalid IP").
func (c Config) MarshalYAML() (any, error) {
	return marshalNode(reflect.ValueOf(c), "")
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

// marshalNode is v as a YAML node: structs as mappings of their non-zero
// yaml-tagged fields, slices as sequences, and leaves (text types
// included) as the yaml library encodes them. path names v in errors.
func marshalNode(v reflect.Value, path string) (*yaml.Node, error) {
	if v.Type().Implements(textMarshaler) {
		return leafNode(v, path)
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
		}
		return marshalNode(v.Elem(), path)
	case reflect.Struct:
		return mappingNode(v, path)
	case reflect.Slice:
		seq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for i := range v.Len() {
			e, err := marshalNode(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			if e.Kind != yaml.ScalarNode {
				seq.Style = 0
			}
			seq.Content = append(seq.Content, e)
		}
		return seq, nil
	default:
		return leafNode(v, path)
	}
}

func mappingNode(v reflect.Value, path string) (*yaml.Node, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() || v.Field(i).IsZero() {
			continue
		}
		val, err := marshalNode(v.Field(i), joinPath(path, name))
		if err != nil {
			return nil, err
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, val)
	}
	return m, nil
}

func leafNode(v reflect.Value, path string) (*yaml.Node, error) {
	if a, ok := v.Interface().(Addr); ok && !a.IsValid() {
		// Only an unset field may hold no address, and those are left out.
		return nil, fmt.Errorf("%s: no IP address to write", path)
	}
	var n yaml.Node
	if err := n.Encode(v.Interface()); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &n, nil
}
