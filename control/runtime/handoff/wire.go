package handoff

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ober-ingress/ober/loader"
)

// The wire format, one message per UDP datagram:
//
//	magic "OBH2" | kind (1) | 3 zero bytes | sender's IPv4 (4) |
//	epoch (8) | counter (8) | time, Unix ms (8) | body | HMAC-SHA256 (32)
//
// The MAC, under the key the nodes share, covers everything before it.
// epoch is when the sender's process started (Unix ns) and counter
// numbers its messages from 1: together they let a receiver refuse a
// message it has seen (a replay) within a window of the last 64, and
// one from an older process of the sender. The time bounds how old a
// message may be at all (maxSkew), which covers a receiver that has just
// started and knows no epoch yet.
const (
	magic     = "OBH2"
	headerLen = 4 + 4 + 4 + 8 + 8 + 8
	macLen    = sha256.Size
	// maxDatagram keeps a message within one unfragmented packet on any
	// Ethernet path (1500 - IPv4 - UDP, with room to spare).
	maxDatagram = 1400
	// maxSkew is how far a message's time may be from the receiver's
	// clock: the nodes' clocks must agree within it (NTP).
	maxSkew = 30 * time.Second
	// window is how many of a peer's latest messages a receiver tells
	// apart, for datagrams that arrive out of order.
	window = 64
)

// Message kinds.
const (
	kindNotice byte = 1 // a node drains, joins or serves again
	kindAck    byte = 2 // a notice arrived
	kindFlows  byte = 3 // connections the sender owns
	kindHealth byte = 4 // the sender's view of its backends
	kindMove   byte = 5 // an operator moves a VIP to a node (VRRP)
	kindResult byte = 6 // a move was applied, or why not
)

// message is one decoded datagram.
type message struct {
	kind    byte
	node    netip.Addr
	epoch   uint64
	counter uint64
	at      time.Time
	body    []byte
}

// sealer signs what a node sends.
type sealer struct {
	key   []byte
	self  [4]byte
	epoch uint64
}

func (s *sealer) seal(kind byte, counter uint64, now time.Time, body []byte) []byte {
	b := make([]byte, headerLen, headerLen+len(body)+macLen)
	copy(b, magic)
	b[4] = kind
	copy(b[8:12], s.self[:])
	binary.BigEndian.PutUint64(b[12:], s.epoch)
	binary.BigEndian.PutUint64(b[20:], counter)
	binary.BigEndian.PutUint64(b[28:], uint64(now.UnixMilli()))
	b = append(b, body...)
	m := hmac.New(sha256.New, s.key)
	m.Write(b)
	return m.Sum(b)
}

// Why a datagram was refused; each is counted.
var (
	errShort    = errors.New("too short or not an ober handoff message")
	errMAC      = errors.New("authentication failed (another key, or forged)")
	errStale    = errors.New("its time is too far from this node's clock")
	errReplay   = errors.New("seen before, or from an older process of the sender")
	errStranger = errors.New("from an address that is not among the nodes")
	errBody     = errors.New("body malformed")
)

// open checks a datagram's MAC and freshness; the replay window is the
// caller's, checked after.
func open(key, b []byte, now time.Time) (message, error) {
	if len(b) < headerLen+macLen || string(b[:4]) != magic {
		return message{}, errShort
	}
	signed, tag := b[:len(b)-macLen], b[len(b)-macLen:]
	m := hmac.New(sha256.New, key)
	m.Write(signed)
	if !hmac.Equal(m.Sum(nil), tag) {
		return message{}, errMAC
	}
	msg := message{
		kind:    b[4],
		node:    netip.AddrFrom4([4]byte(b[8:12])),
		epoch:   binary.BigEndian.Uint64(b[12:]),
		counter: binary.BigEndian.Uint64(b[20:]),
		at:      time.UnixMilli(int64(binary.BigEndian.Uint64(b[28:]))),
		body:    signed[headerLen:],
	}
	if d := now.Sub(msg.at); d > maxSkew || d < -maxSkew {
		return message{}, errStale
	}
	return msg, nil
}

// replayWindow remembers which of a peer's latest messages arrived.
type replayWindow struct {
	epoch uint64
	top   uint64
	seen  uint64 // bit i: counter top-i arrived
}

// accept reports whether (epoch, counter) is new, and records it.
func (w *replayWindow) accept(epoch, counter uint64) bool {
	switch {
	case epoch < w.epoch:
		return false
	case epoch > w.epoch:
		*w = replayWindow{epoch: epoch, top: counter, seen: 1}
		return true
	case counter > w.top:
		if shift := counter - w.top; shift >= window {
			w.seen = 1
		} else {
			w.seen = w.seen<<shift | 1
		}
		w.top = counter
		return true
	}
	d := w.top - counter
	if d >= window || w.seen&(1<<d) != 0 {
		return false
	}
	w.seen |= 1 << d
	return true
}

// Notice states.
const (
	stateDraining byte = 1
	stateJoining  byte = 2
	stateServing  byte = 3
)

