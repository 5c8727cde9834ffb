package s3server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newMinio(t *testing.T, ts *httptest.Server, secure, trailing bool) *minio.Client {
	t.Helper()
	u, err := url.Parse(ts.URL)
	require.NoError(t, err)
	cl, err := minio.New(u.Host, &minio.Options{
		Creds:           credentials.NewStaticV4(testAK, testSK, ""),
		Secure:          secure,
		Region:          testRegion,
		BucketLookup:    minio.BucketLookupPath,
		Transport:       ts.Client().Transport,
		TrailingHeaders: trailing,
		MaxRetries:      1,
	})
	require.NoError(t, err)
	return cl
}

// opsByMode summarises the request log: op -> set of payload modes.
func opsByMode(reqs []Request) map[string][]string {
	seen := map[string]map[string]bool{}
	for _, r := range reqs {
		if seen[r.Op] == nil {
			seen[r.Op] = map[string]bool{}
		}
		seen[r.Op][r.PayloadMode] = true
	}
	out := map[string][]string{}
	for op, modes := range seen {
		for m := range modes {
			out[op] = append(out[op], m)
		}
		sort.Strings(out[op])
	}
	return out
}

func TestMinioClient(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := "http"
		if secure {
			name = "https"
		}
		t.Run(name, func(t *testing.T) { runMinioSuite(t, secure) })
	}
}

