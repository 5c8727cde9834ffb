package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/signer"
	"github.com/stretchr/testify/require"

	"github.com/ober-ingress/ober/lab"
	"github.com/ober-ingress/ober/lab/netsite"
)

// The payload signatures, as a request's X-Amz-Content-Sha256 names them
// (any other value is the payload's own SHA-256 in hex: a signed payload).
const (
	sigStreaming        = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	sigStreamingTrailer = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	sigUnsignedTrailer  = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	sigUnsigned         = "UNSIGNED-PAYLOAD"
	sigSigned           = "signed payload (hex SHA-256)"
)

// The Debian packages' clients, by absolute path: a newer aws-cli
// elsewhere on PATH (pyenv) has other defaults.
const (
	debianAWS   = "/usr/bin/aws"
	debianS3cmd = "/usr/bin/s3cmd"
)

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// testS3Clients runs one case per S3 client path against the lab in dir,
// in a fresh bucket it removes at the end:
//
//   - streaming SigV4 (aws-chunked) from minio-go over plain HTTP, and
//     what RGW 16 does with checksum trailers;
//   - signed payloads from s3cmd over HTTPS;
//   - aws-cli (Debian's) with its default settings;
//   - HTTP/2 from Go's net/http with UNSIGNED-PAYLOAD;
//   - presigned URLs with curl, tampered and expired ones refused;
//   - one multipart upload whose parts land on several nodes and
//     instances (a new connection per part).
//
// Every case names the payload signature it saw on the wire.
func testS3Clients(ctx context.Context, t *testing.T, dir string) {
	s := newS3Site(t, dir)
	defer s.close(t)

	t.Run("streaming-sigv4", func(t *testing.T) { s.streaming(ctx, t) })
	t.Run("streaming-trailer", func(t *testing.T) { s.trailer(ctx, t) })
	t.Run("s3cmd-signed-payload", func(t *testing.T) { s.s3cmd(ctx, t) })
	t.Run("awscli-defaults", func(t *testing.T) { s.awscli(ctx, t) })
	t.Run("http2-unsigned-payload", func(t *testing.T) { s.http2(ctx, t) })
	t.Run("presigned-curl", func(t *testing.T) { s.presigned(ctx, t) })
	t.Run("multipart-spread", func(t *testing.T) { s.multipartSpread(ctx, t) })
}

// s3Site is a lab seen from its client namespace.
type s3Site struct {
	st     *lab.State
	d      *netsite.Dialer
	pool   *x509.CertPool
	bucket string
	https  *url.URL // https://10.99.0.100
	plain  *url.URL // http://10.99.0.100, the client namespace only
	tmp    string
}

func newS3Site(t *testing.T, dir string) *s3Site {
	t.Helper()
	st, err := lab.Load(dir)
	require.NoError(t, err)
	require.True(t, st.Ready, "the lab in %s is not ready", dir)
	require.NotEmpty(t, st.Endpoints)
	require.NotEmpty(t, st.PlainEndpoints, "the lab has no plain-HTTP endpoint")
	s := &s3Site{st: st, tmp: t.TempDir()}
	s.https, err = url.Parse(st.Endpoints[0])
	require.NoError(t, err)
	s.plain, err = url.Parse(st.PlainEndpoints[0])
	require.NoError(t, err)
	pem, err := os.ReadFile(st.CA)
	require.NoError(t, err)
	s.pool = x509.NewCertPool()
	require.True(t, s.pool.AppendCertsFromPEM(pem), "no certificate in %s", st.CA)
	s.d, err = netsite.NewDialer(&netsite.NS{Name: st.Client}, 8)
	require.NoError(t, err)
	ok := false
	defer func() {
		if !ok {
			s.d.Close()
		}
	}()

	s.bucket = "s3clients-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := s.transport(true)
	defer tr.CloseIdleConnections()
	c := s.client(t, s.https, tr, false)
	require.NoError(t, c.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: "us-east-1"}), "make bucket %s", s.bucket)
	t.Logf("bucket %s through %s, from namespace %s", s.bucket, s.https, st.Client)
	ok = true
	return s
}

// close removes the bucket with what is left in it (objects, unfinished
// multipart uploads) and ends the dialer.
func (s *s3Site) close(t *testing.T) {
	defer s.d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := s.transport(true)
	defer tr.CloseIdleConnections()
	c := s.client(t, s.https, tr, false)
	for u := range c.ListIncompleteUploads(ctx, s.bucket, "", true) {
		if u.Err != nil {
			t.Errorf("list the unfinished uploads of %s: %v", s.bucket, u.Err)
			break
		}
		if err := c.RemoveIncompleteUpload(ctx, s.bucket, u.Key); err != nil {
			t.Errorf("abort the upload of %s: %v", u.Key, err)
		}
	}
	n := 0
	for o := range c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Errorf("list %s: %v", s.bucket, o.Err)
			break
		}
		if err := c.RemoveObject(ctx, s.bucket, o.Key, minio.RemoveObjectOptions{}); err != nil {
			t.Errorf("remove %s: %v", o.Key, err)
		}
		n++
	}
	if err := c.RemoveBucket(ctx, s.bucket); err != nil {
		t.Errorf("remove bucket %s: %v", s.bucket, err)
		return
	}
	t.Logf("bucket %s removed with its %d objects", s.bucket, n)
}

