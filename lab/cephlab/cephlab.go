// Package cephlab runs a real Ceph RGW S3 gateway for the lab: a
// one-monitor, one-OSD Ceph cluster (no auth) in a network namespace, and
// one radosgw per backend host namespace, all from Debian's packages
// (ceph-mon, ceph-osd, radosgw).
//
// The OSD keeps its objects in BlueStore on a sparse file, which takes
// disk space only as objects are written (memstore, the earlier choice,
// held the lab's objects in memory: 1 GiB filled after a few uploads).
// The S3 user gets a quota below the point where Ceph stops writes, so a
// client that fills the OSD is told so (403 QuotaExceeded) instead of
// meeting a full cluster that stops answering.
//
// The daemons fork into the background, as the lab needs them to outlive
// the command that started them; every one is recorded in the site's
// ledger (by the PID in its pid file) so that the lab's teardown stops
// it.
package cephlab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
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
	// BlockFile is the sparse file the OSD's BlueStore lives on; its
	// directory must exist, on a file system with O_DIRECT (not tmpfs).
	BlockFile string
	// CapacityBytes is the block file's size. Default DefaultCapacity.
	CapacityBytes int64
	// Ledger records every daemon; required.
	Ledger *ledger.Ledger
}

// DefaultCapacity is the OSD's size when Options leave it out.
const DefaultCapacity = 2 << 30

// MinCapacity is the smallest OSD BlueStore sets up comfortably (its
// own database takes a slice of it).
const MinCapacity = 1 << 30

// FullRatio is where Ceph stops writes (mon osd full ratio): past it a
// write waits, and RGW with it, until there is room again.
const FullRatio = 0.95

// QuotaShare is the part of the room below FullRatio the S3 user may
// fill, leaving the rest to RGW's own metadata and a margin for the
// quota's cached statistics.
const QuotaShare = 0.85

// QuotaFor is the S3 user's quota for an OSD with usage u when empty:
// BlueStore's database has taken its share (about 290 MiB of a 1 GiB
// OSD) before any object is written.
func QuotaFor(u Usage) int64 {
	room := int64(float64(u.Total)*FullRatio) - u.Used
	return int64(float64(room) * QuotaShare)
}

