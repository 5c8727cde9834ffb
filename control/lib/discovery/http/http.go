// Package httpsrc finds backends at an HTTP(S) URL that answers with a
// JSON list of them:
//
//	[{"host": "10.0.0.1", "port": 7480, "weight": 10, "priority": 1}]
//
// weight (0-256, 0 out of rotation) and priority (1 best) may be left
// out. The package is named httpsrc, not http, so that it and net/http
// can be used side by side without renaming either.
//
// TLS is always verified, against the system's roots and those of an
// optional CA file; there is no way to turn verification off. A bearer
// token may be read from a file, again on every fetch so that a rotated
// token is picked up, and only from a file no one but its owner (root or
// ober's own user) can read.
package httpsrc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ober-ingress/ober/control/lib/discovery"
)

// DefaultTimeout bounds one Fetch (connecting, the request, and reading
// the body) when the options give none.
const DefaultTimeout = 10 * time.Second

// maxTokenBytes bounds the token file: a JWT is a few KB, anything much
// larger is not a token.
const maxTokenBytes = 64 << 10

// statusBodyBytes is how much of a failed answer's body an error quotes.
const statusBodyBytes = 200

// Options set up a source.
type Options struct {
	// URL is an https or http URL.
	URL string
	// CAFile holds PEM certificates trusted besides the system's roots.
	CAFile string
	// TokenFile holds a bearer token sent as "Authorization: Bearer";
	// its mode must be 0600 or less and its owner root or the caller.
	TokenFile string
	// Timeout bounds one Fetch; default DefaultTimeout.
	Timeout time.Duration
	// Client replaces the client New would make (and CAFile); for
	// tests, with a test server's roots.
	Client *http.Client
}

// Source fetches the list at one URL.
type Source struct {
	url       *url.URL
	tokenFile string
	timeout   time.Duration
	client    *http.Client
}

// New checks opts, reads the CA file and the token file once (so that a
// mistake is seen when the source is set up), and sets up the source.
func New(opts Options) (*Source, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		// Not url.Error's text, which quotes the URL with any
		// password in it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("http discovery url: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("http discovery url %s: scheme %q: want https or http", u.Redacted(), u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("http discovery url %s: no host", u.Redacted())
	}
	s := &Source{url: u, tokenFile: opts.TokenFile, timeout: opts.Timeout}
	switch {
	case s.timeout < 0:
		return nil, fmt.Errorf("http discovery %s: timeout %s: must not be negative", u.Redacted(), s.timeout)
	case s.timeout == 0:
		s.timeout = DefaultTimeout
	}
	if s.tokenFile != "" {
		if u.Scheme != "https" {
			return nil, fmt.Errorf("http discovery %s: token file %s: needs an https:// url, as over http:// the token would cross the network in clear", u.Redacted(), s.tokenFile)
		}
		if _, err := readToken(s.tokenFile); err != nil {
			return nil, fmt.Errorf("http discovery %s: %w", u.Redacted(), err)
		}
	}
	if opts.Client != nil {
		c := *opts.Client
		if c.CheckRedirect == nil {
			c.CheckRedirect = s.checkRedirect
		}
		s.client = &c
		return s, nil
	}
	var roots *x509.CertPool
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("http discovery %s: ca file: %w", u.Redacted(), err)
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http discovery %s: ca file %s: no PEM certificate in it", u.Redacted(), opts.CAFile)
		}
	}
	s.client = &http.Client{
		Transport: &http.Transport{
			// No proxy from the environment: the daemon's
			// environment is not the operator's shell, and the
			// list is fetched from inside the network.
			Proxy:               nil,
			DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: s.checkRedirect,
	}
	return s, nil
}

// checkRedirect follows as net/http does, but never from https to http:
// that would send the request, and what it answers, in clear.
func (s *Source) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refused a redirect from https to %s", req.URL.Redacted())
	}
	return nil
}

