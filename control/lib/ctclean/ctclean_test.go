package ctclean

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/stretchr/testify/require"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/ober-ingress/ober/internal/testsite/netnstest"
)

// entry is a conntrack entry as the tests create and compare them.
type entry struct {
	proto            uint8
	client, vip, dst netip.AddrPort // dst: the reply's source, the backend
	zone             uint16
}

func (e entry) String() string {
	return fmt.Sprintf("%d %s -> %s => %s zone %d", e.proto, e.client, e.vip, e.dst, e.zone)
}

func (e entry) flow() conntrack.Flow {
	f := conntrack.NewFlow(e.proto, 0, e.client.Addr(), e.vip.Addr(), e.client.Port(), e.vip.Port(), 120, 0)
	f.TupleReply.IP.SourceAddress = e.dst.Addr()
	f.TupleReply.Proto.SourcePort = e.dst.Port()
	f.Zone = e.zone
	return f
}

// create adds entries to the conntrack table of the calling thread.
func create(entries []entry) error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, e := range entries {
		if err := c.Create(e.flow()); err != nil {
			return fmt.Errorf("create %s: %w", e, err)
		}
	}
	return nil
}

// table lists the conntrack table of ns, sorted.
func table(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	var out []string
	require.NoError(t, ns.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err := c.Dump(nil)
		for _, f := range flows {
			o, r := f.TupleOrig, f.TupleReply
			out = append(out, entry{
				proto:  o.Proto.Protocol,
				client: netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort),
				vip:    netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort),
				dst:    netip.AddrPortFrom(r.IP.SourceAddress, r.Proto.SourcePort),
				zone:   f.Zone,
			}.String())
		}
		return err
	}))
	slices.Sort(out)
	return out
}

func strs(entries []entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.String()
	}
	slices.Sort(out)
	return out
}

type addrs struct{ client, client2, vip, vip2, a, b string }

var families = map[string]addrs{
	"IPv4": {"192.0.2.1", "192.0.2.2", "10.0.0.1", "10.0.0.2", "10.1.0.1", "10.1.0.2"},
	"IPv6": {"2001:db8::1", "2001:db8::2", "fd00::1", "fd00::2", "fd01::1", "fd01::2"},
}

func ap(addr string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port)
}

// TestDeleteOnlyTheBackendsFlows: of a service's entries, Delete removes
// exactly the UDP ones translated to the backend named, in any zone, and
// leaves the other backend's, the TCP ones to the same backend, those of
// another port or VIP, and those of the other address family.
func TestDeleteOnlyTheBackendsFlows(t *testing.T) {
	ns := netnstest.New(t, "ctdel")
	doomed := map[string][]entry{}
	var all []entry
	for name, f := range families {
		vip, a := ap(f.vip, 53), ap(f.a, 5353)
		doomed[name] = []entry{
			{unix.IPPROTO_UDP, ap(f.client, 40001), vip, a, 0},
			{unix.IPPROTO_UDP, ap(f.client, 40002), vip, a, 0},
			{unix.IPPROTO_UDP, ap(f.client2, 40001), vip, a, 0},
			{unix.IPPROTO_UDP, ap(f.client, 40003), vip, a, 7},
		}
		all = append(all, doomed[name]...)
		all = append(all,
			entry{unix.IPPROTO_UDP, ap(f.client, 41001), vip, ap(f.b, 5353), 0},
			entry{unix.IPPROTO_UDP, ap(f.client, 41002), vip, ap(f.b, 5353), 0},
			entry{unix.IPPROTO_TCP, ap(f.client, 40001), vip, a, 0},
			entry{unix.IPPROTO_UDP, ap(f.client, 42001), ap(f.vip, 5353), a, 0},
			entry{unix.IPPROTO_UDP, ap(f.client, 42002), ap(f.vip2, 53), a, 0},
			entry{unix.IPPROTO_UDP, ap(f.client, 42003), vip, ap(f.a, 9999), 0},
		)
	}
	require.NoError(t, ns.Do(func() error { return create(all) }))
	require.Equal(t, strs(all), table(t, ns), "conntrack table before deleting")

	remain := all
	for _, name := range []string{"IPv4", "IPv6"} {
		f := families[name]
		var n int
		require.NoError(t, ns.Do(func() (err error) {
			n, err = Delete(context.Background(), Match{Proto: unix.IPPROTO_UDP, VIP: ap(f.vip, 53), Backend: ap(f.a, 5353)})
			return err
		}))
		require.Equal(t, len(doomed[name]), n, "%s: entries deleted", name)
		remain = slices.DeleteFunc(remain, func(e entry) bool { return slices.Contains(doomed[name], e) })
		require.Equal(t, strs(remain), table(t, ns), "%s: conntrack table after deleting", name)
	}
}

