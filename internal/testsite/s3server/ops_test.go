package s3server

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRangeGet(t *testing.T) {
	_, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	data := []byte("0123456789")
	require.Equal(t, http.StatusOK, signedReq(t, ts, http.MethodPut, "/bkt/r", data, "", nil).StatusCode)
	require.Equal(t, http.StatusOK, signedReq(t, ts, http.MethodPut, "/bkt/empty", nil, "", nil).StatusCode)

	cases := []struct {
		key, rng string
		status   int
		body     string
		cr       string
	}{
		{"r", "", 200, "0123456789", ""},
		{"r", "bytes=0-0", 206, "0", "bytes 0-0/10"},
		{"r", "bytes=2-5", 206, "2345", "bytes 2-5/10"},
		{"r", "bytes=7-", 206, "789", "bytes 7-9/10"},
		{"r", "bytes=-3", 206, "789", "bytes 7-9/10"},
		{"r", "bytes=-100", 206, "0123456789", "bytes 0-9/10"},
		{"r", "bytes=5-999", 206, "56789", "bytes 5-9/10"},
		{"r", "bytes=9-9", 206, "9", "bytes 9-9/10"},
		{"r", "bytes=10-", 416, "", "bytes */10"},
		{"r", "bytes=10-20", 416, "", "bytes */10"},
		{"r", "bytes=-0", 416, "", "bytes */10"},
		{"empty", "bytes=0-", 416, "", "bytes */0"},
		{"r", "bytes=5-2", 200, "0123456789", ""}, // syntactically invalid: ignored
		{"r", "bytes=abc", 200, "0123456789", ""},
		{"r", "items=0-1", 200, "0123456789", ""},
		{"r", "bytes=0-1,3-4", 200, "0123456789", ""}, // multiple ranges: ignored
	}
	for _, c := range cases {
		hdr := http.Header{}
		if c.rng != "" {
			hdr.Set("Range", c.rng)
		}
		resp := signedReq(t, ts, http.MethodGet, "/bkt/"+c.key, nil, "", hdr)
		b, _ := io.ReadAll(resp.Body)
		assert.Equal(t, c.status, resp.StatusCode, c.rng)
		assert.Equal(t, c.cr, resp.Header.Get("Content-Range"), c.rng)
		if c.status == 416 {
			var e errorXML
			require.NoError(t, xml.Unmarshal(b, &e))
			assert.Equal(t, "InvalidRange", e.Code)
			continue
		}
		assert.Equal(t, c.body, string(b), c.rng)
		assert.Equal(t, fmt.Sprint(len(c.body)), resp.Header.Get("Content-Length"), c.rng)
	}

	// HEAD with a range reports the partial length without a body.
	resp := signedReq(t, ts, http.MethodHead, "/bkt/r", nil, "", http.Header{"Range": {"bytes=1-2"}})
	assert.Equal(t, http.StatusPartialContent, resp.StatusCode)
	assert.Equal(t, "2", resp.Header.Get("Content-Length"))
	assert.Equal(t, `"781e5e245d69b566979b86e28d23f2c7"`, resp.Header.Get("ETag"))

	// Conditional GETs.
	etag := resp.Header.Get("ETag")
	resp = signedReq(t, ts, http.MethodGet, "/bkt/r", nil, "", http.Header{"If-None-Match": {etag}})
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	resp = signedReq(t, ts, http.MethodGet, "/bkt/r", nil, "", http.Header{"If-Match": {`"nope"`}})
	assert.Equal(t, http.StatusPreconditionFailed, resp.StatusCode)
}

type listResult struct {
	KeyCount              int
	IsTruncated           bool
	NextContinuationToken string
	Contents              []struct{ Key string }
	CommonPrefixes        []struct{ Prefix string }
}

