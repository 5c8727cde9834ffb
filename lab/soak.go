package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ober-ingress/ober/lab/netsite"
)

// SoakOptions shape `ober lab soak`.
type SoakOptions struct {
	Dir      string
	Duration time.Duration
	// MinSize and MaxSize bound the uploads; default 50 and 500 MiB.
	MinSize, MaxSize int64
	// Bin is the ober binary a restarted node runs; default this one.
	Bin string
	Out io.Writer
}

// soakObject is an object the gateway acknowledged, and its local copy.
type soakObject struct {
	key  string
	size int64
	sum  [32]byte
	path string
}

// Phase is a stretch of the soak between two disruptions.
type Phase struct {
	Name               string
	Start, End         time.Time
	UpBytes, DownBytes int64
	Ops, Errors        int
	FirstErrors        []string
}

// SoakReport is what a soak did and found.
type SoakReport struct {
	Phases []Phase
	// Objects were acknowledged and still stored at the end; Verified
	// of them read back byte-exact.
	Objects, Verified int
	Problems          []string
}

// soak is one run's state.
type soak struct {
	o      SoakOptions
	st     *State
	bucket string
	data   string // local copies
	env    []string

	mu      sync.Mutex
	objects map[string]*soakObject
	phase   *Phase
	phases  []*Phase
	seq     int
}

// Soak runs mixed S3 traffic from the client namespace with aws-cli for
// o.Duration while it disrupts the nodes in turn: an HAProxy kill, a
// reload, a graceful stop and start, a link flap. At the end every node
// must be healthy, the router must have every path, and every object the
// gateway acknowledged and that was not deleted must read back
// byte-exact.
func Soak(ctx context.Context, o SoakOptions) (*SoakReport, error) {
	st, err := Load(o.Dir)
	if err != nil {
		return nil, err
	}
	if !st.Ready {
		return nil, errors.New("the lab is not ready: `ober lab status`")
	}
	if st.HA == haVRRP {
		return nil, errors.New("the soak runs on a BGP lab (`ober lab up`), not --ha vrrp")
	}
	if o.MinSize == 0 {
		o.MinSize = 50 << 20
	}
	if o.MaxSize == 0 {
		o.MaxSize = 500 << 20
	}
	if o.MinSize > o.MaxSize {
		return nil, fmt.Errorf("soak: the smallest upload (%d) is larger than the largest (%d)", o.MinSize, o.MaxSize)
	}
	if o.Bin == "" {
		if o.Bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if _, err := exec.LookPath("aws"); err != nil {
		return nil, errors.New("the soak needs aws-cli: apt-get install awscli")
	}
	s := &soak{o: o, st: st, bucket: fmt.Sprintf("soak-%d", time.Now().Unix()), objects: map[string]*soakObject{}}
	s.data, err = os.MkdirTemp(o.Dir, "soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(s.data)
	cfg := filepath.Join(s.data, "aws.config")
	// 8 parallel transfers, 8 MiB parts: aws-cli's defaults but for the
	// concurrency the issue asks for.
	if err := os.WriteFile(cfg, []byte("[default]\ns3 =\n  max_concurrent_requests = 8\n  multipart_chunksize = 8MB\n"), 0o600); err != nil {
		return nil, err
	}
	s.env = append(os.Environ(), "AWS_CONFIG_FILE="+cfg, "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_ACCESS_KEY_ID="+st.AccessKey, "AWS_SECRET_ACCESS_KEY="+st.SecretKey, "AWS_DEFAULT_REGION=us-east-1",
		// Ceph 16's RGW refuses the checksum trailers newer aws-clis send.
		"AWS_REQUEST_CHECKSUM_CALCULATION=when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION=when_required")
	if _, err := s.aws(ctx, "s3", "mb", "s3://"+s.bucket); err != nil {
		return nil, fmt.Errorf("soak: make the bucket: %w", err)
	}

	s.newPhase("steady")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(ctx, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w))))
		}()
	}
	events := []struct {
		name string
		do   func(context.Context) error
	}{
		{"kill node1's HAProxy", s.killInstances(0)},
		{"reload node2", s.reload(1)},
		{"stop and start node3", s.restart(2)},
		{"flap node1's link", s.flap(0)},
	}
	step := o.Duration / time.Duration(len(events)+1)
	var problems []string
	for _, e := range events {
		select {
		case <-ctx.Done():
		case <-time.After(step):
		}
		fmt.Fprintf(o.Out, "[%s] %s\n", time.Now().Format("15:04:05"), e.name)
		s.newPhase(e.name)
		if err := e.do(ctx); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", e.name, err))
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(step):
	}
	cancel()
	wg.Wait()
	s.newPhase("")

	r := &SoakReport{Problems: problems}
	for _, p := range s.phases {
		r.Phases = append(r.Phases, *p)
	}
	check := context.Background()
	if err := s.settled(check); err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	for _, obj := range s.objects {
		r.Objects++
		sum, err := s.getSum(check, obj.key, "")
		switch {
		case err != nil:
			r.Problems = append(r.Problems, fmt.Sprintf("%s (%d bytes) does not read back: %v", obj.key, obj.size, err))
		case sum != obj.sum:
			r.Problems = append(r.Problems, fmt.Sprintf("%s (%d bytes) reads back different bytes", obj.key, obj.size))
		default:
			r.Verified++
		}
	}
	return r, nil
}

