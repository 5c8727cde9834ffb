package haproxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// statHeader is the "show stat" header of HAProxy 2.6.
const statHeader = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,"

// statLine builds a CSV line of the header above from a few columns.
func statLine(t *testing.T, cols map[string]string) string {
	t.Helper()
	names := strings.Split(strings.TrimPrefix(statHeader, "# "), ",")
	vals := make([]string, len(names))
	for i, n := range names {
		vals[i] = cols[n]
		delete(cols, n)
	}
	require.Empty(t, cols, "unknown columns")
	return strings.Join(vals, ",")
}

func TestParseStat(t *testing.T) {
	out := strings.Join([]string{
		statHeader,
		statLine(t, map[string]string{"pxname": "tls-443", "svname": "FRONTEND", "scur": "3", "stot": "120", "bin": "1048576", "bout": "2048", "status": "OPEN", "type": "0", "req_tot": "118"}),
		statLine(t, map[string]string{"pxname": "s3", "svname": "s0", "scur": "2", "stot": "60", "bin": "5", "bout": "6", "status": "UP", "weight": "100", "type": "2", "check_status": "L7OK", "addr": "192.0.2.10:9000"}),
		statLine(t, map[string]string{"pxname": "s3", "svname": "s1", "status": "UP 1/3", "weight": "50", "type": "2", "check_status": "* L4TOUT"}),
		statLine(t, map[string]string{"pxname": "s3", "svname": "s2", "status": "DOWN 1/2", "weight": "100", "type": "2", "check_status": "L7OK"}),
		statLine(t, map[string]string{"pxname": "s3", "svname": "s3", "status": "NOLB", "weight": "0", "type": "2", "check_status": "L7OK"}),
		statLine(t, map[string]string{"pxname": "s3", "svname": "s4", "status": "MAINT", "weight": "100", "type": "2", "check_desc": `"Layer4 timeout, retrying"`}),
		statLine(t, map[string]string{"pxname": "s3", "svname": "s5", "status": "DRAIN", "weight": "100", "type": "2"}),
		statLine(t, map[string]string{"pxname": "s3", "svname": "s6", "status": "no check", "weight": "1", "type": "2"}),
		statLine(t, map[string]string{"pxname": "s3", "svname": "BACKEND", "scur": "2", "status": "UP", "weight": "450", "type": "1"}),
		"", "",
	}, "\n")

	rows, err := ParseStat(out)
	require.NoError(t, err)
	require.Len(t, rows, 9)
	fe := rows[0]
	require.Equal(t, StatRow{
		Proxy: "tls-443", Name: "FRONTEND", Status: "OPEN", Type: TypeFrontend,
		CurConns: 3, TotalConns: 120, BytesIn: 1048576, BytesOut: 2048, ReqTotal: 118,
		Raw: fe.Raw,
	}, fe)
	require.Equal(t, "OPEN", fe.Raw.Get("status"))
	require.Equal(t, "192.0.2.10:9000", rows[1].Raw.Get("addr"))
	require.Equal(t, "Layer4 timeout, retrying", rows[5].Raw.Get("check_desc"), "quoted field with a comma")
	require.Equal(t, TypeBackend, rows[8].Type)
	require.Equal(t, "* L4TOUT", rows[2].CheckStatus, "StatRow keeps the in-progress marker")

	states := ServerStates(rows)
	require.Equal(t, []ServerState{
		{Backend: "s3", Name: "s0", Up: true, Status: "UP", CheckStatus: "L7OK", CurConns: 2, TotalConns: 60, BytesIn: 5, BytesOut: 6, Weight: 100},
		{Backend: "s3", Name: "s1", Up: true, Status: "UP 1/3", CheckStatus: "L4TOUT", Weight: 50},
		{Backend: "s3", Name: "s2", Up: false, Status: "DOWN 1/2", CheckStatus: "L7OK", Weight: 100},
		{Backend: "s3", Name: "s3", Up: false, Status: "NOLB", CheckStatus: "L7OK"},
		{Backend: "s3", Name: "s4", Up: false, Status: "MAINT", Weight: 100},
		{Backend: "s3", Name: "s5", Up: false, Status: "DRAIN", Weight: 100},
		{Backend: "s3", Name: "s6", Up: true, Status: "no check", Weight: 1},
	}, states)
	require.Empty(t, ServerStates(nil))

	for _, bad := range []string{
		"",
		"Unknown command\n",
		"# svname,status\nx,UP\n",
		statHeader + "\n" + statLine(t, map[string]string{"pxname": "a", "svname": "b", "type": "x"}) + "\n",
		statHeader + "\n" + statLine(t, map[string]string{"pxname": "a", "svname": "b", "type": "2", "scur": "-1x"}) + "\n",
	} {
		_, err := ParseStat(bad)
		require.Error(t, err, "%q", bad)
	}
}

