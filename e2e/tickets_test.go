package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/internal/testsite/ecmptest"
	"github.com/ober-ingress/ober/internal/testsite/nodetest"
)

// getResumable makes one request on a new connection with cfg's session
// cache and says which node served it and whether the TLS session was
// resumed. The answer is read in full: a TLS 1.3 ticket arrives after the
// handshake, and reading is what stores it.
func getResumable(ctx context.Context, s *ecmptest.Site, cfg *tls.Config) (node string, resumed bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := s.ClientDialer().DialContext(ctx, "tcp", netip.AddrPortFrom(ecmptest.VIP4, 443).String())
	if err != nil {
		return "", false, err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, cfg)
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: s3.ecmp.test\r\nConnection: close\r\n\r\n"); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", false, err
	}
	node, _, _ = strings.Cut(resp.Header.Get("X-Served-By"), "/")
	return node, c.ConnectionState().DidResume, nil
}

// resumeAcrossNodes: nodes given the same tls.session_tickets.key_file
// resume each other's sessions. A client keeps its ticket and reconnects
// from new ports, which ECMP spreads over the nodes: every reconnection
// resumes, also on a node other than the one that issued the ticket;
// the nodes show the same epoch and never a key.
func resumeAcrossNodes(t *testing.T, s *ecmptest.Site) {
	ctx := context.Background()
	cfg := s.TLSConfig()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	issuer, resumed, err := getResumable(ctx, s, cfg)
	require.NoError(t, err)
	require.False(t, resumed, "the first connection is a full handshake")
	across := 0
	for i := 0; i < 40 && across < 3; i++ {
		node, resumed, err := getResumable(ctx, s, cfg)
		require.NoError(t, err)
		require.True(t, resumed, "connection %d, served by %s with a ticket of %s, was not resumed", i, node, issuer)
		if node != issuer {
			across++
		}
		// TLS 1.3 gives a new ticket on every connection: the next
		// one presents this node's.
		issuer = node
	}
	require.Equal(t, 3, across, "40 connections never reached another node than the last one's")

	notAfter := presentedNotAfter(t, s, cfg)
	var epoch int64
	for i, n := range s.Nodes {
		st, err := n.Status()
		require.NoError(t, err)
		ts := st.Daemon.HAProxy.SessionTickets
		require.NotNil(t, ts, "%s: no session_tickets in status", n.Name)
		require.True(t, ts.Shared, "%s: keys from the shared key_file", n.Name)
		if i == 0 {
			epoch = ts.Epoch
		}
		require.Equal(t, epoch, ts.Epoch, "%s: the nodes agree on the epoch", n.Name)
		m, err := n.Metrics()
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(epoch), metricValue(t, m, "ober_tls_ticket_key_epoch"))
		exp, err := strconv.ParseFloat(metricValue(t, m, `ober_tls_cert_expiry_seconds{service="https"}`), 64)
		require.NoError(t, err)
		require.Equal(t, notAfter.Unix(), int64(exp), "%s: the expiry of the certificate the node presents", n.Name)
	}
}

// presentedNotAfter is when the certificate the VIP presents expires.
func presentedNotAfter(t *testing.T, s *ecmptest.Site, cfg *tls.Config) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := s.ClientDialer().DialContext(ctx, "tcp", netip.AddrPortFrom(ecmptest.VIP4, 443).String())
	require.NoError(t, err)
	defer raw.Close()
	c := tls.Client(raw, cfg.Clone())
	require.NoError(t, c.HandshakeContext(ctx))
	certs := c.ConnectionState().PeerCertificates
	require.NotEmpty(t, certs)
	return certs[0].NotAfter
}

// fetchResumable is fetchServedBy with cfg's session cache: the instance
// that served the request and whether the TLS session was resumed.
func fetchResumable(ctx context.Context, s *nodetest.Site, cfg *tls.Config) (instance int, resumed bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := s.ClientDialer().DialContext(ctx, "tcp4", nodetest.VIP.String()+":443")
	if err != nil {
		return -1, false, err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	tc := tls.Client(c, cfg)
	if _, err := fmt.Fprintf(tc, "GET /objects/probe HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", nodetest.VIP); err != nil {
		return -1, false, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return -1, false, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return -1, false, err
	}
	_, idx, ok := strings.Cut(resp.Header.Get("X-Served-By"), "/")
	if !ok {
		return -1, false, fmt.Errorf("no X-Served-By header (status %s)", resp.Status)
	}
	instance, err = strconv.Atoi(idx)
	return instance, tc.ConnectionState().DidResume, err
}

// resumeAcrossInstances reconnects one client, which keeps its session,
// until Maglev has sent it three times to another instance than the one
// that issued its ticket, and checks those connections resumed (tickets
// on) or did not (off: each instance has its own session cache).
func resumeAcrossInstances(t *testing.T, s *nodetest.Site, tickets bool) {
	t.Helper()
	ctx := context.Background()
	cfg := s.TLSConfig()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	prev, resumed, err := fetchResumable(ctx, s, cfg)
	require.NoError(t, err)
	require.False(t, resumed, "the first connection is a full handshake")
	across := 0
	for i := 0; i < 60 && across < 3; i++ {
		inst, resumed, err := fetchResumable(ctx, s, cfg)
		require.NoError(t, err)
		if inst != prev {
			across++
			require.Equal(t, tickets, resumed, "connection %d: instance %d with a session of instance %d: resumed %v", i, inst, prev, resumed)
		}
		prev = inst
	}
	require.Equal(t, 3, across, "60 connections never reached the other instance")
}
