package mgmt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/atomicfile"
	"github.com/ober-ingress/ober/control/lib/discovery"
	"github.com/ober-ingress/ober/control/lib/whitelist"
	"github.com/ober-ingress/ober/control/lib/yamledit"
)

// GenerationsFile is the name, in the state directory, of the record of
// every object's generation.
const GenerationsFile = "api-generations.json"

// Store is the API's one writer of ober.yaml (API, with Reader for what
// is not in the file).
//
// Every read and write holds the lock `ober sync` and the daemon's
// reloads take (whitelist.Lock on RuntimeDir), so it sees and leaves the
// file whole, and two Do calls, in one process or two, run one after
// the other. A write edits the file's tree (Edit), validates the whole
// result as the daemon will load it (config.Parse), writes the file
// atomically and then the generations, and releases the lock before
// Applier.Apply: the daemon's reload takes the same lock to read the
// file, and several writes may be carried by one reload.
//
// Result.Object is the object as the file says it: a service that takes
// its address from a pool (no vips) shows none. The caller, which knows
// the daemon's plan, adds the allocated address after Do returns.
type Store struct {
	// Path is ober.yaml; a symbolic link stays one, its target is
	// replaced.
	Path string
	// RuntimeDir holds the lock; StateDir the generations.
	RuntimeDir, StateDir string
	Applier              Applier
	Reader               Reader
	Mover                Mover
	Log                  *slog.Logger

	q writeQueue
}

// writeQueue holds the writes waiting for the one that is being made.
// Writes are made one group at a time, in the order they arrived: the
// first to find the queue idle leads, makes every write queued by then
// (as few groups as it can, see Do), and hands the lead to the first
// write that arrived meanwhile. So writes in one process never wait on
// the file lock against each other, and a burst costs few file writes
// and few applies.
type writeQueue struct {
	mu      sync.Mutex
	waiting []*pending
	busy    bool
}

// pending is one write in the queue.
type pending struct {
	ctx  context.Context
	ch   Change
	res  Result
	err  error
	done chan struct{}
	// lead is closed when this write is to lead the next group.
	lead chan struct{}
}

func (p *pending) finish(res Result, err error) {
	p.res, p.err = res, err
	close(p.done)
}

// lockWait bounds a group's wait for the file lock: `ober sync` or a
// reload holds it for a moment, never for long.
const lockWait = 60 * time.Second

// maxConfigSize is the largest ober.yaml config.Load reads.
const maxConfigSize = 16 << 20

// genRecord is one object's generation and the hash of its JSON form
// when it was last counted; Hash is empty once the object is gone (its
// count goes on if it comes back, so that a stale If-Match of the old
// one cannot pass).
type genRecord struct {
	Generation uint64 `json:"generation"`
	Hash       string `json:"hash"`
}

type genFile struct {
	Objects map[string]genRecord `json:"objects"`
}

// object is one service or backend as the file says it.
type object struct {
	key   string
	value map[string]any
	hash  string
}

func serviceKey(name string) string { return "services/" + name }

func backendKey(service, pool, backend string, shared bool) string {
	if shared {
		return "backends.servers/" + backend
	}
	return "services/" + service + "/" + pool + "/" + backend
}

