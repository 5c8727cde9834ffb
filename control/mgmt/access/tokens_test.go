package access

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	writeSecret = "w0123456789abcdef0123456789abcdef"
	readSecret  = "r0123456789abcdef0123456789abcdef"
)

var tokensText = "# the janitor changes backends; grafana watches\n" +
	"janitor write " + writeSecret + "\n" +
	"\n" +
	"  grafana   read\t" + readSecret + "   \n"

func TestParseTokens(t *testing.T) {
	tok, err := ParseTokens(strings.NewReader(tokensText))
	require.NoError(t, err)
	require.Equal(t, 2, tok.Len())

	got, ok := tok.Lookup(writeSecret)
	require.True(t, ok)
	require.Equal(t, "janitor", got.Name)
	require.Equal(t, ScopeWrite, got.Scope)

	got, ok = tok.Lookup(readSecret)
	require.True(t, ok)
	require.Equal(t, "grafana", got.Name)
	require.Equal(t, ScopeRead, got.Scope)

	for _, wrong := range []string{"", "janitor", writeSecret + "x", writeSecret[:len(writeSecret)-1]} {
		_, ok = tok.Lookup(wrong)
		require.False(t, ok, wrong)
	}
	var none *Tokens
	_, ok = none.Lookup(writeSecret)
	require.False(t, ok)
}

// Each bad line is named, and a secret is never echoed.
func TestParseTokensErrors(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"janitor " + writeSecret + "\n", "line 1: want 3 fields (name scope secret), got 2"},
		{"janitor write " + writeSecret + " extra\n", "line 1: want 3 fields (name scope secret), got 4"},
		{"janitor admin " + writeSecret + "\n", `line 1: scope "admin": must be read or write`},
		{"jan/itor write " + writeSecret + "\n", `line 1: name "jan/itor": letters, digits, ".", "_" and "-" only`},
		{"janitor write short\n", "line 1: the secret of \"janitor\" is 5 characters: at least 32 (`openssl rand -hex 32` makes one)"},
		{"# x\njanitor write " + writeSecret + "\njanitor read " + readSecret + "\n", `line 3: name "janitor": already on line 2`},
		{"janitor write " + writeSecret + "\nother read " + writeSecret + "\n", `line 2: the secret of "other" is the one on line 1: each token needs its own`},
	} {
		_, err := ParseTokens(strings.NewReader(tt.text))
		require.EqualError(t, err, tt.want)
		require.NotContains(t, err.Error(), writeSecret)
	}
}

// A tokens file that others may read, or that another user owns, is
// refused at load with the reason.
func TestLoadTokensRefusesOpenFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(path, []byte(tokensText), 0o600))
	tok, err := LoadTokens(path)
	require.NoError(t, err)
	require.Equal(t, 2, tok.Len())

	require.NoError(t, os.Chmod(path, 0o640))
	_, err = LoadTokens(path)
	require.EqualError(t, err, `tokens file "`+path+`": mode 0640 lets group or others read or change the tokens: chmod 600 it`)

	require.NoError(t, os.Chmod(path, 0o602))
	_, err = LoadTokens(path)
	require.EqualError(t, err, `tokens file "`+path+`": mode 0602 lets group or others read or change the tokens: chmod 600 it`)

	require.NoError(t, os.Chmod(path, 0o600))
	require.NoError(t, os.Chown(path, 65534, 65534))
	_, err = LoadTokens(path)
	require.EqualError(t, err, `tokens file "`+path+`": owned by uid 65534, not by uid 0 that reads it: chown it`)

	_, err = LoadTokens(filepath.Join(dir, "nope"))
	require.EqualError(t, err, `tokens file "`+filepath.Join(dir, "nope")+`": no such file or directory`)
	_, err = LoadTokens(dir)
	require.EqualError(t, err, `tokens file "`+dir+`": not a regular file`)

	bad := filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(bad, []byte("janitor write short\n"), 0o600))
	_, err = LoadTokens(bad)
	require.EqualError(t, err, `tokens file "`+bad+"\": line 1: the secret of \"janitor\" is 5 characters: at least 32 (`openssl rand -hex 32` makes one)")
}
