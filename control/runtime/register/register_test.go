package register

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/control/lib/discovery/consul"
	"github.com/ober-ingress/ober/internal/testsite/consultest"
)

// Against a Consul agent (the in-process fake the client's tests use):
// what the node serves is registered with its check, what it stops
// serving is deregistered, a changed registration is registered again,
// and an agent that failed is caught up with at the next Sync.
func TestSync(t *testing.T) {
	srv := consultest.New(t)
	agent, err := consul.NewAgent(consul.AgentOptions{Address: srv.Addr(), Timeout: 2 * time.Second})
	require.NoError(t, err)
	r := New(agent, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	check := consul.Check{URL: "http://127.0.0.1:9180/health", Interval: 5 * time.Second}
	s3 := consul.Registration{Name: consul.ServiceName("s3", 443, "tcp"), Address: "10.20.0.10", Port: 443, Check: check}
	dns := consul.Registration{Name: consul.ServiceName("dns", 53, "udp"), Address: "10.20.0.10", Port: 53, Check: check}

	require.NoError(t, r.Sync(ctx, []consul.Registration{s3, dns}))
	reg := srv.Registered()
	require.Contains(t, reg, "s3-443-tcp")
	require.Contains(t, reg, "dns-53-udp")
	require.Equal(t, []string{"dns-53-udp", "s3-443-tcp"}, r.Registered())

	// The node withdraws dns's VIP: dns goes.
	require.NoError(t, r.Sync(ctx, []consul.Registration{s3}))
	require.NotContains(t, srv.Registered(), "dns-53-udp")
	require.Contains(t, srv.Registered(), "s3-443-tcp")

	// The agent fails once: the error is said, and the next Sync
	// catches up.
	srv.FailNext(500)
	err = r.Sync(ctx, []consul.Registration{s3, dns})
	require.Error(t, err)
	require.Equal(t, err, r.Err())
	require.NoError(t, r.Sync(ctx, []consul.Registration{s3, dns}))
	require.Contains(t, srv.Registered(), "dns-53-udp")

	// Stop: nothing stays, and a late Sync registers nothing again.
	require.NoError(t, r.Close(ctx))
	require.Empty(t, srv.Registered())
	require.Empty(t, r.Registered())
	require.NoError(t, r.Sync(ctx, []consul.Registration{s3}))
	require.Empty(t, srv.Registered())
}