// inventory lists every object of the file, keyed.
func inventory(d *doc) (map[string]object, error) {
	out := map[string]object{}
	add := func(key string, n *yaml.Node, name string) error {
		v, err := objectValue(n, name)
		if err != nil {
			return err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[key] = object{key: key, value: v, hash: hex.EncodeToString(sum[:])}
		return nil
	}
	seq := d.services()
	for i := range d.cfg.Services {
		if seq == nil || i >= len(seq.Content) {
			break
		}
		name := d.cfg.Services[i].Name
		svc := yamledit.Deref(seq.Content[i])
		if err := add(serviceKey(name), svc, name); err != nil {
			return nil, err
		}
		for _, p := range d.pools(i, svc) {
			for j, srv := range p.spec.Servers {
				if it := p.item(j); it != nil {
					if err := add(backendKey(name, p.spec.Ref.Pool, srv.Name, p.spec.Shared), it, srv.Name); err != nil {
						return nil, err
					}
				}
			}
		}
		// A found backend's object is its override, under its name.
		pools := []string{config.DefaultPool}
		for _, p := range d.cfg.Services[i].Pools {
			pools = append(pools, p.Name)
		}
		for _, pn := range pools {
			disc, pool, _ := d.discoveryOf(i, svc, pn)
			if disc == nil {
				continue
			}
			if l := yamledit.Get(disc, "overrides"); l != nil && l.Kind == yaml.SequenceNode {
				for _, it := range l.Content {
					it = yamledit.Deref(it)
					v := yamledit.Get(it, "address")
					if v == nil {
						continue
					}
					b, ok := foundBackend(v.Value)
					if !ok {
						continue
					}
					bn := config.DiscoveredName(b)
					if err := add(backendKey(name, pool, bn, false), it, bn); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return out, nil
}

// count brings the generations up to what objs says: an object whose
// hash differs from the one recorded (a change, by the API or by hand)
// counts one more. It reports whether anything changed.
func (g *genFile) count(objs map[string]object) bool {
	changed := false
	for k, o := range objs {
		r := g.Objects[k]
		if r.Hash != o.hash {
			g.Objects[k] = genRecord{Generation: r.Generation + 1, Hash: o.hash}
			changed = true
		}
	}
	for k, r := range g.Objects {
		if _, ok := objs[k]; !ok && r.Hash != "" {
			g.Objects[k] = genRecord{Generation: r.Generation + 1}
			changed = true
		}
	}
	return changed
}

func (s *Store) genPath() string { return filepath.Join(s.StateDir, GenerationsFile) }

func (s *Store) readGens() (*genFile, error) {
	g := &genFile{}
	data, err := os.ReadFile(s.genPath())
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("generations: %w", err)
	default:
		if err := json.Unmarshal(data, g); err != nil {
			// Lost generations only restart the counts: the file, not
			// this record, is the truth.
			s.log().Warn("api generations unreadable; counting anew", "path", s.genPath(), "err", err)
			g = &genFile{}
		}
	}
	if g.Objects == nil {
		g.Objects = map[string]genRecord{}
	}
	return g, nil
}

func (s *Store) writeGens(g *genFile) error {
	data, err := json.MarshalIndent(g, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.StateDir, 0o750); err != nil {
		return fmt.Errorf("generations: %w", err)
	}
	if err := atomicfile.Write(s.genPath(), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("generations: %w", err)
	}
	return nil
}

func (s *Store) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// snapshot is the file and the generations as read under the lock.
type snapshot struct {
	target string
	mode   fs.FileMode
	data   []byte
	doc    *doc
	objs   map[string]object
	gens   *genFile
	// counted reports that the generations changed since read (a manual
	// edit counted) and must be written.
	counted bool
}

// read reads the file and counts its objects' generations; the caller
// holds the lock.
func (s *Store) read() (*snapshot, error) {
	target, err := filepath.EvalSymlinks(s.Path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", s.Path, err)
	}
	st, err := os.Stat(target)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", s.Path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("config %s: not a regular file", s.Path)
	}
	data, err := os.ReadFile(target)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", s.Path, err)
	}
	d, err := parseDoc(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", s.Path, err)
	}
	objs, err := inventory(d)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", s.Path, err)
	}
	g, err := s.readGens()
	if err != nil {
		return nil, err
	}
	counted := g.count(objs)
	return &snapshot{target: target, mode: st.Mode().Perm(), data: data, doc: d, objs: objs, gens: g, counted: counted}, nil
}

// locked runs f under the lock.
func (s *Store) locked(ctx context.Context, f func() error) error {
	// As the daemon makes it at start; the lock lives there.
	if err := os.MkdirAll(s.RuntimeDir, 0o750); err != nil {
		return fmt.Errorf("node.runtime_dir: %w", err)
	}
	unlock, err := whitelist.Lock(ctx, s.RuntimeDir)
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// readLocked reads under the lock; a manual edit it counts is recorded
// there and then, so that every reader sees the same generation.
func (s *Store) readLocked(ctx context.Context) (*snapshot, error) {
	var snap *snapshot
	err := s.locked(ctx, func() error {
		var err error
		if snap, err = s.read(); err != nil {
			return err
		}
		if snap.counted {
			return s.writeGens(snap.gens)
		}
		return nil
	})
	return snap, err
}

func (snap *snapshot) json(key string) (json.RawMessage, error) {
	o := snap.objs[key]
	return objectJSON(o.value, snap.gens.Objects[key].Generation)
}

// Services lists every service in the file's order.
func (s *Store) Services(ctx context.Context) ([]json.RawMessage, error) {
	snap, err := s.readLocked(ctx)
	if err != nil {
		return nil, err
	}
	out := []json.RawMessage{}
	for i := range snap.doc.cfg.Services {
		if o, ok := snap.objs[serviceKey(snap.doc.cfg.Services[i].Name)]; ok {
			j, err := snap.json(o.key)
			if err != nil {
				return nil, err
			}
			out = append(out, j)
		}
	}
	return out, nil
}

// Service is one service.
func (s *Store) Service(ctx context.Context, name string) (json.RawMessage, error) {
	if err := checkName("services[]", name); err != nil {
		return nil, err
	}
	snap, err := s.readLocked(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := snap.objs[serviceKey(name)]; !ok {
		return nil, snap.doc.noService(name)
	}
	return snap.json(serviceKey(name))
}

// Backend is one backend of a service.
func (s *Store) Backend(ctx context.Context, service, backend, pool string) (json.RawMessage, error) {
	snap, err := s.readLocked(ctx)
	if err != nil {
		return nil, err
	}
	key, err := snap.backendKey(service, backend, pool)
	if err != nil {
		return nil, err
	}
	if key == "" {
		return nil, Errorf(http.StatusNotFound, backendField(service, pool, backend), "%s: no such backend", backendField(service, pool, backend))
	}
	return snap.json(key)
}

// backendKey is the key of a backend that exists, "" for one that does
// not; an error for an unknown service or pool, or a bad name.
func (snap *snapshot) backendKey(service, backend, pool string) (string, error) {
	if err := checkName("services[]", service); err != nil {
		return "", err
	}
	if err := checkName(backendField(service, pool, backend), backend); err != nil {
		return "", err
	}
	d := snap.doc
	si, svc := d.service(service)
	if si < 0 {
		return "", d.noService(service)
	}
	at, found, err := d.findBackend(si, svc, service, backend, pool)
	if err != nil || !found {
		return "", err
	}
	return backendKey(service, at.pool.spec.Ref.Pool, backend, at.pool.spec.Shared), nil
}

// key is the key of ch's object, "" when it does not exist (yet).
func (snap *snapshot) key(ch Change) (string, error) {
	if ch.Kind == KindBackend {
		return snap.backendKey(ch.Service, ch.Backend, ch.Pool)
	}
	if ch.Service == "" {
		return "", nil
	}
	if _, ok := snap.objs[serviceKey(ch.Service)]; !ok {
		return "", nil
	}
	return serviceKey(ch.Service), nil
}

// ServiceStats is the Reader's.
func (s *Store) ServiceStats(ctx context.Context, name string) (json.RawMessage, error) {
	if s.Reader == nil {
		return nil, Errorf(http.StatusServiceUnavailable, "", "no daemon status to read")
	}
	return s.Reader.ServiceStats(ctx, name)
}

// Pools is the Reader's.
func (s *Store) Pools(ctx context.Context) (json.RawMessage, error) {
	if s.Reader == nil {
		return nil, Errorf(http.StatusServiceUnavailable, "", "no daemon status to read")
	}
	return s.Reader.Pools(ctx)
}

// MoveVIP is the Mover's.
func (s *Store) MoveVIP(ctx context.Context, vip, to string) (json.RawMessage, error) {
	if s.Mover == nil {
		return nil, Errorf(http.StatusServiceUnavailable, "", "no daemon to move a VIP")
	}
	return s.Mover.MoveVIP(ctx, vip, to)
}

// written is what Do wrote, to put it back if Apply fails.
type written struct {
	target     string
	mode       fs.FileMode
	old, new   []byte
	oldGensRaw []byte
}

// Do makes ch: under the lock it reads the file, checks If-Match, edits,
// validates the whole file, writes it, then the generations; then, the
// lock released, Apply brings it into force. Nothing is written when
// any step before Apply fails. When Apply fails the file and the
// generations are put back, as long as nothing else wrote the file
// since (then it is left as it is, and the error says so): the daemon
// keeps the configuration it had, and the file must say what is in
// force.
//
// Writes queue in the process and are made in order (writeQueue). The
// backend changes without If-Match that queued while the previous group
// was made go together (commitGroup): one read, one validation, one
// write of the file and one Apply for all of them, each acknowledged
// with its own generation. Every other write goes alone.
//
// Once queued, a write is made even if ctx ends: the caller may stop
// listening, but an acknowledged change never depends on it.
func (s *Store) Do(ctx context.Context, ch Change) (Result, error) {
	p := &pending{ctx: ctx, ch: ch, done: make(chan struct{}), lead: make(chan struct{})}
	q := &s.q
	q.mu.Lock()
	q.waiting = append(q.waiting, p)
	leader := !q.busy
	q.busy = true
	q.mu.Unlock()
	if !leader {
		select {
		case <-p.done:
			return p.res, p.err
		case <-p.lead:
		}
	}
	q.mu.Lock()
	batch := q.waiting
	q.waiting = nil
	q.mu.Unlock()
	s.commit(batch)
	q.mu.Lock()
	if len(q.waiting) > 0 {
		close(q.waiting[0].lead)
	} else {
		q.busy = false
	}
	q.mu.Unlock()
	<-p.done
	return p.res, p.err
}

// groupable: a backend change without If-Match may share a group. The
// others go alone: a service change may rename or move many objects,
// and an If-Match must be checked against the file as the previous
// change left it.
func groupable(ch Change) bool { return ch.Kind == KindBackend && ch.IfMatch == nil }

// commit makes batch's writes in order.
func (s *Store) commit(batch []*pending) {
	for len(batch) > 0 {
		n := 1
		if groupable(batch[0].ch) {
			for n < len(batch) && groupable(batch[n].ch) {
				n++
			}
		}
		if n == 1 {
			batch[0].finish(s.doOne(batch[0].ctx, batch[0].ch))
			batch = batch[1:]
			continue
		}
		rest := s.commitGroup(batch[:n])
		batch = append(rest, batch[n:]...)
	}
}

// lockCtx is the context a write waits for the lock under: the caller's
// values, not its end, and at most lockWait.
func lockCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), lockWait)
}