// transport dials from the client namespace and trusts the lab's CA;
// HTTP/1.1 only.
func (s *s3Site) transport(keepAlive bool) *http.Transport {
	return &http.Transport{
		DialContext:         s.d.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: s.pool, NextProtos: []string{"http/1.1"}},
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: 16,
	}
}

// client is a minio-go client of the endpoint through rt, path-style,
// each request tried once (a failure through ober is not retried away).
func (s *s3Site) client(t *testing.T, endpoint *url.URL, rt http.RoundTripper, trailing bool) *minio.Client {
	t.Helper()
	c, err := minio.New(endpoint.Host, &minio.Options{
		Creds:           credentials.NewStaticV4(s.st.AccessKey, s.st.SecretKey, ""),
		Secure:          endpoint.Scheme == "https",
		Transport:       rt,
		Region:          "us-east-1",
		BucketLookup:    minio.BucketLookupPath,
		TrailingHeaders: trailing,
		MaxRetries:      1,
	})
	require.NoError(t, err)
	return c
}

// exchange is one request as it went on the wire and its answer.
type exchange struct {
	method, target string // target: path?query
	sha256         string // X-Amz-Content-Sha256
	encoding       string // Content-Encoding
	trailer        string // X-Amz-Trailer
	length         int64
	status         int
	proto          string
	servedBy       string // X-Served-By: <node>/<instance>
}

// query is a parameter of the request's query.
func (e exchange) query(key string) string {
	u, err := url.Parse(e.target)
	if err != nil {
		return ""
	}
	return u.Query().Get(key)
}

// payloadSig names the payload signature of the request.
func (e exchange) payloadSig() string {
	if hexSHA256.MatchString(e.sha256) {
		return sigSigned
	}
	return e.sha256
}

// wire records every request a client sends through it, as signed.
// With chunked, bodies go without a length (Transfer-Encoding: chunked),
// as AWS's SDKs send checksum trailers since 2025.
type wire struct {
	next    http.RoundTripper
	chunked bool
	mu      sync.Mutex
	log     []exchange
}

func (w *wire) RoundTrip(req *http.Request) (*http.Response, error) {
	if w.chunked && req.ContentLength > 0 {
		req = req.Clone(req.Context())
		req.ContentLength = -1
	}
	e := exchange{
		method: req.Method, target: req.URL.RequestURI(),
		sha256:   req.Header.Get("X-Amz-Content-Sha256"),
		encoding: req.Header.Get("Content-Encoding"),
		trailer:  req.Header.Get("X-Amz-Trailer"),
		length:   req.ContentLength,
	}
	resp, err := w.next.RoundTrip(req)
	if resp != nil {
		e.status, e.proto, e.servedBy = resp.StatusCode, resp.Proto, resp.Header.Get("X-Served-By")
	}
	w.mu.Lock()
	w.log = append(w.log, e)
	w.mu.Unlock()
	return resp, err
}

// take returns the requests recorded since the last take.
func (w *wire) take() []exchange {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.log
	w.log = nil
	return l
}

// puts are the PUT requests of l.
func puts(l []exchange) []exchange {
	return slices.DeleteFunc(slices.Clone(l), func(e exchange) bool { return e.method != http.MethodPut })
}

// servedBy lists where the requests were served, once each, sorted.
func servedBy(l []exchange) []string {
	var out []string
	for _, e := range l {
		if !slices.Contains(out, e.servedBy) {
			out = append(out, e.servedBy)
		}
	}
	slices.Sort(out)
	return out
}

// s3Payload is n deterministic pseudo-random bytes named by seed.
func s3Payload(seed string, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(sha256.Sum256([]byte(seed))), n)
}

func payloadBytes(t *testing.T, seed string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(s3Payload(seed, int64(n)), b)
	require.NoError(t, err)
	return b
}

// payloadFile writes the payload into a file of the site's temporary
// directory and returns its path and SHA-256.
func (s *s3Site) payloadFile(t *testing.T, seed string, n int64) (string, [32]byte) {
	t.Helper()
	path := filepath.Join(s.tmp, seed)
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), s3Payload(seed, n))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return path, [32]byte(h.Sum(nil))
}

// sumReader reads r to its end and returns its SHA-256 and length.
func sumReader(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return [32]byte(h.Sum(nil)), n, err
}

func sumFile(t *testing.T, path string) ([32]byte, int64) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sum, n, err := sumReader(f)
	require.NoError(t, err)
	return sum, n
}

