package mgmt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/yamledit"
)

// GenerationKey is the read-only field every object's JSON form carries:
// how many changes the object has had. A Put or Patch body may hold it
// (a client sends back what it read); it is ignored there, If-Match is
// what checks it.
const GenerationKey = "generation"

// Edited says what Edit changed.
type Edited struct {
	// Service is the service's name (a Create without one: the default
	// name the file gives it); Backend and Pool the backend's, for
	// KindBackend (Pool: config.DefaultPool or one of its pools[]).
	Service, Backend, Pool string
	// SharedBy lists, when the backend is in the top-level
	// backends.servers, every service that uses it: the change applies
	// to all of them.
	SharedBy []string
	// Deleted is set when the object is gone.
	Deleted bool
}

// checkName refuses a name the API cannot take: config's rule
// (letters, digits, ".", "_", "-"), and "." and ".." which would read as
// path steps in a URL.
func checkName(field, name string) error {
	switch {
	case name == "":
		return Errorf(http.StatusBadRequest, field, "%s: a name is required", field)
	case name == "." || name == ".." || strings.Contains(name, "/"):
		return Errorf(http.StatusBadRequest, field, "%s: %q: not a usable name (no \"/\", \".\" or \"..\")", field, name)
	case !config.ValidName(name):
		return Errorf(http.StatusBadRequest, field, "%s: %q: may contain only letters, digits, \".\", \"_\" and \"-\"", field, name)
	}
	return nil
}

// bodyNode reads a JSON object into a YAML mapping, keys in the body's
// order, numbers as YAML integers or floats, null as YAML's null (which
// a merge patch reads as "delete").
func bodyNode(body []byte) (*yaml.Node, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, Errorf(http.StatusBadRequest, "", "the body is empty: a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	n, err := jsonValue(dec)
	if err == nil {
		if _, e := dec.Token(); !errors.Is(e, io.EOF) {
			err = errors.New("more than one JSON value")
		}
	}
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, "", "malformed JSON: %v", err)
	}
	if n.Kind != yaml.MappingNode {
		return nil, Errorf(http.StatusBadRequest, "", "the body must be a JSON object, not %s", describeNode(n))
	}
	return n, nil
}

func jsonValue(dec *json.Decoder) (*yaml.Node, error) {
	t, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch v := t.(type) {
	case json.Delim:
		switch v {
		case '{':
			m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				if seen[k] {
					return nil, fmt.Errorf("key %q given twice", k)
				}
				seen[k] = true
				val, err := jsonValue(dec)
				if err != nil {
					return nil, err
				}
				m.Content = append(m.Content, yamledit.Str(k), val)
			}
			_, err := dec.Token()
			return m, err
		case '[':
			s := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{}}
			for dec.More() {
				val, err := jsonValue(dec)
				if err != nil {
					return nil, err
				}
				s.Content = append(s.Content, val)
			}
			_, err := dec.Token()
			return s, err
		}
		return nil, fmt.Errorf("unexpected %v", v)
	case string:
		return yamledit.Str(v), nil
	case bool:
		return yamledit.Bool(v), nil
	case json.Number:
		if _, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: v.String()}, nil
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: v.String()}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", t)
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

