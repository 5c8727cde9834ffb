package s3server

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readErr(t *testing.T, resp *http.Response) errorXML {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var e errorXML
	require.NoError(t, xml.Unmarshal(b, &e), "body: %s", b)
	return e
}

func lastReq(s *Server) Request {
	r := s.Requests()
	return r[len(r)-1]
}

func mkBucket(t *testing.T, ts *httptest.Server, name string) {
	t.Helper()
	resp := signedReq(t, ts, http.MethodPut, "/"+name, nil, "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestTamperedHost(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")

	req, err := http.NewRequest(http.MethodPut, ts.URL+"/bkt/k", strings.NewReader("hello"))
	require.NoError(t, err)
	newSigner().signHeaders(req, sha([]byte("hello")))
	req.Host = "rewritten.example:8080" // what a misbehaving ingress might do
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	e := readErr(t, resp)
	assert.Equal(t, "SignatureDoesNotMatch", e.Code)
	assert.Contains(t, e.CanonicalRequest, "host:rewritten.example:8080")
	assert.Equal(t, 1, srv.AuthFailures())
	r := lastReq(srv)
	assert.False(t, r.AuthOK)
	assert.Equal(t, "PutObject", r.Op)
	assert.Contains(t, r.AuthError, "SignatureDoesNotMatch")
	_, ok := srv.Object("bkt", "k")
	assert.False(t, ok)
}

func TestTamperedBodySHA256(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	req, err := http.NewRequest(http.MethodPut, ts.URL+"/bkt/k", strings.NewReader("hellO"))
	require.NoError(t, err)
	newSigner().signHeaders(req, sha([]byte("hello")))
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "XAmzContentSHA256Mismatch", readErr(t, resp).Code)
	r := lastReq(srv)
	assert.True(t, r.AuthOK, "headers were authentic")
	assert.Equal(t, modeSHA256, r.PayloadMode)
	assert.Zero(t, srv.AuthFailures())
	_, ok := srv.Object("bkt", "k")
	assert.False(t, ok)

	// The untampered body is accepted.
	resp = signedReq(t, ts, http.MethodPut, "/bkt/k", []byte("hello"), "", nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, `"5d41402abc4b2a76b9719d911017c592"`, resp.Header.Get("ETag"))
}

// onlyReader hides the concrete type so net/http cannot know the length.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestChunkedUnsignedExpectContinue(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	data := randBytes(300_000, 7)

	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.ExpectContinueTimeout = 5 * time.Second
	client := &http.Client{Transport: tr}

	req, err := http.NewRequest(http.MethodPut, ts.URL+"/bkt/streamed", onlyReader{bytes.NewReader(data)})
	require.NoError(t, err)
	req.ContentLength = -1
	req.Header.Set("Expect", "100-continue")
	newSigner().signHeaders(req, payloadUnsigned)
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	r := lastReq(srv)
	assert.True(t, r.AuthOK)
	assert.True(t, r.Chunked, "Transfer-Encoding chunked")
	assert.True(t, r.Expect100)
	assert.False(t, r.AWSChunked)
	assert.Equal(t, payloadUnsigned, r.PayloadMode)
	assert.Equal(t, int64(len(data)), r.BodyBytes)
	assert.Equal(t, sha(data), r.BodySHA256)
	got, ok := srv.Object("bkt", "streamed")
	require.True(t, ok)
	assert.Equal(t, data, got)

	// A request that fails authentication is answered without reading
	// the body (no 100 Continue is sent).
	req, err = http.NewRequest(http.MethodPut, ts.URL+"/bkt/streamed2", onlyReader{bytes.NewReader(data)})
	require.NoError(t, err)
	req.ContentLength = -1
	req.Header.Set("Expect", "100-continue")
	s := newSigner()
	s.sk = "wrong"
	s.signHeaders(req, payloadUnsigned)
	resp, err = client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Zero(t, lastReq(srv).BodyBytes)
}