// getSum downloads an object with c and returns its SHA-256 and size.
func getSum(ctx context.Context, t *testing.T, c *minio.Client, bucket, key string) ([32]byte, int64) {
	t.Helper()
	o, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	require.NoError(t, err)
	defer o.Close()
	sum, n, err := sumReader(o)
	require.NoError(t, err, "GET %s", key)
	return sum, n
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func rate(n int64, d time.Duration) float64 { return mib(n) / d.Seconds() }

// streaming: minio-go signs every PUT's payload chunk by chunk
// (aws-chunked, STREAMING-AWS4-HMAC-SHA256-PAYLOAD) over plain HTTP; RGW
// checks each chunk's signature. A multipart upload of 64 MiB and a
// single PUT of 1 KiB, read back byte-exact.
func (s *s3Site) streaming(ctx context.Context, t *testing.T) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	tr := s.transport(true)
	defer tr.CloseIdleConnections()
	w := &wire{next: tr}
	c := s.client(t, s.plain, w, false)
	for _, o := range []struct {
		key   string
		size  int
		parts int
	}{{"streaming-64MiB", 64 << 20, 4}, {"streaming-1KiB", 1 << 10, 0}} {
		data := payloadBytes(t, o.key, o.size)
		want := sha256.Sum256(data)
		start := time.Now()
		_, err := c.PutObject(ctx, s.bucket, o.key, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{PartSize: 16 << 20})
		took := time.Since(start)
		sent := w.take()
		require.NoError(t, err, "PUT %s over %s with %s", o.key, s.plain, sigStreaming)
		ps := puts(sent)
		if o.parts > 0 {
			require.Len(t, ps, o.parts, "%s: a multipart upload of %d parts", o.key, o.parts)
		} else {
			require.Len(t, ps, 1, "%s: a single PUT", o.key)
		}
		for _, e := range ps {
			require.Equal(t, sigStreaming, e.sha256, "%s %s: X-Amz-Content-Sha256 on the wire", e.method, e.target)
			require.Equal(t, "aws-chunked", e.encoding, "%s %s: Content-Encoding", e.method, e.target)
			require.Greater(t, e.length, int64(0))
			require.Equal(t, http.StatusOK, e.status)
		}
		start = time.Now()
		got, n := getSum(ctx, t, c, s.bucket, o.key)
		gtook := time.Since(start)
		require.Equal(t, int64(o.size), n, "%s: size read back", o.key)
		require.Equal(t, hex.EncodeToString(want[:]), hex.EncodeToString(got[:]), "%s: SHA-256 read back", o.key)
		t.Logf("%s: %s over %s: PUT %.3f MiB in %d request(s) (X-Amz-Content-Sha256: %s, Content-Encoding: aws-chunked, %.0f MiB/s, served by %v), GET %.0f MiB/s, sha256 ok",
			o.key, sigStreaming, s.plain, mib(int64(o.size)), len(ps), sigStreaming, rate(int64(o.size), took), servedBy(ps), rate(n, gtook))
	}
}

// trailer: minio-go with a CRC32C checksum in a trailer, as AWS's SDKs
// send one by default since 2025: signed chunks and a signed trailer
// (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER) over plain HTTP, unsigned
// ones (STREAMING-UNSIGNED-PAYLOAD-TRAILER) over HTTPS with a length,
// and without one (Transfer-Encoding: chunked, as the AWS SDKs send
// them). Ceph 16's RGW knows neither: it refuses each upload at once
// with a clear S3 error, which ober passes on (no hang, no 502 or 504),
// and stores nothing.
func (s *s3Site) trailer(ctx context.Context, t *testing.T) {
	for _, v := range []struct {
		name     string
		sig      string
		endpoint *url.URL
		unsigned bool
		chunked  bool
		status   int
		code     string
	}{
		{"signed", sigStreamingTrailer, s.plain, false, false, http.StatusBadRequest, "XAmzContentSHA256Mismatch"},
		{"unsigned", sigUnsignedTrailer, s.https, true, false, http.StatusBadRequest, "XAmzContentSHA256Mismatch"},
		{"unsigned-chunked", sigUnsignedTrailer, s.https, true, true, http.StatusLengthRequired, "MissingContentLength"},
	} {
		t.Run(v.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			tr := s.transport(true)
			defer tr.CloseIdleConnections()
			w := &wire{next: tr, chunked: v.chunked}
			c := s.client(t, v.endpoint, w, true)
			key := "trailer-" + v.name
			data := payloadBytes(t, key, 1<<20)
			start := time.Now()
			_, err := c.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)),
				minio.PutObjectOptions{Checksum: minio.ChecksumCRC32C, DisableContentSha256: v.unsigned})
			took := time.Since(start)
			sent := puts(w.take())
			require.Len(t, sent, 1, "one PUT, tried once")
			e := sent[0]
			require.Equal(t, v.sig, e.sha256, "X-Amz-Content-Sha256 on the wire")
			require.Equal(t, "aws-chunked", e.encoding, "Content-Encoding on the wire")
			require.Equal(t, "x-amz-checksum-crc32c", e.trailer, "X-Amz-Trailer on the wire")
			length := "Content-Length " + strconv.FormatInt(e.length, 10)
			if v.chunked {
				require.EqualValues(t, -1, e.length)
				length = "Transfer-Encoding: chunked"
			}
			resp := minio.ToErrorResponse(err)
			t.Logf("%s over %s (%s, X-Amz-Trailer: %s): HTTP %d %s after %v, served by %s (minio-go: %v)",
				v.sig, v.endpoint, length, e.trailer, e.status, resp.Code, took.Round(time.Millisecond), e.servedBy, err)
			require.Error(t, err, "RGW accepted %s, which Ceph 16 refuses: the S3 compatibility notes need an update", v.sig)
			require.Equal(t, v.status, e.status, "%s: HTTP status", v.sig)
			require.Equal(t, v.code, resp.Code, "%s: S3 error code", v.sig)
			require.Less(t, took, 5*time.Second, "%s: refused at once", v.sig)
			require.Regexp(t, `^node\d+/\d+$`, e.servedBy, "%s: RGW's answer through ober's HAProxy", v.sig)
			_, err = c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
			require.Equal(t, "NoSuchKey", minio.ToErrorResponse(err).Code, "%s: nothing stored (%v)", v.sig, err)
		})
	}
}

