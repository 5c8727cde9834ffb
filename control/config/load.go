package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads the file at path and calls Parse. Every line of its error
// starts with "config <path>: ".
func Load(path string) (*Config, error) {
	return load(path, nil)
}

// load is Load for the machine env describes (nil: this one).
func load(path string, env *environment) (*Config, error) {
	data, err := readSmallFile(path)
	if err != nil {
		return nil, &loadError{path: path, err: errors.New(fileProblem(err))}
	}
	c, err := parse(data, env)
	if err != nil {
		return nil, &loadError{path: path, err: err}
	}
	return c, nil
}

// Parse decodes one YAML document strictly, fills the defaults and
// validates the result offline.
//
// A YAML syntax error is returned alone, as "line N: ...". Otherwise the
// error joins one *FieldError per problem: first the structural ones
// (unknown keys, wrong types, keys given twice), and only when there are
// none, the problems Validate finds.
func Parse(data []byte) (*Config, error) {
	return parse(data, nil)
}

// parse is Parse for the machine env describes (nil: this one); the
// Config it returns keeps env.
func parse(data []byte, env *environment) (*Config, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	var c Config
	if root != nil {
		var sc structChecker
		sc.walk(root, reflect.TypeFor[Config](), "")
		if err := sc.err(); err != nil {
			return nil, err
		}
		// The walk above reports problems with their paths; this strict
		// decode is what fills c, and a backstop should the walk miss
		// something.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return nil, yamlError(err)
		}
	}
	c.env = env
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// parseDocument returns the top node of the only document in data, or nil
// when data holds no document or an empty one.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, yamlError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fmt.Errorf("line %d: a second YAML document starts here; the file must hold exactly one", next.Line)
	case !errors.Is(err, io.EOF):
		return nil, yamlError(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, nil
	}
	return doc.Content[0], nil
}

// yamlError drops the library's "yaml: " prefix, keeping its "line N: ".
func yamlError(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// structChecker walks a YAML node tree alongside the Go type it will be
// decoded into and reports, with the YAML path and line, what the decoder
// would reject: unknown keys, keys given twice, and values that do not fit
// their field. The yaml library reports these with a line but without a
// path, and not at all for the text types (Addr, Duration).
type structChecker struct {
	problems
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func (sc *structChecker) addLine(path, value string, line int, msg string) {
	sc.add(path, value, "%s (line %d)", msg, line)
}

func (sc *structChecker) walk(n *yaml.Node, t reflect.Type, path string) {
	n = deref(n)
	if n == nil || isNull(n) {
		return // null leaves the zero value: "use the default"
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		sc.scalar(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		sc.walk(n, t.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			what := "must be a mapping of keys"
			if path == "" {
				what = "the file must be a mapping of keys (node, vips, services, ...)"
			}
			sc.addLine(path, scalarValue(n), n.Line, what+", not "+describe(n))
			return
		}
		sc.mapping(n, t, path, make(map[string]int), false)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			sc.addLine(path, scalarValue(n), n.Line, "must be a list, not "+describe(n))
			return
		}
		for i, e := range n.Content {
			sc.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		sc.scalar(n, t, path)
	}
}

// mapping checks the keys of n against struct type t. seen maps keys to
// the line they were first given on; keys pulled in by a merge ("<<") are
// overridden by explicit ones rather than duplicates, as in YAML.
func (sc *structChecker) mapping(n *yaml.Node, t reflect.Type, path string, seen map[string]int, merged bool) {
	fields, names := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMergeKey(k) {
			sc.merge(v, t, path, seen)
			continue
		}
		key := k.Value
		kp := joinPath(path, key)
		if k.Kind != yaml.ScalarNode {
			sc.addLine(path, "", k.Line, "a key must be a plain word, not "+describe(k))
			continue
		}
		ft, ok := fields[key]
		if !ok {
			sc.add(kp, "", "unknown key (line %d)%s", k.Line, keyHint(key, names))
			continue
		}
		if !merged {
			if first, dup := seen[key]; dup {
				sc.addLine(kp, "", k.Line, fmt.Sprintf("key given twice (first on line %d)", first))
				continue
			}
			seen[key] = k.Line
		}
		sc.walk(v, ft, kp)
	}
}

func (sc *structChecker) merge(v *yaml.Node, t reflect.Type, path string, seen map[string]int) {
	v = deref(v)
	switch {
	case v == nil:
	case v.Kind == yaml.MappingNode:
		sc.mapping(v, t, path, seen, true)
	case v.Kind == yaml.SequenceNode:
		for _, e := range v.Content {
			sc.merge(e, t, path, seen)
		}
	default:
		sc.addLine(joinPath(path, "<<"), "", v.Line, "a merge needs a mapping, not "+describe(v))
	}
}

// scalar decodes a leaf value on its own to see whether it fits type t.
func (sc *structChecker) scalar(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.ScalarNode {
		sc.addLine(path, "", n.Line, "must be a single value, not "+describe(n))
		return
	}
	err := n.Decode(reflect.New(t).Interface())
	if err == nil && n.ShortTag() == "!!float" && (t.Kind() == reflect.Int || t.Kind() == reflect.Uint16) {
		// yaml truncates 1.5 to 1 without a word.
		err = errors.New("not a whole number")
	}
	if err == nil {
		return
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		// Addr and Duration name the value in their errors already.
		sc.addLine(path, "", n.Line, err.Error())
		return
	}
	var msg string
	switch t.Kind() {
	case reflect.Bool:
		msg = "must be true or false"
	case reflect.Uint16:
		msg = "must be a number from 1 to 65535"
	case reflect.Int:
		msg = "must be a whole number"
	default:
		msg = "cannot be decoded: " + strings.TrimPrefix(err.Error(), "yaml: ")
	}
	if n.ShortTag() == "!!str" && looksNumeric(n.Value) {
		msg = "must be a number, not a quoted string"
	}
	sc.addLine(path, scalarValue(n), n.Line, msg)
}

// deref follows aliases (yaml rejects cycles while parsing).
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a single value"
	}
}

// scalarValue is the value of n as written: quoted when YAML reads it as
// a string, bare otherwise, and empty for lists and mappings.
func scalarValue(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return ""
	}
	if n.ShortTag() == "!!str" {
		return quote(n.Value)
	}
	return n.Value
}

func looksNumeric(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the yaml keys of struct type t to field types, and lists
// the keys in declaration order.
func yamlFields(t reflect.Type) (map[string]reflect.Type, []string) {
	fields := make(map[string]reflect.Type, t.NumField())
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = f.Type
		names = append(names, name)
	}
	return fields, names
}

// keyHint suggests the key the operator probably meant, or lists the keys
// allowed at this level.
func keyHint(key string, names []string) string {
	if s := closest(key, names); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return "; known keys here: " + strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// maxFileSize bounds what is read for a configuration, certificate or CA
// file; a CA bundle is a few hundred KiB.
const maxFileSize = 16 << 20

// readSmallFile reads a regular file of at most maxFileSize bytes, so that
// a path such as /dev/zero fails instead of hanging.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch {
	case st.IsDir():
		return nil, errors.New("is a directory")
	case !st.Mode().IsRegular():
		return nil, errors.New("not a regular file")
	case st.Size() > maxFileSize:
		return nil, fmt.Errorf("larger than %d MiB", maxFileSize>>20)
	}
	return io.ReadAll(io.LimitReader(f, maxFileSize+1))
}