func runMinioSuite(t *testing.T, secure bool) {
	srv, ts := newTestServer(t, secure, Options{})
	cl := newMinio(t, ts, secure, false)
	ctx := context.Background()
	const bkt = "test-bucket"

	require.NoError(t, cl.MakeBucket(ctx, bkt, minio.MakeBucketOptions{Region: testRegion}))
	ok, err := cl.BucketExists(ctx, bkt)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = cl.BucketExists(ctx, "missing-bucket")
	require.NoError(t, err)
	assert.False(t, ok)
	// CreateBucket is idempotent for the owner.
	require.NoError(t, cl.MakeBucket(ctx, bkt, minio.MakeBucketOptions{Region: testRegion}))

	objects := []struct {
		key     string
		data    []byte
		unknown bool // size -1
	}{
		{"empty", nil, false},
		{"one", []byte{'x'}, false},
		{"five", randBytes(5<<20+1, 1), false},
		{"dir/twenty", randBytes(20<<20, 2), true},
		{"odd dir/a+b=c&d ü%20~!$'()*,;@.txt", randBytes(1000, 3), false},
	}
	for _, o := range objects {
		size := int64(len(o.data))
		opts := minio.PutObjectOptions{ContentType: "application/x-test", UserMetadata: map[string]string{"Origin": "ober"}}
		if o.unknown {
			size = -1
			opts.PartSize = 5 << 20 // the default for unknown sizes buffers ~537 MiB per part
		}
		info, err := cl.PutObject(ctx, bkt, o.key, bytes.NewReader(o.data), size, opts)
		require.NoError(t, err, o.key)
		assert.Equal(t, int64(len(o.data)), info.Size, o.key)

		got, ok := srv.Object(bkt, o.key)
		require.True(t, ok, o.key)
		assert.Equal(t, sha256.Sum256(o.data), sha256.Sum256(got), o.key)

		obj, err := cl.GetObject(ctx, bkt, o.key, minio.GetObjectOptions{})
		require.NoError(t, err)
		read, err := io.ReadAll(obj)
		require.NoError(t, err, o.key)
		obj.Close()
		assert.Equal(t, sha256.Sum256(o.data), sha256.Sum256(read), o.key)

		st, err := cl.StatObject(ctx, bkt, o.key, minio.StatObjectOptions{})
		require.NoError(t, err, o.key)
		assert.Equal(t, int64(len(o.data)), st.Size)
		assert.Equal(t, "application/x-test", st.ContentType)
		assert.Equal(t, "ober", st.UserMetadata["Origin"])
		if o.unknown {
			assert.True(t, strings.HasSuffix(st.ETag, "-4"), "multipart ETag %q", st.ETag)
		} else {
			assert.Equal(t, info.ETag, st.ETag)
		}
	}

	// Ranged read through the client.
	gopts := minio.GetObjectOptions{}
	require.NoError(t, gopts.SetRange(10, 19))
	obj, err := cl.GetObject(ctx, bkt, "five", gopts)
	require.NoError(t, err)
	part, err := io.ReadAll(obj)
	require.NoError(t, err)
	obj.Close()
	assert.Equal(t, objects[2].data[10:20], part)

	// Listing: recursive, then with a delimiter and a prefix.
	var keys []string
	for oi := range cl.ListObjects(ctx, bkt, minio.ListObjectsOptions{Recursive: true}) {
		require.NoError(t, oi.Err)
		keys = append(keys, oi.Key)
	}
	assert.Equal(t, []string{"dir/twenty", "empty", "five", "odd dir/a+b=c&d ü%20~!$'()*,;@.txt", "one"}, keys)
	keys = nil
	for oi := range cl.ListObjects(ctx, bkt, minio.ListObjectsOptions{}) {
		require.NoError(t, oi.Err)
		keys = append(keys, oi.Key)
	}
	// minio-go yields a page's objects first, then its common prefixes.
	assert.Equal(t, []string{"empty", "five", "one", "dir/", "odd dir/"}, keys)
	keys = nil
	for oi := range cl.ListObjects(ctx, bkt, minio.ListObjectsOptions{Prefix: "odd dir/", Recursive: true, MaxKeys: 1}) {
		require.NoError(t, oi.Err)
		keys = append(keys, oi.Key)
	}
	assert.Equal(t, []string{"odd dir/a+b=c&d ü%20~!$'()*,;@.txt"}, keys)

	// Presigned GET.
	pu, err := cl.PresignedGetObject(ctx, bkt, "odd dir/a+b=c&d ü%20~!$'()*,;@.txt", time.Minute, url.Values{"response-content-type": {"text/plain"}})
	require.NoError(t, err)
	resp, err := ts.Client().Get(pu.String())
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Equal(t, objects[4].data, body)
	assert.Equal(t, "text/plain", resp.Header.Get("Content-Type"))

	// A deleted object is gone; a non-empty bucket cannot be removed.
	require.NoError(t, cl.RemoveObject(ctx, bkt, "one", minio.RemoveObjectOptions{}))
	_, err = cl.StatObject(ctx, bkt, "one", minio.StatObjectOptions{})
	assert.Equal(t, "NoSuchKey", minio.ToErrorResponse(err).Code)
	_, err = cl.GetObject(ctx, bkt, "one", minio.GetObjectOptions{})
	if err == nil {
		_, err = cl.StatObject(ctx, bkt, "one", minio.StatObjectOptions{})
	}
	assert.Error(t, err)
	err = cl.RemoveBucket(ctx, bkt)
	assert.Equal(t, "BucketNotEmpty", minio.ToErrorResponse(err).Code)

	buckets, err := cl.ListBuckets(ctx)
	require.NoError(t, err)
	require.Len(t, buckets, 1)
	assert.Equal(t, bkt, buckets[0].Name)

	for oi := range cl.RemoveObjects(ctx, bkt, cl.ListObjects(ctx, bkt, minio.ListObjectsOptions{Recursive: true}), minio.RemoveObjectsOptions{}) {
		require.NoError(t, oi.Err)
	}
	require.NoError(t, cl.RemoveBucket(ctx, bkt))

	// Every request verified.
	reqs := srv.Requests()
	assert.Zero(t, srv.AuthFailures())
	for _, r := range reqs {
		if !r.AuthOK {
			t.Errorf("request %s %s failed auth: %s", r.Method, r.Path, r.AuthError)
		}
	}
	modes := opsByMode(reqs)
	t.Logf("secure=%v ops/payload modes seen: %v", secure, modes)
	wantPut := payloadStreamingSigned
	if secure {
		wantPut = payloadUnsigned
	}
	assert.Equal(t, []string{wantPut}, modes["PutObject"])
	assert.Equal(t, []string{wantPut}, modes["UploadPart"])
	assert.Contains(t, modes, "CreateMultipartUpload")
	assert.Contains(t, modes, "CompleteMultipartUpload")
	assert.Contains(t, modes["GetObject"], modePresigned)
	nParts := 0
	for _, r := range reqs {
		if r.Op == "UploadPart" {
			nParts++
			assert.Equal(t, int64(5<<20), r.BodyBytes)
		}
		if r.Op == "PutObject" && r.Path == "/test-bucket/empty" {
			t.Logf("secure=%v empty PutObject: chunked=%v aws-chunked=%v content-length=%q", secure, r.Chunked, r.AWSChunked, r.Header.Get("Content-Length"))
		}
		if r.Op == "PutObject" && !secure {
			assert.True(t, r.AWSChunked)
		}
	}
	assert.Equal(t, 4, nParts)
}

