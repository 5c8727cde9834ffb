package gorb

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"

	"github.com/ober-ingress/ober/control/api"
	"github.com/ober-ingress/ober/control/mgmt"
)

// fakeAPI is a Store in memory: services as their JSON forms, the
// changes asked of it, and the daemon's status the test sets.
type fakeAPI struct {
	mu      sync.Mutex
	order   []string
	svcs    map[string]map[string]any
	gens    map[string]uint64
	changes []mgmt.Change
	stats   map[string]api.DaemonServiceStatus
	// failNext is returned by the next Do.
	failNext error
}

func newFake() *fakeAPI {
	return &fakeAPI{svcs: map[string]map[string]any{}, gens: map[string]uint64{}, stats: map[string]api.DaemonServiceStatus{}}
}

// add puts a service as if ober.yaml had it.
func (f *fakeAPI) add(name string, obj map[string]any) {
	f.svcs[name] = obj
	f.gens[name] = 1
	f.order = append(f.order, name)
}

func (f *fakeAPI) Services(ctx context.Context) ([]json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []json.RawMessage
	for _, n := range f.order {
		out = append(out, f.jsonOf(n))
	}
	return out, nil
}

func (f *fakeAPI) jsonOf(name string) json.RawMessage {
	m := clone(f.svcs[name])
	m["generation"] = f.gens[name]
	b, _ := json.Marshal(m)
	return b
}

func (f *fakeAPI) Service(ctx context.Context, name string) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.svcs[name]; !ok {
		return nil, noService(name)
	}
	return f.jsonOf(name), nil
}

func (f *fakeAPI) Backend(ctx context.Context, service, backend, pool string) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.svcs[service]
	if !ok {
		return nil, noService(service)
	}
	bs := backendsOf(s)
	i := indexOf(bs, backend)
	if i < 0 {
		return nil, mgmt.Errorf(http.StatusNotFound, "", "no such backend")
	}
	b, _ := json.Marshal(bs[i])
	return b, nil
}

func noService(name string) error {
	return mgmt.Errorf(http.StatusNotFound, "services["+name+"]", "services[%s]: no such service", name)
}

func backendsOf(s map[string]any) []any {
	l, _ := s["backends"].([]any)
	return l
}

func indexOf(bs []any, name string) int {
	return slices.IndexFunc(bs, func(b any) bool { return b.(map[string]any)["name"] == name })
}

func (f *fakeAPI) Do(ctx context.Context, ch mgmt.Change) (mgmt.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes = append(f.changes, ch)
	if err := f.failNext; err != nil {
		f.failNext = nil
		return mgmt.Result{}, err
	}
	var body map[string]any
	if ch.Body != nil {
		if err := json.Unmarshal(ch.Body, &body); err != nil {
			return mgmt.Result{}, mgmt.Errorf(http.StatusBadRequest, "", "malformed JSON: %v", err)
		}
	}
	s, exists := f.svcs[ch.Service]
	if ch.Verb != mgmt.Create && !exists {
		return mgmt.Result{}, noService(ch.Service)
	}
	if ch.IfMatch != nil && *ch.IfMatch != f.gens[ch.Service] {
		return mgmt.Result{}, mgmt.Errorf(http.StatusPreconditionFailed, "", "stale generation")
	}
	res := mgmt.Result{Applied: mgmt.AppliedReload}
	switch {
	case ch.Kind == mgmt.KindService && ch.Verb == mgmt.Create:
		if exists {
			return mgmt.Result{}, mgmt.Errorf(http.StatusConflict, "services["+ch.Service+"]", "services[%s]: a service of that name exists already", ch.Service)
		}
		f.order = append(f.order, ch.Service)
		f.svcs[ch.Service] = body
	case ch.Kind == mgmt.KindService && ch.Verb == mgmt.Patch:
		m := mergePatch(clone(s), body)
		f.svcs[ch.Service] = m
	case ch.Kind == mgmt.KindService && ch.Verb == mgmt.Delete:
		delete(f.svcs, ch.Service)
		f.order = slices.DeleteFunc(f.order, func(n string) bool { return n == ch.Service })
		return mgmt.Result{Applied: mgmt.AppliedReload}, nil
	case ch.Kind == mgmt.KindBackend:
		bs := slices.Clone(backendsOf(s))
		i := indexOf(bs, ch.Backend)
		if i < 0 && ch.Verb != mgmt.Put {
			return mgmt.Result{}, mgmt.Errorf(http.StatusNotFound, "", "no such backend")
		}
		switch ch.Verb {
		case mgmt.Put:
			if i < 0 {
				bs = append(bs, body)
			} else {
				bs[i] = body
			}
		case mgmt.Patch:
			bs[i] = mergePatch(clone(bs[i].(map[string]any)), body)
			res.Applied = mgmt.AppliedRuntime
		case mgmt.Delete:
			if len(bs) == 1 {
				// As the Store refuses it.
				return mgmt.Result{}, mgmt.Errorf(http.StatusConflict, "services["+ch.Service+"].backends["+ch.Backend+"]",
					"services[%s].backends[%s]: the last backend of the service", ch.Service, ch.Backend)
			}
			bs = slices.Delete(bs, i, i+1)
		}
		m := clone(s)
		m["backends"] = bs
		f.svcs[ch.Service] = m
	default:
		return mgmt.Result{}, mgmt.Errorf(http.StatusBadRequest, "", "the fake does not do %s of a %s", ch.Verb, ch.Kind)
	}
	f.gens[ch.Service]++
	res.Generation = f.gens[ch.Service]
	return res, nil
}

func (f *fakeAPI) ServiceStats(ctx context.Context, name string) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.stats[name]
	if !ok {
		return nil, noService(name)
	}
	return json.Marshal(st)
}

func (f *fakeAPI) Pools(ctx context.Context) (json.RawMessage, error) {
	return json.RawMessage("[]"), nil
}

func (f *fakeAPI) MoveVIP(context.Context, string, string) (json.RawMessage, error) {
	return nil, mgmt.Errorf(409, "", "no VIP moves in GORB's API")
}

// took returns the changes made since the last call.
func (f *fakeAPI) took() []mgmt.Change {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.changes
	f.changes = nil
	return out
}

func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// mergePatch is RFC 7396 on decoded JSON.
func mergePatch(target, patch map[string]any) map[string]any {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(target, k)
		case map[string]any:
			t, _ := target[k].(map[string]any)
			if t == nil {
				t = map[string]any{}
			}
			target[k] = mergePatch(t, pv)
		default:
			target[k] = v
		}
	}
	return target
}