func (s *soak) newPhase(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.phase != nil {
		s.phase.End = now
	}
	if name == "" {
		s.phase = nil
		return
	}
	s.phase = &Phase{Name: name, Start: now}
	s.phases = append(s.phases, s.phase)
}

// current is the phase now; an operation is counted in the phase it
// started in.
func (s *soak) current() *Phase {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase
}

// count records an operation's outcome in phase p.
func (s *soak) count(p *Phase, up, down int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p == nil {
		return
	}
	p.Ops++
	p.UpBytes += up
	p.DownBytes += down
	if err != nil {
		p.Errors++
		if len(p.FirstErrors) < 3 {
			p.FirstErrors = append(p.FirstErrors, err.Error())
		}
	}
}

// worker makes operations until ctx ends: uploads most, then ranged
// reads, listings and deletes.
func (s *soak) worker(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		p := s.current()
		switch n := rng.IntN(20); {
		case n < 10 || s.count0() < 2:
			obj, err := s.upload(ctx, rng)
			if ctx.Err() != nil {
				return
			}
			var size int64
			if obj != nil {
				size = obj.size
			}
			s.count(p, size, 0, err)
		case n < 15:
			got, err := s.rangeRead(ctx, rng)
			if ctx.Err() == nil {
				s.count(p, 0, got, err)
			}
		case n < 17:
			s.count(p, 0, 0, s.list(ctx))
		default:
			s.count(p, 0, 0, s.remove(ctx, rng))
		}
	}
}

func (s *soak) count0() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objects)
}

// upload writes a new random object locally and uploads it; it is
// recorded only once aws-cli says the gateway took it.
func (s *soak) upload(ctx context.Context, rng *rand.Rand) (*soakObject, error) {
	s.mu.Lock()
	s.seq++
	key := fmt.Sprintf("obj-%05d", s.seq)
	s.mu.Unlock()
	size := s.o.MinSize + rng.Int64N(s.o.MaxSize-s.o.MinSize+1)
	path := filepath.Join(s.data, key)
	sum, err := writeRandom(path, size, rng.Uint64())
	if err != nil {
		return nil, err
	}
	if _, err := s.aws(ctx, "s3", "cp", "--only-show-errors", path, "s3://"+s.bucket+"/"+key); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("upload %s (%d MiB): %w", key, size>>20, err)
	}
	obj := &soakObject{key: key, size: size, sum: sum, path: path}
	s.mu.Lock()
	s.objects[key] = obj
	s.mu.Unlock()
	return obj, nil
}