// changeLog is the logger of one change, with who made it and what.
func (s *Store) changeLog(ch Change, res Result) *slog.Logger {
	name := ch.Service
	if name == "" && len(res.Object) > 0 {
		// A create names its service in the body.
		var o struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(res.Object, &o) == nil {
			name = o.Name
		}
	}
	log := s.log().With("who", ch.Who, "verb", string(ch.Verb), "kind", string(ch.Kind), "service", name)
	if ch.Kind == KindBackend {
		log = log.With("backend", ch.Backend, "pool", ch.Pool)
	}
	return log
}

// doOne makes one change on its own (Do).
func (s *Store) doOne(ctx context.Context, ch Change) (Result, error) {
	var res Result
	var w *written
	lctx, cancel := lockCtx(ctx)
	err := s.locked(lctx, func() error {
		var err error
		res, w, err = s.write(ch)
		return err
	})
	cancel()
	log := s.changeLog(ch, res)
	if err != nil {
		log.Info("api change refused", "err", err)
		return Result{}, err
	}
	if w == nil {
		log.Debug("api change: nothing to do")
		return res, nil
	}

	// The change is durable: a client gone away does not undo it.
	actx := context.WithoutCancel(ctx)
	applied, gen, err := s.Applier.Apply(actx)
	if err != nil {
		msg := s.putBack(actx, w)
		log.Error("api change not applied", "err", err, "file", msg, "diff", res.Diff)
		return Result{}, notApplied(err, msg)
	}
	res.Applied, res.ConfigGeneration = applied, gen
	log.Info("api change applied", "applied", string(applied), "generation", res.Generation, "config_generation", gen, "diff", res.Diff)
	return res, nil
}