// sendAWSChunked sends data as an aws-chunked body in the given streaming
// mode; mutate may alter the encoded body before sending.
func sendAWSChunked(t *testing.T, ts *httptest.Server, path, mode string, data []byte, trailers []trailerKV, hdr http.Header, mutate func([]byte) []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, ts.URL+path, nil)
	require.NoError(t, err)
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	req.Header.Set("Content-Encoding", "aws-chunked")
	req.Header.Set("X-Amz-Decoded-Content-Length", fmt.Sprint(len(data)))
	for _, tr := range trailers {
		req.Header.Add("X-Amz-Trailer", tr.name)
	}
	s := newSigner()
	seed := s.signHeaders(req, mode)
	if mode == payloadStreamingUnsignedTrailer {
		seed = ""
	}
	body := s.awsChunked(seed, data, 64<<10, trailers)
	if mutate != nil {
		body = mutate(body)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestSignedAWSChunked(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	data := randBytes(200_000, 11) // 4 chunks: 3 full + 1 partial

	resp := sendAWSChunked(t, ts, "/bkt/ok", payloadStreamingSigned, data, nil, nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got, _ := srv.Object("bkt", "ok")
	assert.Equal(t, data, got)
	r := lastReq(srv)
	assert.True(t, r.AWSChunked)
	assert.Equal(t, payloadStreamingSigned, r.PayloadMode)
	assert.Equal(t, int64(len(data)), r.BodyBytes)

	// Corrupt the second chunk's signature.
	resp = sendAWSChunked(t, ts, "/bkt/badsig", payloadStreamingSigned, data, nil, nil, func(b []byte) []byte {
		i := bytes.Index(b[10:], []byte("chunk-signature=")) + 10
		i = bytes.Index(b[i+1:], []byte("chunk-signature=")) + i + 1 + len("chunk-signature=")
		b[i] ^= 1
		return b
	})
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "SignatureDoesNotMatch", readErr(t, resp).Code)
	assert.Equal(t, 1, srv.AuthFailures())
	assert.False(t, lastReq(srv).AuthOK)
	_, ok := srv.Object("bkt", "badsig")
	assert.False(t, ok)

	// Flip one data byte: the chunk signature no longer matches.
	resp = sendAWSChunked(t, ts, "/bkt/baddata", payloadStreamingSigned, data, nil, nil, func(b []byte) []byte {
		b[len(b)/2] ^= 0x40
		return b
	})
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, 2, srv.AuthFailures())

	// Drop the final chunk: incomplete body.
	resp = sendAWSChunked(t, ts, "/bkt/short", payloadStreamingSigned, data, nil, nil, func(b []byte) []byte {
		return b[:bytes.LastIndex(b, []byte("0;chunk-signature"))]
	})
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "IncompleteBody", readErr(t, resp).Code)

	// Decoded length lies.
	resp = sendAWSChunked(t, ts, "/bkt/len", payloadStreamingSigned, data, nil, http.Header{}, func(b []byte) []byte { return b })
	require.Equal(t, http.StatusOK, resp.StatusCode)
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/bkt/len2", nil)
	req.Header.Set("Content-Encoding", "aws-chunked")
	req.Header.Set("X-Amz-Decoded-Content-Length", fmt.Sprint(len(data)+1))
	s := newSigner()
	body := s.awsChunked(s.signHeaders(req, payloadStreamingSigned), data, 64<<10, nil)
	req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	resp2, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp2.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp2.StatusCode)
	assert.Equal(t, "IncompleteBody", readErr(t, resp2).Code)
}

func crc32b64(b []byte) string {
	var out [4]byte
	v := crc32.ChecksumIEEE(b)
	out[0], out[1], out[2], out[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return base64.StdEncoding.EncodeToString(out[:])
}

func TestUnsignedTrailer(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	data := randBytes(100_000, 12)

	good := []trailerKV{{"x-amz-checksum-crc32", crc32b64(data)}}
	resp := sendAWSChunked(t, ts, "/bkt/ok", payloadStreamingUnsignedTrailer, data, good, nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, crc32b64(data), resp.Header.Get("x-amz-checksum-crc32"))
	r := lastReq(srv)
	assert.Equal(t, payloadStreamingUnsignedTrailer, r.PayloadMode)
	assert.Equal(t, []string{"crc32:verified"}, r.Checksums)

	bad := []trailerKV{{"x-amz-checksum-crc32", crc32b64([]byte("something else"))}}
	resp = sendAWSChunked(t, ts, "/bkt/bad", payloadStreamingUnsignedTrailer, data, bad, nil, nil)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "BadDigest", readErr(t, resp).Code)
	assert.Equal(t, []string{"crc32:mismatch"}, lastReq(srv).Checksums)
	_, ok := srv.Object("bkt", "bad")
	assert.False(t, ok)
	assert.Zero(t, srv.AuthFailures(), "a checksum mismatch is not an auth failure")

	// Announced trailer missing from the body.
	resp = sendAWSChunked(t, ts, "/bkt/missing", payloadStreamingUnsignedTrailer, data, good, nil, func(b []byte) []byte {
		return b[:bytes.LastIndex(b, []byte("x-amz-checksum-crc32:"))]
	})
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "MalformedTrailerError", readErr(t, resp).Code)
}

