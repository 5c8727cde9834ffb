// Package yamledit edits a YAML file in place. The file is read into a
// node tree (go.yaml.in/yaml/v3) that the caller changes; Bytes writes the
// text back with every part the changes did not touch as it was, byte for
// byte (keys, comments, blank lines, quoting, indentation), and writes
// only the changed parts anew, in the file's own indentation.
//
// ober.yaml is an operator's file, with notes in it: `ober sync` (through
// control/config) and `ober config` (the wizard) both edit it here.
//
// What counts as untouched is decided by value, not by node: a value
// replaced by an equal one keeps its text, so an edit that sets what the
// file already says changes nothing. An item of a list, or a key of a
// mapping, keeps its text and the comment lines right above it as long
// as the node read from the file stays in the tree, wherever it moves.
package yamledit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Document is a YAML file whose top level is a mapping.
type Document struct {
	doc  *yaml.Node
	raw  []string // the text's lines, each with its line end (the last may have none)
	eol  string   // the text's line end, for new lines
	orig map[*yaml.Node]*yaml.Node
	step int // the indentation of nested mappings
	// apart is set when the file puts a blank line between its top-level
	// keys: a new one gets one too.
	apart bool
}

// Parse reads data. A text without a value (empty, only comments, or a
// null) gives an empty document (Empty), which Bytes writes anew. A top level
// that is not a mapping gives a Document whose Root is nil.
func Parse(data []byte) (*Document, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(&doc)
	switch {
	case errors.Is(err, io.EOF):
		return newDocument(), nil
	case err != nil:
		return nil, err
	case len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null":
		return newDocument(), nil
	}
	d := &Document{doc: &doc, eol: "\n", orig: map[*yaml.Node]*yaml.Node{}}
	d.raw = strings.SplitAfter(string(data), "\n")
	if d.raw[len(d.raw)-1] == "" {
		d.raw = d.raw[:len(d.raw)-1]
	}
	if len(d.raw) > 0 && strings.HasSuffix(d.raw[0], "\r\n") {
		d.eol = "\r\n"
	}
	d.remember(&doc)
	if root := d.Root(); root != nil {
		d.step = indentStep(root)
		d.apart = d.setApart(root)
	}
	return d, nil
}

// newDocument is an empty document: a mapping with no keys, written
// anew.
func newDocument() *Document {
	root := &yaml.Node{Kind: yaml.MappingNode}
	return &Document{doc: &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}, eol: "\n", step: 2, apart: true}
}

// Compact has new top-level keys written without a blank line before
// them even where the file sets its keys apart: the smallest edit, for a
// tool (ober sync) that changes one value of a file a person keeps.
func (d *Document) Compact() { d.apart = false }

// Empty reports a document that had no keys when it was read.
func (d *Document) Empty() bool { return d.raw == nil }

// SetHeader gives an empty document the comment its text starts with,
// set apart from the keys by a blank line. A document read from a file
// keeps the file's.
func (d *Document) SetHeader(comment string) {
	if d.Empty() {
		d.doc.HeadComment = comment
	}
}

// Root is the top-level mapping, which the caller edits; nil when the
// file's top level is a list or a single value.
func (d *Document) Root() *yaml.Node {
	if len(d.doc.Content) == 0 || d.doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	return d.doc.Content[0]
}

// Lines is how many lines the pair of key k (a key node read from the
// file) takes in the file, the comments above it left out; 0 for a key
// the file does not have.
func (d *Document) Lines(k *yaml.Node) int {
	if d.orig[k] == nil || k.Line == 0 {
		return 0
	}
	return d.region(k, len(d.raw)) - (k.Line - 1)
}

// remember keeps a copy of every node as read, to tell later what the
// caller changed.
func (d *Document) remember(n *yaml.Node) {
	if n == nil || d.orig[n] != nil {
		return
	}
	c := *n
	c.Content = slices.Clone(n.Content)
	d.orig[n] = &c
	for _, ch := range n.Content {
		d.remember(ch)
	}
}

