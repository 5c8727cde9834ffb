package lab

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ober-ingress/ober/lab/netsite"
)

// demoBucket is the bucket the demo writes to.
const demoBucket = "ober-lab-demo"

// demoObject is one object of the demo.
type demoObject struct {
	name string
	data []byte
	sum  [32]byte
}

// runDemo shows the lab working, from the client namespace: transfers
// checked by SHA-256, the ECMP spread over the nodes, the router's
// multipath route, and a node losing its HAProxy instances under
// requests. Every wait is bounded; it takes well under a minute.
func runDemo(ctx context.Context, st *State, out io.Writer) error {
	if st.HA == haVRRP {
		return runVRRPDemo(ctx, st, out)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	d, err := netsite.NewDialer(&netsite.NS{Name: st.Client}, 8)
	if err != nil {
		return err
	}
	defer d.Close()
	c, err := newS3Client(st, d, st.Endpoints[0])
	if err != nil {
		return err
	}
	objs, err := transfers(ctx, c, st, d, out)
	if err != nil {
		return err
	}
	if err := spread(ctx, c, objs[0], out); err != nil {
		return err
	}
	if err := showRoute(ctx, st, out); err != nil {
		return err
	}
	if err := failover(ctx, c, st, objs[0], out); err != nil {
		return err
	}
	fmt.Fprintf(out, "\ndemo done in %.1fs\n", time.Since(start).Seconds())
	return nil
}

// transfers makes the bucket, uploads objects of three sizes and
// downloads each, comparing SHA-256; then one download over IPv6.
func transfers(ctx context.Context, c *s3Client, st *State, d *netsite.Dialer, out io.Writer) ([]demoObject, error) {
	fmt.Fprintf(out, "demo 1/4: S3 through %s (bucket %s), every request on a new connection\n", c.endpoint, demoBucket)
	if err := makeBucket(ctx, c, out); err != nil {
		return nil, err
	}
	objs := demoObjects()
	for _, o := range objs {
		if _, _, err := putGet(ctx, c, o, out); err != nil {
			return nil, err
		}
	}
	c6, err := newS3Client(st, d, st.Endpoints[1])
	if err != nil {
		return nil, err
	}
	o := objs[1]
	g, err := c6.do(ctx, http.MethodGet, "/"+demoBucket+"/"+o.name, nil)
	if err != nil {
		return nil, fmt.Errorf("download %s over IPv6: %w", o.name, err)
	}
	if g.status != http.StatusOK || g.sum != o.sum {
		return nil, fmt.Errorf("download %s over IPv6: %d, sha256 %x, want %x", o.name, g.status, g.sum, o.sum)
	}
	fmt.Fprintf(out, "  GET %-14s %8s over IPv6 (%s) served by %-8s sha256 ok %s\n", o.name, sizeName(len(o.data)), c6.endpoint, g.servedBy, hex.EncodeToString(g.sum[:])[:16])
	return objs, nil
}

// makeBucket creates the demo's bucket and writes a first object.
func makeBucket(ctx context.Context, c *s3Client, out io.Writer) error {
	a, err := c.do(ctx, http.MethodPut, "/"+demoBucket, nil)
	if err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	if a.status != http.StatusOK && !strings.Contains(a.body, "BucketAlreadyOwnedByYou") {
		return fmt.Errorf("create bucket: %d %s", a.status, a.body)
	}
	fmt.Fprintf(out, "  PUT /%s  %d  served by %s\n", demoBucket, a.status, a.servedBy)
	// RGW makes its data pool on the first write: that one takes a
	// second or two and would spoil the first transfer's figure.
	readme := []byte("written by ober lab's demo\n")
	a, err = c.do(ctx, http.MethodPut, "/"+demoBucket+"/README", readme)
	if err != nil || a.status != http.StatusOK {
		return fmt.Errorf("first upload: %d %s %v", a.status, a.body, err)
	}
	fmt.Fprintf(out, "  PUT /%s/README in %s (the gateway's first write creates its data pool)  served by %s\n", demoBucket, ms(a.took), a.servedBy)
	return nil
}

// demoObjects makes the demo's objects of 1 KiB, 1 MiB and 32 MiB of
// random data.
func demoObjects() []demoObject {
	var objs []demoObject
	for _, size := range []int{1 << 10, 1 << 20, 32 << 20} {
		o := demoObject{name: "demo-" + sizeName(size), data: make([]byte, size)}
		_, _ = rand.Read(o.data) // never fails (crypto/rand)
		o.sum = sha256.Sum256(o.data)
		objs = append(objs, o)
	}
	return objs
}

// putGet uploads o, downloads it and compares SHA-256, printing both.
func putGet(ctx context.Context, c *s3Client, o demoObject, out io.Writer) (put, get answer, err error) {
	size := len(o.data)
	path := "/" + demoBucket + "/" + o.name
	a, err := c.do(ctx, http.MethodPut, path, o.data)
	if err != nil {
		return a, answer{}, fmt.Errorf("upload %s: %w", o.name, err)
	}
	if a.status != http.StatusOK {
		return a, answer{}, fmt.Errorf("upload %s: %d %s", o.name, a.status, a.body)
	}
	fmt.Fprintf(out, "  PUT %-14s %8s in %7s %s  served by %s\n", o.name, sizeName(size), ms(a.took), rate(size, a.took), a.servedBy)
	g, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return a, g, fmt.Errorf("download %s: %w", o.name, err)
	}
	if g.status != http.StatusOK {
		return a, g, fmt.Errorf("download %s: %d %s", o.name, g.status, g.body)
	}
	if g.sum != o.sum || g.size != int64(size) {
		return a, g, fmt.Errorf("download %s: %d bytes with sha256 %x, uploaded %d bytes with sha256 %x", o.name, g.size, g.sum, size, o.sum)
	}
	fmt.Fprintf(out, "  GET %-14s %8s in %7s %s  served by %-8s sha256 ok %s\n", o.name, sizeName(size), ms(g.took), rate(size, g.took), g.servedBy, hex.EncodeToString(g.sum[:])[:16])
	return a, g, nil
}

