// Package bgp announces the node's VIPs to the upstream routers with an
// embedded GoBGP speaker.
//
// The speaker only originates: it rejects every route a peer sends, and
// announces each VIP with next-hop self to the peers of the VIP's address
// family (IPv4 VIPs over IPv4 sessions, IPv6 VIPs over IPv6 sessions), so
// a router never receives a next hop it cannot reach. What to announce,
// and when to take it back, is the daemon's decision (Announce, Withdraw);
// this package makes the routers see it at once.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Peer is one router session.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	// Port is the router's BGP port; 0 means 179.
	Port uint16
	// Password turns on TCP MD5 signatures (RFC 2385).
	Password string
	// HoldTime and Keepalive are whole seconds on the wire; HoldTime 0
	// means GoBGP's default (90s).
	HoldTime  time.Duration
	Keepalive time.Duration
	// ConnectRetry is the wait between connection attempts.
	ConnectRetry time.Duration
	// Multihop is the TTL for an eBGP session to a router that is not
	// directly connected; 0 means directly connected.
	Multihop uint8
	// Passive waits for the router to connect.
	Passive bool
	// BFD, when set, runs single-hop BFD on the session: a BFD timeout
	// resets the session at once instead of waiting for the hold timer.
	BFD *BFD
	// GracefulRestart, when not 0, advertises the graceful restart
	// capability (RFC 4724) with this restart time (whole seconds): the
	// router keeps the node's routes that long after the session ends
	// without a NOTIFICATION (StopForRestart).
	GracefulRestart time.Duration
}

// BFD timers: the node sends every Interval and declares the session down
// after Multiplier intervals without a packet.
type BFD struct {
	Interval   time.Duration
	Multiplier int
}

// Config is the speaker's identity and sessions.
type Config struct {
	ASN      uint32
	RouterID netip.Addr
	// ListenPort accepts sessions from routers; 0 means 179, -1 means
	// the speaker only connects out.
	ListenPort int32
	Peers      []Peer
	// Restarting starts the sessions as a restarting speaker (the R bit
	// of RFC 4724): an earlier speaker of this node left with
	// StopForRestart and the routers hold its routes as stale. Updates
	// are deferred until every graceful restart peer sent its End-of-RIB
	// (or the restart time passed), then the routes and an End-of-RIB
	// go out together, so the routers swap stale for fresh without a gap.
	Restarting bool
	// Initial routes are in the table before the first session opens.
	// A restarting speaker sends its End-of-RIB as soon as it has the
	// routers' own; routes announced after that would leave a gap in
	// which the routers, their graceful restart over, have none.
	Initial []Route
}

// Route is one prefix with the attributes it is announced with.
type Route struct {
	Prefix           netip.Prefix
	Communities      []uint32
	LargeCommunities []LargeCommunity
	// MED, when set, is sent as MULTI_EXIT_DISC.
	MED *uint32
}

// LargeCommunity is an RFC 8092 community.
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

// Speaker is a running BGP speaker.
type Speaker struct {
	srv *server.BgpServer
	log *slog.Logger

	mu        sync.Mutex
	cfg       Config
	announced map[netip.Prefix]Route
	since     time.Time // when the current announcement began
	withdrawn struct {
		at     time.Time
		reason string
	}
	withdraws uint64
	changes   map[string]*peerChanges
}

type peerChanges struct {
	lastUp, lastDown time.Time
	lastDownReason   string
	flaps            uint64
	// lastError is the latest reason a session attempt ended, whether or
	// not it was ever established (a refused OPEN, say).
	lastError string
}

// Start runs GoBGP with cfg's identity and sessions. Nothing is announced
// until Announce.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Speaker, error) {
	if log == nil {
		log = slog.Default()
	}
	// GoBGP logs every FSM step at info; ober's own log says what an
	// operator needs (sessions up and down, announce and withdraw).
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelWarn)
	s := &Speaker{
		srv:       server.NewBgpServer(server.LoggerOption(log.With("part", "gobgp"), lvl)),
		log:       log,
		cfg:       cfg,
		announced: map[netip.Prefix]Route{},
		changes:   map[string]*peerChanges{},
	}
	go s.srv.Serve()
	port := cfg.ListenPort
	if port == 0 {
		port = 179
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        cfg.ASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: port,
	}}); err != nil {
		s.srv.Stop()
		return nil, fmt.Errorf("start bgp (asn %d, router id %s, port %d): %w", cfg.ASN, cfg.RouterID, port, err)
	}
	// The node originates; it never takes routes from the routers. The
	// global import policy also sees the node's own paths, so only
	// learnt ones are refused: nothing learnt is stored, and so nothing
	// can be passed from one router to another through the node.
	reject := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}
	if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: "ober-originate-only",
		Statements: []*api.Statement{
			{Name: "no-ibgp-routes", Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_INTERNAL}, Actions: reject},
			{Name: "no-ebgp-routes", Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_EXTERNAL}, Actions: reject},
		},
	}}); err != nil {
		_ = s.Stop(ctx)
		return nil, fmt.Errorf("bgp import policy: %w", err)
	}
	if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies:      []*api.Policy{{Name: "ober-originate-only"}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}}); err != nil {
		_ = s.Stop(ctx)
		return nil, fmt.Errorf("bgp import policy: %w", err)
	}
	if err := s.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.peerEvent}, server.WatchPeer()); err != nil {
		_ = s.Stop(ctx)
		return nil, fmt.Errorf("bgp watch peers: %w", err)
	}
	if err := s.Announce(cfg.Initial); err != nil {
		_ = s.Stop(ctx)
		return nil, err
	}
	for _, p := range cfg.Peers {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p, cfg.Restarting)}); err != nil {
			_ = s.Stop(ctx)
			return nil, fmt.Errorf("bgp peer %s: %w", p.Address, err)
		}
	}
	return s, nil
}