// same reports whether n (in the tree now) says what o (a node as read)
// said: the same kind, values and tags, the same keys and items in the
// same order, the same style of a list or mapping. Comments and the
// quoting of a single value do not count: the text keeps its own.
func (d *Document) same(n, o *yaml.Node) bool {
	s := d.orig[o]
	if n == nil || s == nil || n.Kind != s.Kind || n.Anchor != s.Anchor {
		return false
	}
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value == s.Value && n.ShortTag() == s.ShortTag()
	case yaml.AliasNode:
		return n.Value == s.Value
	}
	if n.Style&yaml.FlowStyle != s.Style&yaml.FlowStyle || len(n.Content) != len(s.Content) {
		return false
	}
	for i := range n.Content {
		if !d.same(n.Content[i], s.Content[i]) {
			return false
		}
	}
	return true
}

// content is line i without its line end.
func (d *Document) content(i int) string { return strings.TrimRight(d.raw[i], "\r\n") }

func indentOf(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

// isNote reports a line that holds no YAML value: blank or a comment.
func isNote(s string) bool {
	s = strings.TrimSpace(s)
	return s == "" || strings.HasPrefix(s, "#")
}

func isComment(s string) bool { return strings.HasPrefix(strings.TrimSpace(s), "#") }

// region is the end of the block-style pair whose key is k: its key's
// line and every line below it, before line to, that is indented more,
// or as much when it continues a sequence (YAML lets "- " items sit at
// the key's indentation), without the comments and blank lines at its
// end: those introduce what follows.
func (d *Document) region(k *yaml.Node, to int) int {
	start := k.Line - 1
	indent := k.Column - 1
	end := start + 1
	for i := start + 1; i < to; i++ {
		l := d.content(i)
		if isNote(l) {
			continue
		}
		in := indentOf(l)
		if in < indent || in == indent && !(l[in:] == "-" || strings.HasPrefix(l[in:], "- ")) {
			break
		}
		end = i + 1
	}
	return end
}

// itemEnd is the end of the item of a block list whose "-" is at column
// dash of line start: the lines below indented more.
func (d *Document) itemEnd(start, dash, to int) int {
	end := start + 1
	for i := start + 1; i < to; i++ {
		l := d.content(i)
		if isNote(l) {
			continue
		}
		if indentOf(l) <= dash {
			break
		}
		end = i + 1
	}
	return end
}

// keyHead is the key's line up to and including the colon after the key,
// and the comment that ends the line, if any, with the blanks before it.
func (d *Document) keyHead(k *yaml.Node) (head, comment string, err error) {
	l := d.content(k.Line - 1)
	from := min(k.Column-1+len(k.Value), len(l))
	colon := strings.IndexByte(l[from:], ':')
	if colon < 0 {
		return "", "", fmt.Errorf("line %d: cannot find the colon after %q", k.Line, k.Value)
	}
	head = l[:from+colon+1]
	rest := l[from+colon+1:]
	if i := strings.Index(rest, "#"); i >= 0 && (i == 0 || rest[i-1] == ' ' || rest[i-1] == '\t') {
		// The blanks before the comment go with it, keeping it in its
		// column.
		j := i
		for j > 0 && (rest[j-1] == ' ' || rest[j-1] == '\t') {
			j--
		}
		comment = rest[j:]
	}
	return head, comment, nil
}

// keptComment is comment, a node's line comment as read from line i,
// with the blanks before it on that line, when the line ends with it.
func (d *Document) keptComment(i int, comment string) string {
	l := d.content(i)
	if !strings.HasSuffix(l, comment) {
		return comment
	}
	j := len(l) - len(comment)
	for j > 0 && (l[j-1] == ' ' || l[j-1] == '\t') {
		j--
	}
	return l[j:]
}

func withComment(line, comment string) string {
	if comment == "" || comment[0] == ' ' || comment[0] == '\t' {
		return line + comment
	}
	return line + " " + comment
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

// setApart reports whether a blank line stands before some top-level key
// (or the comments above it) other than the first.
func (d *Document) setApart(root *yaml.Node) bool {
	for i := 2; i < len(root.Content); i += 2 {
		l := root.Content[i].Line - 1
		for l > 0 && isComment(d.content(l-1)) {
			l--
		}
		if l > 0 && strings.TrimSpace(d.content(l-1)) == "" {
			return true
		}
	}
	return false
}

// writer collects the new text: lines copied from the file with their
// own line ends, and new lines with the file's.
type writer struct {
	d   *Document
	out []string
}

func (w *writer) copy(from, to int) {
	w.out = append(w.out, w.d.raw[from:to]...)
}

func (w *writer) add(lines ...string) {
	for _, l := range lines {
		if n := len(w.out); n > 0 && !strings.HasSuffix(w.out[n-1], "\n") {
			w.out[n-1] += w.d.eol // the file ended without a line end
		}
		w.out = append(w.out, l+w.d.eol)
	}
}

// last is the last line written, without its line end; "" when none.
func (w *writer) last() (string, bool) {
	if len(w.out) == 0 {
		return "", false
	}
	return strings.TrimRight(w.out[len(w.out)-1], "\r\n"), true
}

// Bytes is the document's text now.
func (d *Document) Bytes() ([]byte, error) {
	w := &writer{d: d}
	root := d.Root()
	switch {
	case root == nil:
		return nil, errors.New("the top level is not a mapping")
	case d.Empty() || root.Style&yaml.FlowStyle != 0 && !d.same(root, root) || len(d.orig[root].Content) == 0 && len(root.Content) > 0:
		// Nothing to keep, or a whole file in flow style ({...}), which
		// is written anew as a block mapping.
		w.out = nil
		if d.doc.HeadComment != "" {
			w.add(commentLines(d.doc.HeadComment, 0)...)
			w.add("")
		}
		for i := 0; i+1 < len(root.Content); i += 2 {
			if err := d.newPair(w, root.Content[i], root.Content[i+1], 0, d.step, true); err != nil {
				return nil, err
			}
		}
	case root.Style&yaml.FlowStyle != 0 || len(d.orig[root].Content) == 0:
		w.copy(0, len(d.raw)) // unchanged
	default:
		if err := d.mapping(w, root, root, 0, len(d.raw), d.step, true, false); err != nil {
			return nil, err
		}
	}
	return []byte(strings.Join(w.out, "")), nil
}

// errRewrite asks the caller to write a value anew: its text cannot be
// kept in part.
var errRewrite = errors.New("rewrite")

// mapping writes m, the mapping read as om (the same node, or the one m
// replaces), whose text is lines [from, to). Keys new to it get the
// indentation of its keys, their values step more. top is set for the
// top level; item for a mapping that is an item of a list, whose first
// key shares the item's "-" line.
func (d *Document) mapping(w *writer, m, om *yaml.Node, from, to, step int, top, item bool) error {
	okeys := d.orig[om].Content
	if item && (len(m.Content) == 0 || m.Content[0] != okeys[0]) {
		return errRewrite
	}
	type chunk struct{ head, key, end, next int }
	chunks := make([]chunk, len(okeys)/2)
	prev := from
	for j := range chunks {
		k := okeys[2*j]
		c := chunk{key: k.Line - 1}
		c.head = c.key
		for c.head > prev && isComment(d.content(c.head-1)) {
			c.head--
		}
		c.end = d.region(k, to)
		chunks[j] = c
		prev = c.end
	}
	for j := range chunks {
		chunks[j].next = to
		if j+1 < len(chunks) {
			chunks[j].next = chunks[j+1].head
		}
	}
	col := okeys[0].Column - 1
	w.copy(from, chunks[0].head)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		j := slices.Index(okeys, k)
		if j < 0 || j%2 != 0 {
			if err := d.newPair(w, k, v, col, step, top); err != nil {
				return err
			}
			continue
		}
		c, ov := chunks[j/2], okeys[j+1]
		w.copy(c.head, c.key)
		if d.same(v, ov) {
			w.copy(c.key, c.end)
		} else if err := d.value(w, k, v, ov, c.end, step); err != nil {
			return err
		}
		w.copy(c.end, c.next)
	}
	return nil
}

// value writes the pair of key k (read from the file, its text ending
// before line end) with its new value v, read as ov.
func (d *Document) value(w *writer, k, v, ov *yaml.Node, end, step int) error {
	line := k.Line - 1
	o := d.orig[ov] // as read: the caller may have changed ov itself
	block := func(n *yaml.Node) bool { return n.Style&yaml.FlowStyle == 0 && len(n.Content) > 0 }
	switch {
	case v.Kind == yaml.MappingNode && o.Kind == yaml.MappingNode && block(v) && block(o) && o.Content[0].Line-1 > line:
		w.copy(line, line+1)
		sub := o.Content[0].Column - k.Column
		if sub <= 0 {
			sub = step
		}
		return d.mapping(w, v, ov, line+1, end, sub, false, false)
	case v.Kind == yaml.SequenceNode && o.Kind == yaml.SequenceNode && block(v) && block(o) && o.Content[0].Line-1 > line:
		w.copy(line, line+1)
		return d.sequence(w, v, ov, line+1, end, step)
	}
	head, comment, err := d.keyHead(k)
	if err != nil {
		return err
	}
	if s, ok, err := inline(v); err != nil {
		return fmt.Errorf("line %d: %s %w", k.Line, k.Value, err)
	} else if ok {
		w.add(withComment(head+" "+s, comment))
		return nil
	}
	w.add(withComment(head, comment))
	lines, err := d.block(v, k.Column-1+step, step)
	if err != nil {
		return err
	}
	w.add(lines...)
	return nil
}

// sequence writes s, the block list read as os, whose text is lines
// [from, to).
func (d *Document) sequence(w *writer, s, os *yaml.Node, from, to, step int) error {
	oitems := d.orig[os].Content
	first := d.content(oitems[0].Line - 1)
	dash := strings.LastIndex(first[:min(oitems[0].Column-1, len(first))], "-")
	if dash < 0 {
		// "-" alone on its line, the item below it.
		for i := from; i < oitems[0].Line-1; i++ {
			if l := d.content(i); !isNote(l) && strings.HasPrefix(strings.TrimSpace(l), "-") {
				return d.rewriteSequence(w, s, indentOf(l), step)
			}
		}
		return fmt.Errorf("line %d: cannot find the \"-\" of the first item", oitems[0].Line)
	}
	type chunk struct{ head, line, end, next int }
	chunks := make([]chunk, len(oitems))
	prev := from
	for i, it := range oitems {
		c := chunk{line: it.Line - 1}
		if l := d.content(c.line); len(l) <= dash || l[dash] != '-' {
			// An item that does not start on its "-" line ("-" alone,
			// then a mapping below): written anew rather than guessed.
			return d.rewriteSequence(w, s, dash, step)
		}
		c.head = c.line
		for c.head > prev && isComment(d.content(c.head-1)) {
			c.head--
		}
		c.end = d.itemEnd(c.line, dash, to)
		chunks[i] = c
		prev = c.line + 1
	}
	for i := range chunks {
		chunks[i].next = to
		if i+1 < len(chunks) {
			chunks[i].next = chunks[i+1].head
		}
	}
	w.copy(from, chunks[0].head)
	used := make([]bool, len(oitems))
	for _, it := range s.Content {
		i := slices.Index(oitems, it)
		if i < 0 || used[i] {
			if err := d.newItem(w, it, dash, step); err != nil {
				return err
			}
			continue
		}
		used[i] = true
		c := chunks[i]
		if d.same(it, oitems[i]) {
			w.copy(c.head, c.next)
			continue
		}
		w.copy(c.head, c.line)
		// A mapping item keeps the lines of its keys that stay; anything
		// else changed is written anew.
		err := errRewrite
		if o := d.orig[it]; it.Kind == yaml.MappingNode && it.Style&yaml.FlowStyle == 0 &&
			o.Kind == yaml.MappingNode && o.Style&yaml.FlowStyle == 0 && len(o.Content) > 0 {
			err = d.mapping(w, it, it, c.line, c.end, step, false, true)
		}
		if errors.Is(err, errRewrite) {
			if c.end == c.line+1 && it.LineComment != "" {
				// An item of one line written again keeps the column of
				// the comment that ends it, as a changed value does.
				kept := *it
				kept.LineComment = d.keptComment(c.line, it.LineComment)
				it = &kept
			}
			err = d.newItem(w, it, dash, step)
		}
		if err != nil {
			return err
		}
		w.copy(c.end, c.next)
	}
	return nil
}

// rewriteSequence writes the items of s anew in place of lines [from,
// to); the comments read with them (yaml keeps them on the nodes) go
// with them.
func (d *Document) rewriteSequence(w *writer, s *yaml.Node, dash, step int) error {
	for _, it := range s.Content {
		if err := d.newItem(w, it, dash, step); err != nil {
			return err
		}
	}
	return nil
}

// newPair writes a pair that is not in the file, its key at column col
// and what is under its value step more.
// A new top-level key is set apart by a blank line when the file sets
// its top-level keys apart, or when it follows a comment (which belongs
// to what it stands above).
func (d *Document) newPair(w *writer, k, v *yaml.Node, col, step int, top bool) error {
	if last, ok := w.last(); top && ok && strings.TrimSpace(last) != "" && (d.apart || isComment(last)) {
		w.add("")
	}
	lines, err := d.pair(k, v, col, step)
	if err != nil {
		return err
	}
	w.add(lines...)
	return nil
}

// pair writes key k and value v anew, the key at column col.
func (d *Document) pair(k, v *yaml.Node, col, step int) ([]string, error) {
	in := strings.Repeat(" ", col)
	key, err := scalar(k)
	if err != nil {
		return nil, err
	}
	lines := commentLines(k.HeadComment, col)
	lc := v.LineComment
	if lc == "" {
		lc = k.LineComment
	}
	if s, ok, err := inline(v); err != nil {
		return nil, fmt.Errorf("%s %w", k.Value, err)
	} else if ok {
		lines = append(lines, withComment(in+key+": "+s, lc))
	} else {
		lines = append(lines, withComment(in+key+":", lc))
		sub, err := d.block(v, col+step, step)
		if err != nil {
			return nil, err
		}
		lines = append(lines, sub...)
	}
	for _, n := range []*yaml.Node{k, v} {
		lines = append(lines, commentLines(n.FootComment, col)...)
	}
	return lines, nil
}

// newItem writes an item of a block list anew, its "-" at column dash.
func (d *Document) newItem(w *writer, it *yaml.Node, dash, step int) error {
	lines, err := d.item(it, dash, step)
	if err != nil {
		return err
	}
	w.add(lines...)
	return nil
}

func (d *Document) item(it *yaml.Node, dash, step int) ([]string, error) {
	in := strings.Repeat(" ", dash)
	lines := commentLines(it.HeadComment, dash)
	if s, ok, err := inline(it); err != nil {
		return nil, fmt.Errorf("an item %w", err)
	} else if ok {
		return append(lines, withComment(in+"- "+s, it.LineComment)), nil
	}
	// A list or mapping item: its first line shares the "-"; comments
	// above its first key go above the "-".
	var body []string
	var err error
	if it.Kind == yaml.MappingNode {
		k := *it.Content[0]
		lines = append(lines, commentLines(k.HeadComment, dash)...)
		k.HeadComment = ""
		c := *it
		c.Content = slices.Concat([]*yaml.Node{&k}, it.Content[1:])
		body, err = d.block(&c, dash+2, step)
	} else {
		body, err = d.block(it, dash+2, step)
	}
	if err != nil {
		return nil, err
	}
	body[0] = in + "- " + body[0][dash+2:]
	return append(lines, body...), nil
}

// block writes a mapping or list in block style, at column col.
func (d *Document) block(n *yaml.Node, col, step int) ([]string, error) {
	var lines []string
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p, err := d.pair(n.Content[i], n.Content[i+1], col, step)
			if err != nil {
				return nil, err
			}
			lines = append(lines, p...)
		}
	case yaml.SequenceNode:
		for _, it := range n.Content {
			p, err := d.item(it, col, step)
			if err != nil {
				return nil, err
			}
			lines = append(lines, p...)
		}
	default:
		return nil, fmt.Errorf("line %d: cannot write a %v in block style", n.Line, n.Kind)
	}
	return lines, nil
}

