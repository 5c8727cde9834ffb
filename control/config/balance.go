package config

import (
	"fmt"
	"slices"
	"strings"
)

// Balances lists ober's balance methods, in the order SCHEMA.md gives
// them.
var balanceMethods = []string{
	BalanceRoundRobin, BalanceWeighted, BalanceLeastConn, BalanceSource,
	BalanceConsistent, BalanceRandom, BalanceFirst, BalanceLeastBandwidth,
}

// Balances returns ober's balance methods (the Balance* constants).
func Balances() []string { return slices.Clone(balanceMethods) }

// Where an alias comes from.
const (
	AliasFromGORB      = "GORB"      // IPVS schedulers and flags, as GORB names them
	AliasFromGoBetween = "GoBetween" // GoBetween's balance names
)

// BalanceAlias is one name another load balancer uses for a method, and
// the ober method the configuration takes it for.
type BalanceAlias struct {
	// Alias is the name as written in GORB's or GoBetween's
	// configuration.
	Alias string
	// From is AliasFromGORB or AliasFromGoBetween.
	From string
	// Method is the ober method the alias becomes.
	Method string
	// Note says where the method differs from the original; empty when
	// it does what the original does.
	Note string
	// Flag marks an IPVS scheduler flag (GORB's sh-port and the like): a
	// modifier of a method, not a method, so balance does not accept it.
	// Method is the method of the scheduler it modifies; Note says what
	// ober does instead.
	Flag bool
}

// balanceAliases is the table README and SCHEMA.md print. A name may
// appear once only: Load looks aliases up by name.
var balanceAliases = []BalanceAlias{
	{"rr", AliasFromGORB, BalanceRoundRobin, "", false},
	{"wrr", AliasFromGORB, BalanceWeighted, "", false},
	{"lc", AliasFromGORB, BalanceLeastConn, "ober's leastconn counts weights; with equal weights it is lc", false},
	{"wlc", AliasFromGORB, BalanceLeastConn, "", false},
	{"sh", AliasFromGORB, BalanceSource, "", false},
	{"dh", AliasFromGORB, BalanceConsistent, "IPVS hashes the destination address, which at a VIP is one address; ober hashes the client's", false},
	{"sed", AliasFromGORB, BalanceLeastConn, "shortest expected delay ((connections+1)/weight) has no HAProxy equivalent; leastconn by weight is the closest", false},
	{"nq", AliasFromGORB, BalanceLeastConn, "never queue (an idle server first, else sed) has no HAProxy equivalent; leastconn by weight is the closest", false},
	{"lblc", AliasFromGORB, BalanceLeastConn, "IPVS keeps each destination address on one server, and at a VIP there is one destination; ober spreads by least connections", false},
	{"lblcr", AliasFromGORB, BalanceLeastConn, "as lblc", false},
	{"mh", AliasFromGORB, BalanceConsistent, "Maglev hashing in IPVS; ober's consistent hash also moves about 1/N of the clients when a server comes or goes", false},
	{"fo", AliasFromGORB, BalanceFirst, "IPVS sends everything to the available server of highest weight; ober's first takes the servers in their order; priority is ober's way to fail over", false},
	{"ovf", AliasFromGORB, BalanceFirst, "IPVS fills a server up to its weight in connections; ober's first sends every connection to the first usable server", false},
	{"twos", AliasFromGORB, BalanceRandom, "IPVS's two random choices is HAProxy's random(2)", false},
	{"sh-fallback", AliasFromGORB, BalanceSource, "always on: a hash never picks a server that is down", true},
	{"sh-port", AliasFromGORB, BalanceSource, "on a TCP proxy no equivalent, HAProxy hashes the client address only; in the kernel, hash_source_port: true", true},
	{"mh-fallback", AliasFromGORB, BalanceConsistent, "always on: a hash never picks a server that is down", true},
	{"mh-port", AliasFromGORB, BalanceConsistent, "on a TCP proxy, no equivalent; in the kernel, always: consistent hashes the whole flow", true},
	{"weight", AliasFromGoBetween, BalanceWeighted, "", false},
	{"roundrobin", AliasFromGoBetween, BalanceRoundRobin, "", false},
	{"leastconn", AliasFromGoBetween, BalanceLeastConn, "ober's leastconn counts weights; with equal weights it is GoBetween's", false},
	{"iphash", AliasFromGoBetween, BalanceSource, "", false},
	{"iphash1", AliasFromGoBetween, BalanceConsistent, "", false},
	{"leastbandwidth", AliasFromGoBetween, BalanceLeastBandwidth, "", false},
}

