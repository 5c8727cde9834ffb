package bindtest

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// TTL is the time to live of every record the fixture writes, and the
// zone's negative-caching time: short, so that no resolver or cache in a
// test keeps serving data the test has just changed.
const TTL = 1

// Record is one resource record of the zone: an SRV record (Priority,
// Weight, Port, Target) or an A or AAAA record (Addr). Build it with SRV,
// A or AAAA.
//
// Names (Name and Target) are relative to the zone unless they end in a
// dot, as in a zone file; "@" is the zone itself.
type Record struct {
	Name string
	Type uint16 // dns.TypeSRV, dns.TypeA or dns.TypeAAAA

	Priority, Weight, Port uint16
	Target                 string

	Addr netip.Addr
}

// SRV is an SRV record, e.g. SRV("_s3._tcp", 10, 50, 8080, "rgw1").
func SRV(name string, priority, weight, port uint16, target string) Record {
	return Record{Name: name, Type: dns.TypeSRV, Priority: priority, Weight: weight, Port: port, Target: target}
}

// A is an A record; addr must be an IPv4 address.
func A(name string, addr netip.Addr) Record {
	return Record{Name: name, Type: dns.TypeA, Addr: addr}
}

// AAAA is an AAAA record; addr must be an IPv6 address.
func AAAA(name string, addr netip.Addr) Record {
	return Record{Name: name, Type: dns.TypeAAAA, Addr: addr}
}

// String shows the record as written, for failure messages.
func (r Record) String() string {
	switch r.Type {
	case dns.TypeSRV:
		return fmt.Sprintf("%s SRV %d %d %d %s", r.Name, r.Priority, r.Weight, r.Port, r.Target)
	case dns.TypeA, dns.TypeAAAA:
		return fmt.Sprintf("%s %s %s", r.Name, dns.TypeToString[r.Type], r.Addr)
	}
	return fmt.Sprintf("%s TYPE%d", r.Name, r.Type)
}

// RR is the record as the server holds it in zone (absolute names, TTL),
// so that a test can compare it with an answer (dns.IsDuplicate).
func (r Record) RR(zone string) (dns.RR, error) {
	zone = dns.CanonicalName(zone)
	name, err := absolute(r.Name, zone)
	if err != nil {
		return nil, fmt.Errorf("record %s: name: %w", r, err)
	}
	if !dns.IsSubDomain(zone, name) {
		return nil, fmt.Errorf("record %s: name %s is outside zone %s", r, name, zone)
	}
	hdr := dns.RR_Header{Name: name, Rrtype: r.Type, Class: dns.ClassINET, Ttl: TTL}
	switch r.Type {
	case dns.TypeSRV:
		target, err := absolute(r.Target, zone)
		if err != nil {
			return nil, fmt.Errorf("record %s: target: %w", r, err)
		}
		return &dns.SRV{Hdr: hdr, Priority: r.Priority, Weight: r.Weight, Port: r.Port, Target: target}, nil
	case dns.TypeA:
		if !r.Addr.Is4() {
			return nil, fmt.Errorf("record %s: an A record needs an IPv4 address, not %v", r, r.Addr)
		}
		return &dns.A{Hdr: hdr, A: r.Addr.AsSlice()}, nil
	case dns.TypeAAAA:
		if !r.Addr.Is6() || r.Addr.Is4In6() || r.Addr.Zone() != "" {
			return nil, fmt.Errorf("record %s: an AAAA record needs an IPv6 address without zone, not %v", r, r.Addr)
		}
		return &dns.AAAA{Hdr: hdr, AAAA: r.Addr.AsSlice()}, nil
	}
	return nil, fmt.Errorf("record %s: type %d: only SRV, A and AAAA are supported", r, r.Type)
}

// absolute makes name absolute in zone (which is canonical), the way a
// zone file reads it. Only names that also mean the same in a zone file
// and in nsupdate's input pass: no spaces, quotes or escapes.
func absolute(name, zone string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty name")
	}
	if strings.ContainsAny(name, " \t\r\n\"\\;()$") {
		return "", fmt.Errorf("%q: spaces, quotes, escapes and zone file specials are not allowed", name)
	}
	switch {
	case name == "@":
		name = zone
	case !dns.IsFqdn(name):
		name += "." + zone
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return "", fmt.Errorf("%q is not a domain name", name)
	}
	return dns.CanonicalName(name), nil
}
