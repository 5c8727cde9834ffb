// Package cephlab runs a real Ceph RGW S3 gateway for the lab: a
// one-monitor, one-OSD Ceph cluster (memstore, no disks, no auth) in a
// network namespace, and one radosgw per backend host namespace, all from
// Debian's packages (ceph-mon, ceph-osd, radosgw).
//
// The daemons fork into the background, as the lab needs them to outlive
// the command that started them; every one is recorded in the site's
// ledger (by the PID in its pid file) so that the lab's teardown stops
// it. The data lives in memory: it is gone when the OSD stops.
package cephlab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/vishvananda/netns"

	"github.com/ober-ingress/ober/control/lib/procstat"
	"github.com/ober-ingress/ober/lab/ledger"
)

// Gateway is one radosgw.
type Gateway struct {
	Name string // radosgw instance name, e.g. "rgw1"
	NS   string // network namespace it runs in
	// Listen is the address and port of its S3 endpoint (plain HTTP).
	Listen netip.AddrPort
}

// Options configure a cluster.
type Options struct {
	// Dir holds the configuration, the monitor's store, logs, sockets
	// and pid files; it must exist and be empty.
	Dir string
	// NS and Mon are the cluster's namespace and the monitor's address
	// in it; the gateways must reach it.
	NS  string
	Mon netip.Addr
	// Gateways run in their own namespaces.
	Gateways []Gateway
	// AccessKey and SecretKey are the S3 user's credentials.
	AccessKey, SecretKey string
	// MemoryBytes bounds the OSD's memstore; default 2 GiB.
	MemoryBytes int64
	// Ledger records every daemon; required.
	Ledger *ledger.Ledger
}

// Cluster is a running cluster.
type Cluster struct {
	opts Options
	conf string
}

// Required names the binaries a cluster needs and their Debian packages.
var Required = map[string]string{
	"ceph-mon": "ceph-mon", "ceph-osd": "ceph-osd", "monmaptool": "ceph-mon",
	"ceph-authtool": "ceph-common", "ceph": "ceph-common",
	"radosgw": "radosgw", "radosgw-admin": "radosgw",
}

