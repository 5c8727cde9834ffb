package backends

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/yamledit"
)

// Edit returns data, the text of a configuration file, with req applied,
// and what it changed. Only the lines that hold the backend's changed
// values change (a backend written in flow style, {...}, is written again
// on its line); every other line stays byte for byte. A backend matched
// by its default name gets that name written into it. When the file says
// what req asks already, Edit returns data itself and Result.Changed is
// false.
//
// The edited text is checked before it is returned: it must decode to
// what data decodes to except the backend's changed keys, keep every
// comment, and load (config.Parse); the error of one that does not load
// is a *LoadError.
func Edit(data []byte, req Request) ([]byte, Result, error) {
	switch {
	case req.Service == "":
		return nil, Result{}, errors.New("no service given")
	case req.Backend == "":
		return nil, Result{}, errors.New("no backend given")
	case req.Weight == nil && req.State == "":
		return nil, Result{}, errors.New("nothing to set: give a weight or a state")
	}
	cfg, err := lookupConfig(data)
	if err != nil {
		return nil, Result{}, err
	}
	at, err := find(cfg, req.Service, req.Pool, req.Backend)
	if err != nil {
		return nil, Result{}, err
	}
	path := fmt.Sprintf("%s[%d]", at.spec.Path, at.index)
	if err := checkRequest(req, path); err != nil {
		return nil, Result{}, err
	}
	srv := at.spec.Servers[at.index]
	res := Result{Service: at.service, Pool: at.spec.Ref.Pool, Backend: srv.Name, Path: path}
	if at.spec.Shared {
		res.SharedBy = sharedBy(cfg)
	}
	oldWeight := config.DefaultWeight
	if srv.Weight != nil {
		oldWeight = *srv.Weight
	}
	oldState := srv.State
	if oldState == "" {
		oldState = config.DefaultState
	}
	if req.Weight != nil && *req.Weight != oldWeight {
		res.Changes = append(res.Changes, Change{Field: "weight", Path: path + ".weight",
			Old: strconv.Itoa(oldWeight), New: strconv.Itoa(*req.Weight)})
	}
	if req.State != "" && req.State != oldState {
		res.Changes = append(res.Changes, Change{Field: "state", Path: path + ".state", Old: oldState, New: req.State})
	}
	if len(res.Changes) == 0 {
		return data, res, nil
	}

	out, named, err := rewrite(data, path, srv.Name, res.Changes)
	if err != nil {
		return nil, Result{}, fmt.Errorf("%s: %w; nothing was written", path, err)
	}
	if _, err := config.Parse(out); err != nil {
		return nil, Result{}, &LoadError{Err: err}
	}
	res.Changed, res.Named = true, named
	return out, res, nil
}

// lookupConfig is what data says, defaults filled, to find the backend
// in. A file that does not validate is read anyway when it decodes (the
// edit may be what repairs it: a weight of 300 set back to 100); the
// edited file must load in any case.
func lookupConfig(data []byte) (*config.Config, error) {
	cfg, err := config.Parse(data)
	if err == nil {
		return cfg, nil
	}
	var c config.Config
	if yaml.Unmarshal(data, &c) != nil {
		return nil, &LoadError{Err: err, before: true}
	}
	c.ApplyDefaults()
	return &c, nil
}