// readToken reads the bearer token from path, after checking that no
// one but its owner can read it and that its owner is root or us: a
// token others could read, or plant, is not one to send.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	// Checked on the open file, so that what is read is what was
	// checked.
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 {
		return "", fmt.Errorf("token file %s: mode %04o: want 0600 or less (chmod 600 %s), as a token others can read is no secret", path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := int(st.Uid); uid != 0 && uid != os.Geteuid() {
			return "", fmt.Errorf("token file %s: owned by uid %d: want root or uid %d, the user ober runs as", path, uid, os.Geteuid())
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("token file %s: larger than %d bytes", path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s: empty", path)
	}
	// The token is never quoted in an error: saying where is enough.
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] >= 0x7f {
			return "", fmt.Errorf("token file %s: byte %d is not a visible ASCII character: want the token alone, on one line", path, i)
		}
	}
	return tok, nil
}

// Fetch GETs the URL and reads the list it answers.
func (s *Source) Fetch(ctx context.Context) (discovery.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	where := "GET " + s.url.Redacted()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url.String(), nil)
	if err != nil {
		return discovery.Result{}, fmt.Errorf("%s: %w", where, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ober-discovery")
	if s.tokenFile != "" {
		tok, err := readToken(s.tokenFile)
		if err != nil {
			return discovery.Result{}, fmt.Errorf("%s: %w", where, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// Do's error names the method and URL, the way where does
		// already (with the URL's password, which where leaves out).
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return discovery.Result{}, fmt.Errorf("%s: no answer within %s: %w", where, s.timeout, err)
		}
		return discovery.Result{}, fmt.Errorf("%s: %w", where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// One byte more than is quoted, so that a cut is marked.
		head, _ := io.ReadAll(io.LimitReader(resp.Body, statusBodyBytes+1))
		return discovery.Result{}, fmt.Errorf("%s: status %s, want 200: body %q", where, resp.Status, sanitize(head, statusBodyBytes))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, discovery.MaxBytes+1))
	if err != nil {
		return discovery.Result{}, fmt.Errorf("%s: read the body: %w", where, err)
	}
	if len(body) > discovery.MaxBytes {
		return discovery.Result{}, fmt.Errorf("%s: the body is larger than %d bytes, the most a discovery source may give", where, discovery.MaxBytes)
	}
	res, err := parse(body, resp.Header.Get("Content-Type"))
	if err != nil {
		return discovery.Result{}, fmt.Errorf("%s: %w", where, err)
	}
	return res, nil
}

// entry is one object of the list. Pointers tell a field left out from
// one given as 0.
type entry struct {
	Host     *string `json:"host"`
	Port     *int64  `json:"port"`
	Weight   *int64  `json:"weight"`
	Priority *int64  `json:"priority"`
}

// parse reads the list. A body that is no JSON list is an error saying
// what it looks like; an entry that is no good is a problem naming its
// index (from 0, as in the list) and why.
func parse(body []byte, contentType string) (discovery.Result, error) {
	text := bytes.TrimLeft(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), " \t\r\n")
	if len(text) == 0 || text[0] != '[' {
		return discovery.Result{}, notAList(text, contentType, nil)
	}
	var raw []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(text))
	if err := dec.Decode(&raw); err != nil {
		return discovery.Result{}, notAList(text, contentType, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return discovery.Result{}, fmt.Errorf("the body has more after its JSON list (content type %q)", contentType)
	}
	if len(raw) > discovery.MaxBackends {
		return discovery.Result{}, fmt.Errorf("the list has %d entries, more than %d, the most a discovery source may give", len(raw), discovery.MaxBackends)
	}
	var res discovery.Result
	seen := map[string]int{}
	for i, r := range raw {
		b, err := parseEntry(r)
		if err == nil {
			if j, dup := seen[b.ID()]; dup {
				err = fmt.Errorf("%s is given already by entry %d", b.ID(), j)
			} else {
				seen[b.ID()] = i
			}
		}
		if err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("entry %d %s: %v", i, sanitize(r, 80), err))
			continue
		}
		res.Backends = append(res.Backends, b)
	}
	return res, nil
}

