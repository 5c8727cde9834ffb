package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/mgmt"
	"github.com/ober-ingress/ober/control/mgmt/client"
)

// apiFlags choose the management API a command speaks to and how it
// prints the answer.
type apiFlags struct {
	socket    string
	url       string
	tokenFile string
	caFile    string
	timeout   time.Duration
	json      bool
	ifMatch   uint64
}

// add registers the flags; writes get --if-match; withTimeout is false
// where the command has a --timeout of its own.
func (f *apiFlags) add(cmd *cobra.Command, write, withJSON, withTimeout bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.socket, "socket", "", "the management API's unix socket (default: api.socket of --config, else "+client.DefaultSocket+")")
	fl.StringVar(&f.url, "url", "", "the management API's TCP listener, https://HOST:PORT, instead of the socket")
	fl.StringVar(&f.tokenFile, "token-file", "", "with --url: a file holding the bearer token")
	fl.StringVar(&f.caFile, "ca-file", "", "with --url: the CA certificate (PEM) that signs the listener's")
	if withTimeout {
		fl.DurationVar(&f.timeout, "timeout", client.DefaultTimeout, "how long to wait for the answer (a write answers once it is live)")
	}
	if withJSON {
		fl.BoolVar(&f.json, "json", false, "print the API's JSON answer instead of text")
	}
	if write {
		fl.Uint64Var(&f.ifMatch, "if-match", 0, "only write if the object's generation is this one (412 otherwise)")
	}
	_ = cmd.MarkFlagFilename("token-file")
	_ = cmd.MarkFlagFilename("ca-file", "pem", "crt")
}

// options are the request options of the flags: --if-match, and the
// pool a backend is in.
func (f *apiFlags) options(cmd *cobra.Command, pool string) []client.Option {
	var opts []client.Option
	if cmd.Flags().Changed("if-match") {
		opts = append(opts, client.IfMatch(f.ifMatch))
	}
	if pool != "" {
		opts = append(opts, client.InPool(pool))
	}
	return opts
}

// mgmtClient is the client of the API the flags name.
func (a *app) mgmtClient(f *apiFlags) (*client.Client, error) {
	var c *client.Client
	if f.url != "" {
		var token string
		if f.tokenFile != "" {
			b, err := os.ReadFile(f.tokenFile)
			if err != nil {
				return nil, fmt.Errorf("--token-file: %w", err)
			}
			if token = strings.TrimSpace(string(b)); token == "" {
				return nil, fmt.Errorf("--token-file %s: the file is empty", f.tokenFile)
			}
		}
		var err error
		if c, err = client.NewTCP(f.url, token, f.caFile); err != nil {
			return nil, fmt.Errorf("--url: %w", err)
		}
	} else {
		sock := f.socket
		if sock == "" {
			var err error
			if sock, err = a.apiSocket(); err != nil {
				return nil, err
			}
		}
		c = client.New(sock)
	}
	if f.timeout > 0 {
		c.SetTimeout(f.timeout)
	}
	return c, nil
}

// apiSocket is api.socket of the configuration file, or the default
// when the file cannot be read: the commands must work on a node whose
// file is broken, which is when an operator may need them most.
func (a *app) apiSocket() (string, error) {
	cfg, err := config.Load(a.configPath)
	if err != nil || cfg.API.Socket == "" {
		return client.DefaultSocket, nil
	}
	if cfg.API.Socket == config.APISocketOff {
		return "", fmt.Errorf("%w in %s: give --socket PATH, or --url with --token-file", errSocketOff, a.configPath)
	}
	return cfg.API.Socket, nil
}

// errSocketOff matches apiSocket's error when the file turns the socket
// off.
var errSocketOff = errors.New("api.socket is off")