func isNullNode(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// nodeValue is what n says, as generic values (maps, lists, strings,
// numbers), aliases and merges resolved.
func nodeValue(n *yaml.Node) (any, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// sameValue reports whether two nodes say the same thing.
func sameValue(a, b *yaml.Node) bool {
	va, errA := nodeValue(a)
	vb, errB := nodeValue(b)
	return errA == nil && errB == nil && reflect.DeepEqual(va, vb)
}

// objectValue is an object's JSON form without its generation: its
// keys as the file writes them, and its name when the file leaves it
// to the default.
func objectValue(n *yaml.Node, name string) (map[string]any, error) {
	v, err := nodeValue(n)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		if v != nil {
			return nil, fmt.Errorf("line %d: not a mapping of keys", n.Line)
		}
		m = map[string]any{}
	}
	if _, ok := m["name"]; !ok && name != "" {
		m["name"] = name
	}
	return m, nil
}

// objectJSON writes an object's value with its generation.
func objectJSON(v map[string]any, gen uint64) (json.RawMessage, error) {
	out := make(map[string]any, len(v)+1)
	for k, x := range v {
		out[k] = x
	}
	out[GenerationKey] = gen
	return json.Marshal(out)
}

// mergePatch applies patch to target as RFC 7396 says: an object merges
// key by key, null deletes, anything else replaces. target is changed in
// place (so that the keys the patch does not name keep their lines) and
// returned; a patch that is not an object replaces it.
func mergePatch(target, patch *yaml.Node) *yaml.Node {
	if patch.Kind != yaml.MappingNode {
		return patch
	}
	if target == nil || target.Kind != yaml.MappingNode {
		target = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	for i := 0; i+1 < len(patch.Content); i += 2 {
		k, v := patch.Content[i].Value, patch.Content[i+1]
		if isNullNode(v) {
			yamledit.Remove(target, k)
			continue
		}
		old := yamledit.Get(target, k)
		if v.Kind == yaml.MappingNode && old != nil && old.Kind == yaml.MappingNode {
			mergePatch(old, v)
			continue
		}
		if old != nil && sameValue(old, v) {
			continue
		}
		// A list keeps the items that stay, with their lines.
		yamledit.Set(target, k, replace(old, stripNulls(v)), "")
	}
	return target
}

// stripNulls drops the null members of the objects in a patch's new
// value: RFC 7396 writes none of them.
func stripNulls(n *yaml.Node) *yaml.Node {
	switch n.Kind {
	case yaml.MappingNode:
		out := &yaml.Node{Kind: yaml.MappingNode, Tag: n.Tag}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !isNullNode(n.Content[i+1]) {
				out.Content = append(out.Content, n.Content[i], stripNulls(n.Content[i+1]))
			}
		}
		return out
	case yaml.SequenceNode:
		out := &yaml.Node{Kind: yaml.SequenceNode, Tag: n.Tag, Content: []*yaml.Node{}}
		for _, c := range n.Content {
			out.Content = append(out.Content, stripNulls(c))
		}
		return out
	}
	return n
}

// replace makes old say what n says, keeping every node of old whose
// value stays (its lines and comments stay with it): a mapping key by
// key in old's order, new keys last; a list item by item, an item
// matched by its name, or else by its value. It returns the node to put
// in old's place.
func replace(old, n *yaml.Node) *yaml.Node {
	old = yamledit.Deref(old)
	switch {
	case old == nil:
		return n
	case sameValue(old, n):
		return old
	case old.Kind == yaml.MappingNode && n.Kind == yaml.MappingNode:
		var keep []*yaml.Node
		for i := 0; i+1 < len(old.Content); i += 2 {
			k := old.Content[i]
			if nv := yamledit.Get(n, k.Value); nv != nil {
				keep = append(keep, k, replace(old.Content[i+1], nv))
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if yamledit.Find(old, n.Content[i].Value) < 0 {
				keep = append(keep, n.Content[i], n.Content[i+1])
			}
		}
		old.Content = keep
		return old
	case old.Kind == yaml.SequenceNode && n.Kind == yaml.SequenceNode:
		used := map[*yaml.Node]bool{}
		items := make([]*yaml.Node, 0, len(n.Content))
		for _, it := range n.Content {
			var match *yaml.Node
			for _, o := range old.Content {
				if used[o] {
					continue
				}
				if sameValue(o, it) || sameName(o, it) {
					match = o
					break
				}
			}
			if match == nil {
				items = append(items, it)
				continue
			}
			used[match] = true
			items = append(items, replace(match, it))
		}
		old.Content = items
		return old
	}
	return n
}

func sameName(a, b *yaml.Node) bool {
	a, b = yamledit.Deref(a), yamledit.Deref(b)
	if a == nil || b == nil || a.Kind != yaml.MappingNode || b.Kind != yaml.MappingNode {
		return false
	}
	na, nb := yamledit.Get(a, "name"), yamledit.Get(b, "name")
	return na != nil && nb != nil && na.Kind == yaml.ScalarNode && nb.Kind == yaml.ScalarNode && na.Value == nb.Value
}

// lineSuffix is the " (line N)" config's structural problems end with:
// the line of the API's body means nothing to its client.
var lineSuffix = regexp.MustCompile(` \(line \d+\)`)

// checkShape checks an object's keys and value types, as config.Parse
// does and with its words, by parsing it alone in a file of its own: a
// service as services[0], a backend as backends.servers[0]. Only those
// structural problems are reported (400), under field, the object's
// place in the API's form; the rest is the whole file's validation.
func checkShape(kind Kind, obj *yaml.Node, field string) error {
	doc := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	list := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{stripNulls(obj)}}
	prefix := "services[0]"
	if kind == KindBackend {
		yamledit.Set(doc, "backends", &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map",
			Content: []*yaml.Node{yamledit.Str("servers"), list}}, "")
		prefix = "backends.servers[0]"
	} else {
		yamledit.Set(doc, "services", list, "")
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return Errorf(http.StatusBadRequest, field, "%s: %v", field, err)
	}
	_, err = config.Parse(data)
	var first *config.FieldError
	var msgs []string
	for _, fe := range fieldErrors(err) {
		if !lineSuffix.MatchString(fe.Msg) {
			continue
		}
		e := *fe
		e.Msg = lineSuffix.ReplaceAllString(e.Msg, "")
		e.Path = field + strings.TrimPrefix(e.Path, prefix)
		if first == nil {
			first = &e
		}
		msgs = append(msgs, e.Error())
	}
	if first == nil {
		return nil
	}
	return &Error{Status: http.StatusBadRequest, Field: first.Path, Message: strings.Join(msgs, "; ")}
}