// rewrite sets the changed values in the backend at path (of the form
// PoolSpec.Path + "[i]") and checks the result. named reports that the
// backend's name was written.
func rewrite(data []byte, path, name string, changes []Change) (out []byte, named bool, err error) {
	doc, err := yamledit.Parse(data)
	if err != nil {
		return nil, false, err
	}
	root := doc.Root()
	if root == nil {
		return nil, false, errors.New("the file is not a mapping of keys")
	}
	if root.Style&yaml.FlowStyle != 0 {
		return nil, false, errors.New("the file is written in flow style ({...}); edit it by hand")
	}
	shared := aliased(root)
	m, flow, err := locate(root, path, shared)
	if err != nil {
		return nil, false, err
	}
	if m.Kind != yaml.MappingNode {
		return nil, false, fmt.Errorf("line %d: a backend must be a mapping of keys", m.Line)
	}
	if flow != nil {
		lines := strings.Split(string(data), "\n")
		if flow.Line < 1 || flow.Line > len(lines) || !oneLine(lines[flow.Line-1], flow.Column) {
			return nil, false, fmt.Errorf("line %d: a flow-style list or mapping ([...] or {...}) over several lines; write it on one line or in block style to let ober edit it", flow.Line)
		}
	}
	if yamledit.Find(m, "name") < 0 {
		// Written last: a new first key would have the item written anew.
		yamledit.Set(m, "name", yamledit.Str(name), "")
		named = true
	}
	for _, c := range changes {
		// Replacing an alias changes this place only; replacing what an
		// alias refers to would break that alias.
		if i := yamledit.Find(m, c.Field); i >= 0 && shared[m.Content[i+1]] {
			v := m.Content[i+1]
			return nil, false, fmt.Errorf("line %d: %s is shared through a YAML anchor (&%s); edit the file by hand", v.Line, c.Field, v.Anchor)
		}
		v := yamledit.Str(c.New)
		if c.Field == "weight" {
			n, _ := strconv.ParseUint(c.New, 10, 16)
			v = yamledit.Int(n)
		}
		yamledit.Set(m, c.Field, v, "")
	}
	if out, err = doc.Bytes(); err != nil {
		return nil, false, err
	}
	want := map[string]string{"name": name}
	for _, c := range changes {
		want[c.Field] = c.New
	}
	if err := checkEdit(data, out, path, want); err != nil {
		return nil, false, err
	}
	return out, named, nil
}

// segment is one step of a path: a key, then an index when idx >= 0.
type segment struct {
	key string
	idx int
}

// parsePath splits "services[2].pools[0].backends[1]".
func parsePath(path string) ([]segment, error) {
	var segs []segment
	for _, part := range strings.Split(path, ".") {
		s := segment{key: part, idx: -1}
		if k, rest, ok := strings.Cut(part, "["); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
			if err != nil || !strings.HasSuffix(rest, "]") || n < 0 {
				return nil, fmt.Errorf("bad path %q", path)
			}
			s = segment{key: k, idx: n}
		}
		segs = append(segs, s)
	}
	return segs, nil
}

// locate finds the node at path under root. Every step must be written
// where the path says: a value that comes from a YAML merge (<<) or an
// alias, or that other places share through an anchor, would make the
// edit change, or fail to change, those places too. flow is the first
// node of the path in flow style ([...] or {...}), which is written
// again as a whole when anything in it changes; nil when there is none.
func locate(root *yaml.Node, path string, shared map[*yaml.Node]bool) (n, flow *yaml.Node, err error) {
	segs, err := parsePath(path)
	if err != nil {
		return nil, nil, err
	}
	n = root
	for _, s := range segs {
		i := yamledit.Find(n, s.key)
		if i < 0 {
			return nil, nil, fmt.Errorf("line %d: %s is not written in the file (a YAML merge, <<?); edit the file by hand", n.Line, s.key)
		}
		n = n.Content[i+1]
		if err := own(n, s.key, shared); err != nil {
			return nil, nil, err
		}
		if flow == nil && n.Style&yaml.FlowStyle != 0 {
			flow = n
		}
		if s.idx < 0 {
			continue
		}
		if n.Kind != yaml.SequenceNode || s.idx >= len(n.Content) {
			return nil, nil, fmt.Errorf("line %d: %s is not a list of %d items or more", n.Line, s.key, s.idx+1)
		}
		n = n.Content[s.idx]
		if err := own(n, fmt.Sprintf("%s[%d]", s.key, s.idx), shared); err != nil {
			return nil, nil, err
		}
		if flow == nil && n.Style&yaml.FlowStyle != 0 {
			flow = n
		}
	}
	return n, flow, nil
}