// TestDeleteManyCountsPerBackend: one call cleans several backends of a
// service and says how many entries each had, 0 for one without any;
// a mapped IPv4 address counts as the IPv4 address.
func TestDeleteManyCountsPerBackend(t *testing.T) {
	ns := netnstest.New(t, "ctmany")
	f := families["IPv4"]
	vip, a, b, c := ap(f.vip, 53), ap(f.a, 53), ap(f.b, 53), ap("10.1.0.3", 53)
	other := entry{unix.IPPROTO_UDP, ap(f.client, 40010), vip, ap("10.1.0.4", 53), 0}
	entries := []entry{
		{unix.IPPROTO_UDP, ap(f.client, 40001), vip, a, 0},
		{unix.IPPROTO_UDP, ap(f.client, 40002), vip, a, 0},
		{unix.IPPROTO_UDP, ap(f.client, 40003), vip, b, 0},
		other,
	}
	require.NoError(t, ns.Do(func() error { return create(entries) }))
	mappedB := netip.AddrPortFrom(netip.AddrFrom16(b.Addr().As16()), b.Port())
	var counts map[netip.AddrPort]int
	require.NoError(t, ns.Do(func() (err error) {
		counts, err = DeleteMany(context.Background(), unix.IPPROTO_UDP, vip, []netip.AddrPort{a, mappedB, c})
		return err
	}))
	require.Equal(t, map[netip.AddrPort]int{a: 2, b: 1, c: 0}, counts)
	require.Equal(t, strs([]entry{other}), table(t, ns))
}

// TestDeleteNothingMatches: with entries of other services only, Delete
// deletes nothing and says so without error; so does a second Delete of
// the same backend.
func TestDeleteNothingMatches(t *testing.T) {
	ns := netnstest.New(t, "ctnone")
	f := families["IPv6"]
	entries := []entry{{unix.IPPROTO_UDP, ap(f.client, 40001), ap(f.vip, 53), ap(f.a, 53), 0}}
	require.NoError(t, ns.Do(func() error { return create(entries) }))
	for _, m := range []Match{
		{Proto: unix.IPPROTO_TCP, VIP: ap(f.vip, 53), Backend: ap(f.a, 53)},
		{Proto: unix.IPPROTO_UDP, VIP: ap(f.vip2, 53), Backend: ap(f.a, 53)},
		{Proto: unix.IPPROTO_UDP, VIP: ap(f.vip, 53), Backend: ap(f.b, 53)},
		{Proto: unix.IPPROTO_UDP, VIP: ap("10.0.0.1", 53), Backend: ap("10.1.0.1", 53)},
	} {
		var n int
		require.NoError(t, ns.Do(func() (err error) {
			n, err = Delete(context.Background(), m)
			return err
		}), "%+v", m)
		require.Zero(t, n, "%+v", m)
	}
	require.Equal(t, strs(entries), table(t, ns))
}

// TestDeleteSparesAReusedTuple: when a flow's entry is replaced, between
// the dump and the delete, by one of the same client port towards another
// backend, the delete finds nothing (ENOENT, which Delete ignores) instead
// of ending the new flow.
func TestDeleteSparesAReusedTuple(t *testing.T) {
	ns := netnstest.New(t, "ctreuse")
	for name, f := range families {
		stale := entry{unix.IPPROTO_UDP, ap(f.client, 40001), ap(f.vip, 53), ap(f.a, 53), 0}
		fresh := stale
		fresh.dst = ap(f.b, 53)
		require.NoError(t, ns.Do(func() error {
			if err := create([]entry{fresh}); err != nil {
				return err
			}
			c, err := conntrack.Dial(nil)
			if err != nil {
				return err
			}
			defer c.Close()
			err = c.Delete(byReplyTuple(stale.flow()))
			if !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("%s: delete of the stale entry: want ENOENT, got %v", name, err)
			}
			// The same request does delete the entry it was made from.
			if err := c.Delete(byReplyTuple(fresh.flow())); err != nil {
				return fmt.Errorf("%s: delete of the current entry: %w", name, err)
			}
			return nil
		}))
		require.Empty(t, table(t, ns), name)
	}
}