// BalanceAliases returns the names GORB (IPVS) and GoBetween give their
// balance methods, each with the ober method the configuration takes it
// for: the mapping table of README and SCHEMA.md.
func BalanceAliases() []BalanceAlias { return slices.Clone(balanceAliases) }

// legacyRoundRobin is what backends.balance: roundrobin has always meant:
// HAProxy's roundrobin, which counts the weights.
const legacyRoundRobin = BalanceWeighted

// canonicalBalance turns a balance name as written into ober's method.
// legacy is for backends.balance, where roundrobin keeps its HAProxy
// meaning. note is empty unless the name was an alias. msg is empty
// unless the name is not usable: then it says why, with a suggestion.
func canonicalBalance(name string, legacy bool) (method, note, msg string) {
	if legacy && name == BalanceRoundRobin {
		return legacyRoundRobin, fmt.Sprintf("%s keeps its meaning here, ober's %s (weights count)", name, legacyRoundRobin), ""
	}
	if slices.Contains(balanceMethods, name) {
		return name, "", ""
	}
	for _, a := range balanceAliases {
		if a.Alias != name {
			continue
		}
		if a.Flag {
			return "", "", fmt.Sprintf("an IPVS scheduler flag, not a method (%s)", a.Note)
		}
		note = fmt.Sprintf("%s is ober's %s", name, a.Method)
		if a.Note != "" {
			note += " (" + a.Note + ")"
		}
		return a.Method, note, ""
	}
	names := slices.Clone(balanceMethods)
	for _, a := range balanceAliases {
		if !a.Flag {
			names = append(names, a.Alias)
		}
	}
	if s := closest(name, names); s != "" {
		return "", "", fmt.Sprintf("unknown balance method; did you mean %q?", s)
	}
	return "", "", "unknown balance method; ober's are " + strings.Join(balanceMethods, ", ") +
		", and GORB's and GoBetween's names are accepted (SCHEMA.md)"
}

// BalanceNotes says, one line per key, what each GORB or GoBetween name in
// the file became, such as `services[2].balance: wlc is ober's leastconn`,
// for the daemon to log. ApplyDefaults records them when it replaces an
// alias by ober's name; a Config built with ober's names has none.
func (c *Config) BalanceNotes() []string { return slices.Clone(c.balanceNotes) }

// applyBalance replaces an alias in *p by ober's method and records the
// note. A value that is not usable stays for Validate to report.
func (c *Config) applyBalance(path string, p *string, legacy bool) {
	if *p == "" {
		return
	}
	m, note, msg := canonicalBalance(*p, legacy)
	if msg != "" {
		return
	}
	*p = m
	if note != "" {
		c.balanceNotes = append(c.balanceNotes, path+": "+note)
	}
}

// closest is the name among names that word most likely misspells, or "".
// Case and dashes for underscores are forgiven.
func closest(word string, names []string) string {
	norm := strings.ToLower(strings.ReplaceAll(word, "-", "_"))
	best, bestDist := "", 3
	for _, n := range names {
		nn := strings.ReplaceAll(n, "-", "_")
		if nn == norm {
			return n
		}
		if len(norm) >= 3 && (strings.HasPrefix(nn, norm) || strings.HasPrefix(norm, nn)) {
			return n
		}
		// A short name is only a misspelling of a close one: "hash" is
		// not "sh".
		if d := editDistance(norm, nn); d < bestDist && d <= max(1, len(nn)/2) {
			best, bestDist = n, d
		}
	}
	return best
}