func TestSignedTrailer(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	data := randBytes(70_000, 13)
	tr := []trailerKV{{"x-amz-checksum-crc32", crc32b64(data)}}

	resp := sendAWSChunked(t, ts, "/bkt/ok", payloadStreamingSignedTrailer, data, tr, nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, []string{"crc32:verified"}, lastReq(srv).Checksums)

	// Replace the trailer value (keeping its signature): the trailer
	// signature no longer verifies.
	resp = sendAWSChunked(t, ts, "/bkt/tampered", payloadStreamingSignedTrailer, data, tr, nil, func(b []byte) []byte {
		return bytes.Replace(b, []byte(crc32b64(data)), []byte(crc32b64(nil)), 1)
	})
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "SignatureDoesNotMatch", readErr(t, resp).Code)
	assert.Equal(t, 1, srv.AuthFailures())
}

func TestPresigned(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	require.Equal(t, http.StatusOK, signedReq(t, ts, http.MethodPut, "/bkt/k", []byte("data"), "", nil).StatusCode)

	get := func(u string) *http.Response {
		resp, err := ts.Client().Get(u)
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := get(newSigner().presign(http.MethodGet, ts.URL+"/bkt/k", 60))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	assert.Equal(t, "data", string(b))
	assert.Equal(t, modePresigned, lastReq(srv).PayloadMode)

	old := newSigner()
	old.t = old.t.Add(-2 * time.Minute)
	resp = get(old.presign(http.MethodGet, ts.URL+"/bkt/k", 60))
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	e := readErr(t, resp)
	assert.Equal(t, "AccessDenied", e.Code)
	assert.Contains(t, e.Message, "expired")

	resp = get(newSigner().presign(http.MethodGet, ts.URL+"/bkt/k", 60) + "&extra=1")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "SignatureDoesNotMatch", readErr(t, resp).Code)
	assert.Equal(t, 2, srv.AuthFailures())
}

func TestAnonymous(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	for _, p := range []string{"/", "/health", "/bkt/k"} {
		resp, err := ts.Client().Get(ts.URL + p)
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, p)
		assert.Equal(t, "AccessDenied", readErr(t, resp).Code)
		resp.Body.Close()
		r := lastReq(srv)
		assert.Equal(t, "Anonymous", r.Op)
		assert.False(t, r.AuthOK)
		assert.Empty(t, r.PayloadMode)
	}
	resp, err := ts.Client().Head(ts.URL + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Zero(t, srv.AuthFailures())
	assert.Equal(t, 4, srv.RequestCount())
}