func apiPeer(p Peer, restarting bool) *api.Peer {
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if p.Address.Is6() {
		fam = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(p.HoldTime / time.Second),
			KeepaliveInterval: uint64(p.Keepalive / time.Second),
			ConnectRetry:      uint64(max(p.ConnectRetry/time.Second, 1)),
			// GoBGP waits 30s by default before reconnecting after a
			// reset (a BFD timeout, say); a node whose link came back
			// should be in the routers' tables again sooner.
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{PassiveMode: p.Passive, RemotePort: uint32(p.Port)},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
	}
	if p.GracefulRestart > 0 {
		secs := uint32(p.GracefulRestart / time.Second)
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:     true,
			RestartTime: secs,
			// A restarting speaker waits this long for the routers'
			// End-of-RIB before it sends its routes anyway; the routers
			// hold the stale ones no longer than the restart time.
			DeferralTime:    secs,
			LocalRestarting: restarting,
		}
		ap.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	if p.Multihop > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	if p.BFD != nil {
		us := uint32(p.BFD.Interval / time.Microsecond)
		ap.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: us,
			RequiredMinimumReceive:   us,
			DetectionMultiplier:      uint32(p.BFD.Multiplier),
		}
	}
	return ap
}

func (s *Speaker) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr := ev.Peer.State.NeighborAddress.String()
	st := strings.ToLower(strings.TrimPrefix(ev.Peer.State.SessionState.String(), "BGP_FSM_"))
	s.mu.Lock()
	c := s.changes[addr]
	if c == nil {
		c = &peerChanges{}
		s.changes[addr] = c
	}
	up := st == "established"
	// A session attempt ends in idle; the reason on other transitions
	// is just what moved the state machine on.
	if msg := peerError(ev); msg != "" && st == "idle" {
		c.lastError = msg
	}
	wentDown := false
	switch {
	case up:
		c.lastUp = at
	case !c.lastUp.IsZero() && c.lastUp.After(c.lastDown):
		wentDown = true
		c.lastDown, c.flaps = at, c.flaps+1
		c.lastDownReason = peerError(ev)
	}
	reason := c.lastDownReason
	s.mu.Unlock()
	if up {
		s.log.Info("bgp session up", "peer", addr)
	} else if wentDown {
		s.log.Warn("bgp session down", "peer", addr, "state", st, "reason", reason)
	}
}

func peerError(ev *apiutil.WatchEventMessage_PeerEvent) string {
	if msg := ev.Peer.State.DisconnectMessage; msg != "" {
		return msg
	}
	if r := ev.Peer.State.DisconnectReason; r != api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
		return disconnectReason(r)
	}
	return ""
}

// lastError is the latest reason a session attempt with addr ended.
func (s *Speaker) lastError(addr netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.changes[addr.String()]; c != nil {
		return c.lastError
	}
	return ""
}

// SetPeers changes the sessions to peers: new ones are added, missing
// ones closed (with a Cease), changed ones replaced.
func (s *Speaker) SetPeers(ctx context.Context, peers []Peer) error {
	s.mu.Lock()
	old := slices.Clone(s.cfg.Peers)
	s.mu.Unlock()
	byAddr := func(ps []Peer) map[netip.Addr]Peer {
		m := map[netip.Addr]Peer{}
		for _, p := range ps {
			m[p.Address] = p
		}
		return m
	}
	was, want := byAddr(old), byAddr(peers)
	var errs []error
	for a, p := range was {
		if q, ok := want[a]; !ok || !samePeer(p, q) {
			if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
				errs = append(errs, fmt.Errorf("bgp remove peer %s: %w", a, err))
			}
		}
	}
	for a, p := range want {
		if q, ok := was[a]; !ok || !samePeer(p, q) {
			if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p, false)}); err != nil {
				errs = append(errs, fmt.Errorf("bgp peer %s: %w", a, err))
			}
		}
	}
	s.mu.Lock()
	s.cfg.Peers = slices.Clone(peers)
	s.mu.Unlock()
	return errors.Join(errs...)
}