func TestParseInfo(t *testing.T) {
	info := ParseInfo("Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nRelease_date: 2026/10/17\nNbthread: 1\nUptime: 0d 0h00m00s\nUnstoppable Jobs: 0\n\n")
	require.Equal(t, map[string]string{
		"Name": "HAProxy", "Version": "2.6.12-1+deb12u4", "Release_date": "2026/10/17",
		"Nbthread": "1", "Uptime": "0d 0h00m00s", "Unstoppable Jobs": "0",
	}, info)
}

// fakeSocket serves one canned answer per connection on a unix socket
// and records the commands it got.
func fakeSocket(t *testing.T, answer func(cmd string) (string, bool)) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "fake.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	cmds := make(chan string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				cmd := strings.TrimSuffix(line, "\n")
				cmds <- cmd
				out, reply := answer(cmd)
				if !reply {
					time.Sleep(5 * time.Second)
					return
				}
				_, _ = c.Write([]byte(out))
			}()
		}
	}()
	return path, cmds
}

func TestRuntimeCommand(t *testing.T) {
	ctx := context.Background()
	stat := statHeader + "\n" + statLine(t, map[string]string{"pxname": "s3", "svname": "a", "status": "UP", "type": "2", "weight": "7"}) + "\n\n"
	path, cmds := fakeSocket(t, func(cmd string) (string, bool) {
		switch cmd {
		case "show info":
			return "Name: HAProxy\nVersion: 3.0.11\nPid: 42\n\n", true
		case "show stat":
			return stat, true
		case "hang":
			return "", false
		case "show errors":
			return "Permission denied\n\n", true
		}
		return "Unknown command, but maybe one of the following ones is a better match:\n  help\n\n", true
	})
	rt := Runtime{Path: path, Timeout: time.Second}

	info, err := rt.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, "3.0.11", info["Version"])
	require.Equal(t, "show info", <-cmds)

	rows, err := rt.Stat(ctx)
	require.NoError(t, err)
	require.Equal(t, []ServerState{{Backend: "s3", Name: "a", Up: true, Status: "UP", Weight: 7}}, ServerStates(rows))
	require.Equal(t, "show stat", <-cmds)

	out, err := rt.Command(ctx, "  show stat  ")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out, "# pxname,"))
	require.Equal(t, "show stat", <-cmds, "the command is trimmed")

	_, err = rt.Command(ctx, "frobnicate")
	require.ErrorContains(t, err, "Unknown command")
	_, err = rt.Command(ctx, "show errors")
	require.ErrorContains(t, err, "Permission denied")

	_, err = rt.Command(ctx, "show info\nshutdown frontend x")
	require.ErrorContains(t, err, "one non-empty line")
	_, err = rt.Command(ctx, "")
	require.Error(t, err)

	start := time.Now()
	_, err = Runtime{Path: path, Timeout: 200 * time.Millisecond}.Command(ctx, "hang")
	require.Error(t, err)
	require.Less(t, time.Since(start), 3*time.Second)

	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	start = time.Now()
	_, err = Runtime{Path: path, Timeout: 10 * time.Second}.Command(cctx, "hang")
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), 3*time.Second)

	_, err = Runtime{Path: path}.Info(ctx)
	require.NoError(t, err, "zero Timeout means the default")

	rt.Path = filepath.Join(t.TempDir(), "none.sock")
	_, err = rt.Info(ctx)
	require.ErrorContains(t, err, "none.sock")
}

func TestRuntimeInfoRejectsGarbage(t *testing.T) {
	path, _ := fakeSocket(t, func(string) (string, bool) { return "hello\n", true })
	_, err := Runtime{Path: path}.Info(context.Background())
	require.ErrorContains(t, err, "unexpected answer")
	_, err = Runtime{Path: path}.Stat(context.Background())
	require.ErrorContains(t, err, "no CSV header")
}