// fieldErrors lists the *config.FieldError of a (joined) error.
func fieldErrors(err error) []*config.FieldError {
	if err == nil {
		return nil
	}
	var out []*config.FieldError
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*config.FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// doc is the file being edited: its tree and what it says.
type doc struct {
	y    *yamledit.Document
	root *yaml.Node
	cfg  *config.Config
}

// parseDoc reads data once: the tree to edit, and what it says decoded
// from that tree with the defaults applied, as config.Parse would give
// it but without its checks. That is all an edit needs to find its
// objects, a file that does not validate can still be corrected through
// the API, and the Store validates the result anyway.
func parseDoc(data []byte) (*doc, error) {
	y, err := yamledit.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("ober.yaml does not load: %s", config.OneLine(err))
	}
	root := y.Root()
	if root == nil {
		return nil, errors.New("ober.yaml: the top level is not a mapping of keys")
	}
	var c config.Config
	if err := root.Decode(&c); err != nil {
		// config.Parse says it with the field's path.
		if _, perr := config.Parse(data); perr != nil {
			err = perr
		}
		return nil, fmt.Errorf("ober.yaml does not load: %s", config.OneLine(err))
	}
	c.ApplyDefaults()
	return &doc{y: y, root: root, cfg: &c}, nil
}

// docOf is parseDoc for data that cfg is already the reading of.
func docOf(data []byte, cfg *config.Config) (*doc, error) {
	y, err := yamledit.Parse(data)
	if err != nil {
		return nil, err
	}
	root := y.Root()
	if root == nil {
		return nil, errors.New("ober.yaml: the top level is not a mapping of keys")
	}
	return &doc{y: y, root: root, cfg: cfg}, nil
}

// services is the services list as written, nil when there is none.
func (d *doc) services() *yaml.Node {
	s := yamledit.Get(d.root, "services")
	if s == nil || s.Kind != yaml.SequenceNode {
		return nil
	}
	return s
}

// service is the index of the service named name and its mapping, -1
// when there is none.
func (d *doc) service(name string) (int, *yaml.Node) {
	seq := d.services()
	for i := range d.cfg.Services {
		if d.cfg.Services[i].Name == name && seq != nil && i < len(seq.Content) {
			return i, yamledit.Deref(seq.Content[i])
		}
	}
	return -1, nil
}

