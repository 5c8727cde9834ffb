package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
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

// soakObject is an object the gateway acknowledged. Its bytes come from
// a generator seeded by seed, so the soak keeps no copy and can make any
// range of it again to compare.
type soakObject struct {
	key  string
	size int64
	seed uint64
	sum  [32]byte
	// readers are reading it now: it is not deleted under them, since
	// RGW may cut a read of a deleted object short once its garbage
	// collector runs.
	readers int
}

// Phase is a stretch of the soak between two disruptions.
type Phase struct {
	Name               string
	Start, End         time.Time
	UpBytes, DownBytes int64
	Ops, Errors        int
	// InFlight were running when the phase began.
	InFlight    int
	FirstErrors []string
}

// SoakReport is what a soak did and found.
type SoakReport struct {
	Client string // aws --version
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
	aws    string // aws-cli's path
	tmp    string // whole objects read back, one file a reader at most
	bucket string
	env    []string
	// keep is how much the soak keeps stored: above it, writers delete
	// instead of uploading, so that a soak of hours does not fill the
	// S3 user's quota.
	keep int64

	mu      sync.Mutex
	objects map[string]*soakObject
	stored  int64
	running int // operations in flight
	phase   *Phase
	phases  []*Phase
	seq     int
}

// soakWorkers is how many aws-cli commands run at once: two writers
// (uploads, deletes) and two readers (ranges, whole objects, listings),
// each with 8 parallel transfers.
const soakWorkers = 4

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
	s := &soak{o: o, st: st, bucket: fmt.Sprintf("soak-%d", time.Now().Unix()), objects: map[string]*soakObject{}}
	if s.aws, err = exec.LookPath("aws"); err != nil {
		return nil, errors.New("the soak needs aws-cli: apt-get install awscli")
	}
	// A third of the quota, and room for the largest upload of every
	// writer on top.
	s.keep = max(st.S3.Quota/3, 2*o.MaxSize)
	if st.S3.Quota > 0 && s.keep+2*o.MaxSize > st.S3.Quota {
		return nil, fmt.Errorf("soak: --max-size %d MiB does not fit the S3 user's quota of %d MiB twice over: lab up --s3-capacity larger",
			o.MaxSize>>20, st.S3.Quota>>20)
	}
	// On the S3 backend's disk, which lab down removes, when the lab has
	// one; the lab's own directory is often a tmpfs.
	tmpRoot := ""
	if st.S3.BlockFile != "" {
		tmpRoot = filepath.Dir(st.S3.BlockFile)
	}
	if s.tmp, err = os.MkdirTemp(tmpRoot, "soak-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(s.tmp)
	cfg, err := os.CreateTemp(s.tmp, "aws-config-")
	if err != nil {
		return nil, err
	}
	// 8 parallel transfers, 8 MiB parts: aws-cli's defaults but for the
	// concurrency.
	if _, err := cfg.WriteString("[default]\ns3 =\n  max_concurrent_requests = 8\n  multipart_chunksize = 8MB\n"); err != nil {
		return nil, err
	}
	if err := cfg.Close(); err != nil {
		return nil, err
	}
	s.env = append(os.Environ(), "AWS_CONFIG_FILE="+cfg.Name(), "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_ACCESS_KEY_ID="+st.AccessKey, "AWS_SECRET_ACCESS_KEY="+st.SecretKey, "AWS_DEFAULT_REGION=us-east-1",
		// Ceph 16's RGW refuses the checksum trailers newer aws-clis send.
		"AWS_REQUEST_CHECKSUM_CALCULATION=when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION=when_required")
	r := &SoakReport{}
	if out, err := s.run(ctx, nil, nil, "--version"); err == nil {
		r.Client = strings.TrimSpace(out)
	}
	if _, err := s.run(ctx, nil, nil, "s3", "mb", "s3://"+s.bucket); err != nil {
		return nil, fmt.Errorf("soak: make the bucket: %w", err)
	}

	s.newPhase("steady")
	// The checks at the end run on the caller's ctx: an interrupt stops
	// them too.
	check := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			if w%2 == 0 {
				s.writer(ctx, rng)
			} else {
				s.reader(ctx, rng)
			}
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
	for _, e := range events {
		select {
		case <-ctx.Done():
		case <-time.After(step):
		}
		fmt.Fprintf(o.Out, "[%s] %s\n", time.Now().Format("15:04:05"), e.name)
		s.newPhase(e.name)
		if err := e.do(ctx); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %v", e.name, err))
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(step):
	}
	cancel()
	wg.Wait()
	s.newPhase("")

	for _, p := range s.phases {
		r.Phases = append(r.Phases, *p)
		if p.Ops+p.InFlight == 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("no S3 operation ran during %q: a longer --duration", p.Name))
		}
	}
	if err := s.settled(check); err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	fmt.Fprintf(o.Out, "[%s] reading back %d objects\n", time.Now().Format("15:04:05"), len(s.objects))
	for _, obj := range s.objects {
		r.Objects++
		sum, n, err := s.readBack(check, obj.key)
		switch {
		case err != nil:
			r.Problems = append(r.Problems, fmt.Sprintf("%s (%d bytes) does not read back: %v", obj.key, obj.size, err))
		case sum != obj.sum:
			r.Problems = append(r.Problems, fmt.Sprintf("%s (%d bytes) reads back %d bytes, not the ones stored", obj.key, obj.size, n))
		default:
			r.Verified++
		}
	}
	if _, err := s.run(check, nil, nil, "s3", "rb", "--force", "s3://"+s.bucket); err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("remove the bucket %s: %v", s.bucket, err))
	}
	return r, nil
}

