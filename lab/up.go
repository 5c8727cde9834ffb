package lab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/haproxy"
	"github.com/ober-ingress/ober/control/lib/sysuser"
	"github.com/ober-ingress/ober/control/runtime/handoff"
	"github.com/ober-ingress/ober/lab/cephlab"
	"github.com/ober-ingress/ober/lab/netsite"
)

// Defaults of Options.
const (
	DefaultDir    = "/run/ober-lab"
	DefaultPrefix = "oberlab-"
	// DefaultS3Dir holds the OSD's sparse block file: on a disk, as
	// BlueStore needs O_DIRECT, which tmpfs (often /run) lacks.
	DefaultS3Dir = "/var/lib/ober-lab"
	// DefaultS3Capacity holds 8 GiB of objects with room to spare
	// (cephlab.QuotaFor).
	DefaultS3Capacity = 16 << 30
)

// teardownGrace is how long a lab's processes get to stop on SIGTERM: a
// node drains its instances for `drain` first.
const teardownGrace = drain + 8*time.Second

// maxDirLen bounds the lab's directory: the longest socket path under it
// is a node's HAProxy check socket, which HAProxy limits.
var maxDirLen = haproxy.MaxStatsSocketPath - len("/node1/run/check-4294967295/check.sock")

// Options shape `ober lab up`.
type Options struct {
	// Dir holds the lab's files: state, ledger, configurations, logs,
	// the Ceph store, the nodes' bpffs. Default DefaultDir.
	Dir string
	// Prefix starts every namespace name. Default DefaultPrefix.
	Prefix string
	// Bin is the ober binary the nodes run; default this executable.
	Bin string
	// HA is "bgp" (the default) or "vrrp".
	HA string
	// S3Dir holds the S3 backend's storage, a sparse file of S3Capacity
	// bytes that takes disk space as objects are written; a
	// subdirectory of it is the lab's and goes with `lab down`.
	// Default DefaultS3Dir.
	S3Dir string
	// S3Capacity is the S3 backend's size; the S3 user may store about
	// 80 % of it. Default DefaultS3Capacity.
	S3Capacity int64
	// Demo runs the demo once the lab is up.
	Demo bool
	// Install installs missing Debian packages with apt-get first.
	Install bool
	// Out receives progress lines; default io.Discard.
	Out io.Writer
}

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	o.Dir = filepath.Clean(o.Dir)
	if !filepath.IsAbs(o.Dir) {
		abs, err := filepath.Abs(o.Dir)
		if err != nil {
			return o, err
		}
		o.Dir = abs
	}
	if len(o.Dir) > maxDirLen {
		return o, fmt.Errorf("--dir %s is %d bytes long: the HAProxy sockets under it must fit in %d bytes, so it may be at most %d (e.g. %s)",
			o.Dir, len(o.Dir), haproxy.MaxStatsSocketPath, maxDirLen, DefaultDir)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.HA == "" {
		o.HA = haBGP
	}
	if o.S3Dir == "" {
		o.S3Dir = DefaultS3Dir
	}
	if !filepath.IsAbs(o.S3Dir) {
		return o, fmt.Errorf("--s3-dir %q: must be an absolute path", o.S3Dir)
	}
	o.S3Dir = filepath.Clean(o.S3Dir)
	if o.S3Capacity == 0 {
		o.S3Capacity = DefaultS3Capacity
	}
	if o.S3Capacity < cephlab.MinCapacity {
		return o, fmt.Errorf("--s3-capacity %s: at least %s, of which BlueStore's database takes about 290 MiB", gib(o.S3Capacity), gib(cephlab.MinCapacity))
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Bin == "" {
		bin, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("find the ober binary for the nodes: %w", err)
		}
		o.Bin = bin
	}
	switch o.HA {
	case haBGP, haVRRP:
	default:
		return o, fmt.Errorf("--ha %q: want bgp or vrrp", o.HA)
	}
	return o, nil
}

// Up builds the lab, waits until the router spreads both VIPs over the
// three nodes (BGP) or every VIP is on its owner (VRRP), prints where to point an S3 client and, with o.Demo, runs
// the demo. A failure while building removes everything built so far; a
// failing demo leaves the lab up for a look.
func Up(ctx context.Context, o Options) (*State, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, BPF)")
	}
	if err := ensurePackages(ctx, o.HA, o.Install, o.Out); err != nil {
		return nil, err
	}
	if err := ensureHAProxyUser(ctx, sysuser.HAProxyUser, o.Install, o.Out); err != nil {
		return nil, err
	}
	if err := checkFree(o.Dir, o.Prefix); err != nil {
		return nil, err
	}
	if err := checkS3Dir(o); err != nil {
		return nil, err
	}
	start := time.Now()
	p := progress{out: o.Out, start: start}
	st, err := build(ctx, o, p)
	if err != nil {
		p.printf("building the lab failed: removing what was built")
		rep, terr := netsite.Teardown(o.Dir, o.Prefix, teardownGrace)
		p.printf("removed %d processes, %d namespaces", len(rep.Killed), len(rep.Namespaces))
		if terr != nil {
			err = fmt.Errorf("%w (and the teardown: %v; run `ober lab down --dir %s` again)", err, terr, o.Dir)
		}
		return nil, err
	}
	p.printf("the lab is up")
	fmt.Fprintln(o.Out)
	PrintAccess(o.Out, st)
	if o.Demo {
		fmt.Fprintln(o.Out)
		if err := runDemo(ctx, st, o.Out); err != nil {
			return st, fmt.Errorf("demo: %w (the lab is still up: `ober lab status`, `ober lab down`)", err)
		}
	}
	return st, nil
}