func stateName(s byte) string {
	switch s {
	case stateDraining:
		return "draining"
	case stateJoining:
		return "joining"
	case stateServing:
		return "serving"
	}
	return fmt.Sprintf("state(%d)", s)
}

// notice body: state (1) | until, Unix ms (8) | id (8). The id is what
// the acknowledgement names: a retry is a new message with the same id.
func noticeBody(state byte, until time.Time, id uint64) []byte {
	b := make([]byte, 17)
	b[0] = state
	if !until.IsZero() {
		binary.BigEndian.PutUint64(b[1:], uint64(until.UnixMilli()))
	}
	binary.BigEndian.PutUint64(b[9:], id)
	return b
}

func parseNotice(b []byte) (state byte, until time.Time, id uint64, err error) {
	if len(b) != 17 || b[0] < stateDraining || b[0] > stateServing {
		return 0, time.Time{}, 0, errBody
	}
	if ms := binary.BigEndian.Uint64(b[1:]); ms != 0 {
		until = time.UnixMilli(int64(ms))
	}
	return b[0], until, binary.BigEndian.Uint64(b[9:]), nil
}

func ackBody(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

func parseAck(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, errBody
	}
	return binary.BigEndian.Uint64(b), nil
}

// move body: id (8) | VIP, 16 bytes (IPv4 mapped) | target IPv4 (4), all
// zero for "back to the owner".
func moveBody(id uint64, vip, target netip.Addr) []byte {
	b := binary.BigEndian.AppendUint64(nil, id)
	v := vip.As16()
	b = append(b, v[:]...)
	var t [4]byte
	if target.IsValid() {
		t = target.As4()
	}
	return append(b, t[:]...)
}

func parseMove(b []byte) (id uint64, vip, target netip.Addr, err error) {
	if len(b) != 28 {
		return 0, netip.Addr{}, netip.Addr{}, errBody
	}
	vip = netip.AddrFrom16([16]byte(b[8:24])).Unmap()
	if t := netip.AddrFrom4([4]byte(b[24:28])); !t.IsUnspecified() {
		target = t
	}
	return binary.BigEndian.Uint64(b), vip, target, nil
}

// maxReason bounds a refusal's text in a result.
const maxReason = 512

// result body: id (8) | refusal, empty when applied.
func resultBody(id uint64, refusal string) []byte {
	if len(refusal) > maxReason {
		refusal = strings.ToValidUTF8(refusal[:maxReason], "")
	}
	return append(binary.BigEndian.AppendUint64(nil, id), refusal...)
}

func parseResult(b []byte) (uint64, string, error) {
	if len(b) < 8 || len(b) > 8+maxReason {
		return 0, "", errBody
	}
	return binary.BigEndian.Uint64(b), string(b[8:]), nil
}

// Health flags.
const (
	healthBackendsUp byte = 1 << 0
	healthServing    byte = 1 << 1
)

// flow entries: family 4 or 6 (1) | client address | client port (2) |
// VIP address | VIP port (2).
func flowLen(f loader.Flow) int {
	if f.Client.Addr().Is4() {
		return 1 + 4 + 2 + 4 + 2
	}
	return 1 + 16 + 2 + 16 + 2
}

// flowBodies packs flows into as few bodies as fit in a datagram.
func flowBodies(flows []loader.Flow) [][]byte {
	limit := maxDatagram - headerLen - macLen
	var out [][]byte
	var b []byte
	for _, f := range flows {
		if len(b)+flowLen(f) > limit {
			out = append(out, b)
			b = nil
		}
		fam := byte(6)
		if f.Client.Addr().Is4() {
			fam = 4
		}
		b = append(b, fam)
		b = append(b, f.Client.Addr().AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, f.Client.Port())
		b = append(b, f.VIP.Addr().AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, f.VIP.Port())
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

func parseFlows(b []byte) ([]loader.Flow, error) {
	var out []loader.Flow
	for len(b) > 0 {
		n := 4
		switch b[0] {
		case 4:
		case 6:
			n = 16
		default:
			return nil, errBody
		}
		if len(b) < 1+2*(n+2) {
			return nil, errBody
		}
		addr := func(p []byte) netip.AddrPort {
			a, _ := netip.AddrFromSlice(p[:n])
			return netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[n:]))
		}
		f := loader.Flow{Client: addr(b[1:]), VIP: addr(b[1+n+2:])}
		if f.Client.Addr().Is4() != f.VIP.Addr().Is4() {
			return nil, errBody
		}
		out = append(out, f)
		b = b[1+2*(n+2):]
	}
	return out, nil
}

// NewKeyFile writes a fresh shared key to path, 32 random bytes in hex,
// readable by its owner only; a file already there is left as it is, so
// that every node of a site can be given the same one.
func NewKeyFile(path string) error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return fmt.Errorf("shared key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("shared key: %w", err)
	}
	if _, err := fmt.Fprintf(f, "%s\n", hex.EncodeToString(k[:])); err != nil {
		f.Close()
		return fmt.Errorf("shared key: %w", err)
	}
	return f.Close()
}
