package s3server

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// This file is a deliberately separate SigV4 implementation used to build
// hand-signed requests; it shares no code with the server.

const (
	testAK     = "AKIDEXAMPLE"
	testSK     = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	testRegion = "us-east-1"
)

type tsigner struct {
	ak, sk, region string
	t              time.Time
}

func newSigner() *tsigner {
	return &tsigner{ak: testAK, sk: testSK, region: testRegion, t: time.Now().UTC()}
}

func (s *tsigner) date() string  { return s.t.Format("20060102T150405Z") }
func (s *tsigner) day() string   { return s.t.Format("20060102") }
func (s *tsigner) scope() string { return s.day() + "/" + s.region + "/s3/aws4_request" }

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

func (s *tsigner) key() []byte {
	k := mac([]byte("AWS4"+s.sk), s.day())
	for _, p := range []string{s.region, "s3", "aws4_request"} {
		k = mac(k, p)
	}
	return k
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// encodeQuery encodes url.Values the SigV4 way: sorted, %20 for spaces.
func encodeQuery(v url.Values) string {
	s := v.Encode() // sorted by key, '+' for space
	s = strings.ReplaceAll(s, "+", "%20")
	return strings.ReplaceAll(s, "%7E", "~")
}

// signHeaders signs every header present in req.Header plus host and sets
// Authorization. It returns the seed signature.
func (s *tsigner) signHeaders(req *http.Request, payload string) string {
	req.Header.Set("X-Amz-Date", s.date())
	req.Header.Set("X-Amz-Content-Sha256", payload)
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	vals := map[string]string{"host": host}
	for k, vv := range req.Header {
		lk := strings.ToLower(k)
		if lk == "authorization" || lk == "user-agent" {
			continue
		}
		parts := make([]string, len(vv))
		for i, v := range vv {
			parts[i] = strings.Join(strings.Fields(v), " ")
		}
		vals[lk] = strings.Join(parts, ",")
	}
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	sort.Strings(names)
	var ch strings.Builder
	for _, n := range names {
		fmt.Fprintf(&ch, "%s:%s\n", n, vals[n])
	}
	signed := strings.Join(names, ";")
	cr := strings.Join([]string{
		req.Method, req.URL.EscapedPath(), encodeQuery(req.URL.Query()), ch.String(), signed, payload,
	}, "\n")
	sts := "AWS4-HMAC-SHA256\n" + s.date() + "\n" + s.scope() + "\n" + sha([]byte(cr))
	sig := hex.EncodeToString(mac(s.key(), sts))
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
		s.ak, s.scope(), signed, sig))
	return sig
}

// presign returns a presigned URL for method and target (host signed only).
func (s *tsigner) presign(method, target string, expires int) string {
	u, _ := url.Parse(target)
	q := u.Query()
	q.Set("X-Amz-Algorithm", "AWS4-HMAC-SHA256")
	q.Set("X-Amz-Credential", s.ak+"/"+s.scope())
	q.Set("X-Amz-Date", s.date())
	q.Set("X-Amz-Expires", fmt.Sprint(expires))
	q.Set("X-Amz-SignedHeaders", "host")
	cr := strings.Join([]string{
		method, u.EscapedPath(), encodeQuery(q), "host:" + u.Host + "\n", "host", "UNSIGNED-PAYLOAD",
	}, "\n")
	sts := "AWS4-HMAC-SHA256\n" + s.date() + "\n" + s.scope() + "\n" + sha([]byte(cr))
	q.Set("X-Amz-Signature", hex.EncodeToString(mac(s.key(), sts)))
	u.RawQuery = encodeQuery(q)
	return u.String()
}

type trailerKV struct{ name, value string }

// awsChunked builds an aws-chunked body. With seed != "" chunks are signed
// (chained from seed); trailers are appended after the final chunk, signed
// when seed != "".
func (s *tsigner) awsChunked(seed string, data []byte, chunk int, trailers []trailerKV) []byte {
	var b bytes.Buffer
	prev := seed
	sigFor := func(d []byte) string {
		sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + s.date() + "\n" + s.scope() + "\n" + prev + "\n" + sha(nil) + "\n" + sha(d)
		prev = hex.EncodeToString(mac(s.key(), sts))
		return prev
	}
	for off := 0; off < len(data); off += chunk {
		d := data[off:min(off+chunk, len(data))]
		if seed != "" {
			fmt.Fprintf(&b, "%x;chunk-signature=%s\r\n", len(d), sigFor(d))
		} else {
			fmt.Fprintf(&b, "%x\r\n", len(d))
		}
		b.Write(d)
		b.WriteString("\r\n")
	}
	if seed != "" {
		fmt.Fprintf(&b, "0;chunk-signature=%s\r\n", sigFor(nil))
	} else {
		b.WriteString("0\r\n")
	}
	if trailers == nil {
		b.WriteString("\r\n")
		return b.Bytes()
	}
	var canon strings.Builder
	for _, t := range trailers {
		fmt.Fprintf(&b, "%s:%s\r\n", t.name, t.value)
		fmt.Fprintf(&canon, "%s:%s\n", t.name, t.value)
	}
	if seed != "" {
		sts := "AWS4-HMAC-SHA256-TRAILER\n" + s.date() + "\n" + s.scope() + "\n" + prev + "\n" + sha([]byte(canon.String()))
		fmt.Fprintf(&b, "x-amz-trailer-signature:%s\r\n", hex.EncodeToString(mac(s.key(), sts)))
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// newTestServer starts srv behind a plain or TLS httptest server.
func newTestServer(t *testing.T, secure bool, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	if opts.Credentials == nil {
		opts.Credentials = map[string]string{testAK: testSK}
	}
	srv := New(opts)
	var ts *httptest.Server
	if secure {
		ts = httptest.NewTLSServer(srv)
	} else {
		ts = httptest.NewServer(srv)
	}
	t.Cleanup(ts.Close)
	return srv, ts
}

// signedReq builds and sends a request signed with payload mode payload
// (a hex sha256 of body when payload == "").
func signedReq(t *testing.T, ts *httptest.Server, method, path string, body []byte, payload string, hdr http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, bytes.NewReader(body))
	require.NoError(t, err)
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	if payload == "" {
		payload = sha(body)
	}
	newSigner().signHeaders(req, payload)
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
