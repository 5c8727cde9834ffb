package bgp

import (
	"context"
	"log/slog"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// ProbeResult is what `ober test` learns about one router.
type ProbeResult struct {
	Peer string `json:"peer"`
	ASN  uint32 `json:"asn"`
	// State is the last session state seen; OK means it reached
	// established.
	State string `json:"state"`
	OK    bool   `json:"ok"`
	// Took is the time to established.
	Took         time.Duration `json:"took"`
	RouterID     string        `json:"router_id,omitempty"`
	Capabilities []string      `json:"capabilities,omitempty"`
	Error        string        `json:"error,omitempty"`
}

// Probe opens a session to peer with cfg's identity, waits until it is
// established or ctx ends, reports what the router offered and closes
// the session. It announces nothing. A passive peer is waited for on
// cfg.ListenPort; other peers are dialled and nothing listens.
//
// Run it only where no ober daemon holds the sessions: a router refuses a
// second connection from an address it has an established session with.
func Probe(ctx context.Context, cfg Config, peer Peer, log *slog.Logger) ProbeResult {
	res := ProbeResult{Peer: peer.Address.String(), ASN: peer.ASN, State: "idle"}
	if !peer.Passive {
		cfg.ListenPort = -1
	}
	cfg.Peers = []Peer{peer}
	if log == nil {
		log = slog.Default()
	}
	start := time.Now()
	s, err := Start(ctx, cfg, log)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	// The probe's session is closed with a Cease; a router that never
	// answered holds nothing to wait for.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	defer func() { _ = s.Stop(stopCtx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var got *api.Peer
		_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: peer.Address.String()}, func(p *api.Peer) { got = p })
		if got != nil {
			res.State = sessionState(got.GetState().GetSessionState())
			if msg := s.lastError(peer.Address); msg != "" {
				res.Error = msg
			}
			if res.State == "established" {
				res.OK, res.Error = true, ""
				res.Took = time.Since(start)
				res.RouterID = got.GetState().GetRouterId()
				res.Capabilities = capabilities(got.GetState().GetRemoteCap())
				return res
			}
		}
		select {
		case <-ctx.Done():
			if res.Error == "" {
				res.Error = "no session before the timeout: the router did not answer (state " + res.State + ")"
			} else {
				res.Error = "no session before the timeout; last refusal: " + res.Error
			}
			return res
		case <-tick.C:
		}
	}
}