// pool is one of a service's lists of backends, where the file has it.
type pool struct {
	spec config.PoolSpec
	// owner holds the list under key "backends" ("servers" for the
	// shared pool); list is nil until the list is written.
	owner *yaml.Node
	key   string
	list  *yaml.Node
}

func (p *pool) item(i int) *yaml.Node {
	if p.list == nil || i >= len(p.list.Content) {
		return nil
	}
	return yamledit.Deref(p.list.Content[i])
}

// pools lists services[si]'s pools (config.ServicePools) with their
// nodes.
func (d *doc) pools(si int, svc *yaml.Node) []pool {
	var out []pool
	for _, spec := range d.cfg.ServicePools(si) {
		p := pool{spec: spec, key: "backends"}
		switch {
		case spec.Shared:
			p.owner, p.key = yamledit.Get(d.root, "backends"), "servers"
		case spec.Ref.Pool == config.DefaultPool:
			p.owner = svc
		default:
			if ps := yamledit.Get(svc, "pools"); ps != nil && ps.Kind == yaml.SequenceNode {
				for j := range d.cfg.Services[si].Pools {
					if d.cfg.Services[si].Pools[j].Name == spec.Ref.Pool && j < len(ps.Content) {
						p.owner = yamledit.Deref(ps.Content[j])
					}
				}
			}
		}
		if p.owner != nil {
			if l := yamledit.Get(p.owner, p.key); l != nil && l.Kind == yaml.SequenceNode {
				p.list = l
			}
		}
		out = append(out, p)
	}
	return out
}

// sharedBy lists the services on the top-level backends.servers.
func (d *doc) sharedBy() []string {
	var out []string
	for i := range d.cfg.Services {
		if specs := d.cfg.ServicePools(i); len(specs) > 0 && specs[0].Shared {
			out = append(out, d.cfg.Services[i].Name)
		}
	}
	return out
}

// backendAt is a backend found: its pool and index there.
type backendAt struct {
	pool  pool
	index int
}

// findBackend looks for backend in service si's pools (in poolName
// alone when set). It returns found false, and no error, when the
// backend is in none of them.
func (d *doc) findBackend(si int, svc *yaml.Node, service, backend, poolName string) (backendAt, bool, error) {
	ps := d.pools(si, svc)
	if poolName != "" && poolName != config.DefaultPool {
		known := false
		for _, p := range ps {
			known = known || p.spec.Ref.Pool == poolName
		}
		if !known {
			return backendAt{}, false, Errorf(http.StatusNotFound, "pool", "service %q has no pool %q", service, poolName)
		}
	}
	var hits []backendAt
	for _, p := range ps {
		if poolName != "" && p.spec.Ref.Pool != poolName {
			continue
		}
		for j := range p.spec.Servers {
			if p.spec.Servers[j].Name == backend {
				hits = append(hits, backendAt{pool: p, index: j})
			}
		}
	}
	switch len(hits) {
	case 0:
		return backendAt{}, false, nil
	case 1:
		return hits[0], true, nil
	}
	var names []string
	for _, h := range hits {
		names = append(names, strconv.Quote(h.pool.spec.Ref.Pool))
	}
	return backendAt{}, false, Errorf(http.StatusConflict, "pool",
		"a backend %q is in pools %s of service %q: give the pool", backend, strings.Join(names, " and "), service)
}

// newBackendPool is the pool a new backend of service si goes to: the
// one named, else the default pool, which a service without backends of
// its own gets (a tcp service) or shares (the top-level pool).
func (d *doc) newBackendPool(si int, svc *yaml.Node, service, poolName string) (pool, error) {
	ps := d.pools(si, svc)
	if poolName == "" {
		poolName = config.DefaultPool
	}
	for _, p := range ps {
		if p.spec.Ref.Pool == poolName {
			if p.owner == nil {
				// Only the shared pool can lack its owner: the file has
				// no top-level backends yet.
				p.owner = yamledit.Mapping(d.root, "backends", "")
			}
			return p, nil
		}
	}
	if poolName == config.DefaultPool {
		return pool{spec: config.PoolSpec{Ref: config.PoolRef{Service: service, Pool: config.DefaultPool}}, owner: svc, key: "backends"}, nil
	}
	return pool{}, Errorf(http.StatusNotFound, "pool", "service %q has no pool %q", service, poolName)
}