// apiErr says what to do when no daemon answers; the API's own errors
// (*mgmt.Error, which name the field) pass as they are.
func apiErr(err error) error {
	switch {
	case errors.Is(err, client.ErrNoDaemon):
		return fmt.Errorf("%w (is the daemon running? 'ober start' starts it)", err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w (the API's socket is root's: run as root, or use --url with a token)", err)
	}
	return err
}

// printJSON writes an answer of the API as it came, indented.
func printJSON(w io.Writer, raw []byte) error {
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		buf.Reset()
		buf.Write(raw)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// applied is the end of a write's line: how it came into force, and the
// generations a script can use with --if-match.
func applied(res *client.Result) string {
	var how string
	switch res.Applied {
	case mgmt.AppliedNone:
		how = "nothing to change"
	case mgmt.AppliedRuntime:
		how = "applied through the runtime API"
	case mgmt.AppliedReload:
		how = "applied by a reload"
	default:
		how = "applied"
	}
	if res.Object == nil {
		return fmt.Sprintf("%s (configuration generation %d)", how, res.ConfigGeneration)
	}
	return fmt.Sprintf("%s (generation %d, configuration generation %d)", how, res.Generation, res.ConfigGeneration)
}

// report prints a write's answer: the JSON, or what changed and how.
func (a *app) report(f *apiFlags, res *client.Result, format string, args ...any) error {
	if f.json {
		return printJSON(a.out, res.Raw)
	}
	fmt.Fprintf(a.out, format+": %s\n", append(args, applied(res))...)
	a.sharedNote(res)
	return nil
}

// sharedNote says when a change of the top-level backends.servers
// applies to several services.
func (a *app) sharedNote(res *client.Result) {
	if len(res.SharedBy) > 1 {
		fmt.Fprintf(a.out, "note: backends.servers is the pool of services %s: the change applies to each\n", strings.Join(res.SharedBy, ", "))
	}
}

// serviceForm is the part of a service's JSON form (the ober.yaml keys)
// the tables show.
type serviceForm struct {
	Name       string        `json:"name"`
	Mode       string        `json:"mode"`
	Port       int           `json:"port"`
	Ports      string        `json:"ports"`
	VIPs       []string      `json:"vips"`
	VIPPool    string        `json:"vip_pool"`
	Balance    string        `json:"balance"`
	Backends   []backendForm `json:"backends"`
	Pools      []poolForm    `json:"pools"`
	Generation uint64        `json:"generation"`
}

type poolForm struct {
	Name     string        `json:"name"`
	Backends []backendForm `json:"backends"`
}

type backendForm struct {
	Name       string `json:"name"`
	Address    string `json:"address"`
	Weight     *int   `json:"weight"`
	Priority   int    `json:"priority"`
	State      string `json:"state"`
	Generation uint64 `json:"generation"`
}

func (s *serviceForm) port() string {
	switch {
	case s.Ports != "":
		return s.Ports
	case s.Port != 0:
		return strconv.Itoa(s.Port)
	}
	return "-"
}

func (s *serviceForm) vips() string {
	switch {
	case len(s.VIPs) > 0:
		return strings.Join(s.VIPs, ",")
	case s.VIPPool != "":
		return "pool " + s.VIPPool
	}
	return "all"
}

// pooled lists the service's backends with their pools, defaults filled
// in as the file gives them.
func (s *serviceForm) pooled() []pooledBackend {
	var out []pooledBackend
	add := func(pool string, bs []backendForm) {
		for _, b := range bs {
			if b.Weight == nil {
				w := config.DefaultWeight
				b.Weight = &w
			}
			if b.Priority == 0 {
				b.Priority = config.DefaultPriority
			}
			if b.State == "" {
				b.State = config.DefaultState
			}
			out = append(out, pooledBackend{pool, b})
		}
	}
	add(config.DefaultPool, s.Backends)
	for _, p := range s.Pools {
		add(p.Name, p.Backends)
	}
	return out
}

type pooledBackend struct {
	pool string
	backendForm
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newSvcCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "List, show, create, change and delete services through the management API",
		Long: `service speaks to the running daemon's management API, over its unix socket
(api.socket, by default <node.runtime_dir>/api.sock) or, with --url, over
its TCP listener with a bearer token. A change is validated as the
configuration file is, written into ober.yaml (comments and layout kept)
and live on this node when the command returns; it says whether it went
through HAProxy's runtime API or needed a reload.

Every object carries a generation: --if-match GEN makes a write fail (412)
when someone else changed the object since you read it. --json prints the
API's answer as it is. 'ober backend' does the same for backends.`,
		Example: `  ober service list
  ober service create --name web --mode tcp --port 8080 --vip-pool lab
  ober service set web --balance roundrobin
  ober service show web --json
  ober service delete web`,
	}
	cmd.AddCommand(newSvcListCmd(a), newSvcShowCmd(a), newSvcCreateCmd(a), newSvcSetCmd(a), newSvcDeleteCmd(a))
	return cmd
}

func newSvcListCmd(a *app) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "list [--json] [--socket PATH]",
		Short: "List the services the daemon serves",
		Long: `list prints every service as the configuration file holds it: its name,
mode, port (or port range), VIPs ("all" when it has none of its own, "pool
P" while it waits for an address from vip_pools P), balance method, the
number of backends over all its pools, and its generation.

'ober status' shows what each service does now: its health and counters.`,
		Example: `  ober service list
  ober service list --json | jq -r '.services[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.mgmtClient(&f)
			if err != nil {
				return err
			}
			if f.json {
				raw, err := c.Do(cmd.Context(), http.MethodGet, client.PathServices, nil)
				if err != nil {
					return apiErr(err)
				}
				return printJSON(a.out, raw)
			}
			list, err := c.Services(cmd.Context())
			if err != nil {
				return apiErr(err)
			}
			if len(list) == 0 {
				fmt.Fprintln(a.out, "no services")
				return nil
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tMODE\tPORT\tVIPS\tBALANCE\tBACKENDS\tGENERATION")
			for _, raw := range list {
				var s serviceForm
				if err := json.Unmarshal(raw, &s); err != nil {
					return fmt.Errorf("a service in the answer: %w", err)
				}
				balance := s.Balance
				if balance == "" {
					balance = config.DefaultBalance
				}
				n := strconv.Itoa(len(s.pooled()))
				if n == "0" && (s.Mode == config.ModeTLS || s.Mode == config.ModeHTTP) {
					n = "shared"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Name, orDash(s.Mode), s.port(), s.vips(), balance, n, s.Generation)
			}
			return tw.Flush()
		},
	}
	f.add(cmd, false, true, true)
	return cmd
}

// shownKeys are the keys show prints on lines of their own, first.
var shownKeys = []string{"name", "mode", "port", "ports", "vips", "vip_pool", "balance", "generation"}

func newSvcShowCmd(a *app) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "show SERVICE [--json] [--socket PATH]",
		Short: "Show a service: its settings, and its backends with their health",
		Long: `show prints one service as the configuration file holds it, every key, then
a table of its backends in every pool (defaults filled in: weight 100,
priority 1, state enabled) with their generations and, when the daemon
reports them, whether its health checks find each up and its open
connections.`,
		Example: `  ober service show web
  ober service show web --json | jq .generation`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.mgmtClient(&f)
			if err != nil {
				return err
			}
			raw, err := c.Service(cmd.Context(), args[0])
			if err != nil {
				return apiErr(err)
			}
			if f.json {
				return printJSON(a.out, raw)
			}
			return a.printService(cmd.Context(), c, raw)
		},
	}
	f.add(cmd, false, true, true)
	return cmd
}

func (a *app) printService(ctx context.Context, c *client.Client, raw json.RawMessage) error {
	var s serviceForm
	var all map[string]any
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("the service in the answer: %w", err)
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		return fmt.Errorf("the service in the answer: %w", err)
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	line := func(k string) {
		v, ok := all[k]
		if !ok {
			return
		}
		text, isString := v.(string)
		if !isString {
			b, _ := json.Marshal(v)
			text = string(b)
		}
		fmt.Fprintf(tw, "%s:\t%s\n", k, text)
	}
	for _, k := range shownKeys {
		line(k)
	}
	var rest []string
	for k := range all {
		if !slices.Contains(shownKeys, k) && k != "backends" && k != "pools" {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	for _, k := range rest {
		line(k)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	backends := s.pooled()
	if len(backends) == 0 {
		fmt.Fprintln(a.out, "\nno backends of its own ('ober backend list' shows the shared backends.servers)")
		return nil
	}
	// The live part is a bonus: a service the daemon has not applied yet,
	// or an older daemon, has none.
	health := map[[2]string]string{}
	if st, err := c.Stats(ctx, s.Name); err == nil {
		var live struct {
			Backends []struct {
				Name        string `json:"name"`
				Pool        string `json:"pool"`
				Up          bool   `json:"up"`
				Connections int64  `json:"connections"`
			} `json:"backends"`
		}
		if json.Unmarshal(st, &live) == nil {
			for _, b := range live.Backends {
				health[[2]string{b.Pool, b.Name}] = fmt.Sprintf("%s\t%d", onOff(b.Up, "up", "DOWN"), b.Connections)
			}
		}
	}
	fmt.Fprintln(a.out)
	tw = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tBACKEND\tADDRESS\tWEIGHT\tPRIORITY\tSTATE\tGENERATION\tHEALTH\tCONNS")
	for _, b := range backends {
		h, ok := health[[2]string{b.pool, b.Name}]
		if !ok {
			h = "-\t-"
		}
		gen := "-"
		if b.Generation != 0 {
			gen = strconv.FormatUint(b.Generation, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", b.pool, b.Name, b.Address, *b.Weight, b.Priority, b.State, gen, h)
	}
	return tw.Flush()
}

// serviceBodyFlags are the settings create and set take as flags.
type serviceBodyFlags struct {
	file        string
	name        string
	mode        string
	port        int
	ports       string
	vips        []string
	vipPool     string
	balance     string
	fallback    string
	backends    []string
	tlsCert     string
	tlsKey      string
	selfSigned  bool
	whitelist   string
	health      string
	maxConns    int
	unset       []string
	replaceBody bool
}

func (f *serviceBodyFlags) add(cmd *cobra.Command, create bool) {
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "a YAML or JSON file with the service's keys, as in ober.yaml's services[] ('-': stdin); flags override it")
	if create {
		fl.StringVar(&f.name, "name", "", `the service's name (default "<mode>-<port>")`)
	}
	fl.StringVar(&f.mode, "mode", "", "tls, http or tcp")
	fl.IntVar(&f.port, "port", 0, "the port it listens on")
	fl.StringVar(&f.ports, "ports", "", "a port range instead of --port, FROM-TO (mode tcp)")
	fl.StringSliceVar(&f.vips, "vip", nil, "a VIP of the service (repeat, or comma-separated); none: an address from --vip-pool")
	fl.StringVar(&f.vipPool, "vip-pool", "", "the vip_pools entry to take an address from when it has no --vip")
	fl.StringVar(&f.balance, "balance", "", "how new connections are spread: "+strings.Join(config.Balances(), ", "))
	fl.StringVar(&f.fallback, "fallback", "", "when no backend is up: serve_503, keep_last or reject")
	fl.StringArrayVar(&f.backends, "backend", nil, "a backend, [NAME=]HOST:PORT (repeat); 'ober backend add' adds them one by one")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "mode tls: the certificate chain (PEM file)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "mode tls: the private key (PEM file; default: the key in --tls-cert)")
	fl.BoolVar(&f.selfSigned, "self-signed", false, "mode tls: a self-signed certificate (labs and tests)")
	fl.StringVar(&f.whitelist, "whitelist", "", "mode http: frontend-http or backend-http")
	fl.StringVar(&f.health, "health", "", "the backends' health check: tcp, http, https, probe, exec or none")
	fl.IntVar(&f.maxConns, "max-connections", 0, "the service's connections per instance (0: instances.maxconn)")
	completeWords(cmd, "mode", config.ModeTLS, config.ModeHTTP, config.ModeTCP)
	completeWords(cmd, "balance", config.Balances()...)
	_ = cmd.MarkFlagFilename("file", "yaml", "yml", "json")
	if !create {
		fl.StringArrayVar(&f.unset, "unset", nil, "remove a key, back to its default (repeat)")
		fl.BoolVar(&f.replaceBody, "replace", false, "replace the whole service with -f and the flags (PUT) instead of merging them in")
	}
}