// writeRandom writes size bytes from a seeded generator and returns
// their SHA-256.
func writeRandom(path string, size int64, seed uint64) ([32]byte, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	var key [32]byte
	for i := range 4 {
		for j := range 8 {
			key[i*8+j] = byte(seed >> (8 * j))
		}
		seed = seed*6364136223846793005 + 1442695040888963407
	}
	src := rand.NewChaCha8(key)
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, src, size); err != nil {
		return [32]byte{}, err
	}
	if err := w.Flush(); err != nil {
		return [32]byte{}, err
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, f.Close()
}

// pick is a random stored object, or nil.
func (s *soak) pick(rng *rand.Rand) *soakObject {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.objects) == 0 {
		return nil
	}
	n := rng.IntN(len(s.objects))
	for _, o := range s.objects {
		if n == 0 {
			return o
		}
		n--
	}
	return nil
}

// rangeRead reads a random byte range of a stored object and compares
// it with the local copy.
func (s *soak) rangeRead(ctx context.Context, rng *rand.Rand) (int64, error) {
	obj := s.pick(rng)
	if obj == nil {
		return 0, nil
	}
	from := rng.Int64N(obj.size)
	to := min(obj.size-1, from+rng.Int64N(16<<20))
	want := sha256.New()
	f, err := os.Open(obj.path)
	if err != nil {
		return 0, nil // deleted meanwhile
	}
	defer f.Close()
	if _, err := io.Copy(want, io.NewSectionReader(f, from, to-from+1)); err != nil {
		return 0, err
	}
	got, err := s.getSum(ctx, obj.key, fmt.Sprintf("bytes=%d-%d", from, to))
	if err != nil {
		if s.gone(obj.key) {
			return 0, nil
		}
		return 0, fmt.Errorf("range %d-%d of %s: %w", from, to, obj.key, err)
	}
	if hex.EncodeToString(want.Sum(nil)) != hex.EncodeToString(got[:]) {
		return 0, fmt.Errorf("range %d-%d of %s: different bytes", from, to, obj.key)
	}
	return to - from + 1, nil
}

func (s *soak) gone(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.objects[key]
	return !ok
}

// getSum reads an object (or a range) with aws-cli into its SHA-256.
func (s *soak) getSum(ctx context.Context, key, rng string) ([32]byte, error) {
	args := []string{"s3api", "get-object", "--bucket", s.bucket, "--key", key}
	if rng != "" {
		args = append(args, "--range", rng)
	}
	out := filepath.Join(s.data, fmt.Sprintf("get-%d", time.Now().UnixNano()))
	defer os.Remove(out)
	if _, err := s.aws(ctx, append(args, out)...); err != nil {
		return [32]byte{}, err
	}
	f, err := os.Open(out)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// list wants every acknowledged object in the bucket's listing.
func (s *soak) list(ctx context.Context) error {
	s.mu.Lock()
	before := map[string]bool{}
	for k := range s.objects {
		before[k] = true
	}
	s.mu.Unlock()
	out, err := s.aws(ctx, "s3", "ls", "s3://"+s.bucket+"/")
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	for k := range before {
		if !strings.Contains(out, " "+k+"\n") && !s.gone(k) {
			return fmt.Errorf("list: %s is acknowledged but not listed", k)
		}
	}
	return nil
}

// remove deletes a stored object; it is forgotten first, so that no
// check wants it back.
func (s *soak) remove(ctx context.Context, rng *rand.Rand) error {
	obj := s.pick(rng)
	if obj == nil {
		return nil
	}
	s.mu.Lock()
	delete(s.objects, obj.key)
	s.mu.Unlock()
	os.Remove(obj.path)
	if _, err := s.aws(ctx, "s3", "rm", "--only-show-errors", "s3://"+s.bucket+"/"+obj.key); err != nil {
		return fmt.Errorf("delete %s: %w", obj.key, err)
	}
	return nil
}

// aws runs aws-cli in the client namespace against the lab's first
// endpoint and returns its output.
func (s *soak) aws(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", s.st.Client, "aws", "--endpoint-url", s.st.Endpoints[0], "--ca-bundle", s.st.CA}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = s.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return "", fmt.Errorf("aws %s: %v: %s", strings.Join(args[:min(2, len(args))], " "), err, msg)
	}
	return stdout.String(), nil
}