func samePeer(a, b Peer) bool {
	bfdEq := (a.BFD == nil) == (b.BFD == nil) && (a.BFD == nil || *a.BFD == *b.BFD)
	a.BFD, b.BFD = nil, nil
	return a == b && bfdEq
}

// Announce makes routes the announced set: what is new is sent, what is
// gone is withdrawn, what is unchanged is left alone (no UPDATE).
func (s *Speaker) Announce(routes []Route) error {
	want := map[netip.Prefix]Route{}
	for _, r := range routes {
		want[r.Prefix.Masked()] = r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var add, del []*apiutil.Path
	for p, r := range s.announced {
		if w, ok := want[p]; !ok || !sameRoute(r, w) {
			path, err := toPath(r)
			if err != nil {
				return err
			}
			del = append(del, path)
		}
	}
	for p, r := range want {
		if a, ok := s.announced[p]; !ok || !sameRoute(a, r) {
			path, err := toPath(r)
			if err != nil {
				return err
			}
			add = append(add, path)
		}
	}
	if len(del) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: del}); err != nil {
			return fmt.Errorf("bgp withdraw: %w", err)
		}
	}
	if len(add) > 0 {
		if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add}); err != nil {
			return fmt.Errorf("bgp announce: %w", err)
		}
	}
	if len(s.announced) == 0 && len(want) > 0 {
		s.since = time.Now()
		s.log.Info("bgp announcing", "prefixes", len(want))
	}
	s.announced = want
	return nil
}

// Withdraw takes every route back and records why.
func (s *Speaker) Withdraw(reason string) error {
	s.mu.Lock()
	had := len(s.announced)
	s.mu.Unlock()
	if err := s.Announce(nil); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if had > 0 {
		s.withdrawn.at, s.withdrawn.reason = time.Now(), reason
		s.withdraws++
		s.log.Warn("bgp withdrawn", "prefixes", had, "reason", reason)
	}
	return nil
}

func sameRoute(a, b Route) bool {
	return a.Prefix == b.Prefix && slices.Equal(a.Communities, b.Communities) &&
		slices.Equal(a.LargeCommunities, b.LargeCommunities) &&
		(a.MED == nil) == (b.MED == nil) && (a.MED == nil || *a.MED == *b.MED)
}

func toPath(r Route) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(r.Prefix.Masked())
	if err != nil {
		return nil, fmt.Errorf("bgp route %s: %w", r.Prefix, err)
	}
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	// An unspecified next hop is GoBGP's "next-hop self": it becomes the
	// session's local address towards each router.
	fam := bgppkt.RF_IPv4_UC
	if r.Prefix.Addr().Is4() {
		nh, err := bgppkt.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		fam = bgppkt.RF_IPv6_UC
		mp, err := bgppkt.NewPathAttributeMpReachNLRI(fam, []bgppkt.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, fmt.Errorf("bgp route %s: %w", r.Prefix, err)
		}
		attrs = append(attrs, mp)
	}
	if r.MED != nil {
		attrs = append(attrs, bgppkt.NewPathAttributeMultiExitDisc(*r.MED))
	}
	if len(r.Communities) > 0 {
		attrs = append(attrs, bgppkt.NewPathAttributeCommunities(r.Communities))
	}
	if len(r.LargeCommunities) > 0 {
		var lc []*bgppkt.LargeCommunity
		for _, c := range r.LargeCommunities {
			lc = append(lc, bgppkt.NewLargeCommunity(c.Global, c.Local1, c.Local2))
		}
		attrs = append(attrs, bgppkt.NewPathAttributeLargeCommunities(lc))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}

// StopForRestart ends the speaker for a restart of ober. Sessions that
// negotiated graceful restart close without a NOTIFICATION, so their
// routers keep the node's routes as stale for the restart time while the
// next speaker starts (Config.Restarting); a NOTIFICATION would make them
// flush at once (RFC 4724; BIRD does, and GoBGP does not negotiate the
// RFC 8538 N bit here). The other sessions get a Cease, as in Stop. BFD
// is not stopped: it ends with the process, after the sessions.
func (s *Speaker) StopForRestart(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		done <- s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true})
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("bgp stop for restart: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bgp stop for restart: %w", ctx.Err())
	}
}

// Stop closes every session with a Cease notification (the routers drop
// the node's routes at once) and stops GoBGP. GoBGP can take seconds to
// let go of a session that never came up; Stop gives up when ctx ends.
func (s *Speaker) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.srv.Stop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bgp stop: %w", ctx.Err())
	}
}