func TestAuthErrors(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	send := func(s *tsigner, mutate func(*http.Request)) *http.Response {
		req, err := http.NewRequest(http.MethodGet, ts.URL+"/bkt/", nil)
		require.NoError(t, err)
		s.signHeaders(req, emptySHA256)
		if mutate != nil {
			mutate(req)
		}
		resp, err := ts.Client().Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	cases := []struct {
		name   string
		s      func() *tsigner
		mutate func(*http.Request)
		status int
		code   string
	}{
		{"unknown key", func() *tsigner { s := newSigner(); s.ak = "NOPE"; return s }, nil, 403, "InvalidAccessKeyId"},
		{"wrong secret", func() *tsigner { s := newSigner(); s.sk = "x"; return s }, nil, 403, "SignatureDoesNotMatch"},
		{"skew", func() *tsigner { s := newSigner(); s.t = s.t.Add(-20 * time.Minute); return s }, nil, 403, "RequestTimeTooSkewed"},
		{"region", func() *tsigner { s := newSigner(); s.region = "eu-west-1"; return s }, nil, 400, "AuthorizationHeaderMalformed"},
		{"unsigned x-amz header", newSigner, func(r *http.Request) { r.Header.Set("X-Amz-Meta-Injected", "1") }, 403, "AccessDenied"},
		{"query added", newSigner, func(r *http.Request) { r.URL.RawQuery = "list-type=2" }, 403, "SignatureDoesNotMatch"},
		{"path re-encoded", newSigner, func(r *http.Request) { r.URL.RawPath = "/%62kt/" }, 403, "SignatureDoesNotMatch"},
		{"signed header dropped", newSigner, func(r *http.Request) {
			r.Header.Del("X-Amz-Date")
			r.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
		}, 403, "SignatureDoesNotMatch"},
		{"sigv2", newSigner, func(r *http.Request) { r.Header.Set("Authorization", "AWS "+testAK+":c2ln") }, 400, "InvalidRequest"},
		{"no content sha", newSigner, func(r *http.Request) { r.Header.Del("X-Amz-Content-Sha256") }, 400, "InvalidRequest"},
	}
	for i, c := range cases {
		resp := send(c.s(), c.mutate)
		assert.Equal(t, c.status, resp.StatusCode, c.name)
		e := readErr(t, resp)
		assert.Equal(t, c.code, e.Code, c.name+": "+e.Message)
		assert.Equal(t, i+1, srv.AuthFailures(), c.name)
		assert.False(t, lastReq(srv).AuthOK, c.name)
	}
	// The path is used as sent: "/%62kt/" decodes to "/bkt/" but is a
	// different canonical URI.
	for _, r := range srv.Requests() {
		if r.RequestURI == "/%62kt/" {
			assert.Equal(t, "/bkt/", r.Path)
			assert.False(t, r.AuthOK)
		}
	}
}

func TestBodyChecks(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{MaxObjectSize: 1000})
	mkBucket(t, ts, "bkt")
	body := []byte("payload")

	resp := signedReq(t, ts, http.MethodPut, "/bkt/md5", body, payloadUnsigned, http.Header{"Content-Md5": {"1B2M2Y8AsgTpgAmY7PhCfg=="}})
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "BadDigest", readErr(t, resp).Code)
	resp = signedReq(t, ts, http.MethodPut, "/bkt/md5", body, payloadUnsigned, http.Header{"Content-Md5": {"bad"}})
	assert.Equal(t, "InvalidDigest", readErr(t, resp).Code)
	resp = signedReq(t, ts, http.MethodPut, "/bkt/md5", body, payloadUnsigned, http.Header{"Content-Md5": {"MDQyNzQ2ZTJiZjAwNTgxYw=="}})
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)

	resp = signedReq(t, ts, http.MethodPut, "/bkt/crc", body, payloadUnsigned, http.Header{"X-Amz-Checksum-Crc32": {crc32b64([]byte("x"))}})
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "BadDigest", readErr(t, resp).Code)
	resp = signedReq(t, ts, http.MethodPut, "/bkt/crc", body, payloadUnsigned, http.Header{"X-Amz-Checksum-Crc32": {crc32b64(body)}})
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp = signedReq(t, ts, http.MethodPut, "/bkt/xx", body, payloadUnsigned, http.Header{"X-Amz-Checksum-Xxhash64": {"AAAAAAAAAAA="}})
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, []string{"xxhash64:unsupported"}, lastReq(srv).Checksums)

	resp = signedReq(t, ts, http.MethodPut, "/bkt/big", make([]byte, 1001), "", nil)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "EntityTooLarge", readErr(t, resp).Code)
	assert.Zero(t, lastReq(srv).BodyBytes, "rejected on Content-Length before reading")

	// Unknown length: the limit is enforced while reading.
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/bkt/big2", onlyReader{bytes.NewReader(make([]byte, 5000))})
	req.ContentLength = -1
	newSigner().signHeaders(req, payloadUnsigned)
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "EntityTooLarge", readErr(t, resp).Code)

	resp = signedReq(t, ts, http.MethodPut, "/nobucket/k", body, "", nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, "NoSuchBucket", readErr(t, resp).Code)
	resp = signedReq(t, ts, http.MethodGet, "/bkt/nokey", nil, "", nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, "NoSuchKey", readErr(t, resp).Code)
	resp = signedReq(t, ts, http.MethodGet, "/bkt/x?acl", nil, "", nil)
	assert.Equal(t, http.StatusNotImplemented, resp.StatusCode)
}