// TestMinioTrailers exercises the trailer payload modes minio-go produces
// when TrailingHeaders is enabled: unsigned trailers over TLS and signed
// chunks with a signed trailer over plain HTTP (explicit checksum).
func TestMinioTrailers(t *testing.T) {
	ctx := context.Background()
	checksums := []minio.ChecksumType{minio.ChecksumCRC32, minio.ChecksumCRC32C, minio.ChecksumSHA1, minio.ChecksumSHA256, minio.ChecksumCRC64NVME}
	for _, secure := range []bool{false, true} {
		srv, ts := newTestServer(t, secure, Options{})
		cl := newMinio(t, ts, secure, true)
		require.NoError(t, cl.MakeBucket(ctx, "trail", minio.MakeBucketOptions{}))
		data := randBytes(300<<10+7, 9)
		wantMode := payloadStreamingSignedTrailer
		if secure {
			wantMode = payloadStreamingUnsignedTrailer
		}
		for _, ck := range checksums {
			key := "obj-" + ck.String()
			_, err := cl.PutObject(ctx, "trail", key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{Checksum: ck})
			require.NoError(t, err, "secure=%v %s", secure, ck)
			got, ok := srv.Object("trail", key)
			require.True(t, ok)
			assert.Equal(t, data, got)
			reqs := srv.Requests()
			last := reqs[len(reqs)-1]
			assert.Equal(t, wantMode, last.PayloadMode, ck.String())
			alg := strings.TrimPrefix(ck.Key(), "x-amz-checksum-")
			assert.Equal(t, []string{alg + ":verified"}, last.Checksums, ck.String())
			assert.NotEmpty(t, last.Trailer.Get(ck.Key()))
		}
		if secure {
			// Default checksum (CRC32C) with TrailingHeaders, and a
			// multipart upload with per-part checksum headers.
			_, err := cl.PutObject(ctx, "trail", "default", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
			require.NoError(t, err)
			big := randBytes(11<<20, 4)
			_, err = cl.PutObject(ctx, "trail", "multi", bytes.NewReader(big), -1, minio.PutObjectOptions{PartSize: 5 << 20})
			require.NoError(t, err)
			got, _ := srv.Object("trail", "multi")
			assert.Equal(t, sha256.Sum256(big), sha256.Sum256(got))
		}
		assert.Zero(t, srv.AuthFailures())
		t.Logf("secure=%v trailing ops/payload modes seen: %v", secure, opsByMode(srv.Requests()))
		for _, r := range srv.Requests() {
			if r.Op == "PutObject" || r.Op == "UploadPart" {
				t.Logf("secure=%v %s %s mode=%s checksums=%v trailer=%v", secure, r.Op, r.Path, r.PayloadMode, r.Checksums, r.Trailer)
			}
		}
	}
}

// TestMinioSHA256Payload uses Core.PutObject with a precomputed sha256 over
// TLS, which minio-go sends as a signed hex payload hash.
func TestMinioSHA256Payload(t *testing.T) {
	ctx := context.Background()
	srv, ts := newTestServer(t, true, Options{})
	cl := newMinio(t, ts, true, false)
	require.NoError(t, cl.MakeBucket(ctx, "sha", minio.MakeBucketOptions{}))
	data := randBytes(70000, 5)
	core := minio.Core{Client: cl}
	_, err := core.PutObject(ctx, "sha", "k", bytes.NewReader(data), int64(len(data)), "", sha(data), minio.PutObjectOptions{})
	require.NoError(t, err)
	reqs := srv.Requests()
	last := reqs[len(reqs)-1]
	assert.Equal(t, modeSHA256, last.PayloadMode)
	assert.Equal(t, sha(data), last.BodySHA256)
	assert.True(t, last.AuthOK)

	// A lying sha256 is rejected and nothing is stored.
	_, err = core.PutObject(ctx, "sha", "k2", bytes.NewReader(data), int64(len(data)), "", sha([]byte("other")), minio.PutObjectOptions{})
	assert.Equal(t, "XAmzContentSHA256Mismatch", minio.ToErrorResponse(err).Code)
	_, ok := srv.Object("sha", "k2")
	assert.False(t, ok)
}
