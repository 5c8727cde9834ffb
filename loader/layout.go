package loader

import (
	"fmt"
	"net/netip"
)

// Limits and flags mirrored from bpf/ober.h. TestLayoutMatchesBPF checks
// the sizes against the compiled object; the fixture tests check meaning.
const (
	MaxInstances        = 64
	MaxListeners        = 4096  // listener IDs are 0..MaxListeners-1
	MaxServiceEntries   = 65536 // VIPs plus (VIP, proto, port) rows; a port range takes one per port
	MaxWhitelists       = 8
	MaxWhitelistEntries = 1 << 20
	// MaxAccessLists bounds the access list ids: 1..MaxAccessLists-1
	// (0 is "no list").
	MaxAccessLists = 4096
	// MaxAccessEntries is the most prefixes one compiled access list holds.
	MaxAccessEntries  = 65536
	MaglevMaxSize     = 16777213
	MaglevDefaultSize = 65537
	// MaxNodes is how many nodes a drain-handoff cluster may have.
	MaxNodes = 16
	// NoInstance in a Maglev slot means no live instance serves the flow.
	NoInstance uint32 = 0xffffffff

	// MaxOwnedFlows is how many other nodes' flows the dataplane holds
	// during a transition (OBER_MAX_OWNED_FLOWS).
	MaxOwnedFlows = 1 << 20

	// lowListeners have their sockets in ober_sockets, the sockmap of the
	// releases that had no more listeners; the others in ober_sockets_hi
	// (OBER_LOW_LISTENERS).
	lowListeners = 256

	maglevHeader = 2 // slot 0: M, slot 1: seed
	maxVLANs     = 2
	maxVLANPeek  = 8
	maxExtHdrs   = 6
	numActions   = 5
	reasonSlots  = 16 // counter rows kept for reasons (OBER_R_SLOTS)

	cfgSteer       = 0x1
	cfgHandoff     = 0x2
	svcWhitelist   = 0x1
	accessAllow    = 1 // OBER_ACCESS_ALLOW; OBER_ACCESS_DENY is 0
	svcReject      = 0x2
	svcDispatch    = 0x4
	vipHost        = 0x100
	instHasCPU     = 0x1
	assignNoSocket = MaxInstances
)

// Reason says why the XDP program gave a packet its verdict.
type Reason uint32

// The reasons, as in enum ober_reason.
const (
	ReasonNotVIP Reason = iota
	ReasonPass
	ReasonSteered
	ReasonNoService
	ReasonWhitelistDrop
	ReasonWhitelistReject
	ReasonFragment
	ReasonMalformed
	// ReasonHandoffForwarded: an orphaned segment went to the node that
	// owns its flow (XDP_TX or a redirect).
	ReasonHandoffForwarded
	// ReasonHandoffReceived: a node sent it here; decapsulated, delivered.
	ReasonHandoffReceived
	// ReasonHandoffNoTarget: an orphan whose recorded owner is this node
	// (its connection is gone) passes to the kernel, which answers it
	// with RST.
	ReasonHandoffNoTarget
	// ReasonHandoffNoRoute: an orphan whose owner the FIB cannot reach
	// (no route, no neighbour entry) passes to the kernel.
	ReasonHandoffNoRoute
	// ReasonHandoffTooBig: an orphan that would exceed the route's MTU
	// once encapsulated passes to the kernel.
	ReasonHandoffTooBig
	// ReasonHandoffUnknown: an orphan of a flow no node recorded is
	// dropped; if its owner records it late, the client's retransmission
	// finds it.
	ReasonHandoffUnknown
	// ReasonHandoffLimited: an orphan over the forwarding rate is dropped.
	ReasonHandoffLimited
	// ReasonAccessDenied: the service's access list denies the source
	// (or names a list that was never set). Dropped, or answered with a
	// RST (ActionTX) on a service with Reject.
	ReasonAccessDenied
	numReasons
)

var reasonNames = [numReasons]string{
	"not_vip", "passed", "steered", "no_service", "whitelist_drop",
	"whitelist_reject", "fragment", "malformed",
	"handoff_forwarded", "handoff_received", "handoff_no_target", "handoff_no_route", "handoff_too_big",
	"handoff_unknown", "handoff_limited", "access_denied",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint32(r))
}

// Reasons lists every reason, in counter order.
func Reasons() []Reason {
	rs := make([]Reason, numReasons)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}

// Action is an XDP program's return code.
type Action uint32