// apiPath rewrites the index paths of config's messages
// (services[2].pools[0].backends[1]) into the API's names
// (services[sni].pools[eu].backends[x1]) as cfg names them.
func apiPath(cfg *config.Config, s string) string {
	return indexPath.ReplaceAllStringFunc(s, func(m string) string {
		sub := indexPath.FindStringSubmatch(m)
		if sub[4] != "" {
			j, _ := strconv.Atoi(sub[4])
			if j < len(cfg.Backends.Servers) && cfg.Backends.Servers[j].Name != "" {
				return "backends.servers[" + cfg.Backends.Servers[j].Name + "]"
			}
			return m
		}
		i, _ := strconv.Atoi(sub[1])
		if i >= len(cfg.Services) || cfg.Services[i].Name == "" {
			return m
		}
		s := &cfg.Services[i]
		out := "services[" + s.Name + "]"
		servers := s.Backends
		if sub[2] != "" {
			k, _ := strconv.Atoi(sub[2])
			if k >= len(s.Pools) || s.Pools[k].Name == "" {
				return m
			}
			out += ".pools[" + s.Pools[k].Name + "]"
			servers = s.Pools[k].Backends
		}
		if sub[3] != "" {
			j, _ := strconv.Atoi(sub[3])
			if j >= len(servers) || servers[j].Name == "" {
				return m
			}
			out += ".backends[" + servers[j].Name + "]"
		} else if strings.HasSuffix(m, ".backends") {
			out += ".backends"
		}
		return out
	})
}

var indexPath = regexp.MustCompile(`services\[(\d+)\](?:\.pools\[(\d+)\])?(?:\.backends\[(\d+)\])?|backends\.servers\[(\d+)\]`)

// Edit applies ch to data, the text of ober.yaml, and returns the new
// text; every line the change does not touch stays as it was, comments
// included. It checks the change's names and the shape of its body
// (400), and finds its object (404); it does not validate the result as
// a whole (the Store does, with config.Parse). When the file already
// says what ch asks, out is data itself.
//
// A new backend goes to the pool named, else to the service's default
// pool: its own backends, or for a tls or http service without any the
// top-level backends.servers, which every such service shares
// (Edited.SharedBy says which).
func Edit(data []byte, ch Change) (out []byte, ed Edited, err error) {
	d, err := parseDoc(data)
	if err != nil {
		return nil, Edited{}, err
	}
	if d.root.Style&yaml.FlowStyle != 0 {
		return nil, Edited{}, Errorf(http.StatusConflict, "", "ober.yaml is written in flow style ({...}); edit it by hand")
	}
	switch ch.Kind {
	case KindService:
		ed, err = d.editService(ch)
	case KindBackend:
		ed, err = d.editBackend(ch)
	default:
		err = Errorf(http.StatusBadRequest, "", "unknown kind %q", ch.Kind)
	}
	if err != nil {
		return nil, Edited{}, err
	}
	out, err = d.y.Bytes()
	if err != nil {
		return nil, Edited{}, err
	}
	if bytes.Equal(out, data) {
		out = data
	}
	return out, ed, nil
}

// body reads ch.Body and drops its read-only generation; a name in it
// must be the one in the path.
func body(ch Change, field, name string) (*yaml.Node, error) {
	n, err := bodyNode(ch.Body)
	if err != nil {
		return nil, err
	}
	yamledit.Remove(n, GenerationKey)
	if v := yamledit.Get(n, "name"); v != nil && name != "" {
		if v.Kind != yaml.ScalarNode || v.Value != name {
			return nil, Errorf(http.StatusBadRequest, field+".name", "%s.name: the body names %s, the path %q: a rename is a delete and a create", field, nodeText(v), name)
		}
	}
	return n, nil
}

func nodeText(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return describeNode(n)
}