// readBack reads an object whole for the final check. A read that fails
// is tried twice more: the check is about the gateway's bytes, and
// aws-cli itself fails now and then (a segmentation fault of Debian's
// 2.9 was seen once in an hour of soaks). Different bytes are not
// retried.
func (s *soak) readBack(ctx context.Context, key string) (sum [32]byte, n int64, err error) {
	for range 3 {
		// 500 MiB at 2 MiB/s: a read that takes longer is a problem.
		octx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		sum, n, err = s.get(octx, key)
		cancel()
		if err == nil || ctx.Err() != nil {
			return sum, n, err
		}
		fmt.Fprintf(s.o.Out, "[%s] read of %s failed, again: %v\n", time.Now().Format("15:04:05"), key, err)
	}
	return sum, n, err
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
	s.phase = &Phase{Name: name, Start: now, InFlight: s.running}
	s.phases = append(s.phases, s.phase)
}

// begin starts an operation in the phase now, where it is counted.
func (s *soak) begin() *Phase {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running++
	return s.phase
}

// count records the outcome of an operation begun in phase p.
func (s *soak) count(p *Phase, up, down int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
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

// writer uploads, and deletes one object in five, or whenever the soak
// keeps more than s.keep.
func (s *soak) writer(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		s.mu.Lock()
		full, n := s.stored > s.keep, len(s.objects)
		s.mu.Unlock()
		p := s.begin()
		if full || (n > 2 && rng.IntN(5) == 0) {
			err := s.remove(ctx, rng)
			s.count(s.unlessEnded(ctx, p), 0, 0, err)
			continue
		}
		size, err := s.upload(ctx, rng)
		s.count(s.unlessEnded(ctx, p), size, 0, err)
	}
}

// reader reads byte ranges most, whole objects and listings less.
func (s *soak) reader(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		if s.count0() == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		p := s.begin()
		var got int64
		var err error
		switch n := rng.IntN(10); {
		case n < 6:
			got, err = s.rangeRead(ctx, rng)
		case n < 8:
			got, err = s.wholeRead(ctx, rng)
		default:
			err = s.list(ctx)
		}
		s.count(s.unlessEnded(ctx, p), 0, got, err)
	}
}

// unlessEnded is p, or nil when the soak ended: an operation cut off at
// the end is not an error.
func (s *soak) unlessEnded(ctx context.Context, p *Phase) *Phase {
	if ctx.Err() != nil {
		return nil
	}
	return p
}

func (s *soak) count0() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objects)
}

// upload streams a new object of random size to aws-cli; it is recorded
// only once aws-cli says the gateway took it.
func (s *soak) upload(ctx context.Context, rng *rand.Rand) (int64, error) {
	s.mu.Lock()
	s.seq++
	key := fmt.Sprintf("obj-%05d", s.seq)
	s.mu.Unlock()
	obj := &soakObject{key: key, size: s.o.MinSize + rng.Int64N(s.o.MaxSize-s.o.MinSize+1), seed: rng.Uint64()}
	h := sha256.New()
	in := io.TeeReader(obj.bytes(0, obj.size), h)
	if _, err := s.run(ctx, in, nil, "s3", "cp", "--only-show-errors", "--expected-size", fmt.Sprint(obj.size),
		"-", "s3://"+s.bucket+"/"+key); err != nil {
		return 0, fmt.Errorf("upload %s (%d MiB): %w", key, obj.size>>20, err)
	}
	copy(obj.sum[:], h.Sum(nil))
	s.mu.Lock()
	s.objects[key] = obj
	s.stored += obj.size
	s.mu.Unlock()
	return obj.size, nil
}