// TestDeleteRejectsBadInput: a match that cannot name a NATed flow is an
// error that names the field and its value. It and TestDeleteHonoursContext
// run in the root namespace, so they use documentation addresses that
// no real entry there has, should validation ever let a match through.
func TestDeleteRejectsBadInput(t *testing.T) {
	vip, backend := ap("192.0.2.10", 53), ap("198.51.100.1", 53)
	for _, tc := range []struct {
		m    Match
		want string
	}{
		{Match{Proto: unix.IPPROTO_ICMP, VIP: vip, Backend: backend}, "protocol 1"},
		{Match{Proto: unix.IPPROTO_SCTP, VIP: vip, Backend: backend}, "protocol 132"},
		{Match{Proto: unix.IPPROTO_UDP, Backend: backend}, `VIP "invalid AddrPort"`},
		{Match{Proto: unix.IPPROTO_UDP, VIP: ap("0.0.0.0", 53), Backend: backend}, "VIP 0.0.0.0:53"},
		{Match{Proto: unix.IPPROTO_UDP, VIP: ap("192.0.2.10", 0), Backend: backend}, "VIP 192.0.2.10:0"},
		{Match{Proto: unix.IPPROTO_UDP, VIP: vip}, `backend "invalid AddrPort"`},
		{Match{Proto: unix.IPPROTO_TCP, VIP: vip, Backend: ap("::", 53)}, "backend [::]:53"},
		{Match{Proto: unix.IPPROTO_TCP, VIP: vip, Backend: ap("198.51.100.1", 0)}, "backend 198.51.100.1:0"},
		{Match{Proto: unix.IPPROTO_TCP, VIP: vip, Backend: ap("fd01::1", 53)}, "backend [fd01::1]:53"},
	} {
		_, err := Delete(context.Background(), tc.m)
		require.ErrorContains(t, err, tc.want, "%+v", tc.m)
	}
}

// TestDeleteHonoursContext: a cancelled context stops Delete before it
// touches the table.
func TestDeleteHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Delete(ctx, Match{Proto: unix.IPPROTO_UDP, VIP: ap("192.0.2.10", 53), Backend: ap("198.51.100.1", 53)})
	require.ErrorIs(t, err, context.Canceled)
}

// TestDeleteUnpinsRealTraffic: with a DNAT rule in a namespace, a UDP
// client keeps reaching the first backend after the rule moves to
// another, until Delete removes the flow's entry; its next datagram then
// reaches the new backend.
func TestDeleteUnpinsRealTraffic(t *testing.T) {
	for _, tc := range []struct {
		name            string
		family          nftables.TableFamily
		vip, a, b       string
		daddrOff, proto uint32
	}{
		{"IPv4", nftables.TableFamilyIPv4, "127.0.0.10", "127.0.0.2", "127.0.0.3", 16, unix.NFPROTO_IPV4},
		{"IPv6", nftables.TableFamilyIPv6, "fd00::10", "fd00::2", "fd00::3", 24, unix.NFPROTO_IPV6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t, "ctreal")
			if tc.family == nftables.TableFamilyIPv6 {
				for _, a := range []string{tc.vip, tc.a, tc.b} {
					ns.IP(t, "addr", "add", a+"/128", "dev", "lo", "nodad")
				}
			}
			const port = 5353
			vip, a, b := ap(tc.vip, port), ap(tc.a, port), ap(tc.b, port)

			nft, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)))
			require.NoError(t, err)
			tbl := nft.AddTable(&nftables.Table{Name: "ctclean_test", Family: tc.family})
			chain := nft.AddChain(&nftables.Chain{
				Name: "out", Table: tbl, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
			})
			dnatTo := func(to netip.AddrPort) {
				nft.FlushChain(chain)
				nft.AddRule(&nftables.Rule{Table: tbl, Chain: chain, Exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: tc.daddrOff, Len: uint32(vip.Addr().BitLen() / 8)},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: vip.Addr().AsSlice()},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, vip.Port())},
					&expr.Immediate{Register: 1, Data: to.Addr().AsSlice()},
					&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, to.Port())},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: tc.proto, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
				}})
				require.NoError(t, nft.Flush(), "DNAT rule to %s", to)
			}
			dnatTo(a)

			var srvA, srvB, client *net.UDPConn
			require.NoError(t, ns.Do(func() (err error) {
				if srvA, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(a)); err != nil {
					return err
				}
				if srvB, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(b)); err != nil {
					return err
				}
				client, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(vip))
				return err
			}))
			for _, c := range []*net.UDPConn{srvA, srvB, client} {
				t.Cleanup(func() { c.Close() })
			}
			send := func(msg string, want *net.UDPConn, wantName string) {
				t.Helper()
				_, err := client.Write([]byte(msg))
				require.NoError(t, err)
				require.NoError(t, want.SetReadDeadline(time.Now().Add(5*time.Second)))
				buf := make([]byte, 64)
				n, err := want.Read(buf)
				require.NoError(t, err, "datagram %q should reach %s", msg, wantName)
				require.Equal(t, msg, string(buf[:n]), "datagram at %s", wantName)
			}

			send("first", srvA, "backend A")
			dnatTo(b)
			send("pinned", srvA, "backend A, through the flow's conntrack entry")

			var n int
			require.NoError(t, ns.Do(func() (err error) {
				n, err = Delete(context.Background(), Match{Proto: unix.IPPROTO_UDP, VIP: vip, Backend: a})
				return err
			}))
			require.Equal(t, 1, n, "entries deleted")
			send("moved", srvB, "backend B")
		})
	}
}