// TestAWSVectors checks the server against the examples published in the
// S3 SigV4 documentation (fixed clock, 2013-05-24).
func TestAWSVectors(t *testing.T) {
	srv := New(Options{Credentials: map[string]string{"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}})
	srv.now = func() time.Time { return time.Date(2013, 5, 24, 0, 1, 0, 0, time.UTC) }
	srv.buckets["examplebucket"] = &bucket{name: "examplebucket", owner: "AKIAIOSFODNN7EXAMPLE", objects: map[string]*object{}}
	const cred = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"

	serve := func(r *http.Request) Request {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return lastReq(srv)
	}

	// GET Object with Range.
	r := httptest.NewRequest(http.MethodGet, "/test.txt", nil)
	r.Host = "examplebucket.s3.amazonaws.com"
	r.Header.Set("Range", "bytes=0-9")
	r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("Authorization", cred+"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
	rec := serve(r)
	assert.True(t, rec.AuthOK, rec.AuthError)

	// PUT Object: the path contains an encoded '$', the Date header is signed.
	body := "Welcome to Amazon S3."
	r = httptest.NewRequest(http.MethodPut, "http://examplebucket.s3.amazonaws.com/test%24file.text", strings.NewReader(body))
	r.Header.Set("Date", "Fri, 24 May 2013 00:00:00 GMT")
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("X-Amz-Storage-Class", "REDUCED_REDUNDANCY")
	r.Header.Set("X-Amz-Content-Sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
	r.Header.Set("Authorization", cred+"SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
	rec = serve(r)
	assert.True(t, rec.AuthOK, rec.AuthError)

	// GET Bucket (list) with a query string.
	r = httptest.NewRequest(http.MethodGet, "/?max-keys=2&prefix=J", nil)
	r.Host = "examplebucket.s3.amazonaws.com"
	r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("Authorization", cred+"SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
	rec = serve(r)
	assert.True(t, rec.AuthOK, rec.AuthError)

	// Presigned URL.
	r = httptest.NewRequest(http.MethodGet, "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404", nil)
	r.Host = "examplebucket.s3.amazonaws.com"
	rec = serve(r)
	assert.True(t, rec.AuthOK, rec.AuthError)
	assert.Equal(t, modePresigned, rec.PayloadMode)

	// Chunked upload: 65 KiB of 'a' in a 64 KiB and a 1 KiB chunk; the
	// Content-Length of the encoded body is signed.
	chunked := "10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n" + strings.Repeat("a", 65536) + "\r\n" +
		"400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n" + strings.Repeat("a", 1024) + "\r\n" +
		"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
	require.Len(t, chunked, 66824)
	r = httptest.NewRequest(http.MethodPut, "/examplebucket/chunkObject.txt", strings.NewReader(chunked))
	r.Host = "s3.amazonaws.com"
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("X-Amz-Storage-Class", "REDUCED_REDUNDANCY")
	r.Header.Set("X-Amz-Content-Sha256", payloadStreamingSigned)
	r.Header.Set("Content-Encoding", "aws-chunked")
	r.Header.Set("X-Amz-Decoded-Content-Length", "66560")
	r.Header.Set("Content-Length", "66824")
	r.Header.Set("Authorization", cred+"SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
	rec = serve(r)
	assert.True(t, rec.AuthOK, rec.AuthError)
	assert.Equal(t, http.StatusOK, rec.Status)
	got, ok := srv.Object("examplebucket", "chunkObject.txt")
	require.True(t, ok)
	assert.Equal(t, strings.Repeat("a", 66560), string(got))
	assert.Zero(t, srv.AuthFailures())
}