// soakBlock is the generator's unit: any range is made from the blocks
// it touches alone.
const soakBlock = 1 << 20

// bytes is the object's bytes [from, to).
func (o *soakObject) bytes(from, to int64) io.Reader {
	return &soakBytes{seed: o.seed, off: from, end: to}
}

type soakBytes struct {
	seed     uint64
	off, end int64
	block    int64
	src      *rand.ChaCha8
}

func (b *soakBytes) Read(p []byte) (int, error) {
	if b.off >= b.end {
		return 0, io.EOF
	}
	if i := b.off / soakBlock; b.src == nil || i != b.block {
		var key [32]byte
		binary.LittleEndian.PutUint64(key[:8], b.seed)
		binary.LittleEndian.PutUint64(key[8:16], uint64(i))
		b.src, b.block = rand.NewChaCha8(key), i
		if skip := b.off % soakBlock; skip > 0 {
			_, _ = b.src.Read(make([]byte, skip)) // never fails
		}
	}
	n := int(min(int64(len(p)), b.end-b.off, soakBlock-b.off%soakBlock))
	_, _ = b.src.Read(p[:n]) // never fails
	b.off += int64(n)
	return n, nil
}

// pick is a random stored object, held for a read until done; nil when
// there is none.
func (s *soak) pick(rng *rand.Rand) *soakObject {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.objects) == 0 {
		return nil
	}
	n := rng.IntN(len(s.objects))
	for _, o := range s.objects {
		if n == 0 {
			o.readers++
			return o
		}
		n--
	}
	return nil
}

// done ends a read of o.
func (s *soak) done(o *soakObject) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o.readers--
}

// rangeRead reads a random byte range of a stored object, up to 16 MiB,
// and compares it with the generator's.
func (s *soak) rangeRead(ctx context.Context, rng *rand.Rand) (int64, error) {
	obj := s.pick(rng)
	if obj == nil {
		return 0, nil
	}
	defer s.done(obj)
	from := rng.Int64N(obj.size)
	to := min(obj.size-1, from+rng.Int64N(16<<20))
	want := sha256.New()
	_, _ = io.Copy(want, obj.bytes(from, to+1)) // never fails
	got := sha256.New()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	done := make(chan int64)
	go func() {
		n, _ := io.Copy(got, r)
		r.Close()
		done <- n
	}()
	// get-object writes the body to its outfile and a JSON summary to
	// stdout: the body goes to fd 3, a pipe.
	_, err = s.run(ctx, nil, w, "s3api", "get-object", "--bucket", s.bucket, "--key", obj.key,
		"--range", fmt.Sprintf("bytes=%d-%d", from, to), "/dev/fd/3")
	w.Close()
	n := <-done
	if err != nil {
		return 0, fmt.Errorf("range %d-%d of %s: %w", from, to, obj.key, err)
	}
	if !bytes.Equal(want.Sum(nil), got.Sum(nil)) {
		return n, fmt.Errorf("range %d-%d of %s: %d bytes, not the ones stored", from, to, obj.key, n)
	}
	return n, nil
}

// wholeRead reads a stored object whole and compares its SHA-256.
func (s *soak) wholeRead(ctx context.Context, rng *rand.Rand) (int64, error) {
	obj := s.pick(rng)
	if obj == nil {
		return 0, nil
	}
	defer s.done(obj)
	sum, n, err := s.get(ctx, obj.key)
	switch {
	case err != nil:
		return n, fmt.Errorf("read %s: %w", obj.key, err)
	case sum != obj.sum:
		return n, fmt.Errorf("read %s: %d bytes of %d, not the ones stored", obj.key, n, obj.size)
	}
	return n, nil
}

func (s *soak) gone(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.objects[key]
	return !ok
}

// get reads an object with aws-cli's multipart download (8 parallel
// ranges) into a file, and returns the file's SHA-256 and size. Not to
// stdout: aws-cli 2.9's download to a stream writes a part cut short
// and retried wrongly and may still exit 0 (fixed in s3transfer in
// 2025), which the soak first took for corruption.
func (s *soak) get(ctx context.Context, key string) ([32]byte, int64, error) {
	dir, err := os.MkdirTemp(s.tmp, "get-")
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer os.RemoveAll(dir)
	// aws-cli writes beside the name and renames: open it afterwards.
	name := filepath.Join(dir, "object")
	if _, err := s.run(ctx, nil, nil, "s3", "cp", "--only-show-errors", "s3://"+s.bucket+"/"+key, name); err != nil {
		return [32]byte{}, 0, err
	}
	f, err := os.Open(name)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	h := &countingHash{Hash: sha256.New()}
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, h.n, err
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, h.n, nil
}