func TestBucketOps(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{Credentials: map[string]string{testAK: testSK, "OTHER": "other-secret"}})
	mkBucket(t, ts, "bkt")
	// Idempotent for the owner.
	mkBucket(t, ts, "bkt")

	// Another owner gets a conflict.
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/bkt", nil)
	s := newSigner()
	s.ak, s.sk = "OTHER", "other-secret"
	s.signHeaders(req, emptySHA256)
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusConflict, resp.StatusCode)
	assert.Equal(t, "BucketAlreadyExists", readErr(t, resp).Code)
	resp.Body.Close()

	resp = signedReq(t, ts, http.MethodPut, "/Bad_Name", nil, "", nil)
	assert.Equal(t, "InvalidBucketName", readErr(t, resp).Code)

	resp = signedReq(t, ts, http.MethodHead, "/bkt", nil, "", nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp = signedReq(t, ts, http.MethodHead, "/nope", nil, "", nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)

	resp = signedReq(t, ts, http.MethodGet, "/bkt?location", nil, "", nil)
	b, _ := io.ReadAll(resp.Body)
	assert.Contains(t, string(b), `<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></LocationConstraint>`)

	for _, k := range []string{"a/1", "a/2", "b", "c/x/y", "d", "e"} {
		require.Equal(t, http.StatusOK, signedReq(t, ts, http.MethodPut, "/bkt/"+k, []byte(k), "", nil).StatusCode)
	}
	list := func(q string) listResult {
		resp := signedReq(t, ts, http.MethodGet, "/bkt?list-type=2"+q, nil, "", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var lr listResult
		require.NoError(t, xml.NewDecoder(resp.Body).Decode(&lr))
		return lr
	}
	keysOf := func(lr listResult) []string {
		var out []string
		for _, c := range lr.Contents {
			out = append(out, c.Key)
		}
		for _, p := range lr.CommonPrefixes {
			out = append(out, p.Prefix+"(p)")
		}
		return out
	}
	// Pagination.
	var all []string
	token := ""
	pages := 0
	for {
		q := "&max-keys=4"
		if token != "" {
			q += "&continuation-token=" + token
		}
		lr := list(q)
		pages++
		all = append(all, keysOf(lr)...)
		if !lr.IsTruncated {
			break
		}
		token = lr.NextContinuationToken
	}
	assert.Equal(t, 2, pages)
	assert.Equal(t, []string{"a/1", "a/2", "b", "c/x/y", "d", "e"}, all)

	// Delimiter, prefixes and pagination across common prefixes.
	assert.Equal(t, []string{"b", "d", "e", "a/(p)", "c/(p)"}, keysOf(list("&delimiter=/")))
	lr := list("&delimiter=/&max-keys=1")
	assert.Equal(t, []string{"a/(p)"}, keysOf(lr))
	lr = list("&delimiter=/&max-keys=2&continuation-token=" + lr.NextContinuationToken)
	assert.Equal(t, []string{"b", "c/(p)"}, keysOf(lr))
	assert.Equal(t, []string{"a/1", "a/2"}, keysOf(list("&prefix=a/")))
	assert.Equal(t, []string{"c/x/(p)"}, keysOf(list("&prefix=c/&delimiter=/")))
	assert.Equal(t, []string{"d", "e"}, keysOf(list("&start-after=c/x/y")))

	resp = signedReq(t, ts, http.MethodDelete, "/bkt", nil, "", nil)
	assert.Equal(t, http.StatusConflict, resp.StatusCode)
	assert.Equal(t, "BucketNotEmpty", readErr(t, resp).Code)
	for _, k := range []string{"a/1", "a/2", "b", "c/x/y", "d", "e"} {
		assert.Equal(t, http.StatusNoContent, signedReq(t, ts, http.MethodDelete, "/bkt/"+k, nil, "", nil).StatusCode)
	}
	assert.Equal(t, http.StatusNoContent, signedReq(t, ts, http.MethodDelete, "/bkt", nil, "", nil).StatusCode)
	assert.Equal(t, http.StatusNotFound, signedReq(t, ts, http.MethodGet, "/bkt?list-type=2", nil, "", nil).StatusCode)
	assert.Zero(t, srv.AuthFailures())
}

func TestRegionLocation(t *testing.T) {
	_, ts := newTestServer(t, false, Options{Region: "lab-1"})
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/bkt", nil)
	s := newSigner()
	s.region = "lab-1"
	s.signHeaders(req, emptySHA256)
	resp, err := ts.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	req, _ = http.NewRequest(http.MethodGet, ts.URL+"/bkt?location", nil)
	s.signHeaders(req, emptySHA256)
	resp, err = ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	assert.Contains(t, string(b), ">lab-1</LocationConstraint>")
}

func TestMultipartErrors(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	mkBucket(t, ts, "bkt")
	resp := signedReq(t, ts, http.MethodPost, "/bkt/mp?uploads", nil, "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var init struct {
		UploadID string `xml:"UploadId"`
	}
	require.NoError(t, xml.NewDecoder(resp.Body).Decode(&init))
	id := init.UploadID

	small := signedReq(t, ts, http.MethodPut, "/bkt/mp?partNumber=1&uploadId="+id, []byte("small"), "", nil)
	require.Equal(t, http.StatusOK, small.StatusCode)
	last := signedReq(t, ts, http.MethodPut, "/bkt/mp?partNumber=2&uploadId="+id, []byte("last"), "", nil)
	require.Equal(t, http.StatusOK, last.StatusCode)

	complete := func(xmlBody string) *http.Response {
		return signedReq(t, ts, http.MethodPost, "/bkt/mp?uploadId="+id, []byte(xmlBody), "", nil)
	}
	part := func(n int, etag string) string {
		return fmt.Sprintf("<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", n, etag)
	}
	e1, e2 := small.Header.Get("ETag"), last.Header.Get("ETag")
	assert.Equal(t, "EntityTooSmall", readErr(t, complete("<CompleteMultipartUpload>"+part(1, e1)+part(2, e2)+"</CompleteMultipartUpload>")).Code)
	assert.Equal(t, "InvalidPartOrder", readErr(t, complete("<CompleteMultipartUpload>"+part(2, e2)+part(1, e1)+"</CompleteMultipartUpload>")).Code)
	assert.Equal(t, "InvalidPart", readErr(t, complete("<CompleteMultipartUpload>"+part(1, `"00"`)+"</CompleteMultipartUpload>")).Code)
	assert.Equal(t, "MalformedXML", readErr(t, complete("nope")).Code)

	// A single (last) part may be small.
	resp = complete("<CompleteMultipartUpload>" + part(2, e2) + "</CompleteMultipartUpload>")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got, _ := srv.Object("bkt", "mp")
	assert.Equal(t, "last", string(got))
	assert.Equal(t, "NoSuchUpload", readErr(t, complete("<CompleteMultipartUpload>"+part(2, e2)+"</CompleteMultipartUpload>")).Code)

	// Abort.
	resp = signedReq(t, ts, http.MethodPost, "/bkt/mp2?uploads", nil, "", nil)
	require.NoError(t, xml.NewDecoder(resp.Body).Decode(&init))
	assert.Equal(t, http.StatusNoContent, signedReq(t, ts, http.MethodDelete, "/bkt/mp2?uploadId="+init.UploadID, nil, "", nil).StatusCode)
	assert.Equal(t, http.StatusNotFound, signedReq(t, ts, http.MethodDelete, "/bkt/mp2?uploadId="+init.UploadID, nil, "", nil).StatusCode)
}

func TestRequestLogBounded(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	srv.logMax = 5
	for i := range 12 {
		resp, err := ts.Client().Get(fmt.Sprintf("%s/p%d", ts.URL, i))
		require.NoError(t, err)
		resp.Body.Close()
	}
	reqs := srv.Requests()
	require.Len(t, reqs, 5)
	for i, r := range reqs {
		assert.Equal(t, fmt.Sprintf("/p%d", 7+i), r.Path)
	}
	reqs[0].Header.Set("X-Mutated", "1")
	assert.Empty(t, srv.Requests()[0].Header.Get("X-Mutated"), "Requests returns copies")
}

func TestConcurrentClients(t *testing.T) {
	srv, ts := newTestServer(t, false, Options{})
	cl := newMinio(t, ts, false, false)
	ctx := context.Background()
	require.NoError(t, cl.MakeBucket(ctx, "conc", minio.MakeBucketOptions{}))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				key := fmt.Sprintf("g%d/o%d", g, i)
				data := randBytes(10_000+g*1000+i, uint64(g*100+i))
				_, err := cl.PutObject(ctx, "conc", key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
				if !assert.NoError(t, err) {
					return
				}
				obj, err := cl.GetObject(ctx, "conc", key, minio.GetObjectOptions{})
				if !assert.NoError(t, err) {
					return
				}
				got, err := io.ReadAll(obj)
				obj.Close()
				assert.NoError(t, err)
				assert.Equal(t, data, got)
				for range cl.ListObjects(ctx, "conc", minio.ListObjectsOptions{Recursive: true}) {
				}
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, srv.AuthFailures())
}