// killInstances kills node i's HAProxy instances (SIGKILL).
func (s *soak) killInstances(i int) func(context.Context) error {
	return func(ctx context.Context) error {
		n := s.st.Nodes[i]
		a, err := newNodeAPI(n.NS)
		if err != nil {
			return err
		}
		defer a.Close()
		pids, err := instancePIDs(ctx, a, n.Name)
		if err != nil {
			return err
		}
		_, err = killAll(n.Name, pids)
		return err
	}
}

// reload sends node i's ober a SIGHUP.
func (s *soak) reload(i int) func(context.Context) error {
	return func(context.Context) error {
		return syscall.Kill(s.st.Nodes[i].PID, syscall.SIGHUP)
	}
}

// restart stops node i's ober gracefully (SIGTERM, its instances
// drained) and starts it again with the same configuration.
func (s *soak) restart(i int) func(context.Context) error {
	return func(ctx context.Context) error {
		n := &s.st.Nodes[i]
		if err := syscall.Kill(n.PID, syscall.SIGTERM); err != nil {
			return err
		}
		deadline := time.Now().Add(teardownGrace)
		for syscall.Kill(n.PID, 0) == nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s's ober (pid %d) did not stop within %v", n.Name, n.PID, teardownGrace)
			}
			time.Sleep(100 * time.Millisecond)
		}
		site, err := netsite.Open(s.st.Dir, s.st.Prefix)
		if err != nil {
			return err
		}
		if err := site.Ledger.Ended(n.PID); err != nil {
			return err
		}
		pid, err := site.Spawn(&netsite.NS{Name: n.NS}, "ober "+n.Name, n.Log, s.o.Bin, "run", "--config", n.Config, "--log-level", "info")
		if err != nil {
			return err
		}
		n.PID = pid
		if err := s.st.save(); err != nil {
			return err
		}
		return waitHealthy(ctx, *n, 60*time.Second)
	}
}

// flap takes node i's link down for 2 s.
func (s *soak) flap(i int) func(context.Context) error {
	return func(ctx context.Context) error {
		ns := &netsite.NS{Name: s.st.Nodes[i].NS}
		if err := ns.IP(ctx, "link", "set", "eth-sw", "down"); err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		return ns.IP(ctx, "link", "set", "eth-sw", "up")
	}
}

// settled waits until every node is healthy and announces, and the
// router routes the VIP over all of them.
func (s *soak) settled(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := Status(ctx, s.st.Dir)
		if err == nil && len(r.Problems) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return fmt.Errorf("60 s after the soak the lab is not well: %s", strings.Join(r.Problems, "; "))
		}
		time.Sleep(time.Second)
	}
}

// Print writes the report: per phase its throughput and errors, then
// the checks.
func (r *SoakReport) Print(w io.Writer) {
	fmt.Fprintf(w, "%-24s %8s %10s %10s %6s %6s\n", "PHASE", "SECONDS", "UP MB/s", "DOWN MB/s", "OPS", "ERRORS")
	for _, p := range r.Phases {
		d := p.End.Sub(p.Start).Seconds()
		fmt.Fprintf(w, "%-24s %8.1f %10.1f %10.1f %6d %6d\n", p.Name, d, float64(p.UpBytes)/d/1e6, float64(p.DownBytes)/d/1e6, p.Ops, p.Errors)
		for _, e := range p.FirstErrors {
			fmt.Fprintf(w, "    %s\n", e)
		}
	}
	fmt.Fprintf(w, "objects: %d acknowledged and kept, %d read back byte-exact\n", r.Objects, r.Verified)
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "all well")
		return
	}
	fmt.Fprintf(w, "problems (%d):\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}
