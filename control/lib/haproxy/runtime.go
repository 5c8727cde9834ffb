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
	// Raw holds every column by its header name.
	Raw map[string]string
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
	var rows []StatRow
	for {
		rec, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		raw := make(map[string]string, len(header))
		for i, col := range header {
			if col != "" && i < len(rec) {
				raw[col] = rec[i]
			}
		}
		row := StatRow{
			Proxy:       raw["pxname"],
			Name:        raw["svname"],
			Status:      raw["status"],
			CheckStatus: raw["check_status"],
			Raw:         raw,
		}
		var perr error
		num := func(col string) int64 {
			s := raw[col]
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

// ServerState is the health of one backend server.
type ServerState struct {
	Backend string
	Name    string
	// Up is Status starting with "UP": up, or up and failing checks but
	// not yet down ("UP 1/3"). NOLB, DRAIN, MAINT and DOWN are not up.
	Up     bool
	Status string
	// CheckStatus is the last check result (L7OK, L4CON, ...) without the
	// "* " HAProxy puts before it while a check is running.
	CheckStatus string
	CurConns    int64
	Weight      int
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
			Up:          strings.HasPrefix(r.Status, "UP"),
			Status:      r.Status,
			CheckStatus: strings.TrimPrefix(r.CheckStatus, "* "),
			CurConns:    r.CurConns,
			Weight:      r.Weight,
		})
	}
	return out
}
