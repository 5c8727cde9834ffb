// Package hostlist expands Slurm-style hostlists such as
// "compute[001-100],login[01-02],10.1.0.0/16" into individual names, and
// writes names back as a short hostlist (Collapse).
//
// Expansion is deliberately pure string work: it never touches DNS or the
// network. Turning names into addresses is a separate step (package
// addrlist). Keeping the two apart means a typo in a pattern is reported at
// once with its exact byte offset, before any slow or flaky lookups happen,
// and the expansion itself is deterministic and trivially testable.
//
// Grammar:
//
//	list  = item { "," item }          (commas inside brackets do not split)
//	item  = { text | group }           (whitespace around items is trimmed)
//	group = "[" elem { "," elem } "]"
//	elem  = number | number "-" number
//
// An item with several groups expands to their cartesian product, leftmost
// group varying slowest. When the low bound of a range is written with
// leading zeros ("[001-100]", "[08-10]") every number of that range is
// zero-padded to the low bound's width; "[8-10]" is not padded.
//
// Items that are IP addresses or CIDR prefixes pass through literally. Any
// item containing ':' (IPv6) is never bracket-expanded, because brackets
// are used around IPv6 literals elsewhere and silently expanding them would
// produce addresses nobody asked for.
package hostlist

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
)

// MaxHosts bounds the size of an expansion. A slip such as "n[0-99999999]"
// would otherwise allocate hundreds of millions of strings before anything
// downstream had a chance to complain.
const MaxHosts = 100000

// maxDigits bounds a single number in a bracket group. Ten digits keep every
// value well inside uint64 without overflow checks in the range arithmetic.
const maxDigits = 10

// SyntaxError reports a malformed hostlist. Pos is a byte offset into List
// so that an operator who pasted a long list by hand can find the mistake.
type SyntaxError struct {
	List string // the complete list as given to Expand
	Pos  int    // byte offset into List
	Msg  string // what is wrong at Pos
}

// Error formats the error as `hostlist "compute[01-": offset 7: unclosed "["`.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("hostlist %q: offset %d: %s", e.List, e.Pos, e.Msg)
}

// item is one top-level comma-separated element, already trimmed.
type item struct {
	text string
	pos  int // offset of text[0] in the original list
}

// Expand expands a Slurm-style hostlist into names, in order, duplicates
// removed (first occurrence kept).
func Expand(list string) ([]string, error) {
	items, err := split(list)
	if err != nil {
		return nil, err
	}
	var (
		out   []string
		seen  = make(map[string]struct{})
		total int // counted before de-duplication: it bounds work, not output
	)
	for _, it := range items {
		names, err := expandItem(list, it, MaxHosts-total)
		if err != nil {
			return nil, err
		}
		total += len(names)
		for _, n := range names {
			if _, dup := seen[n]; dup {
				continue
			}
			seen[n] = struct{}{}
			out = append(out, n)
		}
	}
	return out, nil
}

// Split cuts list into its top-level items as written, whitespace around
// them trimmed: "client[01-02], gw" is "client[01-02]" and "gw". It checks
// the brackets as Expand does, not the items.
func Split(list string) ([]string, error) {
	items, err := split(list)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.text
	}
	return out, nil
}

// split cuts list at top-level commas and checks bracket structure in the
// same pass, so that bracket errors are reported at the offending byte
// rather than as a confusing error about some half-item.
func split(list string) ([]item, error) {
	if strings.TrimSpace(list) == "" {
		return nil, &SyntaxError{List: list, Pos: 0, Msg: "empty hostlist"}
	}
	var items []item
	add := func(start, end int) error {
		seg := list[start:end]
		text := strings.TrimLeftFunc(seg, unicode.IsSpace)
		pos := start + len(seg) - len(text)
		text = strings.TrimRightFunc(text, unicode.IsSpace)
		if text == "" {
			return &SyntaxError{List: list, Pos: start, Msg: "empty item"}
		}
		items = append(items, item{text: text, pos: pos})
		return nil
	}
	open := -1 // offset of the currently open '[', -1 when outside a group
	start := 0
	for i := 0; i < len(list); i++ {
		switch list[i] {
		case '[':
			if open >= 0 {
				return nil, &SyntaxError{List: list, Pos: i, Msg: `nested "[" inside bracket group`}
			}
			open = i
		case ']':
			if open < 0 {
				return nil, &SyntaxError{List: list, Pos: i, Msg: `unmatched "]"`}
			}
			open = -1
		case ',':
			if open < 0 {
				if err := add(start, i); err != nil {
					return nil, err
				}
				start = i + 1
			}
		}
	}
	if open >= 0 {
		return nil, &SyntaxError{List: list, Pos: open, Msg: `unclosed "["`}
	}
	if err := add(start, len(list)); err != nil {
		return nil, err
	}
	return items, nil
}

// segment is either literal text or the expanded values of one group.
type segment struct {
	text   string
	values []string // nil for literal text
}

