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
	out := data
	for _, name := range names {
		key, err := WhitelistKey(name)
		if err != nil {
			return nil, err
		}
		if out, err = editList(out, key, lists[name]); err != nil {
			return nil, fmt.Errorf("whitelists.%s: %w", key, err)
		}
	}
	if err := checkEdit(data, out, lists); err != nil {
		return nil, err
	}
	return out, nil
}

// text is a configuration file cut into lines, each with its line end.
type text struct {
	lines []string
	eol   string
}

func newText(data []byte) *text {
	t := &text{lines: strings.SplitAfter(string(data), "\n"), eol: "\n"}
	if t.lines[len(t.lines)-1] == "" {
		t.lines = t.lines[:len(t.lines)-1]
	}
	if len(t.lines) > 0 && strings.HasSuffix(t.lines[0], "\r\n") {
		t.eol = "\r\n"
	}
	return t
}

func (t *text) bytes() []byte { return []byte(strings.Join(t.lines, "")) }

// content is line i without its line end.
func (t *text) content(i int) string { return strings.TrimRight(t.lines[i], "\r\n") }

// replace puts repl in place of lines [from, to), each given without its
// line end.
func (t *text) replace(from, to int, repl []string) {
	if from > 0 && !strings.HasSuffix(t.lines[from-1], "\n") {
		t.lines[from-1] += t.eol // the file ended without a newline
	}
	ended := make([]string, len(repl))
	for i, l := range repl {
		ended[i] = l + t.eol
	}
	t.lines = slices.Concat(t.lines[:from], ended, t.lines[to:])
}

func indentOf(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

// isNote reports a line that holds no YAML value: blank or a comment.
func isNote(s string) bool {
	s = strings.TrimSpace(s)
	return s == "" || strings.HasPrefix(s, "#")
}

// region returns the lines [start, end) of the block-style pair whose key
// is k: the key's line and every line below it that is indented more,
// or as much when it continues a sequence (YAML lets "- " items sit at
// the key's indentation), without the comments and blank lines at its
// end: those introduce what follows.
func (t *text) region(k *yaml.Node) (int, int) {
	start := k.Line - 1
	indent := k.Column - 1
	end := start + 1
	for i := start + 1; i < len(t.lines); i++ {
		l := t.content(i)
		if isNote(l) {
			continue
		}
		in := indentOf(l)
		if in < indent || in == indent && !(l[in:] == "-" || strings.HasPrefix(l[in:], "- ")) {
			break
		}
		end = i + 1
	}
	return start, end
}

// keyHead is the key's line up to and including the colon after the key,
// and the comment that ends the line, if any, with the blanks before it.
func (t *text) keyHead(k *yaml.Node) (head, comment string, err error) {
	l := t.content(k.Line - 1)
	from := k.Column - 1 + len(k.Value)
	if from > len(l) {
		from = len(l)
	}
	colon := strings.IndexByte(l[from:], ':')
	if colon < 0 {
		return "", "", fmt.Errorf("line %d: cannot find the colon after %q", k.Line, k.Value)
	}
	head = l[:from+colon+1]
	rest := l[from+colon+1:]
	if i := strings.Index(rest, "#"); i >= 0 && (i == 0 || rest[i-1] == ' ' || rest[i-1] == '\t') {
		// The spaces before the comment go with it, keeping it in its column.
		j := i
		for j > 0 && (rest[j-1] == ' ' || rest[j-1] == '\t') {
			j--
		}
		comment = rest[j:]
	}
	return head, comment, nil
}

// editList sets whitelists.key to items in data.
func editList(data []byte, key string, items []string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the file is not a mapping of keys (node, vips, services, ...)")
	}
	root := doc.Content[0]
	if root.Style&yaml.FlowStyle != 0 {
		return nil, errors.New("the file is written in flow style ({...}); edit it by hand")
	}
	t := newText(data)
	wk, wv, err := pair(root, "whitelists")
	if err != nil {
		return nil, err
	}
	step := indentStep(root)
	if wk == nil {
		// Appended at the end: the schema puts whitelists late, and the
		// end is the one place sure not to split a comment from its key.
		lines := slices.Concat([]string{"whitelists:"}, listLines(strings.Repeat(" ", step), step, key, items))
		end := len(t.lines)
		if end > 0 && isNote(t.content(end-1)) && strings.TrimSpace(t.content(end-1)) != "" {
			lines = append([]string{""}, lines...)
		}
		t.replace(end, end, lines)
		return t.bytes(), nil
	}
	if err := editable(wv, "whitelists"); err != nil {
		return nil, err
	}
	switch {
	case isNull(wv) || wv.Kind == yaml.MappingNode && wv.Style&yaml.FlowStyle != 0 && len(wv.Content) == 0:
		head, comment, err := t.keyHead(wk)
		if err != nil {
			return nil, err
		}
		head = withComment(head, comment)
		start, end := t.region(wk)
		child := strings.Repeat(" ", wk.Column-1+step)
		t.replace(start, end, slices.Concat([]string{head}, listLines(child, step, key, items)))
		return t.bytes(), nil
	case wv.Kind != yaml.MappingNode:
		return nil, fmt.Errorf("whitelists must be a mapping of lists, not %s", describe(wv))
	case wv.Style&yaml.FlowStyle != 0:
		return nil, errors.New("whitelists is written in flow style ({...}); write it as a block mapping to let ober edit it")
	}
	k, v, err := pair(wv, key)
	if err != nil {
		return nil, err
	}
	if k == nil {
		_, end := t.region(wk)
		child := strings.Repeat(" ", wv.Content[0].Column-1)
		step := max(wv.Content[0].Column-wk.Column, 1)
		t.replace(end, end, listLines(child, step, key, items))
		return t.bytes(), nil
	}
	if err := editable(v, "whitelists."+key); err != nil {
		return nil, err
	}
	start, end := t.region(k)
	head, comment, err := t.keyHead(k)
	if err != nil {
		return nil, err
	}
	switch {
	case v.Kind == yaml.SequenceNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0:
		lines, err := t.blockItems(k, v, end, items)
		if err != nil {
			return nil, err
		}
		t.replace(start+1, end, lines)
		if len(items) == 0 {
			// A block sequence cannot be empty: the key line says so.
			t.replace(start, start+1, []string{withComment(head+" []", comment)})
		}
	case v.Kind == yaml.SequenceNode && len(v.Content) > 0:
		if end != start+1 {
			return nil, errors.New("a flow list ([...]) over several lines; write it on one line or as a block list to let ober edit it")
		}
		flow, err := flowList(items)
		if err != nil {
			return nil, err
		}
		t.replace(start, end, []string{withComment(head+" "+flow, comment)})
	case v.Kind == yaml.SequenceNode || isNull(v):
		in := strings.Repeat(" ", k.Column-1)
		lines := listLines(in, max(k.Column-wk.Column, 1), key, items)
		lines[0] = withComment(lines[0], comment)
		t.replace(start, end, lines)
	default:
		return nil, fmt.Errorf("must be a list, not %s", describe(v))
	}
	return t.bytes(), nil
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
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return k, m.Content[i+1], nil
		}
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