func TestServerCommands(t *testing.T) {
	cmd, err := SetServerStateCommand("web:api:p2", "s-1.a", StateDrain)
	require.NoError(t, err)
	require.Equal(t, "set server web:api:p2/s-1.a state drain", cmd)
	cmd, err = SetWeightCommand("s3", "rgw1", 256)
	require.NoError(t, err)
	require.Equal(t, "set weight s3/rgw1 256", cmd)

	for _, bad := range []struct {
		backend, server, state string
		want                   string
	}{
		{"s3", "rgw1", "disabled", `state "disabled": want ready, drain or maint`},
		{"s3", "rgw1", "", `state ""`},
		{"s3/x", "rgw1", StateReady, `backend "s3/x"`},
		{"s3;shutdown", "rgw1", StateReady, `backend "s3;shutdown"`},
		{"", "rgw1", StateReady, `backend ""`},
		{"s3", "a b", StateReady, `server "a b" of backend s3`},
		{"s3", "a:b", StateReady, `server "a:b"`},
	} {
		_, err := SetServerStateCommand(bad.backend, bad.server, bad.state)
		require.ErrorContains(t, err, bad.want)
	}
	for _, w := range []int{-1, 257} {
		_, err := SetWeightCommand("s3", "rgw1", w)
		require.ErrorContains(t, err, fmt.Sprintf("weight %d: want 0..256", w))
	}
}

func TestRuntimeServerHelpers(t *testing.T) {
	ctx := context.Background()
	stat := statHeader + "\n" +
		statLine(t, map[string]string{"pxname": "web:p2", "svname": "a", "status": "no check", "type": "2", "weight": "7",
			"scur": "1", "stot": "9", "bin": "100", "bout": "2000"}) + "\n" +
		statLine(t, map[string]string{"pxname": "web:p2", "svname": "b", "status": "MAINT", "type": "2", "weight": "3"}) + "\n\n"
	path, cmds := fakeSocket(t, func(cmd string) (string, bool) {
		switch cmd {
		case "show stat -1 4 -1":
			return stat, true
		case "set weight web/a 5", "set server web/a state maint":
			return "\n", true
		case "set weight web/b 5":
			return "No such server.\n\n", true
		}
		return "Unknown command\n\n", true
	})
	rt := Runtime{Path: path, Timeout: time.Second}

	states, err := rt.Servers(ctx)
	require.NoError(t, err)
	require.Equal(t, "show stat -1 4 -1", <-cmds, "server rows only")
	require.Equal(t, []ServerState{
		{Backend: "web:p2", Name: "a", Up: true, Status: "no check", CurConns: 1, TotalConns: 9, BytesIn: 100, BytesOut: 2000, Weight: 7},
		{Backend: "web:p2", Name: "b", Status: "MAINT", Weight: 3},
	}, states)

	require.NoError(t, rt.SetWeight(ctx, "web", "a", 5))
	require.Equal(t, "set weight web/a 5", <-cmds)
	require.NoError(t, rt.SetServerState(ctx, "web", "a", StateMaint))
	require.Equal(t, "set server web/a state maint", <-cmds)
	err = rt.SetWeight(ctx, "web", "b", 5)
	require.ErrorContains(t, err, `"set weight web/b 5": No such server.`)
	<-cmds
	// Bad arguments never reach HAProxy.
	require.Error(t, rt.SetWeight(ctx, "web", "b", 300))
	require.Error(t, rt.SetServerState(ctx, "web", "b;x", StateReady))
	select {
	case c := <-cmds:
		t.Fatalf("sent %q", c)
	default:
	}
}

func TestParseTLSKeys(t *testing.T) {
	keys, err := ParseTLSKeys("# id secret\n# 0 (/run/ober/tls/ticket-keys)\n0.0 AAA=\n0.1 BBB=\n0.2 CCC=\n\n")
	require.NoError(t, err)
	require.Equal(t, []string{"AAA=", "BBB=", "CCC="}, keys, "oldest first, as HAProxy lists them")

	_, err = ParseTLSKeys("'show tls-keys' unable to locate referenced filename\n")
	require.ErrorContains(t, err, "unable to locate referenced filename")

	_, err = ParseTLSKeys("# id secret\n0.0 AAA=\n0.2 SECRETKEY=\n")
	require.EqualError(t, err, `show tls-keys: line 3 is not "<ref>.1 <key>"`)
	require.NotContains(t, err.Error(), "SECRETKEY", "a key never reaches an error message")
}