// notApplied is the error of a change written but refused by Apply; msg
// says what became of the file.
func notApplied(err error, msg string) error {
	st := StatusOf(err)
	if strings.Contains(err.Error(), "no free address") {
		st = http.StatusConflict
	}
	var me *Error
	field := ""
	if errors.As(err, &me) {
		field = me.Field
	}
	return &Error{Status: st, Field: field, Message: fmt.Sprintf("not applied: %s; %s", config.OneLine(err), msg)}
}

// grouped is one change of a group that edited the file.
type grouped struct {
	p    *pending
	ed   Edited
	key  string
	diff string
}

// commitGroup makes items, backend changes without If-Match, as one
// write of the file: each is edited in turn onto the text the previous
// left, the result is validated once, written once with every
// generation counted (each change counts one for its backend and one
// for the service that holds it, as it would alone), and applied once.
// A change that fails on its own (404, 400, ...) is refused alone and
// the others go on. When the whole does not validate, the changes are
// made one by one instead, so that each gets its own answer. A second
// change of a backend already changed in the group, and every change
// after it, is returned to be made in a later group: a change's answer
// carries its object as that change left it.
func (s *Store) commitGroup(items []*pending) (later []*pending) {
	var took []grouped
	var w *written
	var objs map[string]object
	var gens *genFile
	alone := false
	lctx, cancel := lockCtx(items[0].ctx)
	err := s.locked(lctx, func() error {
		snap, err := s.read()
		if err != nil {
			return err
		}
		data := snap.data
		touched := map[string]uint64{}
		for i, p := range items {
			out, ed, err := Edit(data, p.ch)
			if err != nil {
				s.changeLog(p.ch, Result{}).Info("api change refused", "err", err)
				p.finish(Result{}, err)
				continue
			}
			shared := len(ed.SharedBy) > 0
			key := backendKey(ed.Service, ed.Pool, ed.Backend, shared)
			if touched[key] > 0 {
				later = items[i:]
				break
			}
			if bytes.Equal(out, data) {
				res := Result{Applied: AppliedNone, SharedBy: ed.SharedBy, Generation: snap.gens.Objects[key].Generation}
				if o, ok := snap.objs[key]; ok {
					if res.Object, err = objectJSON(o.value, res.Generation); err != nil {
						p.finish(Result{}, err)
						continue
					}
				}
				s.changeLog(p.ch, res).Debug("api change: nothing to do")
				p.finish(res, nil)
				continue
			}
			if err := tooBig(out); err != nil {
				p.finish(Result{}, err)
				continue
			}
			took = append(took, grouped{p: p, ed: ed, key: key, diff: diff(data, out, s.Path)})
			touched[key]++
			if !shared {
				touched[serviceKey(ed.Service)]++
			}
			data = out
		}
		if len(took) == 0 {
			if snap.counted {
				return s.writeGens(snap.gens)
			}
			return nil
		}
		cfg, err := config.Parse(data)
		if err != nil {
			// Which change broke it is for each alone to find out.
			alone = true
			return nil
		}
		if _, objs, err = objectsOf(data, cfg); err != nil {
			return err
		}
		gens = snap.gens
		for k, n := range touched {
			r := gens.Objects[k]
			r.Generation += n
			r.Hash = objs[k].hash // "" once gone
			gens.Objects[k] = r
		}
		gens.count(objs)
		w, err = s.persist(snap, data, gens)
		return err
	})
	cancel()
	if alone {
		for _, g := range took {
			g.p.finish(s.doOne(g.p.ctx, g.p.ch))
		}
		return later
	}
	if err != nil {
		for _, g := range took {
			s.changeLog(g.p.ch, Result{}).Info("api change refused", "err", err)
			g.p.finish(Result{}, err)
		}
		if len(took) == 0 {
			// read failed: nothing was tried.
			for _, p := range items[:len(items)-len(later)] {
				select {
				case <-p.done:
				default:
					p.finish(Result{}, err)
				}
			}
		}
		return later
	}
	if w == nil {
		return later
	}
	actx := context.WithoutCancel(items[0].ctx)
	applied, gen, err := s.Applier.Apply(actx)
	var msg string
	if err != nil {
		msg = s.putBack(actx, w)
	}
	for _, g := range took {
		res := Result{Diff: g.diff, SharedBy: g.ed.SharedBy, Generation: gens.Objects[g.key].Generation}
		log := s.changeLog(g.p.ch, res)
		if err != nil {
			log.Error("api change not applied", "err", err, "file", msg, "group", len(took), "diff", g.diff)
			g.p.finish(Result{}, notApplied(err, msg))
			continue
		}
		if o, ok := objs[g.key]; ok && !g.ed.Deleted {
			var jerr error
			if res.Object, jerr = objectJSON(o.value, res.Generation); jerr != nil {
				g.p.finish(Result{}, jerr)
				continue
			}
		}
		res.Applied, res.ConfigGeneration = applied, gen
		log.Info("api change applied", "applied", string(applied), "generation", res.Generation, "config_generation", gen, "group", len(took), "diff", g.diff)
		g.p.finish(res, nil)
	}
	return later
}