func (d *doc) editService(ch Change) (Edited, error) {
	name := ch.Service
	if ch.Verb == Create && name == "" {
		// The body's name, checked below with it.
		n, err := bodyNode(ch.Body)
		if err != nil {
			return Edited{}, err
		}
		if v := yamledit.Get(n, "name"); v != nil && v.Kind == yaml.ScalarNode {
			name = v.Value
		}
	}
	field := "services[" + name + "]"
	if name != "" || ch.Verb != Create {
		if err := checkName("services[]", name); err != nil {
			return Edited{}, err
		}
	}
	si, svc := d.service(name)
	if name != "" && si < 0 && ch.Verb != Put && ch.Verb != Create {
		return Edited{}, d.noService(name)
	}
	switch ch.Verb {
	case Delete:
		seq := d.services()
		seq.Content = append(seq.Content[:si], seq.Content[si+1:]...)
		return Edited{Service: name, Deleted: true}, nil
	case Put, Create:
		if ch.Verb == Create && si >= 0 {
			return Edited{}, Errorf(http.StatusConflict, field, "%s: a service of that name exists already", field)
		}
		n, err := body(ch, field, name)
		if err != nil {
			return Edited{}, err
		}
		if name != "" {
			yamledit.Remove(n, "name")
			n.Content = append([]*yaml.Node{yamledit.Str("name"), yamledit.Str(name)}, n.Content...)
		}
		if err := checkShape(KindService, n, field); err != nil {
			return Edited{}, err
		}
		if si >= 0 {
			if err := own(svc, field); err != nil {
				return Edited{}, err
			}
			d.services().Content[si] = replace(d.services().Content[si], n)
			return Edited{Service: name}, nil
		}
		seq := d.services()
		if seq == nil {
			seq = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			yamledit.Set(d.root, "services", seq, "")
		}
		seq.Content = append(seq.Content, n)
		if name == "" {
			name = d.newServiceName(n)
		}
		return Edited{Service: name}, nil
	case Patch:
		if err := own(svc, field); err != nil {
			return Edited{}, err
		}
		p, err := body(ch, field, name)
		if err != nil {
			return Edited{}, err
		}
		if v := yamledit.Get(p, "name"); v != nil {
			yamledit.Remove(p, "name") // the same name, checked by body
		}
		merged := mergePatch(svc, p)
		if err := checkShape(KindService, merged, field); err != nil {
			return Edited{}, err
		}
		d.services().Content[si] = merged
		return Edited{Service: name}, nil
	}
	return Edited{}, Errorf(http.StatusMethodNotAllowed, "", "%s is not a change of a service", ch.Verb)
}

// newServiceName is the default name config gives the service n, which
// has none in the file.
func (d *doc) newServiceName(n *yaml.Node) string {
	var s config.Service
	_ = n.Decode(&s)
	c := config.Config{Services: []config.Service{s}}
	c.ApplyDefaults()
	return c.Services[0].Name
}

func (d *doc) noService(name string) error {
	return Errorf(http.StatusNotFound, "services["+name+"]", "services[%s]: no such service", name)
}

// own refuses to edit in place a node the file shares through a YAML
// anchor: the edit would change every place that refers to it.
func own(n *yaml.Node, field string) error {
	if n != nil && n.Anchor != "" {
		return Errorf(http.StatusConflict, field, "%s: line %d: shared through a YAML anchor (&%s); edit the file by hand", field, n.Line, n.Anchor)
	}
	return nil
}

func backendField(service, pool, backend string) string {
	f := "services[" + service + "]"
	if pool != "" && pool != config.DefaultPool {
		f += ".pools[" + pool + "]"
	}
	return f + ".backends[" + backend + "]"
}

