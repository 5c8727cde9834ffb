package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/ops/check"
	"github.com/ober-ingress/ober/control/runtime/nftlb"
	"github.com/ober-ingress/ober/internal/testsite/dnstest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// A table inet ober that ober did not make (another tool's, or a hand
// made one) is never touched: a node with a udp service refuses to start
// and says what to do, and the table keeps its chain. Once it is gone
// ober starts, makes its own, and leaves it when it stops, so that a
// restart keeps the flows.
func TestKernelServiceForeignTable(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	require.NoError(t, s.Node.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tb := c.AddTable(&nftables.Table{Name: nftlb.TableName, Family: nftables.TableFamilyINet})
		c.AddChain(&nftables.Chain{Name: "theirs", Table: tb})
		return c.Flush()
	}))
	c := s.Config(nodetest.Params{Instances: 1})
	c.Services = append(c.Services, config.Service{Name: "dns", Mode: config.ModeUDP, Port: 53,
		Backends: []config.BackendServer{{Name: "ns1", Address: netip.AddrPortFrom(s.BackendIP(0), 53).String()}}})
	s.WriteConfig(c)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := runOber(ctx, s.Node, "run", "--config", s.ConfigPath)
	require.NoError(t, err)
	require.Equal(t, 1, res.code, "%s", res)
	require.Contains(t, res.stderr, "nftables table inet ober exists and was not made by ober")
	require.Contains(t, res.stderr, "rename or delete it")
	require.Equal(t, []string{"theirs"}, nftChains(t, s), "the other table is as it was")

	require.NoError(t, s.Node.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.DelTable(&nftables.Table{Name: nftlb.TableName, Family: nftables.TableFamilyINet})
		return c.Flush()
	}))
	s.Start()
	chains := nftChains(t, s)
	require.Contains(t, chains, "s/dns/4", "ober's own table, with the service's chain")

	// Status and metrics see the service through nftables: its backend
	// in rotation (no check), the service up, and a datagram sent to the
	// VIP counted as the backend's new flow.
	require.NoError(t, s.Client.Do(func() error {
		c, err := net.Dial("udp", netip.AddrPortFrom(nodetest.VIP, 53).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	}))
	require.Eventually(t, func() bool {
		return strings.Contains(s.Metrics(), `ober_service_backend_connections_total{backend="ns1",pool="default",service="dns"} 1`)
	}, 5*time.Second, 100*time.Millisecond, "the flow is counted:\n%s", s.Metrics())
	m := s.Metrics()
	require.Contains(t, m, `ober_service_backend_state{backend="ns1",pool="default",service="dns",state="rotation"} 1`)
	require.Contains(t, m, `ober_service_up{service="dns"} 1`)
	require.Contains(t, m, `ober_service_connections_total{service="dns"} 1`)
	s.Signal(syscall.SIGTERM)
	code, err := s.Wait(time.Minute)
	require.NoError(t, err)
	require.Equal(t, 0, code)
	require.Equal(t, chains, nftChains(t, s), "a stopped daemon leaves its rules for the restart; ober uninstall deletes them")
}

// nftChains names the chains of table inet ober in the node, sorted; nil
// when there is no such table.
func nftChains(t *testing.T, s *nodetest.Site) []string {
	t.Helper()
	var names []string
	require.NoError(t, s.Node.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		for _, ch := range chains {
			if ch.Table.Name == nftlb.TableName {
				names = append(names, ch.Name)
			}
		}
		return err
	}))
	slices.Sort(names)
	return names
}