// run runs a command in the client namespace with env (nil: this
// process's) and returns its stdout and stderr; it fails the test when
// the command fails.
func (s *s3Site) run(ctx context.Context, t *testing.T, env []string, name string, args ...string) (string, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", s.st.Client, name}, args...)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "%s %s\nstdout:\n%s\nstderr (end):\n%s", name, strings.Join(args, " "), stdout.String(), tail(stderr.String(), 4000))
	return stdout.String(), stderr.String()
}

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// partSums are the SHA-256s, in hex, of the parts of size partSize the
// payload seed of n bytes is cut into.
func partSums(t *testing.T, seed string, n, partSize int64) []string {
	t.Helper()
	r := s3Payload(seed, n)
	var out []string
	for off := int64(0); off < n; off += partSize {
		sum, _, err := sumReader(io.LimitReader(r, partSize))
		require.NoError(t, err)
		out = append(out, hex.EncodeToString(sum[:]))
	}
	return out
}

// s3cmdRequest is one request of s3cmd's --debug output, from its
// canonical request.
type s3cmdRequest struct {
	method, path, query, sha256 string
}

// s3cmdRequests finds the canonical requests s3cmd --debug prints.
func s3cmdRequests(out string) []s3cmdRequest {
	var reqs []s3cmdRequest
	chunks := strings.Split(out, "DEBUG: Canonical Request:\n")
	for _, c := range chunks[1:] {
		c, _, _ = strings.Cut(c, "\n----------------------")
		l := strings.Split(c, "\n")
		if len(l) < 4 {
			continue
		}
		r := s3cmdRequest{method: l[0], path: l[1], query: l[2]}
		for _, h := range l[3:] {
			if v, ok := strings.CutPrefix(h, "x-amz-content-sha256:"); ok {
				r.sha256 = v
			}
		}
		reqs = append(reqs, r)
	}
	return reqs
}

var s3cmdServedBy = regexp.MustCompile(`'x-served-by': '([^']+)'`)