func (d *doc) editBackend(ch Change) (Edited, error) {
	if err := checkName("services[]", ch.Service); err != nil {
		return Edited{}, err
	}
	field := backendField(ch.Service, ch.Pool, ch.Backend)
	if err := checkName(field, ch.Backend); err != nil {
		return Edited{}, err
	}
	si, svc := d.service(ch.Service)
	if si < 0 {
		return Edited{}, d.noService(ch.Service)
	}
	if disc, pool, kind := d.discoveryOf(si, svc, ch.Pool); disc != nil {
		return d.editFound(ch, disc, pool, kind, field)
	}
	at, found, err := d.findBackend(si, svc, ch.Service, ch.Backend, ch.Pool)
	if err != nil {
		return Edited{}, err
	}
	if !found && ch.Verb != Put {
		return Edited{}, Errorf(http.StatusNotFound, field, "%s: no such backend", field)
	}
	p := at.pool
	if !found {
		if p, err = d.newBackendPool(si, svc, ch.Service, ch.Pool); err != nil {
			return Edited{}, err
		}
	}
	field = backendField(ch.Service, p.spec.Ref.Pool, ch.Backend)
	ed := Edited{Service: ch.Service, Backend: ch.Backend, Pool: p.spec.Ref.Pool}
	if p.spec.Shared {
		ed.SharedBy = d.sharedBy()
	}
	if err := own(p.list, field); err != nil {
		return Edited{}, err
	}
	var cur *yaml.Node
	if found {
		cur = p.item(at.index)
		if err := own(cur, field); err != nil {
			return Edited{}, err
		}
	}
	switch ch.Verb {
	case Delete:
		p.list.Content = append(p.list.Content[:at.index], p.list.Content[at.index+1:]...)
		if len(p.list.Content) == 0 && p.spec.Ref.Pool == config.DefaultPool && !p.spec.Shared {
			s := &d.cfg.Services[si]
			own := s.Mode == config.ModeTCP || config.IsKernelMode(s.Mode) // never the top-level pool
			switch {
			case !own && len(d.cfg.Backends.Servers) > 0:
				return Edited{}, Errorf(http.StatusConflict, field,
					"%s: the last backend of the service: without it the service would take the top-level backends.servers; add another backend first, or delete the service", field)
			case own && len(s.Pools) == 0:
				return Edited{}, Errorf(http.StatusConflict, field,
					"%s: the last backend of the service: a %s service without backends cannot serve; add another backend first, or delete the service", field, s.Mode)
			}
		}
		ed.Deleted = true
		return ed, nil
	case Drain, Enable, Disable:
		state := map[Verb]string{Drain: config.StateDrain, Enable: config.StateEnabled, Disable: config.StateDisabled}[ch.Verb]
		if v := yamledit.Get(cur, "state"); v == nil && state == config.StateEnabled {
			return ed, nil // enabled is the default
		} else if v != nil && v.Kind == yaml.ScalarNode && v.Value == state {
			return ed, nil
		}
		yamledit.Set(cur, "state", yamledit.Str(state), "")
		nameIt(cur, ch.Backend)
		return ed, nil
	case Put:
		n, err := body(ch, field, ch.Backend)
		if err != nil {
			return Edited{}, err
		}
		yamledit.Remove(n, "name")
		n.Content = append([]*yaml.Node{yamledit.Str("name"), yamledit.Str(ch.Backend)}, n.Content...)
		if err := checkShape(KindBackend, n, field); err != nil {
			return Edited{}, err
		}
		if found {
			p.list.Content[at.index] = replace(p.list.Content[at.index], n)
			return ed, nil
		}
		if p.list == nil {
			p.list = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			yamledit.Set(p.owner, p.key, p.list, "")
		}
		p.list.Content = append(p.list.Content, n)
		return ed, nil
	case Patch:
		pt, err := body(ch, field, ch.Backend)
		if err != nil {
			return Edited{}, err
		}
		yamledit.Remove(pt, "name")
		before, _ := nodeValue(cur)
		merged := mergePatch(cur, pt)
		if after, _ := nodeValue(merged); !reflect.DeepEqual(before, after) {
			nameIt(merged, ch.Backend)
		}
		if err := checkShape(KindBackend, merged, field); err != nil {
			return Edited{}, err
		}
		p.list.Content[at.index] = merged
		return ed, nil
	}
	return Edited{}, Errorf(http.StatusMethodNotAllowed, "", "%s is not a change of a backend", ch.Verb)
}