// spread opens a dozen connections and shows where each landed.
func spread(ctx context.Context, c *s3Client, o demoObject, out io.Writer) error {
	const conns = 12
	fmt.Fprintf(out, "\ndemo 2/4: %d new connections; the router hashes each flow to a node, the node's XDP program to an instance\n", conns)
	count := map[string]int{}
	var line []string
	for i := range conns {
		a, err := c.do(ctx, http.MethodGet, "/"+demoBucket+"/"+o.name, nil)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
		if a.status != http.StatusOK || a.sum != o.sum {
			return fmt.Errorf("connection %d: %d %s", i+1, a.status, a.body)
		}
		line = append(line, a.servedBy)
		node, _, _ := strings.Cut(a.servedBy, "/")
		count[node]++
	}
	fmt.Fprintf(out, "  served by: %s\n", strings.Join(line, " "))
	fmt.Fprintf(out, "  per node:  %s\n", perNode(count))
	return nil
}

// showRoute prints the router's multipath routes to the VIPs.
func showRoute(ctx context.Context, st *State, out io.Writer) error {
	fmt.Fprintf(out, "\ndemo 3/4: the router's routes to the VIPs (BIRD merged the nodes' BGP routes into one ECMP route)\n")
	for _, args := range [][]string{
		{"-n", st.Router.NS, "route", "show", VIP4.String()},
		{"-n", st.Router.NS, "-6", "route", "show", VIP6.String()},
	} {
		s, err := netsite.Run(ctx, "ip", args...)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  $ ip %s\n", strings.Join(args, " "))
		for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			fmt.Fprintf(out, "  %s\n", l)
		}
	}
	return nil
}

func perNode(count map[string]int) string {
	var names []string
	for n := range count {
		names = append(names, n)
	}
	slices.Sort(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, count[n]))
	}
	return strings.Join(parts, ", ")
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func rate(n int, d time.Duration) string {
	if n < 1<<20 {
		return strings.Repeat(" ", 12)
	}
	return fmt.Sprintf("%7.1f MiB/s", float64(n)/(1<<20)/d.Seconds())
}