// putBack restores the file and generations w replaced, if nothing was
// written since; it says what it did.
func (s *Store) putBack(ctx context.Context, w *written) string {
	msg := ""
	err := s.locked(ctx, func() error {
		now, err := os.ReadFile(w.target)
		if err != nil {
			return err
		}
		if !bytes.Equal(now, w.new) {
			msg = "ober.yaml keeps the change: it was written again since (correct it, or apply it again)"
			return nil
		}
		if err := atomicfile.Write(w.target, w.old, w.mode); err != nil {
			return err
		}
		if w.oldGensRaw == nil {
			err = os.Remove(s.genPath())
			if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		} else {
			err = atomicfile.Write(s.genPath(), w.oldGensRaw, 0o600)
		}
		msg = "ober.yaml was put back as it was"
		return err
	})
	if err != nil {
		return fmt.Sprintf("ober.yaml could not be put back (%v): it keeps the change", err)
	}
	return msg
}

// write is Do's part under the lock. w is nil when nothing changed.
func (s *Store) write(ch Change) (Result, *written, error) {
	snap, err := s.read()
	if err != nil {
		return Result{}, nil, err
	}
	key, err := snap.key(ch)
	if err != nil {
		return Result{}, nil, err
	}
	if ch.IfMatch != nil {
		cur := uint64(0)
		if key != "" {
			cur = snap.gens.Objects[key].Generation
		}
		if cur != *ch.IfMatch {
			what := "it does not exist"
			if key != "" {
				what = fmt.Sprintf("its generation is %d", cur)
			}
			return Result{}, nil, Errorf(http.StatusPreconditionFailed, changeField(ch), "%s: If-Match %d: %s", changeField(ch), *ch.IfMatch, what)
		}
	}
	out, ed, err := Edit(snap.data, ch)
	if err != nil {
		return Result{}, nil, err
	}
	if bytes.Equal(out, snap.data) {
		if snap.counted {
			if err := s.writeGens(snap.gens); err != nil {
				return Result{}, nil, err
			}
		}
		res := Result{Applied: AppliedNone}
		k := edKey(snap, ch, ed)
		if k != "" {
			res.Generation = snap.gens.Objects[k].Generation
			if o, ok := snap.objs[k]; ok {
				if res.Object, err = objectJSON(o.value, res.Generation); err != nil {
					return Result{}, nil, err
				}
			}
		}
		res.SharedBy = ed.SharedBy
		return res, nil, nil
	}
	if err := tooBig(out); err != nil {
		return Result{}, nil, err
	}
	cfg, err := config.Parse(out)
	if err != nil {
		return Result{}, nil, validationError(out, err)
	}
	nd, objs, err := objectsOf(out, cfg)
	if err != nil {
		return Result{}, nil, err
	}
	gens := snap.gens
	gens.count(objs)
	w, err := s.persist(snap, out, gens)
	if err != nil {
		return Result{}, nil, err
	}
	res := Result{Diff: diff(snap.data, out, s.Path), SharedBy: ed.SharedBy}
	nsnap := &snapshot{doc: nd, objs: objs, gens: gens}
	if k := edKey(nsnap, ch, ed); k != "" {
		res.Generation = gens.Objects[k].Generation
		if !ed.Deleted {
			if res.Object, err = nsnap.json(k); err != nil {
				return Result{}, nil, err
			}
		}
	}
	return res, w, nil
}