// s3cmd: Debian's s3cmd signs every payload: SigV4 over HTTPS with the
// payload's SHA-256 (each part's in a multipart upload) in
// X-Amz-Content-Sha256, which RGW checks. Its --debug output shows each
// canonical request; the hashes must be the parts' own.
func (s *s3Site) s3cmd(ctx context.Context, t *testing.T) {
	require.FileExists(t, debianS3cmd, "install s3cmd: apt-get install s3cmd")
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	const chunk = 15 << 20 // s3cmd's multipart_chunk_size_mb
	cfg := filepath.Join(s.tmp, "s3cfg")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`[default]
access_key = %s
secret_key = %s
host_base = %s
host_bucket = %s
use_https = True
ca_certs_file = %s
check_ssl_certificate = True
check_ssl_hostname = True
signature_v2 = False
bucket_location = us-east-1
multipart_chunk_size_mb = %d
`, s.st.AccessKey, s.st.SecretKey, s.https.Host, s.https.Host, s.st.CA, chunk>>20)), 0o600))
	for _, o := range []struct {
		key   string
		size  int64
		parts int
	}{{"s3cmd-40MiB", 40 << 20, 3}, {"s3cmd-1KiB", 1 << 10, 0}} {
		path, want := s.payloadFile(t, o.key, o.size)
		start := time.Now()
		_, debug := s.run(ctx, t, nil, debianS3cmd, "-c", cfg, "--debug", "put", path, "s3://"+s.bucket+"/"+o.key)
		took := time.Since(start)
		var ps []s3cmdRequest
		for _, r := range s3cmdRequests(debug) {
			if r.method == http.MethodPut {
				ps = append(ps, r)
			}
		}
		sums := partSums(t, o.key, o.size, chunk)
		if o.parts > 0 {
			require.Len(t, ps, o.parts, "%s: a multipart upload of %d parts", o.key, o.parts)
		} else {
			require.Len(t, ps, 1, "%s: a single PUT", o.key)
		}
		for _, r := range ps {
			require.Regexp(t, hexSHA256, r.sha256, "PUT %s?%s: X-Amz-Content-Sha256 is a signed payload's hash", r.path, r.query)
			part := 1
			if o.parts > 0 {
				q, err := url.ParseQuery(r.query)
				require.NoError(t, err)
				part, err = strconv.Atoi(q.Get("partNumber"))
				require.NoError(t, err, "PUT %s?%s: a part", r.path, r.query)
			}
			require.Equal(t, sums[part-1], r.sha256, "PUT %s?%s: X-Amz-Content-Sha256 is the SHA-256 of part %d", r.path, r.query, part)
		}
		served := s3cmdServedBy.FindAllStringSubmatch(debug, -1)
		require.NotEmpty(t, served, "the answers carry X-Served-By")

		dst := path + ".get"
		gstart := time.Now()
		s.run(ctx, t, nil, debianS3cmd, "-c", cfg, "--force", "get", "s3://"+s.bucket+"/"+o.key, dst)
		gtook := time.Since(gstart)
		got, n := sumFile(t, dst)
		require.Equal(t, o.size, n, "%s: size read back", o.key)
		require.Equal(t, hex.EncodeToString(want[:]), hex.EncodeToString(got[:]), "%s: SHA-256 read back", o.key)
		t.Logf("%s: s3cmd %s over %s: PUT %.3f MiB in %d request(s), each X-Amz-Content-Sha256 the SHA-256 of its payload (%s, %.0f MiB/s, last served by %s), GET %.0f MiB/s, sha256 ok",
			o.key, sigSigned, s.https, mib(o.size), len(ps), ps[0].sha256[:16]+"...", rate(o.size, took), served[len(served)-1][1], rate(n, gtook))
	}
}

// awsEnv is this process's environment without any AWS_ setting, with
// the lab's credentials and no configuration files: aws-cli's defaults.
func (s *s3Site) awsEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "AWS_") })
	return append(env, "AWS_ACCESS_KEY_ID="+s.st.AccessKey, "AWS_SECRET_ACCESS_KEY="+s.st.SecretKey,
		"AWS_DEFAULT_REGION=us-east-1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
}

// awsRequest is one request of aws --debug's output.
type awsRequest struct {
	method, url, sha256, md5, trailer string
}

var (
	awsSent    = regexp.MustCompile(`Sending http request: <AWSPreparedRequest stream_output=\w+, method=(\w+), url=(\S+), headers=\{(.*)\}>`)
	awsHeader  = func(name string) *regexp.Regexp { return regexp.MustCompile(`'` + name + `': b'([^']*)'`) }
	awsSHA256  = awsHeader("X-Amz-Content-SHA256")
	awsMD5     = awsHeader("Content-MD5")
	awsTrailer = awsHeader("X-Amz-Trailer")
	awsServed  = regexp.MustCompile(`'x-served-by': '([^']+)'`)
	awsTrouble = regexp.MustCompile(`(?i)retry needed|exception|connection (reset|aborted)|timeout|" [45]\d\d `)
)

func awsRequests(out string) []awsRequest {
	var reqs []awsRequest
	for _, m := range awsSent.FindAllStringSubmatch(out, -1) {
		r := awsRequest{method: m[1], url: m[2]}
		for _, h := range []struct {
			re *regexp.Regexp
			to *string
		}{{awsSHA256, &r.sha256}, {awsMD5, &r.md5}, {awsTrailer, &r.trailer}} {
			if v := h.re.FindStringSubmatch(m[3]); v != nil {
				*h.to = v[1]
			}
		}
		reqs = append(reqs, r)
	}
	return reqs
}