// nameIt writes the name of a changed backend the file names by default
// (s<index>), so that the name stays the backend's when the list
// changes. Written last: a new first key would have the item written
// anew.
func nameIt(m *yaml.Node, name string) {
	if m.Kind == yaml.MappingNode && yamledit.Find(m, "name") < 0 {
		yamledit.Set(m, "name", yamledit.Str(name), "")
	}
}

// discoveryOf is the discovery block of services[si]'s pool poolName
// (default: its own) when a source finds that pool's backends, with the
// pool's name and the source's kind; nil otherwise.
func (d *doc) discoveryOf(si int, svc *yaml.Node, poolName string) (*yaml.Node, string, string) {
	s := &d.cfg.Services[si]
	if poolName == "" || poolName == config.DefaultPool {
		if s.Discovery == nil || s.Discovery.Kind == config.DiscoveryStatic {
			return nil, "", ""
		}
		return yamledit.Get(svc, "discovery"), config.DefaultPool, s.Discovery.Kind
	}
	ps := yamledit.Get(svc, "pools")
	for j := range s.Pools {
		p := &s.Pools[j]
		if p.Name != poolName || p.Discovery == nil || p.Discovery.Kind == config.DiscoveryStatic || ps == nil || j >= len(ps.Content) {
			continue
		}
		return yamledit.Get(yamledit.Deref(ps.Content[j]), "discovery"), p.Name, p.Discovery.Kind
	}
	return nil, "", ""
}

// editFound changes an operator's say over a backend a source found: its
// entry in discovery.overrides, by address, made when it has none. The
// source alone adds and removes found backends.
func (d *doc) editFound(ch Change, disc *yaml.Node, pool, kind, field string) (Edited, error) {
	ed := Edited{Service: ch.Service, Backend: ch.Backend, Pool: pool}
	switch ch.Verb {
	case Put, Delete:
		return Edited{}, Errorf(http.StatusConflict, field, "%s: the pool's backends come from discovery kind %s, which adds and removes them; a found backend takes drain, enable, disable and a PATCH of its weight", field, kind)
	}
	addr, ok := config.DiscoveredAddress(ch.Backend)
	if !ok {
		return Edited{}, Errorf(http.StatusNotFound, field, "%s: no such backend: a found backend is named after its address, such as 10.1.0.2_7480", field)
	}
	if err := own(disc, field); err != nil {
		return Edited{}, err
	}
	list := yamledit.Get(disc, "overrides")
	if list == nil || list.Kind != yaml.SequenceNode {
		list = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		yamledit.Set(disc, "overrides", list, "")
	}
	var cur *yaml.Node
	for _, it := range list.Content {
		if v := yamledit.Get(yamledit.Deref(it), "address"); v != nil && v.Value == addr {
			cur = yamledit.Deref(it)
		}
	}
	if cur == nil {
		cur = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		yamledit.Set(cur, "address", yamledit.Str(addr), "")
		list.Content = append(list.Content, cur)
	}
	switch ch.Verb {
	case Drain, Enable, Disable:
		state := map[Verb]string{Drain: config.StateDrain, Enable: config.StateEnabled, Disable: config.StateDisabled}[ch.Verb]
		yamledit.Set(cur, "state", yamledit.Str(state), "")
		return ed, nil
	case Patch:
		pt, err := body(ch, field, ch.Backend)
		if err != nil {
			return Edited{}, err
		}
		yamledit.Remove(pt, "name")
		for i := 0; i+1 < len(pt.Content); i += 2 {
			if k := pt.Content[i].Value; k != "weight" && k != "state" {
				return Edited{}, Errorf(http.StatusUnprocessableEntity, field+"."+k, "%s.%s: a found backend's %s comes from its source; only weight and state can be set", field, k, k)
			}
		}
		merged := mergePatch(cur, pt)
		for i, it := range list.Content {
			if yamledit.Deref(it) == cur {
				list.Content[i] = merged
			}
		}
		return ed, nil
	}
	return Edited{}, Errorf(http.StatusMethodNotAllowed, "", "%s is not a change of a backend", ch.Verb)
}