type countingHash struct {
	hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.Hash.Write(p)
}

// list wants every acknowledged object in the bucket's listing.
func (s *soak) list(ctx context.Context) error {
	s.mu.Lock()
	before := map[string]bool{}
	for k := range s.objects {
		before[k] = true
	}
	s.mu.Unlock()
	out, err := s.run(ctx, nil, nil, "s3", "ls", "s3://"+s.bucket+"/")
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

// remove deletes a stored object that none reads; it is forgotten
// first, so that no check wants it back.
func (s *soak) remove(ctx context.Context, rng *rand.Rand) error {
	s.mu.Lock()
	var idle []*soakObject
	for _, o := range s.objects {
		if o.readers == 0 {
			idle = append(idle, o)
		}
	}
	if len(idle) == 0 {
		s.mu.Unlock()
		return nil
	}
	obj := idle[rng.IntN(len(idle))]
	delete(s.objects, obj.key)
	s.stored -= obj.size
	s.mu.Unlock()
	if _, err := s.run(ctx, nil, nil, "s3", "rm", "--only-show-errors", "s3://"+s.bucket+"/"+obj.key); err != nil {
		return fmt.Errorf("delete %s: %w", obj.key, err)
	}
	return nil
}

// run runs aws-cli in the client namespace against the lab's first
// endpoint with stdin (nil for none) and fd3 (nil for none), and returns
// its output; the args' last element may be an io.Writer for stdout.
func (s *soak) run(ctx context.Context, stdin io.Reader, fd3 *os.File, args ...any) (string, error) {
	argv := []string{"netns", "exec", s.st.Client, s.aws, "--endpoint-url", s.st.Endpoints[0], "--ca-bundle", s.st.CA}
	var stdout strings.Builder
	var out io.Writer = &stdout
	var words []string
	for _, a := range args {
		switch a := a.(type) {
		case string:
			words = append(words, a)
		case io.Writer:
			out = a
		}
	}
	cmd := exec.CommandContext(ctx, "ip", append(argv, words...)...)
	cmd.Env = s.env
	cmd.Stdin = stdin
	if fd3 != nil {
		cmd.ExtraFiles = []*os.File{fd3}
	}
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return "", fmt.Errorf("aws %s: %v: %s", strings.Join(words[:min(2, len(words))], " "), err, msg)
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
		if n.PID, err = spawnNode(site, &netsite.NS{Name: n.NS}, *n, s.o.Bin); err != nil {
			return err
		}
		if err := s.st.save(); err != nil {
			return err
		}
		return waitHealthy(ctx, *n, 60*time.Second)
	}
}

// flap takes node i's link down for 2 s. The kernel drops the routes
// through a link that goes down; once it is up again the default routes
// are put back, as a host's network configuration does.
func (s *soak) flap(i int) func(context.Context) error {
	return func(ctx context.Context) error {
		ns := &netsite.NS{Name: s.st.Nodes[i].NS}
		if err := ns.IP(ctx, "link", "set", "eth-sw", "down"); err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		if err := ns.IP(ctx, "link", "set", "eth-sw", "up"); err != nil {
			return err
		}
		return setNodeRoutes(ctx, ns)
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
	if r.Client != "" {
		fmt.Fprintf(w, "client: %s\n", r.Client)
	}
	fmt.Fprintf(w, "%-24s %8s %10s %10s %6s %6s\n", "PHASE", "SECONDS", "UP MB/s", "DOWN MB/s", "OPS", "ERRORS")
	for _, p := range r.Phases {
		d := p.End.Sub(p.Start).Seconds()
		fmt.Fprintf(w, "%-24s %8.1f %10.1f %10.1f %6d %6d\n", p.Name, d, float64(p.UpBytes)/d/1e6, float64(p.DownBytes)/d/1e6, p.Ops, p.Errors)
		for _, e := range p.FirstErrors {
			fmt.Fprintf(w, "    %s\n", e)
		}
	}
	fmt.Fprintf(w, "objects: %d acknowledged and kept, %d read back byte-exact\n", r.Objects, r.Verified)
	printProblems(w, r.Problems)
}
