package wizard

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/addrlist"
	"github.com/ober-ingress/ober/control/lib/certs"
	"github.com/ober-ingress/ober/control/lib/hostlist"
)

// The checks below run on every answer as it is given, so an operator
// hears about a typo at the question and not after the last one. Their
// errors name the offending item (not the whole answer): the caller adds
// the flag or the question.

// splitList cuts an answer at commas and blanks outside brackets, so
// "a, b c" and "rgw[01-03],gw" both work.
func splitList(s string) []string {
	var out []string
	depth, start := 0, 0
	flush := func(end int) {
		if t := strings.TrimSpace(s[start:end]); t != "" {
			out = append(out, t)
		}
	}
	for i, r := range s {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth <= 0 && (r == ',' || unicode.IsSpace(r)):
			flush(i)
			start = i + 1
		}
	}
	flush(len(s))
	return out
}

func checkNodeName(s string) error {
	if !config.ValidName(s) {
		return fmt.Errorf("not a node name (letters, digits, \".\", \"_\" and \"-\" only): %s", s)
	}
	return nil
}

func parseInterfaces(s string) ([]string, error) {
	list := splitList(s)
	if len(list) == 0 {
		return nil, errors.New("at least one interface is required")
	}
	seen := map[string]bool{}
	for _, n := range list {
		if !config.ValidInterfaceName(n) {
			return nil, fmt.Errorf("not an interface name (1-15 characters, no \"/\", \":\" or blanks): %s", n)
		}
		if seen[n] {
			return nil, fmt.Errorf("interface given twice: %s", n)
		}
		seen[n] = true
	}
	return list, nil
}

func checkInterface(s string) error {
	if !config.ValidInterfaceName(s) {
		return fmt.Errorf("not an interface name (1-15 characters, no \"/\", \":\" or blanks): %s", s)
	}
	return nil
}

// interfaceExists reports whether this host has the interface; the
// wizard may run on another machine than the node, so a missing one is a
// warning only.
func interfaceExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("not an IP address: %s", s)
	}
	return a, nil
}

// unicastProblem says why a cannot be a VIP or a node's address.
func unicastProblem(a netip.Addr) string {
	switch {
	case a.Is4In6():
		return "an IPv4-mapped address; write it as " + a.Unmap().String()
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsMulticast():
		return "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	}
	return ""
}

// parseAddrs parses a list of unicast addresses, none twice.
func parseAddrs(s, what string) ([]netip.Addr, error) {
	list := splitList(s)
	if len(list) == 0 {
		return nil, fmt.Errorf("at least one %s is required", what)
	}
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, item := range list {
		a, err := parseIP(item)
		if err != nil {
			return nil, err
		}
		if msg := unicastProblem(a); msg != "" {
			return nil, fmt.Errorf("%s cannot be %s: %s", what, msg, item)
		}
		if seen[a] {
			return nil, fmt.Errorf("%s given twice: %s", what, a)
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, nil
}

func parseVRRPNodes(s string) ([]netip.Addr, error) {
	nodes, err := parseAddrs(s, "node address")
	if err != nil {
		return nil, err
	}
	if len(nodes) > 16 {
		return nil, fmt.Errorf("at most 16 nodes, not %d", len(nodes))
	}
	for _, n := range nodes[1:] {
		if n.Is4() != nodes[0].Is4() {
			return nil, fmt.Errorf("mixes IPv4 and IPv6 (a VRRP instance speaks one family): %s and %s", nodes[0], n)
		}
	}
	return nodes, nil
}

func parseASN(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	switch {
	case err != nil || n == 0 || n == 4294967295:
		return 0, fmt.Errorf("not an AS number (1-4294967294): %s", s)
	case n == 23456:
		return 0, fmt.Errorf("23456 is AS_TRANS (RFC 6793), not a real AS")
	}
	return uint32(n), nil
}

func parseRouterID(s string) (netip.Addr, error) {
	a, err := parseIP(s)
	if err != nil {
		return a, err
	}
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("a router ID must be an IPv4 address: %s", s)
	}
	return a, nil
}

// peer is one BGP router.
type peer struct {
	Addr netip.Addr
	ASN  uint32
}

func (p peer) String() string {
	if p.Addr.Is6() {
		return "[" + p.Addr.String() + "]:" + strconv.FormatUint(uint64(p.ASN), 10)
	}
	return p.Addr.String() + ":" + strconv.FormatUint(uint64(p.ASN), 10)
}

// parsePeer reads ADDR:ASN; the ASN is after the last colon, so IPv6
// works bare or in brackets.
func parsePeer(s string) (peer, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return peer{}, fmt.Errorf("not ADDRESS:ASN (such as 10.0.0.1:65000): %s", s)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s[:i], "["), "]")
	a, err := parseIP(host)
	if err != nil {
		return peer{}, err
	}
	if msg := unicastProblem(a); msg != "" {
		return peer{}, fmt.Errorf("a router cannot be %s: %s", msg, host)
	}
	asn, err := parseASN(s[i+1:])
	if err != nil {
		return peer{}, err
	}
	return peer{Addr: a, ASN: asn}, nil
}

func parsePeers(s string) ([]peer, error) {
	list := splitList(s)
	if len(list) == 0 {
		return nil, errors.New("at least one router is required")
	}
	var out []peer
	seen := map[netip.Addr]bool{}
	for _, item := range list {
		p, err := parsePeer(item)
		if err != nil {
			return nil, err
		}
		if seen[p.Addr] {
			return nil, fmt.Errorf("router given twice: %s", p.Addr)
		}
		seen[p.Addr] = true
		out = append(out, p)
	}
	return out, nil
}