// indentStep is the indentation the file uses for nested mappings: the
// column of the first nested key; 2 when there is none.
func indentStep(root *yaml.Node) int {
	for i := 1; i < len(root.Content); i += 2 {
		v := root.Content[i]
		if v.Kind == yaml.MappingNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 {
			if c := v.Content[0].Column - root.Content[i-1].Column; c > 0 {
				return c
			}
		}
	}
	return 2
}

// listLines writes "key:" at indentation in and items as a block list
// indented by step more, or "key: []" for no items.
func listLines(in string, step int, key string, items []string) []string {
	if len(items) == 0 {
		return []string{in + key + ": []"}
	}
	lines := []string{in + key + ":"}
	for _, it := range items {
		lines = append(lines, in+strings.Repeat(" ", step)+"- "+scalar(it))
	}
	return lines
}

// blockItems rewrites the items of block list v (whose key is k and whose
// region ends before line end) as items: an item that stays keeps its
// line and the comments right above it; a new one is written in the
// style of the first item.
func (t *text) blockItems(k, v *yaml.Node, end int, items []string) ([]string, error) {
	first := t.content(v.Content[0].Line - 1)
	dash := strings.LastIndex(first[:min(v.Content[0].Column-1, len(first))], "-")
	if dash < 0 {
		return nil, fmt.Errorf("line %d: cannot find the \"-\" of the first item", v.Content[0].Line)
	}
	type block struct {
		value string
		lines []string
		used  bool
	}
	var (
		blocks   []*block
		preamble []string
		prevEnd  = k.Line // index of the line after the key
	)
	for i, it := range v.Content {
		if it.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: item %d is %s, not a single entry", it.Line, i, describe(it))
		}
		line := it.Line - 1
		headStart := line
		for headStart > prevEnd && strings.HasPrefix(strings.TrimSpace(t.content(headStart-1)), "#") {
			headStart--
		}
		if i == 0 {
			for j := prevEnd; j < headStart; j++ {
				preamble = append(preamble, t.content(j))
			}
		} else {
			b := blocks[len(blocks)-1]
			for j := prevEnd; j < headStart; j++ {
				b.lines = append(b.lines, t.content(j))
			}
		}
		b := &block{value: it.Value}
		for j := headStart; j <= line; j++ {
			b.lines = append(b.lines, t.content(j))
		}
		blocks = append(blocks, b)
		prevEnd = line + 1
	}
	last := blocks[len(blocks)-1]
	for j := prevEnd; j < end; j++ {
		last.lines = append(last.lines, t.content(j))
	}
	out := preamble
	for _, it := range items {
		i := slices.IndexFunc(blocks, func(b *block) bool { return !b.used && b.value == it })
		if i >= 0 {
			blocks[i].used = true
			out = append(out, blocks[i].lines...)
			continue
		}
		out = append(out, strings.Repeat(" ", dash)+"- "+scalar(it))
	}
	if len(items) == 0 {
		// Notes between the key and the first item went with the list.
		out = nil
	}
	return out, nil
}

// scalar writes s as a YAML value in a block context: plain when YAML
// reads it back as the same string, quoted otherwise.
func scalar(s string) string {
	b, err := yaml.Marshal(s)
	if err != nil { // a string always marshals
		return fmt.Sprintf("%q", s)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// flowList writes items as a one-line flow list.
func flowList(items []string) (string, error) {
	if len(items) == 0 {
		return "[]", nil
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, it := range items {
		seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: it})
	}
	b, err := yaml.Marshal(seq)
	if err != nil {
		return "", err
	}
	s := strings.TrimSuffix(string(b), "\n")
	if strings.Contains(s, "\n") {
		return "", errors.New("the list does not fit one line of flow style; write it as a block list")
	}
	return s, nil
}

func withComment(line, comment string) string {
	if comment == "" || comment[0] == ' ' || comment[0] == '\t' {
		return line + comment
	}
	return line + " " + comment
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
