package httpapi

import (
	"cmp"
	"encoding"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/client"
)

// document is the part of openapi.json the tests read.
type document struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas    map[string]*schema         `json:"schemas"`
		Parameters map[string]json.RawMessage `json:"parameters"`
	} `json:"components"`
}

type schema struct {
	Ref                  string             `json:"$ref"`
	Type                 string             `json:"type"`
	Properties           map[string]*schema `json:"properties"`
	Items                *schema            `json:"items"`
	AdditionalProperties json.RawMessage    `json:"additionalProperties"`
	ReadOnly             bool               `json:"readOnly"`
	Enum                 []string           `json:"enum"`
	Maximum              *int               `json:"maximum"`
}

type parameter struct {
	Ref  string `json:"$ref"`
	Name string `json:"name"`
	In   string `json:"in"`
}

var httpMethods = []string{"get", "put", "post", "patch", "delete", "head", "options", "trace"}

func loadDocument(t *testing.T) *document {
	t.Helper()
	var d document
	if err := json.Unmarshal(openapiDoc, &d); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(d.OpenAPI, "3.0.") {
		t.Fatalf("openapi.json is OpenAPI %q, want 3.0.x", d.OpenAPI)
	}
	return &d
}

// operations are the document's "METHOD path"s.
func (d *document) operations() []string {
	var ops []string
	for path, item := range d.Paths {
		for key := range item {
			if slices.Contains(httpMethods, key) {
				ops = append(ops, strings.ToUpper(key)+" "+path)
			}
		}
	}
	sort.Strings(ops)
	return ops
}

func TestDocumentHasEveryRoute(t *testing.T) {
	d := loadDocument(t)
	var served []string
	for _, rt := range (&handler{}).routes() {
		served = append(served, rt.method+" "+rt.path)
	}
	sort.Strings(served)
	documented := d.operations()
	for _, op := range served {
		if !slices.Contains(documented, op) {
			t.Errorf("route %s is served but not in openapi.json", op)
		}
	}
	for _, op := range documented {
		if !slices.Contains(served, op) {
			t.Errorf("openapi.json has %s, which is not a route", op)
		}
	}
}

// Every operation of the document, sent to the handler, reaches its
// route: none is a 404 or 405 of the mux, and each answers its
// documented success.
func TestDocumentOperationsAreServed(t *testing.T) {
	d := loadDocument(t)
	values := strings.NewReplacer("{name}", "web", "{backend}", "b1", "{vip}", "10.0.0.10")
	// The body an operation needs to succeed; {} for the others.
	bodies := map[string]string{"POST /api/v1/vips/{vip}/move": `{"to":"owner"}`}
	for _, op := range d.operations() {
		method, path, _ := strings.Cut(op, " ")
		var o struct {
			Responses   map[string]json.RawMessage `json:"responses"`
			RequestBody *struct {
				Content map[string]json.RawMessage `json:"content"`
			} `json:"requestBody"`
		}
		if err := json.Unmarshal(d.Paths[path][strings.ToLower(method)], &o); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		q := req{method: method, path: values.Replace(path), header: map[string]string{}}
		if o.RequestBody != nil {
			b := cmp.Or(bodies[op], `{}`)
			q.body = body(b)
			for ct := range o.RequestBody.Content {
				// Every media type the document gives is taken.
				q.header["Content-Type"] = ct
				w := serve(t, New(newFake(), nil), q)
				q.body = body(b)
				if _, ok := o.Responses[strconv.Itoa(w.Code)]; !ok || w.Code >= 300 {
					t.Errorf("%s as %s: status %d, not a documented success; body %s", op, ct, w.Code, w.Body)
				}
			}
			continue
		}
		w := serve(t, New(newFake(), nil), q)
		if _, ok := o.Responses[strconv.Itoa(w.Code)]; !ok || w.Code >= 300 {
			t.Errorf("%s: status %d, not a documented success; body %s", op, w.Code, w.Body)
		}
	}
}

