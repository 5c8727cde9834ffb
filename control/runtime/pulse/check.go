package pulse

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Kind is what a check does.
type Kind string

// Check kinds.
const (
	// KindTCP passes when a connection is established.
	KindTCP Kind = "tcp"
	// KindHTTP sends one HTTP/1.1 request on a fresh connection and
	// passes on a status within [StatusMin, StatusMax].
	KindHTTP Kind = "http"
	// KindHTTPS is KindHTTP over TLS.
	KindHTTPS Kind = "https"
	// KindProbe connects, writes Send and passes when the answer
	// matches Expect and ExpectRegexp; over UDP when Protocol says so.
	KindProbe Kind = "probe"
	// KindExec runs Command and passes when it exits 0.
	KindExec Kind = "exec"
	// KindNone is always up and sends nothing.
	KindNone Kind = "none"
)

// Protocols of a probe.
const (
	// ProtocolTCP, the default, probes over a TCP connection.
	ProtocolTCP = "tcp"
	// ProtocolUDP sends Send as one datagram and matches the reply
	// datagram: a probe of UDP services such as DNS servers.
	ProtocolUDP = "udp"
)

// Defaults of a Check's zero fields.
const (
	DefaultInterval  = 2 * time.Second
	DefaultTimeout   = time.Second // or the interval, if smaller
	DefaultFall      = 3
	DefaultRise      = 2
	DefaultMethod    = "GET"
	DefaultPath      = "/"
	DefaultStatusMin = 200
	DefaultStatusMax = 399
)

// maxRead bounds what a probe reads and what an exec check's output
// keeps; an HTTP check reads twice as much, for the status line and
// headers only.
const maxRead = 4096

// Check is how a target is checked. Zero fields take the defaults above.
type Check struct {
	Kind Kind
	// Interval is from the start of one check to the start of the next;
	// Timeout bounds one check.
	Interval, Timeout time.Duration
	// Fall consecutive failures turn a target down, Rise consecutive
	// passes turn it up.
	Fall, Rise int
	// Port checks this port instead of the target's.
	Port uint16
	// InitialUp is the verdict of a new target until a Fall or Rise
	// streak decides; false (down) unless set.
	InitialUp bool

	// Method, Path and Host make the HTTP request; Host defaults to the
	// target's address. The status must lie in [StatusMin, StatusMax];
	// a StatusMin alone means that status only.
	Method, Path, Host   string
	StatusMin, StatusMax int
	// TLSVerify verifies an https target's certificate against CAFile's
	// certificates (PEM), else the system's roots, for ServerName
	// (default Host's name, else the target's address; also the SNI).
	TLSVerify  bool
	CAFile     string
	ServerName string

	// Send is written by a probe after connecting. The answer, at most
	// 4 KiB, passes when it starts with Expect and ExpectRegexp matches
	// it (each when set); with neither, connecting and sending pass.
	Send, Expect []byte
	ExpectRegexp *regexp.Regexp
	// Protocol is a probe's transport: ProtocolTCP (also "") or
	// ProtocolUDP. A UDP probe sends Send, which must not be empty, as
	// one datagram from a socket connected to the target; the first
	// reply datagram from the target (its first 4 KiB) is the answer,
	// and with no Expect nor ExpectRegexp any reply passes. An ICMP port
	// unreachable fails the check at once; no reply fails it at Timeout.
	Protocol string

	// Command is an exec check's program and arguments, run in its own
	// process group with OBER_BACKEND_ADDR and OBER_BACKEND_PORT set,
	// no stdin, and as Credential (nil runs it as ober itself: tests
	// only). It is killed with its group at Timeout.
	Command    []string
	Credential *syscall.Credential
}

// Target is one backend as one service's pool sees it.
type Target struct {
	// Key names the target; unique within a Set.
	Key   string
	Addr  netip.AddrPort
	Check Check
}

// port is the port the check connects to.
func (t *Target) port() uint16 {
	if t.Check.Port != 0 {
		return t.Check.Port
	}
	return t.Addr.Port()
}

// dialAddr is the address the check connects to.
func (t *Target) dialAddr() netip.AddrPort {
	return netip.AddrPortFrom(t.Addr.Addr(), t.port())
}