// CheckInstalled says which packages to install when a binary is missing.
func CheckInstalled() error {
	var missing []string
	for bin, pkg := range Required {
		if _, err := exec.LookPath(bin); err != nil && !slices.Contains(missing, pkg) {
			missing = append(missing, pkg)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("the lab's S3 gateway (Ceph RGW) needs Debian packages %s: apt-get install %s",
			strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	return nil
}

var confTmpl = template.Must(template.New("ceph").Parse(`# written by ober's lab (lab/cephlab)
[global]
fsid = {{.FSID}}
mon host = {{.Mon}}
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
mon data avail warn = 1
run dir = {{.Dir}}/run
admin socket = {{.Dir}}/run/$cluster-$name.asok
pid file = {{.Dir}}/run/$name.pid
log file = {{.Dir}}/log/$name.log
mon data = {{.Dir}}/mon/$cluster-$id
osd data = {{.Dir}}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {{.Memory}}
keyring = {{.Dir}}/keyring
# The lab places the OSD in the CRUSH map itself (see Start).
osd crush update on start = false
osd class update on start = false
{{range .Gateways}}
[client.{{.Name}}]
rgw frontends = beast endpoint={{.Listen}}
rgw data = {{$.Dir}}/rgw/{{.Name}}
# Errors only: at level 1 every request, health checks included, is
# logged, hundreds of megabytes a day behind a load balancer.
debug rgw = 0/5
{{end}}`))

// Start makes the cluster and its gateways and returns once every
// gateway answers S3 requests with the user's credentials in place.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if err := CheckInstalled(); err != nil {
		return nil, err
	}
	if o.Ledger == nil || o.Dir == "" || o.NS == "" || !o.Mon.Is4() || len(o.Gateways) == 0 || o.AccessKey == "" || o.SecretKey == "" {
		return nil, fmt.Errorf("cephlab: Dir, NS, an IPv4 Mon, Gateways, AccessKey, SecretKey and Ledger are required")
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = 2 << 30
	}
	c := &Cluster{opts: o, conf: filepath.Join(o.Dir, "ceph.conf")}
	// The OSD and the gateways do not make their data directories.
	dirs := []string{"run", "log", "mon", "osd/ceph-0"}
	for _, g := range o.Gateways {
		dirs = append(dirs, "rgw/"+g.Name)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	fsid, err := procstat.Proc.Sysctl("kernel.random.uuid")
	if err != nil {
		return nil, err
	}
	var conf bytes.Buffer
	if err := confTmpl.Execute(&conf, map[string]any{
		"FSID": fsid, "Mon": o.Mon, "Dir": o.Dir,
		"Memory": o.MemoryBytes, "Gateways": o.Gateways,
	}); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.conf, conf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	monmap := filepath.Join(o.Dir, "monmap")
	steps := []struct {
		ns   string
		args []string
	}{
		{"", []string{"ceph-authtool", "--create-keyring", filepath.Join(o.Dir, "keyring"), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"}},
		{"", []string{"monmaptool", "--create", "--add", "a", o.Mon.String(), "--fsid", fsid, monmap}},
		{o.NS, []string{"ceph-mon", "-c", c.conf, "--mkfs", "-i", "a", "--monmap", monmap}},
	}
	for _, s := range steps {
		if err := c.run(ctx, s.ns, s.args...); err != nil {
			return nil, err
		}
	}
	if err := c.daemon(ctx, o.NS, "mon.a", "ceph-mon", "-c", c.conf, "-i", "a"); err != nil {
		return nil, err
	}
	// The OSD's id and UUID are given rather than left to the monitor
	// and to mkfs, so that the monitor's record and the store agree.
	uuid, err := procstat.Proc.Sysctl("kernel.random.uuid")
	if err != nil {
		return nil, err
	}
	// The OSD is put in the CRUSH map here, by the CLI, not by the OSD at
	// start: Ceph 16's OSD sends those commands before its monitor client
	// has the monitor map, at times with a zero fsid, and the monitor then
	// refuses them ("wrong fsid") and the OSD exits (seen in 1 of 5
	// starts under load).
	for _, args := range [][]string{
		{"osd", "create", uuid, "0"},
		{"osd", "crush", "add", "osd.0", "1.0", "host=lab", "root=default"},
	} {
		if err := c.run(ctx, o.NS, append([]string{"ceph", "-c", c.conf}, args...)...); err != nil {
			return nil, err
		}
	}
	if err := c.run(ctx, o.NS, "ceph-osd", "-c", c.conf, "-i", "0", "--mkfs", "--osd-uuid", uuid); err != nil {
		return nil, err
	}
	if err := c.daemon(ctx, o.NS, "osd.0", "ceph-osd", "-c", c.conf, "-i", "0"); err != nil {
		return nil, err
	}
	for _, g := range o.Gateways {
		if err := c.daemon(ctx, g.NS, "client."+g.Name, "radosgw", "-c", c.conf, "-n", "client."+g.Name); err != nil {
			return nil, err
		}
	}
	g := o.Gateways[0]
	if err := c.run(ctx, g.NS, "radosgw-admin", "-c", c.conf, "-n", "client."+g.Name, "user", "create",
		"--uid", "lab", "--display-name", "ober lab", "--access-key", o.AccessKey, "--secret-key", o.SecretKey); err != nil {
		return nil, err
	}
	for _, g := range o.Gateways {
		if err := waitHTTP(ctx, g); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// run runs a command (in ns when set) and names it in the error.
func (c *Cluster) run(ctx context.Context, ns string, args ...string) error {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cephlab: %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// daemon starts a forking Ceph daemon and records it by its pid file.
func (c *Cluster) daemon(ctx context.Context, ns, name string, args ...string) error {
	if err := c.run(ctx, ns, args...); err != nil {
		return fmt.Errorf("%w\nthe end of its log:\n%s", err, c.logTail(name))
	}
	pidFile := filepath.Join(c.opts.Dir, "run", name+".pid")
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(pidFile)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 0 {
			return c.opts.Ledger.Process(pid, name)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cephlab: %s wrote no pid file %s (log: %s)", name, pidFile, c.logTail(name))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.opts.Dir, "log", name+".log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// waitHTTP waits until the gateway answers a plain GET on its endpoint.
func waitHTTP(ctx context.Context, g Gateway) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := inNS(g.NS, func() error { return get(g.Listen) })
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cephlab: gateway %s at %s does not answer: %w", g.Name, g.Listen, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// get sends one HTTP/1.0 GET and wants any 2xx answer. It dials on the
// calling thread (net/http's transport would dial on another one, in
// another namespace).
func get(addr netip.AddrPort) error {
	c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if f := strings.Fields(line); len(f) < 2 || !strings.HasPrefix(f[1], "2") {
		return fmt.Errorf("answered %q", strings.TrimSpace(line))
	}
	return nil
}

// inNS runs fn on a thread that has entered the named namespace. The
// thread is never unlocked, so it ends with its goroutine instead of
// going back to the pool in the wrong namespace.
func inNS(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