// awscli: Debian's aws-cli 2.9.19 with its defaults (no configuration
// file, no checksum settings): `aws s3 cp` up and down (multipart of 8
// MiB parts), `aws s3api head-object`. Over HTTPS it signs no payload:
// UNSIGNED-PAYLOAD, with each part's Content-MD5, which RGW checks.
func (s *s3Site) awscli(ctx context.Context, t *testing.T) {
	require.FileExists(t, debianAWS, "install Debian's aws-cli: apt-get install awscli")
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	const key, size, parts = "awscli-100MiB", 100 << 20, 13 // 8 MiB parts
	env := s.awsEnv()
	aws := func(args ...string) (string, string) {
		t.Helper()
		return s.run(ctx, t, env, debianAWS, append([]string{"--endpoint-url", s.https.String(), "--ca-bundle", s.st.CA}, args...)...)
	}
	version, _ := aws("--version")
	path, want := s.payloadFile(t, key, size)
	obj := "s3://" + s.bucket + "/" + key
	start := time.Now()
	_, debug := aws("--debug", "s3", "cp", "--no-progress", path, obj)
	took := time.Since(start)
	var ps []awsRequest
	for _, r := range awsRequests(debug) {
		if r.method == http.MethodPut {
			ps = append(ps, r)
		}
	}
	if len(ps) != parts {
		// A part sent twice: say why aws-cli tried again.
		for _, l := range strings.Split(debug, "\n") {
			if awsTrouble.MatchString(l) {
				t.Log(tail(l, 600))
			}
		}
	}
	require.Len(t, ps, parts, "a multipart upload of %d parts, each sent once", parts)
	for _, r := range ps {
		require.Equal(t, sigUnsigned, r.sha256, "PUT %s: X-Amz-Content-Sha256", r.url)
		require.NotEmpty(t, r.md5, "PUT %s: Content-MD5", r.url)
		require.Empty(t, r.trailer, "PUT %s: no checksum trailer", r.url)
	}
	served := awsServed.FindAllStringSubmatch(debug, -1)
	require.NotEmpty(t, served, "the answers carry X-Served-By")

	dst := path + ".get"
	gstart := time.Now()
	aws("s3", "cp", "--no-progress", obj, dst)
	gtook := time.Since(gstart)
	got, n := sumFile(t, dst)
	require.Equal(t, int64(size), n, "size read back")
	require.Equal(t, hex.EncodeToString(want[:]), hex.EncodeToString(got[:]), "SHA-256 read back")

	head, _ := aws("s3api", "head-object", "--bucket", s.bucket, "--key", key)
	require.Regexp(t, fmt.Sprintf(`"ContentLength":\s*%d,`, size), head)
	require.Regexp(t, fmt.Sprintf(`"ETag":\s*"\\"[0-9a-f]{32}-%d\\""`, parts), head, "the ETag of a multipart upload of %d parts", parts)
	t.Logf("%s: %s, defaults, over %s: PUT %d MiB in %d parts, X-Amz-Content-Sha256: %s with Content-MD5, no trailer (%.0f MiB/s, last served by %s), GET %.0f MiB/s, sha256 ok; head-object: %d bytes, multipart ETag",
		key, strings.TrimSpace(version), s.https, size>>20, len(ps), sigUnsigned, rate(size, took), served[len(served)-1][1], rate(n, gtook), size)
}

// signedRequest is a SigV4-signed request whose payload is not signed
// (UNSIGNED-PAYLOAD), for a body of size bytes (0: none).
func (s *s3Site) signedRequest(ctx context.Context, t *testing.T, method, target string, body io.Reader, size int64) *http.Request {
	t.Helper()
	var rc io.ReadCloser
	if body != nil {
		rc = io.NopCloser(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.https.String()+target, rc)
	require.NoError(t, err)
	req.ContentLength = size
	req.Header.Set("X-Amz-Content-Sha256", sigUnsigned)
	return signer.SignV4(*req, s.st.AccessKey, s.st.SecretKey, "", "us-east-1")
}

// http2: Go's net/http over HTTP/2 only (ALPN h2 on ober's HTTPS bind),
// SigV4 with UNSIGNED-PAYLOAD: a PUT and a GET of 256 MiB, both streamed,
// both answered over HTTP/2, byte-exact.
func (s *s3Site) http2(ctx context.Context, t *testing.T) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	const key, size = "http2-256MiB", 256 << 20
	var protos http.Protocols
	protos.SetHTTP2(true)
	tr := &http.Transport{DialContext: s.d.DialContext, TLSClientConfig: &tls.Config{RootCAs: s.pool}, Protocols: &protos}
	defer tr.CloseIdleConnections()
	w := &wire{next: tr}
	hc := &http.Client{Transport: w}

	h := sha256.New()
	start := time.Now()
	resp, err := hc.Do(s.signedRequest(ctx, t, http.MethodPut, "/"+s.bucket+"/"+key, io.TeeReader(s3Payload(key, size), h), size))
	require.NoError(t, err)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	took := time.Since(start)
	require.Equal(t, http.StatusOK, resp.StatusCode, "PUT over %s: %s", resp.Proto, body)
	require.Equal(t, 2, resp.ProtoMajor, "PUT answered over %s", resp.Proto)
	want := [32]byte(h.Sum(nil))

	start = time.Now()
	resp, err = hc.Do(s.signedRequest(ctx, t, http.MethodGet, "/"+s.bucket+"/"+key, nil, 0))
	require.NoError(t, err)
	got, n, err := sumReader(resp.Body)
	resp.Body.Close()
	gtook := time.Since(start)
	require.NoError(t, err, "GET over %s", resp.Proto)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 2, resp.ProtoMajor, "GET answered over %s", resp.Proto)
	require.Equal(t, int64(size), n, "size read back")
	require.Equal(t, hex.EncodeToString(want[:]), hex.EncodeToString(got[:]), "SHA-256 read back")
	sent := w.take()
	require.Len(t, sent, 2)
	require.Equal(t, sigUnsigned, sent[0].sha256, "PUT: X-Amz-Content-Sha256 on the wire")
	t.Logf("%s: Go net/http over %s to %s, X-Amz-Content-Sha256: %s: PUT %d MiB %.0f MiB/s (served by %s), GET %.0f MiB/s (served by %s), sha256 ok",
		key, sent[1].proto, s.https, sigUnsigned, size>>20, rate(size, took), sent[0].servedBy, rate(n, gtook), sent[1].servedBy)
}