// commentLines writes a node's comment as lines at column col; a line
// not starting with "#" gets one.
func commentLines(c string, col int) []string {
	if c == "" {
		return nil
	}
	in := strings.Repeat(" ", col)
	var lines []string
	for _, l := range strings.Split(c, "\n") {
		switch t := strings.TrimSpace(l); {
		case t == "":
			lines = append(lines, "#")
		case strings.HasPrefix(t, "#"):
			lines = append(lines, in+t)
		default:
			lines = append(lines, in+"# "+t)
		}
	}
	return lines
}

// inline writes n on one line, as it follows "key: " or "- ": a single
// value, an alias, a list or mapping in flow style, or an empty one. ok
// is false for a list or mapping in block style.
func inline(n *yaml.Node) (s string, ok bool, err error) {
	switch {
	case n.Kind == yaml.AliasNode:
		return "*" + n.Value, true, nil
	case n.Kind == yaml.ScalarNode:
		s, err := scalar(n)
		if err != nil {
			return "", false, err
		}
		if n.Anchor != "" {
			s = "&" + n.Anchor + " " + s
		}
		return s, true, nil
	case n.Kind != yaml.MappingNode && n.Kind != yaml.SequenceNode:
		return "", false, fmt.Errorf("is a %v, which cannot be written here", n.Kind)
	case n.Style&yaml.FlowStyle == 0 && len(n.Content) > 0:
		return "", false, nil
	}
	c := bare(n)
	c.Style |= yaml.FlowStyle
	b, err := yaml.Marshal(c)
	if err != nil {
		return "", false, err
	}
	s = strings.TrimSuffix(string(b), "\n")
	if strings.Contains(s, "\n") {
		return "", false, errors.New("does not fit one line of flow style; write it as a block list or mapping")
	}
	return s, true, nil
}