// Cluster is a running cluster.
type Cluster struct {
	opts Options
	conf string
	// Quota is the S3 user's quota, in bytes.
	Quota int64
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
osd objectstore = bluestore
bluestore block path = {{.BlockFile}}
bluestore block create = true
bluestore block size = {{.Capacity}}
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mount = false
# The lab's machines are small: the OSD's caches get 1 GiB, not 4.
osd memory target = 1073741824
# The user's quota is checked against stats cached this long; the
# default ten minutes would let a client write far past it.
rgw bucket quota ttl = 2
rgw user quota bucket sync interval = 2
rgw user quota sync interval = 5
# A deleted object's data is freed by RGW's garbage collector, by
# default two hours later: a lab that uploads and deletes would fill its
# OSD with the dead (14 GiB of 16 after ten minutes of the soak's load,
# with 335 MiB of live objects). Half a minute here.
rgw gc obj min wait = 30
rgw gc processor period = 30
keyring = {{.Dir}}/keyring
# One OSD, no replicas, no msgr2, no cephx: what a lab is, and nothing
# to warn about, so that HEALTH_OK means all is well.
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon warn on msgr2 not enabled = false
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
	if o.Ledger == nil || o.Dir == "" || o.BlockFile == "" || o.NS == "" || !o.Mon.Is4() || len(o.Gateways) == 0 || o.AccessKey == "" || o.SecretKey == "" {
		return nil, fmt.Errorf("cephlab: Dir, BlockFile, NS, an IPv4 Mon, Gateways, AccessKey, SecretKey and Ledger are required")
	}
	if o.CapacityBytes == 0 {
		o.CapacityBytes = DefaultCapacity
	}
	if o.CapacityBytes < MinCapacity {
		return nil, fmt.Errorf("cephlab: capacity %d bytes: at least %d (1 GiB)", o.CapacityBytes, int64(MinCapacity))
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
		"Capacity": o.CapacityBytes, "BlockFile": o.BlockFile, "Gateways": o.Gateways,
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
	// The lab runs no manager (the OSD's own counters give the space
	// `lab status` reports): not a fault to warn of.
	// A monitor just started may answer EPERM ("problem getting command
	// descriptions") for a moment: tried for up to 10 s.
	for try := 0; ; try++ {
		err := c.run(ctx, o.NS, "ceph", "-c", c.conf, "health", "mute", "MGR_DOWN", "--sticky")
		if err == nil {
			break
		}
		if try == 20 || !strings.Contains(err.Error(), "command descriptions") {
			return nil, err
		}
		time.Sleep(500 * time.Millisecond)
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
	u, err := c.waitUsage(ctx)
	if err != nil {
		return nil, err
	}
	c.Quota = QuotaFor(u)
	for _, args := range [][]string{
		{"quota", "set", "--quota-scope=user", "--uid", "lab", "--max-size", strconv.FormatInt(c.Quota, 10)},
		{"quota", "enable", "--quota-scope=user", "--uid", "lab"},
	} {
		if err := c.run(ctx, g.NS, append([]string{"radosgw-admin", "-c", c.conf, "-n", "client." + g.Name}, args...)...); err != nil {
			return nil, err
		}
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

// Usage is the OSD's space, as its own counters report it (the lab
// runs no manager, which `ceph df` would need).
type Usage struct {
	Total, Used, Avail int64
}

// Usage reads the OSD's space from its admin socket.
func (c *Cluster) Usage(ctx context.Context) (Usage, error) {
	return UsageOf(ctx, c.opts.Dir)
}

// UsageOf reads the space of the OSD of the cluster in dir.
func UsageOf(ctx context.Context, dir string) (Usage, error) {
	out, err := output(ctx, "", "ceph", "--admin-daemon", filepath.Join(dir, "run", "ceph-osd.0.asok"), "perf", "dump", "osd")
	if err != nil {
		return Usage{}, err
	}
	var pd struct {
		OSD struct {
			Total int64 `json:"stat_bytes"`
			Used  int64 `json:"stat_bytes_used"`
			Avail int64 `json:"stat_bytes_avail"`
		} `json:"osd"`
	}
	if err := json.Unmarshal(out, &pd); err != nil {
		return Usage{}, fmt.Errorf("cephlab: the OSD's counters: %w: %.200s", err, out)
	}
	return Usage{Total: pd.OSD.Total, Used: pd.OSD.Used, Avail: pd.OSD.Avail}, nil
}

// waitUsage waits until the OSD reports its space.
func (c *Cluster) waitUsage(ctx context.Context) (Usage, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		u, err := c.Usage(ctx)
		if err == nil && u.Total > 0 {
			return u, nil
		}
		if time.Now().After(deadline) {
			return u, fmt.Errorf("cephlab: the OSD reports no space after 30 s (%+v, %v); its log: %s", u, err, c.logTail("osd.0"))
		}
		select {
		case <-ctx.Done():
			return u, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// output runs a command (in ns when set) and returns its standard
// output, naming it and its standard error on failure.
func output(ctx context.Context, ns string, args ...string) ([]byte, error) {
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cephlab: %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Health is the cluster's health as the monitor sees it.
type Health struct {
	Status string // HEALTH_OK, HEALTH_WARN or HEALTH_ERR
	// Checks are the failing checks, each as "CODE: summary".
	Checks []string
	// Full: the OSD or a pool is full or nearly (OSD_FULL, OSD_NEARFULL,
	// OSD_BACKFILLFULL, POOL_FULL, POOL_NEAR_FULL), or the OSD stopped
	// writes (failsafe).
	Full bool
}

// HealthOf asks the monitor of the cluster whose configuration is conf,
// from namespace ns.
func HealthOf(ctx context.Context, conf, ns string) (Health, error) {
	out, err := output(ctx, ns, "ceph", "-c", conf, "--connect-timeout", "5", "health", "detail", "-f", "json")
	if err != nil {
		return Health{}, err
	}
	return parseHealth(out)
}

// parseHealth reads `ceph health detail -f json`; muted checks are left
// out.
func parseHealth(out []byte) (Health, error) {
	var h struct {
		Status string `json:"status"`
		Checks map[string]struct {
			Summary struct {
				Message string `json:"message"`
			} `json:"summary"`
			Muted bool `json:"muted"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(out, &h); err != nil {
		return Health{}, fmt.Errorf("cephlab: ceph health: %w: %.200s", err, out)
	}
	r := Health{Status: h.Status}
	for _, code := range slices.Sorted(maps.Keys(h.Checks)) {
		if h.Checks[code].Muted {
			continue
		}
		r.Checks = append(r.Checks, code+": "+h.Checks[code].Summary.Message)
		if strings.Contains(code, "FULL") {
			r.Full = true
		}
	}
	return r, nil
}

// UserStored is what S3 user uid stored, asked of radosgw-admin as
// gateway (rgw1) from its namespace ns; -1 with the error when it
// cannot be had.
func UserStored(ctx context.Context, conf, ns, gateway, uid string) (int64, error) {
	out, err := output(ctx, ns, "radosgw-admin", "-c", conf, "-n", "client."+gateway, "user", "stats", "--uid", uid, "--sync-stats")
	if err != nil {
		return -1, err
	}
	var us struct {
		Stats struct {
			Size int64 `json:"size"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(out, &us); err != nil {
		return -1, fmt.Errorf("cephlab: radosgw-admin user stats: %w: %.200s", err, out)
	}
	return us.Stats.Size, nil
}