func parseYesNo(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "y", "yes", "true", "on":
		return true, nil
	case "n", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("answer yes or no, not: %s", s)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// parseBackends expands a Slurm hostlist of backends into host:port
// addresses. An item without a port gets port; port 0 means every item
// must carry its own. A bracketed IPv6 address ("[fd00::1]:7480") is an
// address, not a hostlist range.
func parseBackends(s string, port uint16) ([]string, error) {
	items := splitList(s)
	if len(items) == 0 {
		return nil, errors.New("at least one backend is required")
	}
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, item := range items {
		if strings.HasPrefix(item, "[") && strings.Contains(item[:strings.IndexByte(item, ']')+1], ":") {
			host, p, err := net.SplitHostPort(item)
			if err != nil {
				return nil, fmt.Errorf("not [IPv6]:port: %s", item)
			}
			if _, err := parseIP(host); err != nil {
				return nil, err
			}
			if _, err := parsePort(p); err != nil {
				return nil, fmt.Errorf("%v in %s", err, item)
			}
			add(item)
			continue
		}
		if a, err := netip.ParseAddr(item); err == nil && a.Is6() {
			if port == 0 {
				return nil, fmt.Errorf("no port: %s (write [%s]:7480)", item, item)
			}
			add(net.JoinHostPort(item, strconv.Itoa(int(port))))
			continue
		}
		// The hostlist holds names only (it never expands text with a
		// colon): a port goes after the last bracket.
		hosts, p := item, ""
		if i := strings.LastIndexByte(item, ':'); i > strings.LastIndexByte(item, ']') {
			hosts, p = item[:i], item[i+1:]
			if _, err := parsePort(p); err != nil {
				return nil, fmt.Errorf("%v in %s", err, item)
			}
		} else if port == 0 {
			return nil, fmt.Errorf("no port: %s", item)
		} else {
			p = strconv.Itoa(int(port))
		}
		names, err := hostlist.Expand(hosts)
		if err != nil {
			if se, ok := errors.AsType[*hostlist.SyntaxError](err); ok {
				return nil, fmt.Errorf("not a hostlist (offset %d: %s): %s", se.Pos, se.Msg, item)
			}
			return nil, err
		}
		for _, host := range names {
			if _, err := addrlist.ParseHost(host); err != nil {
				return nil, fmt.Errorf("%v: %s", err, host)
			}
			add(net.JoinHostPort(host, p))
		}
	}
	return out, nil
}

// needsPort reports whether some backend in s has no port of its own.
func needsPort(s string) bool {
	_, err := parseBackends(s, 0)
	return err != nil && strings.HasPrefix(err.Error(), "no port: ")
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("not a port (1-65535): %s", s)
	}
	return uint16(n), nil
}

func checkHealthPath(s string) error {
	switch {
	case !strings.HasPrefix(s, "/"):
		return fmt.Errorf("a health-check path starts with \"/\": %s", s)
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return fmt.Errorf("a health-check path has no blanks: %q", s)
	}
	return nil
}

// parseWhitelist checks a whitelist in the syntax of `ober sync` and
// returns its entries; "-" or nothing is the empty list.
func parseWhitelist(s string) ([]string, error) {
	if strings.TrimSpace(s) == "-" {
		return nil, nil
	}
	list := splitList(s)
	for _, e := range list {
		if _, err := addrlist.Parse(e); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// absPath makes a path absolute, as ober.yaml needs it.
func absPath(s string) (string, error) {
	p, err := filepath.Abs(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("%s: %v", s, err)
	}
	return p, nil
}

// checkCert checks what `ober run` will: the file is readable, every
// certificate parses and none has expired. It reports whether the file
// holds a private key too.
func checkCert(path string, now time.Time) (hasKey bool, err error) {
	data, err := readFile(path)
	if err != nil {
		return false, err
	}
	blocks, keys := certs.Split(data)
	if len(blocks) == 0 {
		return false, fmt.Errorf("no PEM certificate in %s", path)
	}
	chain, err := certs.ParseChain(blocks)
	if err != nil {
		return false, fmt.Errorf("%s: %v", path, err)
	}
	for _, c := range chain {
		if now.After(c.NotAfter) {
			return false, fmt.Errorf("certificate %q in %s expired on %s", c.Subject.CommonName, path, c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return len(keys) > 0, nil
}

// checkKey checks that the key file (or the certificate file when
// keyPath is empty) holds one unencrypted private key of the leaf.
func checkKey(certPath, keyPath string) error {
	data, err := readFile(certPath)
	if err != nil {
		return err
	}
	blocks, keys := certs.Split(data)
	if len(blocks) == 0 {
		return fmt.Errorf("no PEM certificate in %s", certPath)
	}
	leaf, err := x509.ParseCertificate(blocks[0].Bytes)
	if err != nil {
		return fmt.Errorf("certificate in %s does not parse: %v", certPath, err)
	}
	from := certPath
	if keyPath != "" {
		kd, err := readFile(keyPath)
		if err != nil {
			return err
		}
		_, keys = certs.Split(kd)
		from = keyPath
	}
	switch {
	case len(keys) == 0:
		return fmt.Errorf("no PEM private key in %s", from)
	case len(keys) > 1:
		return fmt.Errorf("%d private keys in %s; give exactly one", len(keys), from)
	}
	key, err := certs.ParsePrivateKey(keys[0])
	if err != nil {
		return fmt.Errorf("%s: %v", from, err)
	}
	if !certs.KeyMatches(key, leaf) {
		return fmt.Errorf("private key in %s does not match the certificate in %s", from, certPath)
	}
	return nil
}

func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("no such file: %s", path)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("permission denied: %s", path)
	case err != nil:
		return nil, err
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("not a regular file: %s", path)
	case st.Size() > 16<<20:
		return nil, fmt.Errorf("larger than 16 MiB: %s", path)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("permission denied: %s", path)
	}
	return data, err
}