// body is the JSON object of -f with the flags given over it, keys in
// the order of ober.yaml's services[] items.
func (f *serviceBodyFlags) body(cmd *cobra.Command) (object, error) {
	var body object
	if f.file != "" {
		var err error
		if body, err = readObject(cmd.InOrStdin(), f.file); err != nil {
			return nil, err
		}
	}
	fl := cmd.Flags()
	set := func(flag, key string, v any) {
		if fl.Changed(flag) {
			body.set(key, v)
		}
	}
	set("name", "name", f.name)
	set("port", "port", f.port)
	set("ports", "ports", f.ports)
	set("mode", "mode", f.mode)
	set("vip", "vips", f.vips)
	set("vip-pool", "vip_pool", f.vipPool)
	if fl.Changed("tls-cert") || fl.Changed("tls-key") || fl.Changed("self-signed") {
		var tls object
		if f.tlsCert != "" {
			tls.set("cert", f.tlsCert)
		}
		if f.tlsKey != "" {
			tls.set("key", f.tlsKey)
		}
		if fl.Changed("self-signed") {
			tls.set("self_signed", f.selfSigned)
		}
		body.set("tls", tls)
	}
	set("whitelist", "whitelist", f.whitelist)
	set("balance", "balance", f.balance)
	if fl.Changed("backend") {
		list := []any{}
		for _, b := range f.backends {
			name, addr, named := strings.Cut(b, "=")
			if !named {
				name, addr = "", b
			}
			if addr == "" || (named && name == "") {
				return nil, fmt.Errorf("--backend %q: want [NAME=]HOST:PORT", b)
			}
			var m object
			if name != "" {
				m.set("name", name)
			}
			m.set("address", addr)
			list = append(list, m)
		}
		body.set("backends", list)
	}
	if fl.Changed("health") {
		body.set("health", object{{"kind", f.health}})
	}
	set("fallback", "fallback", f.fallback)
	set("max-connections", "max_connections", f.maxConns)
	for _, k := range f.unset {
		body.set(k, nil)
	}
	return body, nil
}