// scalar writes a single value: a string plainly when YAML (1.1 as well
// as 1.2) reads it back as the same string, quoted otherwise; other
// values as their tag says. A value of several lines is quoted on one.
func scalar(n *yaml.Node) (string, error) {
	var b []byte
	var err error
	switch {
	case n.Style == 0 && n.ShortTag() == "!!str":
		b, err = yaml.Marshal(n.Value)
	default:
		c := bare(n)
		c.Anchor = "" // the caller writes it
		if c.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			c.Style = yaml.DoubleQuotedStyle
		}
		b, err = yaml.Marshal(c)
	}
	if err != nil {
		return "", err
	}
	s := strings.TrimSuffix(string(b), "\n")
	if strings.Contains(s, "\n") {
		c := bare(n)
		c.Anchor, c.Style = "", yaml.DoubleQuotedStyle
		if b, err = yaml.Marshal(c); err != nil {
			return "", err
		}
		s = strings.TrimSuffix(string(b), "\n")
	}
	return s, nil
}

// bare is a copy of n and everything under it without comments, for the
// yaml encoder.
func bare(n *yaml.Node) *yaml.Node {
	c := *n
	c.HeadComment, c.LineComment, c.FootComment = "", "", ""
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, ch := range n.Content {
		c.Content[i] = bare(ch)
	}
	return &c
}