// notAList says what a body that is not a JSON list looks like.
func notAList(text []byte, contentType string, err error) error {
	var looks string
	switch {
	case len(text) == 0:
		return fmt.Errorf("the body is empty (content type %q): want a JSON list of backends", contentType)
	case text[0] == '<':
		looks = "; it looks like HTML or XML"
	case text[0] == '{':
		looks = "; it is a JSON object, not a list"
	}
	if err != nil {
		looks = fmt.Sprintf("; not valid JSON: %v", err)
	}
	return fmt.Errorf("the body is not a JSON list of backends (content type %q, it starts %q)%s", contentType, sanitize(text, 64), looks)
}

func parseEntry(r json.RawMessage) (discovery.Backend, error) {
	if string(r) == "null" {
		return discovery.Backend{}, errors.New("null: want an object")
	}
	var e entry
	dec := json.NewDecoder(bytes.NewReader(r))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field == "" {
				return discovery.Backend{}, fmt.Errorf("a %s: want an object", te.Value)
			}
			want := "an integer"
			if te.Field == "host" {
				want = "a string"
			}
			return discovery.Backend{}, fmt.Errorf("%s: a %s: want %s", te.Field, te.Value, want)
		}
		return discovery.Backend{}, errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	b := discovery.Backend{Weight: -1}
	switch {
	case e.Host == nil || *e.Host == "":
		return b, errors.New("host missing")
	case e.Port == nil:
		return b, errors.New("port missing")
	case *e.Port == 0:
		return b, errors.New("port 0")
	case *e.Port < 0 || *e.Port > 65535:
		return b, fmt.Errorf("port %d: want 1-65535", *e.Port)
	}
	host, err := checkHost(*e.Host)
	if err != nil {
		return b, err
	}
	b.Host, b.Port = host, uint16(*e.Port)
	if e.Weight != nil {
		if *e.Weight < 0 || *e.Weight > discovery.MaxWeight {
			return b, fmt.Errorf("weight %d: want 0-%d", *e.Weight, discovery.MaxWeight)
		}
		b.Weight = int(*e.Weight)
	}
	if e.Priority != nil {
		if *e.Priority < 1 || *e.Priority > 1<<31-1 {
			return b, fmt.Errorf("priority %d: want 1 (best) or more, or leave it out", *e.Priority)
		}
		b.Priority = int(*e.Priority)
	}
	return b, nil
}

// checkHost returns host as an IP address in its canonical form, or as
// a lower-case host name, if it is either.
func checkHost(host string) (string, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", fmt.Errorf("host %q: an address with a zone", host)
		}
		return a.Unmap().String(), nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if len(name) == 0 || len(name) > 253 {
		return "", fmt.Errorf("host %q: not an IP address or host name", host)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		ok := len(l) > 0 && len(l) <= 63 && l[0] != '-' && l[len(l)-1] != '-'
		for i := 0; ok && i < len(l); i++ {
			c := l[i]
			ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		}
		if !ok {
			return "", fmt.Errorf("host %q: not an IP address or host name", host)
		}
	}
	// No top-level domain is all digits: "10.0.0.256" is a bad
	// address, not a name.
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", fmt.Errorf("host %q: not an IP address", host)
	}
	return name, nil
}

// sanitize is up to n bytes of b fit to quote in a log line: invalid
// UTF-8 and control characters are replaced, runs of white space are one
// space, and a cut is marked.
func sanitize(b []byte, n int) string {
	cut := len(b) > n
	if cut {
		b = b[:n]
	}
	var sb strings.Builder
	space := false
	for len(b) > 0 {
		if cut && !utf8.FullRune(b) {
			// A character cut in two by the bound.
			break
		}
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r == utf8.RuneError && size <= 1:
			sb.WriteRune('\uFFFD')
		case unicode.IsSpace(r):
			if !space {
				sb.WriteByte(' ')
			}
			space = true
			continue
		case !unicode.IsPrint(r):
			sb.WriteRune('\uFFFD')
		default:
			sb.WriteRune(r)
		}
		space = false
	}
	if cut {
		sb.WriteString("…")
	}
	return strings.TrimSpace(sb.String())
}
