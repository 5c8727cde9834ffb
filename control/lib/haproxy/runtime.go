package haproxy

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultRuntimeTimeout bounds a runtime API command when Runtime.Timeout
// is zero.
const DefaultRuntimeTimeout = 5 * time.Second

// Runtime is a client of one instance's stats socket (the runtime API).
// Each command opens its own connection, as HAProxy closes a
// non-interactive one after answering.
type Runtime struct {
	Path string
	// Timeout bounds each command, connection included; 0 means
	// DefaultRuntimeTimeout.
	Timeout time.Duration
}

// Command sends one command line (several may be joined with ';') and
// returns HAProxy's answer. Answers HAProxy gives to commands it does not
// know or does not allow are errors.
func (r Runtime) Command(ctx context.Context, cmd string) (string, error) {
	cmd = strings.TrimSpace(cmd)
	if cmd == "" || strings.ContainsAny(cmd, "\r\n") {
		return "", fmt.Errorf("runtime API %s: command must be one non-empty line, got %q", r.Path, cmd)
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultRuntimeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", r.Path)
	if err != nil {
		return "", fmt.Errorf("runtime API %s: %w", r.Path, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("runtime API %s: %q: %w", r.Path, cmd, err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("runtime API %s: %q: %w", r.Path, cmd, err)
	}
	out := string(b)
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	for _, refusal := range []string{"Unknown command", "Permission denied"} {
		if strings.HasPrefix(first, refusal) {
			return out, fmt.Errorf("runtime API %s: %q: %s", r.Path, cmd, first)
		}
	}
	return out, nil
}

// Info runs "show info" and returns its "Name: value" pairs.
func (r Runtime) Info(ctx context.Context) (map[string]string, error) {
	out, err := r.Command(ctx, "show info")
	if err != nil {
		return nil, err
	}
	info := ParseInfo(out)
	if info["Name"] == "" && info["Version"] == "" {
		return nil, fmt.Errorf("runtime API %s: show info: unexpected answer %q", r.Path, lastLines(out, 3))
	}
	return info, nil
}

// ParseInfo parses the output of "show info".
func ParseInfo(out string) map[string]string {
	info := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) == "" {
			continue
		}
		info[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return info
}

// Proxy and server types of the "type" column of "show stat".
const (
	TypeFrontend = 0
	TypeBackend  = 1
	TypeServer   = 2
	TypeListener = 3
)

// StatRow is one line of "show stat".
type StatRow struct {
	Proxy       string // pxname
	Name        string // svname: FRONTEND, BACKEND or the server name
	Status      string // status: UP, DOWN, "UP 1/3", NOLB, MAINT, ...
	CheckStatus string // check_status: L7OK, L4CON, ...; "* L7OK" while checking
	Type        int    // TypeFrontend, TypeBackend, TypeServer, TypeListener
	CurConns    int64  // scur
	TotalConns  int64  // stot
	BytesIn     int64  // bin
	BytesOut    int64  // bout
	ReqTotal    int64  // req_tot
	Weight      int    // weight
	// Raw holds every column by its header name (Fields.Get).
	Raw Fields
}

// Fields are one CSV line of "show stat" and the header naming its
// columns. A map per line would cost a hundred entries for each of
// thousands of servers on every probe.
type Fields struct {
	cols map[string]int // shared by every line of one output
	rec  []string
}

// Get is the value of column col, or "" when the line has none.
func (f Fields) Get(col string) string {
	if i, ok := f.cols[col]; ok && i < len(f.rec) {
		return f.rec[i]
	}
	return ""
}

// Stat runs "show stat" and parses its CSV.
func (r Runtime) Stat(ctx context.Context) ([]StatRow, error) {
	out, err := r.Command(ctx, "show stat")
	if err != nil {
		return nil, err
	}
	rows, err := ParseStat(out)
	if err != nil {
		return nil, fmt.Errorf("runtime API %s: show stat: %w", r.Path, err)
	}
	return rows, nil
}

// ParseStat parses the CSV output of "show stat" (header line
// "# pxname,svname,...").
func ParseStat(out string) ([]StatRow, error) {
	out = strings.TrimLeft(out, "\n")
	if !strings.HasPrefix(out, "# ") {
		return nil, fmt.Errorf("no CSV header in %q", lastLines(out, 3))
	}
	rd := csv.NewReader(strings.NewReader(out[2:]))
	rd.FieldsPerRecord = -1
	rd.ReuseRecord = false
	header, err := rd.Read()
	if err != nil {
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	for _, col := range []string{"pxname", "svname", "status", "type"} {
		if !slices.Contains(header, col) {
			return nil, fmt.Errorf("CSV header has no %q column", col)
		}
	}
	cols := make(map[string]int, len(header))
	for i, col := range header {
		if _, dup := cols[col]; col != "" && !dup {
			cols[col] = i
		}
	}
	var rows []StatRow
	for {
		rec, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		raw := Fields{cols: cols, rec: rec}
		row := StatRow{
			Proxy:       raw.Get("pxname"),
			Name:        raw.Get("svname"),
			Status:      raw.Get("status"),
			CheckStatus: raw.Get("check_status"),
			Raw:         raw,
		}
		var perr error
		num := func(col string) int64 {
			s := raw.Get(col)
			if s == "" {
				return 0
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil && perr == nil {
				perr = fmt.Errorf("%s/%s: column %s: %w", row.Proxy, row.Name, col, err)
			}
			return n
		}
		row.Type = int(num("type"))
		row.CurConns = num("scur")
		row.TotalConns = num("stot")
		row.BytesIn = num("bin")
		row.BytesOut = num("bout")
		row.ReqTotal = num("req_tot")
		row.Weight = int(num("weight"))
		if perr != nil {
			return nil, perr
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// ServerState is one backend server as "show stat" reports it.
type ServerState struct {
	// Backend is the HAProxy backend: a pool's tier (TierBackend).
	Backend string
	Name    string
	// Up is true for a server that takes new connections by its state:
	// HAProxy's "no check" (ober renders servers without checks), or a
	// Status starting with "UP" (up, or up and failing checks but not
	// yet down: "UP 1/3"). DRAIN, MAINT, NOLB and DOWN are not up. A
	// server of weight 0 may be up and still get nothing.
	Up     bool
	Status string
	// CheckStatus is the last check result (L7OK, L4CON, ...) without the
	// "* " HAProxy puts before it while a check is running; empty
	// without checks.
	CheckStatus string
	// CurConns and TotalConns are the server's open and all-time
	// connections (scur, stot), BytesIn and BytesOut its traffic from
	// the clients and to them (bin, bout).
	CurConns, TotalConns int64
	BytesIn, BytesOut    int64
	// Weight is the server's weight (a drained server keeps it; its
	// Status says it takes nothing new).
	Weight int
}

// ServerStates picks the server rows of rows, in order.
func ServerStates(rows []StatRow) []ServerState {
	var out []ServerState
	for _, r := range rows {
		if r.Type != TypeServer {
			continue
		}
		out = append(out, ServerState{
			Backend:     r.Proxy,
			Name:        r.Name,
			Up:          strings.HasPrefix(r.Status, "UP") || r.Status == "no check",
			Status:      r.Status,
			CheckStatus: strings.TrimPrefix(r.CheckStatus, "* "),
			CurConns:    r.CurConns,
			TotalConns:  r.TotalConns,
			BytesIn:     r.BytesIn,
			BytesOut:    r.BytesOut,
			Weight:      r.Weight,
		})
	}
	return out
}

// Servers reads every server of every backend in one "show stat" that
// asks for server rows only (the cheapest way to poll thousands).
func (r Runtime) Servers(ctx context.Context) ([]ServerState, error) {
	out, err := r.Command(ctx, "show stat -1 4 -1")
	if err != nil {
		return nil, err
	}
	rows, err := ParseStat(out)
	if err != nil {
		return nil, fmt.Errorf("runtime API %s: show stat: %w", r.Path, err)
	}
	return ServerStates(rows), nil
}

// SetServerStateCommand is the runtime API command that puts a server
// in state (StateReady, StateDrain, StateMaint), for a caller that
// batches commands (several joined with ';' in one Command).
func SetServerStateCommand(backend, server, state string) (string, error) {
	if err := serverRef(backend, server); err != nil {
		return "", err
	}
	switch state {
	case StateReady, StateDrain, StateMaint:
	default:
		return "", fmt.Errorf("server %s/%s: state %q: want ready, drain or maint", backend, server, state)
	}
	return fmt.Sprintf("set server %s/%s state %s", backend, server, state), nil
}

// SetWeightCommand is the runtime API command that sets a server's
// weight (0..256). A backend of balance source (a static algorithm)
// takes only 0 and the rendered weight.
func SetWeightCommand(backend, server string, weight int) (string, error) {
	if err := serverRef(backend, server); err != nil {
		return "", err
	}
	if weight < 0 || weight > 256 {
		return "", fmt.Errorf("server %s/%s: weight %d: want 0..256", backend, server, weight)
	}
	return fmt.Sprintf("set weight %s/%s %d", backend, server, weight), nil
}

// SetServerState puts a server in state: ready takes new connections,
// drain lets the open ones finish and takes no new ones, maint takes it
// out at once (its open connections stay until they end).
func (r Runtime) SetServerState(ctx context.Context, backend, server, state string) error {
	cmd, err := SetServerStateCommand(backend, server, state)
	if err != nil {
		return err
	}
	return r.set(ctx, cmd)
}

// SetWeight sets a server's weight (0..256).
func (r Runtime) SetWeight(ctx context.Context, backend, server string, weight int) error {
	cmd, err := SetWeightCommand(backend, server, weight)
	if err != nil {
		return err
	}
	return r.set(ctx, cmd)
}

// set runs a command that answers nothing when it succeeds and a line
// of text ("No such server.") when it does not.
func (r Runtime) set(ctx context.Context, cmd string) error {
	out, err := r.Command(ctx, cmd)
	if err != nil {
		return err
	}
	if msg := strings.TrimSpace(out); msg != "" {
		return fmt.Errorf("runtime API %s: %q: %s", r.Path, cmd, firstLine(msg))
	}
	return nil
}

// serverRef checks a backend/server pair for the runtime API, which
// splits at '/' and ends a command at ';' or a blank.
func serverRef(backend, server string) error {
	if !poolRE.MatchString(backend) {
		return fmt.Errorf("backend %q: only %s are allowed", backend, poolChars)
	}
	if !nameRE.MatchString(server) {
		return fmt.Errorf("server %q of backend %s: only %s are allowed", server, backend, nameChars)
	}
	return nil
}

// TLSKeys runs "show tls-keys <file>": the session ticket keys of the
// listeners that loaded file (tls-ticket-keys), base64, oldest first;
// the second encrypts.
func (r Runtime) TLSKeys(ctx context.Context, file string) ([]string, error) {
	out, err := r.Command(ctx, "show tls-keys "+file)
	if err != nil {
		return nil, err
	}
	return ParseTLSKeys(out)
}

// ParseTLSKeys parses the answer of "show tls-keys <file>": after a
// comment line, one "<ref>.<n> <key>" line per key, n from 0.
func ParseTLSKeys(out string) ([]string, error) {
	if !strings.HasPrefix(strings.TrimSpace(out), "#") {
		// HAProxy's refusal ("unable to locate referenced filename").
		return nil, fmt.Errorf("show tls-keys: %s", firstLineOf(out))
	}
	var keys []string
	for i, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, key, ok := strings.Cut(line, " ")
		if _, n, dot := strings.Cut(id, "."); !ok || !dot || n != strconv.Itoa(len(keys)) {
			// The line is not quoted: it may hold a key.
			return nil, fmt.Errorf("show tls-keys: line %d is not \"<ref>.%d <key>\"", i+1, len(keys))
		}
		keys = append(keys, strings.TrimSpace(key))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("show tls-keys: no keys in %q", lastLines(out, 3))
	}
	return keys, nil
}

// SetTLSKey runs "set ssl tls-key <file> <key>": key becomes the newest
// of the listeners that loaded file, the oldest is dropped, and the one
// that was newest encrypts from then on.
func (r Runtime) SetTLSKey(ctx context.Context, file, key string) error {
	out, err := r.Command(ctx, "set ssl tls-key "+file+" "+key)
	if err != nil {
		// Command's errors quote the command: the key stays out of them.
		return errors.New(strings.ReplaceAll(err.Error(), key, "<key>"))
	}
	if !strings.Contains(out, "TLS ticket key updated") {
		return fmt.Errorf("runtime API %s: set ssl tls-key %s: %s", r.Path, file, strings.TrimSpace(lastLines(out, 1)))
	}
	return nil
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