// tooBig refuses a file config.Load would not read whole.
func tooBig(out []byte) error {
	if len(out) <= maxConfigSize {
		return nil
	}
	return Errorf(http.StatusRequestEntityTooLarge, "", "ober.yaml would be %d bytes: more than config.Load reads (%d MiB)", len(out), maxConfigSize>>20)
}

// objectsOf is the inventory of out, which cfg is the reading of.
func objectsOf(out []byte, cfg *config.Config) (*doc, map[string]object, error) {
	nd, err := docOf(out, cfg)
	if err != nil {
		return nil, nil, err
	}
	objs, err := inventory(nd)
	return nd, objs, err
}

// persist writes out over snap's file, then gens. The generations must
// count what the file holds: without them no change is acknowledged, so
// when they cannot be written the file goes back.
func (s *Store) persist(snap *snapshot, out []byte, gens *genFile) (*written, error) {
	oldGensRaw, err := os.ReadFile(s.genPath())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("generations: %w", err)
	}
	if err := atomicfile.Write(snap.target, out, snap.mode); err != nil {
		return nil, fmt.Errorf("%w; nothing was written", err)
	}
	if err := s.writeGens(gens); err != nil {
		if perr := atomicfile.Write(snap.target, snap.data, snap.mode); perr != nil {
			return nil, fmt.Errorf("%w; and ober.yaml could not be put back: %v", err, perr)
		}
		return nil, fmt.Errorf("%w; ober.yaml was put back as it was", err)
	}
	return &written{target: snap.target, mode: snap.mode, old: snap.data, new: out, oldGensRaw: oldGensRaw}, nil
}