var s3ErrorCode = regexp.MustCompile(`<Code>([^<]*)</Code>`)

// curlResult is one run of curl: -w's status, HTTP version and X-Served-By.
type curlResult struct {
	status, version, servedBy string
}

// curl runs curl in the client namespace with the lab's CA, args and a
// -w that reports the answer.
func (s *s3Site) curl(ctx context.Context, t *testing.T, args ...string) curlResult {
	t.Helper()
	out, _ := s.run(ctx, t, nil, "curl", append([]string{"--cacert", s.st.CA, "-sS", "--max-time", "60",
		"-w", `%{http_code} %{http_version} %header{x-served-by}`}, args...)...)
	f := strings.Fields(out)
	require.Len(t, f, 3, "curl -w: %q", out)
	return curlResult{f[0], f[1], f[2]}
}

// presigned: minio-go presigns a PUT and a GET (query-string SigV4,
// X-Amz-Algorithm=AWS4-HMAC-SHA256, the payload unsigned) for the HTTPS
// endpoint; curl uploads and downloads with them, byte-exact. A URL with
// a changed signature, a URL used for another object and an expired
// URL are refused by RGW with 403.
func (s *s3Site) presigned(ctx context.Context, t *testing.T) {
	_, err := exec.LookPath("curl")
	require.NoError(t, err, "install curl: apt-get install curl")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	const key, size = "presigned-8MiB", 8 << 20
	tr := s.transport(true)
	defer tr.CloseIdleConnections()
	c := s.client(t, s.https, tr, false)
	put, err := c.PresignedPutObject(ctx, s.bucket, key, 10*time.Minute)
	require.NoError(t, err)
	get, err := c.PresignedGetObject(ctx, s.bucket, key, 10*time.Minute, nil)
	require.NoError(t, err)
	for _, u := range []*url.URL{put, get} {
		require.Equal(t, s.https.Host, u.Host)
		require.Equal(t, "AWS4-HMAC-SHA256", u.Query().Get("X-Amz-Algorithm"))
		require.Equal(t, "host", u.Query().Get("X-Amz-SignedHeaders"))
	}

	path, want := s.payloadFile(t, key, size)
	start := time.Now()
	up := s.curl(ctx, t, "-f", "-T", path, "-o", "/dev/null", put.String())
	took := time.Since(start)
	require.Equal(t, "200", up.status)
	dst := path + ".get"
	start = time.Now()
	down := s.curl(ctx, t, "-f", "-o", dst, get.String())
	gtook := time.Since(start)
	require.Equal(t, "200", down.status)
	got, n := sumFile(t, dst)
	require.Equal(t, int64(size), n, "size read back")
	require.Equal(t, hex.EncodeToString(want[:]), hex.EncodeToString(got[:]), "SHA-256 read back")
	t.Logf("%s: curl with presigned URLs (query-string SigV4, %s) over %s: PUT %d MiB %.0f MiB/s (HTTP/%s, served by %s), GET %.0f MiB/s (HTTP/%s, served by %s), sha256 ok",
		key, sigUnsigned, s.https, size>>20, rate(size, took), up.version, up.servedBy, rate(n, gtook), down.version, down.servedBy)

	// Refused: the signature changed, the PUT's URL used for another
	// object, a URL past its expiry.
	tampered := *get
	q := tampered.Query()
	sig := []byte(q.Get("X-Amz-Signature"))
	if sig[len(sig)-1] == '0' {
		sig[len(sig)-1] = '1'
	} else {
		sig[len(sig)-1] = '0'
	}
	q.Set("X-Amz-Signature", string(sig))
	tampered.RawQuery = q.Encode()
	require.NotEqual(t, get.Query().Get("X-Amz-Signature"), tampered.Query().Get("X-Amz-Signature"))
	other := *put
	other.Path += "-other"
	expiring, err := c.PresignedGetObject(ctx, s.bucket, key, time.Second, nil)
	require.NoError(t, err)
	time.Sleep(2 * time.Second)
	small, _ := s.payloadFile(t, "presigned-1KiB", 1<<10)
	for _, r := range []struct {
		what string
		args []string
	}{
		{"GET with a changed signature", []string{tampered.String()}},
		{"PUT of another object", []string{"-T", small, other.String()}},
		{"GET past its expiry", []string{expiring.String()}},
	} {
		body := filepath.Join(s.tmp, "refused")
		res := s.curl(ctx, t, append([]string{"-o", body}, r.args...)...)
		b, err := os.ReadFile(body)
		require.NoError(t, err)
		code := s3ErrorCode.FindStringSubmatch(string(b))
		require.Equal(t, "403", res.status, "%s: %q", r.what, tail(string(b), 512))
		require.NotNil(t, code, "%s: an S3 error: %q", r.what, tail(string(b), 512))
		require.NotEqual(t, "-", res.servedBy, "%s: answered through ober", r.what)
		t.Logf("presigned %s: HTTP %s %s (served by %s)", r.what, res.status, code[1], res.servedBy)
	}
}