// object is a JSON object that keeps its keys in order: the API writes
// new keys into ober.yaml in the order it gets them, and the file should
// read as an operator would write it.
type object []field

type field struct {
	key   string
	value any
}

// set replaces key's value where it is, or adds it at the end.
func (o *object) set(key string, v any) {
	for i := range *o {
		if (*o)[i].key == key {
			(*o)[i].value = v
			return
		}
	}
	*o = append(*o, field{key, v})
}

// MarshalJSON writes the keys in order.
func (o object) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, err := json.Marshal(f.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(f.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.key, err)
		}
		buf.Write(k)
		buf.WriteByte(':')
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// readObject reads a YAML or JSON object (YAML is a superset of JSON)
// from path ("-": in), keys in the file's order.
func readObject(in io.Reader, path string) (object, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(in)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("-f: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("-f %s: %w", path, err)
	}
	v, err := nodeValue(&doc)
	if err != nil {
		return nil, fmt.Errorf("-f %s: %w", path, err)
	}
	o, ok := v.(object)
	if !ok {
		return nil, fmt.Errorf("-f %s: want one service, a mapping of its keys (as an item of ober.yaml's services)", path)
	}
	return o, nil
}

// nodeValue is what a YAML node says, mappings as objects.
func nodeValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case 0:
		return nil, nil
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return nodeValue(n.Content[0])
	case yaml.AliasNode:
		return nodeValue(n.Alias)
	case yaml.MappingNode:
		o := object{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := nodeValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			o.set(n.Content[i].Value, v)
		}
		return o, nil
	case yaml.SequenceNode:
		list := []any{}
		for _, c := range n.Content {
			v, err := nodeValue(c)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return list, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("line %d: %w", n.Line, err)
	}
	return v, nil
}