// normalize validates t and returns it with its defaults filled in.
func normalize(t Target) (Target, error) {
	c := &t.Check
	if t.Key == "" {
		return t, errors.New("key is empty")
	}
	switch c.Kind {
	case KindTCP, KindHTTP, KindHTTPS, KindProbe, KindExec, KindNone:
	default:
		return t, fmt.Errorf("kind %q: not one of tcp, http, https, probe, exec, none", c.Kind)
	}
	switch c.Protocol {
	case "", ProtocolTCP:
		// Empty and tcp compare equal in sameTarget.
		c.Protocol = ""
	case ProtocolUDP:
		if c.Kind != KindProbe {
			return t, fmt.Errorf("protocol %q: only a probe check can use it, not kind %q", c.Protocol, c.Kind)
		}
		if len(c.Send) == 0 {
			// Nothing sent, nothing answered: the check could only time out.
			return t, fmt.Errorf("protocol %q: send is empty; a udp probe must send a datagram", c.Protocol)
		}
	default:
		return t, fmt.Errorf("protocol %q: not one of tcp, udp", c.Protocol)
	}
	if c.Interval < 0 {
		return t, fmt.Errorf("interval %s: must be positive", c.Interval)
	}
	if c.Timeout < 0 {
		return t, fmt.Errorf("timeout %s: must be positive", c.Timeout)
	}
	if c.Fall < 0 {
		return t, fmt.Errorf("fall %d: must be at least 1", c.Fall)
	}
	if c.Rise < 0 {
		return t, fmt.Errorf("rise %d: must be at least 1", c.Rise)
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(DefaultTimeout, c.Interval)
	}
	if c.Fall == 0 {
		c.Fall = DefaultFall
	}
	if c.Rise == 0 {
		c.Rise = DefaultRise
	}
	if c.Kind == KindNone {
		return t, nil
	}
	if !t.Addr.Addr().IsValid() {
		return t, fmt.Errorf("address %q: not an IP address", t.Addr.Addr())
	}
	if t.port() == 0 && c.Kind != KindExec {
		return t, errors.New("port 0: neither the target nor the check has a port")
	}
	switch c.Kind {
	case KindHTTP, KindHTTPS:
		if c.Method == "" {
			c.Method = DefaultMethod
		}
		if c.Path == "" {
			c.Path = DefaultPath
		}
		if c.StatusMin == 0 && c.StatusMax == 0 {
			c.StatusMin, c.StatusMax = DefaultStatusMin, DefaultStatusMax
		} else if c.StatusMax == 0 {
			c.StatusMax = c.StatusMin
		}
		if !isToken(c.Method) {
			return t, fmt.Errorf("method %q: not an HTTP method", c.Method)
		}
		if !strings.HasPrefix(c.Path, "/") || strings.ContainsFunc(c.Path, isSpaceOrCtl) {
			return t, fmt.Errorf("path %q: must start with / and hold no space or control character", c.Path)
		}
		if strings.ContainsFunc(c.Host, isSpaceOrCtl) {
			return t, fmt.Errorf("host %q: holds a space or control character", c.Host)
		}
		if c.StatusMin < 100 || c.StatusMax > 599 || c.StatusMin > c.StatusMax {
			return t, fmt.Errorf("status %d-%d: not a range within 100-599", c.StatusMin, c.StatusMax)
		}
	case KindExec:
		if len(c.Command) == 0 || c.Command[0] == "" {
			return t, errors.New("command is empty")
		}
	}
	// Empty and nil compare equal in sameTarget.
	if len(c.Send) == 0 {
		c.Send = nil
	}
	if len(c.Expect) == 0 {
		c.Expect = nil
	}
	return t, nil
}

// sameTarget reports whether a and b (normalized) check the same way.
func sameTarget(a, b Target) bool {
	ra, rb := a.Check.ExpectRegexp, b.Check.ExpectRegexp
	if (ra == nil) != (rb == nil) || (ra != nil && ra.String() != rb.String()) {
		return false
	}
	a.Check.ExpectRegexp, b.Check.ExpectRegexp = nil, nil
	return reflect.DeepEqual(a, b)
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

func isSpaceOrCtl(r rune) bool { return r <= ' ' || r == 0x7f }