// The XDP actions.
const (
	ActionAborted Action = iota
	ActionDrop
	ActionPass
	ActionTX
	ActionRedirect
)

var actionNames = [numActions]string{"aborted", "drop", "pass", "tx", "redirect"}

func (a Action) String() string {
	if a < numActions {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint32(a))
}

// WhitelistID selects one of the source whitelists.
type WhitelistID uint8

// The whitelists ober knows by name.
const (
	// WhitelistFrontendHTTP holds the clients allowed on plain-HTTP services.
	WhitelistFrontendHTTP WhitelistID = 0
	// WhitelistRouters holds the routers allowed to speak BGP and BFD.
	WhitelistRouters WhitelistID = 1
	// WhitelistBackendHTTP holds the backends allowed on plain HTTP.
	WhitelistBackendHTTP WhitelistID = 2
)

var whitelistNames = map[WhitelistID]string{
	WhitelistFrontendHTTP: "frontend-http",
	WhitelistRouters:      "routers",
	WhitelistBackendHTTP:  "backend-http",
}

func (w WhitelistID) String() string {
	if n, ok := whitelistNames[w]; ok {
		return n
	}
	return fmt.Sprintf("whitelist-%d", uint8(w))
}

// ParseWhitelistID accepts a whitelist's name or number.
func ParseWhitelistID(s string) (WhitelistID, error) {
	for id, n := range whitelistNames {
		if n == s {
			return id, nil
		}
	}
	var n uint8
	if _, err := fmt.Sscanf(s, "whitelist-%d", &n); err == nil && n < MaxWhitelists {
		return WhitelistID(n), nil
	}
	return 0, fmt.Errorf("unknown whitelist %q (want frontend-http, routers or backend-http)", s)
}

// svcKey mirrors struct ober_svc_key.
type svcKey struct {
	Addr  [16]byte
	Port  [2]byte // network order
	Proto uint8
	_     uint8
}

// svcVal mirrors struct ober_svc_val.
type svcVal struct {
	Listener  uint32
	Flags     uint16
	Whitelist uint8
	_         uint8
	Access    uint32
	_         uint32
}

// earlierSvcVal is struct ober_svc_val as the earlier layout's
// ober_services held it, before access lists.
type earlierSvcVal struct {
	Listener  uint32
	Flags     uint16
	Whitelist uint8
	_         uint8
}

// Sizes of the earlier table's rows, which a migration checks.
const (
	svcKeySize        = 20
	earlierSvcValSize = 8
)

// handoffVal mirrors struct ober_handoff. Addresses are IPv4 as on the
// wire; the zero address is none.
type handoffVal struct {
	Self       [4]byte
	NNodes     uint8
	_          [3]uint8
	Nodes      [MaxNodes][4]byte
	IntervalNS uint64
	BurstNS    uint64
}

// flowKey mirrors struct ober_flow: a client's segment's flow, addresses
// IPv4-mapped for IPv4, ports in network order.
type flowKey struct {
	Saddr [16]byte
	Daddr [16]byte
	Sport [2]byte
	Dport [2]byte
}

// lpmKey mirrors struct ober_lpm_key.
type lpmKey struct {
	Prefixlen uint32 // includes the family byte's 8 bits
	Family    uint8
	Addr      [16]byte
	_         [3]byte
}

func addr16(a netip.Addr) [16]byte {
	return a.As16() // IPv4 becomes IPv4-mapped, as ober.h stores it
}

func makeSvcKey(a netip.Addr, proto uint8, port uint16) svcKey {
	return svcKey{Addr: addr16(a), Port: [2]byte{byte(port >> 8), byte(port)}, Proto: proto}
}

func (k svcKey) addr() netip.Addr { return netip.AddrFrom16(k.Addr).Unmap() }
func (k svcKey) port() uint16     { return uint16(k.Port[0])<<8 | uint16(k.Port[1]) }

func makeLPMKey(p netip.Prefix) lpmKey {
	p = p.Masked()
	k := lpmKey{Prefixlen: uint32(8 + p.Bits()), Family: 6}
	if p.Addr().Is4() {
		k.Family = 4
		a := p.Addr().As4()
		copy(k.Addr[:], a[:])
	} else {
		k.Addr = p.Addr().As16()
	}
	return k
}

func (k lpmKey) prefix() netip.Prefix {
	bits := int(k.Prefixlen) - 8
	if k.Family == 4 {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(k.Addr[:4])), bits)
	}
	return netip.PrefixFrom(netip.AddrFrom16(k.Addr), bits)
}