// `ober test` checks that a dnat service's backends answer clients
// through the node: it passes while the backend's default route points at
// the node, and fails with the reason and the fix once it does not.
func TestTestDNATRouteBack(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	c := s.Config(nodetest.Params{Instances: 1})
	c.Services = append(c.Services, config.Service{Name: "kept", Mode: config.ModeNAT, Port: 7101, Forward: config.ForwardDNAT,
		Access:   &config.Access{Default: config.AccessDeny, Rules: []string{"allow " + netip.PrefixFrom(nodetest.ClientAddr, 24).Masked().String()}},
		Backends: []config.BackendServer{{Name: "b", Address: netip.AddrPortFrom(s.BackendIP(0), 9100).String()}}})
	s.WriteConfig(c)
	routeBack := func() (check.Result, result) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := runOber(ctx, s.Node, "test", "--json", "--config", s.ConfigPath)
		require.NoError(t, err)
		var rs []check.Result
		require.NoError(t, json.Unmarshal([]byte(res.stdout), &rs), "%s", res)
		for _, r := range rs {
			if r.Name == "routeback kept/b" {
				return r, res
			}
		}
		t.Fatalf("no routeback check:\n%s", res)
		return check.Result{}, res
	}
	r, res := routeBack()
	require.Equal(t, check.OK, r.Status, "%+v\n%s", r, res)
	require.Contains(t, r.Detail, "answers a client ("+nodetest.ClientAddr.String()+") through this node", "the client comes from the access list")

	s.Backend().IP(t, "route", "del", "default")
	r, res = routeBack()
	require.Equal(t, 1, res.code, "%s", res)
	require.Equal(t, check.Fail, r.Status, "%+v", r)
	require.Contains(t, r.Detail, "service kept forwards with dnat")
	require.Contains(t, r.Detail, "do not come back through this node")
	require.True(t, strings.Contains(r.Fix, "forward: fullnat"), r.Fix)
}

// A node with udp services only, no HAProxy service and no top-level
// backends (an IPVS director's replacement): it starts, its instances run
// idle, it is healthy, and it answers DNS through the kernel.
func TestKernelOnlyNode(t *testing.T) {
	s := nodetest.New(t, oberBin, 1)
	dnstest.StartDnsmasq(t, s.Backend(), "ns1", netip.AddrPortFrom(s.BackendIP(0), 53))
	out, err := s.Node.Exec(context.Background(), "sysctl", "-w", "net.ipv4.ip_forward=1").CombinedOutput()
	require.NoError(t, err, "%s", out)
	c := s.Config(nodetest.Params{Instances: 1})
	c.Services = []config.Service{{Name: "dns", Mode: config.ModeUDP, Port: 53,
		Health:   &config.ServiceHealth{Kind: config.CheckProbe, Protocol: config.ProtocolUDP, Send: udpQuery(), ExpectRegexp: "backend="},
		Backends: []config.BackendServer{{Name: "ns1", Address: netip.AddrPortFrom(s.BackendIP(0), 53).String()}}}}
	c.Backends = config.Backends{}
	s.WriteConfig(c)
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.Eventually(t, func() bool {
		tl, err := dnstest.Ask(ctx, s.Client, netip.AddrPortFrom(nodetest.VIP, 53), 20, 5, time.Second)
		return err == nil && tl.ByBackend["ns1"] == 20
	}, 15*time.Second, 200*time.Millisecond, "the udp service answers")
	st := s.Status()
	require.Len(t, st.Daemon.HAProxy.Instances, 1)
	require.Equal(t, "healthy", string(st.Daemon.HAProxy.Instances[0].State), "an idle instance")

	// A kernel backend's change goes the runtime path: nftables takes it,
	// no instance is renewed (BENCHMARKS: in force in 10 ms, where the
	// reload it took before needed 600 ms).
	pid := st.Daemon.HAProxy.Instances[0].PID
	api := newMgmtClient(t, filepath.Join(c.Node.RuntimeDir, config.DefaultAPISocketName))
	for _, path := range []string{"/api/v1/services/dns/backends/ns1/disable", "/api/v1/services/dns/backends/ns1/enable"} {
		code, out := api.do("POST", path, "")
		require.Equal(t, http.StatusOK, code, "%v", out)
		require.Equal(t, "runtime", out["applied"], "%s", path)
	}
	st = s.Status()
	require.Equal(t, pid, st.Daemon.HAProxy.Instances[0].PID, "the instance was not renewed")
	require.Equal(t, "rotation", tcpSvcService(t, st, "dns").Backends[0].State)
}
