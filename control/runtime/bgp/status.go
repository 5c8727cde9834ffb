package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Status is the speaker's state for `ober status`, /status and metrics.
type Status struct {
	ASN      uint32 `json:"asn"`
	RouterID string `json:"router_id"`
	// Announced are the prefixes the routers are being sent.
	Announced      []string   `json:"announced"`
	AnnouncedSince *time.Time `json:"announced_since,omitempty"`
	// LastWithdraw says when and why the node last took its routes back.
	LastWithdraw       *time.Time   `json:"last_withdraw,omitempty"`
	LastWithdrawReason string       `json:"last_withdraw_reason,omitempty"`
	Withdraws          uint64       `json:"withdraws"`
	Peers              []PeerStatus `json:"peers"`
}

// PeerStatus is one session.
type PeerStatus struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// State is idle, connect, active, opensent, openconfirm or
	// established.
	State string     `json:"state"`
	Since *time.Time `json:"since,omitempty"` // established since
	// BFD is up, down, init or admin_down; empty without BFD.
	BFD string `json:"bfd,omitempty"`
	// Advertised counts the prefixes sent to this peer.
	Advertised uint64 `json:"advertised"`
	Flaps      uint64 `json:"flaps"`
	// LastDown and LastError tell when and why the session last fell.
	LastDown  *time.Time `json:"last_down,omitempty"`
	LastError string     `json:"last_error,omitempty"`
}

// Up reports whether the session is established.
func (p PeerStatus) Up() bool { return p.State == "established" }

// Status reads GoBGP's view of every session.
func (s *Speaker) Status(ctx context.Context) Status {
	s.mu.Lock()
	st := Status{ASN: s.cfg.ASN, RouterID: s.cfg.RouterID.String(), Withdraws: s.withdraws, Announced: []string{}}
	for p := range s.announced {
		st.Announced = append(st.Announced, p.String())
	}
	if len(s.announced) > 0 {
		t := s.since
		st.AnnouncedSince = &t
	}
	if !s.withdrawn.at.IsZero() {
		t := s.withdrawn.at
		st.LastWithdraw, st.LastWithdrawReason = &t, s.withdrawn.reason
	}
	changes := map[string]peerChanges{}
	for a, c := range s.changes {
		changes[a] = *c
	}
	s.mu.Unlock()
	slices.Sort(st.Announced)
	_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		ps := PeerStatus{Address: p.GetConf().GetNeighborAddress(), ASN: p.GetConf().GetPeerAsn()}
		ps.State = sessionState(p.GetState().GetSessionState())
		if up := p.GetTimers().GetState().GetUptime(); ps.Up() && up != nil {
			t := up.AsTime()
			ps.Since = &t
		}
		if p.GetBfd().GetEnabled() {
			ps.BFD = bfdState(p.GetState().GetBfdState().GetSessionState())
		}
		for _, af := range p.GetAfiSafis() {
			ps.Advertised += af.GetState().GetAdvertised()
		}
		if c, ok := changes[ps.Address]; ok {
			ps.Flaps = c.flaps
			if !c.lastDown.IsZero() {
				t := c.lastDown
				ps.LastDown, ps.LastError = &t, c.lastDownReason
			}
		}
		st.Peers = append(st.Peers, ps)
	})
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return compareAddr(a.Address, b.Address) })
	return st
}

func compareAddr(a, b string) int {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return pa.Compare(pb)
}

func sessionState(s api.PeerState_SessionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SESSION_STATE_"))
}

func bfdState(s api.BfdSessionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "BFD_SESSION_STATE_"))
}

func disconnectReason(r api.PeerState_DisconnectReason) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(r.String(), "DISCONNECT_REASON_")), "_", " ")
}

// capabilities names what a peer offered in its OPEN.
func capabilities(caps []*api.Capability) []string {
	native, err := apiutil.UnmarshalCapabilities(caps)
	if err != nil {
		return []string{fmt.Sprintf("(unreadable: %v)", err)}
	}
	var out []string
	for _, c := range native {
		out = append(out, capabilityName(c.Code().String(), c))
	}
	return out
}

func capabilityName(name string, c bgppkt.ParameterCapabilityInterface) string {
	switch v := c.(type) {
	case *bgppkt.CapMultiProtocol:
		return name + " " + v.CapValue.String()
	case *bgppkt.CapFourOctetASNumber:
		return fmt.Sprintf("%s %d", name, v.CapValue)
	}
	return name
}