// own refuses a node that is an alias or that an alias refers to.
func own(n *yaml.Node, what string, shared map[*yaml.Node]bool) error {
	switch {
	case n.Kind == yaml.AliasNode:
		return fmt.Errorf("line %d: %s is a YAML alias (*%s); edit the file by hand", n.Line, what, n.Value)
	case shared[n]:
		return fmt.Errorf("line %d: %s is shared through a YAML anchor (&%s); edit the file by hand", n.Line, what, n.Anchor)
	}
	return nil
}

// oneLine reports whether the flow collection starting at column col
// (1-based) of line ends on that line: its brackets close before the
// line does. Inside quotes a bracket is text; a plain value cannot hold
// one in flow style.
func oneLine(line string, col int) bool {
	depth := 0
	for i := col - 1; i < len(line); i++ {
		switch c := line[i]; c {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return true
			}
		case '"':
			for i++; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' {
					i++
				}
			}
		case '\'':
			// '' inside single quotes is a quote: the loop sees it as the
			// end of one quoted part and the start of the next.
			for i++; i < len(line) && line[i] != '\''; i++ {
			}
		case '#':
			if i > 0 && (line[i-1] == ' ' || line[i-1] == '\t') {
				return false
			}
		}
	}
	return false
}

// aliased is the set of nodes some alias refers to.
func aliased(n *yaml.Node) map[*yaml.Node]bool {
	set := map[*yaml.Node]bool{}
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			set[n.Alias] = true
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return set
}

// checkEdit decodes before and after: the backend at path must hold want
// after, and everything else read as before; and every comment must
// still be there.
func checkEdit(before, after []byte, path string, want map[string]string) error {
	var b, a any
	if err := yaml.Unmarshal(before, &b); err != nil {
		return err
	}
	if err := yaml.Unmarshal(after, &a); err != nil {
		return fmt.Errorf("the edit broke the YAML (%v)", err)
	}
	segs, err := parsePath(path)
	if err != nil {
		return err
	}
	mb, mbOK := at(b, segs).(map[string]any)
	ma, maOK := at(a, segs).(map[string]any)
	if !mbOK || !maOK {
		return errors.New("the edited backend cannot be found again")
	}
	for k, v := range want {
		// As text: a name such as 7 reads back as a number.
		if got := fmt.Sprint(ma[k]); got != v {
			return fmt.Errorf("%s reads back as %q after the edit, not %q", k, got, v)
		}
		// The keys set are taken out of both to compare the rest.
		delete(ma, k)
		delete(mb, k)
	}
	if !reflect.DeepEqual(a, b) {
		return errors.New("the edit changed other keys")
	}
	cb, err := comments(before)
	if err != nil {
		return err
	}
	ca, err := comments(after)
	if err != nil {
		return err
	}
	if !slices.Equal(ca, cb) {
		return errors.New("the edit would lose a comment inside a flow-style ([...] or {...}) list or mapping; write it in block style to let ober edit it")
	}
	return nil
}

// at is the value at segs in a decoded document; nil when there is none.
func at(v any, segs []segment) any {
	for _, s := range segs {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[s.key]
		if s.idx >= 0 {
			l, ok := v.([]any)
			if !ok || s.idx >= len(l) {
				return nil
			}
			v = l[s.idx]
		}
	}
	return v
}

// comments lists the comment lines of a YAML text, sorted: the yaml
// library keeps them on the nodes, so a comment the rewriting of a value
// dropped is missing here.
func comments(data []byte) ([]string, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, err
	}
	var out []string
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		for _, c := range []string{n.HeadComment, n.LineComment, n.FootComment} {
			for _, l := range strings.Split(c, "\n") {
				if l = strings.TrimSpace(l); l != "" {
					out = append(out, l)
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	slices.Sort(out)
	return out, nil
}