// multipartSpread: one multipart upload (minio-go's Core) of 16 parts of
// 5 MiB, each part on a new connection, so a new flow for the router's
// ECMP hash and the node's instance choice: the parts land on several
// nodes and instances (X-Served-By), and RGW joins them byte-exact.
// Each part's payload is signed (its SHA-256 in X-Amz-Content-Sha256).
func (s *s3Site) multipartSpread(ctx context.Context, t *testing.T) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	const key, parts, partSize = "multipart-16x5MiB", 16, 5 << 20
	tr := s.transport(false) // a new connection per request
	defer tr.CloseIdleConnections()
	w := &wire{next: tr}
	core := &minio.Core{Client: s.client(t, s.https, w, false)}
	id, err := core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{})
	require.NoError(t, err)
	done := false
	defer func() {
		if !done {
			_ = core.AbortMultipartUpload(context.Background(), s.bucket, key, id)
		}
	}()

	r := s3Payload(key, parts*partSize)
	whole := sha256.New()
	var complete []minio.CompletePart
	start := time.Now()
	for i := 1; i <= parts; i++ {
		buf := make([]byte, partSize)
		_, err := io.ReadFull(r, buf)
		require.NoError(t, err)
		whole.Write(buf)
		sum := sha256.Sum256(buf)
		p, err := core.PutObjectPart(ctx, s.bucket, key, id, i, bytes.NewReader(buf), partSize,
			minio.PutObjectPartOptions{Sha256Hex: hex.EncodeToString(sum[:])})
		require.NoError(t, err, "part %d", i)
		complete = append(complete, minio.CompletePart{PartNumber: i, ETag: p.ETag})
	}
	took := time.Since(start)
	where := map[string]string{} // part number: node/instance
	nodes := map[string]int{}
	pairs := map[string]int{}
	for _, e := range puts(w.take()) {
		require.Equal(t, sigSigned, e.payloadSig(), "%s: X-Amz-Content-Sha256 %s", e.target, e.sha256)
		require.Equal(t, http.StatusOK, e.status, "%s", e.target)
		require.Regexp(t, `^node\d+/\d+$`, e.servedBy, "%s: X-Served-By", e.target)
		where[e.query("partNumber")] = e.servedBy
		node, _, _ := strings.Cut(e.servedBy, "/")
		nodes[node]++
		pairs[e.servedBy]++
	}
	require.Len(t, where, parts, "each part's answer recorded")
	_, err = core.CompleteMultipartUpload(ctx, s.bucket, key, id, complete, minio.PutObjectOptions{})
	require.NoError(t, err)
	done = true
	info, err := core.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	require.NoError(t, err)
	var order []string
	for i := 1; i <= parts; i++ {
		order = append(order, where[strconv.Itoa(i)])
	}
	t.Logf("%s: minio-go Core, %s, a new connection per part: parts served by %s; nodes %v, node/instances %v (%.0f MiB/s); ETag %s",
		key, sigSigned, strings.Join(order, " "), nodes, pairs, rate(parts*partSize, took), info.ETag)
	require.GreaterOrEqual(t, len(nodes), 2, "the parts landed on at least 2 nodes: %v", nodes)
	require.GreaterOrEqual(t, len(pairs), 3, "the parts landed on at least 3 node/instance pairs: %v", pairs)
	require.True(t, strings.HasSuffix(info.ETag, fmt.Sprintf("-%d", parts)), "multipart ETag %s", info.ETag)

	want := [32]byte(whole.Sum(nil))
	rtr := s.transport(true)
	defer rtr.CloseIdleConnections()
	got, n := getSum(ctx, t, s.client(t, s.https, rtr, false), s.bucket, key)
	require.Equal(t, int64(parts*partSize), n, "size read back")
	require.Equal(t, hex.EncodeToString(want[:]), hex.EncodeToString(got[:]), "SHA-256 read back")
	t.Logf("%s: read back %d MiB, sha256 ok", key, n>>20)
}