func newSvcCreateCmd(a *app) *cobra.Command {
	var f apiFlags
	var b serviceBodyFlags
	cmd := &cobra.Command{
		Use:   "create [--name N] [--mode M] [--port P] [--vip A | --vip-pool P] [--balance B] [--backend [NAME=]HOST:PORT]... [-f FILE]",
		Short: "Create a service; without a VIP it gets an address from a pool",
		Long: `create adds a service (POST /api/v1/services). Its keys are those of an item
of ober.yaml's services: give them as flags, or in a YAML or JSON file with
-f (flags given with -f override the file's keys).

Without --vip, the service gets an address from --vip-pool, or from the
first vip_pools entry with auto_assign; create prints it, and the address
stays the service's across restarts. A service of that name that exists
already is an error (409): 'ober service set' changes it.`,
		Example: `  ober service create --name web --mode tcp --port 8080 --backend a=10.1.0.1:80 --backend b=10.1.0.2:80
  ober service create --name s3 --mode tls --port 443 --self-signed --vip 10.0.0.10
  ober service create --name db --mode tcp --port 5432 --vip-pool lab --balance source
  ober service create -f web.yaml
  ober service create -f web.json --json | jq -r '.object.vips[0]'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := b.body(cmd)
			if err != nil {
				return err
			}
			js, err := json.Marshal(body)
			if err != nil {
				return fmt.Errorf("the service: %w", err)
			}
			c, err := a.mgmtClient(&f)
			if err != nil {
				return err
			}
			res, err := c.CreateService(cmd.Context(), js, f.options(cmd, "")...)
			if err != nil {
				return apiErr(err)
			}
			var s serviceForm
			_ = json.Unmarshal(res.Object, &s)
			return a.report(&f, res, "created service %s (vips %s)", s.Name, s.vips())
		},
	}
	f.add(cmd, false, true, true)
	b.add(cmd, true)
	return cmd
}

func newSvcSetCmd(a *app) *cobra.Command {
	var f apiFlags
	var b serviceBodyFlags
	cmd := &cobra.Command{
		Use:   "set SERVICE [--port P] [--balance B] [--vip A]... [--unset KEY]... [-f FILE [--replace]] [--if-match GEN]",
		Short: "Change a service's settings",
		Long: `set merges the keys given as flags, or in a YAML or JSON file with -f, into
the service (a JSON merge patch, RFC 7396: PATCH /api/v1/services/SERVICE);
--unset KEY removes a key, back to its default. Keys not given stay as
they are. With --replace the service becomes exactly -f and the flags
(PUT), which also creates it when it does not exist.

Backends are the job of 'ober backend': a --backend list here replaces the
service's own backends as a whole.`,
		Example: `  ober service set web --balance roundrobin
  ober service set web --vip 10.0.0.11 --if-match 4
  ober service set web --unset fallback
  ober service set web -f web.yaml --replace`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := b.body(cmd)
			if err != nil {
				return err
			}
			if len(body) == 0 {
				return errors.New("nothing to set: give flags, --unset KEY or -f FILE")
			}
			if b.replaceBody && b.file == "" {
				return errors.New("--replace needs -f FILE: the whole service")
			}
			js, err := json.Marshal(body)
			if err != nil {
				return fmt.Errorf("the service: %w", err)
			}
			c, err := a.mgmtClient(&f)
			if err != nil {
				return err
			}
			write := c.PatchService
			if b.replaceBody {
				write = c.PutService
			}
			res, err := write(cmd.Context(), args[0], js, f.options(cmd, "")...)
			if err != nil {
				return apiErr(err)
			}
			return a.report(&f, res, "service %s", args[0])
		},
	}
	f.add(cmd, true, true, true)
	b.add(cmd, false)
	return cmd
}

func newSvcDeleteCmd(a *app) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "delete SERVICE [--if-match GEN]",
		Short: "Delete a service: its VIP stops being served, its connections are closed",
		Long: `delete removes the service from the configuration and from the daemon
(DELETE /api/v1/services/SERVICE). An address it had from a pool goes back
to the pool.`,
		Example: `  ober service delete web
  ober service delete web --if-match 7`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.mgmtClient(&f)
			if err != nil {
				return err
			}
			res, err := c.DeleteService(cmd.Context(), args[0], f.options(cmd, "")...)
			if err != nil {
				return apiErr(err)
			}
			return a.report(&f, res, "deleted service %s", args[0])
		},
	}
	f.add(cmd, true, true, true)
	return cmd
}