// edKey is the key of the object Edit changed, in snap.
func edKey(snap *snapshot, ch Change, ed Edited) string {
	if ch.Kind == KindService {
		return serviceKey(ed.Service)
	}
	shared := len(ed.SharedBy) > 0
	return backendKey(ed.Service, ed.Pool, ed.Backend, shared)
}

func changeField(ch Change) string {
	if ch.Kind == KindBackend {
		return backendField(ch.Service, ch.Pool, ch.Backend)
	}
	return "services[" + ch.Service + "]"
}

// validationError maps config.Parse's error on the edited file to an
// *Error: 422 with the validator's words, paths in the API's form; 409
// when it is a conflict (a name, or a port on a VIP, already used).
func validationError(out []byte, err error) error {
	var c config.Config
	_ = yaml.Unmarshal(out, &c)
	c.ApplyDefaults()
	fes := fieldErrors(err)
	if len(fes) == 0 {
		return Errorf(http.StatusUnprocessableEntity, "", "%s", apiPath(&c, config.OneLine(err)))
	}
	status := http.StatusUnprocessableEntity
	var msgs []string
	for _, fe := range fes {
		if strings.Contains(fe.Msg, "already used by") || strings.HasPrefix(fe.Msg, "overlaps port") {
			status = http.StatusConflict
		}
		msgs = append(msgs, apiPath(&c, fe.Error()))
	}
	return &Error{Status: status, Field: apiPath(&c, fes[0].Path), Message: strings.Join(msgs, "; ")}
}

// diff is the change of the file, unified.
func diff(a, b []byte, name string) string {
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(a)), B: difflib.SplitLines(string(b)),
		FromFile: name, ToFile: name, Context: 2,
	})
	if err != nil {
		return ""
	}
	return d
}

// foundBackend is an override's address as discovery names backends.
func foundBackend(addr string) (discovery.Backend, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return discovery.Backend{}, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return discovery.Backend{}, false
	}
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	return discovery.Backend{Host: host, Port: uint16(n)}, true
}
