package access

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// Scope is what a caller may do.
type Scope int

const (
	// ScopeNone may do nothing: the zero value, never granted.
	ScopeNone Scope = iota
	// ScopeRead may GET and HEAD: monitoring.
	ScopeRead
	// ScopeWrite may do anything.
	ScopeWrite
)

func (s Scope) String() string {
	switch s {
	case ScopeRead:
		return "read"
	case ScopeWrite:
		return "write"
	}
	return "none"
}

// MinSecretLen is the shortest secret a tokens file may hold: 128 bits
// written in hex.
const MinSecretLen = 32

// maxTokensFile bounds what LoadTokens reads.
const maxTokensFile = 1 << 20

// Token is one line of a tokens file, its secret kept only as a hash.
type Token struct {
	Name  string
	Scope Scope
	hash  [sha256.Size]byte
}

// Tokens are the bearer tokens a listener accepts. The zero value and nil
// accept none.
type Tokens struct {
	list []Token
}

// Len is the number of tokens.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.list)
}

// Lookup finds the token whose secret is secret. Both sides are hashed
// first, so that the comparison takes the same time whatever the lengths,
// and every token is compared, so that the time says nothing of which
// one matched.
func (t *Tokens) Lookup(secret string) (Token, bool) {
	if t == nil {
		return Token{}, false
	}
	h := sha256.Sum256([]byte(secret))
	found := -1
	for i := range t.list {
		if subtle.ConstantTimeCompare(h[:], t.list[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Token{}, false
	}
	return t.list[found], true
}

// ParseTokens reads a tokens file's text:
//
//	# who    scope  secret
//	janitor  write  3f9c...
//	grafana  read   a1b2...
//
// One token a line: a name (letters, digits, ".", "_", "-"), a scope
// (read or write) and the secret (at least MinSecretLen characters, no
// blanks), separated by blanks. Blank lines and lines whose first
// non-blank character is "#" are ignored. Names and secrets are unique.
func ParseTokens(r io.Reader) (*Tokens, error) {
	var (
		t       Tokens
		names   = map[string]int{}
		secrets = map[[sha256.Size]byte]int{}
		errs    []error
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxTokensFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("line %d: "+format, append([]any{n}, args...)...))
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			// The secret is not echoed: it may be one.
			bad("want 3 fields (name scope secret), got %d", len(f))
			continue
		}
		name, scope, secret := f[0], f[1], f[2]
		tok := Token{Name: name}
		switch scope {
		case "read":
			tok.Scope = ScopeRead
		case "write":
			tok.Scope = ScopeWrite
		default:
			bad("scope %q: must be read or write", scope)
			continue
		}
		if !validName(name) {
			bad("name %q: letters, digits, \".\", \"_\" and \"-\" only", name)
			continue
		}
		if prev, ok := names[name]; ok {
			bad("name %q: already on line %d", name, prev)
			continue
		}
		if len(secret) < MinSecretLen {
			bad("the secret of %q is %d characters: at least %d (`openssl rand -hex 32` makes one)", name, len(secret), MinSecretLen)
			continue
		}
		tok.hash = sha256.Sum256([]byte(secret))
		if prev, ok := secrets[tok.hash]; ok {
			bad("the secret of %q is the one on line %d: each token needs its own", name, prev)
			continue
		}
		names[name], secrets[tok.hash] = n, n
		t.list = append(t.list, tok)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &t, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// LoadTokens reads a tokens file. It refuses a file that anyone but its
// owner may read or change, or that another user than the daemon's owns
// (it could put a token of theirs in it), and names the file in every
// error.
func LoadTokens(path string) (*Tokens, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("tokens file %q: %s", path, fmt.Sprintf(format, args...))
	}
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fail("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fail("%v", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fail("not a regular file")
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fail("mode %04o lets group or others read or change the tokens: chmod 600 it", perm)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fail("owned by uid %d, not by uid %d that reads it: chown it", sys.Uid, os.Geteuid())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokensFile+1))
	if err != nil {
		return nil, fail("%v", err)
	}
	if len(data) > maxTokensFile {
		return nil, fail("larger than %d bytes", maxTokensFile)
	}
	t, err := ParseTokens(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("tokens file %q: %w", path, err)
	}
	return t, nil
}