// checkFree refuses to build over an existing lab.
func checkFree(dir, prefix string) error {
	st, err := Load(dir)
	switch {
	case err == nil:
		return fmt.Errorf("a lab exists in %s (namespaces %s*): run `ober lab down --dir %s` first", dir, st.Prefix, dir)
	case !errors.Is(err, ErrNoLab):
		return err
	}
	// lab down removes the directory whole: it must be the lab's own.
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s exists and is not empty: give the lab a directory of its own (ober lab down removes it whole)", dir)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			return fmt.Errorf("namespace %s exists: another lab uses prefix %q (remove it with `ober lab down` on its --dir, or pick another --prefix)", e.Name(), prefix)
		}
	}
	return nil
}

// progress prints timed progress lines.
type progress struct {
	out   io.Writer
	start time.Time
}

func (p progress) printf(format string, args ...any) {
	fmt.Fprintf(p.out, "[%5.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// build makes the lab; on error the caller tears it down.
func build(ctx context.Context, o Options, p progress) (*State, error) {
	site, err := netsite.Open(o.Dir, o.Prefix)
	if err != nil {
		return nil, err
	}
	access, secret := randomKey(20, upperAlnum), randomKey(40, alnum)
	vips := []netip.Addr{VIP4, VIP6}
	if o.HA == haVRRP {
		vips = VRRPVIPs
	}
	var endpoints, plain []string
	for _, v := range vips {
		host := v.String()
		if v.Is6() {
			host = "[" + host + "]"
		}
		endpoints, plain = append(endpoints, "https://"+host), append(plain, "http://"+host)
	}
	st := &State{
		Prefix: o.Prefix, Dir: o.Dir, HA: o.HA, Started: time.Now().UTC(),
		Endpoints: endpoints, PlainEndpoints: plain, AccessKey: access, SecretKey: secret,
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	p.printf("building the lab in %s (namespaces %s*)", o.Dir, o.Prefix)

	t, err := buildTopology(ctx, site, st)
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	st.Client, st.Ceph = t.client.Name, t.ceph.Name
	p.printf("%d namespaces: router, switch, client, 3 nodes, Ceph and 2 S3 hosts, linked", len(st.Namespaces))

	bpffs, err := site.BPFFS()
	if err != nil {
		return nil, err
	}
	cert, key, err := certs.SelfSigned(filepath.Join(o.Dir, "tls"), []string{"s3.ober.lab"}, vips)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	st.CA = cert
	// The nodes' shared secret for the handoff channel.
	handoffKey := filepath.Join(o.Dir, "handoff.key")
	if err := handoff.NewKeyFile(handoffKey); err != nil {
		return nil, err
	}

	if o.HA == haVRRP {
		// The VIPs live on the router's connected segment: it finds
		// them by ARP, and the GARPs of a new master move them.
		st.Router.NS = t.router.Name
		p.printf("router: %s routes the client's subnet to the nodes' segment directly (no BGP, no BIRD in VRRP mode)", t.router.Name)
	} else {
		if err := startRouter(ctx, site, t.router, &st.Router); err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
		p.printf("router: BIRD up in %s, sessions to the 3 nodes over IPv4 and IPv6", t.router.Name)
	}
	if err := st.save(); err != nil {
		return nil, err
	}

	// The nodes start while Ceph does: they come up unhealthy (no
	// backend) and announce once the gateways answer their checks.
	for i, ns := range t.nodes {
		n, err := startNode(site, ns, o.HA, i, o.Bin, bpffs, cert, key, handoffKey)
		st.Nodes = append(st.Nodes, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	p.printf("nodes: ober run started on node1-3 (%s)", o.Bin)

	if err := startCeph(ctx, site, t, st, o); err != nil {
		return nil, err
	}
	p.printf("S3 backends: Ceph (one monitor, one OSD of %s on %s, room for %s of objects) and radosgw on %s, %s",
		gib(st.S3.Capacity), st.S3.BlockFile, gib(st.S3.Quota), backends[0].listen(), backends[1].listen())

	for _, n := range st.Nodes {
		if err := waitHealthy(ctx, n, 90*time.Second); err != nil {
			return nil, err
		}
	}
	p.printf("nodes: all 3 healthy (HAProxy instances up, backends up)")

	if o.HA == haVRRP {
		if err := waitOwners(ctx, st, 60*time.Second); err != nil {
			return nil, err
		}
		st.Ready = true
		if err := st.save(); err != nil {
			return nil, err
		}
		p.printf("VRRP: each VIP on its owner: %s", ownersLine())
		return st, nil
	}
	f, err := openFIB(t.router.Name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for _, pfx := range []netip.Prefix{Prefix4, Prefix6} {
		if _, _, err := f.waitNexthops(ctx, pfx, 60*time.Second, func(nh []netip.Addr) bool { return len(nh) == nodeCount }); err != nil {
			return nil, fmt.Errorf("the router never had 3 paths to %v: %w; the end of %s:\n%s", pfx, err, st.Router.Log, tail(st.Router.Log, 20))
		}
	}
	st.Ready = true
	if err := st.save(); err != nil {
		return nil, err
	}
	p.printf("router: ECMP over the 3 nodes for %s and %s", VIP4, VIP6)
	return st, nil
}

// startCeph runs the Ceph cluster and a radosgw on each S3 host.
func startCeph(ctx context.Context, site *netsite.Site, t *topology, st *State, o Options) error {
	dir := filepath.Join(site.Dir, "ceph")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	store := s3Store(o)
	// Recorded before it is made, so that a failed start removes it.
	if err := site.Ledger.Dir(store); err != nil {
		return err
	}
	if err := os.MkdirAll(store, 0o700); err != nil {
		return fmt.Errorf("--s3-dir: %w", err)
	}
	st.S3 = S3State{BlockFile: filepath.Join(store, "osd.block"), Capacity: o.S3Capacity}
	var gws []cephlab.Gateway
	for i, b := range backends {
		gws = append(gws, cephlab.Gateway{Name: b.gateway, NS: t.backends[i].Name, Listen: b.listen()})
		st.Backends = append(st.Backends, BackendState{Name: b.role, NS: t.backends[i].Name, Listen: b.listen().String(), Gateway: b.gateway})
	}
	if err := st.save(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := cephlab.Start(ctx, cephlab.Options{
		Dir: dir, NS: t.ceph.Name, Mon: MonAddr, Gateways: gws,
		AccessKey: st.AccessKey, SecretKey: st.SecretKey,
		BlockFile: st.S3.BlockFile, CapacityBytes: o.S3Capacity, Ledger: site.Ledger,
	})
	if err != nil {
		return fmt.Errorf("S3 backends (Ceph RGW, logs in %s): %w", filepath.Join(dir, "log"), err)
	}
	st.S3.Quota = c.Quota
	return st.save()
}

const (
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	alnum      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

// randomKey makes an n-character credential from chars.
func randomKey(n int, chars string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return string(b)
}

// PrintAccess tells where to point an S3 client.
func PrintAccess(w io.Writer, st *State) {
	if st.HA == haVRRP {
		fmt.Fprintf(w, "S3 endpoints: %s  (VRRP: one VIP per node)\n", strings.Join(st.Endpoints, "  "))
	} else {
		fmt.Fprintf(w, "S3 endpoint:  %s\n", strings.Join(st.Endpoints, "  "))
	}
	fmt.Fprintf(w, "plain HTTP:   %s  (from the client namespace only)\n", strings.Join(st.PlainEndpoints, "  "))
	fmt.Fprintf(w, "access key:   %s\n", st.AccessKey)
	fmt.Fprintf(w, "secret key:   %s\n", st.SecretKey)
	fmt.Fprintf(w, "CA file:      %s\n", st.CA)
	if st.HA == haVRRP {
		// Without ECMP, clients spread over the nodes by name: each VIP
		// stays reachable as it moves to a backup node.
		fmt.Fprintf(w, "\nPublish the three VIPs under one name, DNS round robin (the certificate names s3.ober.lab):\n\n")
		for _, e := range st.Endpoints {
			fmt.Fprintf(w, "  s3.ober.lab.  60  IN  A  %s\n", strings.TrimPrefix(e, "https://"))
		}
	}
	fmt.Fprintf(w, "\nThe VIPs are routed inside the lab: reach them from the client namespace %s:\n\n", st.Client)
	fmt.Fprintf(w, "  ip netns exec %s curl -si --cacert %s %s/ | head -20\n", st.Client, st.CA, st.Endpoints[0])
	fmt.Fprintf(w, "  export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_DEFAULT_REGION=us-east-1\n", st.AccessKey, st.SecretKey)
	fmt.Fprintf(w, "  export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required\n")
	fmt.Fprintf(w, "  ip netns exec %s aws --endpoint-url %s --ca-bundle %s s3 ls\n", st.Client, st.Endpoints[0], st.CA)
	fmt.Fprintf(w, "\nEvery answer carries X-Served-By: <node>/<instance>. Ceph 16's RGW refuses the checksum trailers\n"+
		"that AWS CLIs from 2025 on send by default (411 Length Required); the second export turns them off.\n"+
		"`ober lab status` reports on the lab, `ober lab down` removes it.\n")
}