// Every {parameter} of a path is declared, every $ref resolves.
func TestDocumentIsConsistent(t *testing.T) {
	d := loadDocument(t)
	for path, item := range d.Paths {
		var declared []string
		collect := func(raw json.RawMessage) {
			var ps []parameter
			_ = json.Unmarshal(raw, &ps)
			for _, p := range ps {
				if p.Ref != "" {
					_ = json.Unmarshal(d.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")], &p)
				}
				if p.In == "path" {
					declared = append(declared, p.Name)
				}
			}
		}
		collect(item["parameters"])
		for _, m := range httpMethods {
			if op, ok := item[m]; ok {
				var o struct {
					Parameters json.RawMessage `json:"parameters"`
				}
				_ = json.Unmarshal(op, &o)
				collect(o.Parameters)
			}
		}
		for _, m := range regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(path, -1) {
			if !slices.Contains(declared, m[1]) {
				t.Errorf("%s: path parameter %s is not declared", path, m[1])
			}
		}
	}

	var all any
	if err := json.Unmarshal(openapiDoc, &all); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if ref, ok := x.(string); k == "$ref" && ok {
					if !resolves(all, ref) {
						t.Errorf("$ref %s resolves to nothing", ref)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(all)
}

func resolves(doc any, ref string) bool {
	if !strings.HasPrefix(ref, "#/") {
		return false
	}
	v := doc
	for part := range strings.SplitSeq(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

// The schemas of services and backends are ober.yaml's: every yaml key of
// config.Service and what it holds is a property of the same JSON type,
// and every property is a key (or the read-only generation). Likewise the
// stats, pools, results and errors with the JSON of the types that make
// them.
func TestSchemasMatchTheTypes(t *testing.T) {
	d := loadDocument(t)
	s := d.Components.Schemas
	for _, tc := range []struct {
		schema string
		typ    any
		tag    string
		// absent are the type's keys the schema leaves out on purpose.
		absent []string
	}{
		{"Service", config.Service{}, "yaml", nil},
		{"Backend", config.BackendServer{}, "yaml", nil},
		{"Pool", config.Pool{}, "yaml", nil},
		{"ServiceHealth", config.ServiceHealth{}, "yaml", nil},
		{"TLSPassthrough", config.TLSPassthrough{}, "yaml", nil},
		{"ServiceStats", api.DaemonServiceStatus{}, "json", nil},
		{"BackendStats", api.DaemonBackendStatus{}, "json", nil},
		{"PoolStatus", api.VIPPoolStatus{}, "json", nil},
		{"Error", mgmt.Error{}, "json", nil},
		// Only a backend's change is shared with other services.
		{"ServiceResult", mgmt.Result{}, "json", []string{"shared_by"}},
		{"BackendResult", mgmt.Result{}, "json", nil},
		{"CreateResult", created{}, "json", []string{"shared_by"}},
		// A delete's answer is a Result without the object.
		{"DeleteResult", mgmt.Result{}, "json", []string{"object"}},
	} {
		sc, ok := s[tc.schema]
		if !ok {
			t.Errorf("openapi.json has no schema %s", tc.schema)
			continue
		}
		c := &schemaCheck{t: t, schemas: s, tag: tc.tag, absent: tc.absent}
		c.check(tc.schema, reflect.TypeOf(tc.typ), sc)
	}
}

type schemaCheck struct {
	t       *testing.T
	schemas map[string]*schema
	tag     string
	absent  []string
}

var (
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
	rawMessage    = reflect.TypeFor[json.RawMessage]()
)

func (c *schemaCheck) resolve(where string, s *schema) *schema {
	for s != nil && s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
		next, ok := c.schemas[name]
		if !ok {
			c.t.Errorf("%s: $ref %s resolves to nothing", where, s.Ref)
			return nil
		}
		s = next
	}
	return s
}

func (c *schemaCheck) check(where string, typ reflect.Type, s *schema) {
	if s = c.resolve(where, s); s == nil {
		return
	}
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ == rawMessage {
		// Any JSON: the Store's object, whose schema the others check.
		return
	}
	want := ""
	switch {
	case typ.Implements(textMarshaler) || reflect.PointerTo(typ).Implements(textMarshaler):
		want = "string"
	case typ.Kind() == reflect.String:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		want = "integer"
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		want = "number"
	case typ.Kind() == reflect.Slice:
		want = "array"
	case typ.Kind() == reflect.Map, typ.Kind() == reflect.Struct:
		want = "object"
	default:
		c.t.Errorf("%s: Go type %s has no JSON type in this test", where, typ)
		return
	}
	if s.Type != want {
		c.t.Errorf("%s: schema type %q, want %q (Go %s)", where, s.Type, want, typ)
		return
	}
	switch {
	case want == "string":
	case want == "array":
		if s.Items == nil {
			c.t.Errorf("%s: array without items", where)
			return
		}
		c.check(where+"[]", typ.Elem(), s.Items)
	case typ.Kind() == reflect.Map:
		var items schema
		if err := json.Unmarshal(s.AdditionalProperties, &items); err != nil {
			c.t.Errorf("%s: a map needs additionalProperties as a schema: %v", where, err)
			return
		}
		c.check(where+"{}", typ.Elem(), &items)
	case want == "object":
		c.fields(where, typ, s)
	}
}

// fields checks typ's keys against s's properties, both ways.
func (c *schemaCheck) fields(where string, typ reflect.Type, s *schema) {
	keys := map[string]bool{}
	c.keys(where, typ, s, keys)
	for key, p := range s.Properties {
		if keys[key] {
			continue
		}
		if key == "generation" && p.ReadOnly {
			// The Store adds it to every object it answers.
			continue
		}
		c.t.Errorf("%s: property %q of openapi.json is no %s key of %s", where, key, c.tag, typ)
	}
}

// keys checks that each of typ's keys is a property of s, of its type,
// and adds it to keys.
func (c *schemaCheck) keys(where string, typ reflect.Type, s *schema, keys map[string]bool) {
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag, ok := f.Tag.Lookup(c.tag)
		if f.Anonymous && !ok && f.Type.Kind() == reflect.Struct {
			// Embedded: its keys are the outer object's.
			c.keys(where, f.Type, s, keys)
			continue
		}
		key, _, _ := strings.Cut(tag, ",")
		if key == "-" {
			continue
		}
		if !ok || key == "" {
			c.t.Errorf("%s: Go field %s.%s has no %s key", where, typ, f.Name, c.tag)
			continue
		}
		keys[key] = true
		p, ok := s.Properties[key]
		if !ok && slices.Contains(c.absent, key) {
			continue
		}
		if !ok {
			c.t.Errorf("%s: %s key %q (%s.%s) is not in openapi.json", where, c.tag, key, typ, f.Name)
			continue
		}
		c.check(where+"."+key, f.Type, p)
	}
}

// The enums and bounds the document gives are the validator's.
func TestSchemaEnumsAreTheValidators(t *testing.T) {
	s := loadDocument(t).Components.Schemas
	for _, tc := range []struct {
		schema, prop string
		want         []string
	}{
		{"Backend", "state", []string{config.StateEnabled, config.StateDrain, config.StateDisabled}},
		{"Service", "fallback", []string{config.FallbackServe503, config.FallbackKeepLast, config.FallbackReject}},
		{"Service", "whitelist", []string{config.WhitelistFrontendHTTP, config.WhitelistBackendHTTP}},
		{"Service", "mode", []string{config.ModeTLS, config.ModeHTTP, config.ModeTCP, config.ModeUDP, config.ModeNAT}},
		{"Service", "protocol", []string{config.ProtocolTCP, config.ProtocolUDP}},
		{"Service", "forward", []string{config.ForwardFullNAT, config.ForwardDNAT}},
		{"ServiceHealth", "protocol", []string{config.ProtocolTCP, config.ProtocolUDP}},
		{"ServiceHealth", "kind", []string{config.CheckTCP, config.CheckHTTP, config.CheckHTTPS, config.CheckProbe, config.CheckExec, config.CheckNone}},
		{"ServiceHealth", "initial_state", []string{config.HealthUp, config.HealthDown}},
		{"Access", "default", []string{config.AccessAllow, config.AccessDeny}},
		{"Applied", "", []string{string(mgmt.AppliedRuntime), string(mgmt.AppliedReload), string(mgmt.AppliedNone)}},
	} {
		sc := s[tc.schema]
		if tc.prop != "" && sc != nil {
			sc = sc.Properties[tc.prop]
		}
		if sc == nil {
			t.Errorf("%s.%s: not in openapi.json", tc.schema, tc.prop)
			continue
		}
		got, want := slices.Sorted(slices.Values(sc.Enum)), slices.Sorted(slices.Values(tc.want))
		if !slices.Equal(got, want) {
			t.Errorf("%s.%s: enum %q, want %q", tc.schema, tc.prop, sc.Enum, tc.want)
		}
	}
	if w := s["Backend"].Properties["weight"]; w.Maximum == nil || *w.Maximum != config.MaxWeight {
		t.Errorf("Backend.weight: maximum %v, want %d", w.Maximum, config.MaxWeight)
	}
}

// The CLI's client builds its requests from its own list of routes: it
// is this handler's.
func TestClientRoutesAreServed(t *testing.T) {
	var served []string
	for _, rt := range (&handler{}).routes() {
		if rt.path != Prefix+"/openapi.json" {
			served = append(served, rt.method+" "+rt.path)
		}
	}
	var used []string
	for _, rt := range client.Routes() {
		used = append(used, rt.String())
	}
	slices.Sort(served)
	slices.Sort(used)
	if !slices.Equal(served, used) {
		t.Errorf("the client's routes\n%q\nare not the handler's\n%q", used, served)
	}
	if client.Prefix != Prefix || client.PathOpenAPI != Prefix+"/openapi.json" {
		t.Errorf("the client's prefix %q, openapi %q", client.Prefix, client.PathOpenAPI)
	}
}