// expandItem expands one item, refusing to produce more than budget names.
func expandItem(list string, it item, budget int) ([]string, error) {
	errAt := func(off int, format string, args ...any) error {
		return &SyntaxError{List: list, Pos: it.pos + off, Msg: fmt.Sprintf(format, args...)}
	}
	limitErr := func() error {
		return errAt(0, "item %q expands to more than %d hosts", it.text, MaxHosts)
	}

	// Internal whitespace is almost always a forgotten comma; catching it
	// here gives an offset instead of a baffling "invalid host name" later.
	for i, r := range it.text {
		if unicode.IsSpace(r) {
			return nil, errAt(i, "whitespace inside item %q (separate items with \",\")", it.text)
		}
	}
	if strings.Contains(it.text, ":") {
		if i := strings.IndexAny(it.text, "[]"); i >= 0 {
			return nil, errAt(i, "brackets in %q: text containing \":\" (IPv6) is never range-expanded", it.text)
		}
		return oneName(it.text, budget, limitErr)
	}
	if _, err := netip.ParseAddr(it.text); err == nil {
		return oneName(it.text, budget, limitErr)
	}
	if _, err := netip.ParsePrefix(it.text); err == nil {
		return oneName(it.text, budget, limitErr)
	}

	var segs []segment
	count := 1
	for off := 0; off < len(it.text); {
		open := strings.IndexByte(it.text[off:], '[')
		if open < 0 {
			segs = append(segs, segment{text: it.text[off:]})
			break
		}
		open += off
		if open > off {
			segs = append(segs, segment{text: it.text[off:open]})
		}
		// split guarantees every '[' has a matching ']' with no '[' between.
		end := open + strings.IndexByte(it.text[open:], ']')
		values, err := expandGroup(it.text[open+1:end], open+1, budget, errAt, limitErr)
		if err != nil {
			return nil, err
		}
		count *= len(values) // both factors <= MaxHosts, so no overflow
		if count > budget {
			return nil, limitErr()
		}
		segs = append(segs, segment{values: values})
		off = end + 1
	}
	if count > budget { // an item without groups still costs one name
		return nil, limitErr()
	}

	names := make([]string, 1, count)
	for _, s := range segs {
		if s.values == nil {
			for i := range names {
				names[i] += s.text
			}
			continue
		}
		next := make([]string, 0, len(names)*len(s.values))
		for _, prefix := range names {
			for _, v := range s.values {
				next = append(next, prefix+v)
			}
		}
		names = next
	}
	return names, nil
}

func oneName(text string, budget int, limitErr func() error) ([]string, error) {
	if budget < 1 {
		return nil, limitErr()
	}
	return []string{text}, nil
}

// expandGroup expands the inside of one bracket group. base is the offset
// of body within the item, used for error positions.
func expandGroup(body string, base, budget int, errAt func(int, string, ...any) error, limitErr func() error) ([]string, error) {
	if body == "" {
		return nil, errAt(base-1, `empty bracket group "[]"`)
	}
	var values []string
	off := 0
	for _, elem := range strings.Split(body, ",") {
		pos := base + off
		off += len(elem) + 1
		if elem == "" {
			return nil, errAt(pos, "empty element in bracket group [%s]", body)
		}
		loText, hiText, isRange := strings.Cut(elem, "-")
		lo, err := parseNumber(loText, pos, errAt)
		if err != nil {
			return nil, err
		}
		if !isRange {
			// A single number keeps exactly the digits written.
			values = append(values, loText)
			if len(values) > budget {
				return nil, limitErr()
			}
			continue
		}
		hi, err := parseNumber(hiText, pos+len(loText)+1, errAt)
		if err != nil {
			return nil, err
		}
		if hi < lo {
			return nil, errAt(pos, "descending range %q", elem)
		}
		// Check before materialising: hi-lo can be ~1e10.
		if hi-lo+1 > uint64(budget-len(values)) {
			return nil, limitErr()
		}
		// Padding to the low bound's width only changes anything when that
		// bound has leading zeros: every n >= lo has at least as many
		// digits as lo written without them. So "[08-10]" pads, "[8-10]"
		// does not, with no special case.
		for n := lo; n <= hi; n++ {
			values = append(values, pad(strconv.FormatUint(n, 10), len(loText)))
		}
	}
	return values, nil
}

func parseNumber(s string, pos int, errAt func(int, string, ...any) error) (uint64, error) {
	if s == "" {
		return 0, errAt(pos, "missing number in range")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errAt(pos, "invalid number %q (want decimal digits)", s)
		}
	}
	if len(s) > maxDigits {
		return 0, errAt(pos, "number %q too large (more than %d digits)", s, maxDigits)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil { // unreachable after the checks above; kept for safety
		return 0, errAt(pos, "invalid number %q: %v", s, err)
	}
	return n, nil
}

func pad(digits string, width int) string {
	if len(digits) >= width {
		return digits
	}
	return strings.Repeat("0", width-len(digits)) + digits
}
